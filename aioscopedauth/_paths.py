"""Paths a user gives (a home folder, a config file, a command's ``cwd``), checked once.

``Path`` lets a NUL byte through until the first system call (``ValueError``), and
``expanduser`` and ``resolve`` raise ``RuntimeError`` for ``~nosuchuser`` and symlink loops:
both are turned into a :class:`ConfigError` that names what is wrong, where the path enters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["codex_home", "resolved_path", "user_path"]


def user_path(value: str | os.PathLike[str], what: str) -> Path:
    """Return ``value`` as a path with ``~`` expanded.

    Args:
        value: The path as given.
        what: What it is, for the message (``the home folder``).

    Returns:
        The path.

    Raises:
        ConfigError: It holds a NUL byte, or names a user that does not exist (``~nobody``).
    """
    text = os.fspath(value)
    if "\0" in text:
        msg = f"{what} contains a NUL byte"
        raise ConfigError(msg)
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:
        pass  # raised below, with a message of ours
    user = text[1:].split("/", 1)[0]
    if not user:
        # No HOME, and no passwd entry for this uid (a container's arbitrary uid).
        msg = f"{what} starts with ~, but your home folder is unknown: set HOME"
    else:
        msg = f"{what} starts with ~{user}, but there is no user {user!r} to expand it for"
    raise ConfigError(msg)


def codex_home(environ: Mapping[str, str] | None = None) -> Path:
    """Return where Codex keeps its login: ``$CODEX_HOME`` (``~`` expanded), else ``~/.codex``.

    Args:
        environ: The environment to read (default: the process's).

    Returns:
        The folder (it may not exist yet).

    Raises:
        ConfigError: ``CODEX_HOME`` holds a NUL byte or starts with ``~user`` for a user that
            does not exist, or it is unset and the home folder is unknown.
    """
    env = os.environ if environ is None else environ
    value = env.get("CODEX_HOME")
    if value:
        return user_path(value, "CODEX_HOME")
    try:
        return Path.home() / ".codex"
    except RuntimeError:
        pass  # raised below, with a message of ours
    msg = "Could not find your home folder (for ~/.codex): set HOME, or CODEX_HOME"
    raise ConfigError(msg)


def resolved_path(path: Path, what: str) -> Path:
    """Return ``path`` made absolute with symlinks resolved.

    Args:
        path: The path.
        what: What it is, for the message.

    Returns:
        The resolved path.

    Raises:
        ConfigError: It goes through a symlink loop.
    """
    try:
        # strict: a loop raises on every Python (3.13's non-strict resolve no longer does)
        return path.resolve(strict=True)
    except FileNotFoundError:
        return path.resolve()  # a folder that does not exist yet: reported when it is used
    except (RuntimeError, OSError):
        pass  # RuntimeError (3.11, 3.12) or ELOOP (3.13): raised below with our message
    msg = f"{what} {path} goes through a symbolic link loop"
    raise ConfigError(msg)
