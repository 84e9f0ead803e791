"""``TokenExchangeSource`` without a provider: its configuration checks, its ``repr``, a missing
subject token file. The exchanges themselves run against the real provider in
tests/oidc/test_token_exchange.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from aioscopedauth import (
    ClientConfigError,
    ConfigError,
    OAuthConfig,
    ProviderAuthCommand,
    TokenExchangeSource,
    TransientRefreshError,
)
from aioscopedauth._rfc6749 import classify_standard_failure

if TYPE_CHECKING:
    from pathlib import Path

CONFIG = OAuthConfig(
    "https://issuer.example/token", "c", client_secret="SECRET-77", dialect="rfc6749"
)


@pytest.mark.parametrize(
    ("config", "fields", "message"),
    [
        (
            CONFIG,
            {},
            "TokenExchangeSource: pass exactly one of subject_token_file and subject_command",
        ),
        (
            CONFIG,
            {"subject_token_file": "t", "subject_command": ProviderAuthCommand("x")},
            "TokenExchangeSource: pass exactly one of subject_token_file and subject_command",
        ),
        (
            OAuthConfig.codex(),
            {"subject_token_file": "t"},
            "TokenExchangeSource needs a standard configuration (dialect='rfc6749')",
        ),
        (
            CONFIG,
            {"subject_token_file": "t", "subject_token_type": "k8s"},
            (
                "TokenExchangeSource: subject_token_type must be a token type URI or one of jwt, "
                "id_token, access_token, refresh_token, saml2"
            ),
        ),
    ],
)
def test_configuration_problems(config: OAuthConfig, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TokenExchangeSource(config, **fields)
    assert str(caught.value) == message


async def test_repr_and_a_missing_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    async with TokenExchangeSource(CONFIG, subject_token_file=path, audience="api") as source:
        assert repr(source) == (
            f"<TokenExchangeSource file={str(path)!r} "
            "token_url='https://issuer.example/token' exchanges=0>"
        )
        with pytest.raises(TransientRefreshError) as caught:
            await source.resolve()
    assert str(caught.value) == (
        f"Failed to read the subject token file {path} (No such file or directory): check the "
        "path and that the token is mounted"
    )
    assert source.exchanges == 0


@pytest.mark.parametrize("content", ["", "two\ntokens"])
async def test_an_unusable_token_file_is_not_sent(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    async with TokenExchangeSource(CONFIG, subject_token_file=path) as source:
        with pytest.raises(TransientRefreshError) as caught:
            await source.resolve()
    assert str(caught.value) == (
        f"The subject token file {path} is empty or holds more than one token"
    )
    assert source.exchanges == 0


def test_invalid_target_is_a_configuration_problem() -> None:
    error = classify_standard_failure(
        400,
        '{"error": "invalid_target", "error_description": "unknown audience"}',
        config=CONFIG,
        grant="urn:ietf:params:oauth:grant-type:token-exchange",
        action="exchange the subject token",
    )
    assert isinstance(error, ClientConfigError)
    assert str(error) == (
        "Failed to exchange the subject token: the provider refused the audience or resource "
        "asked for (invalid_target, RFC 8693 §2.2.2): check audience and resource. The "
        "provider said: unknown audience"
    )
