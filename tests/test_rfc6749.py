"""The RFC 6749 dialect's pure parts, and the faults a real provider will not produce.

The happy paths and the standard errors run against a real provider in tests/oidc; the fakes
here hang, fail with 5xx, answer garbage or echo secrets back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from aioscopedauth import (
    ClientConfigError,
    OAuthConfig,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from aioscopedauth._dialect import request_token_refresh
from aioscopedauth._oauth import MAX_EXPIRES_IN, TokenResponse
from aioscopedauth._rfc6749 import (
    basic_authorization,
    classify_standard_failure,
    parse_expires_in,
    parse_standard_token_response,
)
from aioscopedauth.testing._server import serve_on_loopback

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

SECRET = "CANARY-client:secret %+/&=4a1c"
REFRESH = "CANARY-refresh/+ token=9e2b"


def test_basic_credentials_are_form_encoded_before_base64() -> None:
    value = basic_authorization("a b:c%", "x+y/z:ü")
    assert value.startswith("Basic ")
    assert base64.b64decode(value[6:]).decode() == "a+b%3Ac%25:x%2By%2Fz%3A%C3%BC"


@pytest.mark.parametrize(
    ("value", "seconds", "problem"),
    [
        (None, None, None),
        (3600, 3600.0, None),
        (59.5, 59.5, None),
        ("3599", 3599.0, None),  # a numeric string, as some providers send it
        (float("nan"), None, "its expires_in is not a finite number"),
        (float("inf"), None, "its expires_in is not a finite number"),
        (-5, None, "its expires_in is not above zero"),
        (0, None, "its expires_in is not above zero"),
        (True, None, "its expires_in is not a number"),
        ("soon", None, "its expires_in is not a number"),
        ({"s": 1}, None, "its expires_in is not a number"),
        (1e300, float(MAX_EXPIRES_IN), None),  # clamped: no datetime overflow downstream
        (10**400, float(MAX_EXPIRES_IN), None),
    ],
)
def test_expires_in(value: object, seconds: float | None, problem: str | None) -> None:
    assert parse_expires_in(value) == (seconds, problem)


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0, MAX_EXPIRES_IN + 1, True])
def test_a_token_response_never_holds_an_unusable_lifetime(value: float) -> None:
    with pytest.raises(ValueError, match=r"^expires_in must be None or a number of seconds"):
        TokenResponse(access_token="a", expires_in=value)


def test_answers_keep_what_is_usable() -> None:
    answer = parse_standard_token_response(
        json.dumps({"access_token": "a", "token_type": "bearer", "expires_in": 60, "scope": "x y"})
    )
    assert answer == TokenResponse(access_token="a", expires_in=60.0, scope="x y")
    # Without an access token, or with one that is not a bearer, the refresh token is kept.
    dpop = {"refresh_token": "r", "access_token": "a", "token_type": "DPoP"}
    for body in ({"refresh_token": "r"}, dpop):
        answer = parse_standard_token_response(json.dumps(body))
        assert answer is not None
        assert answer.refresh_token == "r"
        assert answer.access_token is None
        assert answer.dropped == ("access_token",)
        assert answer.usable
    assert parse_standard_token_response("[1]") is None
    # NaN is not JSON, but Python's parser reads it: the lifetime is unknown, the token kept.
    answer = parse_standard_token_response('{"access_token": "a", "expires_in": NaN}')
    assert answer == TokenResponse(access_token="a")


CONFIG = OAuthConfig("http://127.0.0.1:9/t", "c", client_secret=SECRET, dialect="rfc6749")


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (400, {"error": "invalid_grant"}, RefreshTokenFailedError, "invalid_grant"),
        (400, {"error": "INVALID_GRANT "}, RefreshTokenFailedError, "invalid_grant"),
        (401, {"error": "invalid_client"}, ClientConfigError, "invalid_client"),
        (401, None, ClientConfigError, "invalid_client"),  # a bare 401 (§5.2 allows it)
        (400, {"error": "unauthorized_client"}, ClientConfigError, "unauthorized_client"),
        (400, {"error": "unsupported_grant_type"}, ClientConfigError, "unsupported_grant_type"),
        (400, {"error": "invalid_scope"}, ClientConfigError, "invalid_scope"),
        (400, {"error": "invalid_request"}, ClientConfigError, "invalid_request"),
        (400, {"error": "temporarily_unavailable"}, TransientRefreshError, None),
        (400, {"error": "something_new"}, TransientRefreshError, None),
        (400, None, TransientRefreshError, None),
        (403, None, TransientRefreshError, None),
        (429, {"error": "invalid_client"}, TransientRefreshError, None),
        (500, {"error": "invalid_grant"}, TransientRefreshError, None),
        (503, None, TransientRefreshError, None),
    ],
)
def test_classification(status: int, body: Any, kind: type, code: str | None) -> None:
    text = "<html>proxy error</html>" if body is None else json.dumps(body)
    error = classify_standard_failure(status, text, config=CONFIG)
    assert type(error) is kind
    if code is not None:
        assert isinstance(error, RefreshTokenFailedError)
        assert error.error_code == code
    else:
        assert isinstance(error, TransientRefreshError)
        assert error.status == status


@pytest.fixture
async def token_endpoint() -> AsyncIterator[Callable[[Any], Awaitable[str]]]:
    """Serve one handler as /token on a loopback port; its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Any) -> str:
        app = web.Application()
        app.router.add_post("/token", handler)
        runner, url = await serve_on_loopback(app)
        runners.append(runner)
        return f"{url}/token"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _refresh(url: str, **fields: Any) -> TokenResponse:
    config = OAuthConfig(url, "c", dialect="rfc6749", **fields)
    async with aiohttp.ClientSession() as http:
        return await request_token_refresh(http, config, REFRESH)


@pytest.mark.parametrize(
    ("fields", "form", "authorization"),
    [
        ({}, [("client_id", "c")], None),
        (
            {"client_secret": SECRET, "client_auth": "client_secret_post"},
            [("client_id", "c"), ("client_secret", SECRET)],
            None,
        ),
        ({"client_secret": SECRET}, [], basic_authorization("c", SECRET)),
    ],
    ids=["none", "post", "basic"],
)
async def test_the_request_is_a_form_with_the_client_authenticated(
    token_endpoint: Callable[[Any], Awaitable[str]],
    fields: dict[str, Any],
    form: list[tuple[str, str]],
    authorization: str | None,
) -> None:
    seen: list[Any] = []

    async def token(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        seen.append((request.content_type, parse_qsl(body), request.headers.get("Authorization")))
        seen.append(request.headers.get("Accept"))
        return web.json_response({"access_token": "a", "token_type": "Bearer", "expires_in": 5})

    answer = await _refresh(await token_endpoint(token), **fields)
    assert answer.expires_in == 5
    assert seen == [
        (
            "application/x-www-form-urlencoded",
            [("grant_type", "refresh_token"), ("refresh_token", REFRESH), *form],
            authorization,
        ),
        "application/json",
    ]


async def test_faults_are_transient(token_endpoint: Callable[[Any], Awaitable[str]]) -> None:
    release = asyncio.Event()
    calls = 0

    async def token(_: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()  # a hang
        if calls == 2:
            return web.Response(body=b"\xff\xfe not json", content_type="application/json")
        if calls == 3:
            return web.Response(status=502, text="<html>bad gateway</html>")
        return web.Response(body=b'{"access_token": "' + b"a" * (2 * 1024 * 1024) + b'"}')

    url = await token_endpoint(token)
    try:
        with pytest.raises(TransientRefreshError) as hang:
            await _refresh(url, timeout=0.3)
    finally:
        release.set()
    assert str(hang.value) == (
        f"Failed to refresh token: {url} did not answer within 0.3 s. Retry later."
    )
    with pytest.raises(TransientRefreshError) as garbage:
        await _refresh(url)
    assert str(garbage.value) == (
        "Failed to refresh token: the token endpoint answered with something that is not a "
        "JSON object. Retry later."
    )
    with pytest.raises(TransientRefreshError) as gateway:
        await _refresh(url)
    assert gateway.value.status == 502
    assert str(gateway.value) == (
        "Failed to refresh token: 502 Bad Gateway (no OAuth error code). Retry later."
    )
    with pytest.raises(TransientRefreshError, match="larger than 1024 KiB"):
        await _refresh(url)
    assert calls == 4


async def test_secrets_echoed_back_are_never_quoted(
    token_endpoint: Callable[[Any], Awaitable[str]],
    canary_logs: pytest.LogCaptureFixture,
) -> None:
    async def token(request: web.Request) -> web.Response:
        # A hostile or careless provider quotes the whole request in its description.
        echo = f"{request.headers.get('Authorization')} {(await request.read()).decode()}"
        status = 401 if "Basic" in echo else 503
        return web.json_response(
            {"error": "invalid_client" if status == 401 else "x", "error_description": echo},
            status=status,
        )

    url = await token_endpoint(token)
    post = {"client_secret": SECRET, "client_auth": "client_secret_post"}
    for fields in ({"client_secret": SECRET}, post):
        with pytest.raises((ClientConfigError, TransientRefreshError)) as caught:
            await _refresh(url, **fields)
        text = f"{caught.value} {caught.value!r}"
        assert "[redacted]" in text
        credentials = basic_authorization("c", SECRET).split(" ", 1)[1]
        for secret in (SECRET, REFRESH, credentials):
            assert secret not in text
            for record in canary_logs.records:
                assert secret not in record.getMessage()
        assert caught.value.__cause__ is None
