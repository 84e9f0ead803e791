"""The ``aioscopedauth`` command's entry point, kept apart so ``--version`` starts fast.

The command line itself (``_cli``) imports argparse, logging, json, pathlib and more: about
four times the instructions of the interpreter's own start (argparse alone, with the ``re``
it needs, doubles it). ``--version`` and the top-level ``--help`` need none of that.
"""

import os
import sys

HELP = """\
usage: aioscopedauth [-h] [--home DIR] [--config FILE] [--provider NAME]
                     [--oauth-config FILE] [--store {file,keyring,auto,redis}]
                     [--redis-url URL] [--redis-name NAME] [-v] [--version]
                     COMMAND ...

Inspect and use a Codex-compatible login; run the demo.

positional arguments:
  COMMAND
    status              show the login, without any secret (exit 1 if none)
    login               log in with an API key read from stdin, or at an OAuth
                        provider (--provider NAME)
    logout              remove the login
    token               print the current bearer token (a secret!)
    refresh             force a guarded token refresh (with --provider: run
                        its command)
    request             make one authenticated request
    demo                run the embedded demo on 127.0.0.1

options:
  -h, --help            show this help message and exit
  --version             show program's version number and exit

global options (before or after the command):
  --home DIR            the Codex home (default: $CODEX_HOME or ~/.codex)
  --config FILE         a Codex config.toml (default: HOME/config.toml)
  --provider NAME       use this provider: [oauth_providers.NAME] of the
                        --oauth-config file, else [model_providers.NAME] of
                        the Codex config
  --oauth-config FILE   this library's own provider file (default:
                        HOME/aioscopedauth.toml)
  --store {file,keyring,auto,redis}
                        where the login is kept: file (HOME/auth.json, the
                        default), keyring, auto (the keyring, else the file),
                        or redis (--redis-url)
  --redis-url URL       the fleet's Redis/Valkey,
                        redis[s]://[user:password@]host:port/db (default:
                        $AIOSCOPEDAUTH_REDIS_URL); the key, if any, from
                        $AIOSCOPEDAUTH_REDIS_KEY
  --redis-name NAME     the login's name in Redis (default: default)
  -v, --verbose         log more (-vv: debug)
"""
"""``aioscopedauth --help`` as argparse formats it at 80 columns (a test keeps it so)."""


_HELP_COLUMNS = 80


def _columns() -> int:
    """The width argparse would wrap to, plus 2 (its rule: ``$COLUMNS``, the terminal, 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return _HELP_COLUMNS


def main() -> int:
    """Answer ``--version`` and ``--help`` here; run the rest through the full command line.

    The top-level help is printed from a copy made at 80 columns, which any terminal at least
    that wide shows as argparse would there; a narrower one gets argparse's own wrapping.

    Returns:
        The exit code.
    """
    args = sys.argv[1:]
    if args in (["--help"], ["-h"]) and _columns() >= _HELP_COLUMNS:
        sys.stdout.write(HELP)
        return 0
    if args == ["--version"]:
        from . import __version__  # noqa: PLC0415 -- the package, not the command line

        sys.stdout.write(f"aioscopedauth {__version__}\n")
        return 0
    try:
        from ._cli import main as run  # noqa: PLC0415 -- imported only when it is needed
    except KeyboardInterrupt:  # a Ctrl-C while the command line loads: no traceback
        sys.stderr.write("\naioscopedauth: interrupted\n")
        return 130
    return run()
