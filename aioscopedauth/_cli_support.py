"""What every command of the ``aioscopedauth`` command line shares.

Exit codes and the usage error, where the login is kept (``--home``, ``--store``), the manager
and provider a command works with, and the words for both. Only the standard library and
``_errors`` at import time: ``--help`` imports this module too.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from ._errors import AuthError, ConfigError, describe_login_mode
from ._paths import codex_home, user_path

if TYPE_CHECKING:
    import argparse
    from datetime import datetime
    from pathlib import Path

    from ._config import ProviderInfo
    from ._manager import AuthManager
    from ._model import AuthMode
    from ._oauth_providers import OAuthProvider
    from ._storage import AuthStore

EXIT_OK = 0
EXIT_AUTH = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LOGIN_HINT = (
    "log in with `aioscopedauth login --api-key` (it reads the key from stdin) or `codex login`"
)

OPENED: list[Any] = []
"""Redis stores this command opened; closed when it ends."""

SAID: list[str] = []
"""What this command's own message already says (its text, the file it is about): a library
warning held until the end that repeats one of these is not printed (one message a failure)."""


class UsageError(Exception):
    """A usage error found after parsing (a bad URL, method or header): exit 2."""


def default_home() -> Path:
    """Return ``$CODEX_HOME``, else ``~/.codex`` (where the Codex CLI keeps its login)."""
    try:
        return codex_home()
    except ConfigError as exc:  # ~nosuchuser, or no home folder: bad usage, one line
        raise UsageError(str(exc)) from None


def _home(args: argparse.Namespace) -> Path:
    home = _user_path(args.home, "--home") if args.home else default_home()
    if home.exists() and not home.is_dir():
        what = "--home" if args.home else "the Codex home"
        msg = f"{what} {home} is a file; it must be a folder (or not exist yet)"
        raise UsageError(msg)
    return home


def oauth_provider_from(args: argparse.Namespace) -> OAuthProvider | None:
    """The ``[oauth_providers.NAME]`` that ``--provider NAME`` names, if it is one of ours.

    The library's own file is read first: a name it defines is an OAuth provider, whatever
    Codex's ``config.toml`` says (that file is only read, never written).
    """
    if not args.provider:
        return None
    from ._oauth_providers import CONFIG_NAME, load_oauth_providers

    path = (
        _user_path(args.oauth_config, "--oauth-config")
        if args.oauth_config
        else _home(args) / CONFIG_NAME
    )
    return load_oauth_providers(path).get(args.provider)


def login_hint(args: argparse.Namespace) -> str:
    """How to log in: with the provider's command when ``--provider`` names an OAuth one."""
    oauth = getattr(args, "oauth", None)
    if oauth is None:
        return LOGIN_HINT
    return (
        f"log in with `aioscopedauth login --provider {oauth.name}` (a browser; --device or "
        "--client-credentials for those logins)"
    )


def _redis_store(args: argparse.Namespace) -> AuthStore:
    from .redis import RedisAuthStore

    if not args.redis_url:
        msg = "--store redis needs --redis-url URL (or $AIOSCOPEDAUTH_REDIS_URL)"
        raise UsageError(msg)
    check_redis_url(args)
    key_text = os.environ.get("AIOSCOPEDAUTH_REDIS_KEY", "").strip()
    try:
        key = bytes.fromhex(key_text) if key_text else None
    except ValueError:
        msg = "AIOSCOPEDAUTH_REDIS_KEY must be 64 hex digits (32 bytes)"
        raise UsageError(msg) from None
    name = args.redis_name
    oauth = getattr(args, "oauth", None)
    if oauth is not None and not getattr(args, "redis_name_given", False):
        name = f"oauth-{oauth.name}"  # never the Codex login's own name
    try:
        store = RedisAuthStore.from_url(args.redis_url, name=name, encryption_key=key)
    except ConfigError as exc:
        # A bad --redis-url, --redis-name or key is bad usage: exit 2. The message never
        # quotes the URL's password.
        raise UsageError(str(exc).rstrip(".")) from None
    OPENED.append(store)
    return store


def shown_url(text: str) -> str:
    """``text`` as typed, but with everything before its last ``@`` (a password) masked."""
    head, at, tail = text.rpartition("@")
    if not at:
        return text
    scheme, sep, _ = head.partition("://")
    return f"{scheme}://***@{tail}" if sep else f"***@{tail}"


def check_redis_url(args: argparse.Namespace) -> None:
    """Refuse a ``--redis-url`` that cannot work, echoing it as typed (never its password).

    Raises:
        UsageError: It is not a Redis URL the store can use; the library's reason and the URL
            as typed, its password masked.
    """
    from .redis import check_url

    text = args.redis_url
    given_as = "$AIOSCOPEDAUTH_REDIS_URL" if args.redis_url_from_env else "--redis-url"
    try:
        check_url(text)
    except ConfigError as exc:
        raise UsageError(f"{given_as} {shown_url(text)!r}: {exc}".rstrip(".")) from None


def _store(args: argparse.Namespace) -> AuthStore:
    from ._storage import AutoAuthStore, FileAuthStore, KeyringAuthStore

    if args.store == "redis":
        return _redis_store(args)
    home = _home(args)
    oauth = getattr(args, "oauth", None)
    if oauth is not None:
        from ._oauth_providers import provider_home

        # A folder of the provider's own: Codex's auth.json is never touched.
        home = provider_home(home, oauth.name)
    if args.store == "keyring":
        return KeyringAuthStore(home)
    if args.store == "auto":
        return AutoAuthStore(home)
    return FileAuthStore(home)


def build_manager(args: argparse.Namespace) -> AuthManager:
    from ._manager import AuthManager
    from ._oauth import OAuthConfig

    # An OAuth provider's configuration (discovered, with its secret) when the command needs
    # one; `status` reads the store only, so it works offline and without the secret.
    settings = getattr(args, "oauth_settings", None)
    return AuthManager(_store(args), settings if settings is not None else OAuthConfig.codex())


def _config_path(args: argparse.Namespace) -> Path:
    return _user_path(args.config, "--config") if args.config else _home(args) / "config.toml"


def _user_path(value: str, option: str) -> Path:
    try:
        return user_path(value, option)
    except ConfigError as exc:  # ~nosuchuser: bad usage, one line
        raise UsageError(str(exc)) from None


def provider_from(args: argparse.Namespace) -> ProviderInfo | None:
    if not args.provider or getattr(args, "oauth", None) is not None:
        return None
    from ._config import load_providers

    config = _config_path(args)
    providers = load_providers(config)
    provider = providers.get(args.provider)
    if provider is None:
        known = ", ".join(sorted(providers)) or "none"
        msg = f"No provider {args.provider!r} in {config} (known: {known})"
        raise ConfigError(msg)
    return provider


def for_provider(provider: ProviderInfo | None, base: AuthManager) -> AuthManager:
    if provider is None:
        return base
    from ._config import manager_for_provider

    return manager_for_provider(base, provider)


def where(store: AuthStore) -> str:
    """Where a store keeps the login, in words (``status``'s "looked in", ``login``'s "saved")."""
    from ._storage import AutoAuthStore, FileAuthStore

    if isinstance(store, FileAuthStore):
        return str(store.path)
    if isinstance(store, AutoAuthStore):
        return f"the system keyring, else {store.home / 'auth.json'}"
    if store.kind == "keyring":
        return "the system keyring"
    where = getattr(store, "where", None)
    if store.kind == "redis" and where is not None:
        return f"{where}, name {getattr(store, 'name', 'default')}"
    return store.kind


def mode_text(mode: AuthMode) -> str:
    from ._model import AuthMode

    text = {
        AuthMode.API_KEY: "an API key",
        AuthMode.CHATGPT: "ChatGPT (managed OAuth tokens)",
        AuthMode.CHATGPT_AUTH_TOKENS: "ChatGPT tokens supplied by a host app",
        AuthMode.BEARER: "a bearer token from a command",
        AuthMode.PERSONAL_ACCESS_TOKEN: "a personal access token",
        AuthMode.OAUTH: "an OAuth provider's login",
    }.get(mode)
    return text if text is not None else describe_login_mode(mode.value)


async def unusable_login(store: AuthStore) -> str | None:
    """Why the login ``store`` holds cannot be used (``{}``, no tokens), or ``None``.

    The manager logs it and treats the login as logged out; the command says it in its own
    "not logged in" message instead, once (the log line is then not printed).
    """
    from ._model import Auth

    try:
        data = await store.load()
    except AuthError:
        return None
    if data is None:
        return None
    try:
        Auth.from_data(data)
    except AuthError as exc:
        reason = str(exc)
        SAID.append(reason)
        path = getattr(store, "path", None)
        if path is not None:
            SAID.append(str(path))  # a mode warning about it: logging in again rewrites it
        return reason.rstrip(".")
    return None


async def not_logged_in(store: AuthStore, hint: str = LOGIN_HINT) -> int:
    """Say that there is no usable login, where it was looked for, and how to log in."""
    reason = await unusable_login(store)
    if reason is None:
        what = f"not logged in (looked in {where(store)})"
    else:
        what = f"not logged in: {where(store)} holds no usable login ({reason})"
    print(f"aioscopedauth: {what}; {hint}", file=sys.stderr)
    return EXIT_AUTH


async def ready(manager: AuthManager, base: AuthManager) -> bool:
    """Check that ``manager`` has something to send; say why not (once) when it has not.

    A bearer provider's command is run here, so its failure is the error the user sees
    (instead of a log line and a vaguer message); its token is then cached for the request.
    """
    from ._model import AuthMode

    external = manager.external_auth
    if manager is not base and external is not None and external.mode is AuthMode.BEARER:
        return await external.resolve() is not None
    await manager.reload()
    return manager.auth_cached() is not None


def ago(moment: datetime, now: datetime) -> str:
    """``3m 2s ago`` or ``in 4m 1s``."""
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return f"in {span(-seconds)}"
    return f"{span(seconds)} ago"


def span(seconds: int) -> str:
    """A span of time in words: ``2d 3h``, ``4m 1s``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = (
        [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    )
    return " ".join([*parts, f"{secs}s"] if not days else parts)
