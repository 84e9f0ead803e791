"""Fixtures of the interop suite: the real Codex CLI, the fakes it talks to, and the library.

Every test here skips, with the reason, unless ``AIOSCOPEDAUTH_CODEX_BIN`` names the binary of
``@openai/codex`` (``nox -s interop`` installs each pinned release and sets the variable).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig
from aioscopedauth._oauth import CODEX_CLIENT_ID
from aioscopedauth.testing import FakeAuthServer
from interop.harness import Backend, Codex, Tls, codex_binary, skip_reason

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _require_codex(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    # The library's whoami base (like Codex's) must never default to the real service.
    monkeypatch.setenv("CODEX_AUTHAPI_BASE_URL", "http://127.0.0.1:9/unused")


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return Tls.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def server() -> AsyncIterator[FakeAuthServer]:
    """The kit's token endpoint, expecting Codex's client id (both sides send it)."""
    async with FakeAuthServer(client_id=CODEX_CLIENT_ID) as fake:
        yield fake


@pytest.fixture
def oauth(server: FakeAuthServer) -> OAuthConfig:
    return OAuthConfig(server.token_url, CODEX_CLIENT_ID, failure_backoff=timedelta(0))


@pytest.fixture
async def backend(tls: Tls) -> AsyncIterator[Backend]:
    async with Backend(tls) as fake:
        yield fake


@pytest.fixture
def authapi_url(server: FakeAuthServer, backend: Backend) -> str:
    """Where whoami is asked: the kit's authapi when it has one, else the (404) backend."""
    url = getattr(server, "authapi_url", None)
    return url if isinstance(url, str) else f"{backend.url}/authapi"


@pytest.fixture
def codex(
    home: Path, tmp_path: Path, server: FakeAuthServer, backend: Backend, authapi_url: str
) -> Codex:
    binary = codex_binary()
    assert binary is not None
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    home.mkdir(mode=0o700, exist_ok=True)
    return Codex(binary, home, user_home, server, backend, authapi_url)


@pytest.fixture
async def manager(home: Path, oauth: OAuthConfig) -> AsyncIterator[AuthManager]:
    async with AuthManager(FileAuthStore(home, lock_timeout=10.0), oauth) as mgr:
        yield mgr
