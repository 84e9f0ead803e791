"""Cancelled requests, refreshes, saves and commands leave no child, no held lock, no temp file."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import aiohttp
import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AuthMiddleware,
    CommandBearerRefresher,
    FileAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
)
from aioscopedauth.testing import FakeAuthServer, write_auth_json


def _temp_files(home: Path) -> list[str]:
    return [p.name for p in home.iterdir() if p.name.endswith(".tmp")]


async def _lock_is_free(home: Path) -> bool:
    async with FileAuthStore(home, lock_timeout=2).lock():
        return True


async def test_cancelled_requests_during_a_refresh(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        session = aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),))
        async with session:
            async with session.get(f"{server.url}/api/warm") as response:
                assert response.status == 200
            server.revoke_access_tokens()
            server.token_gate = asyncio.Event()
            requests = [
                asyncio.create_task(session.get(f"{server.url}/api/{i}").__aenter__())
                for i in range(50)
            ]
            await server.token_request_seen.wait()
            for task in requests:
                task.cancel()
            results = await asyncio.gather(*requests, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            server.token_gate.set()
            async with session.get(f"{server.url}/api/after") as response:
                assert response.status == 200
    assert server.token_calls == 1
    assert server.reuse_answers == 0
    assert await _lock_is_free(home)
    assert _temp_files(home) == []
    stored = AuthDotJson.from_json((home / "auth.json").read_text())
    assert stored.tokens is not None
    assert server.is_valid_access_token(stored.tokens.access_token)


async def test_refresh_cancelled_while_another_process_holds_the_lock(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    path = write_auth_json(home, server.login(expired=True))
    before = path.read_bytes()
    other = FileAuthStore(home)  # stands for another process: flock excludes it the same way
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        async with other.lock():
            refresh = asyncio.create_task(manager.refresh_token())
            async with asyncio.timeout(10):
                # Until the refresh task exists: it is then waiting for the other's lock.
                while manager._core.refresh.inflight is None:  # noqa: ASYNC110 -- no event to await
                    await asyncio.sleep(0)
            refresh.cancel()
            with pytest.raises(asyncio.CancelledError):
                await refresh
        # The refresh task itself is shielded from the caller; it finishes once the lock frees.
        assert await manager.refresh_token() is True
    assert server.token_calls == 1
    assert path.read_bytes() != before
    assert await _lock_is_free(home)
    assert _temp_files(home) == []


async def test_cancelled_saves_leave_old_or_new_and_no_temp_file(home: Path) -> None:
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-old"))
    for i in range(50):
        task = asyncio.create_task(store.save(AuthDotJson.for_api_key(f"sk-new-{i}")))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loaded = await store.load()
        assert loaded is not None
        assert loaded.openai_api_key in {"sk-old", *(f"sk-new-{j}" for j in range(i + 1))}
    assert _temp_files(home) == []


async def test_cancelled_concurrent_commands_leave_no_process(tmp_path: Path) -> None:
    script = tmp_path / "slow.sh"
    script.write_text('#!/bin/sh\necho "$$" >> pids\nsleep 60\n')
    script.chmod(0o755)
    refresher = CommandBearerRefresher(ProviderAuthCommand("./slow.sh", cwd=tmp_path, timeout=60))
    waiters = [asyncio.create_task(refresher.resolve()) for _ in range(20)]
    async with asyncio.timeout(10):
        while not (tmp_path / "pids").exists():  # noqa: ASYNC110 -- the script's only signal
            await asyncio.sleep(0.01)
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 1  # single-flight: one run for 20 callers
    assert not Path(f"/proc/{pids[0]}").exists() or "Z" in _state(pids[0])
    script.write_text("#!/bin/sh\necho fresh\n")
    token = await refresher.resolve()
    assert token is not None
    assert token.access_token == "fresh"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def test_cancelled_loads_leak_no_file_handle(home: Path) -> None:
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-1"))
    for _ in range(100):
        task = asyncio.create_task(store.load())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # A leaked handle would be reported by its finalizer now; warnings are errors here.
    gc.collect()
    assert await store.load() == AuthDotJson.for_api_key("sk-1")
