"""Benchmarks of aioscopedauth against bare aiohttp and its peers, measured side by side.

Run with ``nox -s bench`` (or ``python bench/run.py``). Every figure is measured in interleaved
rounds next to its baseline from the same run (the library and its baseline alternate within a
round, and which one goes first alternates between rounds), on loopback, and is reported as the
median over rounds with the min-max range. Ratios are computed from the medians.
``bench/results.json`` gets the numbers; ``docs/_static/bench/`` gets the charts the docs show
(when matplotlib is installed). These are measurements, not tests: nothing here fails on a slow
machine.

The run is a list of sections (:data:`SECTIONS`); each measures, prints its table and draws its
charts on its own, so another section (a fleet store, say) is one more entry in that list.
``--only NAME`` runs some of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from fleet import bench_fleet, print_fleet

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    CommandBearerRefresher,
    FileAuthStore,
    MemoryAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
)
from aioscopedauth.testing import FakeAuthServer, write_token_script

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

HERE = Path(__file__).parent
CHARTS = HERE.parent / "docs" / "_static" / "bench"

# -- statistics -----------------------------------------------------------------------------


def spread(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the samples of one figure over rounds."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": list(samples),
    }


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """The ratio of the medians, with the range of the per-round ratios beside it."""
    per_round = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return {
        "of_medians": statistics.median(numerator) / statistics.median(denominator),
        "per_round_min": min(per_round),
        "per_round_max": max(per_round),
    }


def fmt(s: dict[str, Any], unit: str = "", digits: int = 0) -> str:
    """``median [min-max] unit``."""
    f = f"{{:.{digits}f}}"
    text = f"{f.format(s['median'])} [{f.format(s['min'])}-{f.format(s['max'])}]"
    return f"{text} {unit}".rstrip()


def interleaved(round_index: int, pair: Sequence[str]) -> list[str]:
    """The order of a pair in a round: alternates, so neither always runs first."""
    return list(pair) if round_index % 2 == 0 else list(reversed(pair))


def settle() -> None:
    """Collect garbage between measurements, so one run's garbage is not the next one's cost."""
    gc.collect()


_GC_CYCLE = 700 * 11
"""Tracked allocations between two full collections, with CPython's default thresholds."""


def gc_phase(round_index: int, salt: int) -> list[list[object]]:
    """Collect garbage, then move the collector to a seeded phase of its cycle.

    A storm allocates about as many objects as a full cycle of the garbage collector, so a
    ``gc.collect()`` right before it would decide which client pays for a full collection (up
    to 100 ms here): the one that allocates just over the threshold. Instead both clients of a
    round start at the same phase, and the phase changes from round to round, as in an app.
    Keep the returned ballast alive until the measurement ends.
    """
    gc.collect()
    phase = random.Random(round_index * 7919 + salt).randrange(_GC_CYCLE)  # noqa: S311 -- a phase
    return [[] for _ in range(phase)]


# -- 1. steady state ------------------------------------------------------------------------

# A plain API in its own process, so client and server do not share one event loop.
API_SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def handle(request):
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/api", handle)

    runner = web.AppRunner(app, access_log=None)

    async def main():
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    import asyncio
    asyncio.run(main())
    """
)


async def _drive(send: Callable[[], Awaitable[None]], total: int, concurrency: int) -> float:
    """Send ``total`` requests with ``concurrency`` workers; return requests per second."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def _rps_bare(url: str, token: str, total: int, concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> None:
            async with session.get(url, headers=headers) as response:
                await response.read()

        return await _drive(send, total, concurrency)


async def _rps_middleware(url: str, manager: AuthManager, total: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    middleware = AuthMiddleware(manager)
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:

        async def send() -> None:
            async with session.get(url) as response:
                await response.read()

        return await _drive(send, total, concurrency)


async def _rps_httpx(url: str, token: str, total: int, concurrency: int) -> float | str:
    try:
        import httpx  # noqa: PLC0415 -- an optional peer
    except ImportError:
        return "not installed"

    class BearerAuth(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:  # noqa: ANN401 -- httpx's generator
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(auth=BearerAuth(), limits=limits) as client:

        async def send() -> None:
            response = await client.get(url)
            await response.aread()

        return await _drive(send, total, concurrency)


async def _rps_google(url: str, token: str, total: int, concurrency: int) -> float | str:
    try:
        from google.auth.transport._aiohttp_requests import (  # noqa: PLC0415 -- optional peer
            AuthorizedSession,
        )
        from google.oauth2._credentials_async import Credentials  # noqa: PLC0415
    except ImportError:
        return "not installed"
    credentials = Credentials(token=token)  # type: ignore[no-untyped-call]  # google-auth is untyped
    connector = aiohttp.TCPConnector(limit=concurrency)
    try:
        session_cm = AuthorizedSession(credentials, connector=connector)  # type: ignore[no-untyped-call]
        async with session_cm as session:

            async def send() -> None:
                response = await session.request("GET", url)
                await response.read()

            return await _drive(send, total, concurrency)
    except Exception as exc:  # noqa: BLE001 -- a peer that does not run here is reported, not fatal
        return f"did not run: {type(exc).__name__}"


@dataclass(frozen=True)
class _Api:
    """Where the steady-state requests go, and with what."""

    url: str
    token: str
    manager: AuthManager


async def _steady_state(
    api: _Api, *, total: int, concurrency: int, rounds: int
) -> dict[str, list[float]]:
    """Requests per second, bare and through the middleware, in interleaved rounds."""
    url, token, manager = api.url, api.token, api.manager
    samples: dict[str, list[float]] = {"bare": [], "middleware": []}
    for index in range(rounds):
        for name in interleaved(index, ("bare", "middleware")):
            settle()
            if name == "bare":
                value = await _rps_bare(url, token, total, concurrency)
            else:
                value = await _rps_middleware(url, manager, total, concurrency)
            samples[name].append(value)
    return samples


async def bench_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Section 1: requests per second with a cached token, against bare aiohttp and peers.

    The headline at ``--concurrency`` (32) plus the same measurement at concurrency 1 and 256
    (how the cost grows with concurrency).
    """
    # Popen only starts the server; reading its one line of output is immediate.
    with subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", API_SERVER], stdout=subprocess.PIPE, text=True
    ) as server:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/api"
        async with FakeAuthServer() as tokens:
            login = tokens.login()
            assert login.tokens is not None
            token = login.tokens.access_token
            store = MemoryAuthStore()
            await store.save(login)
            oauth = OAuthConfig(tokens.token_url, tokens.client_id)
            async with AuthManager(store, oauth) as manager:
                rounds, total, concurrency = args.rounds, args.requests, args.concurrency
                api = _Api(url, token, manager)
                main = await _steady_state(api, total=total, concurrency=concurrency, rounds=rounds)
                peers: dict[str, list[float]] = {"httpx": [], "google-auth": []}
                notes: dict[str, str] = {}
                for _ in range(args.peer_rounds):
                    for name, func in (("httpx", _rps_httpx), ("google-auth", _rps_google)):
                        settle()
                        value = await func(url, token, args.peer_requests, concurrency)
                        if isinstance(value, str):
                            notes[name] = value
                        else:
                            peers[name].append(value)
                scaling: dict[str, Any] = {}
                for level in args.scaling_concurrency:
                    # The other levels: half the requests, --scaling-rounds (a shorter run).
                    level_total = total if level == concurrency else min(total // 2, 2_000 * level)
                    if level == concurrency:
                        samples = main
                    else:
                        samples = await _steady_state(
                            api,
                            total=level_total,
                            concurrency=level,
                            rounds=args.scaling_rounds,
                        )
                    scaling[str(level)] = {
                        "requests_per_round": level_total,
                        "rounds": len(samples["bare"]),
                        "rps": {name: spread(v) for name, v in samples.items()},
                        "ratio_to_bare": ratio(samples["middleware"], samples["bare"]),
                    }
        server.terminate()
    everything = {**main, **{k: v for k, v in peers.items() if v}}
    best = {k: max(v) for k, v in everything.items()}
    medians = {k: statistics.median(v) for k, v in everything.items()}
    return {
        # The keys of earlier versions, kept so results compare across versions.
        "requests_per_round": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "rps_best": best,
        "rps_median": medians,
        "ratio_to_bare": {k: v / best["bare"] for k, v in best.items()},
        "notes": notes,
        "target": "middleware >= 0.97 of bare (median of rounds)",
        # Added: the spread of every figure and the ratio of the medians.
        "rps": {k: spread(v) for k, v in everything.items()},
        "ratio_of_medians_to_bare": {k: v / medians["bare"] for k, v in medians.items()},
        "middleware_ratio": ratio(main["middleware"], main["bare"]),
        "peer_requests_per_round": args.peer_requests,
        "peer_rounds": args.peer_rounds,
        "scaling": scaling,
    }


def show_overhead(o: dict[str, Any]) -> None:
    """Print section 1."""
    print(
        f"\n1. Steady state: {o['requests_per_round']} requests x {o['rounds']} interleaved "
        f"rounds, concurrency {o['concurrency']} (peers: {o['peer_requests_per_round']} "
        f"requests x {o['peer_rounds']} rounds); median [min-max]"
    )
    for name, s in o["rps"].items():
        print(
            f"   {name:<12} {fmt(s, 'req/s'):<28} "
            f"{o['ratio_of_medians_to_bare'][name]:5.3f} of bare aiohttp (medians)"
        )
    for name, note in o["notes"].items():
        print(f"   {name:<12} {note}")
    r = o["middleware_ratio"]
    print(
        f"   middleware / bare: {r['of_medians']:.3f} (per-round ratios "
        f"{r['per_round_min']:.3f}-{r['per_round_max']:.3f})"
    )
    print("\n   How it grows with concurrency (middleware / bare, ratio of medians):")
    for level, s in o["scaling"].items():
        m, b, r = s["rps"]["middleware"], s["rps"]["bare"], s["ratio_to_bare"]
        print(
            f"   concurrency {level:>4} ({s['requests_per_round']} x {s['rounds']}): bare "
            f"{fmt(b, 'req/s'):<26} middleware "
            f"{fmt(m, 'req/s'):<26} ratio {r['of_medians']:.3f} "
            f"[{r['per_round_min']:.3f}-{r['per_round_max']:.3f}]"
        )


# -- 2. the 401 storm -----------------------------------------------------------------------


class _CookbookMiddleware:
    """The 401 refresh middleware as aiohttp's cookbook shows it (token-identity dedupe).

    One change: its refresh is sent with ``middlewares=()``; as printed, the refresh goes
    through the same session and re-enters this middleware while holding the lock (a
    deadlock). It persists nothing and guards nothing across processes.
    """

    def __init__(self, token_url: str, client_id: str, access: str, refresh: str) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.access_token = access
        self.refresh_token = refresh
        self.lock = asyncio.Lock()

    async def __call__(
        self, req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        response = None
        for _ in range(2):
            token = self.access_token
            req.headers["Authorization"] = f"Bearer {token}"
            response = await handler(req)
            if response.status != 401:
                return response
            async with self.lock:
                if token != self.access_token:
                    continue
                body = {
                    "client_id": self.client_id,
                    "grant_type": "refresh_token",
                    "refresh_token": self.refresh_token,
                }
                async with req.session.post(self.token_url, json=body, middlewares=()) as r:
                    data = await r.json()
                    self.access_token = data["access_token"]
                    self.refresh_token = data.get("refresh_token", self.refresh_token)
        assert response is not None
        return response


async def _storm(session: aiohttp.ClientSession, url: str, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        async with session.get(f"{url}/{i}") as response:
            await response.read()
            statuses.append(response.status)
        latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i) for i in range(count)))
    latencies.sort()
    return {
        "ok": statuses.count(200),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[max(int(len(latencies) * 0.99) - 1, 0)],
    }


async def _storm_library(count: int, round_index: int) -> dict[str, Any]:
    """One storm through ``AuthMiddleware`` on a ``FileAuthStore`` (persisted, locked)."""
    async with FakeAuthServer() as server:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            await FileAuthStore(home).save(server.login())
            oauth = OAuthConfig(server.token_url, server.client_id)
            async with AuthManager(FileAuthStore(home), oauth) as manager:
                connector = aiohttp.TCPConnector(limit=200)
                mw = AuthMiddleware(manager)
                async with aiohttp.ClientSession(connector=connector, middlewares=(mw,)) as s:
                    async with s.get(f"{server.url}/api/warm") as response:
                        await response.read()
                    server.revoke_access_tokens()
                    calls, hits = server.token_calls, server.api_hits
                    ballast = gc_phase(round_index, count)
                    result = await _storm(s, f"{server.url}/api", count)
                    del ballast
                held = manager.auth_cached()
            stored = await FileAuthStore(home).load()
        result["token_calls"] = server.token_calls - calls
        result["api_hits"] = server.api_hits - hits
        result["reuse_answers"] = server.reuse_answers
        result["persisted"] = held is not None and held.data == stored
    return result


async def _storm_cookbook(count: int, round_index: int) -> dict[str, Any]:
    """One storm through the cookbook middleware (in memory only)."""
    async with FakeAuthServer() as server:
        login = server.login()
        assert login.tokens is not None
        cookbook = _CookbookMiddleware(
            server.token_url,
            server.client_id,
            login.tokens.access_token,
            login.tokens.refresh_token,
        )
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector, middlewares=(cookbook,)) as s:
            # Warmed like the library's session: one request before the token is revoked.
            async with s.get(f"{server.url}/api/warm") as response:
                await response.read()
            server.revoke_access_tokens()
            calls, hits = server.token_calls, server.api_hits
            ballast = gc_phase(round_index, count)
            result = await _storm(s, f"{server.url}/api", count)
            del ballast
        result["token_calls"] = server.token_calls - calls
        result["api_hits"] = server.api_hits - hits
        result["reuse_answers"] = server.reuse_answers
        result["persisted"] = False
    return result


_STORMS = {"aioscopedauth": _storm_library, "cookbook": _storm_cookbook}


async def _storm_rounds(count: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in _STORMS}
    for index in range(rounds):
        for name in interleaved(index, tuple(_STORMS)):
            runs[name].append(await _STORMS[name](count, index))
    return runs


def _storm_summary(count: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": count, "rounds": len(runs["aioscopedauth"])}
    for name, results in runs.items():
        p50 = [r["p50_ms"] for r in results]
        p99 = [r["p99_ms"] for r in results]
        out[name] = {
            # The keys of earlier versions (now the medians over rounds) ...
            "ok": min(r["ok"] for r in results),
            "p50_ms": statistics.median(p50),
            "p99_ms": statistics.median(p99),
            "token_calls": max(r["token_calls"] for r in results),
            "api_hits": max(r["api_hits"] for r in results),
            # ... and the spread beside them.
            "p50": spread(p50),
            "p99": spread(p99),
            "token_calls_per_round": [r["token_calls"] for r in results],
            "reuse_answers": max(r["reuse_answers"] for r in results),
            "persisted_every_round": all(r["persisted"] for r in results),
        }
    lib = runs["aioscopedauth"]
    cook = runs["cookbook"]
    out["ratio_p50"] = ratio([r["p50_ms"] for r in lib], [r["p50_ms"] for r in cook])
    out["ratio_p99"] = ratio([r["p99_ms"] for r in lib], [r["p99_ms"] for r in cook])
    return out


async def bench_401_storm(args: argparse.Namespace) -> dict[str, Any]:
    """Section 2: ``--storm`` concurrent requests on a revoked token, and other storm sizes."""
    out = _storm_summary(args.storm, await _storm_rounds(args.storm, args.rounds))
    out["target"] = (
        "aioscopedauth token_calls == 1; p50 and p99 <= cookbook (ratio of medians <= 1.0)"
    )
    sizes: dict[str, Any] = {}
    for size in args.storm_sizes:
        if size == args.storm:
            summary = out
        else:
            summary = _storm_summary(size, await _storm_rounds(size, args.scaling_rounds))
        sizes[str(size)] = {
            "rounds": summary["rounds"],
            **{name: summary[name] for name in _STORMS},
            "ratio_p50": summary["ratio_p50"],
            "ratio_p99": summary["ratio_p99"],
        }
    xs = [float(s) for s in sizes]
    growth = {}
    for name in _STORMS:
        for pct in ("p50", "p99"):
            ys = [sizes[s][name][pct]["median"] for s in sizes]
            slope = statistics.linear_regression(xs, ys).slope if len(xs) > 1 else 0.0
            growth[f"{name}_{pct}_ms_per_added_request"] = slope
    out["scaling"] = {"sizes": sizes, "growth": growth}
    return out


def show_storm(s: dict[str, Any]) -> None:
    """Print section 2."""
    print(
        f"\n2. 401 storm: {s['requests']} concurrent requests on a revoked token, "
        f"{s['rounds']} interleaved rounds; median [min-max]"
    )
    for name in _STORMS:
        r = s[name]
        print(
            f"   {name:<14} token calls {r['token_calls']:3d}  reuse {r['reuse_answers']}  "
            f"API hits {r['api_hits']:5d}  ok {r['ok']:5d}  "
            f"persisted {'yes' if r['persisted_every_round'] else 'no ':3}  "
            f"p50 {fmt(r['p50'], 'ms')}  p99 {fmt(r['p99'], 'ms')}"
        )
    for pct in ("p50", "p99"):
        r = s[f"ratio_{pct}"]
        print(
            f"   {pct} aioscopedauth / cookbook: {r['of_medians']:.3f} (per-round "
            f"{r['per_round_min']:.2f}-{r['per_round_max']:.2f})"
        )
    print("\n   How it grows with the storm (median [min-max]; token calls: the most in a round):")
    for size, row in s["scaling"]["sizes"].items():
        lib, cook = row["aioscopedauth"], row["cookbook"]
        print(
            f"   {int(size):>6} requests x {row['rounds']} rounds: aioscopedauth token calls "
            f"{lib['token_calls']}, p50 {fmt(lib['p50'], 'ms')}, p99 {fmt(lib['p99'], 'ms')}; "
            f"cookbook p50 {fmt(cook['p50'], 'ms')}, p99 {fmt(cook['p99'], 'ms')}; "
            f"p50 ratio {row['ratio_p50']['of_medians']:.2f}"
        )
    g = s["scaling"]["growth"]
    print(
        "   latency per added request (slope of the medians): aioscopedauth p50 "
        f"{1000 * g['aioscopedauth_p50_ms_per_added_request']:.0f} us, p99 "
        f"{1000 * g['aioscopedauth_p99_ms_per_added_request']:.0f} us; cookbook p50 "
        f"{1000 * g['cookbook_p50_ms_per_added_request']:.0f} us, p99 "
        f"{1000 * g['cookbook_p99_ms_per_added_request']:.0f} us"
    )


# -- 3. the bearer storm --------------------------------------------------------------------


async def _bearer_storm_once(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        expected = "bench-token"
        script = write_token_script(tmp, expected)
        refresher = CommandBearerRefresher(ProviderAuthCommand("./print-token.sh", cwd=tmp))
        base = AuthManager(MemoryAuthStore(), OAuthConfig("http://127.0.0.1:9/unused", "c"))
        derived = base.with_external_bearer_refresher(refresher)
        started = time.perf_counter()
        results = await asyncio.gather(*(derived.auth() for _ in range(count)))
        elapsed = time.perf_counter() - started
        return {
            "runs": script.runs,
            "ok": all(r is not None and r.token == expected for r in results),
            "seconds": elapsed,
        }


async def bench_bearer_storm(args: argparse.Namespace) -> dict[str, Any]:
    """Section 3: ``--storm`` concurrent cold ``auth()`` calls on a command source."""
    runs = [await _bearer_storm_once(args.storm) for _ in range(args.rounds)]
    seconds = [r["seconds"] for r in runs]
    return {
        "callers": args.storm,
        "command_runs": max(r["runs"] for r in runs),
        "all_got_the_token": all(r["ok"] for r in runs),
        "seconds": statistics.median(seconds),
        "target": "command_runs == 1",
        "rounds": args.rounds,
        "seconds_spread": spread(seconds),
        "command_runs_per_round": [r["runs"] for r in runs],
    }


def show_bearer_storm(b: dict[str, Any]) -> None:
    """Print section 3."""
    print(
        f"\n3. Bearer storm: {b['callers']} concurrent cold auth() x {b['rounds']} rounds: "
        f"command runs {b['command_runs']} at most (target 1), all got the token: "
        f"{b['all_got_the_token']}, {fmt(b['seconds_spread'], 's', 3)}"
    )


# -- 4. processes sharing a login -----------------------------------------------------------

PROCESS_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    import aiohttp
    from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, OAuthConfig

    async def main(home, token_url, api_url, count, client_id):
        failed = 0
        async with AuthManager(FileAuthStore(home), OAuthConfig(token_url, client_id)) as m:
            async with aiohttp.ClientSession(middlewares=(AuthMiddleware(m),)) as s:
                for i in range(count):
                    async with s.get(api_url) as r:
                        await r.read()
                        failed += r.status != 200
        print(json.dumps({"failed": failed}))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
    """
)


async def _processes_once(processes: int, requests: int) -> dict[str, Any]:
    """Processes sharing one login with 1-second tokens and single-use refresh tokens."""
    ttl = timedelta(seconds=1)
    async with FakeAuthServer(access_ttl=ttl) as server:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            await FileAuthStore(home).save(server.login())
            started = time.perf_counter()
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    PROCESS_WORKER,
                    str(home),
                    server.token_url,
                    f"{server.url}/api/work",
                    str(requests),
                    server.client_id,
                    stdout=asyncio.subprocess.PIPE,
                )
                for _ in range(processes)
            ]
            outputs = [json.loads((await p.communicate())[0]) for p in procs]
            elapsed = time.perf_counter() - started
    # Tokens are refreshed when a quarter of their lifetime is left.
    expiries = elapsed / (ttl.total_seconds() * 0.75)
    return {
        "seconds": elapsed,
        "failed_requests": sum(o["failed"] for o in outputs),
        "reuse_answers": server.reuse_answers,
        "refreshes": server.refreshes,
        "refreshes_per_expiry": server.refreshes / max(expiries, 1),
    }


async def bench_processes(args: argparse.Namespace) -> dict[str, Any]:
    """Section 4: 2, 8 and 16 processes sharing one login (reuse, refreshes, wall time)."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.process_counts}
    for index in range(args.scaling_rounds):
        order = args.process_counts if index % 2 == 0 else list(reversed(args.process_counts))
        for n in order:
            runs[n].append(await _processes_once(n, args.process_requests))
    counts: dict[str, Any] = {}
    for n, results in runs.items():
        counts[str(n)] = {
            "processes": n,
            "requests_each": args.process_requests,
            "rounds": len(results),
            "reuse_answers": max(r["reuse_answers"] for r in results),
            "failed_requests": max(r["failed_requests"] for r in results),
            "refreshes_per_expiry": spread([r["refreshes_per_expiry"] for r in results]),
            "refreshes": spread([r["refreshes"] for r in results]),
            "seconds": spread([r["seconds"] for r in results]),
        }
    head = counts.get(str(args.processes)) or next(iter(counts.values()))
    return {
        # The keys of earlier versions, for the headline process count (medians).
        "processes": head["processes"],
        "requests_each": head["requests_each"],
        "seconds": head["seconds"]["median"],
        "failed_requests": head["failed_requests"],
        "reuse_answers": head["reuse_answers"],
        "refreshes": head["refreshes"]["median"],
        "refreshes_per_expiry": head["refreshes_per_expiry"]["median"],
        "target": "reuse_answers == 0, refreshes_per_expiry ~ 1",
        # Added: every process count, with the spread.
        "scaling": counts,
    }


def show_processes(p: dict[str, Any]) -> None:
    """Print section 4."""
    print(
        f"\n4. Processes sharing one login, 1 s tokens, single-use refresh tokens, "
        f"{p['requests_each']} requests each; median [min-max]"
    )
    for row in p["scaling"].values():
        print(
            f"   {row['processes']:>3} processes x {row['rounds']} rounds: reuse answers "
            f"{row['reuse_answers']} (target 0), failed {row['failed_requests']}, refreshes "
            f"per expiry {fmt(row['refreshes_per_expiry'], digits=2)}, wall "
            f"{fmt(row['seconds'], 's', 1)}"
        )


# -- 5. memory ------------------------------------------------------------------------------


async def _memory_once(count: int) -> dict[str, float]:
    """Bytes per idle manager (loaded) and per in-flight recovery, by tracemalloc."""
    async with FakeAuthServer() as server:
        login = server.login()
        oauth = OAuthConfig(server.token_url, server.client_id)
        settle()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            managers = []
            for _ in range(count):
                store = MemoryAuthStore()
                await store.save(login)
                manager = AuthManager(store, oauth)
                await manager.auth()
                managers.append(manager)
            settle()
            idle = tracemalloc.take_snapshot().compare_to(before, "filename")
            per_manager = sum(d.size_diff for d in idle) / count
            managers.clear()

            # In-flight recoveries: ``count`` rejected requests waiting on one held refresh,
            # against as many tasks waiting on an event (what a waiting request costs anyway).
            with tempfile.TemporaryDirectory() as tmp:
                await FileAuthStore(tmp).save(login)
                async with AuthManager(FileAuthStore(tmp), oauth) as manager:
                    rejected = await manager.auth()
                    event = asyncio.Event()
                    settle()
                    base = tracemalloc.take_snapshot()
                    idle_tasks = [asyncio.create_task(event.wait()) for _ in range(count)]
                    await asyncio.sleep(0)
                    waiting = tracemalloc.take_snapshot().compare_to(base, "filename")
                    per_task = sum(d.size_diff for d in waiting) / count
                    event.set()
                    await asyncio.gather(*idle_tasks)
                    del idle_tasks, waiting

                    server.revoke_access_tokens()
                    server.token_gate = asyncio.Event()

                    async def recover() -> None:
                        async for _ in manager.unauthorized_recovery(rejected):
                            pass

                    settle()
                    base = tracemalloc.take_snapshot()
                    tasks = [asyncio.create_task(recover()) for _ in range(count)]
                    await server.token_request_seen.wait()
                    for _ in range(5):
                        await asyncio.sleep(0.01)  # every recovery reaches the held refresh
                    held = tracemalloc.take_snapshot().compare_to(base, "filename")
                    per_recovery = sum(d.size_diff for d in held) / count
                    server.token_gate.set()
                    await asyncio.gather(*tasks)
        finally:
            tracemalloc.stop()
    return {
        "per_idle_manager": per_manager,
        "per_inflight_recovery": per_recovery,
        "per_waiting_task": per_task,
    }


async def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Section 5: memory per idle manager and per in-flight recovery (tracemalloc)."""
    runs = [await _memory_once(args.memory_count) for _ in range(args.scaling_rounds)]
    return {
        "count": args.memory_count,
        "rounds": len(runs),
        **{key: spread([r[key] for r in runs]) for key in runs[0]},
        "note": "bytes; per_inflight_recovery includes its waiting task (per_waiting_task)",
    }


def show_memory(m: dict[str, Any]) -> None:
    """Print section 5."""
    print(
        f"\n5. Memory (tracemalloc, {m['count']} at a time x {m['rounds']} rounds); "
        "median [min-max]"
    )
    print(f"   per idle manager (loaded, own store):   {fmt(m['per_idle_manager'], 'B')}")
    print(f"   per in-flight recovery (with its task): {fmt(m['per_inflight_recovery'], 'B')}")
    print(f"   for comparison, a task waiting on an event: {fmt(m['per_waiting_task'], 'B')}")


# -- 6. import ------------------------------------------------------------------------------


async def bench_import(args: argparse.Namespace) -> dict[str, Any]:
    """Section 6: wall time of ``import aioscopedauth`` against ``import aiohttp``."""
    samples: dict[str, list[float]] = {"sys": [], "aiohttp": [], "aioscopedauth": []}
    for index in range(args.rounds):
        for module in interleaved(index, tuple(samples)):
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", f"import {module}")
            await proc.wait()
            samples[module].append(time.perf_counter() - started)
    empty = statistics.median(samples["sys"])
    aiohttp_cost = statistics.median(samples["aiohttp"]) - empty
    ours = statistics.median(samples["aioscopedauth"]) - empty
    return {
        "aiohttp_ms": 1000 * aiohttp_cost,
        "aioscopedauth_ms": 1000 * ours,
        "ratio": ours / aiohttp_cost,
        "note": "aioscopedauth imports aiohttp, so the ratio is >= 1; the excess is its own cost",
        "rounds": args.rounds,
        "wall_ms": {k: spread([1000 * x for x in v]) for k, v in samples.items()},
    }


def show_import(i: dict[str, Any]) -> None:
    """Print section 6."""
    w = i["wall_ms"]
    print(
        f"\n6. Import ({i['rounds']} interleaved rounds, less an empty interpreter): aiohttp "
        f"{i['aiohttp_ms']:.0f} ms, aioscopedauth {i['aioscopedauth_ms']:.0f} ms "
        f"({i['ratio']:.2f}x, includes aiohttp); wall: python {fmt(w['sys'], 'ms')}, "
        f"aiohttp {fmt(w['aiohttp'], 'ms')}, aioscopedauth {fmt(w['aioscopedauth'], 'ms')}"
    )


# -- charts ---------------------------------------------------------------------------------


def _pyplot() -> Any:  # noqa: ANN401 -- matplotlib is optional and untyped here
    try:
        import matplotlib as mpl  # noqa: PLC0415 -- optional

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional
    except ImportError:
        return None
    return plt


def _errorbar(s: dict[str, Any]) -> tuple[float, list[float]]:
    return s["median"], [s["median"] - s["min"], s["max"] - s["median"]]


def _save(plt: Any, fig: Any, path: Path) -> str:  # noqa: ANN401 -- matplotlib objects
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def chart_overhead(o: dict[str, Any], directory: Path) -> list[str]:
    """The steady-state bars and the ratio by concurrency."""
    plt = _pyplot()
    if plt is None:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    names = list(o["rps"])
    bare = o["rps"]["bare"]["median"]
    values = [o["rps"][n]["median"] / bare for n in names]
    errors = [
        [
            (o["rps"][n]["median"] - o["rps"][n]["min"]) / bare,
            (o["rps"][n]["max"] - o["rps"][n]["median"]) / bare,
        ]
        for n in names
    ]
    ax.barh(names, values, xerr=list(zip(*errors, strict=True)), capsize=3, color="#5a8")
    ax.axvline(0.97, color="red", linestyle="--", linewidth=1, label="target 0.97")
    ax.set_xlabel("requests per second / bare aiohttp (medians; bars: min-max)")
    ax.set_title(f"Steady state, cached token, concurrency {o['concurrency']}")
    ax.legend(loc="lower right")
    paths.append(_save(plt, fig, directory / "overhead.png"))

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    levels = list(o["scaling"])
    ratios = [o["scaling"][c]["ratio_to_bare"] for c in levels]
    mids = [r["of_medians"] for r in ratios]
    err = [
        [m - r["per_round_min"] for m, r in zip(mids, ratios, strict=True)],
        [r["per_round_max"] - m for m, r in zip(mids, ratios, strict=True)],
    ]
    ax.errorbar(range(len(levels)), mids, yerr=err, marker="o", capsize=4, color="#2a7")
    ax.set_xticks(range(len(levels)), levels)
    ax.axhline(1.0, color="#888", linewidth=1)
    ax.axhline(0.97, color="red", linestyle="--", linewidth=1, label="target 0.97")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("middleware / bare aiohttp")
    ax.set_title("Steady-state ratio by concurrency (ratio of medians; bars: per-round range)")
    ax.legend(loc="lower right")
    paths.append(_save(plt, fig, directory / "steady-state-concurrency.png"))
    return paths


def chart_storm(s: dict[str, Any], directory: Path) -> list[str]:
    """Storm latency by storm size, the library against the cookbook."""
    plt = _pyplot()
    if plt is None:
        return []
    sizes = s["scaling"]["sizes"]
    xs = [int(x) for x in sizes]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    styles = {"aioscopedauth": "#2a7", "cookbook": "#a75"}
    for name, color in styles.items():
        for pct, line in (("p50", "-"), ("p99", ":")):
            points = [_errorbar(sizes[str(x)][name][pct]) for x in xs]
            ax.errorbar(
                xs,
                [p[0] for p in points],
                yerr=list(zip(*[p[1] for p in points], strict=True)),
                marker="o",
                linestyle=line,
                capsize=3,
                color=color,
                label=f"{name} {pct}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{x:,}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("concurrent requests on a revoked token")
    ax.set_ylabel("latency to recovery (ms)")
    ax.set_title("401 storm: latency by storm size (medians; bars: min-max)")
    ax.legend(fontsize="small")
    return [_save(plt, fig, directory / "storm-size.png")]


def chart_processes(p: dict[str, Any], directory: Path) -> list[str]:
    """Refreshes per expiry and wall time by process count."""
    plt = _pyplot()
    if plt is None:
        return []
    rows = list(p["scaling"].values())
    xs = [r["processes"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.0))
    for ax, key, label in (
        (left, "refreshes_per_expiry", "refreshes per token expiry"),
        (right, "seconds", "wall time (s)"),
    ):
        points = [_errorbar(r[key]) for r in rows]
        ax.errorbar(
            xs,
            [q[0] for q in points],
            yerr=list(zip(*[q[1] for q in points], strict=True)),
            marker="o",
            capsize=4,
            color="#57a",
        )
        ax.set_xlabel("processes sharing one login")
        ax.set_ylabel(label)
        ax.set_xticks(xs)
    left.axhline(1.0, color="#888", linewidth=1)
    left.set_ylim(bottom=0)
    fig.suptitle("Processes sharing a login (reuse answers: 0 in every run)")
    return [_save(plt, fig, directory / "processes.png")]


def chart_memory(m: dict[str, Any], directory: Path) -> list[str]:
    """Bytes per idle manager and per in-flight recovery."""
    plt = _pyplot()
    if plt is None:
        return []
    keys = [
        ("per_idle_manager", "idle manager"),
        ("per_inflight_recovery", "in-flight recovery\n(with its task)"),
        ("per_waiting_task", "a waiting task\n(for comparison)"),
    ]
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    points = [_errorbar(m[k]) for k, _ in keys]
    below = [q[1][0] / 1024 for q in points]
    above = [q[1][1] / 1024 for q in points]
    ax.barh(
        [label for _, label in keys],
        [q[0] / 1024 for q in points],
        xerr=[below, above],
        capsize=3,
        color="#888",
    )
    ax.set_xlabel("KiB each (tracemalloc; medians, bars: min-max)")
    ax.set_title("Memory")
    return [_save(plt, fig, directory / "memory.png")]


# -- a fleet through Redis (bench/fleet.py) ----------------------------------------------------


async def _bench_fleet(args: argparse.Namespace) -> dict[str, Any]:
    """Section 7: hosts sharing one login through Redis (see ``bench/fleet.py``)."""
    return await bench_fleet(args.fleet_hosts, args.fleet_requests)


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One part of the run: its key in results.json, how to measure, print and chart it."""

    key: str
    measure: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]
    show: Callable[[dict[str, Any]], None]
    chart: Callable[[dict[str, Any], Path], list[str]] | None = None


SECTIONS: list[Section] = [
    Section("overhead", bench_overhead, show_overhead, chart_overhead),
    Section("storm_401", bench_401_storm, show_storm, chart_storm),
    Section("bearer_storm", bench_bearer_storm, show_bearer_storm),
    Section("processes", bench_processes, show_processes, chart_processes),
    Section("memory", bench_memory, show_memory, chart_memory),
    Section("import", bench_import, show_import),
    Section("fleet", _bench_fleet, print_fleet),
]
"""Every section, in run order. Add a section here (and only here) to extend the run."""


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "load_average_before": list(os.getloadavg()),
    }


def headline(results: dict[str, Any]) -> dict[str, float]:
    """The three figures the issue asks for on their own lines (ratios of medians)."""
    out = {}
    if "storm_401" in results:
        out["storm_p50_ratio_to_cookbook"] = results["storm_401"]["ratio_p50"]["of_medians"]
        out["storm_p99_ratio_to_cookbook"] = results["storm_401"]["ratio_p99"]["of_medians"]
    if "overhead" in results:
        out["steady_state_median_ratio_to_bare"] = results["overhead"]["middleware_ratio"][
            "of_medians"
        ]
    return out


def _print_headline(results: dict[str, Any]) -> None:
    m = results["machine"]
    before, after = m["load_average_before"], m["load_average_after"]
    print(
        f"\nMachine: {m['cpus']} cores, Python {m['python']}, {m['platform']}, {m['date']}; "
        f"load average {before[0]:.2f} {before[1]:.2f} {before[2]:.2f} before, "
        f"{after[0]:.2f} {after[1]:.2f} {after[2]:.2f} after; run took "
        f"{results['seconds']:.0f} s"
    )
    h = results["headline"]
    for pct in ("p50", "p99"):
        key = f"storm_{pct}_ratio_to_cookbook"
        if key in h:
            print(f"storm {pct} ratio to cookbook: {h[key]:.3f} (target <= 1.0)")
    if "steady_state_median_ratio_to_bare" in h:
        print(
            "steady-state median ratio to bare aiohttp: "
            f"{h['steady_state_median_ratio_to_bare']:.3f} (target >= 0.97)"
        )


async def _run(args: argparse.Namespace, sections: list[Section]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for section in sections:
        started = time.perf_counter()
        print(f"[{section.key}] measuring...", file=sys.stderr, flush=True)
        results[section.key] = await section.measure(args)
        results[section.key]["section_seconds"] = time.perf_counter() - started
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the headline figures")
    parser.add_argument("--scaling-rounds", type=int, default=5, help="rounds of the others")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scaling-concurrency", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--peer-requests", type=int, default=1_000)
    parser.add_argument("--peer-rounds", type=int, default=5)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--storm-sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--process-counts", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--process-requests", type=int, default=300)
    parser.add_argument("--memory-count", type=int, default=1000)
    parser.add_argument("--fleet-hosts", type=int, default=16)
    parser.add_argument("--fleet-requests", type=int, default=2000)
    parser.add_argument("--only", nargs="+", choices=[s.key for s in SECTIONS])
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--charts", type=Path, default=CHARTS, help="folder for the PNG charts")
    return parser


def main() -> None:
    """Run every section, print the tables, write the results and the charts."""
    args = _parser().parse_args()
    sections = [s for s in SECTIONS if args.only is None or s.key in args.only]
    machine = _machine()
    print(
        f"Load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores",
        file=sys.stderr,
    )
    started = time.perf_counter()
    results = asyncio.run(_run(args, sections))
    machine["load_average_after"] = list(os.getloadavg())
    results["machine"] = machine
    results["seconds"] = time.perf_counter() - started
    results["headline"] = headline(results)
    args.charts.mkdir(parents=True, exist_ok=True)
    charts: list[str] = []
    for section in sections:
        if section.chart is not None:
            charts += section.chart(results[section.key], args.charts)
    results["chart"] = next((c for c in charts if c.endswith("overhead.png")), None)
    results["charts"] = charts
    args.out.write_text(json.dumps(results, indent=2))
    for section in sections:
        section.show(results[section.key])
    _print_headline(results)
    print(f"\nWrote {args.out}" + (f" and {len(charts)} charts in {args.charts}" if charts else ""))


if __name__ == "__main__":
    main()
