"""OAuthConfig.discover against the real provider's metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aioscopedauth import OAuthConfig
from oidc.harness import BASIC, NATIVE

if TYPE_CHECKING:
    from oidc.harness import OidcProvider


async def test_discovery_of_a_confidential_client(oidc: OidcProvider) -> None:
    config = await OAuthConfig.discover(
        oidc.issuer, client_id=BASIC[0], client_secret=BASIC[1], scopes="openid offline_access"
    )
    assert config.dialect == "rfc6749"
    assert config.token_url == oidc.token_url
    assert config.device_authorization_url == oidc.device_url
    assert config.authorization_url == f"{oidc.issuer}/auth"
    assert config.revocation_url == oidc.revocation_url
    assert config.client_auth == "client_secret_basic"
    assert config.client_secret == BASIC[1]
    assert config.scopes == ("openid", "offline_access")
    assert BASIC[1] not in repr(config)


async def test_discovery_of_a_public_client_with_overrides(oidc: OidcProvider) -> None:
    config = await OAuthConfig.discover(
        f"{oidc.issuer}/", client_id=NATIVE, timeout=5.0, revocation_url=None
    )
    assert config.client_auth == "none"
    assert config.timeout == 5.0
    assert config.revocation_url is None  # an override wins over the metadata
