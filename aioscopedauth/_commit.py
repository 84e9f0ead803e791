"""How a write reaches a shared ``auth.json``: Codex 0.169's commit protocol, and our refresh lock.

A Codex home is shared with the real Codex CLI, so every write follows what Codex 0.169 does
(``codex-0.169-interop.md``, observed with strace):

1. ``flock(home/auth.lock, LOCK_EX)``: the file is created ``0666 & umask``; Codex blocks on it
   without a timeout, we poll it for at most the store's ``lock_timeout``;
2. ``flock(home/auth.json.lock, LOCK_EX | LOCK_NB)``, created ``0600`` and polled (Codex gives up
   after about 5 s with "credential commit lock timed out");
3. read ``auth.json`` again, decide, write a temp file, fsync, rename over ``auth.json``;
4. release both.

Both locks are held for milliseconds and never across a network call: a refresh spends its
refresh token *before* the commit, exactly as Codex does. Our own processes serialise their
refreshes with a third lock, ``home/aioscopedauth-refresh.lock``, that Codex never takes, so a
slow token request of ours can never make Codex's commit time out.

The decision taken under the commit locks is a compare-and-swap (:func:`refreshed_payload`): a
refresh writes its new tokens only if the stored login still holds the refresh token it spent;
otherwise a logout, a new login or another writer's newer tokens win and are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, TypeVar

import attrs

from ._cancel import outlast
from ._errors import StorageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from ._model import AuthDotJson, TokenData

__all__ = [
    "CODEX_AUTH_LOCK",
    "CODEX_COMMIT_LOCK",
    "REFRESH_LOCK",
    "CommitResult",
    "codex_commit_locks",
    "commit_locks_if_free",
    "file_lock",
    "give_to_folder_owner",
    "make_private_dir",
    "refreshed_payload",
    "run_in_thread",
    "spend_key",
]

CODEX_AUTH_LOCK = "auth.lock"
"""Codex's outer write lock (created ``0666 & umask``, taken first)."""
CODEX_COMMIT_LOCK = "auth.json.lock"
"""Codex's inner commit lock (created ``0600``, taken second)."""
REFRESH_LOCK = "aioscopedauth-refresh.lock"
"""Ours: serialises our processes' refreshes (read, spend, commit). Codex never takes it."""

_T = TypeVar("_T")
_LOCK_POLL_FIRST = 0.001
_LOCK_POLL_MAX = 0.01
"""Codex polls ``auth.json.lock`` every 10 ms; polling no slower keeps us from starving."""


@attrs.frozen
class CommitResult:
    """What a conditional write found and left in a store.

    Attributes:
        before: The payload stored when the commit read it (under the locks).
        after: The payload stored when the commit released the locks.
        written: Whether this commit wrote (``False``: the stored payload was kept).
    """

    before: AuthDotJson | None = attrs.field(repr=False)
    after: AuthDotJson | None = attrs.field(repr=False)
    written: bool


def refreshed_payload(
    current: AuthDotJson | None,
    spent_refresh_token: str,
    merge: Callable[[AuthDotJson], AuthDotJson],
) -> AuthDotJson | None:
    """Decide what a refresh's commit stores: the compare-and-swap rule.

    Args:
        current: What the store holds now (read under the commit locks).
        spent_refresh_token: The refresh token the refresh spent.
        merge: Merges the token endpoint's answer into a stored payload.

    Returns:
        ``merge(current)`` when the store still holds the spent refresh token (nobody else
        wrote the login since the refresh read it: fields another writer added are kept);
        otherwise ``current`` itself, unchanged: a logout, a new login or another writer's
        newer tokens win over an answer to a refresh token that is no longer stored.
    """
    if current is None or current.tokens is None:
        return current
    if spend_key(current.tokens) != spent_refresh_token:
        return current
    return merge(current)


def spend_key(tokens: TokenData) -> str:
    """What a refresh spends, as the commit compares it: the refresh token.

    A login without one (a client's own, RFC 6749 §4.4.3) is minted again instead; the
    access token it replaces stands in, so a commit still never overwrites newer tokens.
    """
    return tokens.refresh_token or tokens.access_token


def _describe_os_error(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` (and missing parents) ``0700``; as root, owned like its parent.

    Root creating a user's home (``sudo aioscopedauth login --home ~u/.codex``) gives the new
    folders to the owner of the nearest existing one, so the user can use them afterwards.
    """
    if directory.is_dir():
        return
    missing: list[Path] = []
    existing = directory
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; set it exactly on the folder we created.
    directory.chmod(0o700)
    if os.geteuid() != 0:
        return
    owner = existing.stat()
    if owner.st_uid == 0:
        return
    for created in reversed(missing):
        # Not following symlinks: a folder swapped for a link since we made it is left alone.
        with contextlib.suppress(OSError):
            os.chown(created, owner.st_uid, owner.st_gid, follow_symlinks=False)


def give_to_folder_owner(fd: int, path: Path) -> None:
    """As root, give the file open at ``fd`` to the owner of its folder, if root owns it.

    Root saving or refreshing a user's login must not leave root-owned files in their home:
    afterwards the user's own processes (and Codex) could not open them. Only a regular file
    that sits at ``path`` itself (not a symlink's target) with no other hard link is given away,
    so a user who points a lock file's name at a file of root's never gets that file.
    """
    if os.geteuid() != 0:
        return
    status = os.fstat(fd)
    if status.st_uid != 0 or status.st_nlink != 1 or not stat.S_ISREG(status.st_mode):
        return
    try:
        here = path.lstat()
        folder = path.parent.stat()
    except OSError:
        return
    if (here.st_dev, here.st_ino) != (status.st_dev, status.st_ino) or folder.st_uid == 0:
        return
    # Best effort: where root cannot chown (a root-squashed share), the file stays as it was.
    with contextlib.suppress(OSError):
        os.fchown(fd, folder.st_uid, folder.st_gid)


def _open_lock_file(path: Path, mode: int) -> int:
    make_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        give_to_folder_owner(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Abandoned(Exception):  # noqa: N818 -- a private marker, not an error anyone sees
    """The caller was cancelled before the worker thread started: the call never runs."""


async def run_in_thread(
    func: Callable[[], _T], *, discard: Callable[[_T], object] | None = None
) -> _T:
    """Run ``func`` in the loop's default executor; a cancelled caller first waits for it.

    A thread cannot be stopped, so a caller cancelled while ``func`` runs waits for it to end
    and only then sees the cancellation: a cancelled write is either fully done or not started
    (and a caller holding locks around this call holds them until it is). When ``func`` had not
    started yet it never will. ``discard`` receives a result nobody will see (the descriptor of
    a lock file opened for a cancelled caller, which it closes).

    The caller awaits the executor's future itself rather than a task behind a shield: each
    link of a future chain costs one turn of the event loop, and under a storm of 401s a turn
    takes tens of milliseconds, so a worker-thread call costs two turns here instead of five.

    Args:
        func: A quick, blocking call (file I/O).
        discard: Disposes of a result the cancelled caller will not receive.

    Returns:
        What ``func`` returned.
    """
    loop = asyncio.get_running_loop()
    guard = threading.Lock()
    started: list[bool] = []
    abandoned: list[bool] = []
    box: list[_T] = []
    ended: asyncio.Future[None] = loop.create_future()

    def run() -> _T:
        with guard:
            if abandoned:
                raise _Abandoned
            started.append(True)
        try:
            result = func()
            box.append(result)
            return result
        finally:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_settle, ended)

    call = loop.run_in_executor(None, run)
    try:
        return await call
    except asyncio.CancelledError:
        with guard:
            abandoned.append(True)
            running = bool(started)
        if running:
            # Cancelled again meanwhile (an anyio scope does so on every turn): the first
            # cancellation, being handled here, is the one raised.
            await outlast(ended)
            if discard is not None and box:
                discard(box[0])
        raise


def _settle(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


def _flock_if_free(path: Path, mode: int) -> int | None:
    """Open ``path`` and take its ``flock`` without waiting (in a worker thread).

    Returns:
        The descriptor holding the lock, or ``None`` when another holder has it.

    Raises:
        OSError: The lock file could not be opened.
    """
    import fcntl  # noqa: PLC0415 -- POSIX only, as in file_lock

    fd = _open_lock_file(path, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock_and_close(fd: int) -> None:
    import fcntl  # noqa: PLC0415 -- POSIX only, as in file_lock

    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def commit_locks_if_free(home: Path) -> Iterator[bool]:
    """Take Codex's two write locks in its order without waiting, from a worker thread.

    The fast path of a commit: when nobody holds them (the usual case), opening and locking
    both files, the read-decide-write and the release are one worker-thread call instead of
    three. When either is held, nothing is held and the caller takes the waiting path
    (:func:`codex_commit_locks`).

    Args:
        home: The Codex home folder.

    Yields:
        Whether both locks are held inside the block.

    Raises:
        StorageError: A lock file could not be opened (the message names it).
    """
    locks = ((CODEX_AUTH_LOCK, 0o666), (CODEX_COMMIT_LOCK, 0o600))
    held: list[int] = []
    try:
        for name, mode in locks:
            path = home / name
            try:
                fd = _flock_if_free(path, mode)
            except OSError as exc:
                raise _open_error(path, exc) from exc
            if fd is None:
                break
            held.append(fd)
        yield len(held) == len(locks)
    finally:
        for fd in reversed(held):
            _unlock_and_close(fd)


def _open_error(path: Path, exc: OSError) -> StorageError:
    msg = (
        f"Could not open the lock file {path}: {_describe_os_error(exc)}. "
        "Check the folder's permissions (a read-only home cannot be refreshed or written)."
    )
    return StorageError(msg, path=path)


@contextlib.asynccontextmanager
async def file_lock(
    path: Path, wait_limit: float | None, *, mode: int = 0o600, purpose: str = "refreshing"
) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``path``, polled so that the event loop never blocks.

    ``flock`` locks belong to the open file description, so two holders in one process exclude
    each other as two processes do (and exclude Codex, whose locks are ``flock`` too), and the
    kernel drops the lock when a holder dies: no stale lock files. Lock files are never deleted
    (deleting one would let two holders coexist).

    Args:
        path: The lock file (created when missing, with ``mode`` filtered by the umask).
        wait_limit: Seconds to wait before giving up, or ``None`` to wait forever.
        mode: The creation mode.
        purpose: What the other holder is doing, for the timeout message.

    Yields:
        Nothing; the lock is held inside the block.

    Raises:
        StorageError: The lock file cannot be opened, or the lock was not free in time.
    """
    import fcntl  # noqa: PLC0415 -- POSIX only; imported where used so the module loads anywhere

    try:
        # A caller cancelled while the thread opens the file waits for it, and the descriptor
        # it would have lost is closed.
        fd = await run_in_thread(lambda: _open_lock_file(path, mode), discard=os.close)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    try:
        deadline = None if wait_limit is None else time.monotonic() + wait_limit
        delay = _LOCK_POLL_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                msg = (
                    f"Timed out after {wait_limit:g} s waiting for the lock {path}: another "
                    f"process is {purpose} the same login. Try again."
                )
                raise StorageError(msg, path=path)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LOCK_POLL_MAX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def codex_commit_locks(home: Path, wait_limit: float | None) -> AsyncIterator[None]:
    """Take Codex 0.169's two write locks in its order: ``auth.lock``, then ``auth.json.lock``.

    Hold them only around a read-decide-write of ``auth.json`` (milliseconds), never across a
    network call: Codex waits on ``auth.lock`` forever and gives up on ``auth.json.lock`` after
    about 5 s.

    Args:
        home: The Codex home folder.
        wait_limit: Seconds to wait for each lock, or ``None`` to wait forever.

    Yields:
        Nothing; both locks are held inside the block.

    Raises:
        StorageError: A lock file cannot be opened, or a lock was not free in time (the message
            names the lock).
    """
    async with (
        file_lock(home / CODEX_AUTH_LOCK, wait_limit, mode=0o666, purpose="writing"),
        file_lock(home / CODEX_COMMIT_LOCK, wait_limit, mode=0o600, purpose="writing"),
    ):
        yield
