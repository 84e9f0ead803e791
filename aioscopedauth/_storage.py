"""Where auth state lives: the ``AuthStore`` protocol, and the file, memory, keyring, auto stores.

Every store is async and never blocks the event loop: a file read and a save are each one
worker-thread call that opens, uses and closes the file (so a cancelled caller can never leak a
file handle, leave a half-written file or a stray temp file behind), keyring calls run in a
worker thread under a timeout, and the cross-process lock is an ``flock`` polled without
blocking. (aiofiles was dropped for this: cancelling ``aiofiles.open`` while its thread opens
the file leaks the handle.)

The stores live in rooms of their own, and this module re-exports them, so
``from aioscopedauth._storage import FileAuthStore`` keeps working:

- ``_files``: atomic writes, bounded reads and the ``auth.json`` encoding (blocking helpers);
- ``_file_store``: :class:`FileAuthStore`;
- ``_memory_store``: :class:`MemoryAuthStore`;
- ``_keyring_store``: :class:`KeyringAuthStore`, :class:`AutoAuthStore` and :func:`store_key`.

This module keeps what every store shares: the :class:`AuthStore` protocol, the optional
:class:`WatchableStore` capability, and :func:`load_auth_data`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import attrs

from ._envlogin import access_token_login, env_value
from ._file_store import FileAuthStore
from ._files import (
    AUTH_FILE,
    MAX_AUTH_FILE_BYTES,
    STALE_TEMP_SECONDS,
    TEMP_MARKER,
)
from ._keyring_store import KEYRING_SERVICE, AutoAuthStore, KeyringAuthStore, store_key
from ._memory_store import MemoryAuthStore
from ._model import AuthDotJson

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    from ._commit import CommitResult

__all__ = [
    "AUTH_FILE",
    "KEYRING_SERVICE",
    "MAX_AUTH_FILE_BYTES",
    "STALE_TEMP_SECONDS",
    "TEMP_MARKER",
    "AuthStore",
    "AutoAuthStore",
    "FileAuthStore",
    "KeyringAuthStore",
    "LoadedAuth",
    "MemoryAuthStore",
    "WatchableStore",
    "load_auth_data",
    "store_key",
]


@runtime_checkable
class AuthStore(Protocol):
    """Where an ``AuthDotJson`` is persisted.

    Implementations must be safe to call from any task. ``save``, ``delete`` and ``update`` are
    atomic with respect to every other writer of the same store, in this process or another;
    ``lock()`` must serialise refreshes across every process that shares the store (a no-op
    where the store is private to one process) and is held across a token request, so writes
    must not need it.

    Optional: a store that can tell when another process or host changed it offers
    ``watch(callback) -> stop`` (``WatchableStore``): it calls ``callback()`` (no
    argument, in the event loop; it must not block) after each change written elsewhere, and
    ``await stop()`` ends that. An :class:`~aioscopedauth.AuthManager` calls it at its first
    load and answers every burst of calls with one reload, so it adopts new tokens without
    waiting for a 401 (:class:`~aioscopedauth.redis.RedisAuthStore` has it; the file stores do
    not).
    """

    @property
    def kind(self) -> str:
        """The store's short name (``file``, ``memory``, ``keyring``, ``auto``)."""
        ...

    async def load(self) -> AuthDotJson | None:
        """Return the stored payload, or ``None`` when nothing is stored.

        Raises:
            StorageError: The stored data is unreadable or corrupt (and is left untouched).
        """
        ...

    async def save(self, data: AuthDotJson) -> None:
        """Replace the stored payload atomically.

        Raises:
            StorageError: It could not be written; the previous payload is intact.
        """
        ...

    async def delete(self) -> bool:
        """Remove the stored payload.

        Returns:
            Whether anything was removed.

        Raises:
            StorageError: It could not be removed.
        """
        ...

    async def update(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        """Read, decide and write as one atomic step (a compare-and-swap when ``change`` is one).

        Args:
            change: Given the stored payload (or ``None``), returns the payload to store: the
                same object to keep it, ``None`` to remove it. It must be quick and pure.

        Returns:
            What was stored before and after, and whether this call wrote.

        Raises:
            StorageError: The stored data is unreadable (nothing is written), or the new data
                could not be written (the old data is intact).
        """
        ...

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Return an async context manager that serialises refreshes across processes."""
        ...


@runtime_checkable
class WatchableStore(Protocol):
    """The optional capability of a store that can tell when another process or host changed it.

    ``isinstance(store, WatchableStore)`` says whether a store offers it
    (:class:`~aioscopedauth.redis.RedisAuthStore` does; the file, keyring and memory stores do
    not). An :class:`~aioscopedauth.AuthManager` calls :meth:`watch` at its first load and
    answers every burst of notices with one reload, so it adopts new tokens without waiting
    for a 401.
    """

    def watch(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Start calling ``callback`` after each change written elsewhere.

        Args:
            callback: Called with no argument, in the event loop, after each change another
                process or host writes; it must not block.

        Returns:
            ``stop``: ``await stop()`` ends the notices.
        """
        ...


@attrs.frozen
class LoadedAuth:
    """A payload and where it was found.

    Attributes:
        data: The payload.
        origin: ``access_token_env`` (the access-token variable), ``env`` (the API-key
            variable), ``memory`` (host-supplied tokens) or ``store``.
    """

    data: AuthDotJson
    origin: Literal["access_token_env", "env", "memory", "store"]


async def load_auth_data(
    store: AuthStore,
    memory: AuthStore | None = None,
    *,
    api_key_env: str | None = None,
    access_token_env: str | None = None,
) -> LoadedAuth | None:
    """Load auth in Codex's precedence (reference §1.5; Codex 0.169 and 0.171 as observed).

    1. The access-token environment variable, only when ``access_token_env`` names one and it
       is set and not blank (trimmed): a personal access token for an ``at-…`` value, else an
       agent identity, as Codex reads ``CODEX_ACCESS_TOKEN``.
    2. The API-key environment variable, likewise.
    3. The memory store (host-supplied tokens).
    4. The configured store.

    Args:
        store: The configured store.
        memory: The process's memory store, if any.
        api_key_env: The name of the API-key variable (Codex uses ``CODEX_API_KEY``), or ``None``.
        access_token_env: The name of the access-token variable (Codex uses
            ``CODEX_ACCESS_TOKEN``), or ``None``.

    Returns:
        The payload and its origin, or ``None`` when no source has one.

    Raises:
        StorageError: The configured store is corrupt or unreadable.
    """
    token = env_value(os.environ, access_token_env)
    if token is not None:
        return LoadedAuth(access_token_login(token), "access_token_env")
    key = env_value(os.environ, api_key_env)
    if key is not None:
        return LoadedAuth(AuthDotJson.for_api_key(key), "env")
    if memory is not None and memory is not store:
        data = await memory.load()
        if data is not None:
            return LoadedAuth(data, "memory")
    data = await store.load()
    return None if data is None else LoadedAuth(data, "store")
