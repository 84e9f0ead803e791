"""Section 6: wall time of ``import aioscopedauth`` against ``import aiohttp``.

``bench/startup.py`` measures start-up in more detail (the command line, the pytest plugin).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

from _common import Section, fmt, interleaved, spread

if TYPE_CHECKING:
    import argparse


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


SECTION = Section("import", bench_import, show_import)
