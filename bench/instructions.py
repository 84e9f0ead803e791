"""Instructions per request of the client, counted by valgrind's callgrind: a load-free figure.

Requests per second on a shared machine swing by tens of per cent from round to round; the
number of instructions the client executes per request does not. Three clients send sequential
GET requests to the API server of ``_common.py``, which runs in another process, so only the
client is counted:

* ``bare``: aiohttp with the login's headers (``Authorization``, account id) fixed per request;
* ``passthrough``: the same with an empty middleware (``return await handler(request)``);
* ``authmiddleware``: aiohttp with ``AuthMiddleware`` over an ``AuthManager`` whose
  ``MemoryAuthStore`` holds a fresh ChatGPT login from the test kit (a one-hour token: nothing
  is refreshed during the run).

Every client builds the same manager first, so the three processes differ only in their
request loop. Start-up is subtracted by counting two runs per client, of ``--base`` and of
``--base + --requests`` requests: instructions per request = (I(N2) - I(N1)) / (N2 - N1).
Python's hash seed is fixed, so two runs of one client differ only in what the extra
requests cost.

Run alone: ``python bench/instructions.py [--requests 2000] [--base 500] [--repeats 1]``;
``bench/run.py`` runs it as its ``instructions`` section. Without valgrind on ``PATH`` it says
so in one line and measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import Section, api_server, fmt, ratio, spread

if TYPE_CHECKING:
    import aiohttp

CLIENTS = ("bare", "passthrough", "authmiddleware")
LABELS = {"bare": "bare aiohttp", "passthrough": "pass-through", "authmiddleware": "AuthMiddleware"}
SELF = Path(__file__).resolve()
TARGET = 0.97
"""``AuthMiddleware`` executes at most 1 / 0.97 of bare aiohttp's instructions per request."""

# -- the client (the process callgrind counts) -----------------------------------------------


async def _passthrough(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """The empty middleware: what any middleware costs aiohttp, before it does anything."""
    return await handler(request)


async def _client(name: str, url: str, count: int) -> int:
    """Send ``count`` requests one after the other as client ``name``; return the failures."""
    import aiohttp  # noqa: PLC0415 -- the parent process never needs it

    from aioscopedauth import (  # noqa: PLC0415 -- same
        AuthManager,
        AuthMiddleware,
        MemoryAuthStore,
        OAuthConfig,
    )
    from aioscopedauth.testing import chatgpt_auth  # noqa: PLC0415 -- same

    store = MemoryAuthStore()
    await store.save(chatgpt_auth())
    oauth = OAuthConfig("http://127.0.0.1:9/never-called", "bench")
    failed = 0
    async with AuthManager(store, oauth) as manager:
        auth = await manager.auth()
        assert auth is not None
        headers: dict[str, str] | None = auth.headers()
        middlewares: tuple[Any, ...] = ()
        if name == "passthrough":
            middlewares = (_passthrough,)
        elif name == "authmiddleware":
            middlewares, headers = (AuthMiddleware(manager),), None
        async with aiohttp.ClientSession(middlewares=middlewares) as session:
            for _ in range(count):
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    failed += response.status != 200
    return failed


# -- counting --------------------------------------------------------------------------------


def valgrind() -> str | None:
    """The path of ``valgrind``, or ``None`` when it is not installed."""
    return shutil.which("valgrind")


async def _count(tool: str, client: str, url: str, requests: int, folder: Path) -> int:
    """Instructions of one client process sending ``requests`` requests, under callgrind.

    The client runs from the copy of this file in ``folder`` (see :func:`measure`).
    """
    out = folder / f"{client}-{requests}.callgrind"
    proc = await asyncio.create_subprocess_exec(
        tool,
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(folder / SELF.name),
        "--client",
        client,
        "--url",
        url,
        "--requests",
        str(requests),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        msg = f"the {client} client under callgrind exited with {proc.returncode}: {last[0]}"
        raise RuntimeError(msg)
    match = re.search(r"^summary:\s*(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        msg = f"no 'summary:' line in {out}"
        raise RuntimeError(msg)
    return int(match.group(1))


async def measure(requests: int, base: int, repeats: int) -> dict[str, Any]:
    """Count every client ``repeats`` times; return the figures for ``results.json``."""
    tool = valgrind()
    if tool is None:
        return {"skipped": "valgrind is not installed (not on PATH)"}
    counts = (base, base + requests)
    totals: dict[str, dict[str, list[int]]] = {c: {str(n): [] for n in counts} for c in CLIENTS}
    per_request: dict[str, list[float]] = {c: [] for c in CLIENTS}
    with api_server() as url, tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        # The clients run from a copy of this file and _common.py: an edit of the worktree
        # during the run (say, between the two runs of one client) must not change what the
        # start-up of one of them costs.
        for source in (SELF, SELF.with_name("_common.py")):
            shutil.copy(source, tmp)
        for _ in range(repeats):
            for client in CLIENTS:
                pair = [await _count(tool, client, url, n, Path(tmp)) for n in counts]
                for n, total in zip(counts, pair, strict=True):
                    totals[client][str(n)].append(total)
                per_request[client].append((pair[1] - pair[0]) / requests)
    mw = per_request["authmiddleware"]
    version = await _version(tool)
    return {
        "tool": f"{version} --tool=callgrind",
        "method": "(I(N2) - I(N1)) / (N2 - N1): two runs per client, start-up subtracted",
        "requests": list(counts),
        "repeats": repeats,
        "concurrency": 1,
        "login": "fresh ChatGPT login (testing.chatgpt_auth, 1 h token) in a MemoryAuthStore",
        "per_request": {c: spread(v) for c, v in per_request.items()},
        "ratio_bare_to_authmiddleware": ratio(per_request["bare"], mw),
        "ratio_passthrough_to_authmiddleware": ratio(per_request["passthrough"], mw),
        "totals": totals,
        "target": f"bare / AuthMiddleware >= {TARGET}; within 1% of the figure before a refactor",
    }


async def _version(tool: str) -> str:
    proc = await asyncio.create_subprocess_exec(tool, "--version", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode().strip()


# -- the section -----------------------------------------------------------------------------


def arguments(parser: argparse.ArgumentParser, prefix: str = "instructions-") -> None:
    """The options of this section (``--instructions-requests`` and so on in ``run.py``)."""
    parser.add_argument(
        f"--{prefix}requests",
        type=int,
        default=2_000,
        help="requests the longer callgrind run sends more than the shorter one",
    )
    parser.add_argument(
        f"--{prefix}base", type=int, default=500, help="requests of the shorter callgrind run"
    )
    parser.add_argument(
        f"--{prefix}repeats", type=int, default=1, help="times every client is counted"
    )


async def bench_instructions(args: argparse.Namespace) -> dict[str, Any]:
    """Section 8: instructions per request of bare aiohttp, a pass-through, AuthMiddleware."""
    return await measure(
        args.instructions_requests, args.instructions_base, args.instructions_repeats
    )


def show_instructions(i: dict[str, Any]) -> None:
    """Print section 8: one line per client, then each ratio on its own line."""
    if "skipped" in i:
        print(f"\n8. Instructions per request: skipped, {i['skipped']}; install it to count them")
        return
    n1, n2 = i["requests"]
    print(
        f"\n8. Instructions per request of the client (callgrind, ({n2} - {n1}) sequential "
        f"requests, {i['repeats']} repeat{'s' if i['repeats'] != 1 else ''}; median [min-max]):"
    )
    for client in CLIENTS:
        s = {k: v / 1000 for k, v in i["per_request"][client].items() if k != "samples"}
        print(f"   {LABELS[client]:<15} {fmt(s, 'k instructions', 1)}")
    show_ratios(i)


def show_ratios(i: dict[str, Any]) -> None:
    """The two ratios, each on its own line (also printed with the headline)."""
    if "skipped" in i:
        return
    for name in ("bare", "passthrough"):
        r = i[f"ratio_{name}_to_authmiddleware"]
        target = f" (target >= {TARGET})" if name == "bare" else ""
        print(
            f"instructions ratio {name} / AuthMiddleware: {r['of_medians']:.4f}{target}"
            + (
                f" (per repeat {r['per_round_min']:.4f}-{r['per_round_max']:.4f})"
                if r["per_round_min"] != r["per_round_max"]
                else ""
            )
        )


SECTION = Section("instructions", bench_instructions, show_instructions, arguments=arguments)


def main() -> None:
    """Count, print, and with ``--out`` write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments(parser, prefix="")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:  # the counted process
        failed = asyncio.run(_client(args.client, args.url, args.requests))
        if failed:
            sys.exit(f"{failed} of {args.requests} requests failed")
        return
    if valgrind() is None:
        print(
            "instructions per request: skipped, valgrind is not installed; install it to count them"
        )
        return
    results = asyncio.run(measure(args.requests, args.base, args.repeats))
    show_instructions(results)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
