"""The embedded demo: many agents stay authenticated through expiries and revocations.

Everything runs on 127.0.0.1 in this process, in a temporary home:

* a token endpoint and API (:class:`~aioscopedauth.testing.FakeAuthServer`) whose access tokens
  live two seconds and whose refresh tokens are single-use and rotate;
* a provider API that accepts HMAC-signed bearer tokens minted by a real command (a Python
  script run as a subprocess), valid three seconds;
* random revocations of both;
* N agents making requests through :class:`AuthMiddleware`, some on the managed login and some
  on the provider.

It exits 0 only when no request failed and no refresh token was spent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import secrets
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import aiohttp
import attrs
from aiohttp import web

from ._command import CommandBearerRefresher, ProviderAuthCommand
from ._manager import AuthManager
from ._middleware import AuthMiddleware, RecoveryEvent
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
    """

    agents: int = 50
    seconds: float = 10.0
    revoke_every: float = 1.5
    seed: int | None = None


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
    access_expirations: int = 0
    revocations: int = 0
    provider_revocations: int = 0
    command_runs: int = 0
    provider_requests: int = 0
    failures: list[str] = attrs.Factory(list)

    @property
    def passed(self) -> bool:
        """No request failed and no refresh token was reused."""
        return self.failed == 0 and self.reuse_answers == 0 and self.requests > 0


class _ProviderApi:
    """A provider API that accepts fresh, unrevoked HMAC-signed tokens from the mint script."""

    def __init__(self, key: bytes) -> None:
        self.key = key
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
        return minted >= self.revoked_before and time.time() < minted + PROVIDER_TTL

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


class _Progress:
    """A live status line on a terminal; a plain line a second otherwise."""

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

    def line(self) -> str:
        r = self.result
        return (
            f"{time.monotonic() - self.started:5.1f}s  requests {r.requests:6d}  ok {r.ok:6d}  "
            f"failed {r.failed}  401s recovered {r.recovered_401s:4d}  "
            f"token refreshes {self.server.refreshes:3d}  command runs {self.refresher.runs:3d}"
        )

    async def run(self) -> None:
        interval = 0.2 if self.tty else 1.0
        while True:
            await asyncio.sleep(interval)
            self.show()

    def show(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line())
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    def finish(self) -> None:
        self.show()
        if self.tty:
            self.out.write("\n")


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
    server: FakeAuthServer, provider: _ProviderApi, result: DemoResult, every: float
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
        else:
            provider.revoked_before = time.time()
            result.provider_revocations += 1
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

    Returns:
        What happened; ``result.passed`` tells whether every request succeeded and no refresh
        token was reused.
    """
    if config.seed is not None:
        random.seed(config.seed)
    result = DemoResult()

    def count(event: RecoveryEvent) -> None:
        if event.outcome == "changed":
            result.recovered_401s += 1
        if on_event is not None:
            on_event(event)

    with tempfile.TemporaryDirectory(prefix="aioscopedauth-demo-") as tmp:
        home = Path(tmp) / "home"
        tools = Path(tmp) / "tools"
        tools.mkdir()
        (tools / "mint-token.py").write_text(_MINT_SCRIPT % {"ttl": PROVIDER_TTL})
        key = secrets.token_hex(16)
        async with FakeAuthServer(access_ttl=ACCESS_TTL, client_id="demo-client") as server:
            provider = _ProviderApi(key.encode())
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
                    run = _Run(config, result, server, provider, refresher, out)
                    await run.agents(
                        AuthMiddleware(base, origins=[server.url], on_event=count),
                        AuthMiddleware(derived, origins=[provider.url], on_event=count),
                    )
                result.command_runs = refresher.runs
            finally:
                await provider.close()
            result.refreshes = server.refreshes
            result.token_calls = server.token_calls
            result.reuse_answers = server.reuse_answers
    result.access_expirations = int(config.seconds / (ACCESS_TTL.total_seconds() * 0.75))
    _summary(out, config, result)
    return result


@attrs.define
class _Run:
    config: DemoConfig
    result: DemoResult
    server: FakeAuthServer
    provider: _ProviderApi
    refresher: CommandBearerRefresher
    out: TextIO

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
                asyncio.create_task(_revoker(server, provider, result, config.revoke_every)),
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


def _header(
    out: TextIO, config: DemoConfig, server: FakeAuthServer, provider: _ProviderApi, home: Path
) -> None:
    out.write(
        "aioscopedauth demo: "
        f"{config.agents} agents for {config.seconds:g} s on 127.0.0.1\n"
        f"  token endpoint + API  {server.url}  (access tokens live {ACCESS_TTL.seconds} s, "
        "refresh tokens are single-use)\n"
        f"  provider API          {provider.url}  (bearer from a command, valid "
        f"{PROVIDER_TTL:g} s)\n"
        f"  temporary home        {home}\n"
        "  random revocations of both, about every "
        f"{config.revoke_every:g} s\n\n"
    )
    out.flush()


def _summary(out: TextIO, config: DemoConfig, result: DemoResult) -> None:
    rows = [
        ("requests", result.requests),
        ("  succeeded", result.ok),
        ("  failed", result.failed),
        ("  on the provider", result.provider_requests),
        ("401s recovered", result.recovered_401s),
        ("access-token lifetimes passed (~)", result.access_expirations),
        ("managed revocations", result.revocations),
        ("token refreshes", result.refreshes),
        ("token endpoint calls", result.token_calls),
        ("refresh tokens reused", result.reuse_answers),
        ("provider revocations", result.provider_revocations),
        ("bearer command runs", result.command_runs),
    ]
    width = max(len(name) for name, _ in rows)
    out.write(f"\nSummary after {config.seconds:g} s with {config.agents} agents\n")
    out.writelines(f"  {name:<{width}}  {value:>8}\n" for name, value in rows)
    per_expiry = result.refreshes / max(result.access_expirations + result.revocations, 1)
    out.write(f"  {'refreshes per expiry or revocation':<{width}}  {per_expiry:>8.2f}\n")
    out.writelines(f"  example failure: {failure}\n" for failure in result.failures)
    verdict = (
        "PASS: every request succeeded and no refresh token was reused"
        if result.passed
        else "FAIL: some requests failed or a refresh token was reused"
    )
    out.write(f"\n{verdict}\n")
    out.flush()
