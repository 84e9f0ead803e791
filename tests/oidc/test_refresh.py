"""The RFC 6749 dialect of request_token_refresh against the real provider.

Each client-authentication method refreshes a real login (the Basic client's id and secret need
the §2.3.1 encoding); each standard error the provider sends is classified as documented, in
exactly one token call, and never quotes the secret.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from aioscopedauth import (
    ClientConfigError,
    OAuthConfig,
    RefreshFailureReason,
    RefreshTokenFailedError,
)
from aioscopedauth._dialect import request_token_refresh
from aioscopedauth._rfc6749 import INVALID_GRANT_MESSAGE
from oidc.harness import BASIC, NATIVE, NO_REFRESH, POST

if TYPE_CHECKING:
    from collections.abc import Callable

    from oidc.harness import OidcProvider


def _config(oidc: OidcProvider, client: str | tuple[str, str], **fields: Any) -> OAuthConfig:
    if isinstance(client, str):
        return OAuthConfig(oidc.token_url, client, dialect="rfc6749", **fields)
    return OAuthConfig(
        oidc.token_url, client[0], client_secret=client[1], dialect="rfc6749", **fields
    )


async def _refresh(config: OAuthConfig, token: str) -> Any:
    async with aiohttp.ClientSession() as http:
        return await request_token_refresh(http, config, token)


def _refreshes(stats: dict[str, Any]) -> int:
    return int(stats["tokenRequests"].get("refresh_token", 0))


@pytest.mark.parametrize(
    ("client", "method"),
    [(BASIC, "client_secret_basic"), (POST, "client_secret_post"), (NATIVE, "none")],
    ids=["basic", "post", "none"],
)
async def test_each_client_auth_method_refreshes_and_rotates(
    oidc: OidcProvider, client: str | tuple[str, str], method: str
) -> None:
    if isinstance(client, str):
        login = await oidc.code_login(client)
    else:
        login = await oidc.code_login(*client, post=method == "client_secret_post")
    config = _config(oidc, client, client_auth=method)
    assert config.client_auth == method
    started = time.perf_counter()
    answer = await _refresh(config, login["refresh_token"])
    elapsed = time.perf_counter() - started
    assert answer.problems == ()
    assert answer.refresh_token is not None
    assert answer.refresh_token != login["refresh_token"]  # rotated
    assert answer.access_token is not None
    assert answer.id_token is not None
    assert answer.expires_in == 60  # the provider's access-token lifetime
    assert answer.scope == "openid offline_access"
    assert await oidc.call_resource(answer.access_token) == 200
    assert await oidc.call_resource(login["access_token"]) == 200  # not revoked by a refresh
    print(f"refresh ({method}): {elapsed * 1000:.1f} ms")  # noqa: T201 -- the report's figure


async def test_a_login_without_an_id_token_refreshes(oidc: OidcProvider) -> None:
    login = await oidc.code_login(NATIVE, scope="offline_access")
    assert "id_token" not in login
    answer = await _refresh(_config(oidc, NATIVE), login["refresh_token"])
    assert answer.id_token is None
    assert answer.access_token is not None
    assert answer.expires_in == 60


async def test_invalid_grant_is_permanent_in_one_call(oidc: OidcProvider) -> None:
    before = _refreshes(await oidc.stats())
    with pytest.raises(RefreshTokenFailedError) as caught:
        await _refresh(_config(oidc, BASIC), "not-a-refresh-token")
    assert type(caught.value) is RefreshTokenFailedError
    assert caught.value.reason is RefreshFailureReason.OTHER
    assert caught.value.error_code == "invalid_grant"
    assert str(caught.value) == INVALID_GRANT_MESSAGE
    assert _refreshes(await oidc.stats()) == before + 1


async def test_a_refresh_token_spent_twice_is_invalid_grant_and_the_login_is_revoked(
    start_oidc: Callable[..., OidcProvider],
) -> None:
    oidc = start_oidc()
    login = await oidc.code_login(*BASIC)
    config = _config(oidc, BASIC)
    first = await _refresh(config, login["refresh_token"])
    with pytest.raises(RefreshTokenFailedError) as caught:
        await _refresh(config, login["refresh_token"])
    assert caught.value.error_code == "invalid_grant"
    # What a strict provider does: the winner's brand-new tokens are dead too.
    with pytest.raises(RefreshTokenFailedError):
        await _refresh(config, first.refresh_token)
    assert await oidc.call_resource(first.access_token) == 401
    stats = await oidc.stats()
    assert stats["reuseDetections"] == 1
    assert stats["grantsRevoked"] == 1


async def test_a_wrong_secret_is_a_configuration_error_and_the_login_is_kept(
    oidc: OidcProvider,
) -> None:
    login = await oidc.code_login(*BASIC)
    wrong = "CANARY-wrong-secret-1b7d"
    with pytest.raises(ClientConfigError) as caught:
        await _refresh(_config(oidc, (BASIC[0], wrong)), login["refresh_token"])
    assert caught.value.error_code == "invalid_client"
    assert str(caught.value) == (
        "Failed to refresh token: the provider refused this client (invalid_client): check "
        "client_id, client_secret and client_auth ('client_secret_basic') in the OAuth "
        "configuration. The provider said: client authentication failed"
    )
    assert wrong not in repr(caught.value)
    assert login["refresh_token"] not in str(caught.value)
    # The refresh token was not spent: the fixed configuration refreshes the same login.
    answer = await _refresh(_config(oidc, BASIC), login["refresh_token"])
    assert answer.access_token is not None


async def test_a_confidential_client_configured_as_public_is_a_configuration_error(
    oidc: OidcProvider,
) -> None:
    # (oidc-provider takes client_secret_basic and client_secret_post interchangeably, so the
    # wrong one of those two is not an error there; no authentication at all is.)
    login = await oidc.code_login(*POST, post=True)
    with pytest.raises(ClientConfigError) as caught:
        await _refresh(_config(oidc, POST[0]), login["refresh_token"])
    assert caught.value.error_code == "invalid_client"
    assert "client_auth ('none')" in str(caught.value)


async def test_a_grant_the_client_may_not_use_is_unauthorized_client(
    start_oidc: Callable[..., OidcProvider],
) -> None:
    for rfc_codes, code in ((True, "unauthorized_client"), (False, "invalid_request")):
        oidc = start_oidc(rfcErrorCodes=rfc_codes)
        with pytest.raises(ClientConfigError) as caught:
            await _refresh(_config(oidc, NO_REFRESH), "any-refresh-token")
        assert caught.value.error_code == code
        problem = (
            "does not let this client use the refresh_token grant"
            if rfc_codes
            else "refused the request as malformed"
        )
        assert str(caught.value).startswith(f"Failed to refresh token: the provider {problem}")
        assert f"({code})" in str(caught.value)


async def test_a_malformed_request_is_invalid_request(oidc: OidcProvider) -> None:
    with pytest.raises(ClientConfigError) as caught:
        await _refresh(_config(oidc, NATIVE), "")
    assert caught.value.error_code == "invalid_request"
    assert str(caught.value) == (
        "Failed to refresh token: the provider refused the request as malformed "
        "(invalid_request): check token_url, dialect ('rfc6749' for a standard provider) and "
        "client_auth ('none'). The provider said: missing required parameter 'refresh_token'"
    )


async def test_codex_dialect_against_a_standard_provider_is_refused_as_before(
    oidc: OidcProvider,
) -> None:
    # Codex's JSON body is refused (invalid_request); Codex's rules call it transient, as
    # they always did: the dialect is the configuration's choice, not guessed.
    from aioscopedauth import TransientRefreshError  # noqa: PLC0415 -- only here

    login = await oidc.code_login()
    with pytest.raises(TransientRefreshError, match="400 Bad Request"):
        await _refresh(OAuthConfig(oidc.token_url, NATIVE), login["refresh_token"])
