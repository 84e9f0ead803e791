"""Every auth.json shape Codex 0.169 writes loads, is kept byte for byte, and is reported."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from aioscopedauth import (
    AccountIdentity,
    Auth,
    AuthDataError,
    AuthDotJson,
    AuthMode,
    FileAuthStore,
    PlanType,
    UnsupportedLoginError,
)

GOLDEN = Path(__file__).parent / "golden"

# name of the golden file -> the resolved mode it logs in with
SHAPES = {
    "apikey": AuthMode.API_KEY,
    "chatgpt": AuthMode.CHATGPT,
    "tokens_without_mode": AuthMode.CHATGPT,
    "personal_access_token": AuthMode.PERSONAL_ACCESS_TOKEN,
    "agent_identity": AuthMode.AGENT_IDENTITY,
    "bedrock_api_key": AuthMode.BEDROCK_API_KEY,
    "bedrock_access_keys": AuthMode.BEDROCK_ACCESS_KEYS,
    "headers": AuthMode.HEADERS,
    "unknown_mode": AuthMode("someFutureMode"),
}
UNSENDABLE = ["agent_identity", "bedrock_api_key", "bedrock_access_keys", "headers", "unknown_mode"]
PAT = "at-golden-personal-access-token"


def _golden(name: str) -> str:
    return (GOLDEN / f"{name}.auth.json").read_text()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_shape_round_trips_byte_for_byte(name: str) -> None:
    text = _golden(name)
    data = AuthDotJson.from_json(text)
    assert data.resolved_mode is SHAPES[name]
    assert data.to_json() == text
    # The keyring's compact form keeps every field too.
    assert json.loads(AuthDotJson.from_json(data.to_json(compact=True)).to_json()) == json.loads(
        text
    )


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_every_shape_survives_a_file_store_load_and_save(name: str, home: Path) -> None:
    home.mkdir(mode=0o700)
    shutil.copy(GOLDEN / f"{name}.auth.json", home / "auth.json")
    (home / "auth.json").chmod(0o600)
    store = FileAuthStore(home)
    data = await store.load()
    assert data is not None
    await store.save(data)
    assert (home / "auth.json").read_bytes() == (GOLDEN / f"{name}.auth.json").read_bytes()


def test_unknown_modes_are_cached_pseudo_members() -> None:
    mode = AuthMode("someFutureMode")
    assert mode is AuthMode("someFutureMode")
    assert mode is not AuthMode("anotherFutureMode")
    assert (mode.name, mode.value) == ("UNKNOWN", "someFutureMode")
    assert repr(mode) == "<AuthMode.UNKNOWN: 'someFutureMode'>"
    assert not mode.is_known
    assert not mode.can_send
    assert not mode.is_chatgpt
    assert pickle.loads(pickle.dumps(mode)) is mode  # noqa: S301 -- our own bytes
    assert mode not in list(AuthMode)
    assert {mode: 1}[AuthMode("someFutureMode")] == 1


def test_known_modes_and_what_can_be_sent() -> None:
    assert [m.value for m in AuthMode] == [
        "apikey",
        "chatgpt",
        "chatgptAuthTokens",
        "bearer",
        "personalAccessToken",
        "agentIdentity",
        "bedrockApiKey",
        "bedrockAccessKeys",
        "headers",
        "oauth",
    ]
    assert all(m.is_known for m in AuthMode)
    assert {m for m in AuthMode if m.can_send} == {
        AuthMode.API_KEY,
        AuthMode.CHATGPT,
        AuthMode.CHATGPT_AUTH_TOKENS,
        AuthMode.BEARER,
        AuthMode.PERSONAL_ACCESS_TOKEN,
        AuthMode.OAUTH,
    }
    assert {m for m in AuthMode if m.is_chatgpt} == {AuthMode.CHATGPT, AuthMode.CHATGPT_AUTH_TOKENS}
    assert {m for m in AuthMode if m.is_refreshable} == {
        AuthMode.CHATGPT,
        AuthMode.CHATGPT_AUTH_TOKENS,
        AuthMode.OAUTH,
    }


@pytest.mark.parametrize("value", [3, True, [], {}])
def test_a_non_string_auth_mode_is_still_an_error(value: object) -> None:
    doc = json.dumps({"auth_mode": value, "OPENAI_API_KEY": None})
    with pytest.raises(AuthDataError) as caught:
        AuthDotJson.from_json(doc)
    assert str(caught.value) == "auth_mode must be a string"
    with pytest.raises(ValueError, match="is not a valid AuthMode"):
        AuthMode(value)


@pytest.mark.parametrize(
    ("doc", "mode"),
    [
        # Codex's order: auth_mode; personal access token; Bedrock key; Bedrock keys; API key.
        ({"OPENAI_API_KEY": "sk-x", "personal_access_token": "at-x"}, "personalAccessToken"),
        ({"OPENAI_API_KEY": "sk-x", "bedrock_api_key": {"api_key": "k"}}, "bedrockApiKey"),
        ({"OPENAI_API_KEY": "sk-x", "bedrock_access_keys": {}}, "bedrockAccessKeys"),
        (
            {"personal_access_token": "at-x", "bedrock_api_key": {"api_key": "k"}},
            "personalAccessToken",
        ),
        ({"OPENAI_API_KEY": "sk-x", "personal_access_token": None}, "apikey"),
        ({"OPENAI_API_KEY": None, "agent_identity": "a.b.c"}, "chatgpt"),
        ({"OPENAI_API_KEY": None}, "chatgpt"),
        ({"auth_mode": "chatgpt", "personal_access_token": "at-x"}, "chatgpt"),
    ],
)
def test_resolved_mode_follows_codex(doc: dict[str, object], mode: str) -> None:
    assert AuthDotJson.from_dict(doc).resolved_mode is AuthMode(mode)


def test_personal_access_token_is_read_from_the_kept_field_and_never_shown() -> None:
    data = AuthDotJson.from_json(_golden("personal_access_token"))
    assert data.personal_access_token == PAT
    assert data.auth_mode is None
    assert PAT not in repr(data)
    auth = Auth.from_data(data)
    assert (auth.mode, auth.token, auth.account_id) == (AuthMode.PERSONAL_ACCESS_TOKEN, PAT, None)
    assert (auth.email, auth.plan_type) == (None, None)
    assert PAT not in repr(auth)
    assert PAT not in str(auth)
    assert auth.headers() == {"Authorization": f"Bearer {PAT}"}


@pytest.mark.parametrize("bad", ["at-x\r\nX-Evil: 1", "at-x\n", "at-\0x"])
def test_a_personal_access_token_that_cannot_be_a_header_is_refused(bad: str) -> None:
    with pytest.raises(AuthDataError) as caught:
        AuthDotJson.from_dict({"OPENAI_API_KEY": None, "personal_access_token": bad})
    assert str(caught.value) == (
        "auth.json.personal_access_token contains a line break, a control character or invalid "
        "Unicode"
    )


def test_a_personal_access_token_must_be_a_string() -> None:
    with pytest.raises(AuthDataError) as caught:
        AuthDotJson.from_dict({"OPENAI_API_KEY": None, "personal_access_token": 7})
    assert str(caught.value) == "auth.json.personal_access_token must be a string"


@pytest.mark.parametrize(
    "doc", [{"auth_mode": "personalAccessToken"}, {"personal_access_token": ""}]
)
def test_a_personal_access_token_login_without_a_token_has_no_auth(doc: dict[str, object]) -> None:
    with pytest.raises(AuthDataError) as caught:
        Auth.from_data(AuthDotJson.from_dict({"OPENAI_API_KEY": None, **doc}))
    assert str(caught.value) == "Personal access token auth is missing a token. Log in again."


def test_identity_gives_email_plan_and_headers_but_not_equality() -> None:
    data = AuthDotJson.from_json(_golden("personal_access_token"))
    identity = AccountIdentity(
        account_id="acct-pat",
        user_id="user-1",
        email="pat@example.com",
        plan_type=PlanType.ENTERPRISE,
        fedramp=True,
    )
    auth = Auth(AuthMode.PERSONAL_ACCESS_TOKEN, PAT, "acct-pat", data, identity=identity)
    assert (auth.email, auth.plan_type) == ("pat@example.com", PlanType.ENTERPRISE)
    assert auth.headers() == {
        "Authorization": f"Bearer {PAT}",
        "ChatGPT-Account-ID": "acct-pat",
        "X-OpenAI-Fedramp": "true",
    }
    assert auth == Auth(AuthMode.PERSONAL_ACCESS_TOKEN, PAT, "acct-pat", data)
    assert "pat@example.com" not in repr(auth)


@pytest.mark.parametrize("name", UNSENDABLE)
def test_modes_this_library_cannot_send_with_load_and_refuse_headers(name: str) -> None:
    data = AuthDotJson.from_json(_golden(name))
    auth = Auth.from_data(data)
    assert auth.mode is SHAPES[name]
    assert (auth.token, auth.account_id, auth.email, auth.plan_type) == ("", None, None, None)
    with pytest.raises(UnsupportedLoginError) as caught:
        auth.headers()
    value = SHAPES[name].value
    article = "an" if value[0] in "aeiou" else "a"
    assert str(caught.value) == (
        f"This login is {article} `{value}` login, which aioscopedauth cannot send requests "
        "with. Use the Codex CLI for it, or log in with an API key or ChatGPT."
    )
    assert caught.value.mode == value
    assert caught.value.where is None
    for secret in ("golden-private-key", "ABSK-golden", "golden-secret-access", "golden-future"):
        assert secret not in repr(data)
        assert secret not in repr(auth)


def test_unsupported_login_error_names_where_and_never_quotes_odd_modes() -> None:
    error = UnsupportedLoginError("agentIdentity", where="/home/u/.codex/auth.json")
    assert str(error) == (
        "The login in /home/u/.codex/auth.json is an `agentIdentity` login, which aioscopedauth "
        "cannot send requests with. Use the Codex CLI for it, or log in with an API key or "
        "ChatGPT."
    )
    for odd in ("line\nbreak", "x" * 41, "at-looks-like-a-token", "a.b.c", ""):
        error = UnsupportedLoginError(odd)
        assert str(error).startswith("This login is an unknown login, which"), odd
        assert error.mode is None  # an odd value is not kept, even as an attribute
    assert repr(AuthMode("at-looks-like-a-token")) == "<AuthMode.UNKNOWN>"
