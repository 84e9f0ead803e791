"""The grants' faults that a real provider will not produce: 5xx, garbage, hangs, cancellation.

The happy paths and the standard errors run against a real provider in tests/oidc.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from aioscopedauth import LoginError, OAuthConfig, TransientRefreshError
from aioscopedauth._grants import (
    DeviceCode,
    parse_device_code,
    poll_device_token,
    request_client_credentials,
    request_device_code,
)
from aioscopedauth.testing._server import serve_on_loopback

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    Start = Callable[[list["Answer"]], Awaitable[tuple[OAuthConfig, list[str]]]]

Answer = tuple[int, Any]
"""A status and a JSON body (or bytes sent as they are)."""


@pytest.fixture
async def provider() -> AsyncIterator[
    Callable[[list[Answer]], Awaitable[tuple[OAuthConfig, list[str]]]]
]:
    """A fake provider answering /token and /device from a script; the config and the calls."""
    runners: list[web.AppRunner] = []

    async def start(script: list[Answer]) -> tuple[OAuthConfig, list[str]]:
        calls: list[str] = []

        async def answer(request: web.Request) -> web.Response:
            form = dict(await request.post())
            calls.append(str(form.get("grant_type", request.path)))
            status, body = script.pop(0) if len(script) > 1 else script[0]
            if isinstance(body, bytes):
                return web.Response(status=status, body=body, content_type="application/json")
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_post("/token", answer)
        app.router.add_post("/device", answer)
        runner, url = await serve_on_loopback(app)
        runners.append(runner)
        config = OAuthConfig(
            f"{url}/token",
            "c",
            client_secret="CANARY-grant-secret-5d",
            dialect="rfc6749",
            device_authorization_url=f"{url}/device",
            timeout=2.0,
        )
        return config, calls

    yield start
    for runner in runners:
        await runner.cleanup()


DEVICE = DeviceCode("ABCD-EFGH", "http://x/device", None, 30.0, 0.05, device_code="dc-secret")
PENDING: Answer = (400, {"error": "authorization_pending"})
TOKENS: Answer = (200, {"access_token": "a", "token_type": "Bearer", "refresh_token": "r"})


async def test_polling_goes_on_through_5xx_and_garbage_errors(
    provider: Start,
) -> None:
    config, calls = await provider(
        [PENDING, (503, b"<html>down</html>"), (400, b"<html>proxy</html>"), PENDING, TOKENS]
    )
    async with aiohttp.ClientSession() as http:
        answer = await poll_device_token(http, config, DEVICE)
    assert answer.refresh_token == "r"
    assert len(calls) == 5


async def test_an_unusable_token_answer_ends_the_polling_at_once(
    provider: Start,
) -> None:
    config, calls = await provider([PENDING, (200, b"{truncated"), PENDING])
    async with aiohttp.ClientSession() as http:
        with pytest.raises(LoginError) as caught:
            await poll_device_token(http, config, DEVICE)
    assert str(caught.value) == (
        "Failed to finish the device login: the provider's token answer is unusable, and the "
        "device code is not presented twice (a strict provider would revoke the login). Start "
        "the login again."
    )
    assert caught.value.__cause__ is None
    assert calls == ["urn:ietf:params:oauth:grant-type:device_code"] * 2


async def test_a_provider_that_never_decides_ends_at_the_codes_lifetime(
    provider: Start,
) -> None:
    config, calls = await provider([PENDING])
    short = DeviceCode("A", "http://x/device", None, 0.3, 0.05, device_code="dc")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(LoginError) as caught:
            await poll_device_token(http, config, short)
    assert caught.value.error_code == "expired_token"
    # One poll an interval, over the lifetime and two intervals more: 8 at most (fewer on a
    # loaded machine, where each poll takes longer).
    assert 1 <= len(calls) <= 8


async def test_cancelling_the_polling_stops_it(provider: Start) -> None:
    config, calls = await provider([PENDING])
    slow = DeviceCode("A", "http://x/device", None, 60.0, 0.1, device_code="dc")
    async with aiohttp.ClientSession() as http:
        polling = asyncio.create_task(poll_device_token(http, config, slow))
        # Until the first poll has reached the provider, one loop turn at a time (no delay).
        while not calls:  # noqa: ASYNC110 -- the fake's own list is the counter
            await asyncio.sleep(0)
        polling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await polling
    # Only the task polls, and it is over: no poll can follow.
    assert len(calls) == 1


async def test_unusable_device_answers_and_a_token_answer_without_a_token(
    provider: Start,
) -> None:
    config, _ = await provider([(200, {"device_code": "d", "verification_uri": "http://x"})])
    async with aiohttp.ClientSession() as http:
        with pytest.raises(LoginError) as caught:
            await request_device_code(http, config)
        assert str(caught.value) == (
            "Failed to start a device login: the provider's answer is unusable (its user_code "
            "is missing or not a printable string). Retry later."
        )
    config, _ = await provider([(200, {"token_type": "Bearer", "expires_in": 60})])
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TransientRefreshError) as error:
            await request_client_credentials(http, config)
    assert str(error.value) == (
        "Failed to get a token with client credentials: the provider's answer is unusable (it "
        "has no access_token). Retry later."
    )


def test_device_answers() -> None:
    base = {"device_code": "d", "user_code": "U", "expires_in": 600}
    device = parse_device_code(json.dumps({**base, "verification_url": "http://x/v"}))
    assert device == DeviceCode("U", "http://x/v", None, 600.0, 5.0, device_code="d")
    assert parse_device_code(
        json.dumps({**base, "verification_uri": "http://x", "interval": -1})
    ) == ("its interval is not above zero")
    assert parse_device_code("[]") == "it is not a JSON object"
