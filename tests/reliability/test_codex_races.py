"""Races between the library and a Codex-like writer on one home (no npm needed).

The writer is ``tests/codexlike.py``: a foreign program, run in its own process, that takes Codex
CLI 0.169's locks the way Codex does (``auth.lock`` blocking, then ``auth.json.lock`` polled and
given up after 5 s; a refresh spends before it locks and keeps a stored file whose refresh token
is no longer the one it spent). These are the npm-free twins of ``tests/interop``, which run the
same races against the real binary. The kit's ``FakeAuthServer`` issues single-use rotating
refresh tokens; the writer's token requests carry Codex's ``refresh_reason``, the library's do
not, which is how the server's ``token_hook`` tells them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from aioscopedauth import (
    Auth,
    AuthError,
    AuthManager,
    AuthMode,
    FileAuthStore,
    OAuthConfig,
    RefreshFailureReason,
    RefreshTokenFailedError,
)
from aioscopedauth.testing import FakeAuthServer, write_auth_json

from support import CANARY_API_KEY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

CODEXLIKE = Path(__file__).resolve().parent.parent / "codexlike.py"
DEADLINE = 20.0
"""Seconds any bounded wait of this file allows before failing."""
ROUNDS = 20
SLOW_LIBRARY_REFRESH = 6.0
"""Longer than Codex's 5 s commit-lock timeout, and no longer."""
TIMED_OUT = "credential commit lock timed out"


# -- the Codex-like writer ------------------------------------------------------------------


@attrs.frozen
class WriterResult:
    returncode: int
    outcome: dict[str, Any]
    stderr: str


@attrs.define(eq=False)
class CodexLike:
    """One run of ``codexlike.py`` in its own process."""

    proc: asyncio.subprocess.Process

    async def locked(self) -> None:
        """Wait until a ``--hold`` run holds both of Codex's locks."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), DEADLINE)
        assert line == b"locked\n", line

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def finish(self, stdin: bytes = b"") -> WriterResult:
        """Send ``stdin`` (a held run goes on), close it and wait for the outcome line."""
        out, err = await asyncio.wait_for(self.proc.communicate(stdin), DEADLINE)
        assert self.proc.returncode is not None
        lines = out.decode().splitlines()
        assert lines, err.decode()
        return WriterResult(self.proc.returncode, json.loads(lines[-1]), err.decode())


@attrs.define(eq=False)
class CodexLikeRunner:
    """Starts Codex-like writers on ``home``; kills any still running when the test ends."""

    home: Path
    started: list[CodexLike] = attrs.field(factory=list)

    async def start(self, *args: str, hold: bool = False) -> CodexLike:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CODEXLIKE),
            "--home",
            str(self.home),
            *(["--hold"] if hold else []),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        writer = CodexLike(proc)
        self.started.append(writer)
        return writer

    async def run(self, *args: str, stdin: bytes = b"") -> WriterResult:
        return await (await self.start(*args)).finish(stdin)

    async def aclose(self) -> None:
        for writer in self.started:
            if writer.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    writer.proc.kill()
                await writer.proc.communicate()


@pytest.fixture
async def codexlike(home: Path) -> AsyncIterator[CodexLikeRunner]:
    home.mkdir(mode=0o700, exist_ok=True)
    runner = CodexLikeRunner(home)
    try:
        yield runner
    finally:
        await runner.aclose()


@pytest.fixture
async def library(home: Path, server: FakeAuthServer) -> AsyncIterator[AuthManager]:
    """The library as an application configures it: default grace, backoff and lock timeout."""
    oauth = OAuthConfig(server.token_url, server.client_id)
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        yield manager


# -- helpers -------------------------------------------------------------------------------


def _is_codexlike(body: Any) -> bool:
    return isinstance(body, dict) and body.get("refresh_reason") == "forced"


def _apikey_bytes(key: str) -> bytes:
    return b'{\n  "auth_mode": "apikey",\n  "OPENAI_API_KEY": "' + key.encode() + b'"\n}'


def _disk_tokens(home: Path) -> dict[str, Any]:
    value = json.loads((home / "auth.json").read_bytes())
    assert isinstance(value, dict)
    tokens = value["tokens"]
    assert isinstance(tokens, dict)
    return tokens


async def _disk_auth(home: Path) -> Auth | None:
    data = await FileAuthStore(home).load()
    return None if data is None else Auth.from_data(data)


def _file_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _stray_temp_files(home: Path) -> list[str]:
    """Temp files a save left behind (the writer's ``.auth-*``, the library's ``.auth.json.*``)."""
    return sorted(p.name for p in home.glob(".auth*"))


def _opened_here(path: Path) -> bool:
    """Whether this process has ``path`` open now (the library waiting for a lock on it)."""
    target = str(path.resolve())
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if str(entry.readlink()) == target:
                return True
    return False


async def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            msg = f"timed out waiting until {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.002)


class _HoldLibrary:
    """A token hook that holds the library's requests until released (the writer's pass)."""

    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, body: Any) -> None:
        if not _is_codexlike(body):
            self.held.set()
            await self.release.wait()


# -- 1. simultaneous refreshes ---------------------------------------------------------------


class _Barrier:
    """Holds each token request until both sides posted, then answers ``first`` first."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.arrived = {"codex": asyncio.Event(), "library": asyncio.Event()}
        self.answered_first = asyncio.Event()
        self.order: list[str] = []

    async def __call__(self, body: Any) -> None:
        who = "codex" if _is_codexlike(body) else "library"
        self.order.append(who)
        self.arrived[who].set()
        other = "library" if who == "codex" else "codex"
        await asyncio.wait_for(self.arrived[other].wait(), DEADLINE)
        if who == self.first:
            # The server spends synchronously once this returns, before the other side resumes.
            self.answered_first.set()
        else:
            await self.answered_first.wait()


@attrs.define
class _Round:
    number: int
    first: str
    posted: list[str] = attrs.field(factory=list)
    library: str = ""
    writer: WriterResult | None = None
    refreshes: int = 0
    reuse_answers: int = 0
    library_logged_out: bool = True
    library_matches_disk: bool = False
    disk_valid: bool = False
    mode: int = 0
    strays: list[str] = attrs.field(factory=list)


async def _library_refresh(manager: AuthManager) -> str:
    try:
        return f"returned {await asyncio.wait_for(manager.refresh_token(), DEADLINE)}"
    except (AuthError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _simultaneous_round(
    number: int, home: Path, server: FakeAuthServer, manager: AuthManager, codex: CodexLikeRunner
) -> _Round:
    record = _Round(number, first="library" if number % 2 == 0 else "codex")
    write_auth_json(home, server.login())
    assert await manager.reload() is True
    barrier = _Barrier(record.first)
    server.token_hook = barrier
    refreshes, reuse = server.refreshes, server.reuse_answers
    writer = await codex.start("refresh", server.token_url, server.client_id)
    record.library, record.writer = await asyncio.gather(_library_refresh(manager), writer.finish())
    server.token_hook = None
    record.posted = list(barrier.order)
    record.refreshes = server.refreshes - refreshes
    record.reuse_answers = server.reuse_answers - reuse
    snapshot = manager.auth_cached()
    record.library_logged_out = snapshot is None
    if (home / "auth.json").exists():
        record.library_matches_disk = snapshot == await _disk_auth(home)
        record.disk_valid = server.is_valid_refresh_token(_disk_tokens(home)["refresh_token"])
        record.mode = _file_mode(home / "auth.json")
    record.strays = _stray_temp_files(home)
    return record


def _expected_writer(first: str) -> tuple[int, dict[str, Any]]:
    if first == "codex":
        return 0, {"spent": True, "status": 200, "committed": True, "kept_other": False}
    return 1, {"spent": False, "status": 401, "committed": False, "error": "refresh_token_reused"}


def _writer_summary(result: WriterResult | None) -> tuple[int, dict[str, Any]] | None:
    if result is None:
        return None
    return result.returncode, {k: v for k, v in result.outcome.items() if k != "commit_seconds"}


@pytest.mark.slow
async def test_simultaneous_library_and_codex_like_refreshes(
    home: Path, server: FakeAuthServer, library: AuthManager, codexlike: CodexLikeRunner
) -> None:
    started = time.monotonic()
    rounds = [
        await _simultaneous_round(number, home, server, library, codexlike)
        for number in range(ROUNDS)
    ]
    summary = {
        "rounds": ROUNDS,
        "library_first": sum(r.first == "library" for r in rounds),
        "codex_first": sum(r.first == "codex" for r in rounds),
        "reuse_answers": sum(r.reuse_answers for r in rounds),
        "library_logged_out": sum(r.library_logged_out for r in rounds),
        "codex_like_lost": sum(r.writer is None or r.writer.returncode != 0 for r in rounds),
        "disk_invalid": sum(not r.disk_valid for r in rounds),
        "anyone_logged_out_at_end": sum(r.library_logged_out or not r.disk_valid for r in rounds),
        "seconds": round(time.monotonic() - started, 1),
    }
    for r in rounds:
        print(  # noqa: T201 -- the per-round record is the point of this run
            f"round {r.number:2d}: first={r.first:7s} posted={r.posted} library={r.library!r} "
            f"writer={_writer_summary(r.writer)} reuse={r.reuse_answers} "
            f"disk_valid={r.disk_valid} library_matches_disk={r.library_matches_disk}"
        )
    print("CODEX-LIKE SUMMARY simultaneous refreshes:", json.dumps(summary))  # noqa: T201

    assert [r.library for r in rounds] == ["returned True"] * ROUNDS
    assert [sorted(r.posted) for r in rounds] == [["codex", "library"]] * ROUNDS
    # Each round spent the token once; the side answered second got the only reuse answer.
    assert [(r.refreshes, r.reuse_answers) for r in rounds] == [(1, 1)] * ROUNDS
    assert [_writer_summary(r.writer) for r in rounds] == [
        _expected_writer(r.first) for r in rounds
    ]
    assert [r.library_matches_disk for r in rounds] == [True] * ROUNDS
    assert [r.disk_valid for r in rounds] == [True] * ROUNDS
    assert [r.mode for r in rounds] == [0o600] * ROUNDS
    assert [r.strays for r in rounds] == [[]] * ROUNDS
    assert summary["anyone_logged_out_at_end"] == 0


# -- 2. a slow library refresh while the writer refreshes ------------------------------------


@pytest.mark.slow
async def test_slow_library_refresh_never_times_out_a_codex_like_commit(
    home: Path, server: FakeAuthServer, library: AuthManager, codexlike: CodexLikeRunner
) -> None:
    write_auth_json(home, server.login())
    assert await library.reload() is True
    posted = asyncio.Event()
    answered: list[float] = []

    async def slow_library(body: Any) -> None:
        if not _is_codexlike(body):
            posted.set()
            await asyncio.sleep(SLOW_LIBRARY_REFRESH)  # the scenario: a slow token endpoint
            answered.append(time.monotonic())

    server.token_hook = slow_library
    started = time.monotonic()
    refresh = asyncio.create_task(library.refresh_token())
    await asyncio.wait_for(posted.wait(), DEADLINE)
    result = await codexlike.run("refresh", server.token_url, server.client_id)
    # The writer spent and committed while the library's request was still in flight.
    assert (result.returncode, result.stderr) == (0, "")
    assert TIMED_OUT not in result.stderr
    assert result.outcome | {"commit_seconds": 0} == {
        "spent": True,
        "status": 200,
        "committed": True,
        "kept_other": False,
        "commit_seconds": 0,
    }
    assert not refresh.done()
    assert (server.refreshes, server.reuse_answers) == (1, 0)
    writer_bytes = (home / "auth.json").read_bytes()
    writer_tokens = _disk_tokens(home)
    assert server.is_valid_refresh_token(writer_tokens["refresh_token"])

    # The library's late request is refused as reused; it adopts the writer's tokens.
    assert await asyncio.wait_for(refresh, DEADLINE) is True
    adopted_after = time.monotonic() - answered[0]
    assert answered[0] - started >= SLOW_LIBRARY_REFRESH
    assert adopted_after < library.oauth.reuse_grace.total_seconds()
    assert (server.token_calls, server.refreshes, server.reuse_answers) == (2, 1, 1)
    assert (home / "auth.json").read_bytes() == writer_bytes
    assert library.auth_cached() == await _disk_auth(home)
    auth = await library.auth()
    assert auth is not None
    assert auth.token == writer_tokens["access_token"]
    assert server.is_valid_refresh_token(writer_tokens["refresh_token"])
    assert _file_mode(home / "auth.json") == 0o600
    assert _stray_temp_files(home) == []


async def test_library_waits_for_a_codex_like_commit_that_lands_after_its_reuse_answer(
    home: Path, server: FakeAuthServer, library: AuthManager, codexlike: CodexLikeRunner
) -> None:
    # Codex spends before it locks and may commit after our refusal: the refusal is final only
    # after reuse_grace. The writer spends, then sits on its commit locks; the library is
    # refused meanwhile and must keep looking until the writer's tokens land.
    write_auth_json(home, server.login())
    assert await library.reload() is True
    stale = (home / "auth.json").read_bytes()
    hold = _HoldLibrary()
    server.token_hook = hold
    refresh = asyncio.create_task(library.refresh_token())
    await asyncio.wait_for(hold.held.wait(), DEADLINE)
    writer = await codexlike.start("refresh", server.token_url, server.client_id, hold=True)
    await writer.locked()
    assert (server.refreshes, server.reuse_answers) == (1, 0)
    hold.release.set()
    await _wait_until(lambda: server.reuse_answers == 1, "the library's request was refused")
    # The library keeps looking (it polls the store every 20-200 ms) while the winner's commit
    # is held; let it look a few times. Refused and not yet adopted: still waiting.
    await asyncio.sleep(0.3)
    assert not refresh.done()
    assert (home / "auth.json").read_bytes() == stale
    released = time.monotonic()
    result = await writer.finish(b"\n")
    assert (result.returncode, result.outcome["committed"]) == (0, True), result
    assert await asyncio.wait_for(refresh, DEADLINE) is True
    assert time.monotonic() - released < library.oauth.reuse_grace.total_seconds()
    assert (server.token_calls, server.refreshes, server.reuse_answers) == (2, 1, 1)
    assert library.refresh_failure_for_auth(library.auth_cached()) is None
    assert library.auth_cached() == await _disk_auth(home)
    assert server.is_valid_refresh_token(_disk_tokens(home)["refresh_token"])
    assert _stray_temp_files(home) == []


# -- 3. API-key logins against commits --------------------------------------------------------


async def test_library_api_key_login_waits_for_a_codex_like_commit(
    home: Path, server: FakeAuthServer, library: AuthManager, codexlike: CodexLikeRunner
) -> None:
    write_auth_json(home, server.login())
    assert await library.reload() is True
    before = (home / "auth.json").read_bytes()
    writer = await codexlike.start("refresh", server.token_url, server.client_id, hold=True)
    await writer.locked()  # spent, both locks held, nothing written yet
    assert server.refreshes == 1
    login = asyncio.create_task(library.login_with_api_key(CANARY_API_KEY))
    await _wait_until(lambda: _opened_here(home / "auth.lock"), "the login waits on auth.lock")
    assert not login.done()
    assert (home / "auth.json").read_bytes() == before
    result = await writer.finish(b"\n")
    # The writer's commit found its own spent token still stored (the login had not written)...
    assert (result.returncode, result.stderr) == (0, "")
    assert result.outcome["committed"] is True
    # ... then the login landed over it.
    await asyncio.wait_for(login, DEADLINE)
    assert (home / "auth.json").read_bytes() == _apikey_bytes(CANARY_API_KEY)
    assert _file_mode(home / "auth.json") == 0o600
    auth = library.auth_cached()
    assert auth is not None
    assert (auth.mode, auth.token) == (AuthMode.API_KEY, CANARY_API_KEY)
    assert await library.auth() == auth
    assert (server.token_calls, server.refreshes) == (1, 1)
    assert _stray_temp_files(home) == []


async def test_codex_like_api_key_login_during_a_library_refresh_survives(
    home: Path, server: FakeAuthServer, library: AuthManager, codexlike: CodexLikeRunner
) -> None:
    write_auth_json(home, server.login())
    assert await library.reload() is True
    hold = _HoldLibrary()
    server.token_hook = hold
    refresh = asyncio.create_task(library.refresh_token())
    await asyncio.wait_for(hold.held.wait(), DEADLINE)
    # The library's refresh is in flight (its refresh lock held): the login does not wait.
    result = await codexlike.run("login-api-key", stdin=CANARY_API_KEY.encode() + b"\n")
    assert (result.returncode, result.outcome, result.stderr) == (0, {"committed": True}, "")
    assert (home / "auth.json").read_bytes() == _apikey_bytes(CANARY_API_KEY)
    hold.release.set()
    # The refresh spent its token, but its commit found the new login, kept it and adopted it
    # (``True``: the manager now holds other auth).
    assert await asyncio.wait_for(refresh, DEADLINE) is True
    assert (server.token_calls, server.refreshes, server.reuse_answers) == (1, 1, 0)
    assert (home / "auth.json").read_bytes() == _apikey_bytes(CANARY_API_KEY)
    auth = library.auth_cached()
    assert auth is not None
    assert (auth.mode, auth.token) == (AuthMode.API_KEY, CANARY_API_KEY)
    assert await library.auth() == auth
    assert _file_mode(home / "auth.json") == 0o600
    assert _stray_temp_files(home) == []


# -- 4. a logout during a library refresh -----------------------------------------------------


async def test_codex_like_logout_during_a_library_refresh_stays_logged_out(
    home: Path, server: FakeAuthServer, library: AuthManager, codexlike: CodexLikeRunner
) -> None:
    write_auth_json(home, server.login())
    assert await library.reload() is True
    hold = _HoldLibrary()
    server.token_hook = hold
    refresh = asyncio.create_task(library.refresh_token())
    await asyncio.wait_for(hold.held.wait(), DEADLINE)
    result = await codexlike.run("logout")
    assert (result.returncode, result.outcome, result.stderr) == (0, {"removed": True}, "")
    assert not (home / "auth.json").exists()
    hold.release.set()
    with pytest.raises(RefreshTokenFailedError) as caught:
        await asyncio.wait_for(refresh, DEADLINE)
    assert caught.value.reason is RefreshFailureReason.OTHER
    assert (server.token_calls, server.refreshes, server.reuse_answers) == (1, 1, 0)
    assert not (home / "auth.json").exists()
    assert library.auth_cached() is None
    assert await library.auth() is None
    assert await library.refresh_token() is False
    assert server.token_calls == 1
    assert _stray_temp_files(home) == []


# -- 5. library processes and the writer under load -------------------------------------------

LIBRARY_WORKER = textwrap.dedent(
    """
    import asyncio, json, logging, sys, time
    import aiohttp
    from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig

    class Count(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append((record.name, record.getMessage()[:300]))

    async def call(session, url, auth):
        async with session.get(url, headers=auth.headers()) as response:
            await response.read()
            return response.status

    async def main(home, token_url, client_id, api_url, seconds):
        warnings = Count()
        logging.getLogger("aioscopedauth").addHandler(warnings)
        ok = failed = recoveries = 0
        oauth = OAuthConfig(token_url, client_id)
        async with AuthManager(FileAuthStore(home), oauth) as manager:
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    auth = await manager.auth()
                    status = await call(session, api_url, auth)
                    if status == 401:
                        recoveries += 1
                        recovery = manager.unauthorized_recovery(auth)
                        while status == 401 and recovery.has_next():
                            await recovery.next(auth)
                            auth = await manager.auth()
                            status = await call(session, api_url, auth)
                    ok += status == 200
                    failed += status != 200
                    await asyncio.sleep(0.005)  # pacing: a client that does other work too
                final = await call(session, api_url, await manager.auth())
        print(json.dumps({"ok": ok, "failed": failed, "recoveries": recoveries,
                          "final": final, "warnings": warnings.messages}))

    asyncio.run(main(*sys.argv[1:5], float(sys.argv[5])))
    """
)
WORKERS = 3
WORKER_SECONDS = 4.0
OAUTH_LOGGER = "aioscopedauth.oauth"
WRITER_PAUSE = 0.2
COLLIDE_WAIT = 1.0
"""How long a writer's token request waits for a library one (the library's tokens fall due
every 0.75 s), so that the two spend the same refresh token."""


class _Collide:
    """Makes the writer's refreshes collide with the library's, in a seeded random order.

    The writer read the stored refresh token before posting; its request waits (boundedly) for
    the next library request, which spends the same token; then each request waits 0-50 ms,
    so either side may spend first.
    """

    def __init__(self) -> None:
        self.jitter = random.Random(10)
        self.library_posted = asyncio.Event()

    async def __call__(self, body: Any) -> None:
        if _is_codexlike(body):
            self.library_posted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.library_posted.wait(), COLLIDE_WAIT)
        else:
            self.library_posted.set()
        await asyncio.sleep(self.jitter.uniform(0.0, 0.05))


@pytest.mark.slow
async def test_library_processes_and_a_codex_like_writer_under_load(
    home: Path, codexlike: CodexLikeRunner
) -> None:
    async with FakeAuthServer(access_ttl=timedelta(seconds=1)) as server:
        server.token_hook = _Collide()
        write_auth_json(home, server.login())
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                LIBRARY_WORKER,
                str(home),
                server.token_url,
                server.client_id,
                f"{server.url}/api/ping",
                str(WORKER_SECONDS),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(WORKERS)
        ]
        try:
            finished = asyncio.gather(*(w.communicate() for w in workers))
            writer_runs: list[WriterResult] = []
            while not finished.done():
                writer_runs.append(
                    await codexlike.run("refresh", server.token_url, server.client_id)
                )
                # Pacing: a Codex that refreshes every now and then, not a tight loop.
                await asyncio.wait([finished], timeout=WRITER_PAUSE)
            outputs = await asyncio.wait_for(finished, DEADLINE)
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.communicate()
        results = []
        for worker, (out, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, err.decode()
            results.append(json.loads(out))
        writer_lost = sum(r.returncode != 0 for r in writer_runs)
        writer_spent = sum(r.outcome.get("spent") is True for r in writer_runs)
        summary = {
            "refreshes": server.refreshes,
            "library_refreshes": server.refreshes - writer_spent,
            "writer_runs": len(writer_runs),
            "writer_committed": sum(r.outcome.get("committed") is True for r in writer_runs),
            "writer_kept_other": sum(r.outcome.get("kept_other") is True for r in writer_runs),
            "writer_lost": writer_lost,
            "reuse_answers": server.reuse_answers,
            "library_reuse_answers": server.reuse_answers - writer_lost,
            "library_refusals_logged": sum(len(r["warnings"]) for r in results),
            "library": [{k: v for k, v in r.items() if k != "warnings"} for r in results],
        }
        print("CODEX-LIKE SUMMARY under load:", json.dumps(summary))  # noqa: T201
        # The library side: every request answered, nothing logged, the end state good.
        assert [r["failed"] for r in results] == [0] * WORKERS
        assert [r["final"] for r in results] == [200] * WORKERS
        # No refresh failed for the library: the manager warned of nothing. (The token client
        # logs each refusal it receives, including a reuse answer the manager then recovers
        # from by adopting the winner's tokens; those are counted in the summary.)
        manager_warnings = [[m for m in r["warnings"] if m[0] != OAUTH_LOGGER] for r in results]
        assert manager_warnings == [[]] * WORKERS
        assert all(r["ok"] > 0 for r in results)
        # The writer never timed out on a lock the library held; it lost only to reuse.
        assert len(writer_runs) >= 3
        assert [r.returncode for r in writer_runs if r.returncode != 0] == [1] * writer_lost
        lost_to = [r.outcome.get("error") for r in writer_runs if r.returncode != 0]
        assert lost_to == ["refresh_token_reused"] * writer_lost
        assert all(TIMED_OUT not in r.stderr for r in writer_runs)
        assert server.is_valid_refresh_token(_disk_tokens(home)["refresh_token"])
        assert _file_mode(home / "auth.json") == 0o600
        assert _stray_temp_files(home) == []
        # And the disk is good for one more refresh, without a reuse answer.
        reuse = server.reuse_answers
        oauth = OAuthConfig(server.token_url, server.client_id)
        async with AuthManager(FileAuthStore(home), oauth) as manager:
            assert await manager.refresh_token() is True
        assert server.reuse_answers == reuse
