"""Share one login across a fleet of hosts through Redis (or Valkey)."""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig
from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import FakeAuthServer


async def move_login_to_redis(home: Path, redis_url: str, name: str = "team-bot") -> None:
    """Once, from a machine that is logged in: move its auth.json into Redis.

    A move, not a copy: the refresh token is single-use, so the machine is logged out once
    the fleet has the login (two live copies would spend it twice and log both out).
    """
    async with RedisAuthStore.from_url(redis_url, name=name) as store:
        if not await store.move_login_from(FileAuthStore(home)):
            msg = "Not logged in here: run `codex login` first."
            raise SystemExit(msg)


async def main(home: Path, redis_url: str, oauth: OAuthConfig, name: str = "team-bot") -> None:
    await move_login_to_redis(home, redis_url, name)
    # Two hosts of the fleet (two machines in real life): the same URL and name, nothing else.
    async with (
        RedisAuthStore.from_url(redis_url, name=name) as store_a,
        RedisAuthStore.from_url(redis_url, name=name) as store_b,
        AuthManager(store_a, oauth) as host_a,
        AuthManager(store_b, oauth) as host_b,
    ):
        before = await host_b.auth()
        async with host_b.changes() as changes:
            await host_a.refresh_token()  # host A refreshes (once, for everyone) ...
            change = await anext(changes)  # ... and host B hears of it at once
        print(f"host B adopted host A's new token: {change.auth != before} ({change.reason})")
        print(f"both hosts send the same token: {host_a.auth_cached() == host_b.auth_cached()}")


async def try_it(redis_url: str) -> None:
    """Run :func:`main` on a Redis, with the test kit's token endpoint and a temporary home.

    Your own login is never read or spent; the login the example puts in Redis has a name of
    its own and is deleted at the end.
    """
    name = f"fleet-example-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeAuthServer() as server:  # stands in for the real token endpoint
            home = Path(tmp) / "codex-home"
            await FileAuthStore(home).save(server.login())  # what `codex login` would save
            try:
                await main(home, redis_url, OAuthConfig(server.token_url, server.client_id), name)
            finally:
                async with RedisAuthStore.from_url(redis_url, name=name) as store:
                    # The login, its lock and the lock's marks: every key starts with its key.
                    keys = [key async for key in store.client.scan_iter(match=f"{store.key}*")]
                    if keys:
                        await store.client.delete(*keys)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} REDIS_URL")
    asyncio.run(try_it(sys.argv[1]))
