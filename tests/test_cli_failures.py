"""The console script when something fails: what it prints, where, and once (issue 21).

Real subprocesses of the installed script against the test kit's fake token server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aioscopedauth.testing import FakeAuthServer, TokenFailure, chatgpt_auth, write_auth_json

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
