"""Test your own client with aioscopedauth.testing (its pytest plugin is loaded for you)."""

from pathlib import Path

import aiohttp
import pytest

from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, OAuthConfig
from aioscopedauth.testing import FakeAuthServer


async def fetch_profile(session: aiohttp.ClientSession, base_url: str) -> int:
    """The code under test: your client."""
    async with session.get(f"{base_url}/api/profile") as response:
        return response.status


@pytest.mark.asyncio  # pytest-asyncio's default (strict) mode runs only marked tests
async def test_client_survives_a_revoked_token(
    fake_auth_server: FakeAuthServer, fake_oauth_config: OAuthConfig, codex_home: Path
) -> None:
    await FileAuthStore(codex_home).save(fake_auth_server.login())
    async with AuthManager(FileAuthStore(codex_home), fake_oauth_config) as manager:
        middleware = AuthMiddleware(manager)
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            assert await fetch_profile(session, fake_auth_server.url) == 200
            fake_auth_server.revoke_access_tokens()
            assert await fetch_profile(session, fake_auth_server.url) == 200
    assert fake_auth_server.refreshes == 1
    assert fake_auth_server.reuse_answers == 0
