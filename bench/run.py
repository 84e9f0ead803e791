"""Benchmarks of aioscopedauth against bare aiohttp and its peers, measured side by side.

Run with ``nox -s bench`` (or ``python bench/run.py``). Every figure is printed next to its
baseline from the same run, on loopback; ``bench/results.json`` gets the numbers and
``bench/overhead.png`` a chart when matplotlib is installed. These are measurements, not
tests: nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import timedelta
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
    from collections.abc import Awaitable, Callable

HERE = Path(__file__).parent

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


async def bench_overhead(total: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """Figure 1: requests per second with a cached token, against bare aiohttp and peers."""
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
                results: dict[str, list[float]] = {"bare": [], "middleware": []}
                peers: dict[str, list[float]] = {"httpx": [], "google-auth": []}
                notes: dict[str, str] = {}
                for _ in range(rounds):
                    # Interleaved, so drift on a shared machine hits every client alike.
                    results["bare"].append(await _rps_bare(url, token, total, concurrency))
                    results["middleware"].append(
                        await _rps_middleware(url, manager, total, concurrency)
                    )
                    for name, func in (("httpx", _rps_httpx), ("google-auth", _rps_google)):
                        value = await func(url, token, total, concurrency)
                        if isinstance(value, str):
                            notes[name] = value
                        else:
                            peers[name].append(value)
        server.terminate()
    best = {k: max(v) for k, v in {**results, **peers}.items() if v}
    return {
        "requests_per_round": total,
        "concurrency": concurrency,
        "rounds": rounds,
        "rps_best": best,
        "rps_median": {k: statistics.median(v) for k, v in {**results, **peers}.items() if v},
        "ratio_to_bare": {k: v / best["bare"] for k, v in best.items()},
        "notes": notes,
        "target": "middleware >= 0.95 of bare",
    }


class _CookbookMiddleware:
    """The 401 refresh middleware as aiohttp's cookbook shows it (token-identity dedupe).

    One change: its refresh is sent with ``middlewares=()``; as printed, the refresh goes
    through the same session and re-enters this middleware while holding the lock (a
    deadlock).
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
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
    }


async def bench_401_storm(count: int) -> dict[str, Any]:
    """Figure 2: ``count`` concurrent requests on a revoked token."""
    out: dict[str, Any] = {"requests": count}
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
                    result = await _storm(s, f"{server.url}/api", count)
        result["token_calls"] = server.token_calls - calls
        result["api_hits"] = server.api_hits - hits
        out["aioscopedauth"] = result
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
            server.revoke_access_tokens()
            result = await _storm(s, f"{server.url}/api", count)
        result["token_calls"] = server.token_calls
        result["api_hits"] = server.api_hits
        out["cookbook"] = result
    out["target"] = "aioscopedauth token_calls == 1"
    return out


async def bench_bearer_storm(count: int) -> dict[str, Any]:
    """Figure 3: ``count`` concurrent cold ``auth()`` calls on a command source."""
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
            "callers": count,
            "command_runs": script.runs,
            "all_got_the_token": all(r is not None and r.token == expected for r in results),
            "seconds": elapsed,
            "target": "command_runs == 1",
        }


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


async def bench_processes(processes: int, requests: int) -> dict[str, Any]:
    """Figure 4: processes sharing one login with 1-second tokens and single-use refresh."""
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
        "processes": processes,
        "requests_each": requests,
        "seconds": elapsed,
        "failed_requests": sum(o["failed"] for o in outputs),
        "reuse_answers": server.reuse_answers,
        "refreshes": server.refreshes,
        "refreshes_per_expiry": server.refreshes / max(expiries, 1),
        "target": "reuse_answers == 0, refreshes_per_expiry ~ 1",
    }


def bench_import(rounds: int) -> dict[str, Any]:
    """Figure 5: wall time of ``import aioscopedauth`` against ``import aiohttp``."""

    def cost(module: str) -> float:
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    empty = cost("sys")
    aiohttp_cost = cost("aiohttp") - empty
    ours = cost("aioscopedauth") - empty
    return {
        "aiohttp_ms": 1000 * aiohttp_cost,
        "aioscopedauth_ms": 1000 * ours,
        "ratio": ours / aiohttp_cost,
        "note": "aioscopedauth imports aiohttp, so the ratio is >= 1; the excess is its own cost",
    }


def _chart(results: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib as mpl  # noqa: PLC0415 -- optional

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional
    except ImportError:
        return None
    ratios = results["overhead"]["ratio_to_bare"]
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(ratios)
    ax.barh(names, [ratios[n] for n in names], color=["#888", "#2a7", "#57a", "#a75"][: len(names)])
    ax.axvline(0.95, color="red", linestyle="--", linewidth=1, label="target 0.95")
    ax.set_xlabel("requests per second, relative to bare aiohttp")
    ax.set_title("Steady-state overhead (cached token, loopback)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _print(results: dict[str, Any]) -> None:
    o = results["overhead"]
    print(
        f"\n1. Steady state: {o['requests_per_round']} requests x {o['rounds']} rounds, "
        f"concurrency {o['concurrency']} (best round)"
    )
    for name, rps in o["rps_best"].items():
        print(f"   {name:<12} {rps:9.0f} req/s   {o['ratio_to_bare'][name]:5.3f} of bare aiohttp")
    for name, note in o["notes"].items():
        print(f"   {name:<12} {note}")
    s = results["storm_401"]
    print(f"\n2. 401 storm: {s['requests']} concurrent requests on a revoked token")
    for name in ("aioscopedauth", "cookbook"):
        r = s[name]
        print(
            f"   {name:<14} token calls {r['token_calls']:4d}  API hits {r['api_hits']:5d}  "
            f"ok {r['ok']:5d}  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
        )
    b = results["bearer_storm"]
    print(
        f"\n3. Bearer storm: {b['callers']} concurrent cold auth(): command runs "
        f"{b['command_runs']} (target 1), all got the token: {b['all_got_the_token']}"
    )
    p = results["processes"]
    print(
        f"\n4. Processes: {p['processes']} x {p['requests_each']} requests, 1 s tokens, "
        f"single-use refresh: reuse answers {p['reuse_answers']} (target 0), refreshes "
        f"{p['refreshes']}, per expiry {p['refreshes_per_expiry']:.2f}, failed "
        f"{p['failed_requests']}, {p['seconds']:.1f} s"
    )
    i = results["import"]
    print(
        f"\n5. Import: aiohttp {i['aiohttp_ms']:.0f} ms, aioscopedauth {i['aioscopedauth_ms']:.0f} "
        f"ms ({i['ratio']:.2f}x, includes aiohttp)"
    )
    print_fleet(results["fleet"])


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "overhead": await bench_overhead(args.requests, args.concurrency, args.rounds),
        "storm_401": await bench_401_storm(args.storm),
        "bearer_storm": await bench_bearer_storm(args.storm),
        "processes": await bench_processes(args.processes, args.process_requests),
        "import": bench_import(5),
        "fleet": await bench_fleet(args.fleet_hosts, args.process_requests),
    }


def main() -> None:
    """Run every benchmark, print the table, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--process-requests", type=int, default=2000)
    parser.add_argument("--fleet-hosts", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results = asyncio.run(_main(args))
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    chart = _chart(results, args.out.with_name("overhead.png"))
    results["chart"] = chart
    args.out.write_text(json.dumps(results, indent=2))
    _print(results)
    print(f"\nWrote {args.out}" + (f" and {chart}" if chart else ""))


if __name__ == "__main__":
    main()
