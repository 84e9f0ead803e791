"""RedisAuthStore against a real Redis/Valkey server: the protocol, fencing, propagation, faults."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis
from tcp_proxy import TcpProxy

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    ConfigError,
    FileAuthStore,
    OAuthConfig,
    StorageError,
)
from aioscopedauth.redis import _ACQUIRE_SCRIPT, _RENEW_SCRIPT, RedisAuthStore
from aioscopedauth.testing import FakeAuthServer, RedisServer, issued_secrets, write_auth_json

from support import GatedFileStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from aioscopedauth import AuthChange, AuthChanges
    from aioscopedauth.testing.plugin import LeakGuard

Stores = "Callable[..., RedisAuthStore]"


async def _next_change(changes: AuthChanges) -> AuthChange:
    return await asyncio.wait_for(anext(changes), 10)


async def _all_keys(url: str) -> list[str]:
    async with aioredis.from_url(url) as client:
        return sorted(_b(k).decode() for k in await client.keys("*"))


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _contains_secret(text: str | bytes) -> bool:
    blob = text if isinstance(text, bytes) else text.encode()
    return any(secret.encode() in blob for secret in issued_secrets())


# -- the AuthStore protocol ---------------------------------------------------------------


async def test_save_load_delete_and_key_names(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, redis_name: str
) -> None:
    store = redis_stores()
    assert store.kind == "redis"
    assert await store.load() is None
    login = server.login()
    await store.save(login)
    assert await redis_stores().load() == login
    raw = await store.client.hgetall(store.key)
    assert _b(raw[b"auth.json"]).decode() == login.to_json()  # the same document as auth.json
    assert raw[b"version"] == b"1"
    async with store.lock():
        keys = [k for k in await _all_keys(store.where) if redis_name in k]
        assert keys == [f"aioscopedauth:{{{redis_name}}}", f"aioscopedauth:{{{redis_name}}}:lock"]
    assert not any(_contains_secret(k) for k in keys)
    assert await store.client.exists(store.lock_key) == 0  # released
    assert await store.delete() is True
    assert await store.load() is None
    assert await store.delete() is False
    marker = await store.client.hgetall(store.key)
    assert marker == {
        b"version": b"2",
        b"writer": _b(raw[b"writer"])[:-1] + b"2",
        b"at": marker[b"at"],
    }
    # When each was written: the server's clock in microseconds, later for the later write.
    server_time = await store.client.time()
    now = server_time[0] * 1_000_000 + server_time[1]
    assert 0 < int(raw[b"at"]) < int(marker[b"at"]) <= now


async def test_a_login_copies_between_a_file_and_redis_both_ways(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, tmp_path: Path
) -> None:
    first, second = FileAuthStore(tmp_path / "a"), FileAuthStore(tmp_path / "b")
    login = server.login()
    await first.save(login)
    store = redis_stores()
    from_file = await first.load()
    assert from_file is not None
    await store.save(from_file)
    from_redis = await store.load()
    assert from_redis == login
    await second.save(from_redis)
    assert second.path.read_bytes() == first.path.read_bytes()


async def test_update_decides_again_on_a_lost_race(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, redis_server: RedisServer
) -> None:
    store = redis_stores()
    first, theirs, ours = server.login(), server.login(), server.login()
    await store.save(first)
    rival = redis.Redis.from_url(redis_server.url)
    seen: list[AuthDotJson | None] = []

    def change(current: AuthDotJson | None) -> AuthDotJson | None:
        seen.append(current)
        if len(seen) == 1:  # another host writes between our read and our write
            rival.hset(store.key, mapping={"version": "2", "auth.json": theirs.to_json()})
        return ours

    try:
        result = await store.update(change)
    finally:
        rival.close()
    assert seen == [first, theirs]
    assert (result.before, result.after, result.written) == (theirs, ours, True)
    assert await store.client.hget(store.key, "version") == b"3"


async def test_keeping_the_stored_login_writes_nothing(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer
) -> None:
    store = redis_stores()
    login = server.login()
    await store.save(login)
    result = await store.update(lambda current: current)
    assert (result.before, result.after, result.written) == (login, login, False)
    assert await store.client.hget(store.key, "version") == b"1"


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "a{b}", "a:b"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="Bad Redis login name"):
        RedisAuthStore.from_url("redis://127.0.0.1:1/0", name=name)


def test_a_bad_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        RedisAuthStore.from_url("redis://127.0.0.1:1/0", encryption_key=b"short")


async def test_corrupt_or_foreign_data_is_a_storage_error(
    redis_stores: Callable[..., RedisAuthStore],
) -> None:
    store = redis_stores()
    await store.client.hset(store.key, mapping={"version": "1", "auth.json": "{not json"})
    with pytest.raises(StorageError, match=r"is not a valid auth\.json"):
        await store.load()
    await store.client.delete(store.key)
    await store.client.hset(store.key, mapping={"foo": "bar"})
    with pytest.raises(StorageError, match="holds no version"):
        await store.load()


# -- the lock and fencing -----------------------------------------------------------------


async def test_a_refresh_whose_lock_expired_never_overwrites_newer_tokens(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, oauth: OAuthConfig
) -> None:
    store_a, store_b = redis_stores(), redis_stores()
    await store_a.save(server.login())
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(_body: object) -> None:
        held.set()
        await release.wait()

    server.token_hook = hold
    async with AuthManager(store_a, oauth) as host_a:
        await host_a.auth()
        refresh = asyncio.create_task(host_a.refresh_token())
        await asyncio.wait_for(held.wait(), 10)
        # A's lock "expires" (a pause longer than its TTL), B takes it and logs in anew.
        await store_b.client.delete(store_b.lock_key)
        newer = server.login()
        async with store_b.lock():
            await store_b.save(newer)
            owner = await store_b.client.get(store_b.lock_key)
            release.set()
            assert await asyncio.wait_for(refresh, 10) is True
            # A's release left B's lock alone (compare-and-delete).
            assert await store_b.client.get(store_b.lock_key) == owner
        assert server.refreshes == 1  # A's answer came, and was dropped
        assert await store_b.load() == newer
        snapshot = host_a.auth_cached()
        assert snapshot is not None
        assert snapshot.data == newer
    assert await store_b.client.hget(store_b.key, "version") == b"2"


async def test_the_lock_is_renewed_while_held(
    redis_stores: Callable[..., RedisAuthStore],
) -> None:
    store = redis_stores(lock_ttl=0.3)
    other = redis_stores(lock_timeout=0.1)
    async with store.lock():
        owner = await store.client.get(store.lock_key)
        started = time.monotonic()
        checks = 0
        while time.monotonic() - started < 1.2:  # four TTLs
            assert await store.client.get(store.lock_key) == owner
            checks += 1
            await asyncio.sleep(0.05)
        assert checks >= 4
        with pytest.raises(StorageError, match="another host is refreshing the login"):
            async with other.lock():
                pass
    assert await store.client.exists(store.lock_key) == 0


async def test_the_lock_of_a_dead_holder_expires_after_its_ttl(
    redis_stores: Callable[..., RedisAuthStore],
) -> None:
    store = redis_stores()
    await store.client.set(store.lock_key, "dead-host", px=400)
    started = time.monotonic()
    async with store.lock():
        waited = time.monotonic() - started
        assert await store.client.get(store.lock_key) != b"dead-host"
    assert waited >= 0.2  # it waited for the TTL, it did not steal the lock


class _Gated(aioredis.Redis):
    """A real client that can hold one script's answer back, and lose a cancellation there.

    The script runs on the server at once; its answer is held until ``proceed`` is set, as if
    it were still on the wire. Losing a cancellation stands in for redis-py with a
    ``socket_timeout`` on Python 3.11, whose ``asyncio.wait_for`` around a send drops a
    cancellation that lands as the send completes (CPython issue 86296): nothing real does
    that on 3.12 and later, and the window is too narrow to hit on purpose. Everything else
    is the real client and server.
    """

    def __init__(self, url: str, script: str) -> None:
        super().__init__(connection_pool=aioredis.ConnectionPool.from_url(url))
        sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self.commands = {("EVALSHA", sha), ("EVAL", script)}  # EVAL: the server's first time
        self.answered = asyncio.Event()
        self.proceed = asyncio.Event()
        self.lose_cancellation = False
        self.lost = 0

    def client(self) -> _Gated:
        """The store's one-connection client for a write and its WAIT: this one, gated too."""
        return self

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        answer = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        if args[:2] in self.commands and not self.proceed.is_set():
            self.answered.set()
            try:
                await self.proceed.wait()
            except asyncio.CancelledError:
                if not self.lose_cancellation:
                    raise
                self.lost += 1
                await self.proceed.wait()
        return answer


def _renewals() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "aioscopedauth-redis-lock-renewal"]


async def test_leaving_the_lock_stops_its_renewal_even_where_a_cancellation_is_lost(
    redis_server: RedisServer, redis_name: str
) -> None:
    client = _Gated(redis_server.url, _RENEW_SCRIPT)
    client.lose_cancellation = True
    store = RedisAuthStore(client, name=redis_name, lock_ttl=0.06)

    async def hold() -> None:
        async with store.lock():
            await client.answered.wait()  # a renewal's answer is on its way back

    holder = asyncio.create_task(hold())
    try:
        await client.answered.wait()
        await asyncio.sleep(0)  # the holder leaves the lock while the renewal is in flight
        client.proceed.set()
        # It used to cancel the renewal, whose lost cancellation left it renewing the lock
        # for ever (and every other host waiting for it): a hang, so fail instead.
        await asyncio.wait_for(holder, 10)
        async with aioredis.from_url(redis_server.url) as probe:
            assert await probe.exists(store.lock_key) == 0
        assert _renewals() == []
        assert client.lost == 0  # asked to stop, never cancelled
    finally:
        holder.cancel()
        await store.aclose()
        await client.aclose(close_connection_pool=True)


async def test_a_caller_cancelled_while_taking_the_lock_leaves_it_free(
    redis_server: RedisServer, redis_name: str
) -> None:
    client = _Gated(redis_server.url, _ACQUIRE_SCRIPT)
    store = RedisAuthStore(client, name=redis_name, lock_ttl=60)
    entered = asyncio.Event()

    async def hold() -> None:
        async with store.lock():
            entered.set()

    holder = asyncio.create_task(hold())
    try:
        await client.answered.wait()  # the server set the lock; the answer is not back yet
        holder.cancel()
        await asyncio.wait({holder})
        assert holder.cancelled()
        assert not entered.is_set()
        async with aioredis.from_url(redis_server.url) as probe:
            assert await probe.exists(store.lock_key) == 1  # taken, for a caller now gone
            client.proceed.set()
            await store.aclose()  # waits for the release the cancelled caller left behind
            # Freed at once, not after its 60 s TTL.
            assert await probe.exists(store.lock_key) == 0
    finally:
        await store.aclose()
        await client.aclose(close_connection_pool=True)


async def test_a_command_that_gets_no_answer_fails_after_command_timeout(
    redis_server: RedisServer, redis_name: str
) -> None:
    client = _Gated(redis_server.url, _ACQUIRE_SCRIPT)  # never told to proceed
    store = RedisAuthStore(client, name=redis_name, command_timeout=0.2)
    try:
        with pytest.raises(
            StorageError, match=r"Could not take the refresh lock: .*\(no answer within 0.2 s\)"
        ):
            async with store.lock():
                pass
    finally:
        await store.aclose()
        await client.aclose(close_connection_pool=True)


def test_from_url_gives_the_client_no_socket_timeout(redis_server: RedisServer) -> None:
    store = RedisAuthStore.from_url(redis_server.url, socket_timeout=2.5)
    options = store.client.connection_pool.connection_kwargs
    assert options.get("socket_timeout") is None
    assert options["socket_connect_timeout"] == 5.0
    assert store.command_timeout == 2.5
    assert RedisAuthStore.from_url(redis_server.url).command_timeout == 5.0
    with pytest.raises(ConfigError, match="command_timeout must be a positive number"):
        RedisAuthStore.from_url(redis_server.url, command_timeout=0)


# -- propagation ----------------------------------------------------------------------------


async def test_other_hosts_adopt_new_tokens_at_once_without_round_trips(
    redis_stores: Callable[..., RedisAuthStore],
    server: FakeAuthServer,
    oauth: OAuthConfig,
    redis_server: RedisServer,
) -> None:
    store_a, store_b = redis_stores(), redis_stores()
    await store_a.save(server.login())
    async with AuthManager(store_a, oauth) as host_a, AuthManager(store_b, oauth) as host_b:
        first = await host_a.auth()
        assert await host_b.auth() == first
        await asyncio.wait_for(store_b.listening.wait(), 10)
        async with host_b.changes() as changes:
            assert await host_a.refresh_token() is True
            change = await _next_change(changes)
        assert change.reason == "reload"
        assert change.auth == host_a.auth_cached() != first
        assert store_b.notices == 1
        assert server.token_calls == 1
        # Steady state: auth() is served from memory, no command reaches the server.
        async with aioredis.from_url(redis_server.url) as probe:
            before = (await probe.info("stats"))["total_commands_processed"]
            baseline = (await probe.info("stats"))["total_commands_processed"] - before
            before = (await probe.info("stats"))["total_commands_processed"]
            for _ in range(200):
                assert await host_b.auth() == change.auth
            after = (await probe.info("stats"))["total_commands_processed"]
        assert after - before == baseline


async def test_a_logout_on_one_host_reaches_the_others(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, oauth: OAuthConfig
) -> None:
    store_a, store_b = redis_stores(), redis_stores()
    await store_a.save(server.login())
    async with AuthManager(store_a, oauth) as host_a, AuthManager(store_b, oauth) as host_b:
        await host_a.auth()
        await host_b.auth()
        await asyncio.wait_for(store_b.listening.wait(), 10)
        async with host_b.changes() as changes:
            assert await host_a.logout() is True
            change = await _next_change(changes)
        assert (change.reason, change.auth) == ("reload", None)
        assert host_b.auth_cached() is None


async def test_notices_carry_no_token(
    redis_stores: Callable[..., RedisAuthStore],
    server: FakeAuthServer,
    oauth: OAuthConfig,
    redis_server: RedisServer,
) -> None:
    store = redis_stores()
    await store.save(server.login(expired=True))
    async with aioredis.from_url(redis_server.url) as client, client.pubsub() as pubsub:
        await pubsub.subscribe(store.channel)
        assert await pubsub.get_message(timeout=5) is not None  # the subscription
        async with AuthManager(store, oauth) as manager:
            await manager.auth()  # refreshes and saves
            await manager.logout()
        messages = []
        while (message := await pubsub.get_message(timeout=1)) is not None:
            messages.append(message["data"])
    assert len(messages) == 2
    assert not any(_contains_secret(m) for m in messages)
    assert messages[0].startswith(b'{"event":"changed","version":2,"writer":"')


# -- encryption at rest ---------------------------------------------------------------------


async def test_a_sealed_login_is_unreadable_in_redis_and_its_dump(
    redis_stores: Callable[..., RedisAuthStore],
    server: FakeAuthServer,
    redis_server: RedisServer,
) -> None:
    key = os.urandom(32)
    store = redis_stores(encryption_key=key)
    login = server.login()
    await store.save(login)
    assert await redis_stores(encryption_key=key).load() == login
    raw = await store.client.hgetall(store.key)
    assert sorted(raw) == [b"at", b"sealed", b"version", b"writer"]
    assert not _contains_secret(b"".join(_b(v) for v in raw.values()))
    assert "sealed" in repr(store)
    await store.client.save()
    assert redis_server.data_dir is not None
    dump = (redis_server.data_dir / "dump.rdb").read_bytes()
    assert _b(raw[b"sealed"]) in dump
    assert not _contains_secret(dump)
    with pytest.raises(StorageError, match="sealed with another encryption_key"):
        await redis_stores(encryption_key=os.urandom(32)).load()
    with pytest.raises(StorageError, match="is encrypted: pass the fleet's encryption_key"):
        await redis_stores().load()


async def test_a_plain_login_is_read_with_a_key_and_sealed_on_the_next_write(
    redis_stores: Callable[..., RedisAuthStore],
    server: FakeAuthServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await redis_stores().save(server.login())
    sealed = redis_stores(encryption_key=os.urandom(32))
    login = await sealed.load()
    assert login is not None
    assert "is not encrypted; the next write seals it" in caplog.text
    await sealed.save(login)
    assert sorted(await sealed.client.hgetall(sealed.key)) == [
        b"at",
        b"sealed",
        b"version",
        b"writer",
    ]


# -- security: ACL users, TLS, errors -------------------------------------------------------


async def test_an_acl_user_from_the_url_works_and_a_wrong_password_is_clear(
    redis_stores: Callable[..., RedisAuthStore],
    server: FakeAuthServer,
    redis_server: RedisServer,
    redis_name: str,
    leak_guard: LeakGuard,
) -> None:
    password = "CANARY-acl-password-4d2c"
    leak_guard.plant(password)
    user = f"fleet-{redis_name}"
    async with aioredis.from_url(redis_server.url) as admin:
        await admin.execute_command(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            "ACL", "SETUSER", user, "reset", "on", f">{password}",
            "~aioscopedauth:*", "&aioscopedauth:*",
            "+@connection", "+hgetall", "+evalsha", "+eval", "+set", "+subscribe",
            "+unsubscribe", "+ping", "+client", "+wait",
            # what the scripts run (INFO: how many replicas the primary has):
            "+info",
            "+hget", "+hset", "+del", "+publish", "+get", "+pexpire", "+time",
        )  # fmt: skip
        try:
            host, port = redis_server.url.removeprefix("redis://").split("/")[0].split(":")
            url = f"redis://{user}:{password}@{host}:{port}/0"
            store = redis_stores(url)
            assert password not in repr(store)
            login = server.login()
            await store.save(login)
            assert await store.load() == login
            async with store.lock():
                pass
            listener = asyncio.Event()
            stop = store.watch(listener.set)
            await asyncio.wait_for(listener.wait(), 10)  # subscribed
            await stop()
            denied = redis_stores(url, prefix="other")
            with pytest.raises(StorageError, match="refused the credentials or the command"):
                await denied.save(login)
            wrong = redis_stores(f"redis://{user}:wrong-{password[::-1]}@{host}:{port}/0")
            with pytest.raises(StorageError, match="refused the credentials") as caught:
                await wrong.load()
            assert password not in str(caught.value)
        finally:
            await admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]  # same


async def test_redis_unreachable_is_a_clear_storage_error(
    redis_stores: Callable[..., RedisAuthStore], leak_guard: LeakGuard
) -> None:
    leak_guard.plant("CANARY-url-password-77")
    store = redis_stores("redis://me:CANARY-url-password-77@127.0.0.1:1/0")
    with pytest.raises(StorageError, match=r"Redis at redis://me@127.0.0.1:1/0 is unreachable"):
        await store.load()
    with pytest.raises(StorageError, match="is unreachable"):
        async with store.lock():
            pass
    assert "CANARY" not in repr(store)
    # The failed take's release keeps trying in the background (its request may have gone
    # out), but closing the store makes it try once more and stop: no wait of many seconds.
    await asyncio.wait_for(store.aclose(), 5)


# -- faults ---------------------------------------------------------------------------------


async def _restart(server: RedisServer) -> None:
    await asyncio.to_thread(server.restart)


@pytest.mark.parametrize("persistent", [False, True])
async def test_a_restarted_redis_keeps_the_fleet_logged_in(
    server: FakeAuthServer, oauth: OAuthConfig, persistent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(persistent=persistent) as own:
        async with (
            RedisAuthStore.from_url(own.url, name="fleet") as store_a,
            RedisAuthStore.from_url(own.url, name="fleet") as store_b,
            AuthManager(store_a, oauth) as host_a,
            AuthManager(store_b, oauth) as host_b,
        ):
            await store_a.save(server.login())
            await host_a.refresh_token()  # version 2
            await host_b.auth()
            await asyncio.wait_for(store_b.listening.wait(), 10)
            cached = host_b.auth_cached()
            await _restart(own)
            # While it was down and after: the cached token is served.
            assert await host_b.auth() == cached
            # The listener comes back by itself and rereads; the login is there again.
            await asyncio.wait_for(store_b.listening.wait(), 10)
            assert await store_a.load() == cached.data if cached else None
            assert await store_a.client.hget(store_a.key, "version") == b"2"
            restored = "writing it back" in caplog.text
            assert restored is not persistent
            async with host_b.changes() as changes:
                assert await host_a.refresh_token() is True
                change = await _next_change(changes)
            assert change.auth == host_a.auth_cached() != cached
    assert server.reuse_answers == 0
    assert server.refreshes == 2


async def test_with_redis_down_auth_serves_the_cache_and_a_refresh_fails_clearly(
    server: FakeAuthServer, oauth: OAuthConfig, own_redis: RedisServer
) -> None:
    async with (
        RedisAuthStore.from_url(own_redis.url) as store,
        AuthManager(store, oauth) as manager,
    ):
        await store.save(server.login())
        cached = await manager.auth()
        await asyncio.to_thread(own_redis.kill)
        assert await manager.auth() == cached
        with pytest.raises(StorageError, match="is unreachable") as caught:
            await manager.refresh_token()
        assert "a refresh works again once Redis is back" in str(caught.value)
        assert manager.auth_cached() == cached
        assert server.token_calls == 0  # no refresh token was spent blind
        await asyncio.to_thread(own_redis.start)
        assert await manager.refresh_token() is True
        assert manager.auth_cached() != cached
    assert server.refreshes == 1


async def test_a_redis_restored_from_an_old_dump_gets_the_newest_login_back(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer
) -> None:
    store = redis_stores()
    old, new = server.login(), server.login()
    await store.save(old)
    old_fields = await store.client.hgetall(store.key)
    await store.save(new)
    await store.client.delete(store.key)
    await store.client.hset(store.key, mapping={_b(k): _b(v) for k, v in old_fields.items()})
    assert await redis_stores().load() == old  # a host that never saw version 2
    assert await store.load() == new
    assert await store.client.hget(store.key, "version") == b"2"


async def test_a_logout_is_not_undone_by_a_lost_marker(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer
) -> None:
    store = redis_stores()
    await store.save(server.login())
    assert await store.delete() is True
    await store.client.delete(store.key)  # the server lost everything
    assert await store.load() is None
    assert await store.client.exists(store.key) == 0


# -- the network misbehaving: a real server behind a proxy that holds or drops --------------


async def test_a_lock_whose_answer_comes_after_command_timeout_is_freed_at_once(
    redis_server: RedisServer, redis_name: str
) -> None:
    async with TcpProxy(redis_server.port) as proxy:
        store = RedisAuthStore.from_url(
            proxy.url(), name=redis_name, command_timeout=1.0, lock_ttl=60
        )
        try:
            assert await store.load() is None  # connected: only the lock's answer is late
            proxy.hold_replies()
            with pytest.raises(
                StorageError, match=r"Could not take the refresh lock: .*no answer within 1 s"
            ):
                async with store.lock():
                    pytest.fail("the lock was entered")
            assert proxy.held.is_set()  # the server ran the script: it set the lock for us
            proxy.release_replies()
            await store.aclose()  # waits for the release the failed caller left behind
            async with aioredis.from_url(redis_server.url) as probe:
                # Freed at once, not after its 60 s TTL: another host can refresh.
                assert await probe.exists(store.lock_key) == 0
            another = RedisAuthStore.from_url(redis_server.url, name=redis_name, lock_timeout=1)
            async with another, another.lock():
                pass
        finally:
            proxy.release_replies()
            await store.aclose()


async def test_a_lock_request_that_reaches_the_server_after_its_caller_gave_up_takes_nothing(
    redis_server: RedisServer, redis_name: str
) -> None:
    async with TcpProxy(redis_server.port) as proxy:
        store = RedisAuthStore.from_url(
            proxy.url(), name=redis_name, command_timeout=1.0, lock_ttl=60
        )
        try:
            async with store.lock():  # connected, and the server knows the lock's script
                pass
            assert proxy.hold_requests() == 1  # that connection's next request is slow
            with pytest.raises(
                StorageError, match=r"Could not take the refresh lock: .*no answer within 1 s"
            ):
                async with store.lock():
                    pytest.fail("the lock was entered")
            assert proxy.requests_held.is_set()
            # The caller's release went out on a new connection and is done ...
            await store.aclose()
            proxy.answered.clear()
            proxy.release_requests()  # ... and now the take reaches the server, late
            await asyncio.wait_for(proxy.answered.wait(), 10)  # the server ran it
            async with aioredis.from_url(redis_server.url) as probe:
                # It took nothing: otherwise no host could refresh for 60 s.
                assert await probe.exists(store.lock_key) == 0
        finally:
            proxy.release_requests()
            await store.aclose()


async def test_a_listener_whose_connection_died_silently_notices_and_resubscribes(
    redis_stores: Callable[..., RedisAuthStore],
    redis_server: RedisServer,
    redis_name: str,
    server: FakeAuthServer,
) -> None:
    writer = redis_stores()
    async with TcpProxy(redis_server.port) as proxy:
        store = RedisAuthStore.from_url(
            proxy.url(), name=redis_name, command_timeout=2.0, ping_interval=0.3
        )
        fired = 0
        fire = asyncio.Event()

        def callback() -> None:
            nonlocal fired
            fired += 1
            fire.set()

        stop = store.watch(callback)
        try:
            await asyncio.wait_for(fire.wait(), 10)  # subscribed (and told to catch up)
            fire.clear()
            assert proxy.drop_silently() == 1  # the listener's connection: no FIN, no RST
            await writer.save(server.login())  # its notice goes into the black hole
            # The listener finds out by itself (its PING gets no answer), subscribes again
            # on a new connection and says so, so the missed notice is caught up on.
            await asyncio.wait_for(fire.wait(), 10)
            assert proxy.connections == 2
            await asyncio.wait_for(store.listening.wait(), 10)
            fire.clear()
            await writer.save(server.login())
            await asyncio.wait_for(fire.wait(), 10)  # notices arrive again
            assert store.notices == 1
            assert fired == 3
        finally:
            await stop()
            await store.aclose()


# -- a restart: the newest login in time wins, not the highest version ---------------------


async def test_a_login_saved_after_a_restart_is_never_overwritten_by_an_older_memory(
    server: FakeAuthServer, own_redis: RedisServer
) -> None:
    subscriptions = 0
    subscribed = asyncio.Event()

    def count() -> None:
        nonlocal subscriptions
        subscriptions += 1
        subscribed.set()

    async with RedisAuthStore.from_url(own_redis.url, name="fleet") as old_host:
        await old_host.save(server.login())
        remembered = server.login()
        await old_host.save(remembered)  # version 2, remembered by this host
        stop = old_host.watch(count)
        await asyncio.wait_for(subscribed.wait(), 10)
        await _restart(own_redis)  # it comes back empty
        while subscriptions < 2:  # the listener is back (and rereads nothing: no manager)
            subscribed.clear()
            await asyncio.wait_for(subscribed.wait(), 10)
        subscribed.clear()
        newer = server.login()
        async with RedisAuthStore.from_url(own_redis.url, name="fleet") as new_host:
            await new_host.save(newer)  # a new login after the restart: version 1
        await asyncio.wait_for(subscribed.wait(), 10)
        assert old_host.notices == 1  # its notice counts, although its version is lower
        assert await old_host.load() == newer  # it used to write version 2 back over it
        async with RedisAuthStore.from_url(own_redis.url, name="fleet") as third:
            assert await third.load() == newer
        await stop()
    assert remembered != newer


async def test_a_restarted_empty_redis_gets_the_newest_remembered_login_back(
    server: FakeAuthServer, own_redis: RedisServer
) -> None:
    async with (
        RedisAuthStore.from_url(own_redis.url, name="fleet") as behind,
        RedisAuthStore.from_url(own_redis.url, name="fleet") as ahead,
    ):
        first, second = server.login(), server.login()
        await behind.save(first)
        assert await ahead.load() == first
        await ahead.save(second)  # "behind" never read it
        await _restart(own_redis)
        assert await behind.load() == first  # it writes back what it remembers ...
        assert await ahead.load() == second  # ... and the newer memory wins over it
        assert await behind.load() == second
        newest = server.login()
        await behind.save(newest)
        assert await ahead.load() == newest


# -- bad input and misuse -------------------------------------------------------------------


async def test_a_store_used_from_a_second_event_loop_says_so(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer
) -> None:
    store = redis_stores()
    await store.save(server.login())

    def other_loop(use: Callable[[], Any]) -> None:
        async def run() -> None:
            await use()

        asyncio.run(run())

    async def enter_lock() -> None:
        async with store.lock():
            pass

    async def watch() -> None:
        store.watch(lambda: None)

    expected = (
        "This RedisAuthStore was first used on another event loop. A store (and its Redis "
        "client) belongs to one event loop: make one store per loop; they share the login "
        "through Redis."
    )
    for use in (store.load, lambda: store.save(server.login()), enter_lock, watch):
        with pytest.raises(ConfigError) as info:
            await asyncio.to_thread(other_loop, use)
        assert str(info.value) == expected
    assert await store.load() is not None  # still fine on its own loop


# -- moving a machine's login into the fleet -----------------------------------------------


async def test_a_login_moves_from_a_file_and_the_machine_is_logged_out(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, home: Path
) -> None:
    store = redis_stores()
    login = server.login()
    path = write_auth_json(home, login)
    assert await store.move_login_from(FileAuthStore(home)) is True
    assert await store.load() == login
    # The machine is logged out: Codex (or this library) there has nothing left to spend.
    assert not path.exists()
    assert await FileAuthStore(home).load() is None
    assert await store.move_login_from(FileAuthStore(home)) is False  # nothing to move
    assert await store.load() == login


async def test_a_move_never_replaces_another_fleet_login_unless_told(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, home: Path
) -> None:
    store = redis_stores()
    fleets = server.login()
    await store.save(fleets)
    path = write_auth_json(home, server.login())
    before = path.read_bytes()
    with pytest.raises(StorageError, match="already holds another login: nothing was moved"):
        await store.move_login_from(FileAuthStore(home))
    assert path.read_bytes() == before
    assert await store.load() == fleets
    assert await store.move_login_from(FileAuthStore(home), replace=True) is True
    assert await store.load() == AuthDotJson.from_json(before)
    assert not path.exists()


class _GatedSecondLoad(GatedFileStore):
    """Holds the move's second read (under the locks), so the file can change right after."""

    loads = 0

    async def load(self) -> AuthDotJson | None:
        self.loads += 1
        self.hold_next_load = self.loads == 2
        return await super().load()


async def test_a_login_refreshed_at_the_source_during_the_move_is_the_one_moved(
    redis_stores: Callable[..., RedisAuthStore], server: FakeAuthServer, home: Path
) -> None:
    store = redis_stores()
    write_auth_json(home, server.login())
    source = _GatedSecondLoad(home)
    move = asyncio.create_task(store.move_login_from(source))
    await asyncio.wait_for(source.holding.wait(), 10)
    newer = server.login()
    path = write_auth_json(home, newer)  # Codex refreshed there: the copy's token is spent
    source.release.set()
    assert await asyncio.wait_for(move, 10) is True
    assert await store.load() == newer  # not the spent one
    assert not path.exists()


async def test_a_command_on_a_connection_that_died_silently_fails_once_then_works(
    redis_server: RedisServer, redis_name: str, server: FakeAuthServer
) -> None:
    async with TcpProxy(redis_server.port) as proxy:
        store = RedisAuthStore.from_url(proxy.url(), name=redis_name, command_timeout=1.0)
        async with store:
            login = server.login()
            await store.save(login)
            assert proxy.drop_silently() == 1
            with pytest.raises(StorageError, match=r"is unreachable \(no answer within 1 s\)"):
                await store.load()
            # The dead connection was thrown away, not put back in the pool.
            assert await store.load() == login
            assert proxy.connections == 2


async def test_a_subscription_that_is_never_confirmed_is_tried_again(
    redis_stores: Callable[..., RedisAuthStore],
    redis_server: RedisServer,
    redis_name: str,
    server: FakeAuthServer,
) -> None:
    writer = redis_stores()
    async with TcpProxy(redis_server.port) as proxy:
        # The listener's first connections lead nowhere: the connection's handshake (or the
        # wait for the subscription's confirmation) gives up within command_timeout.
        proxy.black_hole = True
        store = RedisAuthStore.from_url(
            proxy.url(), name=redis_name, command_timeout=0.5, ping_interval=5
        )
        subscribed = asyncio.Event()
        stop = store.watch(subscribed.set)
        try:
            while proxy.connections < 2:  # it gave up on the first one and tried again
                proxy.accepted.clear()
                await asyncio.wait_for(proxy.accepted.wait(), 10)
            assert not subscribed.is_set()
            proxy.black_hole = False
            await asyncio.wait_for(subscribed.wait(), 10)
            subscribed.clear()
            await writer.save(server.login())
            await asyncio.wait_for(subscribed.wait(), 10)
            assert store.notices == 1
        finally:
            await stop()
            await store.aclose()
