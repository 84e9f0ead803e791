"""OAuthConfig's standard fields, their checks, the dialect choice, and discovery's faults.

Discovery against a real provider is in tests/oidc; here, aiohttp fakes serve what a real one
would not: a missing OpenID document, a wrong issuer, garbage, a hang.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from aioscopedauth import ConfigError, OAuthConfig
from aioscopedauth._dialect import request_token_refresh
from aioscopedauth._discovery import config_fields, metadata_urls
from aioscopedauth._oauth import CODEX_CLIENT_ID
from aioscopedauth.testing._server import serve_on_loopback

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

SECRET = "CANARY-client-secret-4e8a1f0b"
URL = "http://127.0.0.1:9/token"


def test_the_default_constructor_and_codex_keep_codex_dialect() -> None:
    for config in (OAuthConfig(URL, "c"), OAuthConfig.codex()):
        assert config.dialect == "codex"
        assert config.client_auth == "none"
        assert config.client_secret is None
        assert config.scopes == ()
        assert not config.is_standard
    assert OAuthConfig.codex().client_id == CODEX_CLIENT_ID


def test_standard_defaults_follow_the_secret() -> None:
    public = OAuthConfig(URL, "c", dialect="rfc6749")
    assert public.client_auth == "none"
    confidential = OAuthConfig(URL, "c", client_secret=SECRET, dialect="rfc6749")
    assert confidential.client_auth == "client_secret_basic"
    assert confidential.is_standard


@pytest.mark.parametrize(
    ("given", "scopes"),
    [
        ("openid offline_access", ("openid", "offline_access")),
        ("  openid\toffline_access ", ("openid", "offline_access")),
        (["openid", "api:read"], ("openid", "api:read")),
        ((s for s in ("openid", "email")), ("openid", "email")),
        ((), ()),
    ],
)
def test_scopes_are_a_tuple_or_one_space_delimited_string(given: Any, scopes: Any) -> None:
    assert OAuthConfig(URL, "c", dialect="rfc6749", scopes=given).scopes == scopes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"client_secret": SECRET},
            (
                "OAuthConfig: Codex's dialect sends no client secret: pass dialect='rfc6749' for a "
                "standard provider (or build the configuration with OAuthConfig.discover)"
            ),
        ),
        (
            {"client_auth": "client_secret_basic"},
            (
                "OAuthConfig: Codex's dialect sends no client secret: pass dialect='rfc6749' for a "
                "standard provider (or build the configuration with OAuthConfig.discover)"
            ),
        ),
        (
            {"dialect": "rfc6749", "client_auth": "client_secret_post"},
            "OAuthConfig: client_auth 'client_secret_post' needs a client_secret",
        ),
        (
            {"dialect": "rfc6749", "client_auth": "none", "client_secret": SECRET},
            (
                "OAuthConfig: client_auth 'none' sends no secret, yet client_secret is set: drop "
                "the secret, or use 'client_secret_basic' or 'client_secret_post'"
            ),
        ),
        (
            {"dialect": "rfc6749", "client_secret": ""},
            "OAuthConfig: client_secret must be a non-empty string, or None for a public client",
        ),
        (
            {"dialect": "oauth2"},
            "OAuthConfig: dialect must be one of 'codex', 'rfc6749'",
        ),
        (
            # A secret pasted into the wrong field is not quoted back.
            {"dialect": "rfc6749", "client_auth": SECRET},
            (
                "OAuthConfig: client_auth must be one of 'client_secret_basic', "
                "'client_secret_post', 'private_key_jwt', 'none'"
            ),
        ),
        (
            {"dialect": "rfc6749", "client_auth": "private_key_jwt", "client_secret": SECRET},
            "OAuthConfig: client_auth 'private_key_jwt' needs a client_key (a PrivateKeyJWT)",
        ),
        (
            {"dialect": "rfc6749", "scopes": ("openid", 'a"b')},
            (
                "OAuthConfig: each scope must be printable ASCII without spaces, quotes or "
                "backslashes (RFC 6749 §3.3); pass a tuple of scopes or one space-delimited string"
            ),
        ),
        (
            {"dialect": "rfc6749", "revocation_url": "ftp://127.0.0.1/revoke"},
            "OAuthConfig: revocation_url must be an absolute http(s) URL",
        ),
        (
            {"dialect": "rfc6749", "device_authorization_url": "/device"},
            "OAuthConfig: device_authorization_url must be an absolute http(s) URL",
        ),
        (
            {"dialect": "rfc6749", "timeout": float("nan")},
            "OAuthConfig: timeout must be a positive number of seconds",
        ),
    ],
)
def test_impossible_combinations_are_refused_with_what_to_change(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        OAuthConfig(URL, "c", **fields)
    assert str(caught.value) == message
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_standard_token_url_must_be_a_url() -> None:
    with pytest.raises(ConfigError, match=r"^OAuthConfig: token_url must be an absolute"):
        OAuthConfig("token", "c", dialect="rfc6749")
    # Codex's dialect keeps accepting what it accepted (no new checks for existing users).
    assert OAuthConfig("token", "c").token_url == "token"


def test_the_secret_is_never_shown() -> None:
    config = OAuthConfig(URL, "c", client_secret=SECRET, dialect="rfc6749")
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    evolved = attrs.evolve(config, timeout=5.0)
    assert SECRET not in repr(evolved)
    assert evolved.client_secret == SECRET
    with pytest.raises(ConfigError) as caught:
        attrs.evolve(config, client_auth="none")
    assert SECRET not in str(caught.value)


def test_metadata_urls_follow_each_specification() -> None:
    assert metadata_urls("https://id.example/") == (
        "https://id.example/.well-known/openid-configuration",
        "https://id.example/.well-known/oauth-authorization-server",
    )
    # OpenID appends; RFC 8414 inserts before the issuer's path.
    assert metadata_urls("https://id.example/tenant/a") == (
        "https://id.example/tenant/a/.well-known/openid-configuration",
        "https://id.example/.well-known/oauth-authorization-server/tenant/a",
    )


@pytest.mark.parametrize(
    ("listed", "secret", "asked", "method"),
    [
        (None, SECRET, None, "client_secret_basic"),  # RFC 8414's default when none listed
        (["client_secret_post", "client_secret_basic"], SECRET, None, "client_secret_basic"),
        (["client_secret_post", "private_key_jwt"], SECRET, None, "client_secret_post"),
        (["client_secret_basic"], None, None, "none"),
        (["client_secret_basic"], SECRET, "client_secret_post", "client_secret_post"),
    ],
)
def test_client_auth_is_picked_from_what_the_provider_lists(
    listed: list[str] | None, secret: str | None, asked: str | None, method: str
) -> None:
    metadata: dict[str, Any] = {"issuer": "https://id.example", "token_endpoint": URL}
    if listed is not None:
        metadata["token_endpoint_auth_methods_supported"] = listed
    fields = config_fields(metadata, client_secret=secret, client_auth=asked)
    assert fields["client_auth"] == method
    assert fields["token_url"] == URL


def test_a_provider_that_takes_no_secret_is_refused_for_a_confidential_client() -> None:
    metadata = {
        "issuer": "https://id.example",
        "token_endpoint": URL,
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth"],
    }
    with pytest.raises(ConfigError) as caught:
        config_fields(metadata, client_secret=SECRET, client_auth=None)
    assert str(caught.value) == (
        "OAuthConfig.discover: the provider accepts no client secret at its token endpoint "
        "(it lists private_key_jwt, tls_client_auth); pass client_auth=... or use a client "
        "without a secret"
    )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[str]]]:
    """Serve routes (path -> handler) on a loopback port; the base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Any]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner, url = await serve_on_loopback(app)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


def _metadata(base: str, issuer: str | None = None) -> dict[str, Any]:
    return {
        "issuer": issuer or base,
        "token_endpoint": f"{base}/token",
        "revocation_endpoint": f"{base}/revoke",
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    }


async def test_rfc8414_is_read_when_there_is_no_openid_document(
    serve: Callable[[dict[str, Any]], Awaitable[str]],
) -> None:
    asked: list[str] = []
    base = ""

    async def oauth(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response(_metadata(base, f"{base}/tenant"))

    async def missing(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(status=404)

    base = await serve(
        {
            "/tenant/.well-known/openid-configuration": missing,
            "/.well-known/oauth-authorization-server/tenant": oauth,
        }
    )
    config = await OAuthConfig.discover(f"{base}/tenant", client_id="c", client_secret=SECRET)
    assert asked == [
        "/tenant/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/tenant",
    ]
    assert config.dialect == "rfc6749"
    assert config.token_url == f"{base}/token"
    assert config.revocation_url == f"{base}/revoke"
    assert config.device_authorization_url is None
    assert config.client_auth == "client_secret_post"  # the only one it lists


async def test_metadata_naming_another_issuer_is_refused(
    serve: Callable[[dict[str, Any]], Awaitable[str]],
) -> None:
    base = ""

    async def other(_: web.Request) -> web.Response:
        return web.json_response(_metadata(base, "https://attacker.example"))

    base = await serve(
        {
            "/.well-known/openid-configuration": other,
            "/.well-known/oauth-authorization-server": other,
        }
    )
    with pytest.raises(ConfigError) as caught:
        await OAuthConfig.discover(base, client_id="c")
    assert str(caught.value) == (
        f"OAuthConfig.discover: no usable metadata for {base}: "
        f"{base}/.well-known/openid-configuration: its issuer is not the one asked for; "
        f"{base}/.well-known/oauth-authorization-server: its issuer is not the one asked for. "
        "Check the issuer URL (exactly as the provider names itself) and that the provider is "
        "reachable."
    )


async def test_garbage_a_hang_and_a_plain_http_endpoint_are_each_named(
    serve: Callable[[dict[str, Any]], Awaitable[str]],
) -> None:
    release = asyncio.Event()
    base = ""

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=500)

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=b"<html>not json", content_type="text/html")

    base = await serve(
        {
            "/.well-known/openid-configuration": hang,
            "/.well-known/oauth-authorization-server": garbage,
        }
    )
    try:
        with pytest.raises(ConfigError) as caught:
            await OAuthConfig.discover(base, client_id="c", timeout=0.3)
    finally:
        release.set()
    assert str(caught.value) == (
        f"OAuthConfig.discover: no usable metadata for {base}: "
        f"{base}/.well-known/openid-configuration did not answer within 0.3 s; "
        f"{base}/.well-known/oauth-authorization-server is not JSON (or larger than 256 KiB). "
        "Check the issuer URL (exactly as the provider names itself) and that the provider is "
        "reachable."
    )


async def test_clear_text_endpoints_off_loopback_are_refused(
    serve: Callable[[dict[str, Any]], Awaitable[str]],
) -> None:
    base = ""

    async def insecure(_: web.Request) -> web.Response:
        return web.json_response({**_metadata(base), "token_endpoint": "http://id.example/token"})

    base = await serve({"/.well-known/openid-configuration": insecure})
    with pytest.raises(ConfigError, match="its token_endpoint must use https"):
        await OAuthConfig.discover(base, client_id="c")
    with pytest.raises(ConfigError) as caught:
        await OAuthConfig.discover("http://id.example", client_id="c")
    assert str(caught.value) == (
        "OAuthConfig.discover: the issuer must use https (http only on a loopback address)"
    )


async def test_codex_dialect_sends_the_same_bytes_as_before(
    serve: Callable[[dict[str, Any]], Awaitable[str]],
) -> None:
    seen: list[tuple[str, bytes]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append((request.content_type, await request.read()))
        return web.json_response({"access_token": "a-new"})

    base = await serve({"/token": token})
    config = OAuthConfig(f"{base}/token", "codex-client")
    async with aiohttp.ClientSession() as http:
        answer = await request_token_refresh(http, config, "r-1")
    assert answer.access_token == "a-new"
    assert answer.expires_in is None
    assert seen == [
        (
            "application/json",
            json.dumps(
                {"client_id": "codex-client", "grant_type": "refresh_token", "refresh_token": "r-1"}
            ).encode(),
        )
    ]
