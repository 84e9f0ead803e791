"""The file half of the stores: atomic writes, bounded reads and the ``auth.json`` encoding.

Every function here is blocking and quick; the stores call them in a worker thread
(:func:`_in_thread`), one call per read or save, so a cancelled caller never leaks a file
handle, a half-written file or a stray temp file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ._commit import give_to_folder_owner, make_private_dir, run_in_thread
from ._errors import AuthDataError, StorageError
from ._model import AuthDotJson
from ._paths import user_path

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "AUTH_FILE",
    "MAX_AUTH_FILE_BYTES",
    "STALE_TEMP_SECONDS",
    "TEMP_MARKER",
]

AUTH_FILE = "auth.json"
MAX_AUTH_FILE_BYTES = 1024 * 1024
"""auth.json is a few KiB; refuse to read a larger (hostile or corrupt) file into memory."""

STALE_TEMP_SECONDS = 600
"""A temp file of a save older than this was left by a process that died mid-save."""

_T = TypeVar("_T")


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
    make_private_dir(directory)
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
        elif existing is None or existing.st_uid == 0:
            # Root saving into a user's home (a first save, or over a file root left there):
            # the new file is the home owner's.
            give_to_folder_owner(fd, tmp)
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
