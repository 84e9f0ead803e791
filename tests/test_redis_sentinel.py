"""RedisAuthStore through Sentinel: real primary, replica and three sentinels, a real failover."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import SentinelGroup

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from aioscopedauth.testing import FakeAuthServer
    from aioscopedauth.testing.plugin import LeakGuard


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    """A primary, a replica and three sentinels of this test's own, on loopback ports."""
    with SentinelGroup() as group:
        yield group


def test_a_sentinel_url_names_the_sentinels_service_and_db(leak_guard: LeakGuard) -> None:
    password = "CANARY-sentinel-password-0b7"
    leak_guard.plant(password)
    store = RedisAuthStore.from_url(
        f"redis+sentinel://fleet:{password}@10.0.0.1:26379,[::1]:26380,sentinel-3/payments/2",
        name="team",
    )
    assert store.where == (
        "redis+sentinel://fleet@10.0.0.1:26379,[::1]:26380,sentinel-3:26379/payments/2"
    )
    assert password not in repr(store)
    pool = store.client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert (pool.service_name, pool.connection_kwargs["db"]) == ("payments", 2)
    assert pool.connection_kwargs["username"] == "fleet"
    assert pool.connection_kwargs["password"] == password
    assert pool.connection_kwargs.get("socket_timeout") is None
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in store._sentinel.sentinels
    ] == [("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379)]
    tls = RedisAuthStore.from_url("rediss+sentinel://h:1/svc?ssl_ca_certs=/etc/ca.pem")
    assert tls.client.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"


@pytest.mark.slow
async def test_a_store_follows_the_primary_after_the_old_one_is_killed(
    sentinels: SentinelGroup, server: FakeAuthServer
) -> None:
    url = sentinels.url()
    async with (
        RedisAuthStore.from_url(url, name="fleet") as host_a,
        RedisAuthStore.from_url(url, name="fleet") as host_b,
    ):
        subscribed = asyncio.Event()
        stop = host_b.watch(subscribed.set)
        await asyncio.wait_for(subscribed.wait(), 10)
        login = server.login()
        await host_a.save(login)
        assert await host_b.load() == login
        # The write is on the replica too (else a failover may lose it: issue 22, item 2).
        async with aioredis.from_url(f"redis://127.0.0.1:{sentinels.primary.port}/0") as old:
            assert await old.execute_command("WAIT", 1, 5000) == 1  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        old_port = await asyncio.to_thread(sentinels.kill_primary)
        new_port = await asyncio.to_thread(sentinels.wait_for_failover, old_port)
        assert new_port == sentinels.replica.port != old_port
        # The first command after the failover finds the new primary by itself.
        assert await host_a.load() == login
        # B's listener lost its connection when the primary died (so it is not listening
        # now, or listening again): it comes back on the new primary by itself.
        await asyncio.wait_for(host_b.listening.wait(), 10)
        subscribed.clear()
        heard = host_b.notices
        async with host_a.lock():  # the lock lives there now
            newer = server.login()
            await host_a.save(newer)
        await asyncio.wait_for(subscribed.wait(), 10)  # ... and hears of the new login there
        assert host_b.notices == heard + 1
        assert await host_b.load() == newer
        await stop()
    async with aioredis.from_url(f"redis://127.0.0.1:{new_port}/0") as promoted:
        assert await promoted.hget("aioscopedauth:{fleet}", "version") == b"2"


async def test_the_cli_takes_a_sentinel_url(sentinels: SentinelGroup, tmp_path: Path) -> None:
    args = ("--home", str(tmp_path), "--store", "redis", "--redis-name", "cli")
    env = {**os.environ, "AIOSCOPEDAUTH_REDIS_URL": sentinels.url()}

    async def run(*more: str, stdin: bytes = b"") -> tuple[int | None, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aioscopedauth", *args, *more,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await run("login", "--api-key", stdin=b"sk-CANARY-sentinel-cli\n")
    assert (code, err) == (0, "")
    assert out == f"Logged in with an API key (saved to {sentinels.url()}, name cli).\n"
    async with aioredis.from_url(f"redis://127.0.0.1:{sentinels.primary.port}/0") as primary:
        assert await primary.hget("aioscopedauth:{cli}", "version") == b"1"
    code, out, _ = await run("token")
    assert (code, out) == (0, "sk-CANARY-sentinel-cli\n")
