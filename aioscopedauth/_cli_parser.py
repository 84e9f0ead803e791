"""The ``aioscopedauth`` command's argument parser (``_launch.HELP`` is a copy of its help)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from ._cli_support import EXIT_USAGE

_STORES = ("file", "keyring", "auto", "redis")
GLOBAL_DEFAULTS: dict[str, Any] = {
    "home": None,
    "config": None,
    "oauth_config": None,
    "provider": None,
    "store": "file",
    "redis_url": None,  # main() reads $AIOSCOPEDAUTH_REDIS_URL
    "redis_url_from_env": False,
    "redis_name": "default",
    "verbose": 0,
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see --help)`` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


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
        help="use this provider: [oauth_providers.NAME] of the --oauth-config file, else "
        "[model_providers.NAME] of the Codex config",
    )
    group.add_argument(
        "--oauth-config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="this library's own provider file (default: HOME/aioscopedauth.toml)",
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

    login = command(
        "login",
        "log in with an API key read from stdin, or at an OAuth provider (--provider NAME)",
    )
    how = login.add_mutually_exclusive_group()
    how.add_argument(
        "--api-key",
        "--with-api-key",
        dest="api_key",
        action="store_true",
        help="read a key from stdin (--with-api-key is the Codex CLI's spelling)",
    )
    how.add_argument(
        "--device",
        action="store_true",
        help="with --provider: a device login (prints a code to enter in any browser)",
    )
    how.add_argument(
        "--client-credentials",
        action="store_true",
        help="with --provider: a machine login with the client's own secret",
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
        "https://api.openai.com for an API key, or the provider's base URL or api_base_url)",
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
