"""``private_key_jwt`` client authentication against the real provider (RFC 7523 §2.2).

The keys are generated here, at test time; the provider gets each public half as a client's
``jwks``. oidc-provider checks every assertion fully: the signature, ``iss``/``sub`` the client,
``aud``, ``exp``, and a ``jti`` it has not seen (a replayed assertion is ``invalid_client``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    ClientConfigError,
    MemoryAuthStore,
    OAuthConfig,
    PrivateKeyJWT,
)
from aioscopedauth._dialect import request_token_refresh
from aioscopedauth._grants import DEVICE_GRANT, DeviceCode, device_login, request_client_credentials

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from oidc.harness import OidcProvider

RS_CLIENT = "jwt-rs-client"
ES_CLIENT = "jwt-es-client"


def _rsa_pem(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _client(client_id: str, key: PrivateKeyJWT, grants: list[str]) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": key.algorithm,
        "jwks": {"keys": [key.public_jwk()]},
        "application_type": "native",
        "grant_types": grants,
        "response_types": [],
        "redirect_uris": [],
        "scope": "openid offline_access api:read",
    }


@pytest.fixture
def keys(tmp_path: Path) -> tuple[PrivateKeyJWT, PrivateKeyJWT]:
    """An RS256 key from a PEM file, an ES256 key from a key object."""
    rs = PrivateKeyJWT(_rsa_pem(tmp_path / "client.pem"), algorithm="RS256", key_id="rs-1")
    es = PrivateKeyJWT(ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", key_id="es-1")
    return rs, es


@pytest.fixture
def provider(
    start_oidc: Callable[..., OidcProvider], keys: tuple[PrivateKeyJWT, PrivateKeyJWT]
) -> OidcProvider:
    """A provider that knows both clients, with 2-second client_credentials tokens."""
    rs, es = keys
    return start_oidc(
        clientCredentialsTtl=2,
        extraClients=[
            _client(RS_CLIENT, rs, [DEVICE_GRANT, "refresh_token"]),
            _client(ES_CLIENT, es, ["client_credentials"]),
        ],
    )


def _auth_errors(stats: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in stats["tokenErrors"].items() if "client" in k}


async def test_device_flow_and_refresh_with_an_rs256_key_from_a_pem_file(
    provider: OidcProvider, keys: tuple[PrivateKeyJWT, PrivateKeyJWT]
) -> None:
    rs, _ = keys
    config = await OAuthConfig.discover(
        provider.issuer, client_id=RS_CLIENT, client_key=rs, scopes=("openid", "offline_access")
    )
    assert config.client_auth == "private_key_jwt"
    approvals: list[asyncio.Task[str]] = []

    def show(code: DeviceCode) -> None:
        assert code.verification_uri_complete is not None
        approvals.append(
            asyncio.create_task(provider.approve_device(code.verification_uri_complete))
        )

    async with aiohttp.ClientSession() as http:
        answer = await device_login(http, config, show)
        assert "device-login-success" in await approvals[0]
        assert answer.refresh_token is not None
        # Two refreshes within the same second: each assertion has its own jti.
        first = await request_token_refresh(http, config, answer.refresh_token)
        assert first.refresh_token is not None
        second = await request_token_refresh(http, config, first.refresh_token)
    assert second.access_token is not None
    stats = await provider.stats()
    assert stats["tokenRequests"]["refresh_token"] == 2
    assert _auth_errors(stats) == {}
    assert stats["reuseDetections"] == 0


async def test_client_credentials_with_an_es256_key_object_through_the_manager(
    provider: OidcProvider, keys: tuple[PrivateKeyJWT, PrivateKeyJWT]
) -> None:
    _, es = keys
    config = await OAuthConfig.discover(
        provider.issuer, client_id=ES_CLIENT, client_key=es, scopes=("api:read",)
    )
    statuses: list[int] = []
    async with AuthManager(MemoryAuthStore(), config) as manager:
        await manager.login_with_client_credentials()
        async with aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3  # 1.5 lifetimes: one re-mint at least

            async def caller() -> None:
                while loop.time() < deadline:
                    async with http.get(provider.resource_url) as r:
                        statuses.append(r.status)

            await asyncio.gather(*(caller() for _ in range(4)))
    assert statuses
    assert set(statuses) == {200}
    stats = await provider.stats()
    assert stats["tokenRequests"]["client_credentials"] >= 2
    assert _auth_errors(stats) == {}


async def test_a_key_the_provider_does_not_hold_is_invalid_client(
    provider: OidcProvider, tmp_path: Path
) -> None:
    # The same client id and kid as the registered ES key, but another key.
    pem = tmp_path / "es.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = OAuthConfig(
        f"{provider.issuer}/token",
        ES_CLIENT,
        dialect="rfc6749",
        client_key=PrivateKeyJWT(pem, algorithm="ES256", key_id="es-1"),
        scopes=("api:read",),
    )
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ClientConfigError) as caught:
            await request_client_credentials(http, config)
    assert caught.value.error_code == "invalid_client"
    assert str(caught.value).startswith(
        "Failed to get a token with client credentials: the provider refused this client "
        "(invalid_client): check client_id, client_secret and client_auth ('private_key_jwt') "
        "in the OAuth configuration."
    )


async def test_a_registered_key_with_issuer_audience_and_five_minutes(
    start_oidc: Callable[..., OidcProvider], tmp_path: Path
) -> None:
    pem = _rsa_pem(tmp_path / "ps.pem")
    key = PrivateKeyJWT(pem, algorithm="PS256", audience="issuer", lifetime=timedelta(minutes=5))
    oidc = start_oidc(extraClients=[_client("jwt-ps-client", key, ["client_credentials"])])
    config = await OAuthConfig.discover(
        oidc.issuer, client_id="jwt-ps-client", client_key=key, scopes=("api:read",)
    )
    async with aiohttp.ClientSession() as http:
        answer = await request_client_credentials(http, config)
    assert answer.access_token is not None
    assert await oidc.call_resource(answer.access_token) == 200
    stats = await oidc.stats()
    assert stats["tokenRequests"] == {"client_credentials": 1}
    assert stats["tokenErrors"] == {}
