"""Several real processes share one login whose refresh tokens are single-use."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import textwrap
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from aioscopedauth.testing import FakeAuthServer, write_auth_json

from processes import spawned

if TYPE_CHECKING:
    from pathlib import Path

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import aiohttp
    from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig

    async def call(session, url, auth):
        async with session.get(url, headers=auth.headers()) as response:
            await response.read()
            return response.status

    async def main(home, token_url, api_url, seconds):
        oauth = OAuthConfig(token_url, "test-client")
        ok = failed = recoveries = 0
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
        print(json.dumps({"ok": ok, "failed": failed, "recoveries": recoveries, "final": final}))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
    """
)


async def _run_workers(
    home: Path, server: FakeAuthServer, count: int, seconds: float
) -> list[dict[str, int]]:
    results = []
    async with contextlib.AsyncExitStack() as stack:
        procs = [
            await stack.enter_async_context(
                spawned(
                    sys.executable,
                    "-c",
                    WORKER,
                    str(home),
                    server.token_url,
                    f"{server.url}/api/ping",
                    str(seconds),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
            for _ in range(count)
        ]
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), seconds + 120)
            assert proc.returncode == 0, err.decode()
            results.append(json.loads(out))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
async def test_processes_share_a_rotating_login_without_reuse(
    tmp_path: Path, processes: int
) -> None:
    home = tmp_path / "home"
    async with FakeAuthServer(access_ttl=timedelta(seconds=1)) as server:
        write_auth_json(home, server.login())
        results = await _run_workers(home, server, processes, seconds=5.0)
    assert server.reuse_answers == 0
    assert [r["final"] for r in results] == [200] * processes
    assert [r["failed"] for r in results] == [0] * processes
    assert all(r["ok"] > 0 for r in results)
    # Many refresh cycles happened, each spent once, and never one per process per expiry: a
    # token is refreshed only once it is stale, at least a quarter of its lifetime (minus the
    # whole second that `iat` may be truncated by) after it was minted, so two refreshes are
    # never closer than that, however loaded the machine is. (Counting refreshes per second
    # of run time instead failed on loaded machines: the processes start at different times.)
    assert server.refreshes >= 4
    gaps = [b - a for a, b in itertools.pairwise(server.refresh_times)]
    assert min(gaps) > 0.4, f"a refresh followed another after {min(gaps):.3f} s"
