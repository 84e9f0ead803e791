"""A user's own bearer source gets the manager's single flight (issue 21 item 3)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    AuthMode,
    ExternalAuthTokens,
    MemoryAuthStore,
    RefreshContext,
)
from aioscopedauth.testing import serve_on_loopback

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class _Api:
    """An API on 127.0.0.1 that accepts one bearer token at a time."""

    def __init__(self) -> None:
        self.current = "tok-1"
        self.hits = 0
        self.rejections = 0
        self.expect_rejections = 0
        self.rejected_all = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if request.headers.get("Authorization") != f"Bearer {self.current}":
            self.rejections += 1
            if self.rejections == self.expect_rejections:
                self.rejected_all.set()
            return web.Response(status=401)
        return web.Response(text="ok")


class _UserSource:
    """A user's source (not a command): mints the API's next token on refresh, counts calls."""

    def __init__(self, api: _Api, first: str) -> None:
        self.api = api
        self.token = first
        self.resolves = 0
        self.refreshes: list[str | None] = []
        self.minting = asyncio.Event()

    @property
    def mode(self) -> AuthMode:
        return AuthMode.BEARER

    async def resolve(self) -> ExternalAuthTokens | None:
        self.resolves += 1
        await asyncio.sleep(0)  # a real source awaits something; let others pile up
        return ExternalAuthTokens.access_token_only(self.token)

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        self.refreshes.append(context.rejected_token)
        await self.minting.wait()
        number = int(self.token.removeprefix("tok-")) + 1
        self.token = f"tok-{number}"
        self.api.current = self.token
        return ExternalAuthTokens.access_token_only(self.token)


@pytest.fixture
async def api() -> AsyncIterator[tuple[_Api, str]]:
    app = web.Application()
    state = _Api()
    app.router.add_get("/v1/things", state.handle)
    runner, url = await serve_on_loopback(app)
    try:
        yield state, url
    finally:
        await runner.cleanup()


async def test_200_concurrent_401s_on_one_token_make_one_refresh_and_one_resolve(
    api: tuple[_Api, str],
) -> None:
    state, url = api
    source = _UserSource(state, "tok-0")  # the API already moved on to tok-1
    async with AuthManager(MemoryAuthStore()) as base:
        manager = base.with_external_bearer_refresher(source)
        middleware = AuthMiddleware(manager, origins=[url])
        connector = aiohttp.TCPConnector(limit=0)  # every request on the wire at once
        async with aiohttp.ClientSession(middlewares=(middleware,), connector=connector) as http:

            async def one() -> int:
                async with http.get(f"{url}/v1/things") as response:
                    return response.status

            state.expect_rejections = 200
            requests = [asyncio.create_task(one()) for _ in range(200)]
            await state.rejected_all.wait()  # every request saw tok-0 rejected
            source.minting.set()
            statuses = await asyncio.gather(*requests)
    assert statuses == [200] * 200
    assert source.refreshes == ["tok-0"]  # one refresh, told the rejected token
    assert source.resolves == 1  # the one snapshot, resolved once for everyone
    assert (state.hits, state.rejections) == (400, 200)


async def test_resolve_is_asked_again_when_the_token_ages_or_the_source_opts_out(
    api: tuple[_Api, str],
) -> None:
    state, _ = api

    class Expiring(_UserSource):
        async def resolve(self) -> ExternalAuthTokens | None:
            self.resolves += 1
            # Already past three quarters of its life: asked again on the next call.
            return ExternalAuthTokens.access_token_only(
                self.token, expires_at=datetime.now(UTC) - timedelta(seconds=1)
            )

    class OwnCache(_UserSource):
        cache_resolved = False

    for source_type, expected in ((_UserSource, 1), (Expiring, 3), (OwnCache, 3)):
        source = source_type(state, "tok-1")
        async with AuthManager(MemoryAuthStore()) as base:
            manager = base.with_external_bearer_refresher(source)
            for _ in range(3):
                auth = await manager.auth()
                assert auth is not None
                assert auth.token == "tok-1"
        assert source.resolves == expected, source_type.__name__


async def test_a_cancelled_resolver_hands_the_resolve_to_a_waiting_caller(
    api: tuple[_Api, str],
) -> None:
    state, _ = api
    gate, entered = asyncio.Event(), asyncio.Event()

    class Slow(_UserSource):
        async def resolve(self) -> ExternalAuthTokens | None:
            self.resolves += 1
            entered.set()
            await gate.wait()
            return ExternalAuthTokens.access_token_only(self.token)

    source = Slow(state, "tok-1")
    async with AuthManager(MemoryAuthStore()) as base:
        manager = base.with_external_bearer_refresher(source)
        first = asyncio.create_task(manager.auth())
        await entered.wait()
        second = asyncio.create_task(manager.auth())
        await asyncio.sleep(0)  # one turn: the second caller is now waiting on the first's resolve
        first.cancel()
        gate.set()
        auth = await second
        assert auth is not None
        assert auth.token == "tok-1"
        assert first.cancelled()
    assert source.resolves == 2  # the waiting caller resolved itself, not cancelled with it


def test_the_how_to_example_runs_as_its_page_says(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "docs" / "examples" / "own_token_source.py"
    run = subprocess.run(
        [sys.executable, example.name],
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == (
        "before: 200\nafter a rotation: [200] for 20\ntokens minted for those 20 requests: 1\n"
    )
