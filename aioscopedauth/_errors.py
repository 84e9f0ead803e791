"""The exception tree of aioscopedauth.

Every error the library raises on purpose is an :class:`AuthError`. Each message says what
happened and what to do next, and none ever contains a secret (an API key, an access, refresh or
id token, or a command's output)::

    AuthError
    ├── AuthDataError            a payload or JWT that cannot be parsed (also a ValueError)
    ├── StorageError             auth.json, the keyring or a lock could not be read or written
    ├── ConfigError              bad provider config or bad arguments (also a ValueError)
    ├── CommandError             a bearer-token command failed, timed out or printed no token
    ├── LoginRestrictionError    the login breaks a forced method or workspace (logged out)
    ├── UnsupportedLoginError    the login's mode is one aioscopedauth cannot send requests with
    ├── LoginError               a login did not complete (refused, expired); start it again
    └── RefreshError             a token refresh failed
        ├── RefreshTokenFailedError   permanent: log in again; carries a RefreshFailureReason
        │   └── ClientConfigError     permanent: the provider refused the client's configuration
        └── TransientRefreshError     temporary: retry later; carries the HTTP status if any

Permanent and transient refresh failures are told apart by type because callers do different
things with them: a permanent one is cached per auth snapshot and never retried, a transient one
is retried by the next request. ``ClientConfigError`` is also a :class:`ConfigError`: the
provider refused the client itself (``invalid_client``, ``unauthorized_client``,
``unsupported_grant_type``, ``invalid_scope``, ``invalid_request``), so no retry and no new login
can help, only a fixed configuration; the refresh token was not spent and the login is kept.
"""

from __future__ import annotations

import enum
import re

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: the CLI's --version imports this module
if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "AuthDataError",
    "AuthError",
    "ClientConfigError",
    "CommandError",
    "ConfigError",
    "LoginError",
    "LoginRestrictionError",
    "RefreshError",
    "RefreshFailureReason",
    "RefreshTokenFailedError",
    "StorageError",
    "TransientRefreshError",
    "UnsupportedLoginError",
]


class AuthError(Exception):
    """Base class of every error aioscopedauth raises on purpose.

    Catch this to handle any authentication failure; its message is safe to show and to log.
    """


class AuthDataError(AuthError, ValueError):
    """An auth payload or a token in it could not be parsed.

    Raised by the pure parsers (``AuthDotJson.from_json``, JWT decoding). Stores wrap it in a
    :class:`StorageError` that names the file. The message never quotes the offending value.
    """


class StorageError(AuthError):
    """Auth state could not be read from or written to its store.

    Args:
        message: What went wrong and what to do about it.
        path: The file involved, when there is one.
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        """Create the error; see the class docstring for the arguments."""
        super().__init__(message)
        self.path = path


class ConfigError(AuthError, ValueError):
    """A provider configuration or an argument is invalid; fix the configuration and retry."""


class CommandError(AuthError):
    """A bearer-token command failed, timed out, or printed no usable token.

    The message names the configured command, never its output (its stderr only trimmed and
    truncated; its stdout never).
    """


class LoginRestrictionError(AuthError):
    """The stored login breaks a forced login method or workspace, and was logged out."""


class LoginError(AuthError):
    """A login did not complete: the user refused, the code expired, or the provider said no.

    The message says why and what to do (usually: start the login again). Nothing was stored.

    Args:
        message: What happened.
        error_code: The provider's OAuth error code (``access_denied``, ``expired_token`` …),
            when it gave one.
    """

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        """Create the error; see the class docstring for the arguments."""
        super().__init__(message)
        self.error_code = error_code


class UnsupportedLoginError(AuthError):
    """The stored login is of a mode aioscopedauth cannot send requests with.

    ``agentIdentity``, ``bedrockApiKey``, ``bedrockAccessKeys``, ``headers`` and modes newer
    than this version load and are kept unchanged, but sending a request with them needs the
    Codex CLI. Use it for such a login, or log in with an API key or ChatGPT.

    Args:
        mode: The mode's name as stored (``auth_mode`` in ``auth.json``); kept as the ``mode``
            attribute only when it looks like a name (else ``None``).
        where: Where the login is kept (a path, or a store's name), when known.
    """

    def __init__(self, mode: str, *, where: str | None = None) -> None:
        """Create the error; see the class docstring for the arguments."""
        place = f"The login in {where}" if where else "This login"
        super().__init__(
            f"{place} is {describe_login_mode(mode)}, which aioscopedauth cannot send requests "
            "with. Use the Codex CLI for it, or log in with an API key or ChatGPT."
        )
        # Only a name-like mode is kept: a key pasted into ``auth_mode`` must not ride along
        # on the exception (an attribute is as reachable as the message).
        self.mode = shown_mode_name(mode)
        self.where = where


_MODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")


def shown_mode_name(mode: str) -> str | None:
    """Return ``mode`` when it is safe to show, else ``None``.

    An unknown ``auth_mode`` is whatever the file says, and a key pasted into the wrong field
    must not end up in a message: only identifier-like names (``agentIdentity``, up to 40
    letters, digits and underscores) are shown. Keys and tokens carry ``-`` or ``.``.

    Args:
        mode: A mode's value as stored.

    Returns:
        The name, or ``None``.
    """
    return mode if _MODE_NAME.fullmatch(mode) else None


def describe_login_mode(mode: str) -> str:
    """Name a login by its mode for a message: "an `agentIdentity` login", "an unknown login".

    Args:
        mode: A mode's value as stored.

    Returns:
        The phrase (see :func:`shown_mode_name` for which names are shown).
    """
    shown = shown_mode_name(mode)
    if shown is None:
        return "an unknown login"
    article = "an" if shown[0].lower() in "aeiou" else "a"
    return f"{article} `{shown}` login"


class RefreshFailureReason(enum.Enum):
    """Why a permanent refresh failure happened (reference §3.3)."""

    EXPIRED = "expired"
    """The refresh token has expired."""
    EXHAUSTED = "exhausted"
    """The refresh token was already used (single-use tokens rotated elsewhere)."""
    REVOKED = "revoked"
    """The refresh token was revoked."""
    OTHER = "other"
    """Any other permanent failure (unknown code, account changed, no steps left)."""


class RefreshError(AuthError):
    """A token refresh failed; see the two subclasses."""


class RefreshTokenFailedError(RefreshError):
    """A refresh failed for good: the user must log in again.

    Args:
        reason: The classified reason.
        message: The user-facing message (reference §3.3).
        error_code: The provider's OAuth error code (``invalid_grant`` …), when it gave one.
    """

    def __init__(
        self, reason: RefreshFailureReason, message: str, *, error_code: str | None = None
    ) -> None:
        """Create the error; see the class docstring for the arguments."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.error_code = error_code

    def __repr__(self) -> str:
        """Show the reason and the message (never a secret)."""
        return f"{type(self).__name__}(reason={self.reason}, message={self.message!r})"


class ClientConfigError(RefreshTokenFailedError, ConfigError):
    """The provider refused the client's configuration: fix it; logging in again will not help.

    Raised for the standard token endpoint errors that name the client, not the login:
    ``invalid_client`` (unknown client, wrong secret or authentication method),
    ``unauthorized_client`` (the grant is not allowed for this client),
    ``unsupported_grant_type``, ``invalid_scope`` and ``invalid_request``. It is permanent
    (cached like any :class:`RefreshTokenFailedError`, so a misconfigured client does not
    hammer the provider), and it is a :class:`ConfigError`. The refresh token was not spent: a
    fixed configuration refreshes the same login.

    Args:
        error_code: The provider's error code.
        message: What is wrong and what to check.
    """

    def __init__(self, error_code: str, message: str) -> None:
        """Create the error; see the class docstring for the arguments."""
        super().__init__(RefreshFailureReason.OTHER, message, error_code=error_code)


class TransientRefreshError(RefreshError):
    """A refresh failed for now (a 5xx, a timeout, a refused connection, a bad body); retry later.

    Args:
        message: What went wrong.
        status: The HTTP status of the token endpoint's answer, if there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        """Create the error; see the class docstring for the arguments."""
        super().__init__(message)
        self.status = status
