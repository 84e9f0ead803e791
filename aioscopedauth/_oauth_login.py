"""Logins at a standard OAuth 2.0 / OpenID provider, and the revocation a logout makes.

Free functions over the snapshot cell and the store reader, like :mod:`._login`: each gets
tokens with one of the standard grants (:mod:`._grants`), writes an ``auth_mode: "oauth"``
payload naming the provider, the client, the subject and the grant
(:class:`~aioscopedauth.ProviderLogin`), and ends with the cell's one writer. From then on the
refresh coordinator keeps the login fresh (a client's own login is minted again instead).

Invariants: nothing is saved until the provider issued tokens; a code, a verifier, a state or a
token never reaches a message; the loopback server of a browser login is closed on every way
out, cancellation included.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import inspect
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import attrs

from ._errors import (
    AuthDataError,
    ClientConfigError,
    ConfigError,
    LoginError,
    RefreshTokenFailedError,
    StorageError,
    TransientRefreshError,
)
from ._grants import (
    device_login,
    exchange_authorization_code,
    request_client_credentials,
    revoke_token,
)
from ._jwt import decode_jwt_payload
from ._model import AuthDotJson, AuthMode, LoginGrant, ProviderLogin
from ._oauth import absolute_expiry
from ._rfc6749 import request_refresh

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp import web

    from ._grants import DeviceCode
    from ._loader import StoreReader
    from ._oauth import OAuthConfig, TokenResponse
    from ._snapshot import SnapshotCell

__all__ = [
    "CLOSE_PAGE",
    "browser_login",
    "client_credentials_login",
    "device_code_login",
    "refresh_token_login",
    "revoke_stored_login",
]

logger = logging.getLogger("aioscopedauth.oauth")

CALLBACK_PATH = "/callback"
CLOSE_PAGE = "You are logged in. You may close this window and return to the application."
"""What the browser shows once the provider sent it back with a code."""
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
_REFUSED_PAGE = "The login did not complete ({reason}). You may close this window."


def _standard(config: OAuthConfig, what: str) -> None:
    if not config.is_standard:
        msg = f"{what} needs a standard provider: build the configuration with OAuthConfig.discover"
        raise ConfigError(msg)


def _subject(id_token: str | None) -> str | None:
    if id_token is None:
        return None
    try:
        sub = decode_jwt_payload(id_token).get("sub")
    except AuthDataError:
        return None
    return sub if isinstance(sub, str) else None


def _payload(
    config: OAuthConfig, answer: TokenResponse, grant: LoginGrant, sent: datetime
) -> AuthDotJson:
    assert answer.access_token is not None  # noqa: S101 -- the grants return usable answers
    login = ProviderLogin(
        issuer=config.issuer or config.token_url,
        client_id=config.client_id,
        subject=_subject(answer.id_token),
        grant=grant,
    )
    expires_at = None if answer.expires_in is None else absolute_expiry(sent, answer.expires_in)
    try:
        return AuthDotJson.for_provider_login(
            login,
            access_token=answer.access_token,
            refresh_token=answer.refresh_token,
            id_token=answer.id_token,
            expires_at=expires_at,
            now=datetime.now(UTC),
        )
    except AuthDataError as exc:
        msg = f"The provider's tokens cannot be used: {exc}. Log in again."
        raise LoginError(msg) from None


async def _save(cell: SnapshotCell, reader: StoreReader, data: AuthDotJson) -> None:
    await reader.store.save(data)
    if reader.memory is not reader.store:
        await reader.memory.delete()
    cell.loaded = True
    cell.set(await reader.load(), "login")


async def refresh_token_login(cell: SnapshotCell, reader: StoreReader, refresh_token: str) -> None:
    """Import an existing grant: spend ``refresh_token`` once, save what the provider returns.

    Raises:
        ConfigError: The configuration is not standard, or the token is blank.
        LoginError: The provider refused the refresh token (``invalid_grant``).
        ClientConfigError: The provider refused the client.
        TransientRefreshError: The provider could not be reached or failed; try again.
        StorageError: The login could not be saved.
    """
    config = reader.oauth
    _standard(config, "login_with_refresh_token")
    token = refresh_token.strip()
    if not token:
        msg = "The refresh token is empty."
        raise ConfigError(msg)
    sent = datetime.now(UTC)
    try:
        answer = await request_refresh(reader.session.get(), config, token)
    except ClientConfigError:
        raise
    except RefreshTokenFailedError as exc:
        msg = (
            "The provider refused the refresh token (expired, revoked or already used). Log in "
            "another way (device or browser) to get a new one."
        )
        raise LoginError(msg, error_code=exc.error_code) from None
    if answer.access_token is None:
        msg = f"The provider's answer is unusable ({'; '.join(answer.problems)}). Retry later."
        raise TransientRefreshError(msg)
    if answer.refresh_token is None:
        # No rotation: the imported token stays the one to spend next time.
        answer = attrs.evolve(answer, refresh_token=token)
    await _save(cell, reader, _payload(config, answer, "refresh_token", sent))


async def client_credentials_login(cell: SnapshotCell, reader: StoreReader) -> None:
    """Log the client itself in (RFC 6749 §4.4); the coordinator mints again before expiry.

    Raises:
        ConfigError: Not standard, or a public client.
        ClientConfigError: The provider refused the client, the grant or the scopes.
        TransientRefreshError: The provider could not be reached or failed; try again.
        StorageError: The login could not be saved.
    """
    config = reader.oauth
    sent = datetime.now(UTC)
    answer = await request_client_credentials(reader.session.get(), config)
    await _save(cell, reader, _payload(config, answer, "client_credentials", sent))


async def device_code_login(
    cell: SnapshotCell,
    reader: StoreReader,
    show: Callable[[DeviceCode], Awaitable[None] | None],
) -> None:
    """Run a device login (RFC 8628): ``show`` the code once, wait for approval, save.

    Raises:
        ConfigError: Not standard, or no device endpoint.
        LoginError: Refused (``access_denied``), expired (``expired_token``), or the provider
            failed; start again.
        ClientConfigError: The provider refused the client or the scopes.
        StorageError: The login could not be saved.
    """
    config = reader.oauth
    answer = await device_login(reader.session.get(), config, show)
    # The lifetime runs from the last poll, sent just before its answer came back; a second
    # earlier is a safe bound (expiry times are whole seconds anyway).
    sent = datetime.now(UTC) - timedelta(seconds=1)
    await _save(cell, reader, _payload(config, answer, "device_code", sent))


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)  # 64 characters, within RFC 7636's 43..128
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_request(
    config: OAuthConfig, *, redirect_uri: str, state: str, challenge: str
) -> str:
    """The authorization URL a browser login opens (RFC 6749 §4.1.1, RFC 7636 §4.3).

    ``prompt=consent`` is added when ``offline_access`` is asked for: OpenID Connect Core §11
    grants it (a refresh token) only then.
    """
    assert config.authorization_url is not None  # noqa: S101 -- checked by the caller
    query = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if config.scopes:
        query["scope"] = " ".join(config.scopes)
    if "offline_access" in config.scopes:
        query["prompt"] = "consent"
    separator = "&" if "?" in config.authorization_url else "?"
    return f"{config.authorization_url}{separator}{urlencode(query)}"


def _page(text: str, status: int = 200) -> web.Response:
    from aiohttp import web  # noqa: PLC0415 -- the server side of aiohttp, for browser logins only

    body = f"<!DOCTYPE html><html><body><p>{html.escape(text)}</p></body></html>"
    return web.Response(
        text=body, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


async def _open(open_url: Callable[[str], object], url: str) -> None:
    # webbrowser.open (the default) may block while it starts a browser: a worker thread. An
    # async callable runs on the loop.
    if inspect.iscoroutinefunction(open_url):
        await open_url(url)
        return
    opened = await asyncio.to_thread(open_url, url)
    if inspect.isawaitable(opened):
        await opened


async def browser_login(
    cell: SnapshotCell,
    reader: StoreReader,
    open_url: Callable[[str], object],
    *,
    redirect_port: int = 0,
    timeout: float = 300.0,  # noqa: ASYNC109 -- how long the user has, not a call's deadline
) -> None:
    """Log in with a browser: authorization code with PKCE S256, a loopback redirect.

    A server on ``127.0.0.1:redirect_port`` (0: any free port, RFC 8252 §7.3) waits for the
    provider to send the browser back; a request whose ``state`` is not this login's is
    answered 400 and ignored (it is not the provider's answer to this login).

    Raises:
        ConfigError: Not standard, or no ``authorization_url``.
        LoginError: The user refused, the provider answered an error, the code was refused, or
            no answer came within ``timeout`` seconds.
        ClientConfigError: The provider refused the client.
        TransientRefreshError: The code exchange could not reach the provider; start again.
        StorageError: The login could not be saved.
    """
    config = reader.oauth
    _standard(config, "login_with_browser")
    if config.authorization_url is None:
        msg = "a browser login needs authorization_url (OAuthConfig.discover finds it)"
        raise ConfigError(msg)
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(24)
    answered: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        query = request.query
        if not secrets.compare_digest(query.get("state", ""), state):
            return _page("This is not the login this application started.", 400)
        if answered.done():
            return _page(CLOSE_PAGE)
        answered.set_result(dict(query))
        if "code" not in query:
            return _page(_REFUSED_PAGE.format(reason=_error_code(query)), 400)
        return _page(CLOSE_PAGE)

    from aiohttp import web  # noqa: PLC0415 -- the server side of aiohttp, for browser logins only

    app = web.Application()
    app.router.add_get(CALLBACK_PATH, callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", redirect_port)
        await site.start()
        port = runner.addresses[0][1]
        redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        url = authorization_request(
            config, redirect_uri=redirect_uri, state=state, challenge=challenge
        )
        await _open(open_url, url)
        try:
            query = await asyncio.wait_for(answered, timeout)
        except TimeoutError:
            msg = (
                f"No answer from the browser within {timeout:g} s. Start the login again and "
                "finish it in the browser."
            )
            raise LoginError(msg) from None
    finally:
        await runner.cleanup()
    code = query.get("code")
    if code is None:
        reason = _error_code(query)
        msg = f"The provider did not log you in ({reason}). Start the login again."
        raise LoginError(msg, error_code=reason)
    sent = datetime.now(UTC)
    answer = await exchange_authorization_code(
        reader.session.get(),
        config,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=verifier,
    )
    await _save(cell, reader, _payload(config, answer, "authorization_code", sent))


def _error_code(query: Any) -> str:  # noqa: ANN401 -- a mapping of query parameters
    error = query.get("error", "")
    # Only an RFC 6749 error code is quoted (RFC 6749 §4.1.2.1: a short token of letters).
    if isinstance(error, str) and _ERROR_CODE.fullmatch(error):
        return error
    return "no code in the answer"


async def revoke_stored_login(reader: StoreReader, lock: asyncio.Lock) -> bool:
    """Revoke the stored standard login's refresh token at the provider (RFC 7009), if any.

    Under the refresh lock and the store's lock, so no refresh spends the token meanwhile; the
    stored one is revoked, which is the newest. A failure is logged, not raised: logging out
    locally must still happen.

    Returns:
        Whether the provider confirmed a revocation.
    """
    config = reader.oauth
    if not config.is_standard or config.revocation_url is None:
        return False
    try:
        return await _revoke_locked(reader, lock)
    except StorageError as exc:
        logger.warning("Could not read the login to revoke it at the provider: %s", exc)
        return False


async def _revoke_locked(reader: StoreReader, lock: asyncio.Lock) -> bool:
    config = reader.oauth
    async with lock, reader.store.lock():
        stored = await reader.load()
        if stored is None or stored.mode is not AuthMode.OAUTH or stored.data is None:
            return False
        tokens = stored.data.tokens
        if tokens is None:
            return False
        token, hint = tokens.refresh_token, "refresh_token"
        if not token:
            token, hint = tokens.access_token, "access_token"
        try:
            return await revoke_token(reader.session.get(), config, token, token_type_hint=hint)
        except (RefreshTokenFailedError, TransientRefreshError, ConfigError) as exc:
            logger.warning("Could not revoke the login at the provider: %s", exc)
            return False
