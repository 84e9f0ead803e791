from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from aioscopedauth import (
    Auth,
    AuthDataError,
    AuthDotJson,
    AuthMode,
    IdTokenInfo,
    PlanType,
    TokenData,
    UnsupportedLoginError,
)
from aioscopedauth._model import format_rfc3339, parse_rfc3339
from aioscopedauth.testing import chatgpt_auth, make_id_token

from support import CANARY_ACCESS, CANARY_API_KEY, CANARY_REFRESH

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["chatgpt", "apikey", "tokens_without_mode"])
def test_golden_file_round_trips_byte_for_byte(name: str) -> None:
    text = (GOLDEN / f"{name}.auth.json").read_text()
    assert AuthDotJson.from_json(text).to_json() == text


def test_golden_chatgpt_fields() -> None:
    data = AuthDotJson.from_json((GOLDEN / "chatgpt.auth.json").read_text())
    assert data.auth_mode is AuthMode.CHATGPT
    assert data.resolved_mode is AuthMode.CHATGPT
    assert data.tokens is not None
    assert data.tokens.account_id == "org-golden"
    assert data.tokens.refresh_token == "rt-golden"
    assert data.tokens.id_token is not None
    assert data.tokens.id_token.chatgpt_account_id == "org-golden"
    assert data.last_refresh == datetime(2026, 3, 31, 18, 2, 11, 123456, tzinfo=UTC)
    # Nanoseconds we cannot hold are still written back as read.
    assert '"last_refresh": "2026-03-31T18:02:11.123456789Z"' in data.to_json()


def test_pro_account_with_no_api_key_uses_chatgpt_auth() -> None:
    # Reference checklist 4.
    data = AuthDotJson.from_json((GOLDEN / "tokens_without_mode.auth.json").read_text())
    assert data.auth_mode is None
    assert data.resolved_mode is AuthMode.CHATGPT
    auth = Auth.from_data(data)
    assert auth.mode is AuthMode.CHATGPT
    assert auth.account_id is None
    assert auth.plan_type == PlanType.PRO
    assert data.tokens is not None
    assert data.tokens.id_token is not None
    assert data.tokens.id_token == IdTokenInfo(
        email="user@example.com",
        chatgpt_plan_type=PlanType.PRO,
        chatgpt_user_id="user-12345",
        chatgpt_account_id=None,
        raw_jwt=data.tokens.id_token.raw_jwt,
    )
    assert data.last_refresh == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_loads_api_key_from_auth_json() -> None:
    # Reference checklist 5.
    data = AuthDotJson.from_json(
        '{"OPENAI_API_KEY":"sk-test-key","tokens":null,"last_refresh":null}'
    )
    assert data.resolved_mode is AuthMode.API_KEY
    auth = Auth.from_data(data)
    assert auth.mode is AuthMode.API_KEY
    assert auth.token == "sk-test-key"
    assert data.tokens is None
    assert auth.plan_type is None
    assert auth.headers() == {"Authorization": "Bearer sk-test-key"}


def test_api_key_mode_without_key_is_an_error() -> None:
    with pytest.raises(AuthDataError, match=r"^API key auth is missing a key\.$"):
        AuthDotJson.from_json('{"auth_mode":"apikey","OPENAI_API_KEY":null}')


def test_chatgpt_without_tokens_has_no_auth() -> None:
    with pytest.raises(AuthDataError, match="ChatGPT auth has no tokens"):
        Auth.from_data(AuthDotJson.from_json('{"auth_mode":"chatgpt","OPENAI_API_KEY":null}'))


def test_unknown_fields_survive_a_save() -> None:
    doc = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": make_id_token(),
            "access_token": "a",
            "refresh_token": "r",
            "account_id": "acct",
            "token_future": {"x": [1, 2]},
        },
        "last_refresh": "2026-01-01T00:00:00Z",
        "agent_identity": {"id": "agent-1"},
        "personal_access_token": None,
    }
    data = AuthDotJson.from_json(json.dumps(doc))
    updated = data.with_refreshed_tokens(
        id_token=None, access_token="a2", refresh_token=None, now=datetime(2026, 2, 1, tzinfo=UTC)
    )
    out = json.loads(updated.to_json())
    assert out["agent_identity"] == {"id": "agent-1"}
    assert "personal_access_token" in out
    assert out["personal_access_token"] is None
    assert out["tokens"]["token_future"] == {"x": [1, 2]}
    assert list(out) == [
        "auth_mode",
        "OPENAI_API_KEY",
        "tokens",
        "last_refresh",
        "agent_identity",
        "personal_access_token",
    ]
    assert out["tokens"]["access_token"] == "a2"
    assert out["last_refresh"] == "2026-02-01T00:00:00Z"


def test_refresh_without_id_token_keeps_old_id_token() -> None:
    # Reference checklist 1.
    data = chatgpt_auth(refresh_token="old-refresh")
    assert data.tokens is not None
    assert data.tokens.id_token is not None
    old_id = data.tokens.id_token.raw_jwt
    merged = data.with_refreshed_tokens(
        id_token=None, access_token="new-access", refresh_token="new-refresh", now=datetime.now(UTC)
    )
    assert merged.tokens is not None
    assert merged.tokens.id_token is not None
    assert merged.tokens.id_token.raw_jwt == old_id
    assert merged.tokens.access_token == "new-access"
    assert merged.tokens.refresh_token == "new-refresh"
    assert merged.tokens.account_id == data.tokens.account_id


def test_refresh_keeps_refresh_token_when_none_returned_and_never_changes_account() -> None:
    data = chatgpt_auth(refresh_token="keep-me", account_id="acct-1")
    new_id = make_id_token(account_id="acct-other")
    merged = data.with_refreshed_tokens(
        id_token=new_id, access_token=None, refresh_token=None, now=datetime.now(UTC)
    )
    assert merged.tokens is not None
    assert merged.tokens.refresh_token == "keep-me"
    assert merged.tokens.account_id == "acct-1"
    assert merged.tokens.id_token is not None
    assert merged.tokens.id_token.chatgpt_account_id == "acct-other"


def test_login_with_api_key_payload_drops_tokens() -> None:
    # Reference checklist 2 (the payload; the manager test writes it over a file).
    data = AuthDotJson.for_api_key("sk-new")
    assert data.to_json() == '{\n  "auth_mode": "apikey",\n  "OPENAI_API_KEY": "sk-new"\n}'


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("[]", "must hold a JSON object"),
        ('{"auth_mode": 3}', "auth_mode must be a string"),
        ('{"OPENAI_API_KEY": 42}', "OPENAI_API_KEY must be a string"),
        ('{"tokens": []}', "tokens must be a JSON object"),
        ('{"tokens": {"access_token": "a", "refresh_token": "r"}}', "tokens.id_token is missing"),
        (
            '{"tokens": {"id_token": "x.y", "access_token": "a", "refresh_token": "r"}}',
            "tokens.id_token: invalid ID token format",
        ),
        ('{"last_refresh": "yesterday"}', "last_refresh is not an RFC 3339"),
        ('{"last_refresh": "2026-01-01T00:00:00"}', "last_refresh is not an RFC 3339"),
        ('{"last_refresh": "2026-13-01T00:00:00Z"}', "last_refresh is not a valid RFC 3339"),
        ("{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_invalid_documents_say_which_field(doc: str | bytes, problem: str) -> None:
    with pytest.raises(AuthDataError, match=problem):
        AuthDotJson.from_json(doc)


def test_field_errors_do_not_quote_values() -> None:
    with pytest.raises(AuthDataError) as info:
        AuthDotJson.from_json(json.dumps({"OPENAI_API_KEY": [CANARY_API_KEY]}))
    assert CANARY_API_KEY not in str(info.value)


def test_a_key_pasted_into_auth_mode_loads_but_is_never_shown() -> None:
    data = AuthDotJson.from_json(json.dumps({"auth_mode": CANARY_API_KEY}))
    assert data.auth_mode is not None
    assert not data.auth_mode.is_known
    auth = Auth.from_data(data)
    with pytest.raises(UnsupportedLoginError) as info:
        auth.headers()
    for text in (repr(data), repr(auth), repr(data.auth_mode), str(info.value)):
        assert CANARY_API_KEY not in text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 3, 31, 18, 2, 11, tzinfo=UTC), "2026-03-31T18:02:11Z"),
        (datetime(2026, 3, 31, 18, 2, 11, 123000, tzinfo=UTC), "2026-03-31T18:02:11.123Z"),
        (datetime(2026, 3, 31, 18, 2, 11, 123456, tzinfo=UTC), "2026-03-31T18:02:11.123456Z"),
        (
            datetime(2026, 3, 31, 20, 2, 11, tzinfo=UTC).astimezone(
                __import__("datetime").timezone(timedelta(hours=2))
            ),
            "2026-03-31T20:02:11Z",
        ),
    ],
)
def test_rfc3339_is_written_in_utc_with_z(moment: datetime, text: str) -> None:
    assert format_rfc3339(moment) == text
    assert parse_rfc3339(text) == moment


def test_rfc3339_accepts_offsets_and_truncates_nanoseconds() -> None:
    assert parse_rfc3339("2026-03-31T20:02:11.987654321+02:00") == datetime(
        2026, 3, 31, 18, 2, 11, 987654, tzinfo=UTC
    )


def test_auth_headers_include_account() -> None:
    auth = Auth.from_data(chatgpt_auth(access_token="tok", account_id="acct-9"))
    assert auth.headers() == {"Authorization": "Bearer tok", "ChatGPT-Account-ID": "acct-9"}
    custom = attrs.evolve(auth, account_header="X-Account")
    assert custom.headers() == {"Authorization": "Bearer tok", "X-Account": "acct-9"}


def test_no_secret_in_repr_or_str() -> None:
    data = AuthDotJson(
        auth_mode=AuthMode.CHATGPT,
        openai_api_key=CANARY_API_KEY,
        tokens=TokenData(
            id_token=IdTokenInfo.parse(make_id_token()),
            access_token=CANARY_ACCESS,
            refresh_token=CANARY_REFRESH,
            account_id="acct",
            extra={"secret_future_field": CANARY_REFRESH},
        ),
        extra={"personal_access_token": CANARY_ACCESS},
    )
    auth = Auth.from_data(data)
    bearer = Auth(AuthMode.BEARER, CANARY_ACCESS)
    for obj in (data, data.tokens, auth, bearer, data.tokens and data.tokens.id_token):
        for text in (repr(obj), str(obj)):
            for canary in (CANARY_API_KEY, CANARY_ACCESS, CANARY_REFRESH):
                assert canary not in text
    assert "acct" in repr(auth)
    assert "CHATGPT" in repr(auth)
