"""``FileBody``: a request body streamed from a file, that can be sent again after a 401.

aiohttp's own bodies cannot all be sent twice: an async iterator is spent by its first send,
and an open file object is shared by every send of the request (a retry seeks the one handle
back while the cancelled first send may still be reading it). A :class:`FileBody` holds only
the path: each send opens the file anew with aiofiles, streams it in chunks from a worker
thread (never the whole file in memory) and closes it, so ``AuthMiddleware`` can re-send it
after a 401 like a ``bytes`` body.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import aiofiles
import aiofiles.threadpool
from aiohttp import payload

if TYPE_CHECKING:
    import aiohttp.abc
    from aiofiles.threadpool.binary import AsyncBufferedReader

__all__ = ["FileBody"]

DEFAULT_CHUNK_SIZE = 256 * 1024
"""Bytes read from the file per step (aiohttp's own file payloads use the same)."""


def _changed(path: Path, expected: int, found: str) -> RuntimeError:
    return RuntimeError(
        f"{path} changed size during the upload: {expected} bytes when the request body was "
        f"created, {found}; not sending a short or padded body"
    )


def _check_opened(fd: int, path: Path, expected: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        msg = f"{path} is no longer a regular file"
        raise RuntimeError(msg)
    if info.st_size != expected:
        raise _changed(path, expected, f"{info.st_size} bytes now")


def _regular_file(path: Path) -> os.stat_result:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        msg = f"{path} is not a regular file; a FileBody streams regular files only"
        raise ValueError(msg)
    return info


class FileBody(payload.Payload):
    """A request body streamed from a file, re-opened for every send (so a 401 retry works).

    Use it as ``session.post(url, data=FileBody(path))``. Each send opens the file, streams
    ``chunk_size`` bytes at a time with aiofiles (the file is never held in memory) and closes
    it, also when the send is cancelled. :class:`AuthMiddleware` therefore re-sends it after a
    401 recovery, and aiohttp re-sends it on a 307/308 redirect.

    The file's size is taken when the body is created and sent as ``Content-Length``; a send
    that finds the file at another size (it was truncated, appended to or replaced) fails
    instead of sending a short or padded body: aiohttp raises
    :class:`aiohttp.ClientConnectionError` whose ``__cause__`` is a :class:`RuntimeError`
    saying so, and the connection is closed. Keep the file unchanged until the request is done.

    Args:
        path: The file to send (a regular file; it is not opened until the request is sent).
        chunk_size: Bytes read per step.
        content_type: The ``Content-Type``; by default guessed from the file name, else
            ``application/octet-stream``.

    Raises:
        FileNotFoundError: There is no such file (any :class:`OSError` of ``stat``).
        ValueError: ``path`` is not a regular file (a directory, FIFO or device), or
            ``chunk_size`` is not positive.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        content_type: str | None = None,
    ) -> None:
        """Create the body; see the class docstring."""
        if chunk_size <= 0:
            msg = f"chunk_size must be positive, got {chunk_size}"
            raise ValueError(msg)
        self._path = Path(path)
        self._chunk_size = chunk_size
        self._file_size = _regular_file(self._path).st_size
        if content_type is None:
            content_type = mimetypes.guess_type(self._path.name)[0] or "application/octet-stream"
        super().__init__(self._path, content_type=content_type)

    @property
    def path(self) -> Path:
        """The file sent."""
        return self._path

    @property
    def size(self) -> int:
        """The bytes each send streams (the file's size when the body was created)."""
        return self._file_size

    @property
    def autoclose(self) -> bool:
        """Always ``True``, since no file stays open between sends (nothing to close)."""
        return True

    @property
    def consumed(self) -> bool:
        """Always ``False``, since each send opens the file again (nothing is spent)."""
        return False

    def __repr__(self) -> str:
        """Show the path and size."""
        return f"<FileBody {str(self._path)!r} size={self._file_size}>"

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Refuse: a FileBody is streamed, never read into memory.

        Raises:
            TypeError: Always.
        """
        del encoding, errors
        msg = "a FileBody is streamed from disk; it is never read into memory as text"
        raise TypeError(msg)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """Refuse: a FileBody is streamed, never read into memory.

        Raises:
            TypeError: Always.
        """
        del encoding, errors
        msg = "a FileBody is streamed from disk; it is never read into memory as bytes"
        raise TypeError(msg)

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        """Stream the whole file to ``writer``."""
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        """Stream the file to ``writer``, at most ``content_length`` bytes.

        Raises:
            RuntimeError: The file's size is not the one the body was created with.
        """
        limit = self._file_size if content_length is None else min(self._file_size, content_length)
        raw, file = await self._open()
        try:
            sent = 0
            while sent < limit:
                chunk = await file.read(min(self._chunk_size, limit - sent))
                if not chunk:
                    raise _changed(self._path, self._file_size, f"{sent} bytes now")
                await writer.write(chunk)
                sent += len(chunk)
            if limit == self._file_size and await file.read(1):
                raise _changed(self._path, self._file_size, "more now")
        finally:
            await _close_file(raw)

    async def _open(self) -> tuple[BinaryIO, AsyncBufferedReader]:
        # The open is submitted straight to the executor (a task could be cancelled by a loop
        # shutdown before it even started) and shielded: a cancellation cannot stop the thread,
        # so when the send is cancelled meanwhile, the file is closed once the thread opened it.
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, self._open_now)
        try:
            file = await asyncio.shield(opening)
        except asyncio.CancelledError:
            _BACKGROUND.add(opening)
            opening.add_done_callback(_close_opened)
            raise
        return file, aiofiles.threadpool.wrap(file, loop=loop)

    def _open_now(self) -> BinaryIO:
        expected = self._file_size
        path = self._path

        def opener(name: str, flags: int) -> int:
            # O_NONBLOCK: a FIFO put at the path since never blocks the thread on open.
            fd = os.open(name, flags | os.O_NONBLOCK | os.O_NOCTTY)
            try:
                _check_opened(fd, path, expected)
            except BaseException:
                os.close(fd)
                raise
            return fd

        return open(path, "rb", opener=opener)


_BACKGROUND: set[asyncio.Future[Any]] = set()
"""Opens of cancelled sends and closes not finished yet (for tests to wait on)."""


def _close_soon(file: BinaryIO) -> asyncio.Future[None]:
    # Submitted to the executor at once, so it runs even if the caller is cancelled (or the
    # loop shuts down, which waits for the executor's jobs) before the close is done.
    closing = asyncio.get_running_loop().run_in_executor(None, file.close)
    _BACKGROUND.add(closing)
    closing.add_done_callback(_BACKGROUND.discard)
    return closing


async def _close_file(file: BinaryIO) -> None:
    await asyncio.shield(_close_soon(file))


def _close_opened(opening: asyncio.Future[BinaryIO]) -> None:
    _BACKGROUND.discard(opening)
    if not opening.cancelled() and opening.exception() is None:
        _close_soon(opening.result())
