"""The OAuth refresh-token request and the classification of its failures (reference §3).

The decisions (which error code means what, is a failure permanent, when is a token stale) are
small pure functions; :func:`request_token_refresh` is the only code here that does I/O.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs

from ._errors import (
    AuthDataError,
    AuthError,
    RefreshFailureReason,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from ._jwt import PlanType, decode_jwt_payload
from ._model import DEFAULT_ACCOUNT_HEADER, AccountIdentity, Auth, AuthMode, is_header_safe

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "AUTHAPI_BASE_URL_ENV",
    "CODEX_AUTHAPI_BASE_URL",
    "CODEX_CLIENT_ID",
    "CODEX_TOKEN_URL",
    "WHOAMI_PATH",
    "OAuthConfig",
    "TokenResponse",
    "classify_refresh_failure",
    "extract_error_code",
    "is_stale",
    "parse_account_identity",
    "request_account_identity",
    "request_token_refresh",
]

logger = logging.getLogger("aioscopedauth.oauth")

CODEX_TOKEN_URL = "https://auth.openai.com/oauth/token"  # noqa: S105 -- a URL, not a secret
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
TOKEN_URL_OVERRIDE_ENV = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"  # noqa: S105 -- a variable name
CODEX_AUTHAPI_BASE_URL = "https://auth.openai.com/api/accounts"
AUTHAPI_BASE_URL_ENV = "CODEX_AUTHAPI_BASE_URL"
WHOAMI_PATH = "/v1/user-auth-credential/whoami"
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


@attrs.frozen
class OAuthConfig:
    """Where and how managed OAuth tokens are refreshed.

    Args:
        token_url: The token endpoint.
        client_id: The OAuth client id sent with every refresh.
        account_header: The request header that carries the account id.
        refresh_window: Refresh this long before the access token's ``exp``. It is capped at a
            quarter of the token's lifetime, so short-lived tokens are not refreshed on every
            call.
        max_age: Without an ``exp``, refresh when ``last_refresh`` is older than this.
        timeout: Seconds the whole token request may take.
        failure_backoff: After a transient failure, how long a refresh of the same token fails
            fast with the same error instead of calling the endpoint again (``0`` retries at
            once). Keeps a storm of requests from hammering an endpoint that is down.
        reuse_grace: After the endpoint refuses a refresh token as already used, how long to
            keep looking at the store for the tokens of whoever spent it first before the
            failure is final. Codex 0.169 spends its refresh token before it takes any lock
            and gives up its commit after about 5 s, so its new tokens can land seconds after
            our refusal; the default waits a little longer than that. ``0`` looks once.
        authapi_base_url: Where the whoami call of a personal access token goes (the path
            ``/v1/user-auth-credential/whoami`` is appended). ``None`` reads
            ``$CODEX_AUTHAPI_BASE_URL`` when the call is made, else Codex's own.
    """

    token_url: str
    client_id: str
    account_header: str = attrs.field(default=DEFAULT_ACCOUNT_HEADER, kw_only=True)
    refresh_window: timedelta = attrs.field(default=timedelta(minutes=5), kw_only=True)
    max_age: timedelta = attrs.field(default=timedelta(days=8), kw_only=True)
    timeout: float = attrs.field(default=30.0, kw_only=True)
    failure_backoff: timedelta = attrs.field(default=timedelta(seconds=5), kw_only=True)
    reuse_grace: timedelta = attrs.field(default=timedelta(seconds=6), kw_only=True)
    authapi_base_url: str | None = attrs.field(default=None, kw_only=True)

    def whoami_url(self) -> str:
        """Return the whoami endpoint for personal access tokens.

        Returns:
            ``authapi_base_url``, else ``$CODEX_AUTHAPI_BASE_URL`` (trimmed; blank is unset),
            else ``https://auth.openai.com/api/accounts``; then ``/v1/user-auth-credential/whoami``.
        """
        # Read at each call, as Codex reads the variable each time it hydrates a token.
        base = self.authapi_base_url
        if base is None:
            base = os.environ.get(AUTHAPI_BASE_URL_ENV, "").strip() or CODEX_AUTHAPI_BASE_URL
        return f"{base.rstrip('/')}{WHOAMI_PATH}"

    @classmethod
    def codex(cls, **overrides: Any) -> OAuthConfig:  # noqa: ANN401 -- forwarded to __init__
        """Return the Codex CLI's configuration.

        The endpoint is ``$CODEX_REFRESH_TOKEN_URL_OVERRIDE`` when set, else Codex's own.

        Args:
            **overrides: Any other field of this class.

        Returns:
            The configuration (``authapi_base_url`` stays ``None`` unless overridden, so
            ``$CODEX_AUTHAPI_BASE_URL`` is read when the whoami call is made).
        """
        url = os.environ.get(TOKEN_URL_OVERRIDE_ENV) or CODEX_TOKEN_URL
        return cls(url, CODEX_CLIENT_ID, **overrides)


def stale_at(auth: Auth, config: OAuthConfig) -> datetime | None:
    """Return when a snapshot becomes due for a proactive refresh (reference §2.5).

    Only managed ChatGPT auth is ever refreshed proactively.

    Args:
        auth: The snapshot.
        config: Supplies the window and the maximum age.

    Returns:
        The access token's ``exp`` minus the refresh window (capped at a quarter of the token's
        lifetime, from ``iat`` or ``last_refresh``); for a token without ``exp``,
        ``last_refresh`` plus ``max_age``; ``None`` when it is never refreshed proactively.
    """
    if auth.mode is not AuthMode.CHATGPT or auth.data is None or auth.data.tokens is None:
        return None
    try:
        claims = decode_jwt_payload(auth.data.tokens.access_token)
    except AuthDataError:
        claims = {}
    exp = _timestamp(claims.get("exp"))
    if exp is not None:
        window = config.refresh_window
        issued = _timestamp(claims.get("iat")) or auth.data.last_refresh
        if issued is not None and exp > issued:
            window = min(window, (exp - issued) / 4)
        return exp - window
    refreshed = auth.data.last_refresh
    return None if refreshed is None else refreshed + config.max_age


def is_stale(auth: Auth, now: datetime, config: OAuthConfig) -> bool:
    """Decide whether a snapshot should be refreshed before use.

    Args:
        auth: The snapshot.
        now: The current time (aware).
        config: Supplies the window and the maximum age.

    Returns:
        Whether ``now`` has reached :func:`stale_at` (never for non-managed auth). A token
        without ``exp`` is stale once ``last_refresh`` is older than ``max_age``.
    """
    due = stale_at(auth, config)
    return due is not None and now >= due


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


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


def _status_text(status: int) -> str:
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
        f"Failed to refresh token: {_status_text(status)}: {detail}", status=status
    )


@attrs.frozen
class TokenResponse:
    """What a successful refresh returned; each token may be absent.

    Attributes:
        id_token: The new id token, if any.
        access_token: The new access token, if any.
        refresh_token: The new refresh token, if any (rotating endpoints always send one).
    """

    id_token: str | None = attrs.field(default=None, repr=False)
    access_token: str | None = attrs.field(default=None, repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False)


def _parse_success(text: str, status: int) -> TokenResponse:
    problem = "the token endpoint answered with something that is not a JSON object"
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        values: dict[str, str | None] = {}
        for key in ("id_token", "access_token", "refresh_token"):
            value = obj.get(key)
            if value is not None and not isinstance(value, str):
                problem = f"the token endpoint's {key} is not a string"
                break
            values[key] = value
        else:
            return TokenResponse(**values)
    msg = f"Failed to refresh token: {problem}. Retry later."
    raise TransientRefreshError(msg, status=status)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """Read the body up to ``limit`` bytes; ``None`` when it is longer (the rest is dropped)."""
    body = bytearray()
    while chunk := await response.content.read(64 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def request_token_refresh(
    session: aiohttp.ClientSession, config: OAuthConfig, refresh_token: str
) -> TokenResponse:
    """Spend a refresh token at the token endpoint (reference §3.1).

    The request is sent with ``middlewares=()`` so it never passes through an auth middleware
    attached to ``session`` (that would re-enter the refresh and deadlock).

    Args:
        session: The HTTP session.
        config: The endpoint, client id and timeout.
        refresh_token: The refresh token to spend.

    Returns:
        The tokens the endpoint returned.

    Raises:
        RefreshTokenFailedError: The endpoint refused the token for good.
        TransientRefreshError: A 5xx or other non-permanent status, a timeout, a connection
            failure, or a body that is not the expected JSON.
    """
    body = {
        "client_id": config.client_id,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    try:
        async with session.post(
            config.token_url,
            json=body,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
            middlewares=(),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
                raw = await _read_capped(response, MAX_SUCCESS_BODY)
                if raw is None:
                    msg = (
                        "Failed to refresh token: the token endpoint's answer is larger than "
                        f"{MAX_SUCCESS_BODY // 1024} KiB. Retry later."
                    )
                    raise TransientRefreshError(msg, status=response.status)
                return _parse_success(raw.decode("utf-8", errors="replace"), response.status)
            status = response.status
            raw = await _read_capped(response, MAX_ERROR_BODY) or b""
    except TimeoutError as exc:
        msg = (
            f"Failed to refresh token: the token endpoint did not answer within "
            f"{config.timeout:g} s. Retry later."
        )
        raise TransientRefreshError(msg) from exc
    except aiohttp.ClientError as exc:
        msg = (
            "Failed to refresh token: could not reach the token endpoint "
            f"({type(exc).__name__}: {exc}). Retry later."
        )
        raise TransientRefreshError(scrub(msg, [refresh_token])) from exc
    text = raw.decode("utf-8", errors="replace")
    # DEBUG, not ERROR: the failure is raised, and the caller decides what to say about it.
    logger.debug(
        "The token endpoint refused the refresh: %s: %s",
        _status_text(status),
        scrub(text, [refresh_token]),
    )
    raise classify_refresh_failure(status, text, secrets=[refresh_token])


def parse_account_identity(raw: bytes) -> AccountIdentity:
    """Parse the whoami answer for a personal access token.

    Args:
        raw: The body: ``{email, chatgpt_user_id, chatgpt_account_id, chatgpt_plan_type,
            chatgpt_account_is_fedramp}``.

    Returns:
        The identity (the plan parsed as Codex does, case-insensitively).

    Raises:
        AuthError: The body is not that JSON object (the message never quotes it).
    """
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        msg = "the whoami answer is not a JSON object"
        raise AuthError(msg)
    fields: dict[str, str | None] = {}
    for key in ("email", "chatgpt_user_id", "chatgpt_account_id", "chatgpt_plan_type"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            msg = f"the whoami answer's {key} is not a string"
            raise AuthError(msg)
        fields[key] = value
    account = fields["chatgpt_account_id"]
    if not account or not is_header_safe(account):
        # It is sent as the account header on every request.
        msg = "the whoami answer has no usable chatgpt_account_id"
        raise AuthError(msg)
    fedramp = obj.get("chatgpt_account_is_fedramp", False)
    if not isinstance(fedramp, bool):
        msg = "the whoami answer's chatgpt_account_is_fedramp is not a boolean"
        raise AuthError(msg)
    plan = fields["chatgpt_plan_type"]
    return AccountIdentity(
        account_id=account,
        user_id=fields["chatgpt_user_id"],
        email=fields["email"],
        plan_type=None if plan is None else PlanType.from_raw_value(plan),
        fedramp=fedramp,
    )


async def request_account_identity(
    session: aiohttp.ClientSession, config: OAuthConfig, token: str
) -> AccountIdentity:
    """Ask the whoami endpoint who a personal access token belongs to.

    Sent with ``middlewares=()`` (an auth middleware on ``session`` is never re-entered),
    without following redirects (the bearer never leaves for another host), bounded by
    ``config.timeout`` and a 64 KiB answer.

    Args:
        session: The HTTP session.
        config: Supplies :meth:`OAuthConfig.whoami_url` and the timeout.
        token: The personal access token, sent as the bearer.

    Returns:
        The identity.

    Raises:
        AuthError: The call failed, timed out, answered non-2xx or something unusable. The
            message never contains the token.
    """
    try:
        async with session.get(
            config.whoami_url(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=config.timeout),
            middlewares=(),
            allow_redirects=False,
        ) as response:
            status = response.status
            raw = await _read_capped(response, MAX_ERROR_BODY)
    except TimeoutError:
        msg = f"the whoami endpoint did not answer within {config.timeout:g} s"
        raise AuthError(msg) from None
    except aiohttp.ClientError as exc:
        # Not chained: a client error may quote the request, and the request carries the token.
        msg = f"could not reach the whoami endpoint ({type(exc).__name__}: {exc})"
        raise AuthError(scrub(msg, [token])) from None
    if not 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
        msg = f"the whoami endpoint answered {_status_text(status)}"
        raise AuthError(msg)
    if raw is None:
        msg = f"the whoami answer is larger than {MAX_ERROR_BODY // 1024} KiB"
        raise AuthError(msg)
    return parse_account_identity(raw)
