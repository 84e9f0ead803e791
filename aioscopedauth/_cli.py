"""The ``aioscopedauth`` command: status, login, logout, token, refresh, request and the demo.

Exit codes: 0 success, 1 an authentication failure (with the library's message), 2 a usage
error. Only ``token`` ever prints a secret.

``--version`` and ``--help`` import neither aiohttp nor the demo: the modules a command needs
are imported inside it (issue 13's fast start; ``tests/test_startup.py`` checks it).
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

from . import __version__
from ._errors import (
    AuthDataError,
    AuthError,
    ConfigError,
    describe_login_mode,
    shown_mode_name,
)

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing slows --version
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import datetime
    from pathlib import Path
    from typing import Any, NoReturn

    from ._config import ProviderInfo
    from ._manager import AuthManager
    from ._model import Auth, AuthMode
    from ._storage import AuthStore

__all__ = ["main"]

EXIT_OK = 0
EXIT_AUTH = 1
EXIT_USAGE = 2
_HTTP_ERROR = 400

_MODE_TEXT = {
    "apikey": "an API key",
    "chatgpt": "ChatGPT (managed OAuth tokens)",
    "chatgptAuthTokens": "ChatGPT tokens supplied by a host app",
    "bearer": "a bearer token from a command",
    "personalAccessToken": "a personal access token",
}
"""By ``AuthMode`` value (values, not members: the CLI imports the model only when it runs)."""
_CANNOT_SEND = (
    "aioscopedauth cannot send requests with this login; use the Codex CLI for it, "
    "or log in with an API key or ChatGPT"
)


def _mode_name(mode: AuthMode) -> str:
    # The on-disk name; an unknown one only when it looks like a name (never a pasted key).
    return shown_mode_name(mode.value) or "unknown"


def _mode_text(mode: AuthMode) -> str:
    text = _MODE_TEXT.get(mode.value)
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
    from pathlib import Path  # noqa: PLC0415 -- fast --help

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
        "--home", type=_path, help="the Codex home (default: $CODEX_HOME or ~/.codex)"
    )
    parser.add_argument(
        "--config", type=_path, help="a Codex config.toml (default: HOME/config.toml)"
    )
    parser.add_argument("--provider", help="use this [model_providers.NAME] from the config")
    parser.add_argument(
        "--store",
        choices=("file", "keyring", "auto"),
        default="file",
        help="where the login is kept (default: file, HOME/auth.json)",
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
    demo.add_argument("--agents", type=_positive_int, default=50, help="concurrent agents (50)")
    demo.add_argument("--seconds", type=_positive_float, default=10.0, help="duration (10)")
    demo.add_argument("--seed", type=int, default=None, help="seed the random revocations")
    demo.set_defaults(func=_demo)
    return parser


def _path(text: str) -> Path:
    from pathlib import Path  # noqa: PLC0415 -- fast --help

    return Path(text)


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
    from pathlib import Path  # noqa: PLC0415 -- fast --help

    return Path(args.home).expanduser() if args.home else default_home()


def _store(args: argparse.Namespace) -> AuthStore:
    from ._storage import AutoAuthStore, FileAuthStore, KeyringAuthStore  # noqa: PLC0415 -- fast --help

    home = _home(args)
    if args.store == "keyring":
        return KeyringAuthStore(home)
    if args.store == "auto":
        return AutoAuthStore(home)
    return FileAuthStore(home)


def _manager(args: argparse.Namespace) -> AuthManager:
    from ._manager import AuthManager  # noqa: PLC0415 -- fast --help
    from ._oauth import OAuthConfig  # noqa: PLC0415 -- fast --help

    return AuthManager(_store(args), OAuthConfig.codex())


def _provider(config: Path, name: str) -> ProviderInfo:
    from ._config import load_providers  # noqa: PLC0415 -- fast --help

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
    from ._config import manager_for_provider  # noqa: PLC0415 -- fast --help

    config = _path(args.config).expanduser() if args.config else _home(args) / "config.toml"
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


def _status_facts(store: AuthStore, auth: Auth | None) -> dict[str, Any]:
    from datetime import UTC, datetime  # noqa: PLC0415 -- fast --help

    from ._jwt import jwt_expiration  # noqa: PLC0415 -- fast --help
    from ._model import format_rfc3339  # noqa: PLC0415 -- fast --help
    from ._storage import AutoAuthStore, FileAuthStore, KeyringAuthStore  # noqa: PLC0415 -- fast --help

    now = datetime.now(UTC)
    facts: dict[str, Any] = {"logged_in": auth is not None, "store": store.kind}
    warnings: list[str] = []
    if isinstance(store, FileAuthStore | KeyringAuthStore | AutoAuthStore):
        facts["home"] = str(store.home)
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
    config = _path(args.config).expanduser() if args.config else _home(args) / "config.toml"
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
        import json  # noqa: PLC0415 -- fast --help

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
    if auth is None:
        print(f"Not logged in (looked in {where}).")
        return
    from datetime import UTC, datetime  # noqa: PLC0415 -- fast --help

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
    import getpass  # noqa: PLC0415 -- fast --help

    if sys.stdin.isatty():
        return getpass.getpass("API key: ")
    return sys.stdin.readline()


async def _login(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 -- fast --help

    from ._storage import FileAuthStore  # noqa: PLC0415 -- fast --help

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
    import aiohttp  # noqa: PLC0415 -- fast --help
    from yarl import URL  # noqa: PLC0415 -- fast --help

    from ._middleware import AuthMiddleware  # noqa: PLC0415 -- fast --help

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
    from ._demo import DemoConfig, run_demo  # noqa: PLC0415 -- fast --help

    result = await run_demo(DemoConfig(agents=args.agents, seconds=args.seconds, seed=args.seed))
    return EXIT_OK if result.passed else EXIT_AUTH


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    if (sys.argv[1:] if argv is None else list(argv)) == ["--version"]:
        # Answered before the parser is built (a third of the start-up time): issue 13.
        print(f"aioscopedauth {__version__}")
        return EXIT_OK
    args = build_parser().parse_args(argv)
    import asyncio  # noqa: PLC0415 -- fast --help and --version: parsing exits before this
    import logging  # noqa: PLC0415 -- same

    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    func: Callable[[argparse.Namespace], Awaitable[int]] = args.func
    try:
        return asyncio.run(func(args))  # type: ignore[arg-type]
    except AuthError as exc:
        print(f"aioscopedauth: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:
        return 130
