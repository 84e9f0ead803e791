"""The fleet how-to's example runs against a real Redis/Valkey and the kit's token endpoint."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import FakeAuthServer, RedisServer, write_auth_json

if TYPE_CHECKING:
    from aioscopedauth import OAuthConfig

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "fleet_login.py"


async def test_fleet_login_example(
    home: Path,
    server: FakeAuthServer,
    oauth: OAuthConfig,
    own_redis: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("docs_example_fleet_login", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    login = server.login()
    write_auth_json(home, login)
    await asyncio.wait_for(module.main(home, own_redis.url, oauth), 30)
    assert capsys.readouterr().out == (
        "host B adopted host A's new token: True (reload)\nboth hosts send the same token: True\n"
    )
    assert server.refreshes == 1
    async with RedisAuthStore.from_url(own_redis.url, name="team-bot") as store:
        stored = await store.load()
    assert stored is not None
    assert stored.tokens is not None
    assert login.tokens is not None
    assert stored.tokens.refresh_token != login.tokens.refresh_token  # rotated, and shared
    # Moved, not copied: the machine no longer holds the (spent) refresh token.
    assert not (home / "auth.json").exists()
    with pytest.raises(SystemExit, match="Not logged in here: run `codex login` first"):
        await module.move_login_to_redis(home, own_redis.url)
