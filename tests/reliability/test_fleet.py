"""A fleet: many processes, each with its own home, share one login through one real Redis.

Refresh tokens are single-use and rotate (the kit's fake server answers a second spend with
``refresh_token_reused`` and counts it), so every test checks the count of reuse answers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import textwrap
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import FakeAuthServer, RedisServer

if TYPE_CHECKING:
    from pathlib import Path

WORKER = textwrap.dedent(
    """
    import asyncio, collections, json, pathlib, sys, time
    from datetime import timedelta
    import aiohttp
    from aioscopedauth import AuthError, AuthManager, AuthMiddleware, OAuthConfig
    from aioscopedauth.redis import RedisAuthStore

    async def count(manager, reasons):
        async with manager.changes() as changes:
            async for change in changes:
                reasons[change.reason] += 1

    async def get(session, url):
        try:
            async with session.get(url) as response:
                await response.read()
                return response.status
        except AuthError:  # the login is lost for good: the middleware says so
            return 0

    async def main(url, name, token_url, api_url, seconds, lock_ttl, grace):
        oauth = OAuthConfig(
            token_url, "test-client", timeout=1.0, reuse_grace=timedelta(seconds=grace)
        )
        ok = failed = 0
        reasons = collections.Counter()
        store = RedisAuthStore.from_url(url, name=name, lock_ttl=lock_ttl)
        async with store, AuthManager(store, oauth) as manager:
            counter = asyncio.create_task(count(manager, reasons))
            middleware = AuthMiddleware(manager, origins=[api_url.rsplit("/api", 1)[0]])
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    status = await get(session, api_url)
                    if status == 200 and not ok:
                        pathlib.Path("ready").touch()  # in this host's home: it has the login
                    ok += status == 200
                    failed += status != 200
                    await asyncio.sleep(0.005)  # pacing: a client that does other work too
                final = await get(session, api_url)
            counter.cancel()
        print(json.dumps({
            "ok": ok, "failed": failed, "final": final, "reloads": reasons["reload"],
            "refreshes": reasons["refresh"], "notices": store.notices,
        }))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], *map(float, sys.argv[5:])))
    """
)

_NAMES = itertools.count()


async def _spawn(
    tmp_path: Path,
    url: str,
    name: str,
    server: FakeAuthServer,
    *,
    seconds: float,
    lock_ttl: float = 5.0,
    grace: float = 3.0,
) -> asyncio.subprocess.Process:
    # Each host has a home of its own: the login is shared through Redis only.
    home = tmp_path / f"host-{next(_NAMES)}"
    home.mkdir()
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER,
        url, name, server.token_url, f"{server.url}/api/work",
        str(seconds), str(lock_ttl), str(grace),
        cwd=home,
        env={"HOME": str(home), "CODEX_HOME": str(home), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _results(procs: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    results = []
    try:
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()[-3000:]
            results.append(json.loads(out))
    finally:
        # A host that did not finish must not outlive the test (its pipes would be reported
        # by a later test's garbage collection).
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    return results


async def _seed(url: str, name: str, server: FakeAuthServer, *, expired: bool = False) -> None:
    async with RedisAuthStore.from_url(url, name=name) as store:
        await store.save(server.login(expired=expired))


@pytest.mark.slow
async def test_a_fleet_shares_one_rotating_login_without_reuse(
    tmp_path: Path, redis_server: RedisServer, redis_name: str
) -> None:
    hosts = 4
    async with FakeAuthServer(access_ttl=timedelta(seconds=1)) as server:
        await _seed(redis_server.url, redis_name, server)
        procs = [
            await _spawn(tmp_path, redis_server.url, redis_name, server, seconds=4.0)
            for _ in range(hosts)
        ]
        results = await _results(procs)
    assert server.reuse_answers == 0
    assert [r["failed"] for r in results] == [0] * hosts
    assert [r["final"] for r in results] == [200] * hosts
    assert all(r["ok"] > 0 for r in results)
    # Many expiries, each refreshed once for the whole fleet (never one per host): a token is
    # refreshed only once stale, a quarter of its lifetime (less the second `iat` may be
    # truncated by) after it was minted, so two refreshes are never closer than that.
    assert server.refreshes >= 3
    assert sum(r["refreshes"] for r in results) == server.refreshes
    gaps = [b - a for a, b in itertools.pairwise(server.refresh_times)]
    assert min(gaps) > 0.4, f"a refresh followed another after {min(gaps):.3f} s"
    # The other hosts heard of the new tokens (pub/sub) instead of refreshing themselves.
    assert sum(r["notices"] for r in results) >= server.refreshes


@pytest.mark.slow
async def test_a_fleet_rides_through_a_redis_restart_that_loses_everything(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    hosts = 4
    async with FakeAuthServer(access_ttl=timedelta(seconds=3)) as server:
        await _seed(own_redis.url, "fleet", server)
        procs = [
            await _spawn(tmp_path, own_redis.url, "fleet", server, seconds=9.0)
            for _ in range(hosts)
        ]
        # Every host has the login (a host that starts while Redis is empty has nothing to
        # put back, and waits for another's). Then restart just after a refresh, long before
        # the next (never while one is in flight: the docs say what that costs).
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("host-*/ready"))) < hosts:
            assert time.monotonic() < deadline, "the hosts never all got the login"
            await asyncio.sleep(0.02)
        while not (
            server.refreshes >= 1 and 0.3 < time.monotonic() - server.refresh_times[-1] < 0.9
        ):
            assert time.monotonic() < deadline, "the fleet never refreshed"
            await asyncio.sleep(0.02)
        refreshes_before = server.refreshes
        await asyncio.to_thread(own_redis.restart)  # not persistent: it comes back empty
        restarted = time.monotonic()
        results = await _results(procs)
        async with RedisAuthStore.from_url(own_redis.url, name="fleet") as probe:
            stored = await probe.load()
    assert own_redis.starts == 2
    assert server.reuse_answers == 0
    assert [r["failed"] for r in results] == [0] * hosts
    assert [r["final"] for r in results] == [200] * hosts
    # The fleet put the login back and refreshed it again after the restart.
    assert server.refreshes > refreshes_before
    assert server.refresh_times[-1] > restarted
    assert stored is not None
    assert stored.tokens is not None
    assert server.is_valid_refresh_token(stored.tokens.refresh_token)


async def _hold_first_token_request(server: FakeAuthServer) -> tuple[asyncio.Event, list[str]]:
    release = asyncio.Event()
    verdict: list[str] = []  # "answer" or "drop", set before release

    async def hook(_body: object) -> None:
        if server.token_calls == 1:
            await release.wait()
            if verdict == ["drop"]:
                raise web.HTTPServiceUnavailable  # never reached the endpoint: not spent

    server.token_hook = hook
    return release, verdict


@pytest.mark.slow
async def test_when_the_lock_holder_is_killed_another_host_refreshes_after_the_ttl(
    tmp_path: Path, redis_server: RedisServer, redis_name: str
) -> None:
    hosts, lock_ttl = 3, 2.0
    async with FakeAuthServer(access_ttl=timedelta(seconds=2)) as server:
        await _seed(redis_server.url, redis_name, server, expired=True)
        release, verdict = await _hold_first_token_request(server)
        victim = await _spawn(
            tmp_path, redis_server.url, redis_name, server, seconds=30, lock_ttl=lock_ttl
        )
        await asyncio.wait_for(server.token_request_seen.wait(), 30)
        locked_at = time.monotonic()  # the victim holds the lock since before this
        victim.kill()  # SIGKILL while holding the lock, before its request is answered
        await victim.communicate()
        verdict.append("drop")
        release.set()
        procs = [
            await _spawn(tmp_path, redis_server.url, redis_name, server, seconds=2.0)
            for _ in range(hosts)
        ]
        results = await _results(procs)
    assert server.reuse_answers == 0
    assert [r["failed"] for r in results] == [0] * hosts
    assert [r["final"] for r in results] == [200] * hosts
    # Nobody stole the dead host's lock: the first refresh came after its TTL ran out.
    assert server.refresh_times[0] - locked_at > lock_ttl - 0.5
    assert sum(r["refreshes"] for r in results) == server.refreshes >= 1


@pytest.mark.slow
async def test_a_refresh_token_spent_by_a_killed_host_is_the_one_counted_loss(
    tmp_path: Path, redis_server: RedisServer, redis_name: str
) -> None:
    hosts = 3
    async with FakeAuthServer(access_ttl=timedelta(seconds=2)) as server:
        await _seed(redis_server.url, redis_name, server, expired=True)
        release, verdict = await _hold_first_token_request(server)
        victim = await _spawn(
            tmp_path, redis_server.url, redis_name, server, seconds=30, lock_ttl=1.0
        )
        await asyncio.wait_for(server.token_request_seen.wait(), 30)
        victim.kill()  # dies after spending: the endpoint rotates, nobody saves the answer
        await victim.communicate()
        verdict.append("answer")
        release.set()
        procs = [
            await _spawn(
                tmp_path, redis_server.url, redis_name, server, seconds=1.5, lock_ttl=1.0, grace=0.3
            )
            for _ in range(hosts)
        ]
        results = await _results(procs)
        async with aioredis.from_url(redis_server.url) as client:
            version = await client.hget(f"aioscopedauth:{{{redis_name}}}", "version")
    # The loss DESIGN.md documents: the refresh token the killed host spent is gone with it.
    # Each surviving host tries it once (one reuse answer each), finds no winner's tokens in
    # Redis, and stops: the login must be made again. Nothing else was spent.
    assert server.refreshes == 1
    assert server.reuse_answers == hosts
    assert len(server.token_requests) == hosts + 1
    assert len({body["refresh_token"] for body in server.token_requests}) == 1
    assert all(r["failed"] > 0 and r["final"] == 0 for r in results)
    assert version == b"1"  # nobody overwrote the login with anything
