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
    UnauthorizedRecovery,
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
    # A refresh that produced a token asked for before the 401 may run once more.
    assert next_step("managed", "refresh_token", conclusive=False) == "refresh_token"
    assert next_step("external", "external_refresh", conclusive=False) == "external_refresh"
    assert next_step("managed", "reload", refreshable=False, conclusive=False) == "done"


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


async def test_a_refresh_joined_before_the_401_may_run_again_only_when_told(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # Issue 23: a recovery whose refresh step joined a refresh asked for before its 401 got a
    # token that a revocation may have killed on its way back. Told so (next(rejected)), it
    # refreshes once more; a plain `async for` (which reports no new 401) runs each step once.
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    server.token_gate = asyncio.Event()
    proactive = asyncio.create_task(manager.refresh_token())
    await server.token_request_seen.wait()
    told = manager.unauthorized_recovery(rejected)
    iterated = manager.unauthorized_recovery(rejected)

    async def two_steps() -> tuple[RecoveryStep, RecoveryStep]:
        first = await told.next()
        return first, await told.next()

    inflight = manager._core.refresh.inflight
    assert inflight is not None

    async def open_gate() -> None:
        # Runs after the recoveries' first turn, in which each joins the refresh at the gate.
        assert len(inflight.waiters) == 3  # the proactive caller and both recoveries
        assert server.token_gate is not None
        server.token_gate.set()

    steps = asyncio.gather(two_steps(), _all(iterated), open_gate())
    (reload, refresh), iterated_steps, _ = await steps
    assert await proactive is True
    assert (reload.name, reload.auth_state_changed) == ("reload", False)
    assert (refresh.name, refresh.auth_state_changed) == ("refresh_token", True)
    assert [s.name for s in iterated_steps] == ["reload", "refresh_token"]
    assert server.token_calls == 1
    joined = manager.auth_cached()
    assert _step(told) == "refresh_token"  # the token it got was asked for before the 401
    again = await told.next(joined)  # ...and was rejected: the second refresh runs
    assert (again.name, again.auth_state_changed) == ("refresh_token", True)
    assert _step(told) == "done"
    assert server.token_calls == 2
    assert manager.auth_cached() not in (rejected, joined)


async def _all(recovery: UnauthorizedRecovery) -> list[RecoveryStep]:
    return [step async for step in recovery]


def _step(recovery: UnauthorizedRecovery) -> str:
    return recovery.step_name


async def test_a_rejected_fresh_token_allows_one_more_refresh_when_told(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # After a refresh step whose token was asked for after the 401 the recovery is done; told
    # that this token was rejected too, it allows one more refresh (a revocation may have
    # landed right after the token was minted); a second fresh token rejected is final.
    write_auth_json(home, server.login())
    rejected = await manager.auth()
    assert rejected is not None
    recovery = manager.unauthorized_recovery(rejected)
    assert (await recovery.next()).auth_state_changed is False  # reload: nothing new
    first = await recovery.next()
    assert (first.name, first.auth_state_changed, first.fresh) == ("refresh_token", True, True)
    assert not recovery.has_next()
    recovery.rejected_again(manager.auth_cached())  # type: ignore[arg-type]
    assert recovery.has_next()
    second = await recovery.next(manager.auth_cached())
    assert (second.name, second.fresh) == ("refresh_token", True)
    recovery.rejected_again(manager.auth_cached())  # type: ignore[arg-type]
    assert not recovery.has_next()
    assert recovery.unavailable_reason() == "recovery_exhausted"
    assert server.token_calls == 2
