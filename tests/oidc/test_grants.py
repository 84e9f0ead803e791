"""Client credentials, the device flow, a code exchange and revocation, against the real provider.

Each flow is timed end to end (printed with ``-s``; the figures go in the issue's notes).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import pytest

from aioscopedauth import ClientConfigError, ConfigError, LoginError, OAuthConfig
from aioscopedauth._dialect import request_token_refresh
from aioscopedauth._grants import (
    DEVICE_GRANT,
    DeviceCode,
    device_login,
    exchange_authorization_code,
    poll_device_token,
    request_client_credentials,
    request_device_code,
    revoke_token,
)
from oidc.harness import BASIC, NATIVE, NO_REFRESH, POST, SERVICE

if TYPE_CHECKING:
    from collections.abc import Callable

    from oidc.harness import OidcProvider

SCOPES = ("openid", "offline_access")


async def _config(oidc: OidcProvider, client: str | tuple[str, str], **fields: Any) -> OAuthConfig:
    if isinstance(client, str):
        return await OAuthConfig.discover(oidc.issuer, client_id=client, **fields)
    return await OAuthConfig.discover(
        oidc.issuer, client_id=client[0], client_secret=client[1], **fields
    )


def _polls(stats: dict[str, Any]) -> int:
    return int(stats["tokenRequests"].get(DEVICE_GRANT, 0))


async def test_client_credentials(oidc: OidcProvider) -> None:
    config = await _config(oidc, SERVICE, scopes=("api:read",))
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        answer = await request_client_credentials(http, config)
        elapsed = time.perf_counter() - started
    assert answer.access_token is not None
    assert answer.refresh_token is None
    assert answer.expires_in == 60
    assert answer.scope == "api:read"
    assert await oidc.call_resource(answer.access_token) == 200
    print(f"client_credentials: {elapsed * 1000:.1f} ms")  # noqa: T201 -- the report's figure


@pytest.mark.parametrize(
    ("client", "scopes", "code"),
    [
        (SERVICE, ("api:write",), "invalid_scope"),  # not allowed for this client
        ((SERVICE[0], "CANARY-wrong-secret-77"), (), "invalid_client"),
        (BASIC, (), "unauthorized_client"),  # the client may not use this grant
    ],
)
async def test_client_credentials_errors_name_the_configuration(
    oidc: OidcProvider, client: tuple[str, str], scopes: tuple[str, ...], code: str
) -> None:
    config = await _config(oidc, client, scopes=scopes)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ClientConfigError) as caught:
            await request_client_credentials(http, config)
    assert caught.value.error_code == code
    assert str(caught.value).startswith("Failed to get a token with client credentials: ")
    assert client[1] not in str(caught.value)


async def test_a_public_client_may_not_use_client_credentials(oidc: OidcProvider) -> None:
    config = await _config(oidc, NATIVE)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ConfigError) as caught:
            await request_client_credentials(http, config)
    assert str(caught.value) == (
        "the client_credentials grant needs a confidential client: set client_secret"
    )


@pytest.mark.parametrize(
    ("client", "method"),
    [(NATIVE, "none"), (BASIC, "client_secret_basic"), (POST, "client_secret_post")],
    ids=["none", "basic", "post"],
)
async def test_device_login_end_to_end_and_never_polled_again(
    oidc: OidcProvider, client: str | tuple[str, str], method: str
) -> None:
    config = await _config(oidc, client, scopes=SCOPES, client_auth=method)
    shown: list[DeviceCode] = []
    approvals: list[asyncio.Task[str]] = []

    def show(code: DeviceCode) -> None:
        # The user opens the link on another device and approves.
        shown.append(code)
        assert code.verification_uri_complete is not None
        approvals.append(asyncio.create_task(oidc.approve_device(code.verification_uri_complete)))

    before = await oidc.stats()
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        answer = await device_login(http, config, show)
        elapsed = time.perf_counter() - started
        assert "device-login-success" in await approvals[0]
        (code,) = shown
        assert code.verification_uri == f"{oidc.issuer}/device"
        assert code.interval == 1
        assert code.expires_in == 120
        assert code.device_code not in repr(code)
        assert answer.refresh_token is not None
        assert answer.expires_in == 60
        # Two intervals later nobody has polled again: no reuse, nothing revoked.
        await asyncio.sleep(2 * code.interval)
        after = await oidc.stats()
        assert after["deviceCodeReuse"] == before["deviceCodeReuse"]
        assert after["grantsRevoked"] == before["grantsRevoked"]
        assert after["tokenErrors"].get(f"{DEVICE_GRANT} slow_down") == before["tokenErrors"].get(
            f"{DEVICE_GRANT} slow_down"
        )
        # The login is good: its refresh token refreshes.
        refreshed = await request_token_refresh(http, config, answer.refresh_token)
    assert refreshed.access_token is not None
    polls = _polls(after) - _polls(before)
    print(f"device login ({config.client_auth}): {elapsed:.2f} s, {polls} polls")  # noqa: T201 -- the report's figure


async def test_slow_down_adds_five_seconds_for_good(
    start_oidc: Callable[..., OidcProvider],
) -> None:
    # The provider says 0.2 s but enforces 3 s: the second poll is answered slow_down (with
    # seconds to spare on a loaded machine); the third, 5.2 s later, is not.
    oidc = start_oidc(deviceInterval=0.2, enforceInterval=3)
    config = await _config(oidc, NATIVE, scopes=SCOPES)
    async with aiohttp.ClientSession() as http:
        device = await request_device_code(http, config)
        assert device.interval == 0.2
        started = time.perf_counter()
        polling = asyncio.create_task(poll_device_token(http, config, device))
        # The provider is another process: its counter is read over HTTP, there is no event.
        async with asyncio.timeout(10):
            while (await oidc.stats())["tokenErrors"].get(f"{DEVICE_GRANT} slow_down", 0) == 0:  # noqa: ASYNC110 -- see above
                await asyncio.sleep(0.05)
        assert device.verification_uri_complete is not None
        await oidc.approve_device(device.verification_uri_complete)
        answer = await polling
        elapsed = time.perf_counter() - started
    assert answer.access_token is not None
    stats = await oidc.stats()
    # pending, slow_down, then the tokens 5.2 s later: one poll after the slow_down.
    assert stats["tokenErrors"] == {
        f"{DEVICE_GRANT} authorization_pending": 1,
        f"{DEVICE_GRANT} slow_down": 1,
    }
    assert _polls(stats) == 3
    assert 5.6 <= elapsed < 9.0


async def test_a_refused_device_login(oidc: OidcProvider) -> None:
    config = await _config(oidc, NATIVE, scopes=SCOPES)
    async with aiohttp.ClientSession() as http:
        device = await request_device_code(http, config)
        assert device.verification_uri_complete is not None
        await oidc.approve_device(device.verification_uri_complete, deny=True)
        with pytest.raises(LoginError) as caught:
            await poll_device_token(http, config, device)
    assert caught.value.error_code == "access_denied"
    assert str(caught.value) == (
        "The device login was refused at the provider (access_denied). Start the login again "
        "if that was a mistake."
    )


async def test_an_expired_device_code(start_oidc: Callable[..., OidcProvider]) -> None:
    oidc = start_oidc(deviceCodeTtl=2)
    config = await _config(oidc, NATIVE, scopes=SCOPES)
    async with aiohttp.ClientSession() as http:
        device = await request_device_code(http, config)
        with pytest.raises(LoginError) as caught:
            await poll_device_token(http, config, device)
    # The provider's own answer, not a local deadline.
    assert caught.value.error_code == "expired_token"
    assert str(caught.value) == (
        "The device code expired before the login was approved (expired_token). Start the "
        "login again and approve it before the new code expires."
    )
    stats = await oidc.stats()
    assert stats["tokenErrors"][f"{DEVICE_GRANT} expired_token"] == 1


async def test_device_flow_errors_name_the_configuration(
    start_oidc: Callable[..., OidcProvider], oidc: OidcProvider
) -> None:
    service = await _config(oidc, SERVICE)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ClientConfigError) as caught:
            await request_device_code(http, service)
        assert caught.value.error_code == "unauthorized_client"
        limited = await _config(oidc, NO_REFRESH, scopes=("openid", "api:write"))
        with pytest.raises(ClientConfigError) as caught:
            await request_device_code(http, limited)
        assert caught.value.error_code == "invalid_scope"
        # A provider without the device flow: no endpoint, and its grant is unsupported.
        bare = start_oidc(deviceFlow=False)
        config = await _config(bare, NATIVE)
        assert config.device_authorization_url is None
        with pytest.raises(ConfigError, match="needs device_authorization_url"):
            await request_device_code(http, config)
        forged = DeviceCode("ABCD", bare.issuer, None, 60, 0.1, device_code="x")
        with pytest.raises(ClientConfigError) as caught:
            await poll_device_token(http, config, forged)
        assert caught.value.error_code == "unsupported_grant_type"


async def test_browser_login_code_exchange_then_revocation(oidc: OidcProvider) -> None:
    config = await _config(oidc, NATIVE, scopes=SCOPES)
    assert config.authorization_url is not None
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    redirect_uri = "http://127.0.0.1:53682/callback"  # any loopback port (RFC 8252 §7.3)
    query = {
        "client_id": NATIVE,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": " ".join(config.scopes),
        "prompt": "consent",  # offline_access is granted only with consent (OIDC Core §11)
        "state": "st",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    started = time.perf_counter()
    back = await oidc.authorize(
        f"{config.authorization_url}?{urlencode(query)}", redirect_uri=redirect_uri
    )
    assert back["state"] == "st"
    async with aiohttp.ClientSession() as http:
        answer = await exchange_authorization_code(
            http, config, code=back["code"], redirect_uri=redirect_uri, code_verifier=verifier
        )
        elapsed = time.perf_counter() - started
        assert answer.refresh_token is not None
        assert answer.id_token is not None
        assert (await oidc.introspect(answer.refresh_token, NATIVE))["active"] is True
        # The code is single-use, and a strict provider revokes the login it made when the
        # code comes back.
        with pytest.raises(LoginError) as caught:
            await exchange_authorization_code(
                http, config, code=back["code"], redirect_uri=redirect_uri, code_verifier=verifier
            )
        assert caught.value.error_code == "invalid_grant"
        assert (await oidc.introspect(answer.refresh_token, NATIVE))["active"] is False
        # Revoking a refresh token ends its login (RFC 7009 §2.1); again is no error (§2.2).
        other = await oidc.code_login()
        assert await revoke_token(http, config, other["refresh_token"])
        assert (await oidc.introspect(other["refresh_token"], NATIVE))["active"] is False
        assert await revoke_token(http, config, other["refresh_token"])
    print(f"browser login (code + PKCE, no browser): {elapsed * 1000:.0f} ms")  # noqa: T201 -- the report's figure
