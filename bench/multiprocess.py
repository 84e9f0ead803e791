"""Section 4: processes sharing one login through ``auth.json`` (reuse, refreshes, wall time).

Each process is an interpreter running ``PROCESS_WORKER``, with 1-second access tokens and
single-use refresh tokens from the test kit's ``FakeAuthServer``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import Section, errorbar, fmt, pyplot, save, spread

from aioscopedauth import FileAuthStore
from aioscopedauth.testing import FakeAuthServer

if TYPE_CHECKING:
    import argparse


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


def chart_processes(p: dict[str, Any], directory: Path) -> list[str]:
    """Refreshes per expiry and wall time by process count."""
    plt = pyplot()
    if plt is None:
        return []
    rows = list(p["scaling"].values())
    xs = [r["processes"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.0))
    for ax, key, label in (
        (left, "refreshes_per_expiry", "refreshes per token expiry"),
        (right, "seconds", "wall time (s)"),
    ):
        points = [errorbar(r[key]) for r in rows]
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
    return [save(plt, fig, directory / "processes.png")]


def arguments(parser: argparse.ArgumentParser) -> None:
    """The options of section 4."""
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--process-counts", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--process-requests", type=int, default=300)


SECTION = Section("processes", bench_processes, show_processes, chart_processes, arguments)
