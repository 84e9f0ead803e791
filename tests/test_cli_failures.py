"""The console script when something fails: what it prints, where, and once (issue 21).

Real subprocesses of the installed script against the test kit's fake token server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from aioscopedauth.testing import (
    FakeAuthServer,
    TokenFailure,
    chatgpt_auth,
    serve_on_loopback,
    write_auth_json,
)

if TYPE_CHECKING:
    from aioscopedauth import AuthDotJson

SCRIPT = shutil.which("aioscopedauth", path=str(Path(sys.executable).parent)) or "aioscopedauth"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
REVOKED = (
    "Your access token could not be refreshed because your refresh token was revoked. "
    "Please log out and sign in again."
)


async def _run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        SCRIPT,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _login(server: FakeAuthServer, home: Path, *, expires_in: timedelta) -> AuthDotJson:
    """A managed login whose access token expires ``expires_in`` from now (negative: expired).

    Refreshed an hour ago, so even a token that is still valid is due for a refresh (its
    refresh window is the last five minutes of the hour).
    """
    valid = server.login()  # a refresh token the server knows
    assert valid.tokens is not None
    payload = chatgpt_auth(
        refresh_token=valid.tokens.refresh_token,
        expires_in=expires_in,
        last_refresh=datetime.now(UTC) - timedelta(hours=1),
    )
    write_auth_json(home, payload)
    server.client_id = CODEX_CLIENT_ID
    return payload


def _token_env(server: FakeAuthServer) -> dict[str, str]:
    return {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.token_url}


def _transient(server: FakeAuthServer) -> str:
    """Make every token request fail with a 503 for the rest of the test; return its text."""
    server.failures.extend(TokenFailure(503, "maintenance") for _ in range(10))
    return "Failed to refresh token: 503 Service Unavailable: maintenance"


# -- token: never hand a script a dead token (issue 21 item 2) ------------------------------------


async def test_token_of_an_expired_login_whose_refresh_is_refused_prints_nothing(
    home: Path, server: FakeAuthServer
) -> None:
    _login(server, home, expires_in=timedelta(minutes=-1))
    server.revoke_refresh_tokens()
    code, out, err = await _run("--home", str(home), "token", env=_token_env(server))
    assert (code, out) == (1, "")
    assert err == f"aioscopedauth: {REVOKED}\n"
    assert server.token_calls == 1


async def test_token_of_an_expired_login_whose_refresh_fails_for_now_prints_nothing(
    home: Path, server: FakeAuthServer
) -> None:
    _login(server, home, expires_in=timedelta(minutes=-1))
    failure = _transient(server)
    code, out, err = await _run("--home", str(home), "token", env=_token_env(server))
    assert (code, out) == (1, "")
    assert err == f"aioscopedauth: {failure} (the access token has expired; try again later)\n"
    assert server.token_calls == 1


async def test_token_due_for_a_refresh_that_is_refused_prints_nothing(
    home: Path, server: FakeAuthServer
) -> None:
    _login(server, home, expires_in=timedelta(minutes=2))
    server.revoke_refresh_tokens()
    code, out, err = await _run("--home", str(home), "token", env=_token_env(server))
    assert (code, out) == (1, "")
    assert err == f"aioscopedauth: {REVOKED}\n"


async def test_token_due_whose_refresh_fails_for_now_is_printed_with_one_warning(
    home: Path, server: FakeAuthServer
) -> None:
    payload = _login(server, home, expires_in=timedelta(minutes=2))
    assert payload.tokens is not None
    failure = _transient(server)
    code, out, err = await _run("--home", str(home), "token", env=_token_env(server))
    assert (code, out) == (0, payload.tokens.access_token + "\n")
    assert err.startswith(f"aioscopedauth: warning: {failure} (printed the current token: ")
    assert err.endswith(" left)\n")
    assert err.count("\n") == 1
    assert server.token_calls == 1


async def test_token_of_an_expired_login_is_refreshed_and_the_new_one_printed(
    home: Path, server: FakeAuthServer
) -> None:
    payload = _login(server, home, expires_in=timedelta(minutes=-1))
    assert payload.tokens is not None
    code, out, err = await _run("--home", str(home), "token", env=_token_env(server))
    assert (code, err) == (0, "")
    assert out.strip() != payload.tokens.access_token
    assert server.is_valid_access_token(out.strip())
    assert server.refreshes == 1


async def test_token_of_a_fresh_login_is_printed_without_a_refresh(
    home: Path, server: FakeAuthServer
) -> None:
    fresh = server.login()
    assert fresh.tokens is not None
    write_auth_json(home, fresh)
    server.client_id = CODEX_CLIENT_ID
    code, out, err = await _run("--home", str(home), "token", env=_token_env(server))
    assert (code, out, err) == (0, fresh.tokens.access_token + "\n", "")
    assert server.token_calls == 0


# -- one message per failure, worded once (issue 21 item 5) --------------------------------------

CORRUPT = (
    "{path} is not a valid auth.json: not valid JSON (Expecting property name enclosed in double "
    "quotes: line 1 column 2 (char 1)). It was left untouched; fix it, or move it away and log "
    "in again."
)
LOGIN_HINT = (
    "log in with `aioscopedauth login --api-key` (it reads the key from stdin) or `codex login`"
)


@pytest.mark.parametrize(
    ("command", "tail"),
    [
        (["status"], ""),
        (["token"], ""),
        (["logout"], " (`--force` removes it.)"),
        (["login", "--api-key"], " (`--force` replaces it.)"),
    ],
)
async def test_a_corrupt_readable_auth_json_is_one_error_without_the_mode_warning(
    home: Path, command: list[str], tail: str
) -> None:
    home.mkdir()
    path = home / "auth.json"
    path.write_text("{")
    path.chmod(0o644)
    code, out, err = await _run("--home", str(home), *command, stdin=b"sk-new\n")
    assert (code, out) == (1, "")
    # Not "…can be read by other users (mode 0644); … The next save writes it 0600.": the save
    # is refused, and the error is what to fix.
    assert err == f"aioscopedauth: {CORRUPT.format(path=path)}{tail}\n"
    assert path.read_text() == "{"


async def test_an_empty_object_as_auth_json_is_one_not_logged_in_message(home: Path) -> None:
    home.mkdir()
    path = home / "auth.json"
    path.write_text("{}")
    path.chmod(0o644)
    why = f"{path} holds no usable login (ChatGPT auth has no tokens. Log in again)"
    code, out, err = await _run("--home", str(home), "status")
    assert (code, err) == (1, "")
    assert out == f"Not logged in: {why}.\n  To {LOGIN_HINT}.\n"
    code, out, err = await _run("--home", str(home), "token")
    assert (code, out) == (1, "")
    assert err == f"aioscopedauth: not logged in: {why}; {LOGIN_HINT}\n"


async def test_redis_down_is_one_error_not_also_the_listener_giving_up() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    code, out, err = await _run("--store", "redis", "--redis-url", url, "status")
    assert (code, out) == (1, "")
    assert err.startswith(f"aioscopedauth: Could not read the login: Redis at {url} is unreachable")
    assert err.endswith("Check that it runs and that the URL is right.\n")
    assert err.count("\n") == 1, err  # not "warning: Stopped listening: <the same>; reconnecting"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("localhost:6379", "localhost:6379"),
        ("redis://:hunter2@localhost:99999/0", "redis://***@localhost:99999/0"),
        ("redis://user:hunter2@localhost:port/0", "redis://***@localhost:port/0"),
        ("http://localhost:6379", "http://localhost:6379"),
        ("unix://", "unix://"),
    ],
)
async def test_a_bad_redis_url_is_a_usage_error_echoed_as_typed(url: str, shown: str) -> None:
    code, out, err = await _run("--store", "redis", "--redis-url", url, "status")
    assert (code, out) == (2, "")
    assert err.startswith(f"aioscopedauth: error: --redis-url {shown!r}: Bad Redis URL: ")
    assert err.endswith("with special characters in the user and password percent-encoded\n")
    assert err.count("\n") == 1
    code, out, err = await _run("--store", "redis", "status", env={"AIOSCOPEDAUTH_REDIS_URL": url})
    assert (code, out) == (2, "")
    assert err.startswith(f"aioscopedauth: error: $AIOSCOPEDAUTH_REDIS_URL {shown!r}: Bad Redis")
    assert "hunter2" not in err
    # The fleet demo checks it before it starts anything.
    code, out, err = await _run("demo", "--hosts", "2", "--redis-url", url)
    assert (code, out) == (2, "")
    assert err.startswith(f"aioscopedauth: error: --redis-url {shown!r}: Bad Redis URL: ")


async def test_a_failed_proactive_refresh_is_worded_once(
    home: Path, server: FakeAuthServer
) -> None:
    # An API that takes any bearer: the request succeeds with the still-valid token, so the
    # failed refresh before it is only a warning.
    async def hello(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/api/hello", hello)
    runner, api = await serve_on_loopback(app)
    try:
        _login(server, home, expires_in=timedelta(minutes=2))
        failure = _transient(server)
        code, out, err = await _run(
            "--home", str(home), "request", "--origin", api, f"{api}/api/hello",
            env=_token_env(server),
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert (code, out) == (0, '{"ok": true}\n')
    assert err == f"HTTP 200 OK\naioscopedauth: warning: {failure}\n"


@pytest.mark.parametrize(
    ("args", "env", "what"),
    [
        (("--home", "~nosuchuser/codex", "status"), {}, "--home"),
        (("--config", "~nosuchuser/c.toml", "token", "--provider", "corp"), {}, "--config"),
        (("status",), {"CODEX_HOME": "~nosuchuser/codex"}, "CODEX_HOME"),
    ],
)
async def test_a_path_under_an_unknown_user_is_a_usage_error(
    args: tuple[str, ...], env: dict[str, str], what: str
) -> None:
    # Issue 20 item 14: these were a RuntimeError traceback with exit 1.
    code, out, err = await _run(*args, env=env)
    assert (code, out) == (2, "")
    assert err == (
        f"aioscopedauth: error: {what} starts with ~nosuchuser, but there is no user "
        "'nosuchuser' to expand it for\n"
    )
