"""AuthMiddleware's edges: how origins are given, loopback spellings, and 401 bodies that are
huge or trickle in (issue 11 item 10, issue 12 item 15)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tracemalloc
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from aioscopedauth import AuthDotJson, AuthManager, AuthMiddleware
from aioscopedauth import _middleware as middleware_module
from aioscopedauth.testing import FakeAuthServer, serve_on_loopback, write_auth_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

MIB = 1024 * 1024


# -- origins ------------------------------------------------------------------------------


def test_a_single_origin_may_be_a_string_or_url(manager: AuthManager) -> None:
    for origin in ("https://api.example", URL("https://api.example:443/")):
        middleware = AuthMiddleware(manager, origins=origin)
        assert middleware.in_scope(URL("https://api.example/v1"))
        assert not middleware.in_scope(URL("https://h/v1"))  # not one origin per character
    listed = AuthMiddleware(manager, origins=["https://api.example/"])
    assert listed.in_scope(URL("https://api.example/anything"))


@pytest.mark.parametrize(
    ("origin", "what"),
    [
        ("https://api.example/v1", "a path"),
        ("https://api.example/?x=1", "a query"),
        ("https://api.example/#top", "a fragment"),
        ("https://user:hunter2-secret@api.example", "user info"),
        ("https://api.example/v1?x=1", "a path and a query"),
    ],
)
def test_an_origin_with_more_than_an_origin_is_refused(
    manager: AuthManager, origin: str, what: str
) -> None:
    with pytest.raises(ValueError, match=r"origins are scheme://host\[:port\] only") as raised:
        AuthMiddleware(manager, origins=[origin])
    message = str(raised.value)
    assert f"got one with {what};" in message
    assert "use 'https://api.example'" in message
    assert "hunter2-secret" not in message


def test_relative_origins_are_refused(manager: AuthManager) -> None:
    with pytest.raises(ValueError, match="origins must be absolute URLs, got '/relative'"):
        AuthMiddleware(manager, origins="/relative")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost.", True),
        ("app.localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("ip6-localhost", True),
        ("example.com", False),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        (None, False),
    ],
)
def test_loopback_names_are_known_without_dns(host: str | None, loopback: bool) -> None:
    assert middleware_module._is_loopback(host) is loopback


async def test_a_401_from_another_spelling_of_loopback_warns_once(
    home: Path, manager: AuthManager, server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    write_auth_json(home, server.login())
    port = URL(server.url).port
    middleware = AuthMiddleware(manager, origins=server.url)  # http://127.0.0.1:PORT
    caplog.set_level(logging.WARNING, logger="aioscopedauth")
    async with aiohttp.ClientSession(middlewares=(middleware,)) as client:
        for _ in range(2):
            async with client.get(f"http://localhost:{port}/api/x") as response:
                assert response.status == 401
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"http://localhost:{port} answered 401" in warnings[0]
    assert f"['http://127.0.0.1:{port}']" in warnings[0]
    sent = server.last_api_request
    assert sent is not None
    assert "Authorization" not in sent["headers"]  # still never sent out of scope


async def test_a_401_from_an_unrelated_origin_is_not_warned_about(
    home: Path, manager: AuthManager, server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    write_auth_json(home, server.login())
    middleware = AuthMiddleware(manager, origins="https://api.example")
    caplog.set_level(logging.WARNING, logger="aioscopedauth")
    async with (
        aiohttp.ClientSession(middlewares=(middleware,)) as client,
        client.get(f"{server.url}/api/x") as response,
    ):
        assert response.status == 401
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- 401 bodies ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _serve_api(
    server: FakeAuthServer,
    unauthorized: Callable[[web.Request], Awaitable[web.StreamResponse]],
    peers: set[object] | None = None,
) -> AsyncIterator[str]:
    """An API that accepts the fake server's tokens and answers others with ``unauthorized``."""

    async def api(request: web.Request) -> web.StreamResponse:
        if peers is not None and request.transport is not None:
            peers.add(request.transport.get_extra_info("peername"))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if server.is_valid_access_token(token):
            return web.json_response({"ok": True})
        return await unauthorized(request)

    app = web.Application()
    app.router.add_get("/api/{tail:.*}", api)
    runner, url = await serve_on_loopback(app)
    try:
        yield url
    finally:
        await runner.cleanup()


def _streaming_401(
    total: int, *, chunk: bytes, declare_length: bool, pause: float = 0.0
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def unauthorized(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=401)
        if declare_length:
            response.content_length = total
        await response.prepare(request)
        sent = 0
        try:
            while sent < total:
                part = chunk[: total - sent]
                await response.write(part)
                sent += len(part)
                if pause:
                    await asyncio.sleep(pause)  # the trickle itself, not a wait for a race
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            return response  # the client went away: it did not want the rest
        await response.write_eof()
        return response

    return unauthorized


@pytest.fixture
async def session(manager: AuthManager) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=None)  # nothing but the middleware bounds the wait
    async with aiohttp.ClientSession(
        middlewares=(AuthMiddleware(manager),), timeout=timeout
    ) as client:
        yield client


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_a_huge_401_body_is_not_read_before_recovering(
    home: Path, server: FakeAuthServer, session: aiohttp.ClientSession, declare_length: bool
) -> None:
    write_auth_json(home, server.login())
    server.revoke_access_tokens()
    huge = _streaming_401(300 * MIB, chunk=bytes(MIB), declare_length=declare_length)
    tracemalloc.start()
    try:
        async with asyncio.timeout(60):  # a failure, not a hang, if the bound is lost
            async with (
                _serve_api(server, huge) as url,
                session.get(f"{url}/api/x") as response,
            ):
                assert response.status == 200
                assert await response.json() == {"ok": True}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.refreshes == 1
    assert peak < 32 * MIB  # a 300 MiB body, never read (it was ~516 MB before)


async def test_a_trickling_401_body_does_not_hold_the_request(
    home: Path, server: FakeAuthServer, session: aiohttp.ClientSession
) -> None:
    write_auth_json(home, server.login())
    server.revoke_access_tokens()
    trickle = _streaming_401(10_000, chunk=b"x", declare_length=True, pause=0.05)
    async with asyncio.timeout(60):  # the session has no timeout: this is the only bound
        async with (
            _serve_api(server, trickle) as url,
            session.get(f"{url}/api/x") as response,
        ):
            assert response.status == 200
    assert server.refreshes == 1


@pytest.mark.parametrize(
    ("total", "declare_length", "pause"),
    [(2 * MIB, True, 0.0), (2 * MIB, False, 0.0), (40, True, 0.05)],
    ids=["large", "large-chunked", "trickling"],
)
async def test_an_unrecovered_401_reaches_the_caller_whole(
    home: Path,
    server: FakeAuthServer,
    session: aiohttp.ClientSession,
    total: int,
    declare_length: bool,
    pause: float,
) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-wrong"))  # an API key: nothing to refresh
    chunk = b"z" if pause else bytes(range(256)) * 256
    body = _streaming_401(total, chunk=chunk, declare_length=declare_length, pause=pause)
    async with asyncio.timeout(60):
        async with _serve_api(server, body) as url, session.get(f"{url}/api/x") as response:
            assert response.status == 401
            received = await response.read()
    assert received == (chunk * (total // len(chunk) + 1))[:total]


async def test_a_small_401_body_is_buffered_and_the_connection_reused(
    home: Path, server: FakeAuthServer, session: aiohttp.ClientSession
) -> None:
    write_auth_json(home, server.login())
    server.revoke_access_tokens()
    peers: set[object] = set()

    async def small(_: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "invalid_token"}, status=401)

    async with (
        _serve_api(server, small, peers) as url,
        session.get(f"{url}/api/x") as response,
    ):
        assert response.status == 200
    assert server.refreshes == 1
    assert len(peers) == 1  # the rejected send and its retry went over one kept-alive connection
