"""The OAuth refresh-token request and the classification of its failures (reference §3).

The decisions (which error code means what, is a failure permanent, when is a token stale) are
small pure functions; :func:`request_codex_refresh` is the only code here that does I/O.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import attrs

from ._client_jwt import PrivateKeyJWT
from ._errors import (
    AuthDataError,
    AuthError,
    ConfigError,
    TransientRefreshError,
)
from ._jwt import PlanType, decode_jwt_payload
from ._model import (
    DEFAULT_ACCOUNT_HEADER,
    UNSENDABLE,
    AccountIdentity,
    Auth,
    AuthMode,
    is_header_safe,
)
from ._token_answer import (
    ACCOUNT_MISMATCH_MESSAGE,
    EXHAUSTED_MESSAGE,
    EXPIRED_MESSAGE,
    MAX_ERROR_BODY,
    MAX_EXPIRES_IN,
    MAX_SUCCESS_BODY,
    MAX_TOKEN_CHARS,
    OTHER_MESSAGE,
    REVOKED_MESSAGE,
    TokenResponse,
    classify_refresh_failure,
    extract_error_code,
    json_object,
    parse_success,
    parse_token_response,
    read_capped,
    scrub,
    status_text,
    token_fields,
)

__all__ = [
    "ACCOUNT_MISMATCH_MESSAGE",
    "AUTHAPI_BASE_URL_ENV",
    "CODEX_AUTHAPI_BASE_URL",
    "CODEX_CLIENT_ID",
    "CODEX_TOKEN_URL",
    "EXHAUSTED_MESSAGE",
    "EXPIRED_MESSAGE",
    "MAX_ERROR_BODY",
    "MAX_EXPIRES_IN",
    "MAX_SUCCESS_BODY",
    "MAX_TOKEN_CHARS",
    "OTHER_MESSAGE",
    "REVOKED_MESSAGE",
    "WHOAMI_PATH",
    "OAuthConfig",
    "TokenResponse",
    "absolute_expiry",
    "classify_refresh_failure",
    "extract_error_code",
    "is_stale",
    "json_object",
    "min_refresh_gap",
    "parse_account_identity",
    "parse_success",
    "parse_token_response",
    "read_capped",
    "request_account_identity",
    "request_codex_refresh",
    "scrub",
    "status_text",
    "token_fields",
]

logger = logging.getLogger("aioscopedauth.oauth")

CODEX_TOKEN_URL = "https://auth.openai.com/oauth/token"  # noqa: S105 -- a URL, not a secret
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
TOKEN_URL_OVERRIDE_ENV = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"  # noqa: S105 -- a variable name
CODEX_AUTHAPI_BASE_URL = "https://auth.openai.com/api/accounts"
AUTHAPI_BASE_URL_ENV = "CODEX_AUTHAPI_BASE_URL"
WHOAMI_PATH = "/v1/user-auth-credential/whoami"
Dialect = Literal["codex", "rfc6749"]
"""How token requests are written and their errors read: Codex's JSON refresh, or RFC 6749."""
ClientAuth = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
"""How the client authenticates at the token endpoint (RFC 6749 §2.3, OpenID Connect §9)."""
DIALECTS: tuple[Dialect, ...] = ("codex", "rfc6749")
CLIENT_AUTH_METHODS: tuple[ClientAuth, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
)


_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
"""RFC 6749 §3.3: a scope is printable ASCII without space, ``"`` or ``\\``."""


def _scopes(value: object) -> tuple[str, ...]:
    # A string is the space-delimited form of RFC 6749 §3.3 (`"openid offline_access"`); a
    # tuple of one string per scope is the documented form. Anything else is kept as given and
    # refused by the validation below with a message, not a TypeError from here.
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)  # type: ignore[return-value]  # refused by _client_problem


def _default_client_auth(config: OAuthConfig) -> ClientAuth:
    if config.client_key is not None:
        return "private_key_jwt"
    return "client_secret_basic" if config.client_secret is not None else "none"


@attrs.frozen
class OAuthConfig:
    """Where and how managed OAuth tokens are refreshed, and where logins go.

    Two dialects: ``"codex"`` (the default, and :meth:`codex`) is Codex's own refresh, a JSON
    body with the client id and Codex's error codes, exactly as Codex sends it; ``"rfc6749"``
    (from :meth:`discover`, or asked for) is the standard one: form-encoded requests, client
    authentication by ``client_auth``, the standard error codes (RFC 6749 §5.2) and
    ``expires_in``.

    Args:
        token_url: The token endpoint.
        client_id: The OAuth client id sent with every refresh.
        client_secret: The client's secret (confidential clients). Never shown in a ``repr``,
            a log or an error.
        client_auth: How the client authenticates: ``"client_secret_basic"`` (HTTP Basic,
            id and secret form-encoded first, RFC 6749 §2.3.1), ``"client_secret_post"``
            (both in the form), ``"private_key_jwt"`` (a JWT signed with ``client_key``,
            RFC 7523 §2.2) or ``"none"`` (a public client: only ``client_id`` in the form).
            Defaults to ``"private_key_jwt"`` with a ``client_key``,
            ``"client_secret_basic"`` with a secret, else ``"none"``.
        client_key: The private key of ``private_key_jwt``
            (:class:`~aioscopedauth.PrivateKeyJWT`: the key, ``kid``, algorithm, assertion
            lifetime and audience). Needs the ``jwt`` extra.
        scopes: The scopes a login asks for (a tuple, or one space-delimited string). A
            refresh asks for none (the provider keeps the granted ones).
        device_authorization_url: The device authorization endpoint (RFC 8628), if any.
        authorization_url: The authorization endpoint (browser logins), if any.
        revocation_url: The revocation endpoint (RFC 7009), if any.
        issuer: The provider's issuer (set by :meth:`discover`). A standard login stores it
            (else ``token_url``) to tell the provider's logins from another's.
        dialect: ``"codex"`` or ``"rfc6749"`` (see above). A client secret or a
            ``client_auth`` other than ``"none"`` needs ``"rfc6749"``.
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
    client_secret: str | None = attrs.field(default=None, kw_only=True, repr=False)
    client_key: PrivateKeyJWT | None = attrs.field(default=None, kw_only=True)
    client_auth: ClientAuth = attrs.field(
        default=attrs.Factory(_default_client_auth, takes_self=True), kw_only=True
    )
    scopes: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_scopes)
    device_authorization_url: str | None = attrs.field(default=None, kw_only=True)
    authorization_url: str | None = attrs.field(default=None, kw_only=True)
    revocation_url: str | None = attrs.field(default=None, kw_only=True)
    dialect: Dialect = attrs.field(default="codex", kw_only=True)
    issuer: str | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        """Refuse impossible combinations with a :class:`ConfigError` that says what to change.

        Raises:
            ConfigError: See :func:`config_problem`.
        """
        problem = config_problem(self)
        if problem is not None:
            msg = f"OAuthConfig: {problem}"
            raise ConfigError(msg)

    @property
    def is_standard(self) -> bool:
        """Whether requests follow RFC 6749 (``dialect == "rfc6749"``)."""
        return self.dialect == "rfc6749"

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

    @classmethod
    async def discover(
        cls,
        issuer: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        scopes: Iterable[str] | str = (),
        http: aiohttp.ClientSession | None = None,
        **overrides: Any,  # noqa: ANN401 -- forwarded to __init__
    ) -> OAuthConfig:
        """Read a provider's metadata and return its standard (RFC 6749) configuration.

        OpenID Connect discovery (``{issuer}/.well-known/openid-configuration``) is read
        first, then RFC 8414 (``/.well-known/oauth-authorization-server``, inserted before
        the issuer's path). The metadata must name the same ``issuer`` (a mix-up defence both
        specifications require) and a ``token_endpoint``. ``client_auth`` is
        ``"client_secret_basic"`` with a secret (``"client_secret_post"`` when that is the
        only one the provider lists), else ``"none"``.

        Args:
            issuer: The issuer URL (``https``; ``http`` only on a loopback address).
            client_id: The client id.
            client_secret: The client secret of a confidential client.
            scopes: The scopes logins ask for.
            http: The session to read with (default: a new one, closed after).
            **overrides: Any other field; it wins over what the metadata says.

        Returns:
            The configuration, ``dialect="rfc6749"``.

        Raises:
            ConfigError: The issuer is not a usable URL, neither document could be read or
                used, or the result is an impossible combination. The message names the URL
                and what to check.
        """
        from ._discovery import config_fields, discover_metadata  # noqa: PLC0415 -- on use

        metadata = await discover_metadata(issuer, http=http, wait=overrides.get("timeout"))
        client_auth = overrides.get("client_auth")
        if client_auth is None and overrides.get("client_key") is not None:
            client_auth = "private_key_jwt"
        fields = config_fields(metadata, client_secret=client_secret, client_auth=client_auth)
        fields.update(overrides)
        fields.setdefault("issuer", metadata.get("issuer", issuer))
        return cls(
            fields.pop("token_url"),
            client_id,
            client_secret=client_secret,
            scopes=scopes,
            dialect="rfc6749",
            **{k: v for k, v in fields.items() if k != "dialect"},
        )


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def config_problem(config: OAuthConfig) -> str | None:
    """Say what is impossible about a configuration, if anything (a pure check).

    Args:
        config: The configuration.

    Returns:
        One sentence naming the fields and what to change (never a secret's value), or ``None``.
    """
    for check in (_choice_problem, _key_problem, _secret_problem, _client_problem, _url_problem):
        problem = check(config)
        if problem is not None:
            return problem
    return None


def _choice_problem(config: OAuthConfig) -> str | None:
    # Values are typed as `object`: they come from callers, who may pass anything. They are
    # not quoted: a secret pasted into the wrong field must not be shown.
    dialect: object = config.dialect
    method: object = config.client_auth
    if dialect not in DIALECTS:
        return f"dialect must be one of {', '.join(map(repr, DIALECTS))}"
    if method not in CLIENT_AUTH_METHODS:
        return f"client_auth must be one of {', '.join(map(repr, CLIENT_AUTH_METHODS))}"
    return None


def _key_problem(config: OAuthConfig) -> str | None:  # noqa: PLR0911 -- one answer per case
    key: object = config.client_key
    if key is not None and not isinstance(key, PrivateKeyJWT):
        return "client_key must be a PrivateKeyJWT (the private key of private_key_jwt)"
    if config.client_auth == "private_key_jwt":
        if key is None:
            return "client_auth 'private_key_jwt' needs a client_key (a PrivateKeyJWT)"
        if config.client_secret is not None:
            return (
                "client_auth 'private_key_jwt' sends no secret, yet client_secret is set: drop "
                "the secret"
            )
        if (
            config.client_key is not None
            and config.client_key.audience == "issuer"
            and (config.issuer is None)
        ):
            return (
                "client_key's audience is 'issuer' but issuer is not set: pass issuer=... "
                "(or use OAuthConfig.discover)"
            )
        return None
    if key is not None:
        return (
            f"client_key is set but client_auth is {config.client_auth!r}: use client_auth "
            "'private_key_jwt', or drop the key"
        )
    return None


def _secret_problem(config: OAuthConfig) -> str | None:
    secret: object = config.client_secret
    if secret is not None and (not isinstance(secret, str) or not secret):
        return "client_secret must be a non-empty string, or None for a public client"
    if not config.is_standard:
        if secret is not None or config.client_auth != "none":
            return (
                "Codex's dialect sends no client secret: pass dialect='rfc6749' for a standard "
                "provider (or build the configuration with OAuthConfig.discover)"
            )
        return None
    if config.client_auth == "none" and secret is not None:
        return (
            "client_auth 'none' sends no secret, yet client_secret is set: drop the secret, or "
            "use 'client_secret_basic' or 'client_secret_post'"
        )
    if config.client_auth not in {"none", "private_key_jwt"} and secret is None:
        return f"client_auth {config.client_auth!r} needs a client_secret"
    return None


def _client_problem(config: OAuthConfig) -> str | None:
    client_id: object = config.client_id
    if not isinstance(client_id, str) or not client_id:
        return "client_id must be a non-empty string"
    if config.is_standard and not is_header_safe(client_id):
        return f"client_id {UNSENDABLE}"
    scopes: tuple[object, ...] = config.scopes
    if not all(isinstance(s, str) and _SCOPE_TOKEN.fullmatch(s) for s in scopes):
        return (
            "each scope must be printable ASCII without spaces, quotes or backslashes "
            "(RFC 6749 §3.3); pass a tuple of scopes or one space-delimited string"
        )
    # Only for the new dialect: a Codex configuration behaves exactly as it did.
    timeout: object = config.timeout
    if config.is_standard and not (
        isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0
    ):
        return "timeout must be a positive number of seconds"
    return None


def _url_problem(config: OAuthConfig) -> str | None:
    urls: dict[str, object] = {
        "token_url": config.token_url if config.is_standard else None,
        "device_authorization_url": config.device_authorization_url,
        "authorization_url": config.authorization_url,
        "revocation_url": config.revocation_url,
    }
    for name, url in urls.items():
        if url is not None and (not isinstance(url, str) or not _is_url(url)):
            return f"{name} must be an absolute http(s) URL"
    return None


def _lifetime(auth: Auth) -> tuple[datetime | None, timedelta | None]:
    """The access token's ``exp`` and lifetime (from ``iat``, else ``last_refresh``), if known."""
    if auth.data is None or auth.data.tokens is None:
        return None, None
    stored = auth.data.tokens.expires_at
    if stored is not None:
        # A standard provider's login: the expiry its answer gave, whatever the token is.
        issued = auth.data.last_refresh
        if issued is None or stored <= issued:
            return stored, None
        return stored, stored - issued
    try:
        claims = decode_jwt_payload(auth.data.tokens.access_token)
    except AuthDataError:
        claims = {}
    exp = _timestamp(claims.get("exp"))
    if exp is None:
        return None, None
    issued = _timestamp(claims.get("iat")) or auth.data.last_refresh
    if issued is None or exp <= issued:
        return exp, None
    return exp, exp - issued


_PROACTIVE = frozenset({AuthMode.CHATGPT, AuthMode.OAUTH})
"""The modes refreshed before they expire: the managed logins (host tokens only after a 401)."""


def stale_at(auth: Auth, config: OAuthConfig) -> datetime | None:
    """Return when a snapshot becomes due for a proactive refresh (reference §2.5).

    Only managed logins (ChatGPT's, and a standard provider's) are refreshed proactively. A
    login that stores its access token's expiry (``tokens.expires_at``, a standard
    provider's) is due by that, opaque token or not; else by the access token's ``exp``.

    Args:
        auth: The snapshot.
        config: Supplies the window and the maximum age.

    Returns:
        The access token's ``exp`` minus the refresh window (capped at a quarter of the token's
        lifetime, from ``iat`` or ``last_refresh``); for a token without ``exp``,
        ``last_refresh`` plus ``max_age``; ``None`` when it is never refreshed proactively.
        Dates at the ends of the calendar saturate (due at once, or never) instead of raising.
    """
    if auth.mode not in _PROACTIVE or auth.data is None or auth.data.tokens is None:
        return None
    exp, lifetime = _lifetime(auth)
    if exp is not None:
        window = (
            config.refresh_window if lifetime is None else min(config.refresh_window, lifetime / 4)
        )
        try:
            return exp - window
        except OverflowError:
            return exp  # an exp at the start of the calendar: due (long) ago
    refreshed = auth.data.last_refresh
    if refreshed is None:
        return None
    try:
        return refreshed + config.max_age
    except OverflowError:
        return None  # a last_refresh at the end of the calendar: never due by age


def absolute_expiry(sent: datetime, expires_in: float) -> datetime:
    """When an access token granted ``expires_in`` seconds by a request sent at ``sent`` dies.

    Providers count whole seconds: a token issued at 10.9 s for 2 s has ``iat`` 10 and ``exp``
    12, so it lives 1.1 s. A second is taken off (half the lifetime when it is shorter than
    two seconds), so the expiry kept is never later than the provider's.

    Args:
        sent: When the token request was sent (before the POST).
        expires_in: The answer's ``expires_in``.

    Returns:
        The instant to treat as the access token's expiry.
    """
    return sent + timedelta(seconds=expires_in - min(1.0, expires_in / 2))


DEFAULT_REFRESH_GAP = 5.0
"""Seconds between two proactive refreshes when a token's lifetime is unknown."""


def min_refresh_gap(auth: Auth) -> float:
    """Return the shortest time between two proactive refreshes of a login like ``auth``.

    A quarter of the access token's lifetime (``iat``, else ``last_refresh``, to ``exp``), or
    :data:`DEFAULT_REFRESH_GAP` when it is unknown. It applies only to a token that was due for
    a refresh the moment a refresh produced it (a wrong clock, or an endpoint that issues
    expired tokens), which would otherwise be refreshed on every call.

    Args:
        auth: A snapshot that was just refreshed or adopted.

    Returns:
        Seconds.
    """
    _, lifetime = _lifetime(auth)
    if lifetime is None:
        return DEFAULT_REFRESH_GAP
    return lifetime.total_seconds() / 4


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


async def request_codex_refresh(
    session: aiohttp.ClientSession, config: OAuthConfig, refresh_token: str
) -> TokenResponse:
    """Spend a refresh token in Codex's dialect (reference §3.1): a JSON body, Codex's codes.

    Args:
        session: The HTTP session.
        config: The endpoint, client id and timeout.
        refresh_token: The refresh token to spend.

    Returns:
        The tokens the endpoint returned (``expires_in`` is not read, as Codex does not).

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
                raw = await read_capped(response, MAX_SUCCESS_BODY)
                if raw is None:
                    msg = (
                        "Failed to refresh token: the token endpoint's answer is larger than "
                        f"{MAX_SUCCESS_BODY // 1024} KiB. Retry later."
                    )
                    raise TransientRefreshError(msg, status=response.status)
                return parse_success(raw.decode("utf-8", errors="replace"), response.status)
            status = response.status
            raw = await read_capped(response, MAX_ERROR_BODY) or b""
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
    # DEBUG, not ERROR: the failure is raised to the caller, who decides (and a refused
    # refresh is often recovered: another writer's tokens are adopted).
    logger.debug(
        "Token endpoint refused the refresh: %s: %s",
        status_text(status),
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
            raw = await read_capped(response, MAX_ERROR_BODY)
    except TimeoutError:
        msg = f"the whoami endpoint did not answer within {config.timeout:g} s"
        raise AuthError(msg) from None
    except aiohttp.ClientError as exc:
        # Not chained: a client error may quote the request, and the request carries the token.
        msg = f"could not reach the whoami endpoint ({type(exc).__name__}: {exc})"
        raise AuthError(scrub(msg, [token])) from None
    if not 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
        msg = f"the whoami endpoint answered {status_text(status)}"
        raise AuthError(msg)
    if raw is None:
        msg = f"the whoami answer is larger than {MAX_ERROR_BODY // 1024} KiB"
        raise AuthError(msg)
    return parse_account_identity(raw)
