"""Section 5: memory per idle manager and per in-flight recovery, by ``tracemalloc``."""

from __future__ import annotations

import asyncio
import tempfile
import tracemalloc
from typing import TYPE_CHECKING, Any

from _common import Section, errorbar, fmt, pyplot, save, settle, spread

from aioscopedauth import AuthManager, FileAuthStore, MemoryAuthStore, OAuthConfig
from aioscopedauth.testing import FakeAuthServer

if TYPE_CHECKING:
    import argparse
    from pathlib import Path


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


def chart_memory(m: dict[str, Any], directory: Path) -> list[str]:
    """Bytes per idle manager and per in-flight recovery."""
    plt = pyplot()
    if plt is None:
        return []
    keys = [
        ("per_idle_manager", "idle manager"),
        ("per_inflight_recovery", "in-flight recovery\n(with its task)"),
        ("per_waiting_task", "a waiting task\n(for comparison)"),
    ]
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    points = [errorbar(m[k]) for k, _ in keys]
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
    return [save(plt, fig, directory / "memory.png")]


def arguments(parser: argparse.ArgumentParser) -> None:
    """The options of section 5."""
    parser.add_argument("--memory-count", type=int, default=1000)


SECTION = Section("memory", bench_memory, show_memory, chart_memory, arguments)
