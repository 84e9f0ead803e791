"""The embedded demo: many agents stay authenticated through expiries and revocations.

Everything runs on 127.0.0.1 in this process, in a temporary home:

* a token endpoint and API (:class:`~aioscopedauth.testing.FakeAuthServer`) whose access tokens
  live two seconds and whose refresh tokens are single-use and rotate;
* a provider API that accepts HMAC-signed bearer tokens minted by a real command (a Python
  script run as a subprocess), valid three seconds;
* random revocations of both;
* N agents making requests through :class:`AuthMiddleware`, some on the managed login and some
  on the provider.

It exits 0 only when no request failed and no refresh token was spent twice. With ``record``,
every request handed back a 401 (or an error) by its recovery leaves its trace: each step, which
token it sent (a fingerprint), when that token was minted and revoked, and why it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import secrets
import shutil
import sys
import tempfile
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp
import attrs
from aiohttp import web

from ._command import CommandBearerRefresher, ProviderAuthCommand
from ._manager import AuthManager
from ._middleware import AuthMiddleware, RecoveryEvent, token_fingerprint
from ._oauth import OAuthConfig
from ._storage import FileAuthStore
from .testing import FakeAuthServer, serve_on_loopback

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

ACCESS_TTL = timedelta(seconds=2)
PROVIDER_TTL = 3.0

_MINT_SCRIPT = """\
import hashlib, hmac, json, os, secrets, time
key = os.environ["DEMO_PROVIDER_KEY"].encode()
stamp = f"{time.time():.6f}.{secrets.token_hex(4)}"
signature = hmac.new(key, stamp.encode(), hashlib.sha256).hexdigest()
print(json.dumps({"token": f"{stamp}.{signature}", "expires_in": %(ttl)s}))
"""


@attrs.frozen
class DemoConfig:
    """What the demo runs.

    Attributes:
        agents: Concurrent agent tasks (about a third use the provider).
        seconds: How long they make requests.
        revoke_every: Mean seconds between random revocations.
        seed: Seed for the random revocations (``None``: random).
        record: Write the recovery trace of every failed request to this file, one JSON
            object a line (``None``: keep only the first few, for the summary).
    """

    agents: int = 50
    seconds: float = 10.0
    revoke_every: float = 1.5
    seed: int | None = None
    record: Path | None = None


@attrs.define
class DemoResult:
    """What happened, for the summary table."""

    requests: int = 0
    ok: int = 0
    failed: int = 0
    recovered_401s: int = 0
    refreshes: int = 0
    token_calls: int = 0
    reuse_answers: int = 0
    revocations: int = 0
    provider_revocations: int = 0
    command_runs: int = 0
    provider_requests: int = 0
    failures: list[str] = attrs.Factory(list)
    seconds: float = 0.0
    interrupted: bool = False
    traces: list[dict[str, Any]] = attrs.Factory(list)
    """The recovery traces of the first failed requests (all of them go to ``record``)."""
    traced_failures: int = 0
    """Requests whose recovery ended in a failure (a 401 handed back, or an error raised)."""

    @property
    def passed(self) -> bool:
        """The run ended, no request failed and no refresh token was reused."""
        return (
            not self.interrupted
            and self.failed == 0
            and self.reuse_answers == 0
            and self.requests > 0
        )

    @property
    def expected_refreshes(self) -> float:
        """Computed, not measured: about the most refreshes a single-flight client makes.

        One each time the access token reaches three quarters of its life (the refresh
        window is capped at a quarter of a token's lifetime), plus one per managed revocation.
        """
        return self.seconds / (ACCESS_TTL.total_seconds() * 0.75) + self.revocations

    def not_exercised(self) -> list[str]:
        """What this run was too short to show (a run that showed none of it proves little)."""
        missing = []
        if self.revocations == 0:
            missing.append("a managed revocation")
        if self.provider_revocations == 0:
            missing.append("a provider revocation")
        if self.refreshes == 0:
            missing.append("a token refresh")
        if self.recovered_401s == 0:
            missing.append("a recovered 401")
        return missing


_TERMINAL = frozenset({"recovered", "gave_up", "permanent_failure", "transient_failure"})
_OPEN_TRACES = 4096
"""Recoveries followed at once; beyond that the oldest is forgotten (a storm's worth)."""
_KEPT_TRACES = 1000
"""Failed requests' traces kept for ``record``; later ones are counted, not kept."""
_SHOWN_TRACES = 5
_MINTED = 4096
"""Access tokens whose minting time is remembered (fingerprint: seconds into the run)."""


class _Recorder:
    """Follows every recovery, step by step, and keeps the traces of those that failed.

    Cheap while requests recover: a recovery's steps are kept until it ends, then dropped
    unless it failed. Nothing is written while the run goes on (a file write would stall the
    loop): the traces are written after it, in a worker thread.
    """

    def __init__(
        self,
        started: float,
        result: DemoResult,
        on_event: Callable[[RecoveryEvent], None] | None,
    ) -> None:
        self.started = started
        self.wall_started = time.time() - (time.monotonic() - started)
        self.result = result
        self.on_event = on_event
        self.server: FakeAuthServer | None = None
        self.open: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.minted: dict[str, float] = {}
        self.revoked: dict[str, list[float]] = {"managed": [], "provider": []}
        self.kept: list[dict[str, Any]] = []

    def listener(self, api: str) -> Callable[[RecoveryEvent], None]:
        """Return the ``on_event`` of the middleware of ``api`` (``managed`` or ``provider``)."""
        result, on_event = self.result, self.on_event

        def count(event: RecoveryEvent) -> None:
            if event.outcome == "recovered":  # a request whose retry worked
                result.recovered_401s += 1
            self.event(api, event)
            if on_event is not None:
                on_event(event)

        return count

    def now(self) -> float:
        return round(time.monotonic() - self.started, 4)

    def observe_answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Note when the endpoint minted an access token (the server's ``mangle_answer``)."""
        if len(self.minted) >= _MINTED:
            self.minted.pop(next(iter(self.minted)))
        self.minted[token_fingerprint(answer["access_token"])] = self.now()
        return answer

    def provider_rejected(self, token: str, minted: float) -> None:
        """Note when the provider's command minted a token the provider API rejected."""
        if len(self.minted) >= _MINTED:
            self.minted.pop(next(iter(self.minted)))
        self.minted[token_fingerprint(token)] = round(minted - self.wall_started, 4)

    def revocation(self, kind: str) -> None:
        self.revoked[kind].append(self.now())

    def event(self, api: str, event: RecoveryEvent) -> None:
        key = (api, event.request)
        step: dict[str, Any] = {
            "at": self.now(),
            "send": event.send,
            "step": event.step,
            "outcome": event.outcome,
            "rejected": event.rejected,
        }
        if event.rejected in self.minted:
            step["rejected_minted_at"] = self.minted[event.rejected]
        if event.retry_with:
            step["retry_with"] = event.retry_with
            if event.retry_with in self.minted:
                step["retry_with_minted_at"] = self.minted[event.retry_with]
        if event.fresh is not None:
            step["fresh"] = event.fresh
        step["next"] = event.next_step
        if event.reason:
            step["reason"] = event.reason
        if event.outcome not in _TERMINAL:
            steps = self.open.get(key)
            if steps is None:
                if len(self.open) >= _OPEN_TRACES:
                    self.open.pop(next(iter(self.open)))
                steps = self.open[key] = []
            steps.append(step)
            return
        steps = self.open.pop(key, [])
        if event.outcome == "recovered":
            return
        steps.append(step)
        self.failed(api, event, steps)

    def failed(self, api: str, event: RecoveryEvent, steps: list[dict[str, Any]]) -> None:
        self.result.traced_failures += 1
        if len(self.kept) >= _KEPT_TRACES:
            return
        begun = steps[0]["at"]
        kind = "provider" if api == "provider" else "managed"
        times = () if self.server is None else self.server.refresh_times
        refreshes = [round(t - self.started, 4) for t in times]
        trace = {
            "at": begun,
            "api": api,
            "method": event.method,
            "url": event.url,
            "outcome": event.outcome,
            "reason": event.reason or event.outcome,
            "steps": steps,
            # What happened around it: the revocations of its kind and the refreshes the
            # endpoint answered, from 3 s before its first 401 (an access token's life) on.
            "revocations": [t for t in self.revoked[kind] if t >= begun - 3],
            "refreshes": [] if kind == "provider" else [t for t in refreshes if t >= begun - 3],
        }
        self.kept.append(trace)
        if len(self.result.traces) < _SHOWN_TRACES:
            self.result.traces.append(trace)

    async def write(self, path: Path) -> None:
        lines = "".join(json.dumps(trace, sort_keys=True) + "\n" for trace in self.kept)
        await asyncio.to_thread(path.write_text, lines)


class _ProviderApi:
    """A provider API that accepts fresh, unrevoked HMAC-signed tokens from the mint script."""

    def __init__(self, key: bytes, on_rejected: Callable[[str, float], None]) -> None:
        self.key = key
        self.on_rejected = on_rejected
        self.revoked_before = 0.0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def valid(self, token: str) -> bool:
        stamp, _, signature = token.rpartition(".")
        expected = hmac.new(self.key, stamp.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return False
        # Only stamps the mint script signed get here: "<epoch seconds>.<nonce>".
        minted = float(stamp.rsplit(".", 1)[0])
        if minted >= self.revoked_before and time.time() < minted + PROVIDER_TTL:
            return True
        self.on_rejected(token, minted)  # revoked or expired: for the traces
        return False

    async def handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and self.valid(header.removeprefix("Bearer ")):
            return web.json_response({"ok": True})
        return web.json_response({"error": "invalid_token"}, status=401)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/work", self.handle)
        self._runner, self.url = await serve_on_loopback(app)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _width() -> int:
    # COLUMNS, else the terminal's width, else 80; never so narrow that nothing fits.
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def _fit(fields: list[str], width: int) -> str:
    """Join ``fields`` with two spaces, dropping trailing ones until the line fits ``width``."""
    while len(fields) > 1 and len("  ".join(fields)) > width:
        fields = fields[:-1]
    return "  ".join(fields)[:width]


class _Progress:
    """A live status line on a terminal; a plain line a second otherwise.

    The live line is redrawn in place, so it must never wrap: it is cut to one column less
    than the terminal's width (a line that fills the last column wraps on some terminals).
    """

    def __init__(
        self,
        out: TextIO,
        result: DemoResult,
        server: FakeAuthServer,
        refresher: CommandBearerRefresher,
    ) -> None:
        self.out = out
        self.result = result
        self.server = server
        self.refresher = refresher
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.drawn = False

    def line(self, width: int) -> str:
        r = self.result
        return _fit(
            [
                f"{time.monotonic() - self.started:5.1f}s",
                f"requests {r.requests:6d}",
                f"failed {r.failed}",
                f"401s recovered {r.recovered_401s:4d}",
                f"token refreshes {self.server.refreshes:3d}",
                f"command runs {self.refresher.runs:3d}",
            ],
            width,
        )

    async def run(self) -> None:
        interval = 0.2 if self.tty else 1.0
        while True:
            await asyncio.sleep(interval)
            self.show()

    def show(self) -> None:
        width = _width()
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line(width - 1))
            self.drawn = True
        else:
            self.out.write(self.line(width) + "\n")
        self.out.flush()

    def finish(self) -> None:
        """End the live line (a terminal's last redraw, then a newline); nothing otherwise.

        Off a terminal the summary that follows has the final counts: printing the last
        progress line again would only repeat them.
        """
        if self.tty:
            self.show()
            self.out.write("\n")
            self.out.flush()


async def _agent(
    session: aiohttp.ClientSession,
    url: str,
    deadline: float,
    result: DemoResult,
    *,
    provider: bool,
) -> None:
    while time.monotonic() < deadline:
        result.requests += 1
        result.provider_requests += provider
        try:
            async with session.get(url) as response:
                await response.read()
                status = response.status
        except Exception as exc:  # noqa: BLE001 -- every failure is counted and reported
            status = None
            detail = f"{type(exc).__name__}: {exc}"
        else:
            detail = f"HTTP {status}"
        if status == 200:  # noqa: PLR2004 -- the status a working request gets
            result.ok += 1
        else:
            result.failed += 1
            if len(result.failures) < 5:  # noqa: PLR2004 -- a few examples are enough
                result.failures.append(f"{'provider' if provider else 'managed'}: {detail}")
        await asyncio.sleep(random.uniform(0.005, 0.03))  # noqa: S311 -- pacing, not security


async def _revoker(
    server: FakeAuthServer,
    provider: _ProviderApi,
    result: DemoResult,
    every: float,
    recorder: _Recorder,
) -> None:
    managed_next = random.random() < 0.5  # noqa: PLR2004, S311 -- a coin flip, not security
    while True:
        # At least a second apart: each revocation is recovered from within milliseconds, and
        # a second one inside that window would test luck, not the library.
        await asyncio.sleep(max(1.0, random.expovariate(1 / every)))
        # Alternate, so both kinds of recovery show up in every run.
        if managed_next:
            server.revoke_access_tokens()
            result.revocations += 1
            recorder.revocation("managed")
        else:
            provider.revoked_before = time.time()
            result.provider_revocations += 1
            recorder.revocation("provider")
        managed_next = not managed_next


async def run_demo(
    config: DemoConfig,
    out: TextIO = sys.stdout,
    *,
    on_event: Callable[[RecoveryEvent], None] | None = None,
) -> DemoResult:
    """Run the demo and print its progress and summary.

    Args:
        config: How many agents, for how long.
        out: Where to print.
        on_event: Also called with every recovery event.

    A cancellation (Ctrl-C) at any moment, while it starts too, prints the summary of what ran
    so far and is then raised again.

    Returns:
        What happened; ``result.passed`` tells whether every request succeeded and no refresh
        token was reused.
    """
    if config.seed is not None:
        random.seed(config.seed)
    result = DemoResult()
    started = time.monotonic()
    recorder = _Recorder(started, result, on_event)
    try:
        interrupted = await _run_demo(config, out, result, recorder)
    except asyncio.CancelledError:
        # Ctrl-C while it was starting or ending: still say what happened, then stop as asked.
        interrupted = True
    result.seconds = time.monotonic() - started
    result.interrupted = interrupted
    if config.record is not None:
        await recorder.write(config.record)
    _summary(out, config, result)
    if interrupted:
        raise asyncio.CancelledError
    return result


async def _run_demo(
    config: DemoConfig, out: TextIO, result: DemoResult, recorder: _Recorder
) -> bool:
    """Run the demo into ``result``; return whether a Ctrl-C ended the agents early."""
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="aioscopedauth-demo-") as tmp:
        home = Path(tmp) / "home"
        tools = Path(tmp) / "tools"
        tools.mkdir()
        (tools / "mint-token.py").write_text(_MINT_SCRIPT % {"ttl": PROVIDER_TTL})
        key = secrets.token_hex(16)
        async with FakeAuthServer(access_ttl=ACCESS_TTL, client_id="demo-client") as server:
            recorder.server = server
            server.mangle_answer = recorder.observe_answer  # notes, changes nothing
            provider = _ProviderApi(key.encode(), recorder.provider_rejected)
            await provider.start()
            try:
                await FileAuthStore(home).save(server.login())
                _header(out, config, server, provider, home)
                oauth = OAuthConfig(server.token_url, "demo-client")
                command = ProviderAuthCommand(
                    sys.executable,
                    args=("mint-token.py",),
                    cwd=tools,
                    timeout=10.0,
                    env={"DEMO_PROVIDER_KEY": key},
                )
                refresher = CommandBearerRefresher(command)
                async with AuthManager(FileAuthStore(home), oauth) as base:
                    derived = base.with_external_bearer_refresher(refresher)
                    run = _Run(config, result, server, provider, refresher, out, recorder)
                    try:
                        await run.agents(
                            AuthMiddleware(
                                base, origins=[server.url], on_event=recorder.listener("managed")
                            ),
                            AuthMiddleware(
                                derived,
                                origins=[provider.url],
                                on_event=recorder.listener("provider"),
                            ),
                        )
                    except asyncio.CancelledError:
                        # Ctrl-C: clean up, print what happened so far, then stop as asked.
                        interrupted = True
                result.command_runs = refresher.runs
            finally:
                await provider.close()
            result.refreshes = server.refreshes
            result.token_calls = server.token_calls
            result.reuse_answers = server.reuse_answers
    return interrupted


@attrs.define
class _Run:
    config: DemoConfig
    result: DemoResult
    server: FakeAuthServer
    provider: _ProviderApi
    refresher: CommandBearerRefresher
    out: TextIO
    recorder: _Recorder

    async def agents(self, managed_mw: AuthMiddleware, provider_mw: AuthMiddleware) -> None:
        config, result, server, provider = self.config, self.result, self.server, self.provider
        connector_limit = max(config.agents, 10)
        async with (
            aiohttp.ClientSession(
                middlewares=(managed_mw,), connector=aiohttp.TCPConnector(limit=connector_limit)
            ) as managed_session,
            aiohttp.ClientSession(
                middlewares=(provider_mw,), connector=aiohttp.TCPConnector(limit=connector_limit)
            ) as provider_session,
        ):
            deadline = time.monotonic() + config.seconds
            progress = _Progress(self.out, result, server, self.refresher)
            provider_agents = max(1, config.agents // 3)
            agents: list[Awaitable[None]] = []
            for i in range(config.agents):
                on_provider = i < provider_agents
                session = provider_session if on_provider else managed_session
                url = f"{provider.url}/v1/work" if on_provider else f"{server.url}/api/work"
                agents.append(_agent(session, url, deadline, result, provider=on_provider))
            background = [
                asyncio.create_task(progress.run()),
                asyncio.create_task(
                    _revoker(server, provider, result, config.revoke_every, self.recorder)
                ),
            ]
            try:
                await asyncio.gather(*agents)
            finally:
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                progress.finish()


def _wrap(text: str, width: int, indent: str = "  ", hang: str = "    ") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + hang)


def _header(
    out: TextIO, config: DemoConfig, server: FakeAuthServer, provider: _ProviderApi, home: Path
) -> None:
    width = _width()
    lines = [
        *_wrap(
            f"aioscopedauth demo: {config.agents} agents for {config.seconds:g} s on "
            "127.0.0.1, touching nothing of yours",
            width,
            indent="",
        ),
        *_wrap(f"token endpoint + API  {server.url}", width),
        *_wrap(
            f"access tokens live {ACCESS_TTL.seconds} s; refresh tokens are single-use",
            width,
            indent="      ",
        ),
        *_wrap(f"provider API          {provider.url}", width),
        *_wrap(f"bearer tokens from a command, valid {PROVIDER_TTL:g} s", width, indent="      "),
        *_wrap(f"temporary home        {home}", width),
        *_wrap(f"random revocations of both, about every {config.revoke_every:g} s", width),
    ]
    out.write("\n".join(lines) + "\n\n")
    out.flush()


def _summary(out: TextIO, config: DemoConfig, result: DemoResult) -> None:
    width = _width()
    rows = [
        ("requests", result.requests),
        ("  succeeded", result.ok),
        ("  failed", result.failed),
        ("  on the provider", result.provider_requests),
        ("401s recovered", result.recovered_401s),
        ("managed revocations", result.revocations),
        ("provider revocations", result.provider_revocations),
        ("token refreshes", result.refreshes),
        ("token endpoint calls", result.token_calls),
        ("refresh tokens reused", result.reuse_answers),
        ("bearer command runs", result.command_runs),
    ]
    name_width = max(len(name) for name, _ in rows)
    if result.interrupted:
        title = f"Interrupted after {result.seconds:.1f} s of {config.seconds:g} s"
    else:
        title = f"Summary after {config.seconds:g} s"
    out.write(f"\n{title} with {config.agents} agents (measured)\n")
    out.writelines(f"  {name:<{name_width}}  {value:>8}\n" for name, value in rows)
    ttl = ACCESS_TTL.total_seconds()
    note = (
        f"Token refreshes: {result.refreshes}, for at most about "
        f"{result.expected_refreshes:.0f} expected (computed, not measured: one each time "
        "an access token reaches three "
        f"quarters of its {ttl:g} s life, every {ttl * 0.75:g} s, plus one per managed "
        "revocation, which also restarts a token's life). About one refresh per expiry or "
        "revocation is right, however many agents share the login; twice that would mean "
        "duplicate refreshes."
    )
    out.write("\n" + "\n".join(_wrap(note, width, indent="", hang="")) + "\n")
    out.writelines(
        line + "\n"
        for failure in result.failures
        for line in _wrap(f"example failure: {failure}", width)
    )
    if result.traced_failures:
        where = f", traces in {config.record}" if config.record is not None else ""
        out.writelines(
            line + "\n"
            for text in (
                f"recoveries that failed: {result.traced_failures}{where}",
                *(f"trace: {_describe(trace)}" for trace in result.traces[:1]),
            )
            for line in _wrap(text, width)
        )
    out.write("\n" + "\n".join(_wrap(_verdict(config, result), width, indent="", hang="")) + "\n")
    out.flush()


def _verdict(config: DemoConfig, result: DemoResult) -> str:
    if result.interrupted:
        return (
            "INTERRUPTED: "
            + (
                "no request failed and no refresh token was reused so far"
                if result.failed == 0 and result.reuse_answers == 0
                else "some requests failed or a refresh token was reused"
            )
            + "; not a complete run."
        )
    if not result.passed:
        return "FAIL: some requests failed or a refresh token was reused."
    missing = result.not_exercised()
    if not missing:
        return "PASS: every request succeeded and no refresh token was reused."
    return (
        "PASS, partly: every request succeeded and no refresh token was reused, but this run "
        f"was too short to show {', '.join(missing)} (a revocation comes about every "
        f"{config.revoke_every:g} s; run it longer, e.g. --seconds 10)."
    )


def _minted(step: dict[str, Any], key: str) -> str:
    moment = step.get(f"{key}_minted_at")
    return f"{step[key]}" if moment is None else f"{step[key]} (minted {moment:.3f} s)"


def _describe(trace: dict[str, Any]) -> str:
    """One failed recovery in a sentence: what each send carried and what each step did."""
    steps: list[dict[str, Any]] = trace["steps"]
    first = _minted(steps[0], "rejected")
    told = [f"at {trace['at']:.3f} s {trace['api']} {trace['method']}: 401 to {first}"]
    for step in steps:
        if step["outcome"] in {"changed", "unchanged"}:
            then = (
                f" -> send {step['send'] + 1} with {_minted(step, 'retry_with')}"
                if "retry_with" in step
                else ""
            )
            told.append(f"{step['step']} {step['outcome']} at {step['at']:.3f} s{then}")
        else:
            why = step.get("reason", "")
            told.append(
                f"{step['outcome']} ({why}) after send {step['send']} at {step['at']:.3f} s"
            )
    revocations = ", ".join(f"{t:.3f}" for t in trace["revocations"]) or "none"
    refreshes = ", ".join(f"{t:.3f}" for t in trace["refreshes"]) or "none"
    return "; ".join(told) + f"; revocations at {revocations} s; refreshes at {refreshes} s"
