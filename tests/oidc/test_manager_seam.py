"""Today's AuthManager refreshes a standard login through the dialect seam, unaware of it.

A login the provider issued (with an id token: the stored model still needs one) is written to a
real FileAuthStore; the manager, given a standard OAuthConfig, spends its refresh token with the
RFC 6749 dialect. Against a provider that revokes the whole login on reuse, concurrent refreshes
in one manager and across two managers on one home spend each refresh token once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AuthMode,
    FileAuthStore,
    IdTokenInfo,
    OAuthConfig,
    RefreshTokenFailedError,
    TokenData,
)
from oidc.harness import NATIVE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from oidc.harness import OidcProvider


def _stored(login: dict[str, Any], refresh_token: str | None = None) -> AuthDotJson:
    tokens = TokenData(
        IdTokenInfo.parse(login["id_token"]),
        login["access_token"],
        refresh_token or login["refresh_token"],
    )
    return AuthDotJson(auth_mode=AuthMode.CHATGPT, tokens=tokens, last_refresh=datetime.now(UTC))


def _refreshes(stats: dict[str, Any]) -> int:
    return int(stats["tokenRequests"].get("refresh_token", 0))


async def test_concurrent_refreshes_spend_each_refresh_token_once(
    start_oidc: Callable[..., OidcProvider], tmp_path: Path
) -> None:
    oidc = start_oidc()
    config = await OAuthConfig.discover(oidc.issuer, client_id=NATIVE)
    login = await oidc.code_login()
    home = tmp_path / "home"
    await FileAuthStore(home).save(_stored(login))
    async with (
        AuthManager(FileAuthStore(home), config) as first,
        AuthManager(FileAuthStore(home), config) as second,
    ):
        # Eight tasks on one manager, then two managers (as two processes would) at once.
        assert all(await asyncio.gather(*(first.refresh_token() for _ in range(8))))
        assert all(await asyncio.gather(first.refresh_token(), second.refresh_token()))
        auth = await second.auth()
    assert auth is not None
    stored = await FileAuthStore(home).load()
    assert stored is not None
    assert stored.tokens is not None
    assert stored.tokens.refresh_token != login["refresh_token"]  # rotation persisted
    assert auth.token == stored.tokens.access_token
    assert await oidc.call_resource(auth.token) == 200
    stats = await oidc.stats()
    assert stats["reuseDetections"] == 0
    assert stats["grantsRevoked"] == 0
    assert 2 <= _refreshes(stats) <= 3  # one for the eight, one or two for the pair


async def test_invalid_grant_ends_in_one_token_call(oidc: OidcProvider, tmp_path: Path) -> None:
    config = await OAuthConfig.discover(oidc.issuer, client_id=NATIVE)
    login = await oidc.code_login()
    home = tmp_path / "home"
    await FileAuthStore(home).save(_stored(login, refresh_token="revoked-or-unknown"))
    before = _refreshes(await oidc.stats())
    async with AuthManager(FileAuthStore(home), config) as manager:
        for _ in range(5):
            with pytest.raises(RefreshTokenFailedError) as caught:
                await manager.refresh_token()
            assert caught.value.error_code == "invalid_grant"
    assert _refreshes(await oidc.stats()) == before + 1
    assert await FileAuthStore(home).load() is not None  # the login is not deleted
