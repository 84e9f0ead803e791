"""Paths a user gives (a home folder, a config file, a command's ``cwd``), checked once.

``Path`` lets a NUL byte through until the first system call (``ValueError``), and
``expanduser`` and ``resolve`` raise ``RuntimeError`` for ``~nosuchuser`` and symlink loops:
both are turned into a :class:`ConfigError` that names what is wrong, where the path enters.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import ConfigError

__all__ = ["resolved_path", "user_path"]


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
    msg = f"{what} starts with ~{user}, but there is no user {user!r} to expand it for"
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
