"""Every login kind on AuthManager, end to end against the real provider, then kept fresh.

Each login is timed end to end (printed with ``-s``; the figures go in the issue's notes).
The provider's access tokens are opaque (no ``exp`` to read): the manager refreshes them from
the ``expires_in`` it stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AuthMiddleware,
    AuthMode,
    DeviceCode,
    FileAuthStore,
    LoginError,
    MemoryAuthStore,
    OAuthConfig,
    ProviderLogin,
    RefreshTokenFailedError,
)
from aioscopedauth._oauth_login import CLOSE_PAGE
from oidc.harness import BASIC, NATIVE, SERVICE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from oidc.harness import OidcProvider

SCOPES = ("openid", "offline_access", "email")


async def _config(
    oidc: OidcProvider, client: str | tuple[str, str] = NATIVE, **fields: Any
) -> OAuthConfig:
    fields.setdefault("scopes", SCOPES)
    if isinstance(client, str):
        return await OAuthConfig.discover(oidc.issuer, client_id=client, **fields)
    return await OAuthConfig.discover(
        oidc.issuer, client_id=client[0], client_secret=client[1], **fields
    )


def _count(stats: dict[str, Any], grant: str) -> int:
    return int(stats["tokenRequests"].get(grant, 0))


def _stored(home: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((home / "auth.json").read_text())
    return doc


async def _device_login(oidc: OidcProvider, manager: AuthManager, **approve: Any) -> float:
    shown: list[DeviceCode] = []
    approvals: list[asyncio.Task[str]] = []

    def show(code: DeviceCode) -> None:
        shown.append(code)
        assert code.verification_uri_complete is not None
        approvals.append(
            asyncio.create_task(oidc.approve_device(code.verification_uri_complete, **approve))
        )

    started = time.perf_counter()
    try:
        await manager.login_with_device_code(show)
    finally:
        for task in approvals:
            await task
    assert len(shown) == 1
    return time.perf_counter() - started


async def test_device_login(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await _config(oidc, BASIC)
    async with AuthManager(FileAuthStore(home), config) as manager:
        elapsed = await _device_login(oidc, manager)
        auth = await manager.auth()
        assert auth is not None
        assert auth.mode is AuthMode.OAUTH
        assert await oidc.call_resource(auth.token) == 200
    doc = _stored(home)
    assert doc["auth_mode"] == "oauth"
    assert doc["oauth"] == {
        "issuer": oidc.issuer,
        "client_id": BASIC[0],
        "sub": "alice",
        "grant": "device_code",
    }
    assert doc["tokens"]["refresh_token"]
    assert doc["tokens"]["id_token"]  # kept: the provider gave one (scope openid)
    assert "expires_at" in doc["tokens"]
    print(f"login_with_device_code: {elapsed:.2f} s")  # noqa: T201 -- the report's figure


async def test_a_refused_device_login_saves_nothing(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await _config(oidc)
    async with AuthManager(FileAuthStore(home), config) as manager:
        with pytest.raises(LoginError) as caught:
            await _device_login(oidc, manager, deny=True)
        assert caught.value.error_code == "access_denied"
        assert str(caught.value).startswith("The device login was refused at the provider")
        assert await manager.auth() is None
    assert not (home / "auth.json").exists()


async def test_an_expired_device_code(start_oidc: Callable[..., OidcProvider]) -> None:
    oidc = start_oidc(deviceCodeTtl=2)
    config = await _config(oidc)
    async with AuthManager(MemoryAuthStore(), config) as manager:
        with pytest.raises(LoginError) as caught:
            await manager.login_with_device_code(lambda _code: None)  # nobody approves
        assert caught.value.error_code == "expired_token"
        assert await manager.auth() is None


async def test_browser_login(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await _config(oidc)
    landed: list[tuple[int, str]] = []
    forged: list[int] = []

    async def open_url(url: str) -> None:
        query = parse_qs(urlsplit(url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["prompt"] == ["consent"]  # offline_access is granted only with consent
        redirect = query["redirect_uri"][0]
        # A request that is not this login's (another state) is refused and ignored.
        async with (
            aiohttp.ClientSession() as http,
            http.get(redirect, params={"code": "forged", "state": "forged"}) as r,
        ):
            forged.append(r.status)
        landed.append(await oidc.open_in_browser(url))

    async with AuthManager(FileAuthStore(home), config) as manager:
        started = time.perf_counter()
        await manager.login_with_browser(open_url)
        elapsed = time.perf_counter() - started
        auth = await manager.auth()
        assert auth is not None
        assert await oidc.call_resource(auth.token) == 200
    assert forged == [400]
    ((status, page),) = landed
    assert status == 200
    assert CLOSE_PAGE in page
    doc = _stored(home)
    assert doc["oauth"]["grant"] == "authorization_code"
    assert doc["oauth"]["sub"] == "alice"
    assert doc["tokens"]["refresh_token"]
    print(f"login_with_browser: {elapsed:.2f} s")  # noqa: T201 -- the report's figure


async def test_a_refused_browser_login(oidc: OidcProvider) -> None:
    config = await _config(oidc)
    landed: list[tuple[int, str]] = []

    async def open_url(url: str) -> None:
        landed.append(await oidc.open_in_browser(url, deny=True))

    async with AuthManager(MemoryAuthStore(), config) as manager:
        with pytest.raises(LoginError) as caught:
            await manager.login_with_browser(open_url)
        assert caught.value.error_code == "access_denied"
        assert str(caught.value) == (
            "The provider did not log you in (access_denied). Start the login again."
        )
        assert await manager.auth() is None
    assert landed[0][0] == 400


async def test_login_with_refresh_token(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await _config(oidc)
    login = await oidc.code_login()
    before = _count(await oidc.stats(), "refresh_token")
    async with AuthManager(FileAuthStore(home), config) as manager:
        started = time.perf_counter()
        await manager.login_with_refresh_token(login["refresh_token"])
        elapsed = time.perf_counter() - started
        auth = await manager.auth()
        assert auth is not None
        assert await oidc.call_resource(auth.token) == 200
    assert _count(await oidc.stats(), "refresh_token") == before + 1  # checked by one refresh
    doc = _stored(home)
    assert doc["oauth"]["grant"] == "refresh_token"
    assert doc["tokens"]["refresh_token"] != login["refresh_token"]  # rotated, and kept
    print(f"login_with_refresh_token: {elapsed * 1000:.0f} ms")  # noqa: T201 -- the figure


async def test_login_with_a_dead_refresh_token(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await _config(oidc)
    async with AuthManager(FileAuthStore(home), config) as manager:
        with pytest.raises(LoginError) as caught:
            await manager.login_with_refresh_token("CANARY-not-a-refresh-token")
        assert caught.value.error_code == "invalid_grant"
        assert "CANARY" not in str(caught.value)
        assert await manager.auth() is None
    assert not (home / "auth.json").exists()


async def test_client_credentials_are_minted_again_once_for_everyone(
    start_oidc: Callable[..., OidcProvider], tmp_path: Path
) -> None:
    oidc = start_oidc(clientCredentialsTtl=2)
    config = await _config(oidc, SERVICE, scopes=("api:read",))
    home = tmp_path / "home"
    statuses: list[int] = []
    async with AuthManager(FileAuthStore(home), config) as manager:
        started = time.perf_counter()
        await manager.login_with_client_credentials()
        elapsed = time.perf_counter() - started
        assert _stored(home)["oauth"] == {
            "issuer": oidc.issuer,
            "client_id": SERVICE[0],
            "grant": "client_credentials",
        }
        async with aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as http:
            deadline = time.monotonic() + 6  # three lifetimes

            async def caller() -> None:
                while time.monotonic() < deadline:
                    async with http.get(oidc.resource_url) as r:
                        statuses.append(r.status)

            await asyncio.gather(*(caller() for _ in range(8)))
    minted = _count(await oidc.stats(), "client_credentials")
    assert statuses
    assert set(statuses) == {200}
    # A 2 s token is taken to live 1 s (whole seconds) and re-minted at 0.75 s: about 8 in
    # 6 s, never once per caller (8 callers, hundreds of requests).
    assert 4 <= minted <= 12, minted
    print(f"login_with_client_credentials: {elapsed * 1000:.0f} ms; {minted} mints in 6 s")  # noqa: T201 -- the figure


async def test_opaque_tokens_over_several_lifetimes_without_a_401(
    start_oidc: Callable[..., OidcProvider], tmp_path: Path
) -> None:
    oidc = start_oidc(accessTokenTtl=2)
    config = await _config(oidc)
    home = tmp_path / "home"
    login = await oidc.code_login()
    statuses: list[int] = []
    async with AuthManager(FileAuthStore(home), config) as manager:
        await manager.login_with_refresh_token(login["refresh_token"])
        async with aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as http:
            deadline = time.monotonic() + 8  # four lifetimes

            async def caller() -> None:
                while time.monotonic() < deadline:
                    # Straight to the resource: a 401 the middleware recovered would be hidden.
                    auth = await manager.auth()
                    assert auth is not None
                    statuses.append(await oidc.call_resource(auth.token))
                    async with http.get(oidc.resource_url) as r:
                        statuses.append(r.status)

            await asyncio.gather(*(caller() for _ in range(4)))
    stats = await oidc.stats()
    assert statuses
    assert statuses.count(401) == 0
    assert set(statuses) == {200}
    assert stats["reuseDetections"] == 0
    assert stats["grantsRevoked"] == 0
    refreshes = _count(stats, "refresh_token")
    # A 2 s token is taken to live 1 s (whole seconds), refreshed at 0.75 s: about 11 in 8 s,
    # never one per caller.
    assert 5 <= refreshes <= 16, refreshes
    print(f"opaque 2 s tokens: {len(statuses)} requests, 0 401s, {refreshes} refreshes in 8 s")  # noqa: T201 -- the figure
    stored = AuthDotJson.from_json((home / "auth.json").read_text())
    assert stored.tokens is not None
    assert stored.tokens.refresh_token != login["refresh_token"]  # rotation persisted
    assert await oidc.introspect(stored.tokens.refresh_token, NATIVE) == {
        **await oidc.introspect(stored.tokens.refresh_token, NATIVE),
        "active": True,
    }


async def test_invalid_grant_of_a_standard_login_ends_in_one_token_call(
    oidc: OidcProvider, tmp_path: Path
) -> None:
    config = await _config(oidc)
    home = tmp_path / "home"
    login = ProviderLogin(oidc.issuer, NATIVE, "alice", "device_code")
    await FileAuthStore(home).save(
        AuthDotJson.for_provider_login(
            login,
            access_token="expired-access",
            refresh_token="CANARY-revoked-or-unknown",
            id_token=None,
            expires_at=None,
            now=datetime.now(UTC),
        )
    )
    before = _count(await oidc.stats(), "refresh_token")
    async with (
        AuthManager(FileAuthStore(home), config) as manager,
        aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as http,
    ):
        for _ in range(3):
            with pytest.raises(RefreshTokenFailedError) as caught:
                await manager.refresh_token()
            assert caught.value.error_code == "invalid_grant"
        for _ in range(3):
            # The recorded failure is raised again; the provider is not asked again.
            with pytest.raises(RefreshTokenFailedError) as caught:
                await http.get(oidc.resource_url)
            assert caught.value.error_code == "invalid_grant"
    assert _count(await oidc.stats(), "refresh_token") == before + 1
    assert await FileAuthStore(home).load() is not None  # the login is not deleted


async def test_logout_revokes_at_the_provider(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = await _config(oidc)
    login = await oidc.code_login()
    async with AuthManager(FileAuthStore(home), config) as manager:
        await manager.login_with_refresh_token(login["refresh_token"])
        stored = await FileAuthStore(home).load()
        assert stored is not None
        assert stored.tokens is not None
        refresh = stored.tokens.refresh_token
        assert (await oidc.introspect(refresh, NATIVE))["active"] is True
        assert await manager.logout() is True
        assert await manager.auth() is None
    assert (await oidc.introspect(refresh, NATIVE))["active"] is False
    assert not (home / "auth.json").exists()


async def test_logout_of_a_client_credentials_login_revokes_its_token(
    oidc: OidcProvider,
) -> None:
    config = await _config(oidc, SERVICE, scopes=("api:read",))
    async with AuthManager(MemoryAuthStore(), config) as manager:
        await manager.login_with_client_credentials()
        auth = await manager.auth()
        assert auth is not None
        assert await oidc.call_resource(auth.token) == 200
        assert await manager.logout() is True
    assert await oidc.call_resource(auth.token) == 401
