"""Derived bearer managers share the base's state but never its credentials (reference §2.6)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AuthMode,
    CommandBearerRefresher,
    ConfigError,
    FileAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
)
from aioscopedauth.testing import FakeAuthServer, TokenScript, write_auth_json, write_token_script

if TYPE_CHECKING:
    from pathlib import Path


def _derived(base: AuthManager, script: TokenScript) -> AuthManager:
    command = ProviderAuthCommand("./print-token.sh", cwd=script.folder, refresh_interval=60)
    return base.with_external_bearer_refresher(CommandBearerRefresher(command))


async def test_derived_shares_snapshot_but_returns_its_bearer(
    home: Path, tmp_path: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login()
    write_auth_json(home, login)
    derived = _derived(manager, write_token_script(tmp_path / "s", "provider-token"))
    assert await manager.reload() is True
    # The base's reload is visible through the derived manager's cached snapshot.
    assert derived.auth_cached() == manager.auth_cached()
    bearer = await derived.auth()
    base = await manager.auth()
    assert bearer is not None
    assert base is not None
    assert (bearer.mode, bearer.token, bearer.account_id) == (
        AuthMode.BEARER,
        "provider-token",
        None,
    )
    assert "ChatGPT-Account-ID" not in bearer.headers()
    assert base.mode is AuthMode.CHATGPT
    assert (derived.mode, manager.mode) == (AuthMode.BEARER, AuthMode.CHATGPT)
    # A reload through the derived manager acts on the shared snapshot.
    write_auth_json(home, AuthDotJson.for_api_key("sk-new"))
    assert await derived.reload() is True
    assert manager.auth_cached() is not None
    assert manager.auth_cached().token == "sk-new"  # type: ignore[union-attr]


async def test_derived_never_writes_the_store(
    home: Path, tmp_path: Path, manager: AuthManager
) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-base"))
    before = (home / "auth.json").read_bytes()
    script = write_token_script(tmp_path / "s", "one", "two")
    derived = _derived(manager, script)
    first = await derived.auth()
    await derived.unauthorized_recovery(first).next()
    second = await derived.auth()
    assert second is not None
    assert second.token == "two"
    assert (home / "auth.json").read_bytes() == before
    assert sorted(p.name for p in home.iterdir()) == ["auth.json"]


async def test_derived_failure_returns_none_never_the_base_login(
    home: Path, tmp_path: Path, manager: AuthManager
) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-must-not-leak"))
    derived = _derived(manager, write_token_script(tmp_path / "s", "FAIL"))
    assert await derived.auth() is None
    base = await manager.auth()
    assert base is not None
    assert base.token == "sk-must-not-leak"
    assert await derived.auth() is None


async def test_refresh_lock_is_shared_between_base_and_derived(
    home: Path, tmp_path: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    await manager.reload()
    derived = _derived(manager, write_token_script(tmp_path / "s", "tok"))
    server.token_gate = asyncio.Event()
    base_refresh = asyncio.create_task(manager.refresh_token())
    await server.token_request_seen.wait()
    derived_refresh = asyncio.create_task(derived.refresh_token())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not derived_refresh.done()
    server.token_gate.set()
    assert list(await asyncio.gather(base_refresh, derived_refresh)) == [True, True]
    assert server.token_calls == 1


async def test_slow_bearer_command_does_not_block_another_provider(
    tmp_path: Path, manager: AuthManager
) -> None:
    slow = write_token_script(tmp_path / "slow", "HANG")
    fast = write_token_script(tmp_path / "fast", "fast-token")
    slow_mgr = _derived(manager, slow)
    fast_mgr = _derived(manager, fast)
    hung = asyncio.create_task(slow_mgr.auth())
    async with asyncio.timeout(10):  # were the providers to share a lock, this would hang
        auth = await fast_mgr.auth()
    assert auth is not None
    assert auth.token == "fast-token"
    assert not hung.done()
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung


def test_derived_requires_a_bearer_source(manager: AuthManager) -> None:
    class HostSource:
        mode = AuthMode.CHATGPT_AUTH_TOKENS

    with pytest.raises(ConfigError, match="needs a bearer source"):
        manager.with_external_bearer_refresher(HostSource())  # type: ignore[arg-type]


async def test_closing_a_derived_manager_leaves_the_base_usable(
    home: Path, tmp_path: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    async with AuthManager(FileAuthStore(home), oauth) as base:
        derived = _derived(base, write_token_script(tmp_path / "s", "tok"))
        async with derived:
            await derived.auth()
        auth = await base.auth()
        assert auth is not None
        assert server.is_valid_access_token(auth.token)
    assert "derived" in repr(derived)
