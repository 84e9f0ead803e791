"""A standard provider's login in the model: its own mode, no id token needed, who it is.

Codex's shapes are unchanged (tests/golden, tests/interop); a standard login is
``auth_mode: "oauth"`` with a top-level ``oauth`` object naming the provider, the client, the
subject and the grant, and its tokens may have no ``id_token`` (the key is then left out).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from aioscopedauth import Auth, AuthDataError, AuthDotJson, AuthMode, FileAuthStore, OAuthConfig
from aioscopedauth._login import ForcedLoginMethod, restriction_violation
from aioscopedauth._model import ProviderLogin
from aioscopedauth._oauth import TokenResponse, stale_at
from aioscopedauth._refresh import Freshness, TokenState, may_adopt, merged_expiry, same_login
from aioscopedauth.testing import chatgpt_auth, make_jwt

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LOGIN = ProviderLogin("https://id.example", "my-app", "alice", "device_code")
CONFIG = OAuthConfig("https://id.example/token", "my-app", dialect="rfc6749")


def _standard(
    login: ProviderLogin = LOGIN,
    *,
    access: str = "opaque-access",
    refresh: str | None = "opaque-refresh",
    id_token: str | None = None,
    expires_at: datetime | None = NOW + timedelta(seconds=60),
) -> AuthDotJson:
    return AuthDotJson.for_provider_login(
        login,
        access_token=access,
        refresh_token=refresh,
        id_token=id_token,
        expires_at=expires_at,
        now=NOW,
    )


def test_the_stored_shape() -> None:
    assert json.loads(_standard().to_json()) == {
        "auth_mode": "oauth",
        "OPENAI_API_KEY": None,
        "tokens": {
            "access_token": "opaque-access",
            "refresh_token": "opaque-refresh",
            "account_id": None,
            "expires_at": "2026-06-01T12:01:00Z",
        },
        "last_refresh": "2026-06-01T12:00:00Z",
        "oauth": {
            "issuer": "https://id.example",
            "client_id": "my-app",
            "sub": "alice",
            "grant": "device_code",
        },
    }


async def test_a_standard_login_round_trips_byte_for_byte(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = FileAuthStore(home)
    await store.save(_standard())
    first = (home / "auth.json").read_bytes()
    loaded = await store.load()
    assert loaded is not None
    assert loaded.resolved_mode is AuthMode.OAUTH
    assert loaded.tokens is not None
    assert loaded.tokens.id_token is None
    assert loaded.provider_login == LOGIN
    await store.save(loaded)
    assert (home / "auth.json").read_bytes() == first
    assert b"id_token" not in first


def test_an_id_token_is_kept_when_the_provider_gives_one() -> None:
    raw = make_jwt({"sub": "alice", "email": "alice@example.test"})
    data = _standard(id_token=raw)
    again = AuthDotJson.from_json(data.to_json())
    assert again == data
    assert again.tokens is not None
    assert again.tokens.id_token is not None
    assert again.tokens.id_token.raw_jwt == raw
    auth = Auth.from_data(again)
    assert auth.email == "alice@example.test"
    assert auth.plan_type is None  # not a ChatGPT login


def test_the_snapshot_of_a_standard_login() -> None:
    auth = Auth.from_data(_standard())
    assert auth.mode is AuthMode.OAUTH
    assert auth.mode.can_send
    assert auth.mode.is_refreshable
    assert not auth.mode.is_chatgpt
    assert auth.email is None
    assert auth.plan_type is None
    assert auth.account_id is None
    assert auth.headers() == {"Authorization": "Bearer opaque-access"}


def test_a_chatgpt_login_still_needs_an_id_token() -> None:
    doc = {"tokens": {"access_token": "a", "refresh_token": "r"}}
    with pytest.raises(AuthDataError, match=r"^tokens\.id_token is missing$"):
        AuthDotJson.from_json(json.dumps(doc))
    with pytest.raises(AuthDataError, match=r"^tokens\.id_token is missing$"):
        AuthDotJson.from_json(json.dumps({"auth_mode": "chatgpt", **doc}))


@pytest.mark.parametrize(
    ("oauth", "message"),
    [
        (None, "oauth must be a JSON object"),
        ({"client_id": "c"}, "oauth.issuer is missing"),
        ({"issuer": "i", "client_id": 3}, "oauth.client_id must be a string"),
        ({"issuer": "i", "client_id": "c", "grant": "password"}, "oauth.grant must be one of"),
    ],
)
def test_a_standard_login_must_say_whose_it_is(oauth: object, message: str) -> None:
    doc: dict[str, object] = {
        "auth_mode": "oauth",
        "tokens": {"access_token": "a", "refresh_token": "r"},
    }
    if oauth is not None:
        doc["oauth"] = oauth
    with pytest.raises(AuthDataError, match=f"^{message}"):
        AuthDotJson.from_json(json.dumps(doc))


def test_same_login_tells_standard_logins_apart() -> None:
    mine = Auth.from_data(_standard())
    newer = Auth.from_data(_standard(access="newer", refresh="newer-r"))
    assert same_login(newer, mine)
    assert may_adopt(newer, None, mine)
    for other in (
        attrs.evolve(LOGIN, subject="bob"),
        attrs.evolve(LOGIN, subject=None),
        attrs.evolve(LOGIN, client_id="other-app"),
        attrs.evolve(LOGIN, issuer="https://other.example"),
        attrs.evolve(LOGIN, subject=None, grant="client_credentials"),
    ):
        stranger = Auth.from_data(_standard(other, access="x", refresh="y"))
        assert not same_login(stranger, mine), other
        assert not may_adopt(stranger, None, mine), other
    # A ChatGPT login is never the same login as a standard one (both have no account id).
    chatgpt = Auth.from_data(chatgpt_auth(account_id=None))
    assert not same_login(chatgpt, mine)
    assert not same_login(mine, chatgpt)
    assert not may_adopt(chatgpt, None, mine)
    assert not may_adopt(mine, None, chatgpt)


def test_restrictions_are_codexs_and_a_standard_login_breaks_none() -> None:
    auth = Auth.from_data(_standard())
    methods: tuple[ForcedLoginMethod | None, ...] = (None, "api", "chatgpt")
    for method in methods:
        assert restriction_violation(auth, method, "org-1") is None


def test_merged_expiry_keep_and_drop_rules() -> None:
    sent = NOW
    fresh = TokenResponse(access_token="a", expires_in=30)
    # A second off: the provider counts whole seconds (a token may die up to a second early).
    assert merged_expiry(fresh, sent, standard=True) == NOW + timedelta(seconds=29)
    short = TokenResponse(access_token="a", expires_in=1)
    assert merged_expiry(short, sent, standard=True) == NOW + timedelta(seconds=0.5)
    assert merged_expiry(fresh, sent, standard=False) == "keep"  # Codex ignores expires_in
    # A new token of unknown lifetime: the stored expiry was the old token's.
    assert merged_expiry(TokenResponse(access_token="a"), sent, standard=True) is None
    # No new access token: its expiry stands.
    assert merged_expiry(TokenResponse(refresh_token="r", expires_in=30), sent, standard=True) == (
        "keep"
    )


def test_an_opaque_token_is_due_and_then_expired_by_its_stored_expiry() -> None:
    now = datetime.now(UTC)
    freshness = Freshness(CONFIG)
    fresh = Auth.from_data(
        attrs.evolve(_standard(expires_at=now + timedelta(seconds=600)), last_refresh=now)
    )
    assert freshness.state(fresh) is TokenState.FRESH
    due = Auth.from_data(
        attrs.evolve(
            _standard(expires_at=now + timedelta(seconds=5)),
            last_refresh=now - timedelta(seconds=55),  # a 60 s token: due 15 s before its end
        )
    )
    assert freshness.state(due) is TokenState.DUE
    expired = Auth.from_data(
        attrs.evolve(
            _standard(expires_at=now - timedelta(seconds=1)),
            last_refresh=now - timedelta(seconds=61),
        )
    )
    assert freshness.state(expired) is TokenState.EXPIRED
    # A JWT access token whose exp says otherwise: the stored expiry wins.
    jwt = make_jwt({"exp": int(time.time()) + 3600})
    by_store = Auth.from_data(
        attrs.evolve(
            _standard(access=jwt, expires_at=now - timedelta(seconds=1)),
            last_refresh=now - timedelta(seconds=61),
        )
    )
    assert Freshness(CONFIG).state(by_store) is TokenState.EXPIRED
    assert stale_at(by_store, CONFIG) is not None
