"""The provider itself: what the rest of the suite relies on it to do, pinned with raw HTTP.

If oidc-provider ever stops revoking a grant on refresh-token reuse, or stops refusing a device
code polled after success, the library's tests would pass against a lenient provider and prove
nothing; these tests fail first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from oidc.harness import NATIVE

if TYPE_CHECKING:
    from collections.abc import Callable

    from oidc.harness import OidcProvider

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


async def _post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=form) as response:
        return response.status, await response.json()


async def test_discovery_names_every_endpoint_the_suite_uses(oidc: OidcProvider) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{oidc.issuer}/.well-known/openid-configuration") as response,
    ):
        meta = await response.json()
    assert meta["issuer"] == oidc.issuer
    assert meta["token_endpoint"] == oidc.token_url
    assert meta["device_authorization_endpoint"] == oidc.device_url
    assert meta["revocation_endpoint"] == oidc.revocation_url
    assert meta["introspection_endpoint"] == f"{oidc.issuer}/token/introspection"
    assert set(meta["token_endpoint_auth_methods_supported"]) >= {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }


async def test_a_refresh_token_presented_twice_revokes_the_grant(
    start_oidc: Callable[..., OidcProvider],
) -> None:
    oidc = start_oidc()
    # Any loopback port is accepted for the native client (RFC 8252 §7.3).
    first = await oidc.code_login(redirect_uri="http://127.0.0.1:4711/callback")
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] == 60
    refresh = {"grant_type": "refresh_token", "client_id": NATIVE}
    status, second = await _post(
        oidc.token_url, {**refresh, "refresh_token": first["refresh_token"]}
    )
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]  # rotated
    assert await oidc.call_resource(second["access_token"]) == 200

    status, reused = await _post(
        oidc.token_url, {**refresh, "refresh_token": first["refresh_token"]}
    )
    assert (status, reused["error"]) == (400, "invalid_grant")
    # The whole login is gone: the rotated token and its access token are dead too.
    status, after = await _post(
        oidc.token_url, {**refresh, "refresh_token": second["refresh_token"]}
    )
    assert (status, after["error"]) == (400, "invalid_grant")
    assert await oidc.call_resource(second["access_token"]) == 401
    stats = await oidc.stats()
    assert stats["reuseDetections"] == 1
    assert stats["grantsRevoked"] >= 1


async def test_a_device_code_polled_after_success_revokes_the_grant(
    start_oidc: Callable[..., OidcProvider],
) -> None:
    oidc = start_oidc(enforceInterval=False)
    status, device = await _post(
        oidc.device_url, {"client_id": NATIVE, "scope": "openid offline_access"}
    )
    assert status == 200
    assert device["interval"] == 1
    poll = {"grant_type": DEVICE_GRANT, "client_id": NATIVE, "device_code": device["device_code"]}
    status, pending = await _post(oidc.token_url, poll)
    assert (status, pending["error"]) == (400, "authorization_pending")
    page = await oidc.approve_device(device["verification_uri_complete"])
    assert "device-login-success" in page
    status, tokens = await _post(oidc.token_url, poll)
    assert status == 200
    assert "refresh_token" in tokens
    status, again = await _post(oidc.token_url, poll)
    assert (status, again["error"]) == (400, "invalid_grant")
    assert await oidc.call_resource(tokens["access_token"]) == 401
    stats = await oidc.stats()
    assert stats["deviceCodeReuse"] == 1
    assert stats["grantsRevoked"] == 1


async def test_polling_sooner_than_the_interval_is_answered_slow_down(
    oidc: OidcProvider,
) -> None:
    status, device = await _post(oidc.device_url, {"client_id": NATIVE, "scope": "openid"})
    assert status == 200
    poll = {"grant_type": DEVICE_GRANT, "client_id": NATIVE, "device_code": device["device_code"]}
    status, first = await _post(oidc.token_url, poll)
    assert first["error"] == "authorization_pending"
    status, second = await _post(oidc.token_url, poll)
    assert (status, second["error"]) == (400, "slow_down")


async def test_the_resource_answers_as_rfc_6750_says(oidc: OidcProvider) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(oidc.resource_url, headers={"Authorization": "Bearer dead"}) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer realm="{oidc.issuer}", error="invalid_token"'
        )
    login = await oidc.code_login()
    assert await oidc.call_resource(login["access_token"], scope="openid") == 200
    assert await oidc.call_resource(login["access_token"], scope="api:write") == 403
