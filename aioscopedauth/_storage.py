"""Where auth state lives: the ``AuthStore`` protocol and the file, memory, keyring and auto stores.

Every store is async and never blocks the event loop: a file read and a save are each one
worker-thread call that opens, uses and closes the file (so a cancelled caller can never leak a
file handle, leave a half-written file or a stray temp file behind), keyring calls run in a
worker thread under a timeout, and the cross-process lock is an ``flock`` polled without
blocking. (aiofiles was dropped for this: cancelling ``aiofiles.open`` while its thread opens
the file leaks the handle.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, runtime_checkable

import attrs

from ._commit import (
    REFRESH_LOCK,
    CommitResult,
    codex_commit_locks,
    commit_locks_if_free,
    file_lock,
    run_in_thread,
)
from ._errors import AuthDataError, StorageError
from ._model import AuthDotJson
from ._paths import user_path

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    import keyring.backend

__all__ = [
    "KEYRING_SERVICE",
    "AuthStore",
    "AutoAuthStore",
    "FileAuthStore",
    "KeyringAuthStore",
    "LoadedAuth",
    "MemoryAuthStore",
    "load_auth_data",
    "store_key",
]

logger = logging.getLogger("aioscopedauth.storage")

KEYRING_SERVICE = "Codex Auth"
AUTH_FILE = "auth.json"
MAX_AUTH_FILE_BYTES = 1024 * 1024
"""auth.json is a few KiB; refuse to read a larger (hostile or corrupt) file into memory."""

STALE_TEMP_SECONDS = 600
"""A temp file of a save older than this was left by a process that died mid-save."""

_T = TypeVar("_T")


@runtime_checkable
class AuthStore(Protocol):
    """Where an ``AuthDotJson`` is persisted.

    Implementations must be safe to call from any task. ``save``, ``delete`` and ``update`` are
    atomic with respect to every other writer of the same store, in this process or another;
    ``lock()`` must serialise refreshes across every process that shares the store (a no-op
    where the store is private to one process) and is held across a token request, so writes
    must not need it.

    Optional: a store that can tell when another process or host changed it offers
    ``watch(callback) -> stop``: it calls ``callback()`` (no argument, in the event loop; it
    must not block) after each change written elsewhere, and ``await stop()`` ends that. An
    :class:`~aioscopedauth.AuthManager` calls it at its first load and answers every burst of
    calls with one reload, so it adopts new tokens without waiting for a 401
    (:class:`~aioscopedauth.redis.RedisAuthStore` has it; the file stores do not).
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


def _to_path(value: str | os.PathLike[str]) -> Path:
    return user_path(value, "the home folder")


async def _in_thread(func: Callable[[], _T]) -> _T:
    """Run ``func`` in a worker thread; if the caller is cancelled, wait for it to finish first.

    A thread cannot be stopped, so a cancelled caller still waits for the call to complete
    (atomically) and only then sees the cancellation: a cancelled save is either fully done or
    not started. Saves take the commit locks around this call, so they are also ordered: a
    cancelled save that is still writing holds the locks until it is done, and a newer save
    waits for them. (``anyio.to_thread.run_sync`` gives this only for anyio's own cancel
    scopes, not for ``Task.cancel()``: a cancelled save used to land after a newer one.)
    """
    return await run_in_thread(func)


def _ensure_private_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; set it exactly on the folder we created.
    directory.chmod(0o700)


TEMP_MARKER = "aioscopedauth-"
"""In the name of every temp file a save creates, so the sweep never touches a user's file."""


def _write_target(path: Path) -> tuple[Path, os.stat_result | None]:
    """Return where a save writes (a symlink's target) and that file's status, if it exists."""
    # A symlinked auth.json (dotfile managers) is updated where it points, not replaced.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.is_symlink():
        msg = f"{path} is a symbolic link that loops or cannot be followed; fix or remove it."
        raise StorageError(msg, path=path)
    try:
        status = target.stat()
    except FileNotFoundError:
        return target, None
    if not stat.S_ISREG(status.st_mode):
        what = "a folder" if stat.S_ISDIR(status.st_mode) else "not a regular file"
        msg = (
            f"{target} is {what}, so the login was not written there. Move it away, or point "
            "the store at another folder."
        )
        raise StorageError(msg, path=path)
    return target, status


def _atomic_write(path: Path, payload: bytes) -> None:
    target, existing = _write_target(path)
    directory = target.parent
    _ensure_private_dir(directory)
    # mkstemp creates the file 0600 in the same folder, so os.replace is atomic and the secret
    # is never readable by others, not even for an instant.
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{TEMP_MARKER}", suffix=".tmp", dir=directory
    )
    tmp = Path(tmp_name)
    try:
        if existing is not None and existing.st_uid != os.geteuid():
            # Root saving another user's login keeps it theirs (a root-owned 0600 file would
            # lock the user out of their own login).
            os.fchown(fd, existing.st_uid, existing.st_gid)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        # Persist the rename itself; some filesystems refuse to open a folder, which is fine.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    _sweep_stale_temp_files(directory, target.name)


def _sweep_stale_temp_files(directory: Path, name: str) -> None:
    # A process killed in the middle of a save (SIGKILL, power loss) leaves its temp file
    # behind. Remove such leftovers, but only ours (the marker) and only old ones: a young temp
    # file may belong to a save that another process is doing right now.
    cutoff = time.time() - STALE_TEMP_SECONDS
    for leftover in directory.glob(f".{name}.{TEMP_MARKER}*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def _read_file(path: Path, limit: int) -> tuple[int, bytes] | None:
    # O_NONBLOCK: opening a FIFO planted at auth.json must not block a worker thread forever;
    # anything but a regular file is refused before a byte is read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        if not stat.S_ISREG(mode):
            msg = (
                f"{path} is not a regular file (a pipe, socket or device), so it was not read. "
                "Remove it and log in again."
            )
            raise StorageError(msg, path=path)
        return mode, handle.read(limit)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _describe_os_error(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


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


def _encode(data: AuthDotJson, *, compact: bool = False) -> bytes:
    """Serialise ``data`` for a store, refusing what could not be read back.

    Whatever is saved must load again: a payload that cannot be encoded (a lone surrogate),
    is over the loader's size limit, or does not parse is refused before anything is written.
    """
    try:
        payload = data.to_json(compact=compact).encode()
    except UnicodeEncodeError:
        problem = "it contains invalid Unicode (a lone surrogate)"
    else:
        if len(payload) > MAX_AUTH_FILE_BYTES:
            problem = f"it would be larger than {MAX_AUTH_FILE_BYTES // 1024} KiB"
        else:
            try:
                AuthDotJson.from_json(payload)
            except AuthDataError as exc:
                problem = f"it would not load again ({exc})"
            else:
                return payload
    msg = f"Refused to save the login: {problem}. Nothing was written; the stored one is intact."
    raise StorageError(msg)


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


async def _in_daemon_thread(func: Callable[[], _T], limit: float) -> _T:
    """Run ``func`` in a daemon thread of its own and wait for it at most ``limit`` seconds.

    A keyring call cannot be interrupted: on timeout (or cancellation) the thread is abandoned.
    It is a daemon thread, so an abandoned call never keeps the process from exiting (a
    worker thread of the default pool is joined at exit, and would hang it forever).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():  # the caller gave up
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # None only with an error

    def run() -> None:
        try:
            outcome: tuple[_T | None, BaseException | None] = (func(), None)
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting task
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed while we were stuck
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="aioscopedauth-keyring", daemon=True).start()
    return await asyncio.wait_for(future, limit)


def _default_keyring() -> keyring.backend.KeyringBackend:
    try:
        import keyring  # noqa: PLC0415 -- optional extra, needed only by the keyring stores
    except ImportError as exc:  # pragma: no cover - the test extra installs keyring
        msg = (
            "The keyring package is not installed: run `pip install 'keyring>=25'` in this "
            "environment (what aioscopedauth's `keyring` extra installs)."
        )
        raise StorageError(msg) from exc
    return keyring.get_keyring()


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

    def __attrs_post_init__(self) -> None:
        """Create the file store used for the fallback file and the locks."""
        self._file = FileAuthStore(self.home)

    @property
    def kind(self) -> str:
        """``keyring``."""
        return "keyring"

    async def _call(self, what: str, func: Callable[[keyring.backend.KeyringBackend], _T]) -> _T:
        backend = self.backend or _default_keyring()
        try:
            return await _in_daemon_thread(lambda: func(backend), self.timeout)
        except TimeoutError as exc:
            msg = (
                f"{what}: the keyring did not answer within {self.timeout:g} s. "
                "Unlock it and retry."
            )
            raise StorageError(msg) from exc
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

    async def _remove_entry(self) -> bool:
        existed = await self._call(
            "failed to delete auth from keyring",
            lambda b: _keyring_delete(b, self.service, self.account),
        )
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
        return False
    return True


@attrs.define
class AutoAuthStore:
    """The keyring when it works, else ``auth.json``: Codex's ``auto`` mode.

    Load tries the keyring and falls back to the file when the keyring has no entry or fails
    (with a warning); save tries the keyring and falls back to the file when it fails. Writes
    take the home's commit locks; ``lock()`` is the file store's refresh lock.

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
        """Load from the keyring, else from the file.

        Returns:
            The payload, or ``None``.

        Raises:
            StorageError: The file is corrupt or unreadable (keyring errors only warn).
        """
        try:
            data = await self._keyring.load()
        except StorageError as exc:
            self._fallback("Keyring unavailable, using %s: %s", exc)
            data = None
        if data is not None:
            return data
        return await self._file.load()

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

    async def _remove(self) -> bool:
        try:
            return await self._keyring._remove_entry()  # noqa: SLF001 -- its unlocked half
        except StorageError as exc:
            self._fallback("Keyring delete failed, removing %s only: %s", exc)
            path = self._file.path
            try:
                return await _in_thread(lambda: _unlink(path))
            except OSError as rm_exc:
                msg = f"Could not remove {path}: {_describe_os_error(rm_exc)}. Remove it by hand."
                raise StorageError(msg, path=path) from rm_exc

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
            StorageError: The file could not be removed (keyring errors only warn).
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
            StorageError: The file is corrupt or unreadable, or neither place could be written.
        """
        async with self._file.commit_locks():
            return await _apply(change, self.load, self._remove, self._write)

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Return the refresh lock (the file store's, in ``home``)."""
        return self._file.lock()


@attrs.frozen
class LoadedAuth:
    """A payload and where it was found.

    Attributes:
        data: The payload.
        origin: ``env`` (the API-key variable), ``memory`` (host-supplied tokens) or ``store``.
    """

    data: AuthDotJson
    origin: Literal["env", "memory", "store"]


async def load_auth_data(
    store: AuthStore, memory: AuthStore | None = None, *, api_key_env: str | None = None
) -> LoadedAuth | None:
    """Load auth in Codex's precedence (reference §1.5).

    1. The API-key environment variable, only when ``api_key_env`` names one and it is set and
       not blank (trimmed).
    2. The memory store (host-supplied tokens).
    3. The configured store.

    Args:
        store: The configured store.
        memory: The process's memory store, if any.
        api_key_env: The name of the API-key variable (Codex uses ``CODEX_API_KEY``), or ``None``.

    Returns:
        The payload and its origin, or ``None`` when no source has one.

    Raises:
        StorageError: The configured store is corrupt or unreadable.
    """
    if api_key_env:
        key = os.environ.get(api_key_env, "").strip()
        if key:
            return LoadedAuth(AuthDotJson.for_api_key(key), "env")
    if memory is not None and memory is not store:
        data = await memory.load()
        if data is not None:
            return LoadedAuth(data, "memory")
    data = await store.load()
    return None if data is None else LoadedAuth(data, "store")
