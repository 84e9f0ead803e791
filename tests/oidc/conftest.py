"""Fixtures of the oidc suite: the real provider, started once, and one per test on demand.

Every test here skips, with the reason, unless ``AIOSCOPEDAUTH_OIDC_MODULES`` names a
``node_modules`` folder holding the pinned oidc-provider (``nox -s oidc`` installs it and sets
the variable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from oidc.harness import OidcProvider, skip_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _require_provider() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One provider for the session, with its default settings (60 s access tokens)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    provider = OidcProvider.start(tmp_path_factory.mktemp("oidc") / "provider.log")
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def start_oidc(tmp_path: Path) -> Iterator[Callable[..., OidcProvider]]:
    """Start a provider with settings of its own (see provider.mjs); stopped after the test."""
    started: list[OidcProvider] = []

    def start(**config: Any) -> OidcProvider:
        provider = OidcProvider.start(tmp_path / f"provider-{len(started)}.log", **config)
        started.append(provider)
        return provider

    try:
        yield start
    finally:
        for provider in started:
            provider.stop()
