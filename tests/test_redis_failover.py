"""The fleet survives losing its Redis primary (issue 22, items 2, 3 and 5).

Real servers only: a primary and a replica (and three sentinels where a failover happens)
from the suite's ``valkey-server``. A replica that lags is a replica stopped with SIGSTOP (it
keeps its link, so the primary still counts it as connected, and acknowledges nothing); a
primary that dies is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import textwrap
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio as aioredis

from aioscopedauth import AuthManager, StorageError
from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import FakeAuthServer, RedisServer, SentinelGroup

from processes import spawned

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from aioscopedauth import Auth, OAuthConfig

pytestmark = pytest.mark.slow


def _pid(server: RedisServer) -> int:
    process = server._process
    assert process is not None
    return process.pid


@contextlib.contextmanager
def _stopped(server: RedisServer) -> Iterator[None]:
    """SIGSTOP a server (a replica that acknowledges nothing); SIGCONT it on the way out."""
    os.kill(_pid(server), signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(_pid(server), signal.SIGCONT)


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and its replica, in sync."""
    fast_sync = ("--repl-diskless-sync-delay", "0")
    with RedisServer(options=fast_sync) as primary:
        replica = RedisServer(replica_of=primary.port, options=fast_sync)
        with replica, redis.Redis(port=replica.port, socket_timeout=2) as probe:
            deadline = time.monotonic() + 30
            while probe.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica never synced"
                time.sleep(0.02)
            yield primary, replica


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    """A primary, a replica and three sentinels of this test's own."""
    with SentinelGroup() as group:
        yield group


def _assert_newest(server: FakeAuthServer, auth: Auth) -> None:
    """``auth`` holds the one refresh token the endpoint would still accept."""
    assert auth.data is not None
    assert auth.data.tokens is not None
    valid = server._valid_refresh
    assert valid == {auth.data.tokens.refresh_token}


async def _stored_version(port: int, key: str) -> bytes | str | None:
    async with aioredis.from_url(f"redis://127.0.0.1:{port}/0") as client:
        return await client.hget(key, "version")


async def test_a_write_no_replica_acknowledged_is_not_saved_and_is_written_again(
    pair: tuple[RedisServer, RedisServer], server: FakeAuthServer
) -> None:
    primary, replica = pair
    async with RedisAuthStore.from_url(primary.url, name="fleet", replica_timeout=0.3) as store:
        first = server.login()
        await store.save(first)
        # Acknowledged by WAIT: the replica holds it when save() returns.
        assert await _stored_version(replica.port, store.key) == b"1"
        second = server.login()
        with _stopped(replica), pytest.raises(StorageError) as caught:
            await store.save(second)
        assert str(caught.value) == (
            f"Could not write the login: Redis at {store.where} wrote it, but 0 of the 1 "
            "replica(s) needed acknowledged it within 0.3 s, so a failover now could lose "
            "it: it counts as not saved and is written again on the next try. Check the "
            "replicas' links, or lower min_replicas."
        )
        # The next update that finds this store's unacknowledged write writes it again (a
        # manager's next refresh re-commits its unsaved tokens this way), and waits again.
        result = await store.update(lambda current: current)
        assert (result.before, result.after, result.written) == (second, second, True)
        assert await _stored_version(replica.port, store.key) == b"3"
        # Acknowledged now: keeping it writes nothing.
        kept = await store.update(lambda current: current)
        assert kept.written is False
        assert await _stored_version(primary.port, store.key) == b"3"


async def test_without_replicas_nothing_waits_and_min_replicas_0_never_waits(
    redis_server: RedisServer, pair: tuple[RedisServer, RedisServer], server: FakeAuthServer
) -> None:
    async with RedisAuthStore.from_url(redis_server.url, name="alone") as alone:
        await alone.save(server.login())  # a lone server: today's behaviour
    primary, replica = pair
    async with RedisAuthStore.from_url(primary.url, name="fleet", min_replicas=0) as store:
        with _stopped(replica):
            await store.save(server.login())
    async with RedisAuthStore.from_url(
        primary.url, name="fleet", min_replicas=2, replica_timeout=0.1
    ) as strict:
        with pytest.raises(StorageError, match=r"but 1 of the 2 replica\(s\) needed"):
            await strict.save(server.login())


async def test_a_lock_take_no_replica_acknowledged_fails_and_leaves_the_lock_free(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = pair
    async with (
        RedisAuthStore.from_url(primary.url, name="fleet", replica_timeout=0.2) as taker,
        RedisAuthStore.from_url(primary.url, name="fleet", lock_timeout=5) as other,
    ):
        with _stopped(replica), pytest.raises(StorageError) as caught:
            async with taker.lock():
                pytest.fail("a lock no replica holds was taken")
        assert str(caught.value).startswith(
            f"Could not take the refresh lock: Redis at {taker.where} wrote it, but 0 of the 1 "
            "replica(s) needed acknowledged it within 0.2 s"
        )
        # Given up (and that acknowledged once the replica is back): free at once, not
        # after its 60 s TTL.
        started = time.monotonic()
        async with other.lock():
            pass
        assert time.monotonic() - started < 5


def test_bad_replica_settings_are_refused() -> None:
    from aioscopedauth import ConfigError  # noqa: PLC0415 -- only here

    with pytest.raises(ConfigError, match="min_replicas must be None"):
        RedisAuthStore.from_url("redis://localhost/0", min_replicas=-1)
    with pytest.raises(ConfigError, match="replica_timeout must be a positive"):
        RedisAuthStore.from_url("redis://localhost/0", replica_timeout=0)
    with pytest.raises(ConfigError, match="failover_timeout must be"):
        RedisAuthStore.from_url("redis://localhost/0", failover_timeout=-1)
    assert RedisAuthStore.from_url("redis://localhost/0").failover_timeout == 0
    assert RedisAuthStore.from_url("redis+sentinel://h:1/svc").failover_timeout == 30


async def test_a_lock_release_lost_in_a_failover_is_released_again_on_the_new_primary(
    sentinels: SentinelGroup,
) -> None:
    url = sentinels.url()
    async with (
        RedisAuthStore.from_url(url, name="fleet", replica_timeout=0.2) as owner,
        RedisAuthStore.from_url(url, name="fleet", lock_timeout=5) as other,
    ):
        held = asyncio.Event()
        leave = asyncio.Event()

        async def hold() -> None:
            async with owner.lock():  # taken, and acknowledged by the replica
                held.set()
                await leave.wait()

        holder = asyncio.create_task(hold())
        try:
            await asyncio.wait_for(held.wait(), 10)
            with _stopped(sentinels.replica):
                leave.set()  # the release reaches the primary only: not acknowledged
                await asyncio.sleep(0.5)  # several releases, none acknowledged
                assert not holder.done()  # the owner keeps releasing
                old = await asyncio.to_thread(sentinels.kill_primary)
            await asyncio.to_thread(sentinels.wait_for_failover, old)
            # The promoted replica had the lock (60 s TTL) without its release: the owner's
            # next release goes there and frees it, so another host takes it at once.
            await asyncio.wait_for(holder, 20)
            started = time.monotonic()
            async with other.lock():
                pass
            assert time.monotonic() - started < 5
        finally:
            leave.set()
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError, StorageError):
                await holder


async def test_a_refresh_committed_before_the_primary_dies_survives_on_the_promoted_replica(
    sentinels: SentinelGroup, server: FakeAuthServer, oauth: OAuthConfig
) -> None:
    url = sentinels.url()
    async with RedisAuthStore.from_url(url, name="fleet") as seed:
        await seed.save(server.login())
    async with (
        RedisAuthStore.from_url(url, name="fleet") as store,
        AuthManager(store, oauth) as manager,
    ):
        assert await manager.refresh_token() is True
        # SIGKILL at once: the commit was acknowledged by WAIT, so the replica holds it.
        old = await asyncio.to_thread(sentinels.kill_primary)
        killed = time.monotonic()
        new = await asyncio.to_thread(sentinels.wait_for_failover, old)
        assert await _stored_version(new, store.key) == b"2"
        # The fleet goes on: the next refresh commits on the new primary.
        assert await manager.refresh_token() is True
        failover_seconds = time.monotonic() - killed
        assert await _stored_version(new, store.key) == b"3"
        newest = manager.auth_cached()
        assert newest is not None
    # A host started after the failover with only the Sentinel URL gets the newest login.
    async with RedisAuthStore.from_url(url, name="fleet") as late:
        login = await late.load()
    assert login is not None
    assert login == newest.data
    assert server.reuse_answers == 0
    _assert_newest(server, newest)
    assert server.refreshes == 2
    print(f"failover seen by the fleet: {failover_seconds:.2f} s")  # noqa: T201 -- a figure for the report


async def test_tokens_no_replica_acknowledged_are_served_and_recommitted_after_a_failover(
    sentinels: SentinelGroup, server: FakeAuthServer, oauth: OAuthConfig
) -> None:
    url = sentinels.url()
    async with RedisAuthStore.from_url(url, name="fleet") as seed:
        await seed.save(server.login())
    async with (
        RedisAuthStore.from_url(url, name="fleet", replica_timeout=0.2) as store,
        AuthManager(store, oauth) as manager,
    ):
        before = await manager.auth()
        assert before is not None
        server.token_gate = asyncio.Event()
        async with manager.changes() as changes:
            refresh = asyncio.create_task(manager.refresh_token())
            try:
                await asyncio.wait_for(server.token_request_seen.wait(), 10)
                with _stopped(sentinels.replica):
                    # The lock was acknowledged; the commit reaches only the primary: it
                    # raises, and the manager keeps the tokens in memory and serves them.
                    server.token_gate.set()
                    change = await asyncio.wait_for(anext(changes), 10)
                    assert change.reason == "refresh"
                    refreshed = await manager.auth()
                    assert refreshed is not None
                    assert refreshed != before
                    old = await asyncio.to_thread(sentinels.kill_primary)
                await asyncio.to_thread(sentinels.wait_for_failover, old)
                # Its lock release, never acknowledged, is sent again to the new primary.
                assert await asyncio.wait_for(refresh, 20) is True
            finally:
                refresh.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresh
        # The promoted replica holds the login before the refresh (its token is spent).
        # The next refresh writes the unsaved tokens there first, then spends *them*.
        assert await manager.refresh_token() is True
        newest = manager.auth_cached()
        assert newest is not None
    async with RedisAuthStore.from_url(url, name="fleet") as late:
        assert await late.load() == newest.data
    assert server.reuse_answers == 0
    _assert_newest(server, newest)


HOST = textwrap.dedent(
    """
    import asyncio, hashlib, json, sys, time
    import aiohttp
    from aioscopedauth import AuthManager, AuthMiddleware, OAuthConfig
    from aioscopedauth.redis import RedisAuthStore

    async def agent(session, api_url, counts, examples, stop):
        while not stop.is_set():
            counts["requests"] += 1
            try:
                async with session.get(api_url) as response:
                    await response.read()
                    detail = f"HTTP {response.status}"
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
            counts["ok" if detail == "HTTP 200" else "failed"] += 1
            if detail != "HTTP 200" and len(examples) < 3:
                examples.append(detail[:300])
            await asyncio.sleep(0.01)

    async def main(url, name, token_url, api_url):
        oauth = OAuthConfig(token_url, "test-client", timeout=5.0)
        counts = {"requests": 0, "ok": 0, "failed": 0}
        examples = []
        stop = asyncio.Event()
        store = RedisAuthStore.from_url(url, name=name, lock_ttl=10.0)
        async with store, AuthManager(store, oauth) as manager:
            middleware = AuthMiddleware(manager, origins=[api_url.rsplit("/api", 1)[0]])
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
                agents = [
                    asyncio.create_task(agent(session, api_url, counts, examples, stop))
                    for _ in range(4)
                ]
                await asyncio.to_thread(sys.stdin.readline)  # "stop"
                stop.set()
                await asyncio.gather(*agents)
            print("stopped", flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # "report": every host has stopped
            await manager.reload()
            auth = manager.auth_cached()
            login = hashlib.sha256(auth.data.tokens.refresh_token.encode()).hexdigest()[:16]
        print(json.dumps({**counts, "examples": examples, "login": login}), flush=True)

    asyncio.run(main(*sys.argv[1:]))
    """
)


def _fingerprint(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:16]


async def _until(what: str, ready: Callable[[], Awaitable[bool] | bool], within: float) -> None:
    """Wait, bounded, until ``ready()`` (a counter or a server's state; no fixed sleep)."""
    deadline = time.monotonic() + within
    while True:
        answer = ready()
        if answer if isinstance(answer, bool) else await answer:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_fleet_loses_its_primary_mid_run_without_a_failed_request_or_a_reuse(
    sentinels: SentinelGroup, tmp_path: Path
) -> None:
    url = sentinels.url()
    name = "fleet"
    async with (
        FakeAuthServer(access_ttl=timedelta(seconds=2)) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        async with RedisAuthStore.from_url(url, name=name) as seed:
            await seed.save(server.login())

        async def host(number: int) -> asyncio.subprocess.Process:
            home = tmp_path / f"host-{number}"
            home.mkdir()
            return await stack.enter_async_context(
                spawned(
                    sys.executable, "-c", HOST,
                    url, name, server.token_url, f"{server.url}/api/work",
                    cwd=home,
                    env={
                        "HOME": str(home),
                        "CODEX_HOME": str(home),
                        "PATH": "/usr/bin:/bin",
                        # The checkout under test, where the run gives one.
                        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                    },
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stack.enter_context((home / "stderr").open("wb")),
                )
            )  # fmt: skip

        hosts = [await host(number) for number in range(3)]
        await _until("two refreshes by the fleet", lambda: server.refreshes >= 2, 30)
        # Right after a refresh: SIGKILL the primary.
        seen = server.refreshes
        await _until("the next refresh", lambda: server.refreshes > seen, 30)
        replica = sentinels.replica.port
        old = await asyncio.to_thread(sentinels.kill_primary)
        killed = time.monotonic()
        before = int(await _stored_version(replica, f"aioscopedauth:{{{name}}}") or 0)
        new = await asyncio.to_thread(sentinels.wait_for_failover, old)

        async def committed() -> bool:
            return int(await _stored_version(new, f"aioscopedauth:{{{name}}}") or 0) > before

        await _until("a refresh committed on the new primary", committed, 60)
        failover_seconds = time.monotonic() - killed
        # A host started after the failover with only the Sentinel URL joins the fleet.
        hosts.append(await host(3))
        seen = server.refreshes
        await _until("two more refreshes", lambda: server.refreshes >= seen + 2, 30)
        for proc in hosts:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
        for proc in hosts:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"stopped\n"
        reports = []
        for proc in hosts:
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(b"report\n")
            reports.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)))
        valid = server._valid_refresh  # the endpoint's own record, for the check
        assert len(valid) == 1
        newest = _fingerprint(next(iter(valid)))
        assert server.reuse_answers == 0
        for number, report in enumerate(reports):
            log = (tmp_path / f"host-{number}" / "stderr").read_text(errors="replace")
            assert report["failed"] == 0, (number, report["examples"], log[-3000:])
            assert report["requests"] > 0
            assert report["login"] == newest
        print(  # noqa: T201 -- a figure for the report
            f"fleet failover: {failover_seconds:.2f} s from the primary's death to a commit on "
            f"the new one; {sum(r['requests'] for r in reports)} requests, "
            f"{server.refreshes} refreshes"
        )


async def test_a_write_sent_while_the_primary_is_dead_waits_for_the_new_one(
    sentinels: SentinelGroup, server: FakeAuthServer
) -> None:
    url = sentinels.url()
    async with (
        RedisAuthStore.from_url(url, name="fleet") as patient,
        RedisAuthStore.from_url(url, name="fleet", failover_timeout=0) as hasty,
    ):
        await patient.save(server.login())
        await hasty.load()  # connected, to the primary about to die
        await asyncio.to_thread(sentinels.kill_primary)
        with pytest.raises(StorageError, match=r"is unreachable"):
            await hasty.save(server.login())
        # Sent before any sentinel noticed: retried (failover_timeout, 30 s) until the
        # replica is promoted, then written there.
        newer = server.login()
        await patient.save(newer)
        assert await asyncio.to_thread(sentinels.primary_port) == sentinels.replica.port
        assert await _stored_version(sentinels.replica.port, patient.key) == b"2"
        assert await hasty.load() == newer
