"""What a token command prints, read: a token, JSON, or a Kubernetes ``ExecCredential``.

Pure functions: a command's stdout in, a token (or a :class:`~aioscopedauth.CommandError` that
never quotes the output) out.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from ._errors import AuthDataError, CommandError
from ._external import ExternalAuthTokens
from ._model import UNSENDABLE, is_header_safe, parse_rfc3339

__all__ = [
    "END_OF_TIME",
    "START_OF_TIME",
    "exit_status",
    "parse_command_output",
    "parse_exec_credential",
]


def exit_status(returncode: int) -> str:
    if returncode >= 0:
        return f"exit status: {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal: {number}"
    return f"signal: {number} ({name})"


END_OF_TIME = datetime.max.replace(tzinfo=UTC)
START_OF_TIME = datetime.min.replace(tzinfo=UTC)
"""An expiry past either end of the calendar saturates to these (valid for ever, or expired
already), as the dates of a login do, instead of raising ``OverflowError``."""


def _saturated(seconds: float) -> datetime:
    return END_OF_TIME if seconds > 0 else START_OF_TIME


def _timestamp(value: object, what: str, command: str) -> datetime:
    # NaN (which Python's JSON reads) says nothing about when: refused, never saturated.
    if isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
        pass
    elif isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return _saturated(value)
    elif isinstance(value, str):
        with contextlib.suppress(AuthDataError):
            return parse_rfc3339(value)
    msg = f"provider auth command `{command}` printed an invalid {what}"
    raise CommandError(msg)


def _expires_in(value: object, command: str, now: datetime) -> datetime:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and math.isnan(value))
    ):
        msg = f"provider auth command `{command}` printed an invalid expires_in"
        raise CommandError(msg)
    try:
        return now + timedelta(seconds=value)
    except OverflowError:
        return _saturated(value)


_INVALID = object()


def _parse_json(text: str, command: str, now: datetime) -> ExternalAuthTokens:
    try:
        obj: Any = json.loads(text)
    except (ValueError, RecursionError):
        # Raised below, outside the handler: the decoder's error holds the command's output.
        obj = _INVALID
    if obj is _INVALID:
        msg = f"provider auth command `{command}` printed invalid JSON"
        raise CommandError(msg)
    if not isinstance(obj, dict):
        msg = f"provider auth command `{command}` printed JSON that is not an object"
        raise CommandError(msg)
    status = obj.get("status")
    if obj.get("kind") == "ExecCredential" or isinstance(status, dict):
        # A Kubernetes client-go exec credential.
        status = status if isinstance(status, dict) else {}
        token, expiry, what = status.get("token"), status.get("expirationTimestamp"), "status"
    else:
        token = obj.get("access_token", obj.get("token"))
        expiry, what = obj.get("expires_at"), "expires_at"
        if expiry is None and obj.get("expires_in") is not None:
            expiry = _expires_in(obj["expires_in"], command, now)
    if not isinstance(token, str):
        msg = (
            f"provider auth command `{command}` printed JSON without a string access_token, "
            "token or status.token"
        )
        raise CommandError(msg)
    token = token.strip()
    expires_at = None
    if isinstance(expiry, datetime):
        expires_at = expiry
    elif expiry is not None:
        expires_at = _timestamp(expiry, f"{what} expiry", command)
    return ExternalAuthTokens.access_token_only(token, expires_at=expires_at)


def parse_command_output(stdout: str, command: str, now: datetime) -> ExternalAuthTokens:
    """Turn a token command's stdout into a token, with its expiry when the output gives one.

    Accepted: a plain token (trimmed); a JSON object with ``access_token`` or ``token`` and
    optional ``expires_at`` (RFC 3339 or epoch seconds) or ``expires_in`` (seconds); a
    Kubernetes ``ExecCredential`` (``status.token``, ``status.expirationTimestamp``). A number
    that puts the expiry past either end of the calendar (``1e20``, ``Infinity``) saturates to
    ``END_OF_TIME`` or ``START_OF_TIME``; ``NaN`` is refused.

    Args:
        stdout: The decoded output.
        command: The configured command, for messages.
        now: The current time, for ``expires_in``.

    Returns:
        The token.

    Raises:
        CommandError: The output is empty, is JSON without a token or with an invalid expiry
            (not a number or date, or ``NaN``), or is a token split over several lines. The
            message never quotes the output.
    """
    text = stdout.strip()
    if text.startswith("{"):
        tokens = _parse_json(text, command, now)
    else:
        tokens = ExternalAuthTokens.access_token_only(text)
    return _usable(tokens, command)


def _usable(tokens: ExternalAuthTokens, command: str) -> ExternalAuthTokens:
    if not tokens.access_token:
        msg = f"provider auth command `{command}` produced an empty token"
        raise CommandError(msg)
    if any(ch in tokens.access_token for ch in "\r\n"):
        # A header value cannot hold a line break; sending half a token helps nobody.
        msg = (
            f"provider auth command `{command}` printed more than one line; it must print only "
            "the token"
        )
        raise CommandError(msg)
    if not is_header_safe(tokens.access_token):
        msg = f"provider auth command `{command}` printed a token that {UNSENDABLE}"
        raise CommandError(msg)
    return tokens


_API_VERSION_SHAPE = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}/v[0-9]+(?:(?:alpha|beta)[0-9]+)?")


def _exec_failure(command: str, problem: str) -> CommandError:
    return CommandError(f"provider auth command `{command}`: {problem}")


def parse_exec_credential(stdout: str, command: str, api_version: str | None) -> ExternalAuthTokens:
    """Read a Kubernetes exec credential plugin's answer as client-go does.

    The answer must be a JSON ``ExecCredential`` of the configured ``apiVersion`` whose
    ``status`` holds a ``token`` (a client certificate and key, which client-go also accepts,
    cannot be sent as a bearer token); ``status.expirationTimestamp`` (RFC 3339) is its expiry.

    Args:
        stdout: The decoded output.
        command: The command, for messages.
        api_version: The configured ``exec_api_version``.

    Returns:
        The token.

    Raises:
        CommandError: client-go's message for the same answer, after the command's name. The
            message never quotes the output (a returned ``apiVersion`` only when it has the shape
            of one).
    """
    status = _exec_status(stdout, command, api_version)
    token = status.get("token")
    if not isinstance(token, str) or not token:
        raise _exec_failure(command, _missing_token(status))
    expiry = status.get("expirationTimestamp")
    expires_at = None
    if expiry is not None:
        if not isinstance(expiry, str):
            problem = "decoding stdout: status.expirationTimestamp is not a time"
            raise _exec_failure(command, problem)
        expires_at = _timestamp(expiry, "status expiry", command)
    return _usable(ExternalAuthTokens.access_token_only(token, expires_at=expires_at), command)


def _exec_status(stdout: str, command: str, wanted: str | None) -> dict[str, Any]:
    """Check the ``ExecCredential`` envelope (version, kind) and return its ``status``."""
    try:
        obj: Any = json.loads(stdout)
    except (ValueError, RecursionError):
        obj = _INVALID  # raised below, outside the handler: the error quotes the output
    if not isinstance(obj, dict):
        problem = "decoding stdout: couldn't get version/kind; json parse error"
        raise _exec_failure(command, problem)
    version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(version, str) or not version:
        raise _exec_failure(command, "decoding stdout: Object 'apiVersion' is missing")
    if not isinstance(kind, str) or not kind:
        raise _exec_failure(command, "decoding stdout: Object 'Kind' is missing")
    if version != wanted:
        shown = version if _API_VERSION_SHAPE.fullmatch(version) else "(not an API version)"
        problem = (
            f"exec plugin is configured to use API version {wanted}, plugin returned version "
            f"{shown}"
        )
        raise _exec_failure(command, problem)
    if kind != "ExecCredential":
        problem = (
            'decoding stdout: no kind other than "ExecCredential" is registered for version '
            f'"{wanted}"'
        )
        raise _exec_failure(command, problem)
    status = obj.get("status")
    if not isinstance(status, dict):
        raise _exec_failure(command, "exec plugin didn't return a status field")
    return status


def _missing_token(status: dict[str, Any]) -> str:
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if not cert and not key:
        return "exec plugin didn't return a token or cert/key pair"
    if not cert or not key:
        return "exec plugin returned only certificate or key, not both"
    return (
        "exec plugin returned a client certificate and key but no token; only status.token "
        "can be sent (as a bearer token)"
    )
