"""Share one login across a fleet of hosts through Redis (or Valkey)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig
from aioscopedauth.redis import RedisAuthStore

if TYPE_CHECKING:
    from pathlib import Path


async def move_login_to_redis(home: Path, redis_url: str) -> None:
    """Once, from a machine that is logged in: move its auth.json into Redis.

    A move, not a copy: the refresh token is single-use, so the machine is logged out once
    the fleet has the login (two live copies would spend it twice and log both out).
    """
    async with RedisAuthStore.from_url(redis_url, name="team-bot") as store:
        if not await store.move_login_from(FileAuthStore(home)):
            msg = "Not logged in here: run `codex login` first."
            raise SystemExit(msg)


async def main(home: Path, redis_url: str, oauth: OAuthConfig) -> None:
    await move_login_to_redis(home, redis_url)
    # Two hosts of the fleet (two machines in real life): the same URL and name, nothing else.
    async with (
        RedisAuthStore.from_url(redis_url, name="team-bot") as store_a,
        RedisAuthStore.from_url(redis_url, name="team-bot") as store_b,
        AuthManager(store_a, oauth) as host_a,
        AuthManager(store_b, oauth) as host_b,
    ):
        before = await host_b.auth()
        async with host_b.changes() as changes:
            await host_a.refresh_token()  # host A refreshes (once, for everyone) ...
            change = await anext(changes)  # ... and host B hears of it at once
        print(f"host B adopted host A's new token: {change.auth != before} ({change.reason})")
        print(f"both hosts send the same token: {host_a.auth_cached() == host_b.auth_cached()}")
