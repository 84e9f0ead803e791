"""The ``aioscopedauth`` command: status, login, logout, token, refresh, request and the demo.

Exit codes: 0 success, 1 an authentication failure (with the library's message), 2 a usage
error. Only ``token`` ever prints a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
from yarl import URL

from . import __version__
from ._config import ProviderInfo, load_providers, manager_for_provider
from ._demo import DemoConfig, run_demo
from ._errors import (
    AuthDataError,
    AuthError,
    ConfigError,
    describe_login_mode,
    shown_mode_name,
)
from ._fleet_demo import FleetDemoConfig, run_fleet_demo
from ._jwt import jwt_expiration
from ._manager import AuthManager
from ._middleware import AuthMiddleware
from ._model import Auth, AuthMode, format_rfc3339
from ._oauth import OAuthConfig
from ._storage import AutoAuthStore, FileAuthStore, KeyringAuthStore
from .redis import RedisAuthStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ._storage import AuthStore

__all__ = ["main"]

EXIT_OK = 0
EXIT_AUTH = 1
EXIT_USAGE = 2
_HTTP_ERROR = 400

_MODE_TEXT = {
    AuthMode.API_KEY: "an API key",
    AuthMode.CHATGPT: "ChatGPT (managed OAuth tokens)",
    AuthMode.CHATGPT_AUTH_TOKENS: "ChatGPT tokens supplied by a host app",
    AuthMode.BEARER: "a bearer token from a command",
    AuthMode.PERSONAL_ACCESS_TOKEN: "a personal access token",
}
_CANNOT_SEND = (
    "aioscopedauth cannot send requests with this login; use the Codex CLI for it, "
    "or log in with an API key or ChatGPT"
)


def _mode_name(mode: AuthMode) -> str:
    # The on-disk name; an unknown one only when it looks like a name (never a pasted key).
    return shown_mode_name(mode.value) or "unknown"


def _mode_text(mode: AuthMode) -> str:
    text = _MODE_TEXT.get(mode)
    if text is not None:
        return text
    return describe_login_mode(mode.value)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``aioscopedauth: error: <message>`` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def default_home() -> Path:
    """Return ``$CODEX_HOME``, else ``~/.codex`` (where the Codex CLI keeps its login)."""
    env = os.environ.get("CODEX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".codex"


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser; each subcommand sets ``func``.
    """
    parser = _Parser(
        prog="aioscopedauth",
        description="Inspect and use a Codex-compatible login; run the demo.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--home", type=Path, help="the Codex home (default: $CODEX_HOME or ~/.codex)"
    )
    parser.add_argument(
        "--config", type=Path, help="a Codex config.toml (default: HOME/config.toml)"
    )
    parser.add_argument("--provider", help="use this [model_providers.NAME] from the config")
    parser.add_argument(
        "--store",
        choices=("file", "keyring", "auto", "redis"),
        default="file",
        help="where the login is kept (default: file, HOME/auth.json; redis: --redis-url)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("AIOSCOPEDAUTH_REDIS_URL"),
        help="the fleet's Redis/Valkey, redis[s]://[user:password@]host:port/db "
        "(default: $AIOSCOPEDAUTH_REDIS_URL); the key, if any, from $AIOSCOPEDAUTH_REDIS_KEY",
    )
    parser.add_argument(
        "--redis-name", default="default", help="the login's name in Redis (default: default)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    status = sub.add_parser("status", help="show the login, without any secret")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    login = sub.add_parser("login", help="log in (an API key read from stdin)")
    login.add_argument(
        "--api-key", action="store_true", required=True, help="read a key from stdin"
    )
    login.set_defaults(func=_login)

    sub.add_parser("logout", help="remove the login").set_defaults(func=_logout)
    sub.add_parser("token", help="print the current bearer token (a secret!)").set_defaults(
        func=_token
    )
    sub.add_parser("refresh", help="force a guarded token refresh").set_defaults(func=_refresh)

    request = sub.add_parser("request", help="make one authenticated request")
    request.add_argument("url")
    request.add_argument(
        "-X", "--method", default=None, help="the method (default: GET, or POST with --data)"
    )
    request.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    request.add_argument("--data", help="the request body")
    request.set_defaults(func=_request)

    demo = sub.add_parser("demo", help="run the embedded demo on 127.0.0.1")
    demo.add_argument(
        "--agents",
        type=_positive_int,
        default=None,
        help="concurrent agents (50; with --hosts: per host, 8)",
    )
    demo.add_argument("--seconds", type=_positive_float, default=10.0, help="duration (10)")
    demo.add_argument("--seed", type=int, default=None, help="seed the random revocations")
    demo.add_argument(
        "--hosts",
        type=_positive_int,
        default=None,
        help="run N host processes sharing one login through Redis (--redis-url, else an "
        "embedded server); --agents is then per host (default 8)",
    )
    demo.set_defaults(func=_demo)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        msg = "must be a positive integer"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = "must be a positive number"
        raise argparse.ArgumentTypeError(msg)
    return value


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home).expanduser() if args.home else default_home()


_OPENED: list[RedisAuthStore] = []
"""Redis stores this command opened; closed when it ends."""


def _redis_store(args: argparse.Namespace) -> RedisAuthStore:
    if not args.redis_url:
        msg = "--store redis needs --redis-url URL (or $AIOSCOPEDAUTH_REDIS_URL)"
        raise ConfigError(msg)
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
    if args.store == "redis":
        return _redis_store(args)
    home = _home(args)
    if args.store == "keyring":
        return KeyringAuthStore(home)
    if args.store == "auto":
        return AutoAuthStore(home)
    return FileAuthStore(home)


def _manager(args: argparse.Namespace) -> AuthManager:
    return AuthManager(_store(args), OAuthConfig.codex())


def _provider(config: Path, name: str) -> ProviderInfo:
    providers = load_providers(config)
    provider = providers.get(name)
    if provider is None:
        known = ", ".join(sorted(providers)) or "none"
        msg = f"No provider {name!r} in {config} (known: {known})"
        raise ConfigError(msg)
    return provider


def _for_provider(args: argparse.Namespace, base: AuthManager) -> AuthManager:
    if not args.provider:
        return base
    config = Path(args.config).expanduser() if args.config else _home(args) / "config.toml"
    return manager_for_provider(base, _provider(config, args.provider))


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


def _redis_facts(store: AuthStore) -> dict[str, Any]:
    if isinstance(store, RedisAuthStore):
        return {"redis": store.where, "name": store.name}
    return {}


def _status_facts(store: AuthStore, auth: Auth | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    facts: dict[str, Any] = {"logged_in": auth is not None, "store": store.kind}
    warnings: list[str] = []
    if isinstance(store, FileAuthStore | KeyringAuthStore | AutoAuthStore):
        facts["home"] = str(store.home)
    facts.update(_redis_facts(store))
    if isinstance(store, FileAuthStore):
        facts["path"] = str(store.path)
        try:
            mode = stat.S_IMODE(store.path.stat().st_mode)
        except OSError:
            mode = None
        if mode is not None and mode & 0o077:
            warnings.append(
                f"{store.path} can be read by other users (mode {mode:04o}); run chmod 600"
            )
    if auth is not None:
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


def _provider_facts(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.provider:
        return None
    config = Path(args.config).expanduser() if args.config else _home(args) / "config.toml"
    provider = _provider(config, args.provider)
    facts: dict[str, Any] = {
        "id": provider.id,
        "name": provider.name,
        "base_url": provider.base_url,
    }
    if provider.auth is not None:
        command = provider.auth
        facts["command"] = " ".join([command.command, *command.args])
        facts["cwd"] = None if command.cwd is None else str(command.cwd)
        facts["timeout_seconds"] = command.timeout
        facts["refresh_interval_seconds"] = command.refresh_interval
    return facts


async def _status(args: argparse.Namespace) -> int:
    async with _manager(args) as manager:
        await manager.reload()
        auth = manager.auth_cached()
        facts = _status_facts(manager.store, auth)
    provider = _provider_facts(args)
    if provider is not None:
        facts["provider"] = provider
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        _print_login(facts, auth)
        if provider is not None:
            _print_provider(provider)
    for warning in facts["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _print_login(facts: dict[str, Any], auth: Auth | None) -> None:
    where = facts.get("path") or f"{facts['store']} ({facts.get('home', '')})"
    if "redis" in facts:
        where = f"{facts['redis']}, name {facts['name']}"
    if auth is None:
        print(f"Not logged in (looked in {where}).")
        return
    now = datetime.now(UTC)
    print(f"Logged in with {_mode_text(auth.mode)}")
    if not auth.mode.can_send:
        print(f"  {_CANNOT_SEND}.")
    rows: list[tuple[str, str]] = [("store", f"{facts['store']}: {where}")]
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


def _read_key() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("API key: ")
    return sys.stdin.readline()


async def _login(args: argparse.Namespace) -> int:
    key = await asyncio.to_thread(_read_key)
    async with _manager(args) as manager:
        await manager.login_with_api_key(key)
        store = manager.store
    where = store.path if isinstance(store, FileAuthStore) else store.kind
    print(f"Logged in with an API key (saved to {where}).")
    return EXIT_OK


async def _logout(args: argparse.Namespace) -> int:
    async with _manager(args) as manager:
        removed = await manager.logout()
    print("Logged out." if removed else "Not logged in; nothing to remove.")
    return EXIT_OK


async def _token(args: argparse.Namespace) -> int:
    async with _manager(args) as base:
        manager = _for_provider(args, base)
        auth = await manager.auth()
    if auth is None:
        what = (
            f"the command of provider {args.provider!r} failed (run with -v)"
            if args.provider
            else "not logged in"
        )
        print(f"aioscopedauth: no token: {what}", file=sys.stderr)
        return EXIT_AUTH
    sys.stdout.write(auth.token + "\n")
    return EXIT_OK


async def _refresh(args: argparse.Namespace) -> int:
    async with _manager(args) as manager:
        await manager.reload()
        before = manager.auth_cached()
        if before is None:
            print("aioscopedauth: not logged in; nothing to refresh", file=sys.stderr)
            return EXIT_AUTH
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


async def _request(args: argparse.Namespace) -> int:
    url = URL(args.url)
    if not url.absolute:
        msg = f"the URL must be absolute, got {args.url!r}"
        raise ConfigError(msg)
    headers: dict[str, str] = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            msg = f"a header must look like 'Name: value', got {header!r}"
            raise ConfigError(msg)
        headers[name.strip()] = value.strip()
    method = args.method or ("POST" if args.data is not None else "GET")
    async with _manager(args) as base:
        manager = _for_provider(args, base)
        middleware = AuthMiddleware(manager, origins=[url.origin()])
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            try:
                async with session.request(
                    method, url, headers=headers, data=args.data
                ) as response:
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
    if args.hosts is not None:
        fleet = FleetDemoConfig(
            hosts=args.hosts,
            agents=args.agents or 8,
            seconds=args.seconds,
            redis_url=args.redis_url,
            seed=args.seed,
        )
        return EXIT_OK if (await run_fleet_demo(fleet)).passed else EXIT_AUTH
    result = await run_demo(
        DemoConfig(agents=args.agents or 50, seconds=args.seconds, seed=args.seed)
    )
    return EXIT_OK if result.passed else EXIT_AUTH


async def _closing(func: Callable[[argparse.Namespace], Awaitable[int]], args: Any) -> int:  # noqa: ANN401 -- argparse's namespace
    try:
        return await func(args)
    finally:
        while _OPENED:
            await _OPENED.pop().aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    func: Callable[[argparse.Namespace], Awaitable[int]] = args.func
    try:
        return asyncio.run(_closing(func, args))
    except AuthError as exc:
        print(f"aioscopedauth: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:
        return 130
