"""Keyring calls, one at a time per store, each in a daemon thread under a time limit.

A keyring call cannot be interrupted, and a locked desktop keyring (or a wedged D-Bus session
bus) can keep one waiting for ever. So every call, including the first use's ``import keyring``
and backend discovery, runs in a daemon thread of its own, and the caller waits for it at most
the store's timeout. A call abandoned that way keeps its thread until the keyring answers; a
:class:`KeyringGate` lets a store have at most one such call in flight: a later caller waits
for the running call (within its own time limit) and then makes its own, or, when the running
call has already outlived a caller's time limit, fails at once instead of stranding one more
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, TypeVar

import attrs

from ._errors import StorageError

if TYPE_CHECKING:
    from collections.abc import Callable

    import keyring.backend

__all__ = ["KeyringGate", "default_keyring"]

_T = TypeVar("_T")


def default_keyring() -> keyring.backend.KeyringBackend:
    """Import ``keyring`` and return its backend (discovery can block: call it in a thread).

    Raises:
        StorageError: The ``keyring`` package is not installed.
    """
    try:
        import keyring  # noqa: PLC0415 -- optional extra, needed only by the keyring stores
    except ImportError as exc:  # pragma: no cover - the test extra installs keyring
        msg = (
            "The keyring package is not installed: run `pip install 'keyring>=25'` in this "
            "environment (what aioscopedauth's `keyring` extra installs)."
        )
        raise StorageError(msg) from exc
    return keyring.get_keyring()


@attrs.define(eq=False)
class _Running:
    """The call in flight: when it started, whether a caller gave up on it, who waits for it."""

    started: float
    abandoned: bool = False
    waiters: list[Callable[[], None]] = attrs.Factory(list)


@attrs.define(eq=False)
class KeyringGate:
    """At most one keyring call in flight for one store; each caller bounded by a time limit."""

    _guard: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _running: _Running | None = attrs.field(default=None, init=False)

    async def call(self, func: Callable[[], _T], limit: float, what: str) -> _T:
        """Run ``func`` in a daemon thread once no other call of this gate is running.

        Args:
            func: The blocking keyring call (backend discovery included).
            limit: Seconds this caller waits in all: for a running call, then for its own.
            what: What is being done, the start of every error message.

        Returns:
            What ``func`` returned.

        Raises:
            StorageError: The keyring did not answer in time, or an earlier call is still
                stuck in it (no new thread is started then).
            Exception: Whatever ``func`` raised.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            with self._guard:
                running = self._running
                if running is None:
                    mine = self._running = _Running(time.monotonic())
                    break
                if running.abandoned:
                    raise self._stuck(what, running)
                freed: asyncio.Future[None] = loop.create_future()
                running.waiters.append(_waker(loop, freed))
            try:
                await asyncio.wait_for(freed, max(0.0, deadline - loop.time()))
            except TimeoutError:
                self._abandon(running)
                raise _timed_out(what, limit) from None
        result: asyncio.Future[_T] = loop.create_future()
        thread = threading.Thread(
            target=self._run, args=(mine, func, loop, result), name="aioscopedauth-keyring"
        )
        thread.daemon = True  # an abandoned call never keeps the process from exiting
        try:
            thread.start()
        except BaseException:
            self._finish(mine)
            raise
        try:
            return await asyncio.wait_for(result, max(0.0, deadline - loop.time()))
        except TimeoutError:
            self._abandon(mine)
            raise _timed_out(what, limit) from None

    def _abandon(self, call: _Running) -> None:
        # The call has outlived a caller's time limit: later callers fail at once rather
        # than wait for it (it may never end).
        with self._guard:
            if self._running is call:
                call.abandoned = True

    def _run(
        self,
        mine: _Running,
        func: Callable[[], _T],
        loop: asyncio.AbstractEventLoop,
        result: asyncio.Future[_T],
    ) -> None:
        try:
            outcome: tuple[_T | None, BaseException | None] = (func(), None)
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting task
            outcome = (None, exc)
        finally:
            self._finish(mine)
        with contextlib.suppress(RuntimeError):  # the loop closed while we were stuck
            loop.call_soon_threadsafe(_settle, result, *outcome)

    def _finish(self, mine: _Running) -> None:
        with self._guard:
            if self._running is mine:
                self._running = None
            waiters, mine.waiters = mine.waiters, []
        for wake in waiters:
            wake()

    @staticmethod
    def _stuck(what: str, running: _Running) -> StorageError:
        age = time.monotonic() - running.started
        msg = (
            f"{what}: the keyring has not answered a call made {age:.0f} s ago, so no new one "
            "was made. Unlock it and retry."
        )
        return StorageError(msg)


def _timed_out(what: str, limit: float) -> StorageError:
    msg = f"{what}: the keyring did not answer within {limit:g} s. Unlock it and retry."
    return StorageError(msg)


def _waker(loop: asyncio.AbstractEventLoop, freed: asyncio.Future[None]) -> Callable[[], None]:
    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # that caller's loop is closed
            loop.call_soon_threadsafe(_settle, freed, None, None)

    return wake


def _settle(future: asyncio.Future[_T], result: _T | None, error: BaseException | None) -> None:
    if future.done():  # the caller gave up
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]  # None only with an error
