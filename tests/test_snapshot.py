"""The snapshot cell: its one writer, failure records and change stream, without I/O."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aioscopedauth import Auth, RefreshFailureReason, RefreshTokenFailedError
from aioscopedauth import TransientRefreshError as Transient
from aioscopedauth._snapshot import AuthChange, SnapshotCell
from aioscopedauth.testing import chatgpt_auth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

    from aioscopedauth import AuthChanges


def _auth(refresh: str) -> Auth:
    return Auth.from_data(chatgpt_auth(refresh_token=refresh))


def test_set_bumps_the_version_and_notifies_only_on_a_change() -> None:
    seen: list[tuple[Auth, str]] = []
    cell = SnapshotCell(on_set=lambda new, reason: seen.append((new, reason)))
    changes = cell.subscribe()
    first = _auth("rt-1")
    assert cell.set(first, "load") is True
    assert cell.set(first, "reload") is False  # equal: no version, no notice, no hook
    assert cell.set(None, "logout") is True
    assert cell.version == 2
    assert seen == [(first, "load")]  # the hook sees snapshots, not logouts
    assert [changes._queue.get_nowait() for _ in range(2)] == [
        AuthChange("load", first),
        AuthChange("logout", None),
    ]
    assert changes.empty()


def test_a_failure_is_recorded_only_for_the_current_snapshot_and_cleared_by_a_change() -> None:
    cell = SnapshotCell()
    old, new = _auth("rt-1"), _auth("rt-2")
    error = RefreshTokenFailedError(RefreshFailureReason.EXPIRED, "expired")
    cell.record_failure(old, error, 5.0)
    assert cell.failure is None  # not the snapshot: a reload moved on meanwhile
    cell.set(old, "load")
    cell.record_failure(old, error, 5.0)
    assert cell.known_failure(old) is error
    assert cell.permanent_failure_for(old) is error
    assert cell.permanent_failure_for(new) is None
    cell.set(old, "reload")  # unchanged: the failure stands
    assert cell.known_failure(old) is error
    cell.set(new, "reload")
    assert cell.failure is None


def test_a_transient_failure_lasts_its_backoff_and_none_without_one() -> None:
    cell = SnapshotCell()
    auth = _auth("rt-1")
    cell.set(auth, "load")
    error = Transient("Failed to refresh token: 503. Retry later.")
    cell.record_failure(auth, error, 0.0)
    assert cell.known_failure(auth) is None  # no backoff configured: nothing to remember
    cell.record_failure(auth, error, 30.0)
    assert cell.known_failure(auth) is error
    assert cell.permanent_failure_for(auth) is None
    failure = cell.failure
    assert failure is not None
    failure.until = time.monotonic() - 0.001  # the backoff is over
    assert cell.known_failure(auth) is None


async def test_a_slow_subscriber_loses_the_oldest_changes() -> None:
    cell = SnapshotCell()
    changes = cell.subscribe()
    snapshots = [_auth(f"rt-{n}") for n in range(300)]
    for snapshot in snapshots:
        cell.set(snapshot, "refresh")
    got = [change.auth async for change in _drain(changes)]
    assert got == snapshots[-256:]


async def _drain(changes: AuthChanges) -> AsyncIterator[AuthChange]:
    while not changes.empty():
        yield await changes.__anext__()


def test_warn_once_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    cell = SnapshotCell()
    with caplog.at_level("DEBUG", logger="aioscopedauth.manager"):
        cell.warn_once("Failed to refresh token: disk full")
        cell.warn_once("Failed to refresh token: disk full")
    levels = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert levels == [
        (
            "WARNING",
            "Failed to refresh token: disk full (said once; later repeats are logged at DEBUG)",
        ),
        ("DEBUG", "Failed to refresh token: disk full"),
    ]
