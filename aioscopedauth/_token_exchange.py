"""Workload identity: a subject token exchanged for an access token (RFC 8693).

A workload already holds a token that says who it is (a Kubernetes projected service-account
token, a CI job's OIDC token) and trades it at the provider's token endpoint for an access
token to an API. :class:`TokenExchangeSource` is a bearer source for
``AuthManager.with_external_bearer_refresher``: it exchanges once for every caller, again
before the access token expires, again when the subject token changes (kubelet rotates a
projected token by swapping the file), and again after a 401 — once per rejected token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

import aiohttp
import attrs

from ._command import ProviderAuthCommand, parse_command_output, run_provider_command
from ._errors import ConfigError, TransientRefreshError
from ._external import ExternalAuthTokens, RefreshContext
from ._model import AuthMode
from ._oauth import scrub
from ._rfc6749 import classify_standard_failure, hidden_values, parse_success, post_form

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable

    from ._oauth import OAuthConfig

__all__ = ["GRANT_TYPE", "TOKEN_TYPES", "TokenExchangeSource", "exchange_fields"]

logger = logging.getLogger("aioscopedauth.oauth")

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
"""The grant type of RFC 8693 §2.1."""
TOKEN_TYPES: Final = {
    "jwt": "urn:ietf:params:oauth:token-type:jwt",
    "id_token": "urn:ietf:params:oauth:token-type:id_token",
    "access_token": "urn:ietf:params:oauth:token-type:access_token",
    "refresh_token": "urn:ietf:params:oauth:token-type:refresh_token",
    "saml2": "urn:ietf:params:oauth:token-type:saml2",
}
"""Short names of the token type URIs of RFC 8693 §3 (a full URI is accepted as is)."""
RENEW_FRACTION: Final = 0.75
"""An access token is exchanged again after this share of its ``expires_in``."""
FILE_CHECK_INTERVAL: Final = 1.0
"""Seconds between two looks at the subject token file (a ``stat`` in a worker thread)."""
MAX_SUBJECT_BYTES: Final = 64 * 1024


def exchange_fields(  # noqa: PLR0913 -- the request's parameters, by name
    subject_token: str,
    subject_token_type: str,
    *,
    audience: Iterable[str] = (),
    resource: Iterable[str] = (),
    scopes: Iterable[str] = (),
    requested_token_type: str | None = None,
) -> list[tuple[str, str]]:
    """The form of a token exchange request (RFC 8693 §2.1), a pure function.

    Args:
        subject_token: The token that says who the workload is.
        subject_token_type: Its type URI.
        audience: Logical names of the target services (the parameter repeats, §2.1).
        resource: URIs of the target services (the parameter repeats).
        scopes: Scopes asked for (one space-delimited ``scope``).
        requested_token_type: The type URI of the token wanted, if it matters.

    Returns:
        The fields, in order, repeated parameters kept.
    """
    fields = [
        ("grant_type", GRANT_TYPE),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
    ]
    fields += [("audience", value) for value in audience]
    fields += [("resource", value) for value in resource]
    scope = " ".join(scopes)
    if scope:
        fields.append(("scope", scope))
    if requested_token_type is not None:
        fields.append(("requested_token_type", requested_token_type))
    return fields


def _type_uri(value: str, what: str) -> str:
    uri = TOKEN_TYPES.get(value, value)
    if not uri.startswith("urn:"):
        msg = (
            f"TokenExchangeSource: {what} must be a token type URI or one of "
            f"{', '.join(TOKEN_TYPES)}"
        )
        raise ConfigError(msg)
    return uri


def _names(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.define(eq=False)
class _Issued:
    token: ExternalAuthTokens
    subject: str
    renew_at: float | None  # monotonic; None: only a 401 or a new subject replaces it


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()  # follows the symlink kubelet swaps on rotation
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_subject(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SUBJECT_BYTES + 1)
    except OSError as exc:
        msg = (
            f"Failed to read the subject token file {path} ({exc.strerror}): check the path and "
            "that the token is mounted"
        )
        raise TransientRefreshError(msg) from None
    if len(data) > MAX_SUBJECT_BYTES:
        msg = f"The subject token file {path} is larger than {MAX_SUBJECT_BYTES // 1024} KiB"
        raise TransientRefreshError(msg)
    text = data.decode("utf-8", errors="replace").strip()
    if not text or any(c.isspace() for c in text):
        msg = f"The subject token file {path} is empty or holds more than one token"
        raise TransientRefreshError(msg)
    return text


class TokenExchangeSource:
    """A bearer source that exchanges a workload's subject token (RFC 8693).

    Use it with ``manager.with_external_bearer_refresher(source)``. Exchanges happen once for
    every concurrent caller (a lock), and:

    * on first use;
    * after ``RENEW_FRACTION`` of the access token's ``expires_in`` (without one, the token is
      kept until a 401 or a new subject token);
    * when the subject token file changed (looked at once every ``file_check_interval`` at
      most; its content is compared, so a touch alone does not exchange);
    * after a 401, once per rejected token: a caller whose rejected token was already replaced
      gets the new one without another exchange.

    A subject command runs at every exchange (it caches on its own terms, as CI tools do).

    Args:
        config: The provider's standard configuration (``token_url``, client authentication;
            a public client sends its ``client_id``).
        subject_token_file: A file holding the subject token (re-read when it changes).
        subject_command: A command that prints it (plain, or JSON with ``token``).
        subject_token_type: Its type: a URI or a short name of ``TOKEN_TYPES``
            (default ``"jwt"``).
        audience: The ``audience`` value(s) to ask for.
        resource: The ``resource`` URI(s) to ask for.
        scopes: The scopes to ask for (default ``config.scopes``).
        requested_token_type: The type of the token wanted (default: the provider's choice,
            which must be usable as a bearer access token).
        http: The session to send with (default: one of its own, closed by :meth:`aclose`).
        file_check_interval: Seconds between two looks at the subject token file (``0``:
            at every call).

    Raises:
        ConfigError: Neither or both subject sources, a configuration not in the standard
            dialect, or a token type that is not a URI.
    """

    cache_resolved = False
    """The manager asks :meth:`resolve` on every call: expiry and file changes are kept here."""

    def __init__(  # noqa: PLR0913 -- the exchange's parameters, by name
        self,
        config: OAuthConfig,
        *,
        subject_token_file: str | os.PathLike[str] | None = None,
        subject_command: ProviderAuthCommand | None = None,
        subject_token_type: str = "jwt",  # noqa: S107 -- a token type's name, not a secret
        audience: Iterable[str] | str | None = None,
        resource: Iterable[str] | str | None = None,
        scopes: Iterable[str] | str | None = None,
        requested_token_type: str | None = None,
        http: aiohttp.ClientSession | None = None,
        file_check_interval: float = FILE_CHECK_INTERVAL,
    ) -> None:
        """Create the source; see the class docstring."""
        if not config.is_standard:
            msg = "TokenExchangeSource needs a standard configuration (dialect='rfc6749')"
            raise ConfigError(msg)
        if (subject_token_file is None) == (subject_command is None):
            msg = "TokenExchangeSource: pass exactly one of subject_token_file and subject_command"
            raise ConfigError(msg)
        self._config = config
        self._file = None if subject_token_file is None else Path(subject_token_file).expanduser()
        self._command = subject_command
        self._subject_type = _type_uri(subject_token_type, "subject_token_type")
        self._requested = (
            None
            if requested_token_type is None
            else _type_uri(requested_token_type, "requested_token_type")
        )
        self._audience = _names(audience)
        self._resource = _names(resource)
        self._scopes = (
            config.scopes
            if scopes is None
            else _names(scopes.split() if isinstance(scopes, str) else scopes)
        )
        self._http = http
        self._own_http: aiohttp.ClientSession | None = None
        self._issued: _Issued | None = None
        self._file_key: tuple[int, int, int] | None = None
        self._file_checked = -math.inf
        self._file_check_interval = file_check_interval
        self._lock = asyncio.Lock()
        self.exchanges = 0
        """How many exchange requests were sent (for status and tests)."""

    @property
    def mode(self) -> AuthMode:
        """``AuthMode.BEARER``."""
        return AuthMode.BEARER

    def __repr__(self) -> str:
        """Name the subject's source and the token endpoint, never a token."""
        subject = (
            f"file={str(self._file)!r}"
            if self._file is not None
            else f"command={self._command.command if self._command else None!r}"
        )
        return (
            f"<TokenExchangeSource {subject} token_url={self._config.token_url!r} "
            f"exchanges={self.exchanges}>"
        )

    async def aclose(self) -> None:
        """Close the session this source opened for itself, if any."""
        if self._own_http is not None:
            await self._own_http.close()
            self._own_http = None

    async def __aenter__(self) -> Self:
        """Use as ``async with``: :meth:`aclose` on exit."""
        return self

    async def __aexit__(self, *_: object) -> None:
        """Close the session this source opened."""
        await self.aclose()

    async def resolve(self) -> ExternalAuthTokens:
        """The current access token, exchanging first when there is none or it is due.

        Returns:
            The access token (with ``expires_at`` when the provider said).

        Raises:
            TransientRefreshError: The subject token could not be read, or the exchange failed
                for a passing reason.
            RefreshTokenFailedError: The provider refused the subject token (``invalid_grant``),
                or a :class:`ClientConfigError` naming a configuration problem.
        """
        issued = self._issued
        if issued is not None and not self._due(issued) and not await self._file_changed():
            return issued.token
        async with self._lock:
            issued = self._issued
            if issued is not None and not self._due(issued):
                subject = await self._subject()
                if subject == issued.subject:
                    return issued.token
                return await self._exchange(subject)
            return await self._exchange(await self._subject())

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        """Exchange again after a server rejected the current access token.

        Args:
            context: Carries the rejected token: when another caller already replaced it,
                that replacement is returned without another exchange.

        Returns:
            The new access token.

        Raises:
            TransientRefreshError: See :meth:`resolve`.
            RefreshTokenFailedError: See :meth:`resolve`.
        """
        async with self._lock:
            issued = self._issued
            if (
                issued is not None
                and context.rejected_token is not None
                and issued.token.access_token != context.rejected_token
            ):
                return issued.token
            return await self._exchange(await self._subject())

    def _due(self, issued: _Issued) -> bool:
        return issued.renew_at is not None and time.monotonic() >= issued.renew_at

    async def _file_changed(self) -> bool:
        if self._file is None:
            return False
        now = time.monotonic()
        if now - self._file_checked < self._file_check_interval:
            return False
        self._file_checked = now
        key = await asyncio.to_thread(_stat, self._file)
        return key != self._file_key

    async def _subject(self) -> str:
        if self._file is not None:
            path = self._file
            key = await asyncio.to_thread(_stat, path)
            subject = await asyncio.to_thread(_read_subject, path)
            self._file_key = key
            self._file_checked = time.monotonic()
            return subject
        assert self._command is not None  # noqa: S101 -- the constructor checked it
        stdout = await run_provider_command(self._command)
        tokens = parse_command_output(stdout, self._command.command, datetime.now(UTC))
        return tokens.access_token

    def _session(self) -> aiohttp.ClientSession:
        if self._http is not None:
            return self._http
        if self._own_http is None or self._own_http.closed:
            self._own_http = aiohttp.ClientSession()
        return self._own_http

    async def _exchange(self, subject: str) -> ExternalAuthTokens:
        config = self._config
        action = "exchange the subject token"
        fields = exchange_fields(
            subject,
            self._subject_type,
            audience=self._audience,
            resource=self._resource,
            scopes=self._scopes,
            requested_token_type=self._requested,
        )
        self.exchanges += 1
        started = time.monotonic()
        sent = datetime.now(UTC)
        status, text = await post_form(
            self._session(), config, config.token_url, fields, action=action, secrets=[subject]
        )
        if not 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range, by definition
            logger.debug(
                "Token endpoint refused the exchange: %s",
                scrub(text, hidden_values(config, [subject])),
            )
            raise classify_standard_failure(
                status, text, config=config, grant=GRANT_TYPE, action=action, secrets=[subject]
            )
        answer = parse_success(text, status, action)
        if answer.access_token is None:
            problems = "; ".join(answer.problems) or "it has no access_token"
            msg = f"Failed to {action}: the answer is not usable ({problems}). Retry later."
            raise TransientRefreshError(msg, status=status)
        expires_at = renew_at = None
        if answer.expires_in is not None:
            expires_at = sent + timedelta(seconds=answer.expires_in)
            renew_at = started + answer.expires_in * RENEW_FRACTION
        token = ExternalAuthTokens(answer.access_token, expires_at=expires_at)
        self._issued = _Issued(token, subject, renew_at)
        return token
