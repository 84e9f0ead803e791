"""Benchmarks of aioscopedauth against bare aiohttp and its peers, measured side by side.

Run with ``nox -s bench`` (or ``python bench/run.py``). Every figure is measured in interleaved
rounds next to its baseline from the same run (the library and its baseline alternate within a
round, and which one goes first alternates between rounds), on loopback, and is reported as the
median over rounds with the min-max range. Ratios are computed from the medians.
``bench/results.json`` gets the numbers; ``docs/_static/bench/`` gets the charts the docs show
(when matplotlib is installed). These are measurements, not tests: nothing here fails on a slow
machine.

The run is a list of sections (:data:`SECTIONS`), one a module beside this one: each measures,
prints its table, draws its charts and adds its options on its own, so another section is one
more module and one more entry in that list. ``--only NAME`` runs some of them. What they
share (statistics over rounds, the API server, the chart helpers) is in ``_common.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bearer
import fleet
import imports
import instructions
import memory
import multiprocess
import overhead
import storm
from _common import CHARTS, HERE, Section

SECTIONS: list[Section] = [
    overhead.SECTION,
    storm.SECTION,
    bearer.SECTION,
    multiprocess.SECTION,
    memory.SECTION,
    imports.SECTION,
    fleet.SECTION,
    instructions.SECTION,
]
"""Every section, in run order. A new section is a module with its ``SECTION``, listed here."""


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
    """The figures printed on their own lines at the end (ratios of medians)."""
    out = {}
    if "storm_401" in results:
        out["storm_p50_ratio_to_cookbook"] = results["storm_401"]["ratio_p50"]["of_medians"]
        out["storm_p99_ratio_to_cookbook"] = results["storm_401"]["ratio_p99"]["of_medians"]
    if "overhead" in results:
        out["steady_state_median_ratio_to_bare"] = results["overhead"]["middleware_ratio"][
            "of_medians"
        ]
    counted = results.get("instructions", {})
    if "per_request" in counted:
        for client in instructions.CLIENTS:
            out[f"instructions_per_request_{client}"] = counted["per_request"][client]["median"]
        for name in ("bare", "passthrough"):
            key = f"ratio_{name}_to_authmiddleware"
            out[f"instructions_{key}"] = counted[key]["of_medians"]
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
    if "instructions" in results:
        instructions.show_ratios(results["instructions"])


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
    for section in SECTIONS:
        section.arguments(parser)
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
