"""Codex 0.169's commit protocol, our refresh lock, the compare-and-swap commit, reuse tolerance.

Another writer is played by a second ``FileAuthStore`` on the same home (``flock`` locks belong
to the open file, so two stores in one process exclude each other exactly as two processes do)
or by raw ``flock`` calls on Codex's lock files; cross-process races are in
``reliability/test_codex_races.py`` and, against the real Codex CLI, in ``interop/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AuthMode,
    FileAuthStore,
    MemoryAuthStore,
    OAuthConfig,
    RefreshFailureReason,
    RefreshTokenFailedError,
    StorageError,
)
from aioscopedauth._commit import refreshed_payload, run_in_thread
from aioscopedauth._oauth import ACCOUNT_MISMATCH_MESSAGE
from aioscopedauth.testing import FakeAuthServer, chatgpt_auth, write_auth_json

if TYPE_CHECKING:
    from collections.abc import Iterator


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """Hold ``path`` the way Codex does (BSD flock on its own open file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_count(target: Path) -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            count += fd.readlink() == target
    return count


async def _wait_until(predicate: object, what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


# -- the decision --------------------------------------------------------------------------


def test_the_commit_writes_only_over_the_spent_refresh_token() -> None:
    stored = chatgpt_auth(refresh_token="rt-spent")
    refreshed = chatgpt_auth(refresh_token="rt-new")
    assert refreshed_payload(stored, "rt-spent", lambda _: refreshed) is refreshed
    rotated = chatgpt_auth(refresh_token="rt-someone-else")
    assert refreshed_payload(rotated, "rt-spent", lambda _: refreshed) is rotated
    api_key = AuthDotJson.for_api_key("sk-new-login")
    assert refreshed_payload(api_key, "rt-spent", lambda _: refreshed) is api_key
    assert refreshed_payload(None, "rt-spent", lambda _: refreshed) is None


def test_the_commit_merges_into_what_is_stored_now() -> None:
    stored = chatgpt_auth(refresh_token="rt-spent")
    seen: list[AuthDotJson] = []

    def merge(current: AuthDotJson) -> AuthDotJson:
        seen.append(current)
        return current

    refreshed_payload(stored, "rt-spent", merge)
    assert seen == [stored]


# -- the locks -----------------------------------------------------------------------------


async def test_a_save_takes_codex_locks_and_creates_them_as_codex_does(home: Path) -> None:
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-1"))
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(home / "auth.lock") == 0o666 & ~umask
    assert _mode(home / "auth.json.lock") == 0o600
    assert not (home / "aioscopedauth-refresh.lock").exists()  # a save is no refresh


@pytest.mark.parametrize("lock", ["auth.lock", "auth.json.lock"])
@pytest.mark.parametrize("write", ["save", "delete", "update"])
async def test_every_write_waits_for_codex_locks_boundedly(
    home: Path, lock: str, write: str
) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-before"))
    before = (home / "auth.json").read_bytes()
    store = FileAuthStore(home, lock_timeout=0.2)
    new = AuthDotJson.for_api_key("sk-after")
    calls = {"save": lambda: store.save(new), "delete": store.delete}
    call = calls.get(write, lambda: store.update(lambda _: new))
    with _flocked(home / lock), pytest.raises(StorageError) as caught:
        await call()
    assert str(caught.value) == (
        f"Timed out after 0.2 s waiting for the lock {home / lock}: another process is "
        "writing the same login. Try again."
    )
    assert (home / "auth.json").read_bytes() == before


async def test_a_waiting_save_lands_once_codex_releases_its_lock(home: Path) -> None:
    store = FileAuthStore(home)
    with _flocked(home / "auth.lock"):
        save = asyncio.create_task(store.save(AuthDotJson.for_api_key("sk-late")))
        # The save has opened auth.lock (a second descriptor beside ours) and polls it.
        await _wait_until(lambda: _open_count(home / "auth.lock") == 2, "the save to poll")
        assert not save.done()
        assert not (home / "auth.json").exists()
    await save
    assert await store.load() == AuthDotJson.for_api_key("sk-late")


async def test_our_refresh_lock_never_blocks_a_write(home: Path) -> None:
    # Codex never takes our refresh lock: a refresh of ours (which holds it across the token
    # request) must not keep Codex, or a login, from writing.
    holder, writer = FileAuthStore(home), FileAuthStore(home, lock_timeout=0.2)
    async with holder.lock():
        await writer.save(AuthDotJson.for_api_key("sk-during-refresh"))
        assert await writer.delete() is True
    assert holder.lock_path.name == "aioscopedauth-refresh.lock"
    assert _mode(holder.lock_path) == 0o600


async def test_update_holds_both_codex_locks_while_it_decides(home: Path) -> None:
    # The fast path (both locks free) takes them in one worker-thread call; it must still hold
    # them, in Codex's order, while it reads, decides and writes.
    write_auth_json(home, AuthDotJson.for_api_key("sk-before"))
    held: list[str] = []

    def change(current: AuthDotJson | None) -> AuthDotJson | None:
        for name in ("auth.lock", "auth.json.lock"):
            fd = os.open(home / name, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(name)
            finally:
                os.close(fd)
        return AuthDotJson.for_api_key("sk-after") if current is not None else None

    result = await FileAuthStore(home).update(change)
    assert held == ["auth.lock", "auth.json.lock"]
    assert result.written is True
    assert await FileAuthStore(home).load() == AuthDotJson.for_api_key("sk-after")
    for name in ("auth.lock", "auth.json.lock"):  # released afterwards
        fd = os.open(home / name, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


async def test_a_cancelled_thread_call_finishes_before_the_cancellation_lands() -> None:
    started, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    finished: list[str] = []

    def work() -> str:
        loop.call_soon_threadsafe(started.set)
        release.wait(10)
        finished.append("done")
        return "result"

    discarded: list[str] = []
    call = asyncio.create_task(run_in_thread(work, discard=discarded.append))
    await started.wait()
    call.cancel()
    await asyncio.sleep(0.05)
    assert not call.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert finished == ["done"]
    assert discarded == ["result"]  # handed to discard, never lost


async def test_a_thread_call_cancelled_before_it_starts_never_runs() -> None:
    ran: list[int] = []
    call = asyncio.create_task(run_in_thread(lambda: ran.append(1)))
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.05)
    # Either it had started (and finished before the cancellation landed) or it never runs.
    assert ran in ([], [1])
    assert await run_in_thread(lambda: 42) == 42


async def test_update_keeps_the_stored_payload_when_change_returns_it(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-kept"))
    mtime = (home / "auth.json").stat().st_mtime_ns
    result = await FileAuthStore(home).update(lambda current: current)
    assert result.written is False
    assert result.before == result.after == AuthDotJson.for_api_key("sk-kept")
    assert (home / "auth.json").stat().st_mtime_ns == mtime


async def test_update_never_overwrites_a_corrupt_file(home: Path) -> None:
    home.mkdir()
    (home / "auth.json").write_text("{not json")
    with pytest.raises(StorageError, match=r"is not a valid auth\.json"):
        await FileAuthStore(home).update(lambda _: AuthDotJson.for_api_key("sk-x"))
    assert (home / "auth.json").read_text() == "{not json"


async def test_memory_store_update_is_a_compare_and_swap() -> None:
    store = MemoryAuthStore(AuthDotJson.for_api_key("sk-1"))
    result = await store.update(lambda current: current)
    assert (result.written, await store.load()) == (False, AuthDotJson.for_api_key("sk-1"))
    result = await store.update(lambda _: None)
    assert (result.written, await store.load()) == (True, None)


# -- refreshes racing other writers -------------------------------------------------------


@pytest.fixture
async def gated(server: FakeAuthServer) -> asyncio.Event:
    """Hold every token request until the test sets the event."""
    gate = asyncio.Event()
    server.token_gate = gate
    return gate


async def _refresh_in_flight(manager: AuthManager, server: FakeAuthServer) -> asyncio.Task[bool]:
    task = asyncio.create_task(manager.refresh_token())
    await server.token_request_seen.wait()
    return task


async def test_a_logout_during_a_refresh_stays_logged_out(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, gated: asyncio.Event
) -> None:
    write_auth_json(home, server.login())
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        await manager.auth()
        refresh = await _refresh_in_flight(manager, server)
        assert await FileAuthStore(home).delete() is True  # another process logs out
        gated.set()
        with pytest.raises(RefreshTokenFailedError) as caught:
            await refresh
        assert str(caught.value) == ACCOUNT_MISMATCH_MESSAGE
        assert manager.auth_cached() is None
    assert not (home / "auth.json").exists()
    assert server.refreshes == 1


async def test_a_logout_in_this_process_during_a_refresh_stays_logged_out(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, gated: asyncio.Event
) -> None:
    write_auth_json(home, server.login())
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        await manager.auth()
        refresh = await _refresh_in_flight(manager, server)
        assert await manager.logout() is True
        gated.set()
        with pytest.raises(RefreshTokenFailedError):
            await refresh
        assert manager.auth_cached() is None
        assert await manager.auth() is None
    assert not (home / "auth.json").exists()


async def test_an_api_key_login_during_a_refresh_survives(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, gated: asyncio.Event
) -> None:
    write_auth_json(home, server.login())
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        await manager.auth()
        refresh = await _refresh_in_flight(manager, server)
        await manager.login_with_api_key("sk-new-login")
        gated.set()
        assert await refresh is True
        auth = manager.auth_cached()
        assert auth is not None
        assert (auth.mode, auth.token) == (AuthMode.API_KEY, "sk-new-login")
    assert (home / "auth.json").read_text() == AuthDotJson.for_api_key("sk-new-login").to_json()
    assert server.refreshes == 1


async def test_another_writers_tokens_saved_during_a_refresh_win(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, gated: asyncio.Event
) -> None:
    write_auth_json(home, server.login())
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        await manager.auth()
        refresh = await _refresh_in_flight(manager, server)
        theirs = server.login()  # same account, tokens of their own
        await FileAuthStore(home).save(theirs)
        gated.set()
        assert await refresh is True
        assert manager.auth_cached() is not None
        assert manager.auth_cached().data == theirs  # type: ignore[union-attr]
    assert AuthDotJson.from_json((home / "auth.json").read_bytes()) == theirs


async def _spend_elsewhere(server: FakeAuthServer, refresh_token: str) -> AuthDotJson:
    """Spend a refresh token as another client would, and return the login it would save."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.token_url,
            json={
                "client_id": server.client_id,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            },
        ) as response,
    ):
        assert response.status == 200
        answer = await response.json()
    login = server.login()  # the same account; replace its tokens with the answer's
    return login.with_refreshed_tokens(
        id_token=answer["id_token"],
        access_token=answer["access_token"],
        refresh_token=answer["refresh_token"],
        now=login.last_refresh,  # type: ignore[arg-type]
    )


async def test_a_reused_refresh_token_adopts_the_winners_late_commit(
    home: Path, server: FakeAuthServer
) -> None:
    login = server.login()
    write_auth_json(home, login)
    assert login.tokens is not None
    oauth = OAuthConfig(server.token_url, server.client_id, reuse_grace=timedelta(seconds=30))
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        await manager.auth()
        winner = await _spend_elsewhere(server, login.tokens.refresh_token)
        refresh = asyncio.create_task(manager.refresh_token())
        # Our spend was refused; the winner (Codex spends before it locks) commits only now.
        await _wait_until(lambda: server.reuse_answers == 1, "the reuse answer")
        assert not refresh.done()
        await FileAuthStore(home).save(winner)
        assert await refresh is True
        assert manager.auth_cached() is not None
        assert manager.auth_cached().data == winner  # type: ignore[union-attr]
    assert server.token_calls == 2
    assert server.refreshes == 1


async def test_a_reuse_with_no_winner_is_final_after_the_grace(
    home: Path, server: FakeAuthServer
) -> None:
    login = server.login()
    write_auth_json(home, login)
    assert login.tokens is not None
    await _spend_elsewhere(server, login.tokens.refresh_token)  # spent, never saved
    oauth = OAuthConfig(server.token_url, server.client_id, reuse_grace=timedelta(0))
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        await manager.auth()
        with pytest.raises(RefreshTokenFailedError) as caught:
            await manager.refresh_token()
        assert caught.value.reason is RefreshFailureReason.EXHAUSTED
    assert (home / "auth.json").read_text() == login.to_json()


async def test_a_recorded_failure_does_not_outlive_a_change_of_the_store(
    home: Path, server: FakeAuthServer
) -> None:
    login = server.login(expired=True)
    write_auth_json(home, login)
    assert login.tokens is not None
    winner = await _spend_elsewhere(server, login.tokens.refresh_token)
    oauth = OAuthConfig(server.token_url, server.client_id, reuse_grace=timedelta(0))
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        with pytest.raises(RefreshTokenFailedError):
            await manager.refresh_token()
        assert manager.refresh_failure_for_auth(manager.auth_cached()) is not None
        calls = server.token_calls
        await FileAuthStore(home).save(winner)  # the winner commits after we gave up
        assert await manager.refresh_token() is True
        assert manager.auth_cached() is not None
        assert manager.auth_cached().data == winner  # type: ignore[union-attr]
        assert server.token_calls == calls  # adopted, nothing spent


async def test_auth_adopts_a_newer_login_after_a_recorded_failure(
    home: Path, server: FakeAuthServer
) -> None:
    login = server.login(expired=True)
    write_auth_json(home, login)
    assert login.tokens is not None
    winner = await _spend_elsewhere(server, login.tokens.refresh_token)
    oauth = OAuthConfig(server.token_url, server.client_id, reuse_grace=timedelta(0))
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        stale = await manager.auth()  # the refresh fails: the stale snapshot comes back
        assert stale is not None
        assert stale.data == login
        await FileAuthStore(home).save(winner)
        # auth() looks at the store at most once a second after a failure.
        deadline = time.monotonic() + 10
        while (current := await manager.auth()) == stale:
            assert time.monotonic() < deadline, "auth() never looked at the store again"
            await asyncio.sleep(0.05)
        assert current is not None
        assert current.data == winner
    assert server.token_calls == 2


# -- what a store refuses to read or write -------------------------------------------------


async def test_a_fifo_at_auth_json_is_refused_without_blocking(home: Path) -> None:
    home.mkdir()
    os.mkfifo(home / "auth.json")
    with pytest.raises(StorageError, match="is not a regular file"):
        await FileAuthStore(home).load()


async def test_a_save_through_a_symlink_to_a_device_is_refused(home: Path) -> None:
    home.mkdir()
    (home / "auth.json").symlink_to("/dev/null")
    with pytest.raises(StorageError, match="is not a regular file, so the login was not written"):
        await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-1"))
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)


async def test_a_save_through_a_symlink_loop_is_a_storage_error(home: Path) -> None:
    home.mkdir()
    (home / "auth.json").symlink_to(home / "loop")
    (home / "loop").symlink_to(home / "auth.json")
    with pytest.raises(StorageError, match="symbolic link that loops"):
        await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-1"))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can save another user's file")
async def test_a_save_keeps_the_owner_of_an_existing_file(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-old"))
    os.chown(home / "auth.json", 65534, 65534)
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-new"))
    status = (home / "auth.json").stat()
    assert (status.st_uid, status.st_gid) == (65534, 65534)
    assert stat.S_IMODE(status.st_mode) == 0o600
