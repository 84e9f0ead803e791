"""Section 7: a fleet of host processes that share one login through Redis (``bench/run.py``).

16 hosts (processes that share only the Redis URL, each with its own home), 1-second access
tokens, single-use refresh tokens, 2,000 requests each. Measured: reuse answers, refreshes
per expiry, how long the other hosts take to adopt a new token (from the writer's own adoption
to theirs, same clock), and Redis commands per request, with expiries and in steady state
(1-hour tokens), from the server's ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from _common import Section

from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import FakeAuthServer, RedisServer

if TYPE_CHECKING:
    import argparse

_DOUBLE_GAP = 0.4
"""Seconds: two refreshes closer than this refreshed one expiry twice (see bench_fleet)."""

WORKER = textwrap.dedent(
    """
    import asyncio, hashlib, json, sys, time
    import aiohttp
    from aioscopedauth import AuthManager, AuthMiddleware, OAuthConfig
    from aioscopedauth.redis import RedisAuthStore

    async def watch(manager, events):
        async with manager.changes() as changes:
            async for change in changes:
                token = "" if change.auth is None else change.auth.token
                digest = hashlib.sha256(token.encode()).hexdigest()[:16]
                events.append((time.time(), change.reason, digest))

    async def main(url, token_url, api_url, count, client_id):
        events, failed = [], 0
        started = ended = 0.0
        store = RedisAuthStore.from_url(url, name="bench")
        async with store, AuthManager(store, OAuthConfig(token_url, client_id)) as manager:
            watcher = asyncio.create_task(watch(manager, events))
            origin = api_url.rsplit("/api", 1)[0]
            middleware = AuthMiddleware(manager, origins=[origin])
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
                started = time.time()
                for _ in range(count):
                    async with session.get(api_url) as response:
                        await response.read()
                        failed += response.status != 200
                ended = time.time()
            await asyncio.sleep(0.2)  # let the last notices arrive before counting
            watcher.cancel()
        print(json.dumps({"failed": failed, "events": events, "window": [started, ended]}))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
    """
)


async def _commands(url: str) -> int:
    async with aioredis.from_url(url) as client:
        stats = await client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name not in {"cmdstat_info", "cmdstat_hello", "cmdstat_client|setinfo"}
    )


async def _phase(
    redis_url: str, ttl: timedelta, hosts: int, requests: int, tmp: Path
) -> dict[str, Any]:
    async with FakeAuthServer(access_ttl=ttl) as server:
        async with RedisAuthStore.from_url(redis_url, name="bench") as store:
            await store.save(server.login())
        before = await _commands(redis_url)
        started = time.perf_counter()
        procs = []
        for host in range(hosts):
            home = tmp / f"{ttl.total_seconds():g}-{host}"
            home.mkdir()
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    WORKER,
                    redis_url,
                    server.token_url,
                    f"{server.url}/api/work",
                    str(requests),
                    server.client_id,
                    cwd=home,
                    env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        outputs = [json.loads((await p.communicate())[0]) for p in procs]
        elapsed = time.perf_counter() - started
        commands = await _commands(redis_url) - before
        async with aioredis.from_url(redis_url) as client:
            await client.delete("aioscopedauth:{bench}")
    return {
        "outputs": outputs,
        "seconds": elapsed,
        "commands": commands,
        "refreshes": server.refreshes,
        "refresh_times": list(server.refresh_times),
        "reuse_answers": server.reuse_answers,
        "requests": hosts * requests,
    }


def _adoption_ms(outputs: list[dict[str, Any]]) -> list[float]:
    # Only refreshes made while every host was running (not starting up or done): a host
    # still loading adopts at its first load, which says nothing about propagation.
    first = max(o["window"][0] for o in outputs)
    last = min(o["window"][1] for o in outputs)
    written = {
        digest: moment
        for output in outputs
        for moment, reason, digest in output["events"]
        if reason == "refresh" and first <= moment <= last
    }
    latencies = []
    for output in outputs:
        seen: set[str] = set()
        for moment, reason, digest in output["events"]:
            if reason == "reload" and digest in written and digest not in seen:
                seen.add(digest)
                # The notice may beat the writer's own bookkeeping by microseconds: 0, not < 0.
                latencies.append(max(0.0, (moment - written[digest]) * 1000))
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def bench_fleet(hosts: int, requests: int) -> dict[str, Any]:
    """Run both phases on an embedded server; return the figures for ``results.json``."""
    ttl = timedelta(seconds=1)
    with tempfile.TemporaryDirectory() as tmp_name, RedisServer() as server:
        tmp = Path(tmp_name)
        expiring = await _phase(server.url, ttl, hosts, requests, tmp)
        steady = await _phase(server.url, timedelta(hours=1), hosts, requests, tmp)
    # A token minted at t is stale at exp - (exp - iat) / 4 with iat = floor(t): between t + 0.5
    # and t + 0.75 s. So two refreshes of one expiry are the only way to get two refreshes less
    # than 0.5 s apart (0.4 with a margin for answer times): count expiries as refreshes minus
    # those. (Active time / 0.75 s, the other estimate, overcounts nothing but undercounts the
    # expiries, since iat is truncated.)
    times = expiring["refresh_times"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    doubles = sum(gap < _DOUBLE_GAP for gap in gaps)
    expiries = expiring["refreshes"] - doubles
    windows = [o["window"] for o in expiring["outputs"]]
    active = max(end for _, end in windows) - min(start for start, _ in windows)
    adoption = _adoption_ms(expiring["outputs"])
    return {
        "hosts": hosts,
        "requests_each": requests,
        "seconds": expiring["seconds"],
        "failed_requests": sum(o["failed"] for o in expiring["outputs"]),
        "reuse_answers": expiring["reuse_answers"],
        "refreshes": expiring["refreshes"],
        "refreshes_per_expiry": expiring["refreshes"] / max(expiries, 1),
        "double_refreshes": doubles,
        "min_refresh_gap_s": min(gaps, default=float("nan")),
        "active_seconds": active,
        "refreshes_per_0_75_s_active": expiring["refreshes"] / max(active / 0.75, 1),
        "adoptions": len(adoption),
        "adoption_p50_ms": _percentile(adoption, 0.5),
        "adoption_p99_ms": _percentile(adoption, 0.99),
        "adoption_mean_ms": statistics.fmean(adoption) if adoption else float("nan"),
        "redis_commands_per_request": expiring["commands"] / expiring["requests"],
        "steady_redis_commands_per_request": steady["commands"] / steady["requests"],
        "steady_redis_commands": steady["commands"],
        "steady_failed_requests": sum(o["failed"] for o in steady["outputs"]),
        "target": (
            "reuse_answers == 0, refreshes_per_expiry <= 1.05, adoption p99 <= 100 ms, "
            "steady commands per request ~ 0"
        ),
    }


def print_fleet(f: dict[str, Any]) -> None:
    """Print section 7."""
    print(
        f"\n7. Fleet through Redis: {f['hosts']} hosts x {f['requests_each']} requests, 1 s "
        f"tokens, single-use refresh: reuse answers {f['reuse_answers']} (target 0), refreshes "
        f"{f['refreshes']}, per expiry {f['refreshes_per_expiry']:.2f} (target <= 1.05; "
        f"{f['double_refreshes']} refreshed twice, closest two {f['min_refresh_gap_s']:.2f} s "
        f"apart), failed {f['failed_requests']}, {f['seconds']:.1f} s\n"
        f"   adoption by the other hosts: p50 {f['adoption_p50_ms']:.1f} ms, p99 "
        f"{f['adoption_p99_ms']:.1f} ms over {f['adoptions']} adoptions (target p99 <= 100 ms)\n"
        f"   Redis commands per request: {f['redis_commands_per_request']:.3f} with 1 s expiries, "
        f"{f['steady_redis_commands_per_request']:.4f} in steady state "
        f"({f['steady_redis_commands']} commands in all: each host's first load and "
        "subscription; target ~ 0)"
    )


async def _bench_fleet(args: argparse.Namespace) -> dict[str, Any]:
    return await bench_fleet(args.fleet_hosts, args.fleet_requests)


def arguments(parser: argparse.ArgumentParser) -> None:
    """The options of section 7."""
    parser.add_argument("--fleet-hosts", type=int, default=16)
    parser.add_argument("--fleet-requests", type=int, default=2000)


SECTION = Section("fleet", _bench_fleet, print_fleet, arguments=arguments)
