"""Every public coroutine under anyio: cancel scopes, task groups and anyio's pytest plugin.

anyio's cancellation is level-triggered: on the asyncio backend a task inside a cancelled scope
is cancelled again on every turn of the loop until it leaves the scope. Whatever clean-up the
library does after a cancellation (waiting for a worker thread, killing and reaping a command,
letting a spent refresh token be saved) must complete through those repeated cancellations, end
with the cancellation the scope recognises as its own (or ``move_on_after`` would let it
escape), and return promptly.

These tests run under anyio's pytest plugin (``pytest.mark.anyio``), not pytest-asyncio: the
project's conftest hands anyio-marked tests back to anyio. The backend is asyncio only: aiohttp
runs on asyncio, so the library does too (trio is out of scope).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import attrs
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    CommandBearerRefresher,
    FileAuthStore,
    FileBody,
    MemoryAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
    RefreshContext,
)
from aioscopedauth import _body as body_module
from aioscopedauth.testing import serve_on_loopback

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from aioscopedauth import AuthChanges
    from aioscopedauth.redis import RedisAuthStore
    from aioscopedauth.testing import FakeAuthServer, RedisServer, TokenScript

pytestmark = pytest.mark.anyio

STYLES = ["move_on_after", "fail_after", "task_group"]
PROMPT = 5.0
"""Seconds a cancelled call may take to leave its scope (generous: a loaded 2-core machine)."""
QUIET = 3
"""At most this many cancellations reach a cancelled call: its clean-up waits are shielded."""
LIMIT = 30.0
"""A bound on any wait of these tests, so that none can hang."""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: aiohttp, hence the library, runs on asyncio (trio is out of scope)."""
    return "asyncio"


@attrs.frozen
class Cancelled:
    """How a call cancelled by ``_cancel_while`` ended."""

    seconds: float
    """From the cancellation to the scope's exit."""
    cancels: int
    """How many times its task had been cancelled when the call ended: anyio cancels again on
    every turn of the loop a wait inside a cancelled scope lasts, so a clean-up that waits
    without a shield shows up here as hundreds or thousands."""


async def _cancel_while(
    style: str,
    original: Callable[[], Awaitable[object]],
    reached: Callable[[], Awaitable[object]],
) -> Cancelled:
    """Run ``original`` in a cancel scope of ``style``; cancel it once ``reached()`` returns."""
    cancels: list[int] = []

    async def call() -> None:
        try:
            await original()
        finally:
            task = asyncio.current_task()
            assert task is not None
            cancels.append(task.cancelling())

    cancelled_at: list[float] = []
    with anyio.fail_after(LIMIT):
        if style == "task_group":
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await reached()
                cancelled_at.append(time.monotonic())
                group.cancel_scope.cancel()
            assert group.cancel_scope.cancelled_caught
            return Cancelled(time.monotonic() - cancelled_at[0], cancels[0])

        outcome: list[bool] = []

        async def scoped() -> None:
            if style == "move_on_after":
                with anyio.move_on_after(math.inf) as scope:
                    scopes.append(scope)
                    await call()
                outcome.append(scope.cancelled_caught)
            else:
                with pytest.raises(TimeoutError):  # noqa: PT012 -- the scope is the point
                    with anyio.fail_after(math.inf) as scope:
                        scopes.append(scope)
                        await call()
                outcome.append(True)
            ended_at.append(time.monotonic())

        scopes: list[anyio.CancelScope] = []
        ended_at: list[float] = []
        async with anyio.create_task_group() as group:
            group.start_soon(scoped)
            await reached()
            cancelled_at.append(time.monotonic())
            # The deadline path: anyio's own timer cancels the scope.
            scopes[0].deadline = anyio.current_time()
        assert outcome == [True]
        return Cancelled(ended_at[0] - cancelled_at[0], cancels[0])


# -- the plugin and the kit's fixtures ------------------------------------------------------


async def test_runs_under_anyio_with_the_kits_fixtures_on_its_loop(
    request: pytest.FixtureRequest,
    fake_auth_server: FakeAuthServer,
    fake_oauth_config: OAuthConfig,
    codex_home: Path,
    token_script: Callable[..., TokenScript],
) -> None:
    # anyio's plugin runs the test, not pytest-asyncio (which would add its marker).
    assert type(request.node) is pytest.Function
    assert request.node.get_closest_marker("asyncio") is None
    assert request.node.get_closest_marker("anyio") is not None
    # The fake server serves on this very loop: a fixture run on another loop would not answer.
    with anyio.fail_after(LIMIT):
        async with aiohttp.ClientSession() as http, http.get(f"{fake_auth_server.url}/api/x") as r:
            assert r.status == 401
    assert fake_auth_server.api_hits == 1
    store = FileAuthStore(codex_home)
    await store.save(fake_auth_server.login(expired=True))
    async with AuthManager(store, fake_oauth_config) as manager:
        auth = await manager.auth()
    assert auth is not None
    assert fake_auth_server.refreshes == 1
    assert fake_auth_server.is_valid_access_token(auth.token)
    script = token_script("tok-1")
    command = ProviderAuthCommand("./print-token.sh", cwd=script.folder)
    token = await CommandBearerRefresher(command).resolve()
    assert token is not None
    assert token.access_token == "tok-1"


def test_anyio_wraps_async_fixtures_outside_pytest_asyncio(pytestconfig: pytest.Config) -> None:
    # Whichever plugin's fixture hook is outermost runs an async fixture on its own loop. The
    # `-p asyncio` in pyproject's addopts orders them; pytest's own order follows the install.
    hooks = pytestconfig.pluginmanager.hook.pytest_fixture_setup.get_hookimpls()
    names = [hook.plugin_name for hook in hooks]
    assert names.index("anyio") > names.index("asyncio"), names


def test_an_asyncio_program_never_imports_anyio_and_a_cancelled_write_still_waits(
    tmp_path: Path,
) -> None:
    script = tmp_path / "plain.py"
    script.write_text(_PLAIN_ASYNCIO)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=LIMIT, check=True
    )
    assert done.stdout.split() == ["written-before-the-cancellation:True", "anyio:False"]


_PLAIN_ASYNCIO = """\
import asyncio, sys, threading, time
from aioscopedauth._commit import run_in_thread

async def main():
    written, started = [], threading.Event()

    def write():
        started.set()
        time.sleep(0.2)  # a slow disk
        written.append(True)

    task = asyncio.ensure_future(run_in_thread(write))
    await asyncio.to_thread(started.wait)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print(f"written-before-the-cancellation:{written == [True]}")
    print(f"anyio:{'anyio' in sys.modules}")

asyncio.run(main())
"""


async def test_the_conftest_manager_fixture_runs_on_the_tests_loop(manager: AuthManager) -> None:
    # An async fixture of the suite's own (pytest-asyncio auto mode elsewhere) runs under anyio.
    await manager.login_with_api_key("sk-test-key")
    auth = await manager.auth()
    assert auth is not None
    assert auth.token == "sk-test-key"


# -- no spent refresh token lost ------------------------------------------------------------


async def _wait_for_refresh(changes: AuthChanges) -> None:
    with anyio.fail_after(LIMIT):
        async for change in changes:
            if change.reason == "refresh":
                return


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("entry", ["auth", "refresh_token", "recovery", "request"])
async def test_a_refresh_cancelled_at_the_token_endpoint_still_saves_the_rotated_token(
    style: str, entry: str, server: FakeAuthServer, oauth: OAuthConfig, home: Path
) -> None:
    store = FileAuthStore(home)
    expired = entry in {"auth", "request"}  # these refresh a token that is due
    await store.save(server.login(expired=expired))
    server.token_gate = asyncio.Event()
    async with AuthManager(store, oauth) as manager:
        current = None if expired else await manager.auth()
        changes = manager.changes()

        async def call() -> None:
            if entry == "auth":
                await manager.auth()
            elif entry == "refresh_token":
                await manager.refresh_token()
            elif entry == "recovery":
                async for _ in manager.unauthorized_recovery(rejected=current):
                    pass
            else:
                async with aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as http:
                    await http.get(f"{server.url}/api/ping")

        took = await _cancel_while(style, call, server.token_request_seen.wait)
        assert took.seconds < PROMPT
        assert took.cancels <= QUIET
        assert server.token_calls == 1
        server.token_gate.set()  # the refresh token was spent: the answer comes back now
        await _wait_for_refresh(changes)
        await changes.aclose()
        snapshot = await manager.auth()
    stored = await FileAuthStore(home).load()
    assert stored is not None
    assert stored.tokens is not None
    assert server.refreshes == 1
    assert server.token_calls == 1
    assert server.is_valid_refresh_token(stored.tokens.refresh_token)
    assert snapshot is not None
    assert snapshot.token == stored.tokens.access_token
    assert server.is_valid_access_token(snapshot.token)


# -- no command left running ----------------------------------------------------------------

_REPORTING_COMMAND = """\
import os, socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
report = socket.socket(socket.AF_UNIX)
report.connect(sys.argv[1])
report.sendall(f"{os.getpid()} {child.pid}\\n".encode())
report.close()
time.sleep(3600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _dies(pid: int) -> None:
    """Wait for ``pid`` to end (it need not be our child), for at most ``LIMIT`` seconds."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, ended.set)  # readable once the process has ended
    try:
        with anyio.fail_after(LIMIT):
            await ended.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket's path has room for about 100 bytes: pytest's tmp_path under a deep
    # checkout (CI clones anywhere) is longer than that.
    with tempfile.TemporaryDirectory(prefix="asa-", dir="/tmp") as folder:
        yield Path(folder)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("entry", ["resolve", "refresh", "auth", "request"])
async def test_a_cancelled_token_command_leaves_no_process_running(
    style: str, entry: str, tmp_path: Path, short_dir: Path, server: FakeAuthServer
) -> None:
    script = tmp_path / "report.py"
    script.write_text(_REPORTING_COMMAND)
    socket_path = short_dir / "report.sock"
    pids: list[int] = []
    reported = asyncio.Event()

    async def on_report(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pids.extend(int(pid) for pid in (await reader.readline()).split())
        writer.close()
        reported.set()

    reporter = await asyncio.start_unix_server(on_report, path=str(socket_path))
    command = ProviderAuthCommand(sys.executable, args=(str(script), str(socket_path)), timeout=60)
    refresher = CommandBearerRefresher(command)
    base = AuthManager(MemoryAuthStore(), OAuthConfig(f"{server.url}/oauth/token", "c"))
    derived = base.with_external_bearer_refresher(refresher)

    async def call() -> None:
        if entry == "resolve":
            await refresher.resolve()
        elif entry == "refresh":
            await refresher.refresh(RefreshContext())
        elif entry == "auth":
            await derived.auth()
        else:
            middleware = AuthMiddleware(derived)
            async with aiohttp.ClientSession(middlewares=(middleware,)) as http:
                await http.get(f"{server.url}/api/ping")

    try:
        took = await _cancel_while(style, call, reported.wait)
        assert took.seconds < PROMPT
        assert took.cancels <= QUIET
        assert len(pids) == 2
        command_pid, grandchild_pid = pids
        assert not Path(f"/proc/{command_pid}").exists()  # exited and reaped
        # Sent SIGKILL with its group; not our child, so it dies when the kernel gets to it.
        await _dies(grandchild_pid)
        assert refresher.runs == 1
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        reporter.close()
        await reporter.wait_closed()
        await base.aclose()


def _children() -> set[int]:
    """The live child processes of this process (of any of its threads)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(pid) for pid in (task / "children").read_text().split())
    return {pid for pid in pids if _running(pid)}


@pytest.mark.parametrize("style", STYLES)
async def test_a_command_cancelled_while_it_is_being_started_is_killed_before_the_call_returns(
    style: str, tmp_path: Path, audit: Any
) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(3600)\n")
    before = _children()  # servers earlier tests left running for the session are not ours
    loop = asyncio.get_running_loop()
    spawning = asyncio.Event()
    release = threading.Event()
    killed = asyncio.Event()
    order: list[str] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "subprocess.Popen" and str(script) in map(os.fsdecode, args[1]):
            # In the worker thread, before the fork: let the loop cancel the caller first.
            loop.call_soon_threadsafe(spawning.set)
            release.wait(LIMIT)
        elif event == "os.killpg":
            loop.call_soon_threadsafe(order.append, "killed")
            loop.call_soon_threadsafe(killed.set)

    audit(hook)

    async def reached() -> None:
        await spawning.wait()
        loop.call_soon(loop.call_soon, release.set)  # after the cancellation reached the caller

    command = ProviderAuthCommand(sys.executable, args=(str(script),), timeout=60)
    refresher = CommandBearerRefresher(command)
    took = await _cancel_while(style, refresher.resolve, reached)
    order.append("returned")
    children = _children() - before
    with anyio.fail_after(LIMIT):
        await killed.wait()  # already, unless the call left before the command was killed
    assert order[:2] == ["killed", "returned"]
    assert children == set()
    assert took.seconds < PROMPT
    assert took.cancels <= QUIET


# -- a manager closed in a cancelled scope --------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
async def test_a_manager_closed_in_a_cancelled_scope_closes_its_session_after_the_refresh(
    style: str, server: FakeAuthServer, oauth: OAuthConfig, home: Path
) -> None:
    # `async with AuthManager(...)` inside a cancelled scope: its aclose() runs cancelled too
    # (level-triggered), so it cannot wait for the refresh in flight; the refresh still saves
    # the rotated token, and the session it uses is closed when it ends, not under it.
    store = FileAuthStore(home)
    await store.save(server.login(expired=True))
    server.token_gate = asyncio.Event()
    managers: list[AuthManager] = []
    changes: list[AuthChanges] = []

    async def call() -> None:
        async with AuthManager(store, oauth) as manager:
            managers.append(manager)
            changes.append(manager.changes())
            await manager.auth()

    took = await _cancel_while(style, call, server.token_request_seen.wait)
    assert took.seconds < PROMPT
    holder = managers[0]._core.session
    http = holder.http
    assert http is not None
    closed_while_held = http.closed
    assert not closed_while_held  # the refresh still reads its answer through it
    server.token_gate.set()
    await _wait_for_refresh(changes[0])
    refresh = managers[0]._core.refresh
    assert refresh.inflight is not None
    with anyio.fail_after(LIMIT):
        await asyncio.wait({refresh.inflight.task})
        assert refresh.closing is not None
        await refresh.closing
    assert http.closed
    assert holder.http is None
    stored = await FileAuthStore(home).load()
    assert stored is not None
    assert stored.tokens is not None
    assert server.is_valid_refresh_token(stored.tokens.refresh_token)
    assert server.refreshes == 1


@pytest.mark.parametrize("style", STYLES)
async def test_a_fleet_manager_closed_in_a_cancelled_scope_closes_its_session(
    style: str,
    server: FakeAuthServer,
    oauth: OAuthConfig,
    redis_stores: Callable[..., RedisAuthStore],
) -> None:
    # With a store that sends change notices, aclose() first stops listening (it waits for
    # the listener): cancelled there, it used to skip closing the session altogether.
    store = redis_stores()
    await store.save(server.login(expired=True))
    managers: list[AuthManager] = []
    inside = asyncio.Event()

    async def call() -> None:
        async with AuthManager(store, oauth) as manager:
            managers.append(manager)
            await manager.auth()  # refreshes through the session, and starts listening
            inside.set()
            await asyncio.Event().wait()

    try:
        took = await _cancel_while(style, call, inside.wait)
        assert took.seconds < PROMPT
        assert server.refreshes == 1
        assert managers[0]._core.session.http is None
    finally:
        for manager in managers:
            await manager.aclose()  # not cancelled this time (and a no-op once closed)


# -- an upload that can be sent again ----------------------------------------------------------


def _handles(path: Path) -> list[str]:
    """The descriptors of this process open on ``path``."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own descriptor)
            if fd.readlink() == path:
                found.append(fd.name)
    return found


@pytest.mark.parametrize("style", STYLES)
async def test_an_upload_cancelled_mid_stream_closes_its_file(
    style: str, manager: AuthManager, tmp_path: Path
) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(16 * 1024 * 1024))  # more than the socket buffers hold
    receiving = asyncio.Event()
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await request.content.readany()
        receiving.set()
        await release.wait()  # reads no more meanwhile: the sender blocks mid-stream
        return web.Response()

    app = web.Application()
    app.router.add_post("/upload", stall)
    runner, url = await serve_on_loopback(app)
    await manager.login_with_api_key("sk-test-key")
    try:
        async with aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as http:

            async def call() -> None:
                await http.post(f"{url}/upload", data=FileBody(upload, chunk_size=64 * 1024))

            took = await _cancel_while(style, call, receiving.wait)
    finally:
        release.set()
        await runner.cleanup()
    assert took.seconds < PROMPT
    assert took.cancels <= QUIET
    with anyio.fail_after(LIMIT):
        while body_module._BACKGROUND:  # the close of a cancelled send runs on in its thread
            await asyncio.gather(*body_module._BACKGROUND, return_exceptions=True)
    assert _handles(upload) == []


# -- the fleet's lock ------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("where", ["holding", "waiting"])
async def test_a_redis_lock_left_by_a_cancelled_scope_is_free_for_the_next_host(
    style: str,
    where: str,
    redis_server: RedisServer,
    redis_stores: Callable[..., RedisAuthStore],
) -> None:
    # A TTL far longer than the test: the lock is free because it was released, not expired.
    first, second, third = (redis_stores(lock_ttl=600, lock_timeout=LIMIT) for _ in range(3))
    inside = asyncio.Event()
    other_inside = asyncio.Event()
    leave = asyncio.Event()

    async def hold(store: RedisAuthStore, entered: asyncio.Event) -> None:
        async with store.lock():
            entered.set()
            await leave.wait()

    async with anyio.create_task_group() as group:
        if where == "holding":
            took = await _cancel_while(style, lambda: hold(first, inside), inside.wait)
        else:
            group.start_soon(hold, first, other_inside)
            await other_inside.wait()
            took = await _cancel_while(
                style, lambda: hold(second, inside), lambda: _polled_twice(second, redis_server.url)
            )
            assert not inside.is_set()
        leave.set()
    assert took.seconds < PROMPT
    assert took.cancels <= QUIET
    with anyio.fail_after(LIMIT):
        async with third.lock():
            pass


async def _polled_twice(store: RedisAuthStore, url: str) -> None:
    # The waiting host asks Redis for the lock again and again: watch it ask twice.
    with anyio.fail_after(LIMIT):
        async with aioredis.from_url(url) as probe, probe.monitor() as monitor:
            seen = 0
            async for command in monitor.listen():
                seen += store.lock_key in command["command"]
                if seen == 2:
                    return


# -- no torn file ---------------------------------------------------------------------------

_HOOK: list[Callable[[str, tuple[Any, ...]], None]] = []
_HOOK_INSTALLED: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    for hook in _HOOK:
        hook(event, args)


def _watch_audit(hook: Callable[[str, tuple[Any, ...]], None]) -> None:
    """Observe the real file calls of worker threads (audit hooks cannot be removed: one stays)."""
    if not _HOOK_INSTALLED:
        sys.addaudithook(_audit)
        _HOOK_INSTALLED.append(True)
    _HOOK.append(hook)


@pytest.fixture
def audit() -> Any:
    try:
        yield _watch_audit
    finally:
        _HOOK.clear()


def _leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("style", STYLES)
async def test_a_save_cancelled_between_write_and_rename_completes_before_the_scope_exits(
    style: str, server: FakeAuthServer, home: Path, audit: Any
) -> None:
    store = FileAuthStore(home)
    old, new = server.login(), server.login()
    await store.save(old)
    path = home / "auth.json"
    old_bytes = path.read_bytes()
    loop = asyncio.get_running_loop()
    at_rename = asyncio.Event()
    release = threading.Event()
    seen_at_exit: list[bytes] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        # In the worker thread, right before os.replace(temp, auth.json): the new payload is
        # written and fsynced, not yet in place. Let the loop cancel the caller, then go on.
        if event == "os.rename" and Path(os.fsdecode(args[1])) == path:
            loop.call_soon_threadsafe(at_rename.set)
            release.wait(LIMIT)

    audit(hook)

    async def reached() -> None:
        await at_rename.wait()
        # Runs after the cancellation reached the saving task (it is delivered in this turn).
        loop.call_soon(loop.call_soon, release.set)

    async def call() -> None:
        try:
            await store.save(new)
        finally:
            seen_at_exit.append(path.read_bytes())

    took = await _cancel_while(style, call, reached)
    assert took.seconds < PROMPT
    assert took.cancels <= QUIET
    assert release.is_set()
    # The caller left only once the thread had put the new file in place, complete.
    assert seen_at_exit == [path.read_bytes()]
    assert seen_at_exit[0] != old_bytes
    assert await FileAuthStore(home).load() == new
    assert _leftovers(home) == []


@pytest.mark.parametrize("style", STYLES)
async def test_a_save_cancelled_while_codex_holds_the_lock_leaves_the_old_file(
    style: str, server: FakeAuthServer, home: Path, audit: Any
) -> None:
    store = FileAuthStore(home)
    old = server.login()
    await store.save(old)
    old_bytes = (home / "auth.json").read_bytes()
    loop = asyncio.get_running_loop()
    polling = asyncio.Event()
    lock_path = home / "auth.lock"

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str) and args[0] == str(lock_path):
            loop.call_soon_threadsafe(polling.set)

    # Codex (here: this test) holds its outer write lock, so the save waits for it.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        audit(hook)
        took = await _cancel_while(style, lambda: store.save(server.login()), polling.wait)
    finally:
        os.close(fd)
    assert took.seconds < PROMPT
    assert took.cancels <= QUIET
    assert (home / "auth.json").read_bytes() == old_bytes
    assert await FileAuthStore(home).load() == old
    assert _leftovers(home) == []
    # The cancelled save let go of everything: a save now goes through at once.
    with anyio.fail_after(LIMIT):
        await store.save(old)
