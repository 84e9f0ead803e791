"""``MemoryAuthStore``: a login held by one object, for host-supplied tokens and tests."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import attrs

from ._commit import CommitResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from ._model import AuthDotJson

__all__ = ["MemoryAuthStore"]


@contextlib.asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield


@attrs.define
class MemoryAuthStore:
    """Keeps the payload in this object only: nothing touches the disk, nothing outlives it.

    Used for tokens a host app supplies (``CHATGPT_AUTH_TOKENS``) and in tests. Its ``lock()``
    is a no-op because no other process can see it; its writes are atomic because they never
    wait.
    """

    _data: AuthDotJson | None = attrs.field(default=None, repr=False, alias="data")

    @property
    def kind(self) -> str:
        """``memory``."""
        return "memory"

    async def load(self) -> AuthDotJson | None:
        """Return the payload, or ``None``."""
        return self._data

    async def save(self, data: AuthDotJson) -> None:
        """Replace the payload.

        Args:
            data: The payload.
        """
        self._data = data

    async def delete(self) -> bool:
        """Drop the payload.

        Returns:
            Whether there was one.
        """
        existed = self._data is not None
        self._data = None
        return existed

    async def update(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        """Replace the payload with ``change(payload)`` (no await in between: atomic).

        Args:
            change: Given the payload (or ``None``), returns the new one (the same object to
                keep it, ``None`` to drop it).

        Returns:
            The payload before and after, and whether it changed.
        """
        before = self._data
        self._data = change(before)
        return CommitResult(before, self._data, written=self._data is not before)

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Return a no-op context manager (the store is private to the process)."""
        return _no_lock()
