"""The pytest plugin of the test kit, registered through the ``pytest11`` entry point.

Fixtures (none is autouse; each is available once aioscopedauth is installed):

* ``fake_auth_server``: a started :class:`FakeAuthServer` on 127.0.0.1, closed after the test.
* ``fake_oauth_config``: an :class:`~aioscopedauth.OAuthConfig` for it (no failure backoff).
* ``codex_home``: a fresh Codex home folder (not created yet) under ``tmp_path``.
* ``token_script``: a factory, ``token_script("tok-1", "tok-2")``, for a real bearer script.

The async fixture needs pytest-asyncio (any mode).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from aioscopedauth._oauth import OAuthConfig

from ._scripts import TokenScript, write_token_script
from ._server import FakeAuthServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

try:
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio the async fixture is unusable
    _async_fixture = pytest.fixture  # type: ignore[assignment]  # same call shape

__all__ = ["codex_home", "fake_auth_server", "fake_oauth_config", "token_script"]


@_async_fixture
async def fake_auth_server() -> AsyncIterator[FakeAuthServer]:
    """A started fake token endpoint and API on 127.0.0.1."""
    async with FakeAuthServer() as server:
        yield server


@pytest.fixture
def fake_oauth_config(fake_auth_server: FakeAuthServer) -> OAuthConfig:
    """An OAuth config that points at ``fake_auth_server``; retries are not backed off."""
    return OAuthConfig(
        fake_auth_server.token_url, fake_auth_server.client_id, failure_backoff=timedelta(0)
    )


@pytest.fixture
def codex_home(tmp_path: Path) -> Path:
    """A Codex home folder under ``tmp_path``; it does not exist until something saves."""
    return tmp_path / "codex-home"


@pytest.fixture
def token_script(tmp_path: Path) -> Callable[..., TokenScript]:
    """Return a factory that writes a real bearer-token script printing the given lines."""
    counter = iter(range(1_000_000))

    def make(*lines: str) -> TokenScript:
        return write_token_script(tmp_path / f"token-script-{next(counter)}", *lines)

    return make
