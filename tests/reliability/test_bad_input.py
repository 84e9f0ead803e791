"""The bad-input catalogue: each case ends in its documented error (or None), never a bare
traceback, and never changes a file."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from aioscopedauth import (
    AuthDataError,
    AuthDotJson,
    AuthManager,
    CommandBearerRefresher,
    CommandError,
    ConfigError,
    FileAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
    RefreshTokenFailedError,
    StorageError,
    TransientRefreshError,
    decode_jwt_payload,
    load_providers,
)
from aioscopedauth._command import END_OF_TIME, START_OF_TIME
from aioscopedauth._paths import codex_home
from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import (
    FakeAuthServer,
    RedisServer,
    TokenFailure,
    make_jwt,
    write_auth_json,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

GOOD_ID = make_jwt({"email": "e@example.com"})
PADDED_ID = "eyJhbGciOiJub25lIn0.eyJhIjoxfQ==.sig"

# -- auth.json ----------------------------------------------------------------------------

BAD_FILES: dict[str, bytes] = {
    "not JSON": b"{",
    "empty": b"",
    "binary": b"\x00\xff\xfe\x01",
    "UTF-16": '{"OPENAI_API_KEY": "sk"}'.encode("utf-16"),
    "a JSON array": b"[]",
    "a JSON string": b'"sk-123"',
    "auth_mode that is a number": b'{"auth_mode": 3}',
    "apikey mode without key": b'{"auth_mode": "apikey", "OPENAI_API_KEY": null}',
    "key that is a number": b'{"OPENAI_API_KEY": 12345}',
    "tokens that are a list": b'{"tokens": []}',
    "tokens without access_token": (
        b'{"tokens": {"id_token": "' + GOOD_ID.encode() + b'", "refresh_token": "r"}}'
    ),
    "id_token that is no JWT": (
        b'{"tokens": {"id_token": "nope", "access_token": "a", "refresh_token": "r"}}'
    ),
    "padded id_token": (
        b'{"tokens": {"id_token": "' + PADDED_ID.encode() + b'", "access_token": "a", '
        b'"refresh_token": "r"}}'
    ),
    "account_id that is a number": (
        b'{"tokens": {"id_token": "' + GOOD_ID.encode() + b'", "access_token": "a", '
        b'"refresh_token": "r", "account_id": 7}}'
    ),
    "last_refresh garbage": b'{"OPENAI_API_KEY": "sk", "last_refresh": "yesterday"}',
    "key with a header injection": b'{"OPENAI_API_KEY": "sk\\r\\nX-Evil: 1"}',
    "key with a control character": b'{"OPENAI_API_KEY": "sk\\u0001x"}',
    "key with DEL": b'{"OPENAI_API_KEY": "sk\\u007fx"}',
    "key with a lone surrogate": b'{"OPENAI_API_KEY": "sk\\ud800x"}',
    "access token with an escape character": (
        b'{"tokens": {"id_token": "' + GOOD_ID.encode() + b'", "access_token": "a\\u001b[31m", '
        b'"refresh_token": "r"}}'
    ),
    "personal access token with a header injection": (
        b'{"OPENAI_API_KEY": null, "personal_access_token": "at-x\\r\\nX-Evil: 1"}'
    ),
    "account_id with a line break": (
        b'{"tokens": {"id_token": "' + GOOD_ID.encode() + b'", "access_token": "a", '
        b'"refresh_token": "r", "account_id": "acct\\nX-Evil: 1"}}'
    ),
    "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "2 MiB of spaces": b" " * (2 * 1024 * 1024),
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_bad_auth_json_is_a_storage_error_and_stays(
    home: Path, oauth: OAuthConfig, content: bytes
) -> None:
    home.mkdir()
    path = home / "auth.json"
    path.write_bytes(content)
    before = path.stat().st_mtime_ns
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        with pytest.raises(StorageError) as info:
            await manager.auth()
    assert str(path) in str(info.value)
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "content", [b"{}", b'{"OPENAI_API_KEY": null}'], ids=["empty object", "null key"]
)
async def test_auth_json_without_credentials_is_logged_out(
    home: Path, oauth: OAuthConfig, content: bytes
) -> None:
    home.mkdir()
    (home / "auth.json").write_bytes(content)
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        assert await manager.auth() is None
    assert (home / "auth.json").read_bytes() == content


# -- the token endpoint -------------------------------------------------------------------

ENDPOINT_ANSWERS: dict[str, tuple[TokenFailure, type[Exception], str]] = {
    "HTML 200": (
        TokenFailure(200, "<html>hi</html>", "text/html"),
        TransientRefreshError,
        "not a JSON object",
    ),
    "empty 200": (TokenFailure(200, ""), TransientRefreshError, "not a JSON object"),
    "huge 200": (
        TokenFailure(200, "x" * (3 * 1024 * 1024)),
        TransientRefreshError,
        "larger than 1024 KiB",
    ),
    "JSON list 200": (
        TokenFailure(200, "[1, 2]", "application/json"),
        TransientRefreshError,
        "not a JSON object",
    ),
    "number access_token": (
        TokenFailure(200, {"access_token": 1}),
        TransientRefreshError,
        "access_token is not a string",
    ),
    "500 HTML": (
        TokenFailure(500, "<html>oops</html>", "text/html"),
        TransientRefreshError,
        "500 Internal Server Error",
    ),
    "302 redirect": (TokenFailure(302, ""), TransientRefreshError, "302 Found"),
    "401 garbage": (TokenFailure(401, "\x00garbage"), RefreshTokenFailedError, "could not be"),
    "dropped connection": (
        TokenFailure(200, "", drop_connection=True),
        TransientRefreshError,
        "could not reach the token endpoint",
    ),
}


@pytest.mark.parametrize(
    ("failure", "error", "message"), ENDPOINT_ANSWERS.values(), ids=ENDPOINT_ANSWERS.keys()
)
async def test_bad_token_endpoint_answers(
    home: Path,
    oauth: OAuthConfig,
    server: FakeAuthServer,
    failure: TokenFailure,
    error: type[Exception],
    message: str,
) -> None:
    path = write_auth_json(home, server.login(expired=True))
    before = path.read_bytes()
    server.failures.append(failure)
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        with pytest.raises(error, match=message):
            await manager.refresh_token()
    assert path.read_bytes() == before


def _with(key: str, value: object) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda answer: {**answer, key: value}


def _raw_access(text: str) -> Callable[[dict[str, Any]], str]:
    # A JSON body whose access token is ``text`` written raw (escapes such as \ud800 decode to
    # a lone surrogate, which json.dumps on the server side would not produce).
    def mangle(answer: dict[str, Any]) -> str:
        rest = json.dumps({k: v for k, v in answer.items() if k != "access_token"})
        return '{"access_token": "' + text + '", ' + rest[1:]

    return mangle


# A 200 answer from a rotating endpoint: the old refresh token is spent whatever else is wrong,
# so the usable rest (above all the new refresh token) must be kept, and what is saved must load.
PARTLY_UNUSABLE: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any] | str], str]] = {
    "access token with CR/LF": (
        _with("access_token", "at\r\nX-Evil: 1"),
        "access_token contains a line break",
    ),
    "access token with a control character": (
        _with("access_token", "at\x01x"),
        "access_token contains a line break, a control character",
    ),
    "access token with a lone surrogate": (
        _raw_access("at-\\ud800"),
        "access_token contains a line break, a control character or invalid Unicode",
    ),
    "access token of 1,047,000 bytes, the answer under the 1 MiB cap": (
        _with("access_token", "a" * 1_047_000),
        "access_token is longer than 128 KiB",
    ),
    "id token that is no JWT": (_with("id_token", "nope"), "id_token is unusable"),
    "id token whose email is a number": (
        _with("id_token", make_jwt({"email": 7})),
        "id_token is unusable",
    ),
    "id token that is a number": (_with("id_token", 7), "id_token is not a string"),
}


@pytest.mark.parametrize(
    ("mangle", "message"), PARTLY_UNUSABLE.values(), ids=PARTLY_UNUSABLE.keys()
)
async def test_a_partly_unusable_answer_keeps_the_new_refresh_token(
    home: Path,
    oauth: OAuthConfig,
    server: FakeAuthServer,
    mangle: Callable[[dict[str, Any]], dict[str, Any] | str],
    message: str,
) -> None:
    login = server.login(expired=True)
    path = write_auth_json(home, login)
    server.mangle_answer = mangle
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        with pytest.raises(TransientRefreshError, match=message) as info:
            await manager.refresh_token()
        assert "the new refresh token was kept" in str(info.value)
        # What was saved loads again, and holds the rotated refresh token, not the spent one.
        stored = await FileAuthStore(home).load()
        assert stored is not None
        assert stored.tokens is not None
        assert login.tokens is not None
        assert stored.tokens.refresh_token != login.tokens.refresh_token
        assert server.is_valid_refresh_token(stored.tokens.refresh_token)
        # Once the endpoint answers well again, the next refresh spends the kept token.
        server.mangle_answer = None
        assert await manager.refresh_token() is True
    assert server.reuse_answers == 0
    assert server.refreshes == 2
    assert AuthDotJson.from_json(path.read_bytes()).tokens is not None


async def test_an_unusable_refresh_token_in_an_answer_says_to_log_in_if_it_fails(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    server.mangle_answer = _with("refresh_token", "rt\nX: 1")
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        with pytest.raises(TransientRefreshError, match="refresh_token contains a line break") as e:
            await manager.refresh_token()
        assert "if the next refresh fails, log in again" in str(e.value)
    assert await FileAuthStore(home).load() is not None


async def test_slow_token_endpoint(home: Path, server: FakeAuthServer) -> None:
    path = write_auth_json(home, server.login(expired=True))
    before = path.read_bytes()
    server.token_gate = asyncio.Event()
    config = OAuthConfig(server.token_url, server.client_id, timeout=0.2)
    async with AuthManager(FileAuthStore(home), config) as manager:
        with pytest.raises(TransientRefreshError, match="did not answer within"):
            await manager.refresh_token()
    assert path.read_bytes() == before


# -- command outputs ----------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, float, str]] = {
    "empty output": ("true", 5.0, "produced an empty token"),
    "binary output": ("printf '\\377\\000\\376'", 5.0, "non-UTF-8"),
    "huge output": ("head -c 5000000 /dev/zero | tr '\\0' x", 5.0, "more than 1024 KiB"),
    "hangs": ("sleep 30", 0.3, "timed out after 300 ms"),
    "two lines": ("printf 'a\\nb\\n'", 5.0, "more than one line"),
    "JSON without token": ("echo '{\"expires_in\": 3}'", 5.0, "without a string access_token"),
    "exit 1": ("echo denied >&2; exit 1", 5.0, "exited with exit status: 1: denied"),
    "expires_in NaN": (
        'echo \'{"token": "t", "expires_in": NaN}\'',
        5.0,
        "printed an invalid expires_in$",
    ),
    "expires_at NaN": (
        'echo \'{"token": "t", "expires_at": NaN}\'',
        5.0,
        "printed an invalid expires_at expiry$",
    ),
}


@pytest.mark.parametrize(("body", "limit", "message"), COMMANDS.values(), ids=COMMANDS.keys())
async def test_bad_command_outputs(tmp_path: Path, body: str, limit: float, message: str) -> None:
    script = tmp_path / "cmd.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    config = ProviderAuthCommand("./cmd.sh", cwd=tmp_path, timeout=limit)
    with pytest.raises(CommandError, match=message):
        await CommandBearerRefresher(config).resolve()


# An expiry past either end of the calendar is no error: it saturates, as a login's dates do.
BEYOND_THE_CALENDAR: dict[str, tuple[str, bool]] = {
    "expires_in 1e20": ('"expires_in": 1e20', True),
    "expires_in Infinity": ('"expires_in": Infinity', True),
    "expires_in -Infinity": ('"expires_in": -Infinity', False),
    "expires_in 10**400": ('"expires_in": 1' + "0" * 400, True),
    "expires_at 1e20": ('"expires_at": 1e20', True),
    "expires_at -1e20": ('"expires_at": -1e20', False),
}


@pytest.mark.parametrize(
    ("field", "for_ever"), BEYOND_THE_CALENDAR.values(), ids=BEYOND_THE_CALENDAR.keys()
)
async def test_an_expiry_beyond_the_calendar_saturates(
    tmp_path: Path, field: str, for_ever: bool
) -> None:
    script = tmp_path / "cmd.sh"
    script.write_text(f'#!/bin/sh\necho \'{{"token": "t", {field}}}\'\n')
    script.chmod(0o755)
    config = ProviderAuthCommand("./cmd.sh", cwd=tmp_path)
    tokens = await CommandBearerRefresher(config).resolve()
    assert tokens is not None
    assert tokens.access_token == "t"
    assert tokens.expires_at == (END_OF_TIME if for_ever else START_OF_TIME)


# -- configuration ------------------------------------------------------------------------

CONFIGS: dict[str, tuple[bytes, str]] = {
    "TOML syntax": (b"[model_providers.x\n", "not valid TOML"),
    "auth is a string": (b'[model_providers.x]\nauth = "cmd"\n', "auth must be a table"),
    "timeout_ms zero": (
        b'[model_providers.x.auth]\ncommand = "c"\ntimeout_ms = 0\n',
        "timeout_ms must be greater than zero",
    ),
    "not UTF-8": (b"\xff\xfe[model_providers]", "is not UTF-8 text"),
    "nested 100000 deep": (b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "command of an unknown user": (
        b'[model_providers.x.auth]\ncommand = "~nosuchuser-aioscopedauth/bin/tok"\n',
        (
            "^model_providers.x: provider auth.command starts with ~nosuchuser-aioscopedauth, but "
            "there is no user 'nosuchuser-aioscopedauth' to expand it for$"
        ),
    ),
    "cwd of an unknown user": (
        b'[model_providers.x.auth]\ncommand = "tok"\ncwd = "~nosuchuser-aioscopedauth"\n',
        "^model_providers.x: auth.cwd starts with ~nosuchuser-aioscopedauth",
    ),
    "NUL in an argument": (
        b'[model_providers.x.auth]\ncommand = "tok"\nargs = ["a\\u0000"]\n',
        "^model_providers.x: provider auth.args must be strings without NUL bytes$",
    ),
}


@pytest.mark.parametrize(("content", "message"), CONFIGS.values(), ids=CONFIGS.keys())
def test_bad_config(tmp_path: Path, content: bytes, message: str) -> None:
    # Every case is one line: a CLI prints it as it is.
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_providers(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: codex_home({"CODEX_HOME": "~nosuchuser-aioscopedauth/codex"}),
            (
                "CODEX_HOME starts with ~nosuchuser-aioscopedauth, but there is no user "
                "'nosuchuser-aioscopedauth' to expand it for"
            ),
        ),
        (
            lambda: load_providers("~nosuchuser-aioscopedauth/config.toml"),
            (
                "the config file's path starts with ~nosuchuser-aioscopedauth, but there is no "
                "user 'nosuchuser-aioscopedauth' to expand it for"
            ),
        ),
        (
            lambda: FileAuthStore("~nosuchuser-aioscopedauth/.codex"),
            (
                "the home folder starts with ~nosuchuser-aioscopedauth, but there is no user "
                "'nosuchuser-aioscopedauth' to expand it for"
            ),
        ),
        (
            lambda: ProviderAuthCommand("~nosuchuser-aioscopedauth/bin/tok"),
            (
                "provider auth.command starts with ~nosuchuser-aioscopedauth, but there is no user "
                "'nosuchuser-aioscopedauth' to expand it for"
            ),
        ),
    ],
    ids=["CODEX_HOME", "config path", "home", "command"],
)
def test_a_path_under_an_unknown_user_is_a_config_error(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value) == message


# -- JWTs ---------------------------------------------------------------------------------


DEEP_PAYLOAD = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).rstrip(b"=").decode()


BAD_JWTS = [
    "",
    "a.b",
    PADDED_ID,
    "a.!!!.c",
    make_jwt({"a": 1}).replace(".", "..", 1),
    f"h.{DEEP_PAYLOAD}.s",
]


@pytest.mark.parametrize("token", BAD_JWTS)
def test_bad_jwts(token: str) -> None:
    with pytest.raises(AuthDataError, match="invalid ID token format"):
        decode_jwt_payload(token)


# -- Redis URLs and the login stored in Redis ------------------------------------------------

REDIS_PASSWORD = "CANARY-redis-password-31f0"
REDIS_URLS: dict[str, tuple[str, str]] = {
    "port that is no number": (
        f"redis://fleet:{REDIS_PASSWORD}@h:abc/0",
        "the port must be a number from 1 to 65535",
    ),
    "port 99999": ("redis://h:99999/0", "the port must be a number from 1 to 65535"),
    "port 0": ("redis://h:0/0", "the port must be a number from 1 to 65535"),
    "unclosed IPv6 bracket": ("redis://[::1", "it cannot be parsed (an unclosed '['"),
    "an http URL": (
        "http://h:6379/0",
        "it must start with redis://, rediss://, unix:// or redis+sentinel://",
    ),
    "no scheme": ("h:6379", "it must start with redis://, rediss://, unix:// or redis+sentinel://"),
    "a unix URL without a path": ("unix://", "a unix:// URL needs the socket's path"),
    "a database that is no number": ("redis://h:6379/x", "the database after the host must"),
    "a password with an unencoded slash": (
        f"redis://fleet:{REDIS_PASSWORD}/x@h:6379/0",
        "the port must be a number",
    ),
    "a password with an unencoded slash after digits": (
        f"redis://fleet:123/{REDIS_PASSWORD}@h:6379/0",
        "the database after the host must",
    ),
    "a query option with a bad value": (
        f"redis://:{REDIS_PASSWORD}@h:6379/0?socket_timeout=abc",
        "one of its query options has a bad value",
    ),
    "a sentinel whose port is no number": (
        f"redis+sentinel://fleet:{REDIS_PASSWORD}@h1:26379,h2:abc/svc",
        "each sentinel must be host:port, with a port from 1 to 65535",
    ),
    "an empty sentinel": ("redis+sentinel://h1:26379,,h2/svc", "each sentinel must be host:port"),
    "a sentinel URL without a service": (
        "redis+sentinel://h1:26379,h2:26379",
        "names the service after the sentinels",
    ),
    "a sentinel URL whose database is no number": (
        "redis+sentinel://h1/svc/x",
        "the database after the service must be a number",
    ),
    "a sentinel password with an unencoded slash": (
        f"redis+sentinel://fleet:{REDIS_PASSWORD}/x@h1/svc",
        "each sentinel must be host:port",
    ),
    "a sentinel URL with a bad query option": (
        f"redis+sentinel://:{REDIS_PASSWORD}@h1/svc?socket_timeout=x",
        "one of its query options has a bad value",
    ),
    "an unknown query option": (
        "redis://h:6379/0?sockettimeout=1",
        "Bad Redis client option 'sockettimeout'",
    ),
    "an ssl option without rediss": (
        "redis://h:6379/0?ssl_ca_certs=/etc/ca.pem",
        (
            "'ssl_ca_certs' (in the URL's query or the keyword arguments): redis.asyncio does "
            "not take it here; ssl options need a rediss:// URL"
        ),
    ),
}


@pytest.mark.parametrize(("url", "message"), REDIS_URLS.values(), ids=REDIS_URLS.keys())
def test_bad_redis_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisAuthStore.from_url(url)
    text = str(info.value)
    assert message in text
    assert REDIS_PASSWORD not in text
    assert "/x@" not in text
    assert len(text.splitlines()) == 1
    # Nothing chained: the parser's error may quote the URL, password included.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


REDIS_HASHES: dict[str, tuple[dict[bytes, bytes], str]] = {
    "a document that is not UTF-8": (
        {b"version": b"1", b"auth.json": b'{"OPENAI_API_KEY": "sk-\xff"}'},
        "bytes that are not UTF-8 text",
    ),
    "a sealed document that is not UTF-8": (
        {b"version": b"1", b"sealed": b"\xff\xfe"},
        "bytes that are not UTF-8 text",
    ),
    "a version that is not UTF-8": ({b"version": b"\xff"}, "bytes that are not UTF-8 text"),
    "a writer that is not UTF-8": (
        {b"version": b"1", b"writer": b"\xc3\x28", b"auth.json": b"{}"},
        "bytes that are not UTF-8 text",
    ),
    "a field name that is not UTF-8": (
        {b"version": b"1", b"\xff": b"x"},
        "bytes that are not UTF-8 text",
    ),
    "a version that is no number": ({b"version": b"abc"}, "holds no version"),
    "no version": ({b"auth.json": b"{}"}, "holds no version"),
    "a document that is not JSON": (
        {b"version": b"1", b"auth.json": b"{not json"},
        r"is not a valid auth\.json",
    ),
}


@pytest.mark.parametrize("decoding", [False, True], ids=["bytes client", "decoding client"])
@pytest.mark.parametrize(("fields", "message"), REDIS_HASHES.values(), ids=REDIS_HASHES.keys())
async def test_a_bad_login_in_redis_is_a_storage_error_and_stays(
    redis_server: RedisServer,
    redis_name: str,
    fields: dict[bytes, bytes],
    message: str,
    *,
    decoding: bool,
) -> None:
    async with (
        aioredis.from_url(redis_server.url) as raw,
        aioredis.from_url(redis_server.url, decode_responses=decoding) as client,
        RedisAuthStore(client, name=redis_name) as store,
    ):
        await raw.hset(store.key, mapping=fields)  # type: ignore[arg-type]  # bytes keys are fine
        with pytest.raises(StorageError, match=message) as info:
            await store.load()
        assert len(str(info.value).splitlines()) == 1
        # Nothing chained: a decoding error holds the whole document.
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__
        with pytest.raises(StorageError, match=message):
            await store.save(AuthDotJson.for_api_key("sk-new"))  # decides on nothing unread
        assert await raw.hgetall(store.key) == fields  # left as it was, for a person to look at


def test_catalogue_has_at_least_30_cases() -> None:
    # The two logged-out files and the slow endpoint are cases of their own tests.
    total = len(BAD_FILES) + 2 + len(ENDPOINT_ANSWERS) + 1 + len(COMMANDS) + len(CONFIGS)
    total += len(BEYOND_THE_CALENDAR) + 4  # the four paths under an unknown user
    total += len(PARTLY_UNUSABLE) + 1 + len(REDIS_URLS) + len(REDIS_HASHES)
    assert total + len(BAD_JWTS) >= 30
