"""Logins and logouts that land while the other side refreshes (real Codex CLI 0.169.0)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aioscopedauth import AuthError, AuthMode
from aioscopedauth.testing import write_auth_json
from interop.harness import (
    file_mode,
    hold_flock,
    is_codex_request,
    is_locked_by_other,
    opened_here,
    read_json,
    stray_temp_files,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from aioscopedauth import AuthManager
    from aioscopedauth.testing import FakeAuthServer
    from interop.harness import Codex

API_KEY = "sk-interop-login-during-commit"


def _apikey_bytes(key: str) -> bytes:
    return b'{\n  "auth_mode": "apikey",\n  "OPENAI_API_KEY": "' + key.encode() + b'"\n}'


async def test_api_key_login_during_a_codex_commit_survives(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    auth_lock, json_lock = home / "auth.lock", home / "auth.json.lock"
    async with codex.app_server() as app:
        # Hold Codex's inner lock: Codex's commit then sits inside auth.lock (it polls
        # auth.json.lock for about 5 s), so the library's login must wait behind the commit.
        with hold_flock(json_lock):
            codex_refresh = asyncio.create_task(app.read_account(refresh=True))
            await wait_until(lambda: server.refreshes == 1, "Codex spent the refresh token")
            await wait_until(lambda: is_locked_by_other(auth_lock), "Codex holds auth.lock")
            login = asyncio.create_task(manager.login_with_api_key(API_KEY))
            await wait_until(lambda: opened_here(auth_lock), "the login waits for auth.lock")
            assert is_locked_by_other(auth_lock)
            assert not login.done()
        # Released: Codex commits its tokens, then the login goes and wins.
        answer = await codex_refresh
        await login
    assert "result" in answer, answer
    assert (home / "auth.json").read_bytes() == _apikey_bytes(API_KEY)
    assert file_mode(home / "auth.json") == 0o600
    auth = await manager.auth()
    assert auth is not None
    assert (auth.mode, auth.token) == (AuthMode.API_KEY, API_KEY)
    assert server.refreshes == 1
    assert stray_temp_files(home) == []


async def test_codex_commit_after_a_login_between_its_post_and_its_commit(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    # Codex 0.169's own behaviour, pinned: a login that lands after Codex spent the refresh
    # token but before Codex commits. Codex's commit re-reads auth.json under its locks.
    write_auth_json(home, server.login())
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_codex(body: dict[str, Any]) -> None:
        if is_codex_request(body):
            held.set()
            await release.wait()

    server.token_hook = hold_codex
    async with codex.app_server() as app:
        codex_refresh = asyncio.create_task(app.read_account(refresh=True))
        await asyncio.wait_for(held.wait(), 20)
        await manager.login_with_api_key(API_KEY)
        assert (home / "auth.json").read_bytes() == _apikey_bytes(API_KEY)
        release.set()
        answer = await codex_refresh
    # Codex answers with the login it refreshed (its own memory) ...
    assert answer["result"]["account"]["type"] == "chatgpt", answer
    assert server.refreshes == 1
    # Observed with 0.169.0: Codex keeps the newer login (it does not overwrite it).
    # ... but its commit re-read auth.json and kept the login: the file is the library's.
    assert (home / "auth.json").read_bytes() == _apikey_bytes(API_KEY)
    assert read_json(home / "auth.json")["auth_mode"] == "apikey"
    assert file_mode(home / "auth.json") == 0o600


async def test_codex_logout_during_a_library_refresh_stays_logged_out(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    assert await manager.reload() is True
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_library(body: dict[str, Any]) -> None:
        if not is_codex_request(body):
            held.set()
            await release.wait()

    server.token_hook = hold_library
    refresh = asyncio.create_task(manager.refresh_token())
    await asyncio.wait_for(held.wait(), 20)
    done = await codex.run("logout")
    assert done.returncode == 0, done.stderr
    assert "Successfully logged out" in done.stdout + done.stderr
    assert not (home / "auth.json").exists()
    release.set()
    try:
        outcome: object = await refresh
    except AuthError as exc:
        outcome = exc
    # The refresh spent the token at the server, but its commit found the logout and kept it.
    assert outcome is not True
    assert server.refreshes == 1
    assert not (home / "auth.json").exists()
    assert await manager.auth() is None
    assert manager.auth_cached() is None
    assert stray_temp_files(home) == []
    status = await codex.run("login", "status")
    assert status.returncode == 1
    assert "Not logged in" in status.stdout + status.stderr
