"""Property-based tests of the parsers: auth.json, JWTs, command output, timestamps."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioscopedauth import (
    AuthDataError,
    AuthDotJson,
    AuthMode,
    CommandError,
    ConfigError,
    IdTokenInfo,
    TokenData,
    decode_jwt_payload,
    parse_command_output,
)
from aioscopedauth._config import parse_providers
from aioscopedauth._model import format_rfc3339, parse_rfc3339
from aioscopedauth.testing import make_id_token

BASE = Path(__file__).parent  # where relative auth.cwd values resolve; nothing is written
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
# What can be sent as a header value: no control character (Cc: C0, DEL, C1 included in the
# category but allowed by is_header_safe only above U+007F; keep the strategy simple and strict).
header_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
# hypothesis takes naive bounds and attaches the time zone itself.
moments = st.datetimes(
    min_value=datetime(1971, 1, 1),  # noqa: DTZ001
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
id_tokens = st.builds(
    make_id_token,
    email=st.none() | st.emails(),
    plan_type=st.none() | st.sampled_from(["pro", "plus", "team", "mystery"]),
    account_id=st.none() | text,
    user_id=st.none() | text,
)
extra_keys = text.filter(
    lambda k: k not in {"auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh"}
)


@st.composite
def payloads(draw: st.DrawFn) -> AuthDotJson:
    tokens = None
    if draw(st.booleans()):
        tokens = TokenData(
            id_token=IdTokenInfo.parse(draw(id_tokens)),
            access_token=draw(header_text),
            refresh_token=draw(text),
            account_id=draw(st.none() | header_text),
        )
    key = draw(st.none() | header_text)
    mode = draw(st.none() | st.sampled_from([AuthMode.CHATGPT, AuthMode.CHATGPT_AUTH_TOKENS]))
    if key is not None and draw(st.booleans()):
        mode = AuthMode.API_KEY
    return AuthDotJson(
        auth_mode=mode,
        openai_api_key=key,
        tokens=tokens,
        last_refresh=draw(st.none() | moments),
        extra=draw(st.dictionaries(extra_keys, json_values, max_size=3)),
    )


@SETTINGS
@given(payloads())
def test_auth_json_round_trips(data: AuthDotJson) -> None:
    text_form = data.to_json()
    again = AuthDotJson.from_json(text_form)
    assert again == data
    assert again.to_json() == text_form
    compact = AuthDotJson.from_json(data.to_json(compact=True))
    assert compact == data


@SETTINGS
@given(st.binary(max_size=300) | text.map(str.encode))
def test_any_bytes_parse_or_raise_auth_data_error(raw: bytes) -> None:
    with contextlib.suppress(AuthDataError):
        AuthDotJson.from_json(raw)


@SETTINGS
@given(json_values)
def test_any_json_document_parses_or_raises_auth_data_error(value: object) -> None:
    with contextlib.suppress(AuthDataError):
        AuthDotJson.from_json(json.dumps(value))


@SETTINGS
@given(st.dictionaries(text, json_values, max_size=4))
def test_jwt_payloads_round_trip(claims: dict[str, object]) -> None:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert decode_jwt_payload(f"h.{payload}.s") == claims


_DECODE_MESSAGES = {
    "invalid ID token format",
    "invalid ID token format: the payload is not unpadded base64url",
    "invalid ID token format: the payload is not base64url-encoded JSON",
    "invalid ID token format: the payload is not a JSON object",
}


@SETTINGS
@given(text)
def test_any_string_decodes_or_raises_auth_data_error(token: str) -> None:
    try:
        claims = decode_jwt_payload(token)
    except AuthDataError as exc:
        # The decoder's messages are fixed texts: none quotes the token (a short token may
        # still be a word of one, e.g. "tok" in "invalid ID token format").
        assert str(exc) in _DECODE_MESSAGES  # noqa: PT017 -- the message, not the type
        assert exc.__cause__ is None  # noqa: PT017 -- nothing chained that could quote it
    else:
        assert isinstance(claims, dict)


@SETTINGS
@given(text)
def test_command_output_is_a_token_or_a_command_error(output: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        tokens = parse_command_output(output, "cmd", now)
    except CommandError as exc:
        stripped = output.strip()
        if len(stripped) > 3:
            assert stripped not in str(exc)  # noqa: PT017 -- the message, not the type
    else:
        assert tokens.access_token
        assert tokens.access_token == tokens.access_token.strip()
        assert "\n" not in tokens.access_token


@SETTINGS
@given(header_text.filter(lambda t: t.strip() and not t.strip().startswith("{")))
def test_plain_tokens_come_back_trimmed(token: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_command_output(f"  {token}\n", "cmd", now).access_token == token.strip()


@SETTINGS
@given(moments)
def test_rfc3339_round_trips(moment: datetime) -> None:
    formatted = format_rfc3339(moment)
    assert formatted.endswith("Z")
    assert parse_rfc3339(formatted) == moment


@SETTINGS
@given(st.dictionaries(text, st.dictionaries(text, json_values, max_size=4), max_size=3))
def test_provider_tables_load_or_raise_config_error(tables: dict[str, object]) -> None:
    try:
        providers = parse_providers({"model_providers": tables}, BASE)
    except ConfigError:
        return
    assert set(providers) == set(tables)


@SETTINGS
@given(st.dictionaries(text, json_values, max_size=6))
def test_auth_tables_load_or_raise_config_error(auth: dict[str, object]) -> None:
    with contextlib.suppress(ConfigError):
        parse_providers({"model_providers": {"p": {"auth": auth}}}, BASE)
