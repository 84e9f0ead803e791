"""One process (or "host") of the fleet runs: requests to the resource for a while, then a tally.

Usage: python fleet_worker.py file HOME | redis URL NAME, then ISSUER CLIENT_ID RESOURCE SECONDS.
It logs in to nothing: the login is already in the store. It prints one JSON line: the final
status of every request (through ``AuthMiddleware``) and how many 401 recoveries it took.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

import aiohttp

from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, OAuthConfig, RecoveryEvent

if TYPE_CHECKING:
    from aioscopedauth import AuthStore

TASKS = 2
"""Concurrent requesters per process: enough to race each other, light on a 2-core machine."""


async def main(argv: list[str]) -> None:
    kind, where, *rest = argv
    store: AuthStore
    if kind == "file":
        store = FileAuthStore(where)
    else:
        from aioscopedauth.redis import RedisAuthStore  # noqa: PLC0415 -- the optional extra

        name, *rest = rest
        store = RedisAuthStore.from_url(where, name=name)
    issuer, client_id, resource, seconds = rest
    config = await OAuthConfig.discover(issuer, client_id=client_id)
    statuses: Counter[int] = Counter()
    recoveries: list[RecoveryEvent] = []
    async with AuthManager(store, config) as manager:
        middleware = AuthMiddleware(manager, on_event=recoveries.append)
        async with aiohttp.ClientSession(middlewares=(middleware,)) as http:
            deadline = time.monotonic() + float(seconds)

            async def requester() -> None:
                while time.monotonic() < deadline:
                    async with http.get(resource) as response:
                        statuses[response.status] += 1

            await asyncio.gather(*(requester() for _ in range(TASKS)))
    close = getattr(store, "aclose", None)
    if close is not None:
        await close()
    print(json.dumps({"statuses": statuses, "recoveries": len(recoveries)}))  # noqa: T201 -- the tally


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
