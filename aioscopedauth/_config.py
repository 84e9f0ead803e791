"""Codex-style provider configuration: ``[model_providers.<id>]`` tables with an ``auth`` table.

Reading is synchronous (``tomllib``): a config file is read once at start-up, before any
request, and a few KiB read from a local disk does not stall an event loop in practice.
"""

from __future__ import annotations

import logging
import tomllib
from typing import TYPE_CHECKING, Any

import attrs

from ._command import CommandBearerRefresher, ProviderAuthCommand
from ._errors import ConfigError
from ._paths import resolved_path, user_path

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping
    from pathlib import Path

    from ._manager import AuthManager

__all__ = ["ProviderInfo", "load_providers", "manager_for_provider", "parse_providers"]

logger = logging.getLogger("aioscopedauth.config")

_EXEC_KEYS = {
    "exec_api_version": str,
    "interactive_mode": str,
    "stdin_unavailable": bool,
    "stdin_unavailable_message": str,
    "provide_cluster_info": bool,
    "cluster": dict,
    "install_hint": str,
}
"""A Kubernetes exec credential plugin's settings (client-go's ``exec`` block), by type."""
_AUTH_KEYS = {"command", "args", "timeout_ms", "refresh_interval_ms", "cwd", *_EXEC_KEYS}
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_REFRESH_INTERVAL_MS = 300_000


@attrs.frozen
class ProviderInfo:
    """One ``[model_providers.<id>]`` table.

    Attributes:
        id: The table's key.
        name: The display name (defaults to the id).
        base_url: The provider's base URL, if set.
        env_key: The environment variable that holds the provider's API key, if set.
        experimental_bearer_token: A fixed bearer token, if set. Never shown in ``repr``.
        requires_openai_auth: Whether the provider uses the OpenAI login.
        auth: The token command, when the provider mints bearer tokens with one.
        options: Every other key of the table, as read.
    """

    id: str
    name: str
    base_url: str | None = None
    env_key: str | None = None
    experimental_bearer_token: str | None = attrs.field(default=None, repr=False)
    requires_openai_auth: bool = False
    auth: ProviderAuthCommand | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


def _fail(provider_id: str, problem: str) -> ConfigError:
    return ConfigError(f"model_providers.{provider_id}: {problem}")


def _opt_str(table: Mapping[str, Any], key: str, provider_id: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(provider_id, f"{key} must be a string")
    return value


def _int(table: Mapping[str, Any], key: str, default: int, provider_id: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(provider_id, f"auth.{key} must be an integer")
    return value


def _parse_exec(raw: Mapping[str, Any], provider_id: str) -> dict[str, Any]:
    found = {}
    for key, kind in _EXEC_KEYS.items():
        if key not in raw:
            continue
        if not isinstance(raw[key], kind):
            what = {str: "a string", bool: "true or false", dict: "a table"}[kind]
            raise _fail(provider_id, f"auth.{key} must be {what}")
        found[key] = raw[key]
    return found


def _parse_cwd(raw: Mapping[str, Any], provider_id: str, base_dir: Path) -> Path:
    cwd_raw = raw.get("cwd", ".")
    if not isinstance(cwd_raw, str):
        raise _fail(provider_id, "auth.cwd must be a string")
    # Relative to the config file's folder, as Codex resolves it; `~` expanded.
    try:
        return resolved_path(base_dir / user_path(cwd_raw, "auth.cwd"), "auth.cwd")
    except ConfigError as exc:
        raise _fail(provider_id, str(exc)) from None


def _parse_auth(raw: object, provider_id: str, base_dir: Path) -> ProviderAuthCommand:
    if not isinstance(raw, dict):
        raise _fail(provider_id, "auth must be a table")
    unknown = sorted(set(raw) - _AUTH_KEYS)
    if unknown:
        logger.warning(
            "model_providers.%s.auth: ignoring unknown keys %s", provider_id, ", ".join(unknown)
        )
    command = raw.get("command")
    if not isinstance(command, str):
        raise _fail(provider_id, "provider auth.command must be a string")
    if not command.strip():
        raise _fail(provider_id, "provider auth.command must not be empty")
    args = raw.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _fail(provider_id, "auth.args must be a list of strings")
    timeout_ms = _int(raw, "timeout_ms", DEFAULT_TIMEOUT_MS, provider_id)
    if timeout_ms <= 0:
        raise _fail(provider_id, "auth.timeout_ms must be greater than zero")
    interval_ms = _int(raw, "refresh_interval_ms", DEFAULT_REFRESH_INTERVAL_MS, provider_id)
    if interval_ms < 0:
        raise _fail(provider_id, "auth.refresh_interval_ms must not be negative")
    cwd = _parse_cwd(raw, provider_id, base_dir)
    exec_options = _parse_exec(raw, provider_id)
    try:
        return ProviderAuthCommand(
            command=command,
            args=tuple(args),
            timeout=timeout_ms / 1000,
            refresh_interval=interval_ms / 1000,
            cwd=cwd,
            **exec_options,
        )
    except ConfigError as exc:
        # The message names the setting (never its value); the prefix names the provider.
        raise _fail(provider_id, str(exc)) from None


def _parse_provider(provider_id: str, raw: object, base_dir: Path) -> ProviderInfo:
    if not isinstance(raw, dict):
        raise _fail(provider_id, "must be a table")
    requires = raw.get("requires_openai_auth", False)
    if not isinstance(requires, bool):
        raise _fail(provider_id, "requires_openai_auth must be true or false")
    env_key = _opt_str(raw, "env_key", provider_id)
    bearer = _opt_str(raw, "experimental_bearer_token", provider_id)
    auth = None
    if "auth" in raw:
        conflicts = [
            name
            for name, present in (
                ("env_key", env_key is not None),
                ("experimental_bearer_token", bearer is not None),
                ("requires_openai_auth", requires),
            )
            if present
        ]
        if conflicts:
            raise _fail(
                provider_id, f"provider auth cannot be combined with {', '.join(conflicts)}"
            )
        auth = _parse_auth(raw["auth"], provider_id, base_dir)
    known = {"name", "base_url", "env_key", "experimental_bearer_token", "requires_openai_auth"}
    return ProviderInfo(
        id=provider_id,
        name=_opt_str(raw, "name", provider_id) or provider_id,
        base_url=_opt_str(raw, "base_url", provider_id),
        env_key=env_key,
        experimental_bearer_token=bearer,
        requires_openai_auth=requires,
        auth=auth,
        options={k: v for k, v in raw.items() if k not in known and k != "auth"},
    )


def parse_providers(document: Mapping[str, Any], base_dir: Path) -> dict[str, ProviderInfo]:
    """Read the ``model_providers`` tables of a parsed config document.

    Args:
        document: The parsed TOML.
        base_dir: The folder relative ``cwd`` values are resolved against.

    Returns:
        The providers by id (empty when there is no ``model_providers`` table).

    Raises:
        ConfigError: A provider is invalid; the message starts with ``model_providers.<id>: ``.
    """
    tables = document.get("model_providers", {})
    if not isinstance(tables, dict):
        msg = "model_providers must be a table"
        raise ConfigError(msg)
    return {pid: _parse_provider(pid, raw, base_dir) for pid, raw in tables.items()}


def load_providers(path: str | os.PathLike[str]) -> dict[str, ProviderInfo]:
    """Read the providers of a Codex-style ``config.toml``.

    Args:
        path: The config file. Relative ``auth.cwd`` values are resolved against its folder.

    Returns:
        The providers by id.

    Raises:
        ConfigError: The file cannot be read, is not TOML, or holds an invalid provider.
    """
    file = user_path(path, "the config file's path")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"Could not read the config file {file}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    except UnicodeDecodeError:
        # Not chained: the decode error holds the file's bytes, bearer tokens included.
        text = None
    if text is None:
        msg = f"The config file {file} is not UTF-8 text"
        raise ConfigError(msg)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"The config file {file} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    except RecursionError as exc:
        msg = f"The config file {file} is not valid TOML: it is nested too deeply"
        raise ConfigError(msg) from exc
    return parse_providers(document, file.parent.absolute())


def manager_for_provider(base: AuthManager, provider: ProviderInfo) -> AuthManager:
    """Return the manager a provider's requests should use.

    Args:
        base: The manager of the OpenAI login.
        provider: The provider.

    Returns:
        For a provider with an ``auth`` command, a manager derived from ``base`` whose bearer
        comes from that command (a new token cache per call); otherwise ``base``.
    """
    if provider.auth is None:
        return base
    return base.with_external_bearer_refresher(CommandBearerRefresher(provider.auth))
