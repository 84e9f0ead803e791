"""The snapshot cell: the auth a manager family hands out, its one writer, failures and changes.

Invariants:

* :meth:`SnapshotCell.set` is the **only** writer of the snapshot. In this order it bumps
  ``version``, runs the ``on_set`` hook (the refresh policy's born-stale note), clears a failure
  recorded for other auth, and notifies subscribers.
* ``version`` orders reads against changes: a store read that started before a change is older
  than the snapshot and must not overwrite it (a coalesced reload finishing after a refresh
  would otherwise bring back the spent refresh token).
* A failure is recorded only while the snapshot is still the one attempted, and never outlives
  a change of the snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Literal, Self

import attrs

from ._errors import ConfigError, RefreshTokenFailedError, TransientRefreshError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._model import Auth

__all__ = ["AuthChange", "AuthChanges", "ChangeReason", "Failure", "SnapshotCell"]

# Every room of the manager logs under the manager's name: users filter on it.
logger = logging.getLogger("aioscopedauth.manager")

ChangeReason = Literal["load", "reload", "refresh", "login", "logout", "workspace", "external"]
_CHANGE_QUEUE_LIMIT = 256
_WARNED_LIMIT = 64


@attrs.frozen
class AuthChange:
    """One change of auth state, as yielded by :meth:`AuthManager.changes`.

    Attributes:
        reason: What changed it: ``load``, ``reload``, ``refresh``, ``login``, ``logout``,
            ``workspace`` (the forced workspace changed) or ``external`` (a host refresh).
        auth: The snapshot after the change (its ``repr`` holds no secret).
    """

    reason: ChangeReason
    auth: Auth | None


class AuthChanges:
    """An async iterator of :class:`AuthChange`, subscribed from the moment it is created.

    Use it as ``async with manager.changes() as changes: async for change in changes: ...`` or
    call :meth:`aclose` when done. A subscriber that falls more than 256 changes behind loses
    the oldest ones.
    """

    def __init__(self, subscribers: set[asyncio.Queue[AuthChange | None]]) -> None:
        """Subscribe to ``subscribers`` (done by :meth:`AuthManager.changes`)."""
        self._subscribers = subscribers
        self._queue: asyncio.Queue[AuthChange | None] = asyncio.Queue(_CHANGE_QUEUE_LIMIT)
        subscribers.add(self._queue)

    def __aiter__(self) -> Self:
        """Return the iterator itself."""
        return self

    async def __anext__(self) -> AuthChange:
        """Wait for the next change.

        Raises:
            StopAsyncIteration: After :meth:`aclose`.
        """
        if self._queue not in self._subscribers:
            raise StopAsyncIteration
        change = await self._queue.get()
        if change is None:  # closed while waiting
            raise StopAsyncIteration
        return change

    def empty(self) -> bool:
        """Whether no change is waiting (``__anext__`` would wait)."""
        return self._queue.empty()

    async def aclose(self) -> None:
        """Unsubscribe; a task waiting in ``__anext__`` stops iterating."""
        if self._queue in self._subscribers:
            self._subscribers.discard(self._queue)
            _put_dropping_oldest(self._queue, None)

    async def __aenter__(self) -> Self:
        """Return the iterator."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Unsubscribe."""
        await self.aclose()


@attrs.define(eq=False)
class Failure:
    """A refresh failure recorded for one snapshot."""

    auth: Auth
    error: RefreshTokenFailedError | TransientRefreshError
    until: float | None  # monotonic deadline for transient failures; None = permanent
    checked: float = attrs.field(factory=time.monotonic)  # when the store was last looked at


@attrs.define(eq=False)
class SnapshotCell:
    """The snapshot shared by a manager and every manager derived from it.

    Attributes:
        snapshot: The auth handed out now (``None``: logged out, or not loaded yet).
        loaded: Whether the store was read once.
        version: Bumped on every change of ``snapshot``.
        loop: The event loop that first used the family; the only one it works on.
        failure: The refresh failure recorded for the current snapshot, if any.
        on_set: Called by :meth:`set` with each new snapshot and its reason, before the
            failure is cleared and subscribers are told (the refresh policy's hook).
    """

    snapshot: Auth | None = None
    loaded: bool = False
    version: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    failure: Failure | None = None
    load_lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    subscribers: set[asyncio.Queue[AuthChange | None]] = attrs.Factory(set)
    warned: set[str] = attrs.Factory(set)
    """Warnings already logged once (a failure that repeats on every call)."""
    on_set: Callable[[Auth, ChangeReason], None] | None = None

    def check_loop(self) -> None:
        """Bind the family to the running loop on first use; refuse any other loop after.

        Raises:
            ConfigError: Called from another event loop than the first.
        """
        # asyncio locks, tasks and the HTTP session belong to the loop that first used them;
        # from another loop they fail deep inside with "Event loop is closed" or hang.
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif self.loop is not loop:
            msg = (
                "This AuthManager was first used on another event loop. A manager (and the "
                "managers derived from it) belongs to one event loop: make one manager per "
                "loop; they share the login through the store."
            )
            raise ConfigError(msg)

    def set(self, new: Auth | None, reason: ChangeReason) -> bool:
        """Replace the snapshot (the only writer); tell subscribers if it changed.

        Returns:
            Whether it changed.
        """
        old = self.snapshot
        self.snapshot = new
        if new == old:
            return False
        self.version += 1
        if new is not None and self.on_set is not None:
            self.on_set(new, reason)
        if self.failure is not None and self.failure.auth != new:
            self.failure = None
        self.notify(AuthChange(reason, new))
        return True

    def notify(self, change: AuthChange) -> None:
        """Hand ``change`` to every subscriber (dropping a slow one's oldest change)."""
        for queue in self.subscribers:
            _put_dropping_oldest(queue, change)

    def subscribe(self) -> AuthChanges:
        """Return a new subscription to changes."""
        return AuthChanges(self.subscribers)

    def known_failure(self, auth: Auth) -> RefreshTokenFailedError | TransientRefreshError | None:
        """The failure recorded for exactly ``auth`` and still in force, if any."""
        failure = self.failure
        if failure is None or failure.auth != auth:
            return None
        if failure.until is not None and time.monotonic() >= failure.until:
            return None
        return failure.error

    def permanent_failure_for(self, auth: Auth | None) -> RefreshTokenFailedError | None:
        """The permanent failure recorded for exactly ``auth``, if any."""
        failure = self.failure
        if failure is None or failure.until is not None or failure.auth != auth:
            return None
        assert isinstance(failure.error, RefreshTokenFailedError)  # noqa: S101 -- until None
        return failure.error

    def record_failure(
        self,
        attempted: Auth,
        error: RefreshTokenFailedError | TransientRefreshError,
        backoff: float,
    ) -> None:
        """Remember ``error`` for ``attempted`` (for ``backoff`` seconds unless permanent)."""
        # Only while the snapshot is still the one attempted: a concurrent reload to new
        # credentials must not be poisoned by the old ones' failure (reference §2.5).
        if self.snapshot != attempted:
            return
        if isinstance(error, RefreshTokenFailedError):
            self.failure = Failure(attempted, error, None)
        elif backoff > 0:
            self.failure = Failure(attempted, error, time.monotonic() + backoff)

    def warn_once(self, message: str) -> None:
        """Log ``message`` as a warning the first time, at DEBUG after that."""
        warned = self.warned
        if message in warned:
            logger.debug("%s", message)
            return
        if len(warned) >= _WARNED_LIMIT:
            warned.clear()
        warned.add(message)
        logger.warning("%s (said once; later repeats are logged at DEBUG)", message)


def _put_dropping_oldest(queue: asyncio.Queue[AuthChange | None], item: AuthChange | None) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
