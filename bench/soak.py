"""Soak (issue 23): many agents for minutes through expiries and revocations, with figures.

Runs the embedded demo in this process (its servers, the managed login and the bearer command;
see ``aioscopedauth/_demo.py``) and samples the process while it runs. Prints:

* requests, failed, 401s recovered (requests whose retry worked), requests handed back a 401
  and why, refresh steps that ran again because their token was asked for before the 401;
* token refreshes per expiry or revocation (about 1 is right: single flight);
* resident memory and open file descriptors over time (a leak shows as a slope).

Usage: ``python bench/soak.py [--agents 300] [--seconds 120] [--revoke-every 1.5]
[--seed N] [--record FILE] [--every 10]``. Exits 1 when a request failed, a refresh token was
reused, or the fds at the end exceed those at the first sample by more than 16. Linux only for
the memory and fd figures (read from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aioscopedauth._demo import DemoConfig, DemoResult, run_demo

if TYPE_CHECKING:
    from aioscopedauth._middleware import RecoveryEvent

FD_SLACK = 16
"""Fds the end may hold beyond the first sample (pooled connections, a command's pipes)."""


def _rss_mib() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fds() -> int | None:
    try:
        return sum(1 for _ in Path("/proc/self/fd").iterdir())
    except OSError:
        return None


class _Figures:
    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()
        self.adopted_early = 0
        self.refreshed: set[tuple[str, int]] = set()
        self.repeated = 0
        self.samples: list[tuple[float, float | None, int | None]] = []

    def on_event(self, event: RecoveryEvent) -> None:
        self.outcomes[event.outcome] += 1
        if event.reason:
            self.reasons[event.reason] += 1
        if event.fresh is False:
            self.adopted_early += 1
        if event.step in {"refresh_token", "external_refresh"} and event.outcome == "changed":
            key = (event.mode, event.request)
            if key in self.refreshed:
                self.repeated += 1
            self.refreshed.add(key)
        if event.outcome in {"recovered", "gave_up", "permanent_failure", "transient_failure"}:
            self.refreshed.discard((event.mode, event.request))

    async def sample(self, every: float) -> None:
        started = time.monotonic()
        while True:
            # Two small /proc reads: on the loop, like the demo's own progress line.
            self.samples.append((time.monotonic() - started, _rss_mib(), _fds()))
            await asyncio.sleep(every)


async def _soak(config: DemoConfig, every: float) -> tuple[DemoResult, _Figures]:
    figures = _Figures()
    sampler = asyncio.create_task(figures.sample(every))
    try:
        # The demo's own progress goes to a buffer: these figures are the output.
        result = await run_demo(config, io.StringIO(), on_event=figures.on_event)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    figures.samples.append((result.seconds, _rss_mib(), _fds()))
    return result, figures


def _show(config: DemoConfig, result: DemoResult, figures: _Figures) -> bool:
    per_expiry = result.refreshes / max(result.expected_refreshes, 1e-9)
    rows = [
        ("agents", f"{config.agents}"),
        ("seconds", f"{result.seconds:.1f}"),
        ("requests", f"{result.requests}"),
        ("  per second", f"{result.requests / max(result.seconds, 1e-9):.0f}"),
        ("  failed", f"{result.failed}"),
        ("401s recovered (requests)", f"{figures.outcomes['recovered']}"),
        ("401s handed back", f"{figures.outcomes['gave_up']} {dict(figures.reasons)}"),
        ("tokens asked for before the 401", f"{figures.adopted_early} (adopted by a step)"),
        ("refresh steps run again", f"{figures.repeated} (such a token was rejected too)"),
        ("managed revocations", f"{result.revocations}"),
        ("provider revocations", f"{result.provider_revocations}"),
        ("token refreshes", f"{result.refreshes}"),
        ("  per expiry or revocation", f"{per_expiry:.2f}"),
        ("refresh tokens reused", f"{result.reuse_answers}"),
        ("bearer command runs", f"{result.command_runs}"),
    ]
    width = max(len(name) for name, _ in rows)
    every = config.revoke_every
    print(f"Soak: {config.agents} agents, {config.seconds:g} s, revocations ~{every:g} s")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("  over time:  seconds  RSS MiB  fds")
    for at, rss, fds in figures.samples:
        shown = "-" if rss is None else f"{rss:.1f}"
        print(f"             {at:7.1f}  {shown:>7}  {fds if fds is not None else '-':>3}")
    if config.record is not None:
        print(f"  failed recoveries' traces: {config.record}")
    first_fds, last_fds = figures.samples[0][2], figures.samples[-1][2]
    leak = first_fds is not None and last_fds is not None and last_fds > first_fds + FD_SLACK
    ok = result.passed and not leak
    print("PASS" if ok else "FAIL" + (" (fds grew)" if leak else ""))
    return ok


def main() -> int:
    """Run the soak; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--revoke-every", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args()
    config = DemoConfig(
        agents=args.agents,
        seconds=args.seconds,
        revoke_every=args.revoke_every,
        seed=args.seed,
        record=args.record,
    )
    result, figures = asyncio.run(_soak(config, args.every))
    return 0 if _show(config, result, figures) else 1


if __name__ == "__main__":
    sys.exit(main())
