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
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import AuthDataError, CommandError, ConfigError
from ._external import ExternalAuthTokens, RefreshContext
from ._model import AuthMode, parse_rfc3339

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["CommandBearerRefresher", "ProviderAuthCommand", "parse_command_output"]

logger = logging.getLogger("aioscopedauth.command")

MAX_STDOUT = 1024 * 1024
"""A token is a few KiB at most; more than this is a misbehaving command."""
_MAX_STDERR_KEPT = 64 * 1024
_MAX_STDERR_SHOWN = 500
_READ_CHUNK = 64 * 1024
STALE_FRACTION = 0.75
"""A token with a known expiry is re-minted after this fraction of its remaining lifetime."""


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    if value is None:
        return None
    return Path(value).expanduser().absolute()


def _to_args(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_command(_instance: object, _attribute: object, value: str) -> None:
    if not value.strip():
        msg = "provider auth.command must not be empty"
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
        ConfigError: A blank command, a timeout that is not positive, or a negative interval.
    """

    command: str = attrs.field(validator=_check_command)
    args: tuple[str, ...] = attrs.field(default=(), converter=_to_args)
    timeout: float = attrs.field(default=5.0, validator=_check_timeout)
    refresh_interval: float = attrs.field(default=300.0, validator=_check_interval)
    cwd: Path | None = attrs.field(default=None, converter=_to_path)
    env: Mapping[str, str] | None = attrs.field(default=None, repr=False)

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


def _parse_json(text: str, command: str, now: datetime) -> ExternalAuthTokens:
    try:
        obj: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        msg = f"provider auth command `{command}` printed invalid JSON"
        raise CommandError(msg) from exc
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
    if any(ch in tokens.access_token for ch in "\r\n\0"):
        # A header value cannot hold a line break; sending half a token helps nobody.
        msg = (
            f"provider auth command `{command}` printed more than one line; it must print only "
            "the token"
        )
        raise CommandError(msg)
    return tokens


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The child leads its own process group (start_new_session), so this reaches every
    # grandchild it started too, such as `sleep 60 &`.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _drain(stream: asyncio.StreamReader | None, keep: int) -> tuple[bytes, bool]:
    """Read a pipe to EOF, keeping at most ``keep`` bytes; report whether more came."""
    if stream is None:
        return b"", False
    kept = bytearray()
    overflow = False
    while chunk := await stream.read(_READ_CHUNK):
        room = keep - len(kept)
        if len(chunk) > room:
            overflow = True
            kept += chunk[: max(room, 0)]
        else:
            kept += chunk
    return bytes(kept), overflow


async def run_provider_command(config: ProviderAuthCommand) -> str:
    """Run the command once and return its stdout.

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
        proc = await asyncio.create_subprocess_exec(
            config.program(),
            *config.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=config.cwd,
            env=config.environment(),
            start_new_session=True,
        )
    except OSError as exc:
        detail = f"{exc.strerror} (os error {exc.errno})" if exc.errno else str(exc)
        msg = f"provider auth command `{command}` failed to start: {detail}"
        raise CommandError(msg) from exc
    try:
        async with asyncio.timeout(config.timeout):
            (stdout, too_long), (stderr, _) = await asyncio.gather(
                _drain(proc.stdout, MAX_STDOUT), _drain(proc.stderr, _MAX_STDERR_KEPT)
            )
            returncode = await proc.wait()
    except TimeoutError as exc:
        msg = f"provider auth command `{command}` timed out after {config.timeout * 1000:g} ms"
        raise CommandError(msg) from exc
    finally:
        # Whatever happened (success, timeout, cancellation), nothing the command started
        # outlives this call, and the child is reaped.
        _kill_group(proc)
        if proc.returncode is None:
            await asyncio.shield(proc.wait())
    if returncode != 0:
        detail = stderr.decode("utf-8", errors="replace").strip()
        if len(detail) > _MAX_STDERR_SHOWN:
            detail = detail[:_MAX_STDERR_SHOWN] + "…"
        suffix = f": {detail}" if detail else ""
        msg = f"provider auth command `{command}` exited with {_exit_status(returncode)}{suffix}"
        raise CommandError(msg)
    if too_long:
        msg = (
            f"provider auth command `{command}` wrote more than {MAX_STDOUT // 1024} KiB to stdout"
        )
        raise CommandError(msg)
    try:
        return stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"provider auth command `{command}` wrote non-UTF-8 data to stdout"
        raise CommandError(msg) from exc


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
        stdout = await run_provider_command(self._config)
        now = datetime.now(UTC)
        tokens = parse_command_output(stdout, self._config.command, now)
        fetched = time.monotonic()
        stale_at = None
        if tokens.expires_at is not None:
            remaining = max((tokens.expires_at - now).total_seconds(), 0.0)
            stale_at = fetched + remaining * STALE_FRACTION
        self._cached = _Cached(tokens, fetched, stale_at)
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
        async with self._lock:
            cached = self._cached
            if (
                cached is not None
                and context.rejected_token is not None
                and cached.token.access_token != context.rejected_token
            ):
                return cached.token
            return await self._run()
