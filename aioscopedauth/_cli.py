"""The ``aioscopedauth`` command: status, login, logout, token, refresh, request and the demo.

Exit codes: 0 success, 1 an authentication failure or no usable login (with the library's
message, or the command to log in), 2 a usage error, 130 interrupted. Only ``token`` ever
prints a secret.

The global options (``--home``, ``--config``, ``--provider``, ``--store``, ``-v``) are accepted
before or after the command. Nothing but the standard library is imported until a command runs:
``--version`` and ``--help`` import neither aiohttp nor the demo, and a Ctrl-C during the
imports of a command ends it like any other Ctrl-C.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from ._errors import AuthError, ConfigError, describe_login_mode, shown_mode_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from yarl import URL

    from ._config import ProviderInfo
    from ._manager import AuthManager
    from ._model import Auth, AuthMode
    from ._storage import AuthStore

__all__ = ["main"]

EXIT_OK = 0
EXIT_AUTH = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_HTTP_ERROR = 400

LOGIN_HINT = (
    "log in with `aioscopedauth login --api-key` (it reads the key from stdin) or `codex login`"
)
_CANNOT_SEND = (
    "aioscopedauth cannot send requests with this login; use the Codex CLI for it, "
    "or log in with an API key or ChatGPT"
)
_STORES = ("file", "keyring", "auto", "redis")
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "home": None,
    "config": None,
    "provider": None,
    "store": "file",
    "redis_url": None,  # main() reads $AIOSCOPEDAUTH_REDIS_URL
    "redis_name": "default",
    "verbose": 0,
}
# RFC 9110 tokens (methods, header names) and field values (no control character but tab).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_OPENAI_API = "https://api.openai.com"
_CHATGPT = "https://chatgpt.com"


class UsageError(Exception):
    """A usage error found after parsing (a bad URL, method or header): exit 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see --help)`` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def default_home() -> Path:
    """Return ``$CODEX_HOME``, else ``~/.codex`` (where the Codex CLI keeps its login)."""
    env = os.environ.get("CODEX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".codex"


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults: an option given before the command is not reset by the subcommand's
    # parser when it is not repeated after it; main() fills in the real defaults.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the Codex home (default: $CODEX_HOME or ~/.codex)",
    )
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="a Codex config.toml (default: HOME/config.toml)",
    )
    group.add_argument(
        "--provider",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="use this [model_providers.NAME] from the config",
    )
    group.add_argument(
        "--store",
        choices=_STORES,
        default=argparse.SUPPRESS,
        help="where the login is kept: file (HOME/auth.json, the default), keyring, auto "
        "(the keyring, else the file), or redis (--redis-url)",
    )
    group.add_argument(
        "--redis-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the fleet's Redis/Valkey, redis[s]://[user:password@]host:port/db "
        "(default: $AIOSCOPEDAUTH_REDIS_URL); the key, if any, from $AIOSCOPEDAUTH_REDIS_KEY",
    )
    group.add_argument(
        "--redis-name",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="the login's name in Redis (default: default)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more (-vv: debug)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser; each subcommand sets ``func`` to the name of its coroutine.
    """
    common = _global_options()
    parser = _Parser(
        prog="aioscopedauth",
        description="Inspect and use a Codex-compatible login; run the demo.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        found: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],  # type: ignore[list-item]  # typeshed wants the parser's own class
        )
        found.set_defaults(func=name)
        return found

    status = command("status", "show the login, without any secret (exit 1 if none)")
    status.add_argument("--json", action="store_true", help="print JSON")

    login = command("login", "log in with an API key read from stdin")
    login.add_argument(
        "--api-key",
        "--with-api-key",
        dest="api_key",
        action="store_true",
        required=True,
        help="read a key from stdin (--with-api-key is the Codex CLI's spelling)",
    )
    login.add_argument(
        "--force", action="store_true", help="replace an auth.json that cannot be read"
    )

    logout = command("logout", "remove the login")
    logout.add_argument(
        "--force", action="store_true", help="remove an auth.json that cannot be read"
    )
    command("token", "print the current bearer token (a secret!)")
    command("refresh", "force a guarded token refresh (with --provider: run its command)")

    request = command("request", "make one authenticated request")
    request.add_argument("url")
    request.add_argument(
        "-X", "--method", default=None, help="the method (default: GET, or POST with --data)"
    )
    request.add_argument(
        "-H", "--header", action="append", default=[], metavar="HEADER", help="'Name: value'"
    )
    request.add_argument(
        "--data", help="the request body; @FILE streams a file (re-sent after a 401)"
    )
    request.add_argument(
        "--upload-file",
        metavar="FILE",
        help="stream FILE as the body (PUT unless -X says otherwise; re-sent after a 401)",
    )
    request.add_argument(
        "--origin",
        metavar="URL",
        action="append",
        default=[],
        help="also send the login to this origin (default: only the login's own, e.g. "
        "https://api.openai.com for an API key, or the provider's base URL)",
    )

    demo = command("demo", "run the embedded demo on 127.0.0.1")
    demo.add_argument(
        "--agents",
        type=_positive_int,
        default=None,
        help="concurrent agents (50; with --hosts: per host, 8)",
    )
    demo.add_argument("--seconds", type=_positive_float, default=10.0, help="duration (10)")
    demo.add_argument("--seed", type=int, default=None, help="seed the random revocations")
    demo.add_argument(
        "--revoke-every",
        type=_positive_float,
        default=1.5,
        metavar="SECONDS",
        help="mean seconds between random revocations (1.5; they stay at least 1 s apart)",
    )
    demo.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the recovery trace of every failed request to FILE, one JSON object a line",
    )
    demo.add_argument(
        "--hosts",
        type=_positive_int,
        default=None,
        help="run N host processes sharing one login through Redis (--redis-url, else an "
        "embedded server); --agents is then per host (default 8)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"must be a positive whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        msg = f"must be a positive number of seconds, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _home(args: argparse.Namespace) -> Path:
    home = Path(args.home).expanduser() if args.home else default_home()
    if home.exists() and not home.is_dir():
        what = "--home" if args.home else "the Codex home"
        msg = f"{what} {home} is a file; it must be a folder (or not exist yet)"
        raise UsageError(msg)
    return home


_OPENED: list[Any] = []
"""Redis stores this command opened; closed when it ends."""


def _redis_store(args: argparse.Namespace) -> AuthStore:
    from .redis import RedisAuthStore

    if not args.redis_url:
        msg = "--store redis needs --redis-url URL (or $AIOSCOPEDAUTH_REDIS_URL)"
        raise UsageError(msg)
    key_text = os.environ.get("AIOSCOPEDAUTH_REDIS_KEY", "").strip()
    try:
        key = bytes.fromhex(key_text) if key_text else None
    except ValueError:
        msg = "AIOSCOPEDAUTH_REDIS_KEY must be 64 hex digits (32 bytes)"
        raise ConfigError(msg) from None
    store = RedisAuthStore.from_url(args.redis_url, name=args.redis_name, encryption_key=key)
    _OPENED.append(store)
    return store


def _store(args: argparse.Namespace) -> AuthStore:
    from ._storage import AutoAuthStore, FileAuthStore, KeyringAuthStore

    if args.store == "redis":
        return _redis_store(args)
    home = _home(args)
    if args.store == "keyring":
        return KeyringAuthStore(home)
    if args.store == "auto":
        return AutoAuthStore(home)
    return FileAuthStore(home)


def _manager(args: argparse.Namespace) -> AuthManager:
    from ._manager import AuthManager
    from ._oauth import OAuthConfig

    return AuthManager(_store(args), OAuthConfig.codex())


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config).expanduser() if args.config else _home(args) / "config.toml"


def _provider(args: argparse.Namespace) -> ProviderInfo | None:
    if not args.provider:
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


def _for_provider(provider: ProviderInfo | None, base: AuthManager) -> AuthManager:
    if provider is None:
        return base
    from ._config import manager_for_provider

    return manager_for_provider(base, provider)


def _where(store: AuthStore) -> str:
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


def _mode_name(mode: AuthMode) -> str:
    # The on-disk name; an unknown one only when it looks like a name (never a pasted key).
    return shown_mode_name(mode.value) or "unknown"


def _mode_text(mode: AuthMode) -> str:
    from ._model import AuthMode

    text = {
        AuthMode.API_KEY: "an API key",
        AuthMode.CHATGPT: "ChatGPT (managed OAuth tokens)",
        AuthMode.CHATGPT_AUTH_TOKENS: "ChatGPT tokens supplied by a host app",
        AuthMode.BEARER: "a bearer token from a command",
        AuthMode.PERSONAL_ACCESS_TOKEN: "a personal access token",
    }.get(mode)
    return text if text is not None else describe_login_mode(mode.value)


def _ago(moment: datetime, now: datetime) -> str:
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = (
        [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    )
    return " ".join([*parts, f"{secs}s"] if not days else parts)


def _store_facts(store: AuthStore) -> dict[str, Any]:
    from ._storage import AutoAuthStore, FileAuthStore, KeyringAuthStore

    facts: dict[str, Any] = {"store": store.kind}
    if isinstance(store, FileAuthStore | KeyringAuthStore | AutoAuthStore):
        facts["home"] = str(store.home)
    if isinstance(store, FileAuthStore):
        facts["path"] = str(store.path)
    if store.kind == "redis":
        facts["redis"] = getattr(store, "where", None)
        facts["name"] = getattr(store, "name", None)
    facts["where"] = _where(store)
    return facts


def _status_facts(store: AuthStore, auth: Auth | None) -> dict[str, Any]:
    from ._errors import AuthDataError
    from ._jwt import jwt_expiration
    from ._model import format_rfc3339
    from ._storage import FileAuthStore

    now = datetime.now(UTC)
    facts: dict[str, Any] = {"logged_in": auth is not None, **_store_facts(store)}
    warnings: list[str] = []
    if isinstance(store, FileAuthStore):
        try:
            mode = stat.S_IMODE(store.path.stat().st_mode)
        except OSError:
            mode = None
        if mode is not None and mode & 0o077:
            warnings.append(
                f"{store.path} can be read by other users (mode {mode:04o}); run chmod 600"
            )
    if auth is None:
        facts["hint"] = LOGIN_HINT
    else:
        facts["mode"] = _mode_name(auth.mode)
        facts["supported"] = auth.mode.can_send
        if not auth.mode.can_send:
            facts["note"] = _CANNOT_SEND
        facts["account_id"] = auth.account_id
        facts["email"] = auth.email
        facts["plan"] = None if auth.plan_type is None else str(auth.plan_type)
        data = auth.data
        if data is not None and data.tokens is not None:
            try:
                expiry = jwt_expiration(data.tokens.access_token)
            except AuthDataError:
                expiry = None
            facts["access_token_expires"] = None if expiry is None else format_rfc3339(expiry)
            facts["access_token_seconds_left"] = (
                None if expiry is None else int((expiry - now).total_seconds())
            )
        if data is not None and data.last_refresh is not None:
            facts["last_refresh"] = format_rfc3339(data.last_refresh)
    facts["warnings"] = warnings
    return facts


def _provider_facts(provider: ProviderInfo) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "id": provider.id,
        "name": provider.name,
        "base_url": provider.base_url,
    }
    if provider.auth is not None:
        command = provider.auth
        # Only the program: arguments often carry secrets (a client secret, a token file).
        facts["command"] = command.command
        facts["args_count"] = len(command.args)
        facts["cwd"] = None if command.cwd is None else str(command.cwd)
        facts["timeout_seconds"] = command.timeout
        facts["refresh_interval_seconds"] = command.refresh_interval
    return facts


async def _status(args: argparse.Namespace) -> int:
    provider = _provider(args)
    async with _manager(args) as manager:
        try:
            await manager.reload()
        except AuthError as exc:
            if not args.json:
                raise
            # Scripts read stdout: the failure is a JSON object there too.
            facts = {"logged_in": False, **_store_facts(manager.store), "error": str(exc)}
            print(json.dumps(facts, indent=2))
            return EXIT_AUTH
        auth = manager.auth_cached()
        facts = _status_facts(manager.store, auth)
    if provider is not None:
        facts["provider"] = _provider_facts(provider)
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        # The permission warning is not printed here: the store logs it, once.
        _print_login(facts, auth)
        if provider is not None:
            _print_provider(facts["provider"])
    # A provider with a token command needs no stored login.
    usable = auth is not None or (provider is not None and provider.auth is not None)
    return EXIT_OK if usable else EXIT_AUTH


def _print_login(facts: dict[str, Any], auth: Auth | None) -> None:
    if auth is None:
        print(f"Not logged in (looked in {facts['where']}).")
        print(f"  To {LOGIN_HINT}.")
        return
    now = datetime.now(UTC)
    print(f"Logged in with {_mode_text(auth.mode)}")
    if not auth.mode.can_send:
        print(f"  {_CANNOT_SEND}.")
    rows: list[tuple[str, str]] = [("store", f"{facts['store']}: {facts['where']}")]
    for key, label in (("account_id", "account"), ("email", "email"), ("plan", "plan")):
        if facts.get(key):
            rows.append((label, str(facts[key])))
    if facts.get("access_token_expires"):
        expiry = datetime.fromisoformat(facts["access_token_expires"])
        state = "expired " if expiry <= now else "expires "
        rows.append(
            ("access token", f"{state}{facts['access_token_expires']} ({_ago(expiry, now)})")
        )
    if facts.get("last_refresh"):
        refreshed = datetime.fromisoformat(facts["last_refresh"])
        rows.append(("last refresh", f"{facts['last_refresh']} ({_ago(refreshed, now)})"))
    for label, value in rows:
        print(f"  {label:<13} {value}")


def _print_provider(provider: dict[str, Any]) -> None:
    print(f"Provider {provider['id']} ({provider['name']})")
    if provider.get("args_count"):
        count = provider["args_count"]
        shown = f"{provider['command']} (+ {count} argument{'s' * (count > 1)}, not shown)"
        provider = {**provider, "command": shown}
    labels = (
        ("base_url", "base URL"),
        ("command", "command"),
        ("cwd", "cwd"),
        ("timeout_seconds", "timeout (s)"),
        ("refresh_interval_seconds", "refresh (s)"),
    )
    for key, label in labels:
        if provider.get(key) is not None:
            print(f"  {label:<13} {provider[key]}")


class _RefusedError(AuthError):
    """A command refused to run; its message says why and what to do."""


async def _refuse_unreadable(store: AuthStore, *, force: bool, flag_does: str) -> None:
    """Refuse to overwrite or remove a file that cannot be read, unless ``--force``.

    Only a file that is there and unreadable (corrupt, a bad mode, not a regular file): an
    unavailable keyring is not a reason to refuse, the save then says what failed.
    """
    from ._errors import AuthDataError, StorageError

    if force:
        return
    try:
        await store.load()
    except (AuthDataError, StorageError) as exc:
        if isinstance(exc, StorageError) and exc.path is None:
            return
        msg = f"{exc} (`--force` {flag_does}.)"
        raise _RefusedError(msg) from None


def _read_key() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("API key: ")
    raw = sys.stdin.buffer.readline()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised below, outside the handler: the decode error holds the key's bytes
    msg = "The API key read from stdin is not UTF-8 text; paste only the key."
    raise ConfigError(msg)


async def _login(args: argparse.Namespace) -> int:
    async with _manager(args) as manager:
        store = manager.store
        # Before the key is asked for: a corrupt file is said first, and never overwritten.
        await _refuse_unreadable(store, force=args.force, flag_does="replaces it")
        import asyncio

        key = await asyncio.to_thread(_read_key)
        await manager.login_with_api_key(key)
    print(f"Logged in with an API key (saved to {_saved_where(store)}).")
    return EXIT_OK


def _saved_where(store: AuthStore) -> str:
    from ._storage import AutoAuthStore

    if isinstance(store, AutoAuthStore):
        path = store.home / "auth.json"
        return str(path) if path.exists() else "the system keyring"
    return _where(store)


async def _logout(args: argparse.Namespace) -> int:
    async with _manager(args) as manager:
        await _refuse_unreadable(manager.store, force=args.force, flag_does="removes it")
        removed = await manager.logout()
    print("Logged out." if removed else "Not logged in; nothing to remove.")
    return EXIT_OK


def _not_logged_in(store: AuthStore) -> int:
    print(
        f"aioscopedauth: not logged in (looked in {_where(store)}); {LOGIN_HINT}",
        file=sys.stderr,
    )
    return EXIT_AUTH


async def _ready(manager: AuthManager, base: AuthManager) -> bool:
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


async def _token(args: argparse.Namespace) -> int:
    provider = _provider(args)
    async with _manager(args) as base:
        manager = _for_provider(provider, base)
        if not await _ready(manager, base):
            if manager is not base:
                print(
                    f"aioscopedauth: no token: the command of provider {args.provider!r} "
                    "printed none",
                    file=sys.stderr,
                )
                return EXIT_AUTH
            return _not_logged_in(base.store)
        auth = await manager.auth()
    if auth is None:
        print("aioscopedauth: no token", file=sys.stderr)
        return EXIT_AUTH
    sys.stdout.write(auth.token + "\n")
    return EXIT_OK


async def _refresh(args: argparse.Namespace) -> int:
    provider = _provider(args)
    async with _manager(args) as base:
        manager = _for_provider(provider, base)
        if manager is not base:
            # A provider with a token command: its bearer is what gets refreshed.
            await manager.refresh_external_auth()
            print(f"Ran the command of provider {args.provider!r}: it printed a new token.")
            return EXIT_OK
        await manager.reload()
        before = manager.auth_cached()
        if before is None:
            return _not_logged_in(manager.store)
        if not before.mode.is_chatgpt:
            print(f"Logged in with {_mode_text(before.mode)}: nothing to refresh.")
            return EXIT_OK
        async with manager.changes() as changes:
            await manager.refresh_token()
            reasons = []
            while not changes.empty():
                reasons.append((await anext(changes)).reason)
        after = manager.auth_cached()
    facts = _status_facts(manager.store, after)
    expiry = facts.get("access_token_expires") or "unknown"
    if "refresh" in reasons:
        how = "Refreshed at the token endpoint"
    else:
        how = "Adopted newer tokens another process had saved (no refresh token spent)"
    print(f"{how}: the access token now expires {expiry}.")
    return EXIT_OK


def _parse_url(text: str) -> URL:
    from yarl import URL

    try:
        url = URL(text)
        host = url.host
    except (ValueError, TypeError):
        host, url = None, None
    if url is None or url.scheme not in {"http", "https"} or not host:
        msg = f"the URL must be an absolute http:// or https:// URL, got {text!r}"
        raise UsageError(msg)
    return url


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header in values:
        name, sep, value = header.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN.fullmatch(name):
            msg = f"a header must look like 'Name: value', got {header!r}"
            raise UsageError(msg)
        if _BAD_VALUE_CHAR.search(value):
            msg = f"the value of header {name!r} contains a line break or a control character"
            raise UsageError(msg)
        headers[name] = value
    return headers


def _login_origins(auth: Auth | None, provider: ProviderInfo | None) -> set[str]:
    """The origins a login belongs to: where Codex itself would send it."""
    from yarl import URL

    from ._model import AuthMode

    if provider is not None and provider.base_url:
        try:
            return {str(URL(provider.base_url).origin())}
        except ValueError:
            return set()
    if auth is None:
        return set()
    if auth.mode.is_chatgpt or auth.mode is AuthMode.PERSONAL_ACCESS_TOKEN:
        return {_CHATGPT}
    base_url = os.environ.get("OPENAI_BASE_URL")
    if base_url:
        try:
            return {str(URL(base_url).origin())}
        except ValueError:
            pass
    return {_OPENAI_API}


async def _request(args: argparse.Namespace) -> int:
    url = _parse_url(args.url)
    headers = _parse_headers(args.header)
    if args.data is not None and args.upload_file is not None:
        msg = "give the body once: --data or --upload-file, not both"
        raise UsageError(msg)
    default = "PUT" if args.upload_file is not None else "POST" if args.data is not None else "GET"
    method = args.method or default
    if not _TOKEN.fullmatch(method):
        msg = f"the method must be one word such as GET or POST, got {method!r}"
        raise UsageError(msg)
    extra = {str(_parse_url(origin).origin()) for origin in args.origin}
    provider = _provider(args)

    import aiohttp

    from ._body import FileBody
    from ._middleware import AuthMiddleware

    data: str | FileBody | None = args.data
    path = args.upload_file or (args.data[1:] if args.data and args.data.startswith("@") else None)
    if path is not None:
        try:
            # Streamed from disk and opened anew for each send, so a 401 can be recovered.
            data = FileBody(path)
        except (OSError, ValueError) as exc:
            msg = f"cannot send {path} as the body: {exc}"
            raise UsageError(msg) from None

    async with _manager(args) as base:
        manager = _for_provider(provider, base)
        if not await _ready(manager, base):
            return _not_logged_in(base.store)
        # Raises for a login this library cannot send with, before any scope is decided.
        origins = _login_origins(await manager.auth(), provider) | extra
        target = str(url.origin())
        if target not in origins:
            mine = ", ".join(sorted(origins)) or "none"
            msg = (
                f"refusing to send the login to {target}: it is not one of the login's "
                f"origins ({mine}); pass --origin {target} to allow it"
            )
            raise UsageError(msg)
        middleware = AuthMiddleware(manager, origins=sorted(origins))
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            try:
                async with session.request(method, url, headers=headers, data=data) as response:
                    body = await response.read()
                    status, reason = response.status, response.reason
            except aiohttp.ClientError as exc:
                print(
                    f"aioscopedauth: request failed: {type(exc).__name__}: {exc}", file=sys.stderr
                )
                return EXIT_AUTH
    print(f"HTTP {status} {reason or ''}".rstrip(), file=sys.stderr)
    sys.stdout.buffer.write(body)
    if body and not body.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return EXIT_OK if status < _HTTP_ERROR else EXIT_AUTH


async def _demo(args: argparse.Namespace) -> int:
    if args.hosts is not None and args.record is not None:
        msg = "--record traces the single-host demo only: drop --hosts or --record"
        raise ConfigError(msg)
    if args.hosts is not None:
        from ._fleet_demo import FleetDemoConfig, run_fleet_demo

        fleet = FleetDemoConfig(
            hosts=args.hosts,
            agents=args.agents or 8,
            seconds=args.seconds,
            redis_url=args.redis_url,
            seed=args.seed,
        )
        return EXIT_OK if (await run_fleet_demo(fleet)).passed else EXIT_AUTH
    from ._demo import DemoConfig, run_demo

    result = await run_demo(
        DemoConfig(
            agents=args.agents or 50,
            seconds=args.seconds,
            revoke_every=args.revoke_every,
            seed=args.seed,
            record=args.record,
        )
    )
    return EXIT_OK if result.passed else EXIT_AUTH


_COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "status": _status,
    "login": _login,
    "logout": _logout,
    "token": _token,
    "refresh": _refresh,
    "request": _request,
    "demo": _demo,
}


_WARNING_FORMAT = "aioscopedauth: warning: %(message)s"


class _HeldWarnings(logging.Handler):
    """Holds log records until the command ends, then prints those its error does not repeat.

    Every failure is said once: a library warning that the command's final error repeats (a
    refresh that failed, then the request that could not recover) is dropped.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter(_WARNING_FORMAT))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Hold the record."""
        self.records.append(record)

    def flush_except(self, error: str | None) -> None:
        """Print the held records, except those that say the same as ``error``."""
        for record in self.records:
            message = record.getMessage()
            if error is not None and (error in message or message in error):
                continue
            sys.stderr.write(self.format(record) + "\n")
        self.records.clear()
        sys.stderr.flush()


def _logging(verbose: int, *, hold: bool) -> _HeldWarnings | None:
    root = logging.getLogger()
    if verbose or not hold:
        # -v and -vv ask for the log as it happens (and the demo shows warnings live).
        level = logging.WARNING - 10 * min(verbose, 2)
        fmt = "%(levelname)s %(name)s: %(message)s" if verbose else _WARNING_FORMAT
        logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
        return None
    held = _HeldWarnings()
    root.addHandler(held)
    root.setLevel(logging.WARNING)
    return held


async def _run(args: argparse.Namespace, held: _HeldWarnings | None) -> int:
    error: str | None = None
    try:
        try:
            return await _COMMANDS[args.func](args)
        finally:
            while _OPENED:
                await _OPENED.pop().aclose()
    except UsageError as exc:
        error = str(exc)
        print(f"aioscopedauth: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AuthError as exc:
        error = str(exc)
        print(f"aioscopedauth: {exc}", file=sys.stderr)
        return EXIT_AUTH
    finally:
        if held is not None:
            held.flush_except(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    # `aioscopedauth --version` is answered by _launch before this module is imported.
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        import asyncio

        for name, default in _GLOBAL_DEFAULTS.items():
            if not hasattr(args, name):
                setattr(args, name, default)
        if args.redis_url is None:
            args.redis_url = os.environ.get("AIOSCOPEDAUTH_REDIS_URL")
        held = _logging(args.verbose, hold=args.func != "demo")
        # The command's imports happen inside the event loop: a Ctrl-C there cancels the
        # command like one a second later would, instead of printing a traceback.
        return asyncio.run(_run(args, held))
    except KeyboardInterrupt:
        if args is None or args.func != "demo":  # the demo prints its own summary
            print("\naioscopedauth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
