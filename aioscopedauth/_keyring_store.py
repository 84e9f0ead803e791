"""The keyring stores: ``KeyringAuthStore`` (Codex's keyring entry) and ``AutoAuthStore``.

Keyring calls cannot be interrupted and a locked desktop keyring can hang for ever, so each
call runs in a daemon thread of its own under the store's timeout. The ``keyring`` package is
an optional extra, imported at first use.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import attrs

from ._commit import CommitResult
from ._errors import AuthDataError, StorageError
from ._file_store import FileAuthStore
from ._files import (
    _atomic_write,
    _describe_os_error,
    _encode,
    _in_thread,
    _to_path,
    _unlink,
)
from ._keyring_call import KeyringGate, default_keyring
from ._model import AuthDotJson

if TYPE_CHECKING:
    import os
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    import keyring.backend

__all__ = ["KEYRING_SERVICE", "AutoAuthStore", "KeyringAuthStore", "store_key"]

logger = logging.getLogger("aioscopedauth.storage")

KEYRING_SERVICE = "Codex Auth"

_T = TypeVar("_T")


def store_key(home: str | os.PathLike[str]) -> str:
    """Return Codex's key for a home folder: ``cli|`` and 16 hex chars of its path's sha256.

    Args:
        home: The Codex home folder; canonicalised when it exists, else used as given.

    Returns:
        For example ``cli|2c26b46b68ffc68f``.
    """
    try:
        canonical = str(Path(home).resolve(strict=True))
    except (OSError, RuntimeError):
        # Missing, or a symlink loop (RuntimeError on Python 3.11 and 3.12, ELOOP later): the
        # path as given; a loop is reported when the home is used.
        canonical = str(home)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"cli|{digest[:16]}"


@attrs.define
class KeyringAuthStore:
    """Keeps the payload in the system keyring under Codex's entry, as compact JSON.

    The entry is service ``Codex Auth``, account ``cli|`` + 16 hex chars of the home path's
    sha256, so an existing Codex keyring login is found. Keyring calls run in a worker thread and
    give up after ``timeout`` seconds (a locked desktop keyring can hang forever). A successful
    save removes a leftover ``auth.json``. Writes take the file store's commit locks in ``home``
    (so they are atomic across processes); ``lock()`` is the file store's refresh lock.

    Args:
        home: The Codex home folder (names the entry and holds the lock files).
        timeout: Seconds to wait for the keyring.
        service: The keyring service name.
        account: The keyring account name; defaults to :func:`store_key` of ``home``.
        backend: A keyring backend; defaults to ``keyring.get_keyring()`` at first use.
    """

    home: Path = attrs.field(converter=_to_path)
    timeout: float = 10.0
    service: str = KEYRING_SERVICE
    account: str = attrs.field(default=attrs.Factory(lambda s: store_key(s.home), takes_self=True))
    backend: keyring.backend.KeyringBackend | None = attrs.field(default=None, repr=False)
    _file: FileAuthStore = attrs.field(init=False, repr=False)
    _gate: KeyringGate = attrs.field(factory=KeyringGate, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        """Create the file store used for the fallback file and the locks."""
        self._file = FileAuthStore(self.home)

    @property
    def kind(self) -> str:
        """``keyring``."""
        return "keyring"

    async def _call(self, what: str, func: Callable[[keyring.backend.KeyringBackend], _T]) -> _T:
        chosen = self.backend

        def in_thread() -> _T:
            # The first use imports keyring and discovers the backend (which can wait on a
            # wedged D-Bus bus): in the thread, under the same time limit as the call.
            return func(chosen if chosen is not None else default_keyring())

        try:
            return await self._gate.call(in_thread, self.timeout, what)
        except StorageError:
            raise
        except Exception as exc:
            # Backend errors describe the backend, never the stored secret.
            msg = f"{what}: {exc}"
            raise StorageError(msg) from exc

    async def load(self) -> AuthDotJson | None:
        """Read the entry.

        Returns:
            The payload, or ``None`` when there is no entry.

        Raises:
            StorageError: The keyring failed, timed out, or holds something that is not an
                ``auth.json`` payload.
        """
        text = await self._call(
            "failed to load CLI auth from keyring",
            lambda b: b.get_password(self.service, self.account),
        )
        if text is None:
            return None
        try:
            return AuthDotJson.from_json(text)
        except AuthDataError as exc:
            msg = f"failed to deserialize CLI auth from keyring: {exc}"
            raise StorageError(msg) from exc

    async def _write_entry(self, data: AuthDotJson) -> None:
        text = _encode(data, compact=True).decode()
        await self._call(
            "failed to save the login to the keyring",
            lambda b: b.set_password(self.service, self.account, text),
        )
        path = self._file.path
        try:
            await _in_thread(lambda: _unlink(path))
        except OSError as exc:
            logger.warning(
                "Saved to the keyring but could not remove the old file %s: %s",
                path,
                _describe_os_error(exc),
            )

    async def _delete_entry(self, what: str = "failed to delete auth from keyring") -> bool:
        return await self._call(what, lambda b: _keyring_delete(b, self.service, self.account))

    async def _remove_entry(self) -> bool:
        existed = await self._delete_entry()
        path = self._file.path
        try:
            removed_file = await _in_thread(lambda: _unlink(path))
        except OSError as exc:
            msg = f"Could not remove {path}: {_describe_os_error(exc)}. Remove it by hand."
            raise StorageError(msg, path=path) from exc
        return existed or removed_file

    async def save(self, data: AuthDotJson) -> None:
        """Write the entry, then remove a leftover ``auth.json`` (a failure there only warns).

        Args:
            data: The payload.

        Raises:
            StorageError: The keyring failed or timed out.
        """
        async with self._file.commit_locks():
            await self._write_entry(data)

    async def delete(self) -> bool:
        """Remove the entry and the fallback file.

        Returns:
            Whether either existed.

        Raises:
            StorageError: The keyring failed or timed out, or the file could not be removed.
        """
        async with self._file.commit_locks():
            return await self._remove_entry()

    async def update(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        """Read, decide and write the entry as one step under the home's commit locks.

        Args:
            change: Given the stored payload (or ``None``), returns the payload to store: the
                same object to keep it, ``None`` to remove it.

        Returns:
            What was stored before and after, and whether this call wrote.

        Raises:
            StorageError: The keyring failed, timed out or holds a corrupt entry.
        """
        async with self._file.commit_locks():
            return await _apply(change, self.load, self._remove_entry, self._write_entry)

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Return the refresh lock (the file store's, in ``home``)."""
        return self._file.lock()


async def _apply(
    change: Callable[[AuthDotJson | None], AuthDotJson | None],
    load: Callable[[], Awaitable[AuthDotJson | None]],
    remove: Callable[[], Awaitable[object]],
    write: Callable[[AuthDotJson], Awaitable[None]],
) -> CommitResult:
    """Read, decide and write with a store's own steps (the caller holds the commit locks)."""
    before = await load()
    after = change(before)
    if after is before:
        return CommitResult(before, before, written=False)
    if after is None:
        await remove()
    else:
        await write(after)
    return CommitResult(before, after, written=True)


def _keyring_delete(backend: keyring.backend.KeyringBackend, service: str, account: str) -> bool:
    from keyring.errors import PasswordDeleteError  # noqa: PLC0415 -- optional extra

    if backend.get_password(service, account) is None:
        return False
    try:
        backend.delete_password(service, account)
    except PasswordDeleteError:
        # Some backends say so when the entry vanished since we read it (another process
        # deleted it): that is a success. An entry still there was not deleted: say so.
        if backend.get_password(service, account) is None:
            return False
        raise
    return True


def _keyring_absent(exc: StorageError) -> bool:
    """Whether a keyring failure means there is no keyring at all (nothing can be stored there).

    A headless server has no backend (keyring's fail backend raises ``NoKeyringError``) or no
    keyring package: such a keyring holds no login, so falling back to the file loses nothing.
    Any other failure (a locked or stopped keyring, a refused write) may leave a login there.
    """
    cause = exc.__cause__
    if isinstance(cause, ImportError):
        return True
    errors = sys.modules.get("keyring.errors")
    return errors is not None and isinstance(cause, errors.NoKeyringError)


def newer_login(in_keyring: AuthDotJson, in_file: AuthDotJson) -> AuthDotJson:
    """Choose between a keyring entry and an ``auth.json`` found next to it (``auto`` mode).

    A keyring save removes ``auth.json``, so a file beside an entry was written after that
    entry: by a keyring save that failed and fell back to the file, or by a Codex in file mode.
    The file wins, unless the entry says it was refreshed later (a keyring save that could not
    remove the older file).

    Args:
        in_keyring: The keyring's entry.
        in_file: The file's login.

    Returns:
        The one to use.
    """
    ring, file = in_keyring.last_refresh, in_file.last_refresh
    if ring is not None and file is not None and ring > file:
        return in_keyring
    return in_file


@attrs.define
class AutoAuthStore:
    """The keyring when it works, else ``auth.json``: Codex's ``auto`` mode.

    Load tries the keyring and falls back to the file when the keyring has no entry or fails
    (with a warning); save tries the keyring and falls back to the file when it fails. The
    newest login always wins: a save that falls back to the file also removes the keyring's
    older entry, and a load that finds both reads the file (see ``newer_login``), so a
    refresh token the file has replaced is never spent again. A delete that cannot clear a
    keyring that may hold the login raises :class:`StorageError` (a machine with no keyring
    backend at all only removes the file). Writes take the home's commit locks; ``lock()`` is
    the file store's refresh lock.

    Args:
        home: The Codex home folder.
        keyring_timeout: Seconds to wait for the keyring before falling back.
        backend: A keyring backend; defaults to ``keyring.get_keyring()``.
    """

    home: Path = attrs.field(converter=_to_path)
    keyring_timeout: float = 10.0
    backend: keyring.backend.KeyringBackend | None = attrs.field(default=None, repr=False)
    _keyring: KeyringAuthStore = attrs.field(init=False, repr=False)
    _file: FileAuthStore = attrs.field(init=False, repr=False)
    _warned: bool = attrs.field(default=False, init=False, repr=False)

    def _fallback(self, message: str, exc: StorageError) -> None:
        # A machine without a keyring (a server, a container) falls back on every call; say
        # so once at WARNING, then at DEBUG, instead of flooding the log.
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(level, message, self._file.path, exc)

    def __attrs_post_init__(self) -> None:
        """Create the two stores it chooses between."""
        self._keyring = KeyringAuthStore(self.home, self.keyring_timeout, backend=self.backend)
        self._file = FileAuthStore(self.home)

    @property
    def kind(self) -> str:
        """``auto``."""
        return "auto"

    async def load(self) -> AuthDotJson | None:
        """Load from the keyring, else from the file; when both hold a login, the newer one.

        Returns:
            The payload, or ``None``.

        Raises:
            StorageError: The file is corrupt or unreadable while the keyring has no entry
                (keyring errors only warn).
        """
        try:
            in_keyring = await self._keyring.load()
        except StorageError as exc:
            self._fallback("Keyring unavailable, using %s: %s", exc)
            in_keyring = None
        if in_keyring is None:
            return await self._file.load()
        # A keyring save that failed wrote the file instead and may have left its older entry:
        # reading only the keyring would spend a refresh token the file has already replaced.
        try:
            in_file = await self._file.load()
        except StorageError as exc:
            logger.warning("Using the keyring's login; %s is unreadable: %s", self._file.path, exc)
            return in_keyring
        if in_file is None:
            return in_keyring
        chosen = newer_login(in_keyring, in_file)
        if chosen is in_file:
            logger.debug("%s is newer than the keyring's entry; using it", self._file.path)
        return chosen

    async def _write(self, data: AuthDotJson) -> None:
        try:
            await self._keyring._write_entry(data)  # noqa: SLF001 -- its unlocked half, same module
        except StorageError as exc:
            self._fallback("Keyring save failed, writing %s instead: %s", exc)
            payload = _encode(data)
            path = self._file.path
            try:
                await _in_thread(lambda: _atomic_write(path, payload))
            except OSError as write_exc:
                raise self._file._write_error(write_exc) from write_exc  # noqa: SLF001 -- same module
            if not _keyring_absent(exc):
                await self._drop_stale_entry()

    async def _drop_stale_entry(self) -> None:
        # The keyring refused the new login but may still hold the old one, which Codex (and
        # an older aioscopedauth) reads first: remove it. If that fails too, load() still
        # prefers the newer file.
        try:
            await self._keyring._delete_entry(  # noqa: SLF001 -- same module
                "failed to remove the older login from the keyring"
            )
        except StorageError as exc:
            logger.debug("The keyring may still hold an older login: %s", exc)

    async def _remove(self) -> bool:
        keyring_error: StorageError | None = None
        try:
            existed = await self._keyring._delete_entry()  # noqa: SLF001 -- same module
        except StorageError as exc:
            existed, keyring_error = False, exc
        path = self._file.path
        try:
            removed = await _in_thread(lambda: _unlink(path))
        except OSError as rm_exc:
            msg = f"Could not remove {path}: {_describe_os_error(rm_exc)}. Remove it by hand."
            raise StorageError(msg, path=path) from rm_exc
        if keyring_error is not None:
            if not _keyring_absent(keyring_error):
                # The keyring may still hold the login, and the next load would use it.
                msg = (
                    f"{keyring_error}. The login may still be in the keyring (auth.json was "
                    "removed); unlock the keyring and log out again."
                )
                raise StorageError(msg) from keyring_error
            self._fallback("No keyring; removing %s only: %s", keyring_error)
        return existed or removed

    async def save(self, data: AuthDotJson) -> None:
        """Save to the keyring, else to the file.

        Args:
            data: The payload.

        Raises:
            StorageError: Both the keyring and the file failed.
        """
        async with self._file.commit_locks():
            await self._write(data)

    async def delete(self) -> bool:
        """Remove the keyring entry and the file.

        Returns:
            Whether either existed.

        Raises:
            StorageError: The file could not be removed, or the keyring failed and may still
                hold the login (the file is removed all the same). With no keyring backend at
                all, only the file is removed.
        """
        async with self._file.commit_locks():
            return await self._remove()

    async def update(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        """Read, decide and write as one step under the home's commit locks.

        Args:
            change: Given the stored payload (or ``None``), returns the payload to store: the
                same object to keep it, ``None`` to remove it.

        Returns:
            What was stored before and after, and whether this call wrote.

        Raises:
            StorageError: The file is corrupt or unreadable, neither place could be written,
                or a removal could not clear the keyring (as :meth:`delete`).
        """
        async with self._file.commit_locks():
            return await _apply(change, self.load, self._remove, self._write)

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Return the refresh lock (the file store's, in ``home``)."""
        return self._file.lock()
