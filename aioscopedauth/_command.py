"""Bearer tokens minted by running a command (reference §5), with no orphan ever left behind.

The command runs without a shell, with stdin from ``/dev/null``, in a process group of its own;
stdout and stderr are drained at the same time (so neither pipe can fill and stall the child);
on timeout, cancellation or error the whole group is killed and reaped. Tokens are cached and
minted once for any number of concurrent callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import AuthDataError, CommandError, ConfigError
from ._external import ExternalAuthTokens, RefreshContext
from ._model import UNSENDABLE, AuthMode, is_header_safe, parse_rfc3339
from ._paths import user_path

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["CommandBearerRefresher", "ProviderAuthCommand", "parse_command_output"]

logger = logging.getLogger("aioscopedauth.command")

MAX_STDOUT = 1024 * 1024
"""A token is a few KiB at most; more than this is a misbehaving command."""
_MAX_STDERR_KEPT = 64 * 1024
_MAX_STDERR_SHOWN = 500
STALE_FRACTION = 0.75
"""A token with a known expiry is re-minted after this fraction of its remaining lifetime."""


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    if value is None:
        return None
    return user_path(value, "provider auth.cwd").absolute()


def _to_args(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_command(_instance: object, _attribute: object, value: str) -> None:
    if not value.strip():
        msg = "provider auth.command must not be empty"
        raise ConfigError(msg)
    if "\0" in value:
        msg = "provider auth.command must not contain a NUL byte"
        raise ConfigError(msg)


def _check_args(_instance: object, _attribute: object, value: tuple[object, ...]) -> None:
    # The OS cannot pass a NUL inside an argument; it would fail at every run instead of here.
    if not all(isinstance(arg, str) and "\0" not in arg for arg in value):
        msg = "provider auth.args must be strings without NUL bytes"
        raise ConfigError(msg)


def _check_env(_instance: object, _attribute: object, value: Mapping[str, str] | None) -> None:
    if value is None:
        return
    # Typed str -> str, but it comes from configuration: check what is really there.
    items: list[tuple[object, object]] = list(value.items())
    for name, item in items:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            msg = "provider auth env names must be non-empty strings without '=' or NUL bytes"
            raise ConfigError(msg)
        if not isinstance(item, str) or "\0" in item:
            # The message names the variable, never its value (it may be a secret).
            msg = f"provider auth env value of {name} must be a string without NUL bytes"
            raise ConfigError(msg)


def _check_timeout(_instance: object, _attribute: object, value: float) -> None:
    if not value > 0:
        msg = "provider auth timeout must be greater than zero"
        raise ConfigError(msg)


def _check_interval(_instance: object, _attribute: object, value: float) -> None:
    if not value >= 0:
        msg = "provider auth refresh_interval must not be negative"
        raise ConfigError(msg)


@attrs.frozen
class ProviderAuthCommand:
    """How to run a provider's token command.

    Args:
        command: The program: a bare name is looked up on ``PATH``; a relative path with a
            separator is taken relative to ``cwd``; ``~`` is expanded.
        args: Its arguments, passed as they are (no shell, no expansion).
        timeout: Seconds the whole run may take.
        refresh_interval: Seconds a token is reused before the command runs again; ``0`` runs it
            again only after a 401.
        cwd: The working directory (default: the process's); relative paths are taken from the
            process's working directory, ``~`` is expanded.
        env: Variables added to the inherited environment.

    Raises:
        ConfigError: A blank command, a timeout that is not positive, a negative interval, a
            NUL byte in the command, an argument, an env name or value, an ``=`` in an env
            name, or a ``cwd`` of ``~user`` for a user that does not exist.
    """

    command: str = attrs.field(validator=_check_command)
    args: tuple[str, ...] = attrs.field(default=(), converter=_to_args, validator=_check_args)
    timeout: float = attrs.field(default=5.0, validator=_check_timeout)
    refresh_interval: float = attrs.field(default=300.0, validator=_check_interval)
    cwd: Path | None = attrs.field(default=None, converter=_to_path)
    env: Mapping[str, str] | None = attrs.field(default=None, repr=False, validator=_check_env)

    def program(self) -> str:
        """Return the program to execute, resolved as Codex does.

        Returns:
            An absolute path for a command with a path separator, else the bare name (the OS
            looks it up on ``PATH``).
        """
        command = self.command.strip()
        if command.startswith("~"):
            command = str(Path(command).expanduser())
        if os.sep not in command and (os.altsep is None or os.altsep not in command):
            return command
        path = Path(command)
        if not path.is_absolute():
            path = (self.cwd or Path.cwd()) / path
        return str(path)

    def environment(self) -> dict[str, str] | None:
        """Return the child's environment: the process's plus ``env``, or ``None`` to inherit."""
        if not self.env:
            return None
        return {**os.environ, **self.env}


def _exit_status(returncode: int) -> str:
    if returncode >= 0:
        return f"exit status: {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal: {number}"
    return f"signal: {number} ({name})"


def _timestamp(value: object, what: str, command: str) -> datetime:
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            return datetime.fromtimestamp(value, tz=UTC)
    elif isinstance(value, str):
        with contextlib.suppress(AuthDataError):
            return parse_rfc3339(value)
    msg = f"provider auth command `{command}` printed an invalid {what}"
    raise CommandError(msg)


_INVALID = object()


def _parse_json(text: str, command: str, now: datetime) -> ExternalAuthTokens:
    try:
        obj: Any = json.loads(text)
    except (ValueError, RecursionError):
        # Raised below, outside the handler: the decoder's error holds the command's output.
        obj = _INVALID
    if obj is _INVALID:
        msg = f"provider auth command `{command}` printed invalid JSON"
        raise CommandError(msg)
    if not isinstance(obj, dict):
        msg = f"provider auth command `{command}` printed JSON that is not an object"
        raise CommandError(msg)
    status = obj.get("status")
    if obj.get("kind") == "ExecCredential" or isinstance(status, dict):
        # A Kubernetes client-go exec credential.
        status = status if isinstance(status, dict) else {}
        token, expiry, what = status.get("token"), status.get("expirationTimestamp"), "status"
    else:
        token = obj.get("access_token", obj.get("token"))
        expiry, what = obj.get("expires_at"), "expires_at"
        if expiry is None and obj.get("expires_in") is not None:
            seconds = obj["expires_in"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                msg = f"provider auth command `{command}` printed an invalid expires_in"
                raise CommandError(msg)
            expiry = (now + timedelta(seconds=seconds)).timestamp()
    if not isinstance(token, str):
        msg = (
            f"provider auth command `{command}` printed JSON without a string access_token, "
            "token or status.token"
        )
        raise CommandError(msg)
    token = token.strip()
    expires_at = None
    if expiry is not None:
        expires_at = _timestamp(expiry, f"{what} expiry", command)
    return ExternalAuthTokens.access_token_only(token, expires_at=expires_at)


def parse_command_output(stdout: str, command: str, now: datetime) -> ExternalAuthTokens:
    """Turn a token command's stdout into a token, with its expiry when the output gives one.

    Accepted: a plain token (trimmed); a JSON object with ``access_token`` or ``token`` and
    optional ``expires_at`` (RFC 3339 or epoch seconds) or ``expires_in`` (seconds); a
    Kubernetes ``ExecCredential`` (``status.token``, ``status.expirationTimestamp``).

    Args:
        stdout: The decoded output.
        command: The configured command, for messages.
        now: The current time, for ``expires_in``.

    Returns:
        The token.

    Raises:
        CommandError: The output is empty, is JSON without a token, or is a token split over
            several lines. The message never quotes the output.
    """
    text = stdout.strip()
    if text.startswith("{"):
        tokens = _parse_json(text, command, now)
    else:
        tokens = ExternalAuthTokens.access_token_only(text)
    if not tokens.access_token:
        msg = f"provider auth command `{command}` produced an empty token"
        raise CommandError(msg)
    if any(ch in tokens.access_token for ch in "\r\n"):
        # A header value cannot hold a line break; sending half a token helps nobody.
        msg = (
            f"provider auth command `{command}` printed more than one line; it must print only "
            "the token"
        )
        raise CommandError(msg)
    if not is_header_safe(tokens.access_token):
        msg = f"provider auth command `{command}` printed a token that {UNSENDABLE}"
        raise CommandError(msg)
    return tokens


EXIT_GRACE = 0.5
"""Seconds the output may keep flowing after the command exits. Longer means something it
started (a background child) still holds the pipes: it is killed and what was read is used."""


class _Collector:
    """Collects stdout and stderr as they come (both at once, so neither pipe can fill)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.too_long = False
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

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


def _kill_group(pid: int) -> None:
    # The child leads its own process group (start_new_session), so this reaches every
    # grandchild it started too, such as `sleep 60 &`.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


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
    pipes: list[asyncio.BaseTransport] = attrs.Factory(list)

    def close_pipes(self) -> None:
        for pipe in self.pipes:
            pipe.close()


def _spawn(config: ProviderAuthCommand) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 -- the configured command, no shell, by design
        [config.program(), *config.args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=config.cwd,
        env=config.environment(),
        start_new_session=True,
    )


def _abandon(popen: subprocess.Popen[bytes]) -> None:
    """Kill and reap a command whose caller is gone (in a worker thread: it may block)."""
    _kill_group(popen.pid)
    popen.wait()
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()


def _abandon_spawned(spawning: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    if not spawning.cancelled() and spawning.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, _abandon, spawning.result())


async def _start(config: ProviderAuthCommand) -> _Child:
    """Start the command off the event loop, and watch its pipes and its exit from the loop.

    ``fork``/``exec`` block the calling thread until the child has exec'd, which on a loaded
    machine can take tens of milliseconds: done in a worker thread, the loop keeps running.

    Raises:
        OSError: It could not be started.
    """
    loop = asyncio.get_running_loop()
    spawning = loop.run_in_executor(None, _spawn, config)
    try:
        popen = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        spawning.add_done_callback(_abandon_spawned)  # started anyway: kill and reap it
        raise
    assert popen.stdout is not None  # noqa: S101 -- PIPE was asked for
    assert popen.stderr is not None  # noqa: S101 -- PIPE was asked for
    collector = _Collector()
    streams = ((1, popen.stdout), (2, popen.stderr))
    child = _Child(popen, collector, {os.fstat(s.fileno()).st_ino for _, s in streams})
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
        await _finish(loop.run_in_executor(None, _abandon, popen))
        raise
    return child


async def _finish(work: asyncio.Future[None]) -> None:
    """Wait for ``work`` even through cancellations (they still end the caller afterwards)."""
    while not work.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(work)
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


def _kill_pipe_holders(inodes: set[int]) -> int:
    """SIGKILL every other process that holds one of our pipes; return how many.

    Only the command and what it started can hold them, even a child that left the command's
    process group with ``setsid`` (which ``killpg`` cannot reach). Linux only (``/proc``).
    """
    wanted = {f"pipe:[{inode}]" for inode in inodes}
    me = os.getpid()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        with contextlib.suppress(OSError):
            if any(str(fd.readlink()) in wanted for fd in (entry / "fd").iterdir()):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


async def run_provider_command(config: ProviderAuthCommand) -> str:
    """Run the command once and return its stdout.

    What is guaranteed (Linux): when this returns or raises, or its caller is cancelled, the
    command has exited and been reaped, every process still in its process group has been sent
    SIGKILL, and so has every other process that still holds the command's stdout or stderr
    (a child that detached with ``setsid`` but kept them); the pipes are closed. A child that
    detached *and* closed its inherited stdout and stderr (a daemon) cannot be found without
    cgroups and may outlive the call.

    Args:
        config: What to run.

    Returns:
        The decoded stdout.

    Raises:
        CommandError: It could not start, timed out, exited non-zero, wrote more than 1 MiB or
            non-UTF-8 data to stdout.
    """
    command = config.command
    try:
        child = await _start(config)
    except OSError as exc:
        detail = f"{exc.strerror} (os error {exc.errno})" if exc.errno else str(exc)
        msg = f"provider auth command `{command}` failed to start: {detail}"
        raise CommandError(msg) from exc
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
        msg = f"provider auth command `{command}` exited with {_exit_status(returncode)}{suffix}"
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
    cancelled = False
    while not cleanup.done():
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            cancelled = True
    cleanup.result()
    if cancelled:
        raise asyncio.CancelledError


async def _end_unshielded(child: _Child) -> None:
    collector = child.collector
    _kill_group(child.popen.pid)
    if not collector.pipes_closed.done():
        killed = await asyncio.to_thread(_kill_pipe_holders, child.inodes)
        if killed:
            logger.debug("Killed %d process(es) the command left holding its output", killed)
    await collector.exited
    child.close_pipes()  # our ends of the pipes


@attrs.define(eq=False)
class _Cached:
    token: ExternalAuthTokens
    fetched: float  # monotonic
    stale_at: float | None  # monotonic; None = never stale by age


class CommandBearerRefresher:
    """A bearer source that runs a :class:`ProviderAuthCommand` and caches its token.

    * ``resolve()`` returns the cached token while it is fresh: younger than
      ``refresh_interval`` (any age when the interval is ``0``) and, when the output gave an
      expiry, before 75% of the remaining lifetime has passed. Otherwise it runs the command,
      once for all concurrent callers. If a re-run fails while the cached token has a known
      expiry still in the future, that token keeps being served, with a warning.
    * ``refresh(context)`` runs the command after a 401, once for all concurrent callers
      rejected with the same token: a caller whose rejected token was already replaced gets the
      new token without another run.

    Args:
        command: What to run.
    """

    def __init__(self, command: ProviderAuthCommand) -> None:
        """Create the source; see the class docstring."""
        self._config = command
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()
        """Clear while the command runs: callers after a 401 wait for that run all at once."""
        self._settled.set()
        self.runs = 0
        """How many times the command was started (for status and tests)."""

    @property
    def mode(self) -> AuthMode:
        """``AuthMode.BEARER``."""
        return AuthMode.BEARER

    @property
    def command(self) -> ProviderAuthCommand:
        """The command configuration."""
        return self._config

    def __repr__(self) -> str:
        """Name the command, never the token."""
        return f"<CommandBearerRefresher command={self._config.command!r} runs={self.runs}>"

    def _fresh(self) -> ExternalAuthTokens | None:
        cached = self._cached
        if cached is None:
            return None
        now = time.monotonic()
        interval = self._config.refresh_interval
        if interval and now - cached.fetched >= interval:
            return None
        if cached.stale_at is not None and now >= cached.stale_at:
            return None
        return cached.token

    def _usable_after_failure(self) -> ExternalAuthTokens | None:
        cached = self._cached
        if cached is None or cached.token.expires_at is None:
            return None
        return cached.token if cached.token.expires_at > datetime.now(UTC) else None

    async def _run(self) -> ExternalAuthTokens:
        self.runs += 1
        self._settled.clear()
        try:
            stdout = await run_provider_command(self._config)
            now = datetime.now(UTC)
            tokens = parse_command_output(stdout, self._config.command, now)
            fetched = time.monotonic()
            stale_at = None
            if tokens.expires_at is not None:
                remaining = max((tokens.expires_at - now).total_seconds(), 0.0)
                stale_at = fetched + remaining * STALE_FRACTION
            self._cached = _Cached(tokens, fetched, stale_at)
        finally:
            self._settled.set()  # waiters look at the cache again (a failed run left it as is)
        return tokens

    async def resolve(self) -> ExternalAuthTokens | None:
        """Return the cached token, running the command when it is missing or stale.

        Returns:
            The token.

        Raises:
            CommandError: The command failed and no unexpired cached token is left.
        """
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        if not self._settled.is_set():
            # A run is under way. Like a managed login in its refresh window: keep using a
            # token that has not expired rather than queue on the lock (one turn of the event
            # loop per caller, seconds for a hundred on a busy loop); else wait for the run
            # with everyone, at once.
            valid = self._usable_after_failure()
            if valid is not None:
                return valid
            await self._settled.wait()
            fresh = self._fresh()
            if fresh is not None:
                return fresh
        async with self._lock:
            fresh = self._fresh()  # another task may have run it while we waited
            if fresh is not None:
                return fresh
            try:
                return await self._run()
            except CommandError as exc:
                fallback = self._usable_after_failure()
                if fallback is None:
                    raise
                logger.warning("%s; using the cached token until it expires", exc)
                return fallback

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        """Run the command after a 401, once for every caller rejected with the same token.

        Args:
            context: Carries the rejected token, if known.

        Returns:
            The new token.

        Raises:
            CommandError: The command failed.
        """
        # Without the lock first: in a storm of 401s every caller but the first finds the new
        # token here, instead of taking the lock in turn (one turn of the event loop each,
        # seconds for a hundred callers on a busy loop, while the token ages).
        adopted = self._replacement(context.rejected_token)
        if adopted is not None:
            return adopted
        if not self._settled.is_set():
            # A run is under way, most likely for the very token this caller saw rejected:
            # wait for it with every other such caller (woken together), then look again.
            await self._settled.wait()
            adopted = self._replacement(context.rejected_token)
            if adopted is not None:
                return adopted
        async with self._lock:
            adopted = self._replacement(context.rejected_token)
            if adopted is not None:
                return adopted
            return await self._run()

    def _replacement(self, rejected: str | None) -> ExternalAuthTokens | None:
        """The cached token, if it replaced ``rejected`` and is still fresh (else ``None``).

        A stale one is not handed out after a 401: by the time the retry arrives it may have
        expired, and the recovery would have nothing left to try.
        """
        cached = self._cached
        if cached is None or rejected is None or cached.token.access_token == rejected:
            return None
        return self._fresh()
