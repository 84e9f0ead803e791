"""The standard grants a login starts with: client credentials, the device flow, a code.

Standalone coroutines over one ``aiohttp.ClientSession`` and a standard
:class:`~aioscopedauth.OAuthConfig` (``dialect="rfc6749"``); they return the provider's
:class:`~aioscopedauth._oauth.TokenResponse` and store nothing: the manager's logins put the
answer in a store. Requests go through :func:`aioscopedauth._rfc6749.post_form` (client
authentication, timeouts, size limits, secrets scrubbed) and errors are classified as the
refresh's are, plus the device flow's own codes (RFC 8628 §3.5).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import TYPE_CHECKING

import attrs

from ._errors import (
    ClientConfigError,
    ConfigError,
    LoginError,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from ._model import is_header_safe
from ._rfc6749 import (
    classify_standard_failure,
    parse_expires_in,
    parse_oauth_error,
    parse_standard_token_response,
    parse_success,
    post_form,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    import aiohttp

    from ._oauth import OAuthConfig, TokenResponse

__all__ = [
    "DEVICE_GRANT",
    "DeviceCode",
    "device_login",
    "exchange_authorization_code",
    "poll_device_token",
    "request_client_credentials",
    "request_device_code",
    "revoke_token",
]

logger = logging.getLogger("aioscopedauth.oauth")

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0
"""RFC 8628 §3.2: the interval when the provider names none."""
SLOW_DOWN_STEP = 5.0
"""RFC 8628 §3.5: every ``slow_down`` adds five seconds to the interval, for good."""
MAX_BACKOFF = 60.0
"""The longest wait between two polls after transport failures (doubling from the interval)."""
MAX_DEVICE_LIFETIME = 24 * 3600.0
"""A device code said to live longer than a day is taken to live a day."""


def _standard(config: OAuthConfig, what: str) -> None:
    if not config.is_standard:
        msg = f"{what} needs a standard provider: build the configuration with dialect='rfc6749'"
        raise ConfigError(msg)


def _scope(config: OAuthConfig, scopes: Iterable[str] | None) -> dict[str, str]:
    chosen = tuple(config.scopes if scopes is None else scopes)
    return {"scope": " ".join(chosen)} if chosen else {}


def _needs_access_token(answer: TokenResponse, action: str) -> TokenResponse:
    if answer.access_token is None:
        problems = "; ".join(answer.problems) or "it has no access_token"
        msg = f"Failed to {action}: the provider's answer is unusable ({problems}). Retry later."
        raise TransientRefreshError(msg)
    return answer


async def request_client_credentials(
    session: aiohttp.ClientSession, config: OAuthConfig, *, scopes: Iterable[str] | None = None
) -> TokenResponse:
    """Get an access token for the client itself (RFC 6749 §4.4): machine to machine.

    There is no refresh token: the caller asks again before ``expires_in`` runs out.

    Args:
        session: The HTTP session.
        config: A standard configuration of a confidential client.
        scopes: The scopes to ask for (default ``config.scopes``; none asks for the default).

    Returns:
        The answer, with a usable access token.

    Raises:
        ConfigError: The configuration is not standard, or has no client secret (§4.4: only
            confidential clients may use this grant).
        ClientConfigError: The provider refused the client, the grant or the scopes.
        TransientRefreshError: A 5xx, 429, timeout, connection failure or unusable answer.
    """
    _standard(config, "the client_credentials grant")
    if config.client_auth == "none":
        msg = "the client_credentials grant needs a confidential client: set client_secret"
        raise ConfigError(msg)
    action = "get a token with client credentials"
    status, text = await post_form(
        session,
        config,
        config.token_url,
        {"grant_type": "client_credentials", **_scope(config, scopes)},
        action=action,
    )
    if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
        return _needs_access_token(parse_success(text, status, action), action)
    raise classify_standard_failure(
        status, text, config=config, grant="client_credentials", action=action
    )


async def exchange_authorization_code(
    session: aiohttp.ClientSession,
    config: OAuthConfig,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> TokenResponse:
    """Exchange an authorization code for tokens (RFC 6749 §4.1.3, PKCE RFC 7636 §4.5).

    Args:
        session: The HTTP session.
        config: A standard configuration.
        code: The code the browser brought back.
        redirect_uri: The redirect URI of the authorization request, exactly.
        code_verifier: The PKCE verifier whose S256 challenge the request carried.

    Returns:
        The answer, with a usable access token.

    Raises:
        LoginError: The provider refused the code (``invalid_grant``: expired, used, or not
            issued for this verifier or redirect URI).
        ClientConfigError: The provider refused the client or the grant.
        TransientRefreshError: A 5xx, 429, timeout, connection failure or unusable answer.
    """
    _standard(config, "the authorization_code grant")
    action = "exchange the authorization code"
    status, text = await post_form(
        session,
        config,
        config.token_url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        },
        action=action,
        secrets=[code, code_verifier],
    )
    if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
        return _needs_access_token(parse_success(text, status, action), action)
    error = classify_standard_failure(
        status,
        text,
        config=config,
        grant="authorization_code",
        action=action,
        secrets=[code, code_verifier],
    )
    if type(error) is RefreshTokenFailedError:
        msg = (
            "The provider refused the authorization code (invalid_grant: expired, already used, "
            "or issued for another verifier or redirect URI). Start the login again."
        )
        raise LoginError(msg, error_code=error.error_code)
    raise error


@attrs.frozen
class DeviceCode:
    """A device authorization (RFC 8628 §3.2): what the user is shown, and what is polled.

    Attributes:
        user_code: The code the user types.
        verification_uri: Where the user types it.
        verification_uri_complete: A link that carries the code, when the provider gives one.
        expires_in: Seconds the codes live, from the answer.
        interval: Seconds between two polls (5 when the provider names none).
        device_code: What the client polls with; a secret, never shown.
    """

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float
    device_code: str = attrs.field(repr=False)


def parse_device_code(text: str) -> DeviceCode | str:
    """Parse a device authorization answer.

    Args:
        text: The body of a 2xx answer.

    Returns:
        The device code, or what is wrong with the answer (a phrase that quotes nothing).
    """
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return "it is not JSON"
    if not isinstance(obj, dict):
        return "it is not a JSON object"
    fields: dict[str, str] = {}
    # "verification_url" is the name an early draft used, and one large provider still does.
    aliases = {"verification_uri": ("verification_uri", "verification_url")}
    for key in ("device_code", "user_code", "verification_uri"):
        value = next((obj[k] for k in aliases.get(key, (key,)) if k in obj), None)
        if not isinstance(value, str) or not value or not value.isprintable():
            return f"its {key} is missing or not a printable string"
        fields[key] = value
    complete = obj.get("verification_uri_complete")
    expires_in, problem = parse_expires_in(obj.get("expires_in"))
    if expires_in is None:
        return "its expires_in is missing" if problem is None else problem
    interval, problem = parse_expires_in(obj.get("interval"))
    if problem is not None:
        return problem.replace("expires_in", "interval")
    return DeviceCode(
        user_code=fields["user_code"],
        verification_uri=fields["verification_uri"],
        verification_uri_complete=(
            complete if isinstance(complete, str) and complete.isprintable() else None
        ),
        expires_in=min(expires_in, MAX_DEVICE_LIFETIME),
        interval=DEFAULT_INTERVAL if interval is None else min(interval, MAX_BACKOFF),
        device_code=fields["device_code"],
    )


def _login_error(error: RefreshTokenFailedError | TransientRefreshError) -> LoginError:
    return LoginError(str(error), error_code=getattr(error, "error_code", None))


async def request_device_code(
    session: aiohttp.ClientSession, config: OAuthConfig, *, scopes: Iterable[str] | None = None
) -> DeviceCode:
    """Start a device login (RFC 8628 §3.1): ask the provider for a user code.

    Args:
        session: The HTTP session.
        config: A standard configuration with ``device_authorization_url``.
        scopes: The scopes to ask for (default ``config.scopes``).

    Returns:
        The device code, to show (:attr:`DeviceCode.user_code` …) and then poll.

    Raises:
        ConfigError: The configuration is not standard or names no device endpoint.
        ClientConfigError: The provider refused the client or the scopes.
        LoginError: The provider could not be reached, failed, or answered something that is
            not a device authorization; start again later.
    """
    _standard(config, "a device login")
    url = config.device_authorization_url
    if url is None:
        msg = "a device login needs device_authorization_url (OAuthConfig.discover finds it)"
        raise ConfigError(msg)
    action = "start a device login"
    try:
        status, text = await post_form(session, config, url, _scope(config, scopes), action=action)
    except TransientRefreshError as exc:
        raise _login_error(exc) from None
    if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
        device = parse_device_code(text)
        if isinstance(device, DeviceCode):
            return device
        msg = f"Failed to {action}: the provider's answer is unusable ({device}). Retry later."
        raise LoginError(msg)
    error = classify_standard_failure(
        status, text, config=config, grant=DEVICE_GRANT, action=action
    )
    if isinstance(error, ClientConfigError):
        raise error
    if status == 404:  # noqa: PLR2004 -- Not Found: no such endpoint
        msg = (
            f"Failed to {action}: {url} answered 404 Not Found: this provider has no device "
            "flow there; check device_authorization_url."
        )
        raise LoginError(msg)
    raise _login_error(error)


_PENDING = "authorization_pending"
_SLOW_DOWN = "slow_down"
_ENDINGS = {
    "access_denied": (
        "The device login was refused at the provider (access_denied). Start the login again "
        "if that was a mistake."
    ),
    "expired_token": (
        "The device code expired before the login was approved (expired_token). Start the "
        "login again and approve it before the new code expires."
    ),
    "invalid_grant": (
        "The provider refused the device code (invalid_grant: unknown, already used, or "
        "revoked). Start the login again."
    ),
}


async def poll_device_token(
    session: aiohttp.ClientSession,
    config: OAuthConfig,
    device: DeviceCode,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> TokenResponse:
    """Poll the token endpoint until the device login is approved (RFC 8628 §3.4, §3.5).

    The first poll is one interval after the call; ``authorization_pending`` polls again after
    the interval, ``slow_down`` adds five seconds to it for good; a 5xx, a timeout or a
    connection failure polls again after twice the last wait (at most a minute). The first
    token answer ends the polling: a device code presented again after its tokens were issued
    makes a strict provider revoke the login, so it is never polled again, even when that answer
    is unusable. Cancelling the call stops the polling and changes nothing.

    Args:
        session: The HTTP session.
        config: A standard configuration.
        device: The device code from :func:`request_device_code`.
        clock: Seconds on a monotonic clock (tests may pass their own).

    Returns:
        The tokens, with a usable access token.

    Raises:
        LoginError: ``access_denied``, ``expired_token``, ``invalid_grant``, the codes' lifetime
            over without an answer, or an unusable token answer.
        ClientConfigError: The provider refused the client or the grant.
    """
    _standard(config, "a device login")
    action = "finish the device login"
    # A little past the codes' lifetime, so the provider's own expired_token is what ends it.
    deadline = clock() + device.expires_in + 2 * device.interval
    interval = device.interval
    wait = interval
    while True:
        if clock() + wait > deadline:
            msg = _ENDINGS["expired_token"]
            raise LoginError(msg, error_code="expired_token")
        await asyncio.sleep(wait)
        try:
            status, text = await post_form(
                session,
                config,
                config.token_url,
                {"grant_type": DEVICE_GRANT, "device_code": device.device_code},
                action=action,
                secrets=[device.device_code],
            )
        except TransientRefreshError as exc:
            wait = min(max(wait, interval) * 2, MAX_BACKOFF)
            logger.debug("Device login: polling again in %g s after %s", wait, exc)
            continue
        if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
            answer = parse_standard_token_response(text)
            if answer is None or answer.access_token is None:
                # Never polled again (see above): the login must be started again.
                msg = (
                    f"Failed to {action}: the provider's token answer is unusable, and the "
                    "device code is not presented twice (a strict provider would revoke the "
                    "login). Start the login again."
                )
                raise LoginError(msg)
            return answer
        code, _ = parse_oauth_error(text)
        if code == _PENDING:
            wait = interval
            continue
        if code == _SLOW_DOWN:
            interval += SLOW_DOWN_STEP
            wait = interval
            continue
        if code in _ENDINGS:
            raise LoginError(_ENDINGS[code], error_code=code)
        error = classify_standard_failure(
            status,
            text,
            config=config,
            grant=DEVICE_GRANT,
            action=action,
            secrets=[device.device_code],
        )
        if isinstance(error, RefreshTokenFailedError):
            raise error  # a ClientConfigError: invalid_grant was handled above
        wait = min(max(wait, interval) * 2, MAX_BACKOFF)
        logger.debug("Device login: polling again in %g s after %s", wait, error)


async def device_login(
    session: aiohttp.ClientSession,
    config: OAuthConfig,
    show: Callable[[DeviceCode], Awaitable[None] | None],
    *,
    scopes: Iterable[str] | None = None,
) -> TokenResponse:
    """Run a whole device login: get a code, ``show`` it once, poll until it is approved.

    Args:
        session: The HTTP session.
        config: A standard configuration with ``device_authorization_url``.
        show: Called once with the :class:`DeviceCode` (``user_code``, ``verification_uri``,
            ``verification_uri_complete``, ``expires_in``, ``interval``); may be a coroutine
            function. Polling starts when it returns.
        scopes: The scopes to ask for (default ``config.scopes``).

    Returns:
        The tokens.

    Raises:
        ConfigError: See :func:`request_device_code`.
        LoginError: See :func:`request_device_code` and :func:`poll_device_token`.
    """
    device = await request_device_code(session, config, scopes=scopes)
    shown = show(device)
    if inspect.isawaitable(shown):
        await shown
    return await poll_device_token(session, config, device)


async def revoke_token(
    session: aiohttp.ClientSession,
    config: OAuthConfig,
    token: str,
    *,
    token_type_hint: str = "refresh_token",  # noqa: S107 -- a hint name, not a secret
) -> bool:
    """Revoke a token at the provider (RFC 7009); revoking a refresh token ends the login.

    Args:
        session: The HTTP session.
        config: A standard configuration.
        token: The token.
        token_type_hint: ``"refresh_token"`` or ``"access_token"``.

    Returns:
        ``True`` when the provider confirmed (200; it answers 200 for an unknown or already
        revoked token too, §2.2), ``False`` when there is no ``revocation_url``.

    Raises:
        ClientConfigError: The provider refused the client.
        TransientRefreshError: A 5xx, 429 (``unsupported_token_type`` too), timeout or
            connection failure: the token may still be live; try again.
    """
    _standard(config, "revocation")
    if config.revocation_url is None:
        return False
    if not is_header_safe(token):
        msg = "the token to revoke contains a line break or a control character"
        raise ConfigError(msg)
    action = "revoke the token"
    status, text = await post_form(
        session,
        config,
        config.revocation_url,
        {"token": token, "token_type_hint": token_type_hint},
        action=action,
        secrets=[token],
    )
    if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
        return True
    error = classify_standard_failure(
        status, text, config=config, grant="revocation", action=action, secrets=[token]
    )
    if isinstance(error, ClientConfigError):
        raise error
    raise TransientRefreshError(str(error), status=status)
