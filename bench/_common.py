"""What every bench section shares: statistics over rounds, the API server, sections, charts.

The sections live one a file beside this one (``overhead.py``, ``storm.py``, ...); ``run.py``
lists them and drives the run. Nothing here measures anything by itself.
"""

from __future__ import annotations

import contextlib
import gc
import random
import statistics
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Iterator, Sequence

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


# -- the API server -------------------------------------------------------------------------

# A plain API in its own process, so client and server do not share one event loop (and, for
# the instruction counts, so only the client runs under valgrind).
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


@contextlib.contextmanager
def api_server() -> Iterator[str]:
    """Run :data:`API_SERVER` in a child process; yield its URL; stop it on the way out.

    Popen only starts the server and reading its one line of output is immediate, so this is
    used from async code too.
    """
    with subprocess.Popen(
        [sys.executable, "-c", API_SERVER], stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            yield f"http://127.0.0.1:{port}/api"
        finally:
            server.terminate()


# -- sections -------------------------------------------------------------------------------


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


@dataclass(frozen=True)
class Section:
    """One part of the run: its key in results.json, how to measure, print and chart it.

    ``arguments`` adds the section's own options to the command line of ``run.py``.
    """

    key: str
    measure: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]
    show: Callable[[dict[str, Any]], None]
    chart: Callable[[dict[str, Any], Path], list[str]] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] = field(default=_no_arguments)


# -- charts ---------------------------------------------------------------------------------


def pyplot() -> Any:  # noqa: ANN401 -- matplotlib is optional and untyped here
    """``matplotlib.pyplot`` on the Agg backend, or ``None`` when matplotlib is missing."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 -- optional

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional
    except ImportError:
        return None
    return plt


def errorbar(s: dict[str, Any]) -> tuple[float, list[float]]:
    """The median of a spread and its distances to the min and the max."""
    return s["median"], [s["median"] - s["min"], s["max"] - s["median"]]


def save(plt: Any, fig: Any, path: Path) -> str:  # noqa: ANN401 -- matplotlib objects
    """Write a figure as PNG, close it, return its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
