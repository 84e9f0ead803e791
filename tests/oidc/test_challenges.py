"""What the middleware does with a standard resource server's answers (RFC 6750 §3.1).

A ``401`` with ``WWW-Authenticate: Bearer error="invalid_token"`` goes through the recovery
(one refresh, then the retry succeeds); a ``403`` with ``error="insufficient_scope"`` is handed
back as it is: no refresh can add a scope. Both as for a Codex login (every 401 recovers, a 403
never does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import attrs

from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, OAuthConfig, RecoveryEvent
from oidc.harness import NATIVE

if TYPE_CHECKING:
    from pathlib import Path

    from oidc.harness import OidcProvider


def _refreshes(stats: dict[str, Any]) -> int:
    return int(stats["tokenRequests"].get("refresh_token", 0))


async def _login_with_dead_access_token(oidc: OidcProvider, home: Path) -> OAuthConfig:
    config = await OAuthConfig.discover(
        oidc.issuer, client_id=NATIVE, scopes=("openid", "offline_access")
    )
    login = await oidc.code_login()
    async with AuthManager(FileAuthStore(home), config) as manager:
        await manager.login_with_refresh_token(login["refresh_token"])
    store = FileAuthStore(home)
    stored = await store.load()
    assert stored is not None
    assert stored.tokens is not None
    # The provider no longer knows this access token, though its stored expiry is far off.
    dead = attrs.evolve(stored.tokens, access_token="dead-opaque-access-token")
    await store.save(attrs.evolve(stored, tokens=dead))
    return config


async def test_invalid_token_goes_through_the_recovery(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await _login_with_dead_access_token(oidc, home)
    events: list[RecoveryEvent] = []
    before = _refreshes(await oidc.stats())
    async with (
        AuthManager(FileAuthStore(home), config) as manager,
        aiohttp.ClientSession(
            middlewares=(AuthMiddleware(manager, on_event=events.append),)
        ) as http,
        http.get(oidc.resource_url) as response,
    ):
        assert response.status == 200
    assert _refreshes(await oidc.stats()) == before + 1
    assert [(e.step, e.outcome) for e in events] == [
        ("reload", "unchanged"),
        ("refresh_token", "changed"),
        ("done", "recovered"),  # the retry with the refreshed token was answered
    ]


async def test_insufficient_scope_is_handed_back(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await OAuthConfig.discover(
        oidc.issuer, client_id=NATIVE, scopes=("openid", "offline_access")
    )
    login = await oidc.code_login()
    events: list[RecoveryEvent] = []
    async with AuthManager(FileAuthStore(home), config) as manager:
        await manager.login_with_refresh_token(login["refresh_token"])
        before = await oidc.stats()
        async with (
            aiohttp.ClientSession(
                middlewares=(AuthMiddleware(manager, on_event=events.append),)
            ) as http,
            http.get(oidc.resource_url, params={"scope": "api:write"}) as response,
        ):
            assert response.status == 403
            assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert events == []
    assert (await oidc.stats())["tokenRequests"] == before["tokenRequests"]
