"""What the token endpoint answers: the tokens of a 200, and what a refusal means (reference §3).

Small pure functions over status codes and bodies, shared by every dialect, plus the bounded
read of an answer; nothing here knows a configuration.
"""

from __future__ import annotations

import json
import logging
import math
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import (
    AuthDataError,
    RefreshFailureReason,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from ._jwt import IdTokenInfo
from ._model import UNSENDABLE, is_header_safe

if TYPE_CHECKING:
    import aiohttp

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import aiohttp

__all__ = [
    "ACCOUNT_MISMATCH_MESSAGE",
    "EXHAUSTED_MESSAGE",
    "EXPIRED_MESSAGE",
    "MAX_ERROR_BODY",
    "MAX_EXPIRES_IN",
    "MAX_SUCCESS_BODY",
    "MAX_TOKEN_CHARS",
    "OTHER_MESSAGE",
    "REVOKED_MESSAGE",
    "TokenResponse",
    "classify_refresh_failure",
    "extract_error_code",
    "json_object",
    "parse_success",
    "parse_token_response",
    "read_capped",
    "scrub",
    "status_text",
    "token_fields",
]

logger = logging.getLogger("aioscopedauth.oauth")

MAX_ERROR_BODY = 64 * 1024
"""How much of an error answer is read: enough for any JSON error, bounded for hostile servers."""
MAX_SUCCESS_BODY = 1024 * 1024
"""A token answer is a few KiB; a larger one is refused rather than read into memory."""
_MAX_MESSAGE = 300

EXPIRED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token has expired. "
    "Please log out and sign in again."
)
EXHAUSTED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token was already used. "
    "Please log out and sign in again."
)
REVOKED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token was revoked. "
    "Please log out and sign in again."
)
OTHER_MESSAGE = "Your access token could not be refreshed. Please log out and sign in again."
ACCOUNT_MISMATCH_MESSAGE = (
    "Your access token could not be refreshed because you have since logged out or signed in to "
    "another account. Please sign in again."
)

_CODES = {
    "refresh_token_expired": (RefreshFailureReason.EXPIRED, EXPIRED_MESSAGE),
    "refresh_token_reused": (RefreshFailureReason.EXHAUSTED, EXHAUSTED_MESSAGE),
    "refresh_token_invalidated": (RefreshFailureReason.REVOKED, REVOKED_MESSAGE),
}


def extract_error_code(body: str) -> str | None:
    """Find the error code in a token endpoint's error body (reference §3.3).

    Args:
        body: The response body.

    Returns:
        ``error.code`` when ``error`` is an object, ``error`` when it is a string, else a
        top-level ``code``; lower-cased. ``None`` for a blank, non-JSON or non-object body.
    """
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    error = obj.get("error")
    code: object = None
    if isinstance(error, dict):
        code = error.get("code")
    elif isinstance(error, str):
        code = error
    if not isinstance(code, str):
        code = obj.get("code")
    if isinstance(code, str) and code.strip():
        return code.strip().lower()
    return None


def _error_message(body: str) -> str:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        error = obj.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return body.strip() or "Unknown error"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` and cap its length, for messages and logs.

    Args:
        text: Text that came from outside (a server's body).
        secrets: Values that must not appear.

    Returns:
        The text with each secret replaced by ``[redacted]``, at most 300 characters.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "…"
    return text


def status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def classify_refresh_failure(
    status: int, body: str, *, secrets: Iterable[str] = ()
) -> RefreshTokenFailedError | TransientRefreshError:
    """Classify a non-2xx answer of the token endpoint.

    A recognised code (``refresh_token_expired``, ``_reused``, ``_invalidated``) is permanent
    whatever the status, and so is any 401; everything else is transient (reference §3.3, the
    newer rule).

    Args:
        status: The HTTP status.
        body: The response body.
        secrets: Values scrubbed from a transient error's message.

    Returns:
        The error to raise.
    """
    code = extract_error_code(body)
    reason, message = _CODES.get(code or "", (RefreshFailureReason.OTHER, OTHER_MESSAGE))
    if status == HTTPStatus.UNAUTHORIZED or reason is not RefreshFailureReason.OTHER:
        return RefreshTokenFailedError(reason, message)
    detail = scrub(_error_message(body), secrets)
    return TransientRefreshError(
        f"Failed to refresh token: {status_text(status)}: {detail}", status=status
    )


MAX_EXPIRES_IN = 10 * 365 * 24 * 3600
"""The longest access-token lifetime kept (ten years): a larger ``expires_in`` is clamped to it,
so an absolute expiry computed from it never overflows a datetime."""

MAX_TOKEN_CHARS = 128 * 1024
"""A token longer than this is refused: real ones are a few KiB, and three of them must fit
in an ``auth.json`` the loader accepts (1 MiB)."""


@attrs.frozen
class TokenResponse:
    """What a successful refresh returned; each token may be absent.

    A token the answer carries but that cannot be used (not a string, unsendable as a header,
    too long, an id token that is not a JWT) is dropped and described in ``problems``, so that
    the usable rest of the answer — above all a rotated refresh token — is still kept.

    Attributes:
        id_token: The new id token, if any usable one.
        access_token: The new access token, if any usable one.
        refresh_token: The new refresh token, if any usable one.
        problems: What was wrong with each dropped token (never quoting it).
        dropped: The names of the dropped tokens (``"access_token"`` …).
        expires_in: The access token's lifetime in seconds from the answer (RFC 6749
            ``expires_in``), ``None`` when unknown. Always finite, above 0 and at most
            :data:`MAX_EXPIRES_IN`. The standard dialect reads it; Codex's ignores it, as Codex
            does (the access token's ``exp`` decides). The absolute expiry is the caller's to
            compute, from when it sent the request.
        scope: The granted scopes when the answer names them (space-delimited), else ``None``.
    """

    id_token: str | None = attrs.field(default=None, repr=False)
    access_token: str | None = attrs.field(default=None, repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False)
    problems: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    expires_in: float | None = attrs.field(default=None, kw_only=True)
    scope: str | None = attrs.field(default=None, kw_only=True)

    @expires_in.validator
    def _check_expires_in(self, _: attrs.Attribute[float | None], value: float | None) -> None:
        given: object = value
        if given is not None and not (
            isinstance(given, int | float)
            and not isinstance(given, bool)
            and math.isfinite(given)
            and 0 < given <= MAX_EXPIRES_IN
        ):
            msg = f"expires_in must be None or a number of seconds in (0, {MAX_EXPIRES_IN}]"
            raise ValueError(msg)

    @property
    def usable(self) -> bool:
        """Whether the answer carries at least one usable token (or drops none)."""
        tokens = (self.id_token, self.access_token, self.refresh_token)
        return not self.dropped or any(t is not None for t in tokens)


def _token_problem(key: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"its {key} is not a string"
    if not value:
        return f"its {key} is empty"
    if len(value) > MAX_TOKEN_CHARS:
        return f"its {key} is longer than {MAX_TOKEN_CHARS // 1024} KiB"
    if not is_header_safe(value):
        return f"its {key} {UNSENDABLE}"
    if key == "id_token":
        try:
            IdTokenInfo.parse(value)
        except AuthDataError as exc:
            return f"its id_token is unusable ({exc})"
    return None


def parse_token_response(text: str) -> TokenResponse | None:
    """Parse a 200 answer of the token endpoint, keeping every usable token.

    Args:
        text: The body.

    Returns:
        The usable tokens and the problems of the others; ``None`` when the body is not a JSON
        object at all.
    """
    obj = json_object(text)
    if obj is None:
        return None
    values, problems, dropped = token_fields(obj)
    return TokenResponse(
        id_token=values["id_token"],
        access_token=values["access_token"],
        refresh_token=values["refresh_token"],
        problems=problems,
        dropped=dropped,
    )


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds, or ``None`` (not JSON, too deep, or not an object)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def token_fields(
    obj: dict[str, Any], access_problem: Callable[[object], str | None] | None = None
) -> tuple[dict[str, str | None], tuple[str, ...], tuple[str, ...]]:
    """Keep the usable tokens of an answer: ``(values, problems, dropped)``.

    Args:
        obj: The answer's JSON object.
        access_problem: A dialect's further check of the access token (its ``token_type``).

    Returns:
        The three tokens (``None`` where missing or unusable), the problems of the unusable
        ones, and their names.
    """
    values: dict[str, str | None] = {}
    problems: list[str] = []
    dropped: list[str] = []
    for key in ("id_token", "access_token", "refresh_token"):
        value = obj.get(key)
        problem = None if value is None else _token_problem(key, value)
        if problem is None and key == "access_token" and access_problem is not None:
            problem = access_problem(value)
        if problem is not None:
            problems.append(problem)
            dropped.append(key)
            value = None
        values[key] = value
    return values, tuple(problems), tuple(dropped)


def parse_success(text: str, status: int) -> TokenResponse:
    answer = parse_token_response(text)
    if answer is None:
        msg = (
            "Failed to refresh token: the token endpoint answered with something that is not a "
            "JSON object. Retry later."
        )
        raise TransientRefreshError(msg, status=status)
    return answer


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """Read the body up to ``limit`` bytes; ``None`` when it is longer (the rest is dropped)."""
    body = bytearray()
    while chunk := await response.content.read(64 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
