from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    FileAuthStore,
    RecoveryStep,
    RefreshFailureReason,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from aioscopedauth._oauth import ACCOUNT_MISMATCH_MESSAGE
from aioscopedauth._recovery import next_step
from aioscopedauth.testing import FakeAuthServer, TokenFailure, make_id_token, write_auth_json

if TYPE_CHECKING:
    from pathlib import Path


def test_next_step_state_machine() -> None:
    assert next_step("managed", "reload") == "refresh_token"
    assert next_step("managed", "refresh_token") == "done"
    assert next_step("external", "external_refresh") == "done"


async def test_unauthorized_recovery_reports_mode_and_step_names(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # Reference checklist 7 (managed half; the external half is in test_command).
    write_auth_json(home, server.login())
    await manager.auth()
    recovery = manager.unauthorized_recovery()
    assert (recovery.mode_name, recovery.step_name) == ("managed", "reload")
    assert recovery.has_next()
    assert repr(recovery) == "<UnauthorizedRecovery mode=managed step=reload>"


async def test_managed_sequence_reload_then_refresh(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    server.revoke_access_tokens()
    recovery = manager.unauthorized_recovery(rejected)
    assert await recovery.next() == RecoveryStep("reload", False)
    assert recovery.step_name == "refresh_token"
    assert await recovery.next() == RecoveryStep("refresh_token", True)
    assert not recovery.has_next()
    assert recovery.unavailable_reason() == "recovery_exhausted"
    assert server.token_calls == 1
    auth = manager.auth_cached()
    assert auth is not None
    assert server.is_valid_access_token(auth.token)
    with pytest.raises(RefreshTokenFailedError, match=r"^No more recovery steps available\.$"):
        await recovery.next()


async def test_async_for_runs_every_step(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    steps = [step async for step in manager.unauthorized_recovery(rejected)]
    assert [s.name for s in steps] == ["reload", "refresh_token"]
    assert server.token_calls == 1


async def test_reload_adopts_tokens_another_process_saved(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    newer = server.login()
    write_auth_json(home, newer)
    step = await manager.unauthorized_recovery(rejected).next()
    assert step == RecoveryStep("reload", True)
    assert server.token_calls == 0
    assert newer.tokens is not None
    assert manager.auth_cached().token == newer.tokens.access_token  # type: ignore[union-attr]


async def test_account_changed_on_disk_ends_recovery(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    write_auth_json(home, server.login(account_id="acct-other"))
    recovery = manager.unauthorized_recovery(rejected)
    with pytest.raises(RefreshTokenFailedError) as info:
        await recovery.next()
    assert str(info.value) == ACCOUNT_MISMATCH_MESSAGE
    assert info.value.reason is RefreshFailureReason.OTHER
    assert recovery.step_name == "done"
    assert server.token_calls == 0


async def test_logged_out_elsewhere_ends_recovery(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    (home / "auth.json").unlink()
    with pytest.raises(RefreshTokenFailedError, match="logged out or signed in to another"):
        await manager.unauthorized_recovery(rejected).next()


async def test_transient_failure_does_not_advance(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    recovery = manager.unauthorized_recovery(rejected)
    await recovery.next()
    server.failures.append(TokenFailure(503, "later"))
    with pytest.raises(TransientRefreshError):
        await recovery.next()
    assert recovery.step_name == "refresh_token"
    assert await recovery.next() == RecoveryStep("refresh_token", True)


async def test_permanent_failure_is_cached_and_fails_fast(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    server.revoke_refresh_tokens()
    recovery = manager.unauthorized_recovery(rejected)
    await recovery.next()
    with pytest.raises(RefreshTokenFailedError) as info:
        await recovery.next()
    assert info.value.reason is RefreshFailureReason.REVOKED
    with pytest.raises(RefreshTokenFailedError):
        await recovery.next()
    assert server.token_calls == 1


async def test_api_key_and_missing_auth_never_recover(home: Path, manager: AuthManager) -> None:
    assert not manager.unauthorized_recovery().has_next()
    assert manager.unauthorized_recovery().unavailable_reason() == "not_chatgpt_auth"
    write_auth_json(home, AuthDotJson.for_api_key("sk"))
    await manager.reload()
    recovery = manager.unauthorized_recovery()
    assert not recovery.has_next()
    assert [s async for s in recovery] == []


async def test_host_tokens_without_refresher_cannot_recover(manager: AuthManager) -> None:
    await manager.login_with_tokens(make_id_token(account_id="org"), "org")
    recovery = manager.unauthorized_recovery()
    assert recovery.mode_name == "external"
    assert recovery.unavailable_reason() == "no_external_auth"


async def test_concurrent_recoveries_of_one_token_refresh_once(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    server.revoke_access_tokens()

    async def recover() -> list[RecoveryStep]:
        return [s async for s in manager.unauthorized_recovery(rejected)]

    results = await asyncio.gather(*(recover() for _ in range(100)))
    assert server.token_calls == 1
    assert all(steps[-1].auth_state_changed for steps in results)


async def test_recoveries_arriving_during_a_refresh_join_it_without_reading(
    home: Path, manager: AuthManager, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A storm of 401s comes in waves; a wave that finds a refresh of its rejected auth already
    # in flight must not read the store again (the refresh's guarded re-read covers it).
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    server.revoke_access_tokens()
    reads = 0
    load = FileAuthStore.load

    async def counting_load(self: FileAuthStore) -> AuthDotJson | None:
        nonlocal reads
        reads += 1
        return await load(self)

    monkeypatch.setattr(FileAuthStore, "load", counting_load)
    server.token_gate = asyncio.Event()

    async def recover() -> list[RecoveryStep]:
        return [s async for s in manager.unauthorized_recovery(rejected)]

    first = asyncio.create_task(recover())
    await server.token_request_seen.wait()
    before = reads
    later = [asyncio.create_task(recover()) for _ in range(50)]
    await asyncio.sleep(0.05)
    assert reads == before  # the later wave read nothing
    server.token_gate.set()
    results = await asyncio.gather(first, *later)
    assert server.token_calls == 1
    assert all(steps[-1].auth_state_changed for steps in results)
    assert manager.auth_cached() != rejected
    assert await FileAuthStore(home).load() == manager.auth_cached().data  # type: ignore[union-attr]


async def test_a_cancelled_reader_does_not_strand_the_recoveries_sharing_its_read(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    assert rejected is not None
    reader = asyncio.create_task(manager.reload_if_account_matches(rejected.account_id, None))
    await asyncio.sleep(0)  # the reader has started the shared read
    sharing = [
        asyncio.create_task(manager.reload_if_account_matches(rejected.account_id, None))
        for _ in range(5)
    ]
    await asyncio.sleep(0)
    reader.cancel()
    assert await asyncio.gather(*sharing) == [False] * 5  # they read again and finished
    with pytest.raises(asyncio.CancelledError):
        await reader
