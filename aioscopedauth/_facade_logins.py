"""The standard providers' logins on ``AuthManager``: short delegates to :mod:`._oauth_login`."""

from __future__ import annotations

import webbrowser
from typing import TYPE_CHECKING

from ._oauth_login import (
    browser_login,
    client_credentials_login,
    device_code_login,
    refresh_token_login,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._core import Core
    from ._grants import DeviceCode

__all__ = ["StandardLogins"]


class StandardLogins:
    """``AuthManager``'s logins at a standard OAuth 2.0 / OpenID provider (a mixin)."""

    _core: Core

    async def login_with_refresh_token(self, refresh_token: str) -> None:
        """Import an existing grant of a standard provider, checked by refreshing it once.

        The refresh token is spent once; the tokens the provider returns (a rotated refresh
        token among them) are saved as an ``auth_mode: "oauth"`` login.

        Args:
            refresh_token: The refresh token.

        Raises:
            ConfigError: The configuration is not standard, or the token is blank.
            LoginError: The provider refused the token (expired, revoked or used).
            ClientConfigError: The provider refused the client.
            TransientRefreshError: The provider could not be reached or failed; try again.
            StorageError: The login could not be saved.
        """
        await refresh_token_login(self._core.cell, self._core.reader, refresh_token)

    async def login_with_client_credentials(self) -> None:
        """Log the client itself in (machine to machine, RFC 6749 §4.4).

        There is no refresh token: the access token is minted again before it expires, once
        for every task, process and host sharing the store, like a refresh.

        Raises:
            ConfigError: The configuration is not standard, or has no client secret.
            ClientConfigError: The provider refused the client, the grant or the scopes.
            TransientRefreshError: The provider could not be reached or failed; try again.
            StorageError: The login could not be saved.
        """
        await client_credentials_login(self._core.cell, self._core.reader)

    async def login_with_device_code(
        self, show: Callable[[DeviceCode], Awaitable[None] | None]
    ) -> None:
        """Log in on a device without a browser (RFC 8628), e.g. from a terminal.

        ``show`` is called once with a :class:`DeviceCode` (``user_code``,
        ``verification_uri``, ``verification_uri_complete`` or ``None``, ``expires_in``,
        ``interval``) to tell the user where to go; the coroutine returns once the user
        approved and the login is saved. Polling honours ``interval`` and ``slow_down``, and
        stops at the first token answer (a strict provider revokes a login whose device code
        is presented again).

        Args:
            show: A function or coroutine function that shows the code.

        Raises:
            ConfigError: The configuration is not standard or has no device endpoint.
            LoginError: The user refused (``access_denied``), the code expired
                (``expired_token``) or the provider failed; start again.
            ClientConfigError: The provider refused the client or the scopes.
            StorageError: The login could not be saved.
        """
        await device_code_login(self._core.cell, self._core.reader, show)

    async def login_with_browser(
        self,
        open_url: Callable[[str], object] = webbrowser.open,
        *,
        redirect_port: int = 0,
        timeout: float = 300.0,  # noqa: ASYNC109 -- how long the user has, not a call's deadline
    ) -> None:
        """Log in with the system browser: authorization code with PKCE (S256).

        A server on ``127.0.0.1`` (RFC 8252 loopback redirect) receives the provider's answer;
        its ``state`` is checked, and the page the browser lands on says it may be closed.
        The client must accept ``http://127.0.0.1:{port}/callback`` as a redirect URI (any
        port for a native client, RFC 8252 §7.3, or the one ``redirect_port`` names).

        Args:
            open_url: Opens the authorization URL; run in a worker thread (a coroutine
                function runs on the loop). Defaults to :func:`webbrowser.open`.
            redirect_port: The loopback port (0: any free one).
            timeout: Seconds the user has to finish in the browser.

        Raises:
            ConfigError: The configuration is not standard or has no ``authorization_url``.
            LoginError: Refused, timed out, or the code was refused; start again.
            ClientConfigError: The provider refused the client.
            TransientRefreshError: The code exchange failed for now; start again.
            StorageError: The login could not be saved.
        """
        core = self._core
        await browser_login(
            core.cell, core.reader, open_url, redirect_port=redirect_port, timeout=timeout
        )
