"""The standard logins' edges that no real provider produces on demand.

Real loopback servers throughout: the browser login's own redirect server, and a small
revocation endpoint that fails. The happy paths run against the real provider (tests/oidc).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    ConfigError,
    FileAuthStore,
    LoginError,
    MemoryAuthStore,
    OAuthConfig,
    ProviderLogin,
)
from aioscopedauth.testing import serve_on_loopback

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

STANDARD = OAuthConfig(
    "http://127.0.0.1:9/token",
    "my-app",
    dialect="rfc6749",
    authorization_url="http://127.0.0.1:9/authorize",
    scopes=("openid", "offline_access"),
)


async def _refused(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url):
            return False
    except aiohttp.ClientConnectionError:
        return True


async def test_a_browser_login_nobody_finishes_times_out_and_closes_its_server() -> None:
    opened: list[str] = []

    async def open_url(url: str) -> None:
        opened.append(url)

    async with AuthManager(MemoryAuthStore(), STANDARD) as manager:
        with pytest.raises(LoginError) as caught:
            await manager.login_with_browser(open_url, timeout=0.2)
        assert str(caught.value) == (
            "No answer from the browser within 0.2 s. Start the login again and finish it in "
            "the browser."
        )
        assert await manager.auth() is None
    (url,) = opened
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert await _refused(redirect)


async def test_a_cancelled_browser_login_closes_its_server() -> None:
    opened: asyncio.Queue[str] = asyncio.Queue()

    async with AuthManager(MemoryAuthStore(), STANDARD) as manager:
        task = asyncio.create_task(manager.login_with_browser(opened.put))
        url = await opened.get()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await manager.auth() is None
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert await _refused(redirect)


async def test_the_redirect_server_checks_state_then_reports_a_refusal() -> None:
    opened: asyncio.Queue[str] = asyncio.Queue()
    async with AuthManager(MemoryAuthStore(), STANDARD) as manager:
        task = asyncio.create_task(manager.login_with_browser(opened.put))
        query = parse_qs(urlsplit(await opened.get()).query)
        redirect, state = query["redirect_uri"][0], query["state"][0]
        assert query["prompt"] == ["consent"]
        assert query["code_challenge_method"] == ["S256"]
        async with aiohttp.ClientSession() as http:
            forged = {"code": "CANARY-forged-code", "state": "another-login"}
            async with http.get(redirect, params=forged) as r:
                assert r.status == 400
                assert "not the login this application started" in await r.text()
            assert not task.done()  # ignored: still waiting for this login's answer
            refused = {"error": "access_denied", "state": state}
            async with http.get(redirect, params=refused) as r:
                assert r.status == 400
                assert "The login did not complete (access_denied)" in await r.text()
        with pytest.raises(LoginError) as caught:
            await task
    assert caught.value.error_code == "access_denied"
    assert "CANARY" not in str(caught.value)


@pytest.mark.parametrize(
    "login",
    [
        lambda m: m.login_with_browser(lambda _url: None),
        lambda m: m.login_with_refresh_token("r"),
        lambda m: m.login_with_client_credentials(),
        lambda m: m.login_with_device_code(lambda _code: None),
    ],
    ids=["browser", "refresh_token", "client_credentials", "device_code"],
)
async def test_the_standard_logins_need_a_standard_configuration(login: object) -> None:
    async with AuthManager(MemoryAuthStore(), OAuthConfig("http://127.0.0.1:9/t", "c")) as m:
        with pytest.raises(ConfigError, match="standard provider"):
            await login(m)  # type: ignore[operator]


@pytest.fixture
async def failing_revocation() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def revoke(request: web.Request) -> web.Response:
        seen.append((await request.post())["token"])  # type: ignore[arg-type]
        return web.json_response({"error": "server_error"}, status=503)

    app = web.Application()
    app.router.add_post("/revoke", revoke)
    runner, url = await serve_on_loopback(app)
    try:
        yield f"{url}/revoke", seen
    finally:
        await runner.cleanup()


async def test_logout_removes_the_login_when_revocation_fails(
    failing_revocation: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    url, seen = failing_revocation
    config = OAuthConfig(
        "http://127.0.0.1:9/token", "my-app", dialect="rfc6749", revocation_url=url
    )
    store = MemoryAuthStore()
    await store.save(
        AuthDotJson.for_provider_login(
            ProviderLogin("https://id.example", "my-app", "alice"),
            access_token="CANARY-access",
            refresh_token="CANARY-refresh",
            id_token=None,
            expires_at=None,
            now=datetime.now(UTC),
        )
    )
    caplog.set_level(logging.DEBUG)
    async with AuthManager(store, config) as manager:
        assert await manager.logout() is True
        assert await manager.auth() is None
    assert seen == ["CANARY-refresh"]  # the refresh token, once
    assert "Could not revoke the login at the provider" in caplog.text
    assert "CANARY" not in caplog.text


async def test_logout_of_an_unreadable_login_still_removes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "auth.json").write_text("{not json")
    (home / "auth.json").chmod(0o600)
    config = OAuthConfig(
        "http://127.0.0.1:9/token",
        "my-app",
        dialect="rfc6749",
        revocation_url="http://127.0.0.1:9/revoke",
    )
    async with AuthManager(FileAuthStore(home), config) as manager:
        assert await manager.logout() is True
    assert not (home / "auth.json").exists()
    assert "Could not read the login to revoke it at the provider" in caplog.text
