"""Processes a test starts never outlive it, whatever way it fails.

A failed assert, a timeout (``asyncio.timeout``, ``wait_for`` or pytest-timeout's alarm) or a
cancellation between the start and the end of a test used to leave its processes running: an
``asyncio`` process is never killed by anyone, and ``subprocess.Popen.__exit__`` waits for ever
for one that does not end. Both helpers start the process in a session of its own (so one
``killpg`` reaches everything it started too) and, on the way out of the block, SIGKILL the
whole group and reap the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = ["ended", "kill_tree", "popen", "read_tagged", "spawned"]


def ended(pid: int, within: float = 10.0) -> bool:
    """Wait (bounded) until ``pid`` has exited, through a pidfd: an event, not a poll loop.

    A SIGKILLed process that is not our child is not ours to reap; it has exited when the
    kernel says so (it may linger as a zombie until its parent reaps it).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], within)
        return bool(ready)
    finally:
        os.close(fd)


def kill_tree(pid: int, *, group: bool) -> None:
    """SIGKILL a process, or its whole process group (a no-op for what is gone already)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def spawned(*argv: str, **options: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start ``argv`` with :func:`asyncio.create_subprocess_exec`; kill and reap it on exit.

    ``start_new_session`` defaults to true. Leaving the block, normally or not, SIGKILLs the
    process's group (what it left behind, on success) and waits for the process, even when the
    test is being cancelled.
    """
    options.setdefault("start_new_session", True)
    proc = await asyncio.create_subprocess_exec(*argv, **options)
    try:
        yield proc
    finally:
        if options["start_new_session"] or proc.returncode is None:
            kill_tree(proc.pid, group=options["start_new_session"])
        reaped = asyncio.ensure_future(proc.wait())
        while not reaped.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(reaped)


@contextlib.contextmanager
def popen(argv: list[str], **options: Any) -> Iterator[subprocess.Popen[Any]]:
    """Start ``argv`` with :class:`subprocess.Popen`; kill and reap it on exit.

    The synchronous twin of :func:`spawned`, for tests without an event loop. Unlike
    ``Popen.__exit__``, leaving the block never waits for a process that does not end.
    """
    options.setdefault("start_new_session", True)
    proc = subprocess.Popen(argv, **options)
    try:
        yield proc
    finally:
        kill_tree(proc.pid, group=options["start_new_session"])
        proc.wait()  # SIGKILLed: at once
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):  # a broken pipe flushing stdin
                    stream.close()


def read_tagged(stdout: IO[str], wanted: set[str]) -> dict[str, int]:
    """Read ``<tag> <pid>`` lines until every wanted tag was seen, in whatever order they come.

    For processes that share one pipe (a zygote and the child it forked): which line comes
    first is up to the scheduler. A line written whole in one call (far below PIPE_BUF) never
    interleaves with another.
    """
    seen: dict[str, int] = {}
    while not wanted <= seen.keys():
        line = stdout.readline()
        assert line, f"the writer ended early; it said {seen}"
        tag, pid = line.split()
        assert tag in wanted, f"unexpected line {line!r}"
        seen[tag] = int(pid)
    return seen
