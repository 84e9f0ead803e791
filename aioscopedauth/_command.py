"""Bearer tokens minted by running a command (reference §5), with no orphan ever left behind.

The command runs without a shell, with stdin from ``/dev/null``, in a process group of its own;
stdout and stderr are drained at the same time (so neither pipe can fill and stall the child);
on timeout, cancellation or error the whole group is killed and reaped. Tokens are cached and
minted once for any number of concurrent callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._cancel import outlast
from ._errors import AuthDataError, CommandError, ConfigError
from ._external import ExternalAuthTokens, RefreshContext
from ._model import UNSENDABLE, AuthMode, is_header_safe, parse_rfc3339
from ._paths import user_path

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CommandBearerRefresher",
    "ProviderAuthCommand",
    "parse_command_output",
    "parse_exec_credential",
]

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


def _args_repr(value: tuple[str, ...]) -> str:
    # Only how many: arguments often carry secrets (a client secret, a token file's path).
    return f"<{len(value)} argument{'' if len(value) == 1 else 's'}>"


def _check_command(_instance: object, _attribute: object, value: str) -> None:
    if not value.strip():
        msg = "provider auth.command must not be empty"
        raise ConfigError(msg)
    if "\0" in value:
        msg = "provider auth.command must not contain a NUL byte"
        raise ConfigError(msg)
    if value.strip().startswith("~"):
        # Checked here, where the setting enters, not at the first run (a bare RuntimeError).
        user_path(value.strip(), "provider auth.command")


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


EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"
"""The variable a Kubernetes exec credential plugin reads its request from."""
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
"""The ``ExecCredential`` versions client-go speaks, and so do we."""
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")


def _quoted(value: object) -> str:
    # Go's %q, near enough for the configured values client-go's messages quote.
    return json.dumps(value, ensure_ascii=False)


def _check_exec_api_version(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None and value not in EXEC_API_VERSIONS:
        msg = f"exec plugin: invalid apiVersion {_quoted(value)}"
        raise ConfigError(msg)


def _check_interactive_mode(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None and value not in INTERACTIVE_MODES:
        msg = (
            "exec plugin cannot support interactive mode: unknown interactiveMode: "
            f"{_quoted(value)}"
        )
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
        exec_api_version: Run the command as a Kubernetes exec credential plugin speaking this
            ``client.authentication.k8s.io`` version (``.../v1`` or ``.../v1beta1``), exactly as
            client-go does: the request goes in ``KUBERNETES_EXEC_INFO``, the answer must be an
            ``ExecCredential`` of the same version with ``status.token``. ``None``: any of
            the plain formats (see :func:`parse_command_output`).
        interactive_mode: ``Never``, ``IfAvailable`` or ``Always`` (client-go's
            ``interactiveMode``): whether the plugin gets this process's stdin (and stderr), so
            it can prompt. Required with ``.../v1``; ``IfAvailable`` by default with
            ``.../v1beta1``.
        stdin_unavailable: This process's stdin is in use by something else (client-go's
            ``StdinUnavailable``): never interactive, and ``Always`` fails.
        stdin_unavailable_message: Said when ``Always`` fails because of ``stdin_unavailable``.
        provide_cluster_info: Pass ``cluster`` to the plugin as ``spec.cluster``.
        cluster: The cluster the plugin authenticates to, as client-go serialises it
            (``server``, ``tls-server-name``, ``certificate-authority-data``, ``config``, ...).
        install_hint: Said when the plugin cannot be started (how to install it).

    The ``repr`` (and ``str``) show the program and how many arguments it takes, never an
    argument or an ``env`` value: they often carry secrets.

    Raises:
        ConfigError: A blank command, a timeout that is not positive, a negative interval, a
            NUL byte in the command, an argument, an env name or value, an ``=`` in an env
            name, or a ``command`` or ``cwd`` of ``~user`` for a user that does not exist.
    """

    command: str = attrs.field(validator=_check_command)
    args: tuple[str, ...] = attrs.field(
        default=(), converter=_to_args, validator=_check_args, repr=_args_repr
    )
    timeout: float = attrs.field(default=5.0, validator=_check_timeout)
    refresh_interval: float = attrs.field(default=300.0, validator=_check_interval)
    cwd: Path | None = attrs.field(default=None, converter=_to_path)
    env: Mapping[str, str] | None = attrs.field(default=None, repr=False, validator=_check_env)
    exec_api_version: str | None = attrs.field(
        default=None, kw_only=True, validator=_check_exec_api_version
    )
    interactive_mode: str | None = attrs.field(
        default=None, kw_only=True, validator=_check_interactive_mode
    )
    stdin_unavailable: bool = attrs.field(default=False, kw_only=True, repr=False)
    stdin_unavailable_message: str = attrs.field(default="", kw_only=True, repr=False)
    provide_cluster_info: bool = attrs.field(default=False, kw_only=True, repr=False)
    cluster: Mapping[str, Any] | None = attrs.field(default=None, kw_only=True, repr=False)
    install_hint: str | None = attrs.field(default=None, kw_only=True, repr=False)

    def __attrs_post_init__(self) -> None:
        """Check the settings that only make sense together."""
        if self.exec_api_version is None:
            extra = [
                name
                for name, value in (
                    ("interactive_mode", self.interactive_mode),
                    ("stdin_unavailable", self.stdin_unavailable),
                    ("provide_cluster_info", self.provide_cluster_info),
                    ("cluster", self.cluster),
                )
                if value
            ]
            if extra:
                msg = f"provider auth {', '.join(extra)} need exec_api_version (an exec plugin)"
                raise ConfigError(msg)
        elif self.exec_interactive_mode() is None:
            # client-go's own text: its v1 has no default interactive mode.
            msg = 'exec plugin cannot support interactive mode: unknown interactiveMode: ""'
            raise ConfigError(msg)

    def exec_interactive_mode(self) -> str | None:
        """Return the interactive mode in force: as configured, else client-go's default.

        Returns:
            ``Never``, ``IfAvailable`` or ``Always``; ``IfAvailable`` for an unset
            ``.../v1beta1`` plugin; ``None`` for an unset ``.../v1`` one or no plugin at all.
        """
        if self.interactive_mode is not None:
            return self.interactive_mode
        if self.exec_api_version == "client.authentication.k8s.io/v1beta1":
            return "IfAvailable"
        return None

    def exec_interactive(self, *, stdin_is_terminal: bool) -> bool:
        """Decide, as client-go does, whether the plugin runs interactively.

        Args:
            stdin_is_terminal: Whether this process's stdin is a terminal.

        Returns:
            Whether the plugin gets stdin (and stderr) and ``spec.interactive`` is true.

        Raises:
            CommandError: ``Always``, but stdin is not a terminal or is unavailable (client-go's
                messages).
        """
        mode = self.exec_interactive_mode()
        if mode == "IfAvailable":
            return stdin_is_terminal and not self.stdin_unavailable
        if mode != "Always":
            return False
        problem = None
        if not stdin_is_terminal:
            problem = "standard input is not a terminal"
        elif self.stdin_unavailable:
            problem = "standard input is unavailable"
            if self.stdin_unavailable_message:
                problem += f": {self.stdin_unavailable_message}"
        if problem is None:
            return True
        msg = (
            f"provider auth command `{self.command}`: exec plugin cannot support interactive "
            f"mode: {problem}"
        )
        raise CommandError(msg)

    def exec_info(self, *, interactive: bool) -> str:
        """Return the ``KUBERNETES_EXEC_INFO`` request: an ``ExecCredential`` without status.

        Args:
            interactive: The decision of :meth:`exec_interactive`.

        Returns:
            The JSON text.
        """
        spec: dict[str, Any] = {}  # in client-go's field order: cluster, then interactive
        if self.provide_cluster_info and self.cluster is not None:
            spec["cluster"] = dict(self.cluster)
        spec["interactive"] = interactive
        request = {"kind": "ExecCredential", "apiVersion": self.exec_api_version, "spec": spec}
        return json.dumps(request, separators=(",", ":"))

    def program(self) -> str:
        """Return the program to execute, resolved as Codex does.

        Returns:
            An absolute path for a command with a path separator, else the bare name (the OS
            looks it up on ``PATH``).

        Raises:
            ConfigError: The command starts with ``~`` and the home folder it names is unknown
                (the user was removed, or ``HOME`` was unset, since the command was configured).
        """
        command = self.command.strip()
        if command.startswith("~"):
            command = str(user_path(command, "provider auth.command"))
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


END_OF_TIME = datetime.max.replace(tzinfo=UTC)
START_OF_TIME = datetime.min.replace(tzinfo=UTC)
"""An expiry past either end of the calendar saturates to these (valid for ever, or expired
already), as the dates of a login do, instead of raising ``OverflowError``."""


def _saturated(seconds: float) -> datetime:
    return END_OF_TIME if seconds > 0 else START_OF_TIME


def _timestamp(value: object, what: str, command: str) -> datetime:
    # NaN (which Python's JSON reads) says nothing about when: refused, never saturated.
    if isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
        pass
    elif isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return _saturated(value)
    elif isinstance(value, str):
        with contextlib.suppress(AuthDataError):
            return parse_rfc3339(value)
    msg = f"provider auth command `{command}` printed an invalid {what}"
    raise CommandError(msg)


def _expires_in(value: object, command: str, now: datetime) -> datetime:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and math.isnan(value))
    ):
        msg = f"provider auth command `{command}` printed an invalid expires_in"
        raise CommandError(msg)
    try:
        return now + timedelta(seconds=value)
    except OverflowError:
        return _saturated(value)


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
            expiry = _expires_in(obj["expires_in"], command, now)
    if not isinstance(token, str):
        msg = (
            f"provider auth command `{command}` printed JSON without a string access_token, "
            "token or status.token"
        )
        raise CommandError(msg)
    token = token.strip()
    expires_at = None
    if isinstance(expiry, datetime):
        expires_at = expiry
    elif expiry is not None:
        expires_at = _timestamp(expiry, f"{what} expiry", command)
    return ExternalAuthTokens.access_token_only(token, expires_at=expires_at)


def parse_command_output(stdout: str, command: str, now: datetime) -> ExternalAuthTokens:
    """Turn a token command's stdout into a token, with its expiry when the output gives one.

    Accepted: a plain token (trimmed); a JSON object with ``access_token`` or ``token`` and
    optional ``expires_at`` (RFC 3339 or epoch seconds) or ``expires_in`` (seconds); a
    Kubernetes ``ExecCredential`` (``status.token``, ``status.expirationTimestamp``). A number
    that puts the expiry past either end of the calendar (``1e20``, ``Infinity``) saturates to
    ``END_OF_TIME`` or ``START_OF_TIME``; ``NaN`` is refused.

    Args:
        stdout: The decoded output.
        command: The configured command, for messages.
        now: The current time, for ``expires_in``.

    Returns:
        The token.

    Raises:
        CommandError: The output is empty, is JSON without a token or with an invalid expiry
            (not a number or date, or ``NaN``), or is a token split over several lines. The
            message never quotes the output.
    """
    text = stdout.strip()
    if text.startswith("{"):
        tokens = _parse_json(text, command, now)
    else:
        tokens = ExternalAuthTokens.access_token_only(text)
    return _usable(tokens, command)


def _usable(tokens: ExternalAuthTokens, command: str) -> ExternalAuthTokens:
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


_API_VERSION_SHAPE = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}/v[0-9]+(?:(?:alpha|beta)[0-9]+)?")


def _exec_failure(command: str, problem: str) -> CommandError:
    return CommandError(f"provider auth command `{command}`: {problem}")


def parse_exec_credential(stdout: str, config: ProviderAuthCommand) -> ExternalAuthTokens:
    """Read a Kubernetes exec credential plugin's answer as client-go does.

    The answer must be a JSON ``ExecCredential`` of the configured ``apiVersion`` whose
    ``status`` holds a ``token`` (a client certificate and key, which client-go also accepts,
    cannot be sent as a bearer token); ``status.expirationTimestamp`` (RFC 3339) is its expiry.

    Args:
        stdout: The decoded output.
        config: The command, with its ``exec_api_version``.

    Returns:
        The token.

    Raises:
        CommandError: client-go's message for the same answer, after the command's name. The
            message never quotes the output (a returned ``apiVersion`` only when it has the shape
            of one).
    """
    command = config.command
    status = _exec_status(stdout, command, config.exec_api_version)
    token = status.get("token")
    if not isinstance(token, str) or not token:
        raise _exec_failure(command, _missing_token(status))
    expiry = status.get("expirationTimestamp")
    expires_at = None
    if expiry is not None:
        if not isinstance(expiry, str):
            problem = "decoding stdout: status.expirationTimestamp is not a time"
            raise _exec_failure(command, problem)
        expires_at = _timestamp(expiry, "status expiry", command)
    return _usable(ExternalAuthTokens.access_token_only(token, expires_at=expires_at), command)


def _exec_status(stdout: str, command: str, wanted: str | None) -> dict[str, Any]:
    """Check the ``ExecCredential`` envelope (version, kind) and return its ``status``."""
    try:
        obj: Any = json.loads(stdout)
    except (ValueError, RecursionError):
        obj = _INVALID  # raised below, outside the handler: the error quotes the output
    if not isinstance(obj, dict):
        problem = "decoding stdout: couldn't get version/kind; json parse error"
        raise _exec_failure(command, problem)
    version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(version, str) or not version:
        raise _exec_failure(command, "decoding stdout: Object 'apiVersion' is missing")
    if not isinstance(kind, str) or not kind:
        raise _exec_failure(command, "decoding stdout: Object 'Kind' is missing")
    if version != wanted:
        shown = version if _API_VERSION_SHAPE.fullmatch(version) else "(not an API version)"
        problem = (
            f"exec plugin is configured to use API version {wanted}, plugin returned version "
            f"{shown}"
        )
        raise _exec_failure(command, problem)
    if kind != "ExecCredential":
        problem = (
            'decoding stdout: no kind other than "ExecCredential" is registered for version '
            f'"{wanted}"'
        )
        raise _exec_failure(command, problem)
    status = obj.get("status")
    if not isinstance(status, dict):
        raise _exec_failure(command, "exec plugin didn't return a status field")
    return status


def _missing_token(status: dict[str, Any]) -> str:
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if not cert and not key:
        return "exec plugin didn't return a token or cert/key pair"
    if not cert or not key:
        return "exec plugin returned only certificate or key, not both"
    return (
        "exec plugin returned a client certificate and key but no token; only status.token "
        "can be sent (as a bearer token)"
    )


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


def _spawn(config: ProviderAuthCommand, *, interactive: bool | None) -> subprocess.Popen[bytes]:
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


async def _start(config: ProviderAuthCommand, *, interactive: bool | None = None) -> _Child:
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


async def _start_or_fail(config: ProviderAuthCommand) -> _Child:
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


async def run_provider_command(config: ProviderAuthCommand) -> str:
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

    cache_resolved = False
    """The manager asks :meth:`resolve` on every call: this source caches on its own terms (its
    refresh interval, and the token's expiry)."""

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
        if self._config.exec_api_version is not None:
            tokens = parse_exec_credential(stdout, self._config)
        else:
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
