"""``FileAuthStore``: ``home/auth.json``, written as the Codex CLI writes it, but safely."""

from __future__ import annotations

import logging
import stat
from typing import TYPE_CHECKING

import attrs

from ._commit import (
    REFRESH_LOCK,
    CommitResult,
    codex_commit_locks,
    commit_locks_if_free,
    file_lock,
)
from ._errors import AuthDataError, StorageError
from ._files import (
    AUTH_FILE,
    MAX_AUTH_FILE_BYTES,
    _atomic_write,
    _describe_os_error,
    _encode,
    _in_thread,
    _read_file,
    _to_path,
    _unlink,
)
from ._model import AuthDotJson

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

__all__ = ["FileAuthStore"]

logger = logging.getLogger("aioscopedauth.storage")


@attrs.define
class FileAuthStore:
    """Keeps ``home/auth.json``, exactly as the Codex CLI does, but written safely.

    The folder is created ``0700`` and the file ``0600``; a save writes a temp file in the same
    folder, fsyncs it and renames it over the old one, so readers see the old or the new payload
    and never a torn one. A corrupt file raises :class:`StorageError` and is never overwritten by
    a load. Every write (save, delete, :meth:`update`) follows the Codex CLI 0.169 commit
    protocol: ``flock`` on ``home/auth.lock`` then ``home/auth.json.lock``, read, write, release
    (milliseconds), so it never interleaves with a Codex write. ``lock()`` is the refresh lock,
    ``home/aioscopedauth-refresh.lock``, which Codex never takes.

    A save through a symlinked ``auth.json`` writes where the link points, if that is a regular
    file (or nothing yet); a device, pipe, folder or a link loop is refused with a
    :class:`StorageError`. An existing file keeps its owner.

    Args:
        home: The Codex home folder (``~/.codex`` by default in Codex).
        lock_timeout: Seconds to wait for a lock (the refresh lock, or each of Codex's write
            locks) before giving up with a :class:`StorageError`, or ``None`` to wait forever.
    """

    home: Path = attrs.field(converter=_to_path)
    lock_timeout: float | None = 60.0
    _warned_mode: int | None = attrs.field(default=None, init=False, repr=False)

    @property
    def kind(self) -> str:
        """``file``."""
        return "file"

    @property
    def path(self) -> Path:
        """The ``auth.json`` path."""
        return self.home / AUTH_FILE

    @property
    def lock_path(self) -> Path:
        """The refresh lock file, ``home/aioscopedauth-refresh.lock`` (Codex never takes it)."""
        return self.home / REFRESH_LOCK

    async def load(self) -> AuthDotJson | None:
        """Read and parse ``auth.json``.

        Returns:
            The payload, or ``None`` when the file does not exist.

        Raises:
            StorageError: The file cannot be read, is too large, is not a regular file, or is
                not a valid ``auth.json``; the message names the path and the problem, and the
                file is left as it is.
        """
        return await _in_thread(self._load_now)

    def _load_now(self) -> AuthDotJson | None:
        path = self.path
        try:
            found = _read_file(path, MAX_AUTH_FILE_BYTES + 1)
        except IsADirectoryError as exc:
            msg = f"{path} is a folder, not a file. Remove it and log in again."
            raise StorageError(msg, path=path) from exc
        except OSError as exc:
            msg = (
                f"Could not read {path}: {_describe_os_error(exc)}. "
                "Check its owner and permissions."
            )
            raise StorageError(msg, path=path) from exc
        if found is None:
            return None
        mode, raw = found
        self._check_mode(mode)
        if len(raw) > MAX_AUTH_FILE_BYTES:
            msg = (
                f"{path} is larger than {MAX_AUTH_FILE_BYTES // 1024} KiB, so it is not an "
                "auth.json. It was left untouched; move it away and log in again."
            )
            raise StorageError(msg, path=path)
        try:
            return AuthDotJson.from_json(raw)
        except AuthDataError as exc:
            msg = (
                f"{path} is not a valid auth.json: {exc}. It was left untouched; fix it, or move "
                "it away and log in again."
            )
            raise StorageError(msg, path=path) from exc

    def _check_mode(self, mode: int) -> None:
        perms = stat.S_IMODE(mode)
        if perms & 0o077 and perms != self._warned_mode:
            self._warned_mode = perms
            logger.warning(
                "%s can be read by other users (mode %04o); run `chmod 600` on it. The next "
                "save writes it 0600.",
                self.path,
                perms,
            )

    def commit_locks(self) -> AbstractAsyncContextManager[None]:
        """Return Codex's two write locks (``auth.lock``, then ``auth.json.lock``), held together.

        Hold them only around a read-decide-write (milliseconds): Codex gives up its own commit
        after about 5 s.

        Returns:
            An async context manager; entering it may raise :class:`StorageError`.
        """
        return codex_commit_locks(self.home, self.lock_timeout)

    def _write_error(self, exc: OSError) -> StorageError:
        msg = (
            f"Could not write {self.path}: {_describe_os_error(exc)}. The previous file is "
            "intact; check free space and permissions."
        )
        return StorageError(msg, path=self.path)

    async def save(self, data: AuthDotJson) -> None:
        """Write ``auth.json`` atomically (temp file, fsync, rename), mode ``0600``.

        Args:
            data: The payload.

        Raises:
            StorageError: The file could not be written; the old file is intact.
        """
        payload = _encode(data)
        path = self.path
        async with self.commit_locks():
            try:
                await _in_thread(lambda: _atomic_write(path, payload))
            except OSError as exc:
                raise self._write_error(exc) from exc

    async def delete(self) -> bool:
        """Remove ``auth.json``.

        Returns:
            Whether the file existed.

        Raises:
            StorageError: It exists but could not be removed.
        """
        path = self.path
        async with self.commit_locks():
            try:
                return await _in_thread(lambda: _unlink(path))
            except OSError as exc:
                msg = f"Could not remove {path}: {_describe_os_error(exc)}. Remove it by hand."
                raise StorageError(msg, path=path) from exc

    async def update(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        """Read, decide and write ``auth.json`` as one step under Codex's commit locks.

        Args:
            change: Given the stored payload (or ``None``), returns the payload to store: the
                same object to keep it, ``None`` to remove it. It runs in a worker thread
                while the locks are held, so it must be quick and must not block.

        Returns:
            What was stored before and after, and whether this call wrote.

        Raises:
            StorageError: The stored file is unreadable or corrupt (nothing is written), or the
                new one could not be written (the old one is intact).
        """
        # The usual case, nobody holding Codex's locks, is one worker-thread call: lock, read,
        # decide, write, release. Otherwise wait for the locks as every other write does.
        done = await _in_thread(lambda: self._update_if_unlocked(change))
        if done is not None:
            return done
        async with self.commit_locks():
            return await _in_thread(lambda: self._update_now(change))

    def _update_if_unlocked(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult | None:
        with commit_locks_if_free(self.home) as held:
            return self._update_now(change) if held else None

    def _update_now(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        before = self._load_now()
        after = change(before)
        if after is before:
            return CommitResult(before, before, written=False)
        try:
            if after is None:
                _unlink(self.path)
            else:
                _atomic_write(self.path, _encode(after))
        except OSError as exc:
            raise self._write_error(exc) from exc
        return CommitResult(before, after, written=True)

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Return the refresh lock, ``home/aioscopedauth-refresh.lock``, across processes.

        Codex never takes this lock, so holding it through a token request never delays a
        Codex process; writes take Codex's own locks (see :meth:`commit_locks`).

        Returns:
            An async context manager; entering it may raise :class:`StorageError` on timeout.
        """
        return file_lock(self.lock_path, self.lock_timeout)
