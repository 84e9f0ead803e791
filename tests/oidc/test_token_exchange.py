"""Workload identity: a subject token exchanged at the real provider (RFC 8693).

oidc-provider has no token exchange of its own; provider.mjs adds one through its documented
extension point (``registerGrantType``) that checks the request as RFC 8693 §2.1 says,
verifies the subject token with jose against the workload issuer's keys (generated here, at
test time), and issues the provider's own access tokens, which its /resource checks. So every
exchange below is a real token request, with real client authentication, answered by the
provider's token endpoint.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwk, jwt

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    ClientConfigError,
    MemoryAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
    RefreshContext,
    RefreshTokenFailedError,
    TokenExchangeSource,
)
from aioscopedauth._token_exchange import TOKEN_TYPES, exchange_fields
from oidc.harness import EXCHANGE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from oidc.harness import OidcProvider

WORKLOAD_ISSUER = "https://kubernetes.default.svc.cluster.local"
SUBJECT_AUDIENCE = "https://provider.example/exchange"
TARGET = "orders-api"
ALICE = "system:serviceaccount:shop:orders"
BOB = "system:serviceaccount:shop:billing"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class Cluster:
    """A workload identity issuer: signs projected service-account tokens with its own key."""

    def __init__(self) -> None:
        self.key = jwk.ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))

    def jwks(self) -> dict[str, Any]:
        public = dict(self.key.as_dict(private=False))
        public.update({"kid": "cluster-1", "alg": "ES256", "use": "sig"})
        return {"keys": [public]}

    def token(self, sub: str, *, lifetime: int = 600, issuer: str = WORKLOAD_ISSUER) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": SUBJECT_AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode({"alg": "ES256", "kid": "cluster-1"}, claims, self.key, ["ES256"])


def _project(path: Path, token: str) -> None:
    # As kubelet does: write aside, then swap in with a rename (readers never see half).
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token)
    tmp.replace(path)


@pytest.fixture
def cluster() -> Cluster:
    """The workload issuer, with a new key per test."""
    return Cluster()


@pytest.fixture
def start(start_oidc: Callable[..., OidcProvider], cluster: Cluster) -> Callable[..., OidcProvider]:
    """Start a provider that trusts the cluster's tokens."""

    def run(**settings: Any) -> OidcProvider:
        exchange = {
            "issuer": WORKLOAD_ISSUER,
            "audience": SUBJECT_AUDIENCE,
            "jwks": cluster.jwks(),
            "targetAudience": TARGET,
        }
        return start_oidc(tokenExchange=exchange, **settings)

    return run


def _config(oidc: OidcProvider) -> OAuthConfig:
    return OAuthConfig(
        oidc.token_url,
        EXCHANGE[0],
        client_secret=EXCHANGE[1],
        dialect="rfc6749",
        scopes=("api:read",),
    )


async def _whoami(oidc: OidcProvider, token: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(oidc.resource_url, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


def test_exchange_fields_keep_repeated_parameters() -> None:
    assert exchange_fields(
        "SUBJECT",
        TOKEN_TYPES["jwt"],
        audience=("a", "b"),
        resource=("https://r",),
        scopes=("x", "y"),
        requested_token_type=TOKEN_TYPES["access_token"],
    ) == [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", "SUBJECT"),
        ("subject_token_type", JWT_TYPE),
        ("audience", "a"),
        ("audience", "b"),
        ("resource", "https://r"),
        ("scope", "x y"),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
    ]


async def test_many_callers_one_exchange_per_lifetime_through_the_manager(
    start: Callable[..., OidcProvider], cluster: Cluster, tmp_path: Path
) -> None:
    oidc = start(accessTokenTtl=2)
    token_file = tmp_path / "token"
    _project(token_file, cluster.token(ALICE))
    statuses: list[int] = []
    async with (
        TokenExchangeSource(
            _config(oidc), subject_token_file=token_file, audience=TARGET
        ) as source,
        AuthManager(MemoryAuthStore()) as base,
    ):
        manager = base.with_external_bearer_refresher(source)
        async with aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5  # two and a half lifetimes

            async def caller() -> None:
                while loop.time() < deadline:
                    async with http.get(oidc.resource_url) as r:
                        statuses.append(r.status)
                        assert (await r.json())["sub"] == ALICE

            await asyncio.gather(*(caller() for _ in range(8)))
    assert statuses
    assert set(statuses) == {200}
    stats = await oidc.stats()
    exchanges = stats["exchanges"]
    # Renewed at three quarters of each (whole-second) lifetime: a handful in 5 s, never one
    # per caller or per request.
    assert 3 <= len(exchanges) <= 10, len(exchanges)
    assert len(exchanges) == source.exchanges
    assert stats["tokenErrors"] == {}
    assert exchanges[0] == {
        "audience": [TARGET],
        "resource": [],
        "scope": "api:read",
        "subject_token_type": JWT_TYPE,
        "requested_token_type": None,
        "actor_token": False,
        "sub": ALICE,
    }
    assert all(e == exchanges[0] for e in exchanges)
    print(f"token exchange: {len(exchanges)} exchanges for {len(statuses)} requests in 5 s")  # noqa: T201 -- the report's figure


async def test_a_rotated_subject_token_is_exchanged_a_touch_is_not(
    start: Callable[..., OidcProvider], cluster: Cluster, tmp_path: Path
) -> None:
    oidc = start()
    token_file = tmp_path / "token"
    _project(token_file, cluster.token(ALICE))
    async with TokenExchangeSource(
        _config(oidc), subject_token_file=token_file, file_check_interval=0
    ) as source:
        first = await source.resolve()
        assert (await _whoami(oidc, first.access_token))["sub"] == ALICE
        assert await source.resolve() == first
        # Same content, new inode and mtime: read again, not exchanged again.
        _project(token_file, token_file.read_text())
        assert await source.resolve() == first
        assert source.exchanges == 1
        _project(token_file, cluster.token(BOB))
        second = await source.resolve()
        assert second != first
        assert source.exchanges == 2
        assert (await _whoami(oidc, second.access_token))["sub"] == BOB
    assert [e["sub"] for e in (await oidc.stats())["exchanges"]] == [ALICE, BOB]


async def test_a_rejected_token_is_exchanged_once_for_all_callers(
    start: Callable[..., OidcProvider], cluster: Cluster, tmp_path: Path
) -> None:
    oidc = start()
    token_file = tmp_path / "token"
    _project(token_file, cluster.token(ALICE))
    async with TokenExchangeSource(_config(oidc), subject_token_file=token_file) as source:
        rejected = await source.resolve()
        context = RefreshContext(rejected_token=rejected.access_token)
        answers = await asyncio.gather(*(source.refresh(context) for _ in range(8)))
    assert len({a.access_token for a in answers}) == 1
    assert answers[0] != rejected
    assert source.exchanges == 2
    assert len((await oidc.stats())["exchanges"]) == 2


async def test_a_subject_token_from_a_command(
    start: Callable[..., OidcProvider], cluster: Cluster, tmp_path: Path
) -> None:
    oidc = start()
    token_file = tmp_path / "ci-token.json"
    token_file.write_text(json.dumps({"token": cluster.token(BOB)}))
    command = ProviderAuthCommand(
        sys.executable, ["-c", f"print(open({str(token_file)!r}).read())"], timeout=30
    )
    async with TokenExchangeSource(_config(oidc), subject_command=command) as source:
        tokens = await source.resolve()
        assert (await _whoami(oidc, tokens.access_token))["sub"] == BOB
    assert tokens.expires_at is not None


@pytest.mark.parametrize("subject", ["expired", "foreign"])
async def test_a_refused_subject_token_is_permanent_and_never_quoted(
    start: Callable[..., OidcProvider],
    cluster: Cluster,
    tmp_path: Path,
    subject: str,
) -> None:
    oidc = start()
    token = (
        cluster.token(ALICE, lifetime=-120)
        if subject == "expired"
        else cluster.token(ALICE, issuer="https://other.example")
    )
    token_file = tmp_path / "token"
    _project(token_file, token)
    async with TokenExchangeSource(_config(oidc), subject_token_file=token_file) as source:
        with pytest.raises(RefreshTokenFailedError) as caught:
            await source.resolve()
    assert caught.value.error_code == "invalid_grant"
    assert str(caught.value) == (
        "Failed to exchange the subject token: the provider refused the grant (invalid_grant). "
        "Log in again."
    )
    assert token not in repr(caught.value)
    assert (await oidc.stats())["tokenErrors"] == {
        "urn:ietf:params:oauth:grant-type:token-exchange invalid_grant": 1
    }


async def test_an_unknown_audience_names_the_configuration(
    start: Callable[..., OidcProvider], cluster: Cluster, tmp_path: Path
) -> None:
    oidc = start()
    token_file = tmp_path / "token"
    _project(token_file, cluster.token(ALICE))
    async with TokenExchangeSource(
        _config(oidc), subject_token_file=token_file, audience=[TARGET, "payments-api"]
    ) as source:
        with pytest.raises(ClientConfigError) as caught:
            await source.resolve()
    assert caught.value.error_code == "invalid_target"
    assert str(caught.value) == (
        "Failed to exchange the subject token: the provider refused the audience or resource "
        "asked for (invalid_target, RFC 8693 §2.2.2): check audience and resource. The "
        "provider said: unknown audience"
    )
    # Both values were sent, as the repeated parameter RFC 8693 §2.1 describes.
    assert (await oidc.stats())["exchanges"][0]["audience"] == [TARGET, "payments-api"]
