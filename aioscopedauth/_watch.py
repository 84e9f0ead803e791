"""Change notices from the store (optional: stores that offer ``watch``, e.g. Redis).

A burst of notices becomes one reload; a notice that arrives while a reload runs makes it run
once more (the running one may have read too early). The watcher knows nothing but the store
and a ``reload`` callable.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import attrs

from ._errors import AuthError
from ._storage import WatchableStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._storage import AuthStore

__all__ = ["StoreWatcher"]

logger = logging.getLogger("aioscopedauth.manager")


@attrs.define(eq=False)
class StoreWatcher:
    """Subscribes to a store's change notices once, and reloads when one arrives."""

    store: AuthStore
    reload: Callable[[], Awaitable[object]]
    watched: bool = False
    unwatch: Callable[[], Awaitable[None]] | None = None
    """Stops the store's change notices."""
    running: asyncio.Task[None] | None = None
    changed_again: bool = False

    def start(self) -> None:
        """Subscribe to the store's notices (once; a store without ``watch`` sends none)."""
        if self.watched:
            return
        self.watched = True
        if isinstance(self.store, WatchableStore):
            self.unwatch = self.store.watch(self.changed)

    def changed(self) -> None:
        """The store says another writer changed it: one reload, however many notices."""
        if self.running is not None and not self.running.done():
            self.changed_again = True  # the running reload may have read too early
            return
        self.running = asyncio.get_running_loop().create_task(
            self._reload_after_notices(), name="aioscopedauth-store-changed"
        )

    async def _reload_after_notices(self) -> None:
        while True:
            self.changed_again = False
            try:
                await self.reload()
            except AuthError as exc:
                logger.info("Could not reload after the store changed: %s", exc)
            if not self.changed_again:
                return

    async def stop(self) -> None:
        """Stop the notices and any reload they started."""
        unwatch, self.unwatch = self.unwatch, None
        if unwatch is not None:
            await unwatch()
        task, self.running = self.running, None
        if task is not None and not task.done():
            task.cancel()
            # Waited for, not awaited: `await task` raises the CancelledError of the task, and
            # suppressing that would also swallow a cancellation of our own caller.
            await asyncio.wait({task})
