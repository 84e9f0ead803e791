"""Running a token command once, leaving nothing behind (Linux).

The command runs without a shell, in a process group of its own (an interactive exec plugin
shares ours); stdout and stderr are drained together; on timeout, cancellation or error the
group is killed, every process still holding the write end of its pipes too (a ``setsid``
child), and the command is reaped before the call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Protocol

import attrs

from ._cancel import outlast
from ._command_output import exit_status
from ._errors import CommandError, ConfigError

__all__ = ["EXEC_INFO_ENV", "MAX_STDOUT", "CommandSpec", "run_provider_command"]

logger = logging.getLogger("aioscopedauth.command")

MAX_STDOUT = 1024 * 1024
"""The most a command may write to stdout (a token, or a JSON object with one)."""
_MAX_STDERR_KEPT = 64 * 1024
_MAX_STDERR_SHOWN = 500
EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"


class CommandSpec(Protocol):
    """What running a command needs of its configuration (``ProviderAuthCommand`` has it)."""

    @property
    def command(self) -> str:
        """The command as configured, for messages."""
        ...

    @property
    def args(self) -> tuple[str, ...]:
        """Its arguments."""
        ...

    @property
    def timeout(self) -> float:
        """Seconds the whole run may take."""
        ...

    @property
    def cwd(self) -> Path | None:
        """The working directory."""
        ...

    @property
    def exec_api_version(self) -> str | None:
        """The Kubernetes exec credential version, for a plugin."""
        ...

    @property
    def install_hint(self) -> str | None:
        """How to install the plugin, said when it cannot start."""
        ...

    def program(self) -> str:
        """The program to run (``~`` expanded, relative paths from ``cwd``)."""
        ...

    def environment(self) -> dict[str, str] | None:
        """The environment to run it in."""
        ...

    def exec_info(self, *, interactive: bool) -> str:
        """The ``KUBERNETES_EXEC_INFO`` value."""
        ...

    def exec_interactive(self, *, stdin_is_terminal: bool) -> bool:
        """Whether a plugin runs interactively."""
        ...


EXIT_GRACE = 0.5
"""Seconds the output may keep flowing after the command exits. Longer means something it
started (a background child) still holds the pipes: it is killed and what was read is used."""


class _Collector:
    """Collects stdout and stderr as they come (both at once, so neither pipe can fill)."""

    def __init__(self, fds: set[int]) -> None:
        loop = asyncio.get_running_loop()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.too_long = False
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._open = set(fds)

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        sink, keep = (self.stdout, MAX_STDOUT) if fd == 1 else (self.stderr, _MAX_STDERR_KEPT)
        room = keep - len(sink)
        if len(data) > room:
            self.too_long |= fd == 1
            sink += data[: max(room, 0)]
        else:
            sink += data

    def pipe_connection_lost(self, fd: int) -> None:
        self._open.discard(fd)
        if not self._open and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _kill_group(pid: int, *, own_group: bool = True) -> None:
    # The child leads its own process group (start_new_session), so this reaches every
    # grandchild it started too, such as `sleep 60 &`. An interactive exec plugin shares ours
    # (it reads our terminal): only it is killed here, what it started by the pipe sweep.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if own_group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


class _PipeReader(asyncio.Protocol):
    """Feeds one pipe of the command into the collector."""

    def __init__(self, collector: _Collector, fd: int) -> None:
        self._collector, self._fd = collector, fd

    def data_received(self, data: bytes) -> None:
        self._collector.pipe_data_received(self._fd, data)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 -- EOF either way
        self._collector.pipe_connection_lost(self._fd)


@attrs.define(eq=False)
class _Child:
    """A running command: the process, its two pipes as read transports, its exit."""

    popen: subprocess.Popen[bytes]
    collector: _Collector
    inodes: set[int]
    own_group: bool
    pipes: list[asyncio.BaseTransport] = attrs.Factory(list)

    def close_pipes(self) -> None:
        for pipe in self.pipes:
            pipe.close()


def _spawn(config: CommandSpec, *, interactive: bool | None) -> subprocess.Popen[bytes]:
    """Start the command; ``interactive`` is ``None`` unless it is an exec plugin."""
    env = config.environment()
    if interactive is not None:
        env = {**(os.environ if env is None else env)}
        env[EXEC_INFO_ENV] = config.exec_info(interactive=interactive)
    return subprocess.Popen(  # noqa: S603 -- the configured command, no shell, by design
        [config.program(), *config.args],
        # An interactive plugin gets our stdin and stderr (its prompts), as under kubectl, and
        # stays in our process group: a new one could not read the terminal (SIGTTIN).
        stdin=None if interactive else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None if interactive else subprocess.PIPE,
        cwd=config.cwd,
        env=env,
        start_new_session=not interactive,
    )


def _inodes(popen: subprocess.Popen[bytes]) -> set[int]:
    return {os.fstat(s.fileno()).st_ino for s in (popen.stdout, popen.stderr) if s is not None}


def _abandon(popen: subprocess.Popen[bytes], *, own_group: bool = True) -> None:
    """Kill and reap a command whose caller is gone (in a worker thread: it may block).

    As thorough as the normal end: the group, then whatever still writes to the pipes.
    """
    _kill_group(popen.pid, own_group=own_group)
    _kill_pipe_holders(_inodes(popen), popen.pid)
    popen.wait()
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()


async def _start(config: CommandSpec, *, interactive: bool | None = None) -> _Child:
    """Start the command off the event loop, and watch its pipes and its exit from the loop.

    ``fork``/``exec`` block the calling thread until the child has exec'd, which on a loaded
    machine can take tens of milliseconds: done in a worker thread, the loop keeps running.

    Args:
        config: What to run.
        interactive: For an exec plugin, whether it runs interactively; else ``None``.

    Raises:
        OSError: It could not be started.
    """
    loop = asyncio.get_running_loop()
    own_group = not interactive
    spawning = loop.run_in_executor(
        None, functools.partial(_spawn, config, interactive=interactive)
    )
    try:
        popen = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # The thread cannot be stopped and will start the command anyway: wait for it, then
        # kill and reap what it started before the cancellation goes through (nothing may
        # outlive the call).
        await outlast(spawning)
        if not spawning.cancelled() and spawning.exception() is None:
            popen = spawning.result()
            await _finish(
                loop.run_in_executor(None, functools.partial(_abandon, popen, own_group=own_group))
            )
        raise
    streams = [(fd, s) for fd, s in ((1, popen.stdout), (2, popen.stderr)) if s is not None]
    collector = _Collector({fd for fd, _ in streams})
    child = _Child(popen, collector, _inodes(popen), own_group)
    try:
        for fd, stream in streams:
            pipe, _ = await loop.connect_read_pipe(
                lambda fd=fd: _PipeReader(collector, fd),  # type: ignore[misc]
                stream,
            )
            child.pipes.append(pipe)
        _watch_exit(popen, collector)
    except BaseException:
        # Cancelled (or failed) between the spawn and the watch: nothing may outlive the call,
        # so the child is killed and reaped before the cancellation goes through.
        child.close_pipes()
        await _finish(
            asyncio.ensure_future(asyncio.to_thread(_abandon, popen, own_group=own_group))
        )
        raise
    return child


async def _finish(work: asyncio.Future[None]) -> None:
    """Wait for ``work`` even through cancellations (the caller re-raises the one it handles)."""
    await outlast(work)
    work.result()


def _watch_exit(popen: subprocess.Popen[bytes], collector: _Collector) -> None:
    """Resolve ``collector.exited`` when the child exits, reaping it (a pidfd, or a thread)."""
    loop = asyncio.get_running_loop()

    def reaped(_: object = None) -> None:
        if not collector.exited.done():
            collector.exited.set_result(None)

    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        # No pidfd (an old kernel): a worker thread waits for the exit instead.
        waiting = loop.run_in_executor(None, popen.wait)
        waiting.add_done_callback(reaped)
        return

    def exited() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        popen.wait()  # it has exited: reaps at once
        reaped()

    loop.add_reader(pidfd, exited)


def _writes_to(proc: Path, wanted: set[str]) -> bool:
    """Whether a process holds a write end of one of our pipes (``/proc/<pid>/fd``, ``fdinfo``).

    A pipe's two ends share one inode; only the access mode in ``fdinfo`` tells them apart.
    """
    for fd in (proc / "fd").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if str(fd.readlink()) not in wanted:
                continue
            info = (proc / "fdinfo" / fd.name).read_text()
            flags = next(line for line in info.splitlines() if line.startswith("flags:"))
            if int(flags.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY:
                return True
    return False


def _kill_pipe_holders(inodes: set[int], command: int) -> int:
    """SIGKILL every process the command left holding its pipes; return how many.

    A process is the command's when it holds a write end of one of our pipes: only the command
    and what it started hold one, even a child that left the command's process group with
    ``setsid`` (which ``killpg`` cannot reach). A process that holds only a read end is one the
    application forked while the command ran (a ``multiprocessing`` or ``ProcessPoolExecutor``
    worker inherits our read ends): it is spared, and so is one that descends from this
    process other than through the command (forked in the instant both ends were ours). Each
    process is signalled through a pidfd opened before its fds are read, so a pid reused in
    between is never hit. Linux only (``/proc``).

    Args:
        inodes: The pipes' inodes.
        command: The command's pid.
    """
    wanted = {f"pipe:[{inode}]" for inode in inodes}
    me = os.getpid()
    return sum(
        _kill_if_writer(entry, wanted, me, command)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and int(entry.name) != me
    )


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # after the name (which may hold spaces)


def _forked_by_us(pid: int, me: int, command: int) -> bool:
    """Whether ``pid`` descends from this process other than through the command."""
    if me == 1:
        # As PID 1 (a container's init) we adopt every orphan, the command's detached children
        # too: our children cannot be told apart by ancestry, only by the write end.
        return False
    for _ in range(1024):  # bounded: a pid chain always ends, but /proc may change meanwhile
        if pid == command:
            return False
        try:
            parent = _parent(pid)
        except (OSError, ValueError, IndexError):
            return False
        if parent == me:
            return True
        if parent <= 1:
            return False  # an orphan, reparented: the command's detached descendants end so
        pid = parent
    return False


def _is_leftover(proc: Path, wanted: set[str], me: int, command: int) -> bool:
    return _writes_to(proc, wanted) and not _forked_by_us(int(proc.name), me, command)


def _kill_if_writer(proc: Path, wanted: set[str], me: int, command: int) -> bool:
    pid = int(proc.name)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOSYS:
            return False  # gone already
        # No pidfd (a kernel before 5.3): by pid, with the (narrow) chance of a reused one.
        with contextlib.suppress(OSError):
            if _is_leftover(proc, wanted, me, command):
                os.kill(pid, signal.SIGKILL)
                return True
        return False
    try:
        if _is_leftover(proc, wanted, me, command):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            return True
    except OSError:
        pass  # it exited meanwhile, or is not ours to signal
    finally:
        os.close(pidfd)
    return False


async def _start_or_fail(config: CommandSpec) -> _Child:
    """Start the command, or raise the :class:`CommandError` that says why it could not."""
    command = config.command
    interactive = None
    if config.exec_api_version is not None:
        interactive = config.exec_interactive(stdin_is_terminal=os.isatty(0))
    try:
        return await _start(config, interactive=interactive)
    except OSError as exc:
        detail = f"{exc.strerror} (os error {exc.errno})" if exc.errno else str(exc)
        if config.install_hint:
            detail += ". " + " ".join(config.install_hint.split())  # one line
        msg = f"provider auth command `{command}` failed to start: {detail}"
        raise CommandError(msg) from exc
    except ConfigError as exc:
        # A `~` that no longer expands (HOME unset since the command was configured).
        msg = f"provider auth command `{command}` failed to start: {exc}"
        raise CommandError(msg) from None


async def run_provider_command(config: CommandSpec) -> str:
    """Run the command once and return its stdout.

    What is guaranteed (Linux): when this returns or raises, or its caller is cancelled, the
    command has exited and been reaped, every process still in its process group has been sent
    SIGKILL, and so has every other process that still holds the write end of the command's
    stdout or stderr (a child that detached with ``setsid`` but kept them); the pipes are
    closed. A process the application forked meanwhile (it holds our read ends) is spared. A
    child that detached *and* closed its inherited stdout and stderr (a daemon) cannot be found
    without cgroups and may outlive the call.

    Args:
        config: What to run.

    Returns:
        The decoded stdout.

    An exec plugin (``exec_api_version``) gets ``KUBERNETES_EXEC_INFO``; run interactively, it
    also gets this process's stdin and stderr and shares its process group (it may read the
    terminal): then only it is killed, and what it started only through the pipe sweep.

    Raises:
        CommandError: It could not start, timed out, exited non-zero, wrote more than 1 MiB or
            non-UTF-8 data to stdout, or an exec plugin cannot run in its interactive mode.
    """
    command = config.command
    child = await _start_or_fail(config)
    collector = child.collector
    try:
        async with asyncio.timeout(config.timeout):
            # Shielded: a timeout or cancellation must not cancel the future itself; the
            # clean-up below waits on it to know the child was reaped.
            await asyncio.shield(collector.exited)
            # Exited: its output is complete once the pipes close, unless something it started
            # still holds them (a background child): then stop waiting after a short grace.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(collector.pipes_closed), EXIT_GRACE)
    except TimeoutError:
        timed_out = True
    else:
        timed_out = False
    finally:
        await _end(child)
    if timed_out:
        msg = f"provider auth command `{command}` timed out after {config.timeout * 1000:g} ms"
        raise CommandError(msg)
    returncode = child.popen.returncode
    assert returncode is not None  # noqa: S101 -- _end() waited for the exit
    if returncode != 0:
        detail = collector.stderr.decode("utf-8", errors="replace").strip()
        if len(detail) > _MAX_STDERR_SHOWN:
            detail = detail[:_MAX_STDERR_SHOWN] + "…"
        suffix = f": {detail}" if detail else ""
        msg = f"provider auth command `{command}` exited with {exit_status(returncode)}{suffix}"
        raise CommandError(msg)
    if collector.too_long:
        msg = (
            f"provider auth command `{command}` wrote more than {MAX_STDOUT // 1024} KiB to stdout"
        )
        raise CommandError(msg)
    try:
        return bytes(collector.stdout).decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised below, outside the handler: the decode error holds the output's bytes
    msg = f"provider auth command `{command}` wrote non-UTF-8 data to stdout"
    raise CommandError(msg)


async def _end(child: _Child) -> None:
    """Leave nothing behind: kill the group and pipe holders, reap the child, close the pipes.

    Whatever happened (success, timeout, cancellation), nothing the command started outlives
    the call: a cancellation that arrives during the clean-up waits for it to finish, then
    goes on (an abandoned clean-up would leave an unreaped child behind).
    """
    cleanup = asyncio.ensure_future(_end_unshielded(child))
    cancelled = await outlast(cleanup)
    cleanup.result()
    if cancelled is not None:
        raise cancelled  # that very one: anyio's cancel scopes recognise their own


async def _end_unshielded(child: _Child) -> None:
    collector = child.collector
    _kill_group(child.popen.pid, own_group=child.own_group)
    if not collector.pipes_closed.done():
        killed = await asyncio.to_thread(_kill_pipe_holders, child.inodes, child.popen.pid)
        if killed:
            logger.debug("Killed %d process(es) the command left holding its output", killed)
    await collector.exited
    child.close_pipes()  # our ends of the pipes
