"""The token endpoint's dialects behind one call: the refresh coordinator's seam.

The coordinator spends a refresh token with :func:`request_token_refresh` and merges the
:class:`~aioscopedauth._oauth.TokenResponse` it gets; how the request is built and the answer
classified is the dialect's (Codex's JSON refresh in :mod:`._oauth`, the standard RFC 6749 one
in :mod:`._rfc6749`), so a dialect is added here without touching the coordinator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._oauth import request_codex_refresh
from ._rfc6749 import request_refresh

if TYPE_CHECKING:
    import aiohttp

    from ._oauth import OAuthConfig, TokenResponse

__all__ = ["request_token_refresh"]


async def request_token_refresh(
    session: aiohttp.ClientSession, config: OAuthConfig, refresh_token: str
) -> TokenResponse:
    """Spend a refresh token at the token endpoint, in the configuration's dialect.

    ``config.dialect`` picks the implementation: ``"codex"`` is Codex's JSON refresh
    (reference §3.1, :func:`request_codex_refresh`); ``"rfc6749"`` the standard form-encoded
    one with client authentication (:func:`aioscopedauth._rfc6749.request_refresh`). Either
    way the request is sent with ``middlewares=()`` so it never passes through an auth
    middleware attached to ``session`` (that would re-enter the refresh and deadlock), and the
    failures are classified the same way: permanent or transient.

    Args:
        session: The HTTP session.
        config: The endpoint, client, dialect and timeout.
        refresh_token: The refresh token to spend.

    Returns:
        The tokens the endpoint returned.

    Raises:
        RefreshTokenFailedError: The endpoint refused the token for good (a
            :class:`~aioscopedauth.ClientConfigError` when it refused the client itself).
        TransientRefreshError: A 5xx or other non-permanent status, a timeout, a connection
            failure, or a body that is not the expected JSON.
    """
    if config.is_standard:
        return await request_refresh(session, config, refresh_token)
    return await request_codex_refresh(session, config, refresh_token)
