"""The standard dialect of the token endpoint (RFC 6749), beside Codex's own.

Requests are form-encoded (§4, §6) with the client authenticated as configured (§2.3.1: HTTP
Basic with the id and secret form-encoded first, or both in the form, or only ``client_id`` for
a public client); answers are read as §5.1 says (``token_type``, ``expires_in``, ``scope``) and
errors by their §5.2 codes. The decisions are small pure functions; :func:`post_form` is the
only code here that does I/O, and the grants (:mod:`aioscopedauth._grants`) use it too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

import aiohttp

from ._client_jwt import ASSERTION_TYPE
from ._errors import (
    ClientConfigError,
    RefreshFailureReason,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from ._token_answer import (
    MAX_ERROR_BODY,
    MAX_EXPIRES_IN,
    MAX_SUCCESS_BODY,
    TokenResponse,
    json_object,
    read_capped,
    scrub,
    status_text,
    token_fields,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ._oauth import OAuthConfig

__all__ = [
    "CONFIG_ERRORS",
    "INVALID_GRANT_MESSAGE",
    "assertion_audience",
    "basic_authorization",
    "classify_standard_failure",
    "client_authentication",
    "form_encode",
    "hidden_values",
    "parse_expires_in",
    "parse_oauth_error",
    "parse_standard_token_response",
    "post_form",
    "request_refresh",
]

logger = logging.getLogger("aioscopedauth.oauth")

INVALID_GRANT_MESSAGE = (
    "Your access token could not be refreshed: the provider refused the refresh token "
    "(invalid_grant: it expired, was revoked, or was already used). Please log in again."
)

CONFIG_ERRORS: Mapping[str, str] = {
    "invalid_client": (
        "the provider refused this client (invalid_client): check client_id, client_secret "
        "and client_auth ({client_auth}) in the OAuth configuration"
    ),
    "unauthorized_client": (
        "the provider does not let this client use the {grant} grant (unauthorized_client): "
        "allow the grant for the client at the provider, or configure another client"
    ),
    "unsupported_grant_type": (
        "the provider does not support the {grant} grant (unsupported_grant_type): check "
        "token_url, or use a login this provider supports"
    ),
    "invalid_scope": (
        "the provider refused the scopes asked for (invalid_scope): check scopes in the OAuth "
        "configuration and the scopes the client may ask for"
    ),
    "invalid_target": (
        "the provider refused the audience or resource asked for (invalid_target, RFC 8693 "
        "§2.2.2): check audience and resource"
    ),
    "invalid_request": (
        "the provider refused the request as malformed (invalid_request): check token_url, "
        "dialect ('rfc6749' for a standard provider) and client_auth ({client_auth})"
    ),
}
"""The §5.2 codes that name the client's configuration, not the login: permanent, and no new
login would help. ``{grant}`` and ``{client_auth}`` are filled in."""

TRANSIENT_CODES = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
"""Codes some providers send at the token endpoint for a passing condition."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def form_encode(value: str) -> str:
    """Encode ``value`` as ``application/x-www-form-urlencoded`` does (RFC 6749 Appendix B).

    Args:
        value: A client id or secret.

    Returns:
        The encoded text (space as ``+``, everything but ``A-Za-z0-9-._~`` percent-encoded).
    """
    return quote_plus(value, safe="")


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` value of ``client_secret_basic`` (RFC 6749 §2.3.1).

    The id and the secret are form-encoded first, then joined by ``:`` and Base64-encoded, so a
    ``:`` or a non-ASCII character in either survives (many libraries skip the first step and
    fail with such secrets).

    Args:
        client_id: The client id.
        client_secret: The client secret.

    Returns:
        ``Basic <base64>``.
    """
    pair = f"{form_encode(client_id)}:{form_encode(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


def client_authentication(config: OAuthConfig) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and form fields that authenticate the client, per ``config.client_auth``.

    Args:
        config: A standard configuration (its checks guarantee a secret where one is needed).

    Returns:
        ``(headers, form fields)``.
    """
    if config.client_auth == "client_secret_basic":
        assert config.client_secret is not None  # noqa: S101 -- OAuthConfig checked it
        return {"Authorization": basic_authorization(config.client_id, config.client_secret)}, {}
    if config.client_auth == "client_secret_post":
        assert config.client_secret is not None  # noqa: S101 -- OAuthConfig checked it
        return {}, {"client_id": config.client_id, "client_secret": config.client_secret}
    if config.client_auth == "private_key_jwt":
        assert config.client_key is not None  # noqa: S101 -- OAuthConfig checked it
        # A new assertion for every request: providers refuse a jti they have seen.
        assertion = config.client_key.assertion(config.client_id, assertion_audience(config))
        return {}, {
            "client_id": config.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
    return {}, {"client_id": config.client_id}


def assertion_audience(config: OAuthConfig) -> str:
    """The ``aud`` of a ``private_key_jwt`` assertion, per ``config.client_key.audience``.

    Args:
        config: A configuration with a ``client_key``.

    Returns:
        The token endpoint, the issuer, or the URL configured.
    """
    assert config.client_key is not None  # noqa: S101 -- only called for private_key_jwt
    audience = config.client_key.audience
    if audience == "token_endpoint":
        return config.token_url
    if audience == "issuer":
        assert config.issuer is not None  # noqa: S101 -- OAuthConfig checked it
        return config.issuer
    return audience


def parse_expires_in(value: object) -> tuple[float | None, str | None]:
    """Read ``expires_in`` (RFC 6749 §5.1): seconds, possibly sent as a numeric string.

    Args:
        value: The JSON value (absent is ``None``).

    Returns:
        ``(seconds, None)`` for a usable value (above :data:`MAX_EXPIRES_IN` clamped to it),
        ``(None, None)`` when absent, ``(None, problem)`` when it cannot be used: not a number,
        not finite, zero or negative. The problem never quotes the value.
    """
    if value is None:
        return None, None
    if isinstance(value, str) and re.fullmatch(r"\d{1,20}(?:\.\d{1,9})?", value.strip()):
        # Some providers send it as a string ("3599"); it means the same.
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, "its expires_in is not a number"
    # An integer too large for a float (JSON allows any) is clamped before it is converted.
    seconds = float(min(value, MAX_EXPIRES_IN)) if isinstance(value, int) else value
    if not math.isfinite(seconds):
        return None, "its expires_in is not a finite number"
    if seconds <= 0:
        return None, "its expires_in is not above zero"
    return min(seconds, float(MAX_EXPIRES_IN)), None


def parse_standard_token_response(text: str) -> TokenResponse | None:
    """Parse a 2xx answer of a standard token endpoint (RFC 6749 §5.1).

    Every usable token is kept; an unusable one is dropped and described (as in Codex's
    dialect). An answer without a usable ``access_token``, or whose ``token_type`` is not
    ``Bearer`` (the only kind this library sends), has its access token dropped, so a rotated
    refresh token in it is still kept. An unusable ``expires_in`` is logged and left unknown:
    the tokens are good, only their lifetime is not.

    Args:
        text: The body.

    Returns:
        The answer, or ``None`` when the body is not a JSON object.
    """
    obj = json_object(text)
    if obj is None:
        return None
    values, problems, dropped = token_fields(
        obj, lambda value: _access_token_problem(value, obj.get("token_type"))
    )
    expires_in, problem = parse_expires_in(obj.get("expires_in"))
    if problem is not None:
        logger.warning(
            "The token endpoint's answer is usable but %s; the access token's expiry is "
            "treated as unknown",
            problem,
        )
    scope = obj.get("scope")
    return TokenResponse(
        id_token=values["id_token"],
        access_token=values["access_token"],
        refresh_token=values["refresh_token"],
        problems=problems,
        dropped=dropped,
        expires_in=expires_in,
        scope=scope if isinstance(scope, str) and scope.isprintable() else None,
    )


def _access_token_problem(value: object, token_type: object) -> str | None:
    if value is None:
        return "it has no access_token"
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() != "bearer"
    ):
        # A DPoP- or MAC-bound token sent as a bearer would be refused by every API.
        return "its token_type is not Bearer"
    return None


def parse_oauth_error(body: str) -> tuple[str | None, str | None]:
    """Find the §5.2 ``error`` code and ``error_description`` in an error body.

    Args:
        body: The response body.

    Returns:
        ``(code, description)``; the code lower-cased, each ``None`` when absent. The
        description is made one line (control characters become spaces) but not scrubbed.
    """
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    code = obj.get("error")
    description = obj.get("error_description")
    return (
        code.strip().lower() if isinstance(code, str) and code.strip() else None,
        _CONTROL.sub(" ", description).strip() if isinstance(description, str) else None,
    )


def hidden_values(config: OAuthConfig, secrets: Iterable[str]) -> list[str]:
    """Every form in which a secret of a request could come back in an answer.

    Args:
        config: Supplies the client secret (and, for Basic, the credentials header).
        secrets: The request's other secrets (a refresh token, a device code).

    Returns:
        Each secret as is and form-encoded, and the Base64 credentials of Basic.
    """
    values = [v for v in (*secrets, config.client_secret) if v]
    out = [*values, *(form_encode(v) for v in values)]
    if config.client_auth == "client_secret_basic" and config.client_secret:
        out.append(basic_authorization(config.client_id, config.client_secret).split(" ", 1)[1])
    # Longest first: a secret that contains another is replaced whole.
    return sorted(set(out), key=len, reverse=True)


def _said(description: str | None, secrets: Iterable[str]) -> str:
    if not description:
        return ""
    return f" The provider said: {scrub(description, secrets)}"


def classify_standard_failure(  # noqa: PLR0913 -- keyword-only context for the messages
    status: int,
    body: str,
    *,
    config: OAuthConfig,
    grant: str = "refresh_token",
    action: str = "refresh token",
    secrets: Iterable[str] = (),
) -> RefreshTokenFailedError | TransientRefreshError:
    """Classify a non-2xx answer of a standard token endpoint (RFC 6749 §5.2).

    ``invalid_grant`` is permanent (:class:`RefreshTokenFailedError`: log in again); the codes
    of :data:`CONFIG_ERRORS` are permanent and name the configuration problem
    (:class:`ClientConfigError`), as is a 401 without a code (§5.2 lets ``invalid_client``
    come as a bare 401); everything else — 5xx, 429, a passing code, an unknown code, a body
    that is not a §5.2 error — is transient.

    Args:
        status: The HTTP status.
        body: The response body.
        config: Names the client authentication in messages.
        grant: The grant type asked for, named in messages.
        action: What failed, after "Failed to" (``"refresh token"``).
        secrets: Values scrubbed from anything quoted from the provider.

    Returns:
        The error to raise.
    """
    secrets = hidden_values(config, secrets)
    code, description = parse_oauth_error(body)
    if status < HTTPStatus.INTERNAL_SERVER_ERROR and status not in {
        HTTPStatus.REQUEST_TIMEOUT,
        HTTPStatus.TOO_MANY_REQUESTS,
    }:
        if code == "invalid_grant":
            if grant == "refresh_token":
                message = INVALID_GRANT_MESSAGE
            else:
                message = (
                    f"Failed to {action}: the provider refused the grant (invalid_grant). "
                    "Log in again."
                )
            return RefreshTokenFailedError(
                RefreshFailureReason.OTHER, message, error_code="invalid_grant"
            )
        if code is None and status == HTTPStatus.UNAUTHORIZED:
            code = "invalid_client"
        template = CONFIG_ERRORS.get(code or "")
        if template is not None:
            assert code is not None  # noqa: S101 -- a template was found for it
            problem = template.format(grant=grant, client_auth=repr(config.client_auth))
            return ClientConfigError(
                code,
                f"Failed to {action}: {problem}.{_said(description, secrets)}",
            )
    detail = code or "no OAuth error code"
    return TransientRefreshError(
        f"Failed to {action}: {status_text(status)} ({detail}).{_said(description, secrets)}"
        " Retry later.",
        status=status,
    )


async def post_form(  # noqa: PLR0913 -- keyword-only context for the messages
    session: aiohttp.ClientSession,
    config: OAuthConfig,
    url: str,
    fields: Mapping[str, str] | Sequence[tuple[str, str]],
    *,
    action: str,
    secrets: Iterable[str] = (),
    authenticate: bool = True,
) -> tuple[int, str]:
    """POST a form to one of the provider's endpoints, with the client authenticated.

    Sent with ``middlewares=()`` (an auth middleware on ``session`` is never re-entered),
    without following redirects (credentials never leave for another URL), bounded by
    ``config.timeout`` and by the size of the answer.

    Args:
        session: The HTTP session.
        config: The client and its authentication, the timeout.
        url: The endpoint.
        fields: The form (the client's own fields are added); pairs keep a repeated
            parameter (RFC 8693's ``audience``).
        action: What is being done, after "Failed to", for messages.
        secrets: Values that must not appear in a message.
        authenticate: Add the client authentication (every endpoint of this module does).

    Returns:
        The status and the body (decoded, invalid UTF-8 replaced).

    Raises:
        TransientRefreshError: A timeout, a connection failure, or an answer larger than
            allowed. Never chained to the transport's exception (it may quote the request).
    """
    headers = {"Accept": "application/json"}
    form = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    if authenticate:
        if config.client_auth == "private_key_jwt":
            # Signing is CPU work (about 3 ms for RS256 on a loaded core): off the loop.
            auth_headers, auth_fields = await asyncio.to_thread(client_authentication, config)
        else:
            auth_headers, auth_fields = client_authentication(config)
        headers.update(auth_headers)
        # The client's own fields win, as one value each (a caller never sends them twice).
        form = [(k, v) for k, v in form if k not in auth_fields] + list(auth_fields.items())
        if "client_assertion" in auth_fields:
            # A live credential until it expires: never quoted back in a message.
            secrets = [*secrets, auth_fields["client_assertion"]]
    hidden = hidden_values(config, secrets)
    try:
        async with session.post(
            url,
            data=form,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
            middlewares=(),
            allow_redirects=False,
        ) as response:
            status = response.status
            ok = 200 <= status < 300  # noqa: PLR2004 -- the 2xx range, by definition
            raw = await read_capped(response, MAX_SUCCESS_BODY if ok else MAX_ERROR_BODY)
    except TimeoutError:
        msg = f"Failed to {action}: {url} did not answer within {config.timeout:g} s. Retry later."
        raise TransientRefreshError(msg) from None
    except aiohttp.ClientError as exc:
        msg = (
            f"Failed to {action}: could not reach {url} ({type(exc).__name__}: {exc}). Retry later."
        )
        raise TransientRefreshError(scrub(msg, hidden)) from None
    if raw is None:
        if not ok:
            return status, ""  # an oversized error body: classified by its status alone
        msg = (
            f"Failed to {action}: the answer is larger than {MAX_SUCCESS_BODY // 1024} KiB. "
            "Retry later."
        )
        raise TransientRefreshError(msg, status=status)
    return status, raw.decode("utf-8", errors="replace")


def parse_success(text: str, status: int, action: str) -> TokenResponse:
    """Parse a 2xx token answer, or raise a transient error for one that is not JSON.

    Args:
        text: The body.
        status: The status, kept on the error.
        action: What was being done, for the message.

    Returns:
        The answer.

    Raises:
        TransientRefreshError: The body is not a JSON object.
    """
    answer = parse_standard_token_response(text)
    if answer is None:
        msg = (
            f"Failed to {action}: the token endpoint answered with something that is not a "
            "JSON object. Retry later."
        )
        raise TransientRefreshError(msg, status=status)
    return answer


async def request_refresh(
    session: aiohttp.ClientSession, config: OAuthConfig, refresh_token: str
) -> TokenResponse:
    """Spend a refresh token at a standard token endpoint (RFC 6749 §6).

    Args:
        session: The HTTP session.
        config: A standard configuration.
        refresh_token: The refresh token to spend.

    Returns:
        The tokens the endpoint returned, with ``expires_in`` and ``scope``.

    Raises:
        RefreshTokenFailedError: ``invalid_grant`` (log in again), or a
            :class:`ClientConfigError` naming the configuration problem.
        TransientRefreshError: A 5xx, 429, timeout, connection failure, or an answer that is
            not a token response.
    """
    action = "refresh token"
    status, text = await post_form(
        session,
        config,
        config.token_url,
        {"grant_type": "refresh_token", "refresh_token": refresh_token},
        action=action,
        secrets=[refresh_token],
    )
    if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
        return parse_success(text, status, action)
    logger.debug(
        "Token endpoint refused the refresh: %s: %s",
        status_text(status),
        scrub(text, hidden_values(config, [refresh_token])),
    )
    raise classify_standard_failure(status, text, config=config, secrets=[refresh_token])
