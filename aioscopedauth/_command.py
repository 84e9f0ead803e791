"""Bearer tokens minted by running a command (reference §5), with no orphan ever left behind.

The command runs without a shell, with stdin from ``/dev/null``, in a process group of its own;
stdout and stderr are drained at the same time (so neither pipe can fill and stall the child);
on timeout, cancellation or error the whole group is killed and reaped. Tokens are cached and
minted once for any number of concurrent callers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._command_output import (
    END_OF_TIME,
    START_OF_TIME,
    parse_command_output,
    parse_exec_credential,
)
from ._errors import CommandError, ConfigError
from ._model import AuthMode
from ._paths import user_path
from ._process import EXEC_INFO_ENV, MAX_STDOUT, run_provider_command

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._external import ExternalAuthTokens, RefreshContext

__all__ = [
    "END_OF_TIME",
    "EXEC_INFO_ENV",
    "MAX_STDOUT",
    "START_OF_TIME",
    "CommandBearerRefresher",
    "ProviderAuthCommand",
    "parse_command_output",
    "parse_exec_credential",
    "run_provider_command",
]

logger = logging.getLogger("aioscopedauth.command")

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
            if self._config.exec_api_version is not None:
                tokens = parse_exec_credential(
                    stdout, self._config.command, self._config.exec_api_version
                )
            else:
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
