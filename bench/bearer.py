"""Section 3: the bearer storm, ``--storm`` concurrent cold ``auth()`` calls on a command source."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import TYPE_CHECKING, Any

from _common import Section, fmt, spread

from aioscopedauth import (
    AuthManager,
    CommandBearerRefresher,
    MemoryAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
)
from aioscopedauth.testing import write_token_script

if TYPE_CHECKING:
    import argparse


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


SECTION = Section("bearer_storm", bench_bearer_storm, show_bearer_storm)
