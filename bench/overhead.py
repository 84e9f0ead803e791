"""Section 1: requests per second with a cached token, against bare aiohttp and its peers.

The headline at ``--concurrency`` (32), then the same measurement at the other
``--scaling-concurrency`` levels (how the cost grows with concurrency), and the peers (httpx's
``Auth`` flow, google-auth's ``AuthorizedSession``) when they are installed. The API runs in its
own process (``_common.api_server``). A round sends enough requests to last seconds on a
2-core machine; every round's duration is kept in ``results.json``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from _common import (
    Section,
    api_server,
    fmt,
    interleaved,
    pyplot,
    ratio,
    save,
    settle,
    spread,
)

from aioscopedauth import AuthManager, AuthMiddleware, MemoryAuthStore, OAuthConfig
from aioscopedauth.testing import FakeAuthServer

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable
    from pathlib import Path


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


def _level_requests(total: int, concurrency: int) -> int:
    """Requests per round at a level other than the headline's.

    ``--requests`` (20,000 by default, about four seconds at concurrency 32 on two shared
    cores), but at most 6,000 per concurrent request, so a round at concurrency 1 (about 2,000
    requests per second) lasts about three seconds rather than ten.
    """
    return min(total, 6_000 * concurrency)


def _round_seconds(total: int, samples: dict[str, list[float]]) -> dict[str, Any]:
    """The duration of every client's share of every round (requests / rate)."""
    return spread([total / rps for values in samples.values() for rps in values])


async def bench_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Section 1: requests per second with a cached token, against bare aiohttp and peers.

    The headline at ``--concurrency`` (32) plus the same measurement at the other
    ``--scaling-concurrency`` levels (how the cost grows with concurrency).
    """
    with api_server() as url:
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
                    level_total = total if level == concurrency else _level_requests(total, level)
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
                        "round_seconds": _round_seconds(level_total, samples),
                    }
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
        # Added: how long a round lasted (each client's half of it), to show it lasts seconds.
        "round_seconds": _round_seconds(args.requests, main),
        "peer_round_seconds": {
            k: spread([args.peer_requests / x for x in v]) for k, v in peers.items() if v
        },
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
        f"{r['per_round_min']:.3f}-{r['per_round_max']:.3f}); each client's share of a round "
        f"lasted {fmt(o['round_seconds'], 's', 1)}"
    )
    print("\n   How it grows with concurrency (middleware / bare, ratio of medians):")
    for level, s in o["scaling"].items():
        m, b, r = s["rps"]["middleware"], s["rps"]["bare"], s["ratio_to_bare"]
        print(
            f"   concurrency {level:>4} ({s['requests_per_round']} x {s['rounds']}): bare "
            f"{fmt(b, 'req/s'):<26} middleware "
            f"{fmt(m, 'req/s'):<26} ratio {r['of_medians']:.3f} "
            f"[{r['per_round_min']:.3f}-{r['per_round_max']:.3f}], "
            f"{fmt(s['round_seconds'], 's', 1)} a round"
        )


def chart_overhead(o: dict[str, Any], directory: Path) -> list[str]:
    """The steady-state bars and the ratio by concurrency."""
    plt = pyplot()
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
    paths.append(save(plt, fig, directory / "overhead.png"))

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
    paths.append(save(plt, fig, directory / "steady-state-concurrency.png"))
    return paths


def arguments(parser: argparse.ArgumentParser) -> None:
    """The options of section 1."""
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scaling-concurrency", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--peer-requests", type=int, default=1_000)
    parser.add_argument("--peer-rounds", type=int, default=5)


SECTION = Section("overhead", bench_overhead, show_overhead, chart_overhead, arguments)
