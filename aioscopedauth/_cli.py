"""The ``aioscopedauth`` command: status, login, logout, token, refresh, request and the demo.

Exit codes: 0 success, 1 an authentication failure or no usable login (with the library's
message, or the command to log in), 2 a usage error, 130 interrupted. Only ``token`` ever
prints a secret.

The global options (``--home``, ``--config``, ``--provider``, ``--store``, ``-v``) are accepted
before or after the command. Nothing but the standard library is imported until a command runs:
``--version`` and ``--help`` import neither aiohttp nor the demo, and a Ctrl-C during the
imports of a command ends it like any other Ctrl-C.

The rooms: this module parses, dispatches and says the outcome (exit code, held warnings);
``_cli_parser`` builds the parser; ``_cli_support`` holds what every command shares (exit
codes, store, manager, provider); ``_cli_status``, ``_cli_commands`` and ``_cli_request`` hold
the commands.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from ._cli_commands import run_demo, run_login, run_logout, run_refresh, run_token
from ._cli_parser import GLOBAL_DEFAULTS, build_parser
from ._cli_request import run_request
from ._cli_status import run_status
from ._cli_support import EXIT_AUTH, EXIT_INTERRUPTED, EXIT_USAGE, OPENED, SAID, UsageError
from ._errors import AuthError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["build_parser", "main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "status": run_status,
    "login": run_login,
    "logout": run_logout,
    "token": run_token,
    "refresh": run_refresh,
    "request": run_request,
    "demo": run_demo,
}


_WARNING_FORMAT = "aioscopedauth: warning: %(message)s"


class _HeldWarnings(logging.Handler):
    """Holds log records until the command ends, then prints those its message does not repeat.

    Every failure is said once: a library warning that the command's own message repeats (a
    refresh that failed, then the request that could not recover; Redis unreachable, then the
    listener giving up as the command exits) or that is about the file its error is about (the
    mode of an ``auth.json`` that cannot be read) is dropped.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter(_WARNING_FORMAT))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Hold the record."""
        self.records.append(record)

    def flush_except(self, said: Sequence[str]) -> None:
        """Print the held records, except those that repeat something in ``said``."""
        for record in self.records:
            if not repeats(record.getMessage(), said):
                sys.stderr.write(self.format(record) + "\n")
        self.records.clear()
        sys.stderr.flush()


def repeats(message: str, said: Sequence[str]) -> bool:
    """Whether a warning says again what the command said.

    It does when it contains one of ``said``, is contained in one, or shares with one a
    stretch at least half as long as the shorter of the two: the same cause under another
    heading ("Stopped listening: <cause>; reconnecting" after "Could not read the login:
    <cause>").
    """
    from difflib import SequenceMatcher

    for text in said:
        if not text:
            continue
        if text in message or message in text:
            return True
        shorter = min(len(text), len(message))
        match = SequenceMatcher(None, text, message, autojunk=False).find_longest_match()
        if match.size * 2 >= shorter:
            return True
    return False


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


async def _oauth(args: argparse.Namespace) -> None:
    """Find ``--provider NAME`` among this library's OAuth providers; configure it if needed.

    ``status`` only reads the store (offline, no secret); every other command gets the
    provider's configuration, discovered and with its secret, before it starts.
    """
    args.oauth = None
    args.oauth_settings = None
    if args.func == "demo" or not args.provider:
        return
    from ._cli_support import oauth_provider_from

    args.oauth = oauth_provider_from(args)
    if args.oauth is not None and args.func != "status":
        from ._oauth_providers import oauth_config

        args.oauth_settings = await oauth_config(args.oauth)


async def _run(args: argparse.Namespace, held: _HeldWarnings | None) -> int:
    try:
        try:
            await _oauth(args)
            return await _COMMANDS[args.func](args)
        finally:
            while OPENED:
                await OPENED.pop().aclose()
    except UsageError as exc:
        _said(exc)
        print(f"aioscopedauth: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AuthError as exc:
        _said(exc)
        print(f"aioscopedauth: {exc}", file=sys.stderr)
        return EXIT_AUTH
    finally:
        if held is not None:
            held.flush_except(SAID)
        SAID.clear()


def _said(exc: Exception) -> None:
    SAID.append(str(exc))
    path = getattr(exc, "path", None)
    if path is not None:
        # A warning about the same file (its mode) would follow an error that says it cannot
        # be used at all: the error is what to fix, and the save the warning promises is
        # refused anyway.
        SAID.append(str(path))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    # `aioscopedauth --version` is answered by _launch before this module is imported.
    try:
        args = build_parser().parse_args(argv)
        import asyncio

        args.redis_name_given = hasattr(args, "redis_name")
        for name, default in GLOBAL_DEFAULTS.items():
            if not hasattr(args, name):
                setattr(args, name, default)
        if args.redis_url is None:
            args.redis_url = os.environ.get("AIOSCOPEDAUTH_REDIS_URL")
            args.redis_url_from_env = args.redis_url is not None
        held = _logging(args.verbose, hold=args.func != "demo")
        # The command's imports happen inside the event loop: a Ctrl-C there cancels the
        # command like one a second later would, instead of printing a traceback.
        return asyncio.run(_run(args, held))
    except KeyboardInterrupt:
        # A demo that ran says it in its summary (and returns 130 itself): this is a Ctrl-C
        # before a command started, or as it ended.
        print("\naioscopedauth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
