"""``AuthManager``: the facade over a manager family's rooms.

A manager hands out snapshots (:mod:`._snapshot`), reads the store (:mod:`._loader`), follows
its change notices (:mod:`._watch`), refreshes once for everyone (:mod:`._refresh`) and logs in
and out (:mod:`._login`). Each public method is a short delegate (the standard providers'
logins in :mod:`._facade_logins`, the 401 recovery's ports in :mod:`._facade_recovery`); the
concurrency invariants are written at the top of the room that keeps them, chiefly :mod:`._refresh`.

Derived managers share one ``Core`` (:mod:`._core`) (the snapshot, the failure records, the forced
workspace, the store and the refresh lock) by reference; each keeps its own external source.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Self

from ._bearer import BearerFlight
from ._core import Core
from ._errors import (
    ConfigError,
    UnsupportedLoginError,
)
from ._facade_logins import StandardLogins
from ._facade_recovery import RecoveryPorts
from ._login import (
    ForcedLoginMethod,
    enforce_restrictions,
    login_with_api_key,
    login_with_tokens,
    logout,
)
from ._model import Auth, AuthMode
from ._oauth import OAuthConfig
from ._oauth_login import (
    revoke_stored_login,
)
from ._policy import FRESH
from ._recovery import UnauthorizedRecovery
from ._snapshot import AuthChange, AuthChanges

if TYPE_CHECKING:
    from types import TracebackType

    import aiohttp

    from ._errors import RefreshTokenFailedError
    from ._external import ExternalRefresher
    from ._storage import AuthStore

__all__ = ["AuthChange", "AuthChanges", "AuthManager", "ForcedLoginMethod"]

logger = logging.getLogger("aioscopedauth.manager")


class AuthManager(StandardLogins, RecoveryPorts):
    """Owns a client's auth state: loads it, hands out snapshots, refreshes it once for everyone.

    The constructor does no I/O; the first :meth:`auth` loads from the store. ``async with``
    closes the HTTP session the manager created for the token endpoint.

    Args:
        store: Where the login is persisted (``FileAuthStore(home)`` for Codex's ``auth.json``).
        oauth: The token endpoint; defaults to :meth:`OAuthConfig.codex`.
        api_key_env: An environment variable whose (trimmed, non-blank) value, when set, is used
            as an API key before anything stored (Codex uses ``CODEX_API_KEY``).
        access_token_env: An environment variable whose (trimmed, non-blank) value, when set, is
            the login before the API-key variable and anything stored, as Codex reads
            ``CODEX_ACCESS_TOKEN``: an ``at-…`` value is a personal access token (its account
            from the whoami call; never refreshed, never saved), any other an agent identity,
            which :meth:`auth` refuses with :class:`UnsupportedLoginError`. A manager with this
            or ``api_key_env`` set logs one warning when Codex would use workload identity
            (``OPENAI_FEDERATION_RULE_ID``, ``OPENAI_IDENTITY_TOKEN_FILE``,
            ``OPENAI_IDENTITY_TOKEN_SOURCE``), which this library cannot exchange yet.
        forced_login_method: ``"api"`` or ``"chatgpt"``: the only login method allowed by
            :meth:`enforce_login_restrictions`.
        forced_workspace_id: The only ChatGPT workspace allowed.
        http: An aiohttp session for the token endpoint; by default the manager makes its own.
            Token requests are sent with ``middlewares=()``, so an auth middleware attached to
            this session is never re-entered.
    """

    def __init__(  # noqa: PLR0913 -- the constructor's signature is DESIGN.md's contract
        self,
        store: AuthStore,
        oauth: OAuthConfig | None = None,
        *,
        api_key_env: str | None = None,
        access_token_env: str | None = None,
        forced_login_method: ForcedLoginMethod | None = None,
        forced_workspace_id: str | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        """Create a manager; see the class docstring for the arguments."""
        if forced_login_method not in (None, "api", "chatgpt"):
            msg = "forced_login_method must be 'api', 'chatgpt' or None"
            raise ConfigError(msg)
        self._core = Core.build(
            store,
            oauth or OAuthConfig.codex(),
            api_key_env=api_key_env,
            access_token_env=access_token_env,
            forced_login_method=forced_login_method,
            forced_workspace_id=forced_workspace_id,
            http=http,
        )
        self._external: ExternalRefresher | None = None
        self._bearer: BearerFlight | None = None
        self._is_base = True

    # -- construction and lifecycle ---------------------------------------------------------

    def with_external_bearer_refresher(self, refresher: ExternalRefresher) -> AuthManager:
        """Return a manager whose :meth:`auth` is the bearer from ``refresher``.

        The derived manager shares this one's snapshot, failure records, forced workspace,
        store, HTTP session and refresh lock; its bearer source is its own. When the source
        fails, its :meth:`auth` returns ``None``: it never falls back to this manager's login,
        which would send the user's OpenAI credentials to another provider.

        Args:
            refresher: A source whose ``mode`` is ``AuthMode.BEARER``.

        Returns:
            The derived manager.

        Raises:
            ConfigError: ``refresher`` is not a bearer source.
        """
        if refresher.mode is not AuthMode.BEARER:
            msg = "with_external_bearer_refresher needs a bearer source (mode AuthMode.BEARER)"
            raise ConfigError(msg)
        derived = copy.copy(self)  # the same core, by reference: one family, one state
        derived.set_external_auth(refresher)
        derived._is_base = False  # noqa: SLF001 -- the class's own field, set on its copy
        return derived

    def set_external_auth(self, refresher: ExternalRefresher | None) -> None:
        """Set (or clear, with ``None``) this manager's external source.

        A host app that supplies ChatGPT tokens passes a source whose mode is
        ``AuthMode.CHATGPT_AUTH_TOKENS``; 401 recovery then asks it for new tokens.

        Args:
            refresher: The source, or ``None``.
        """
        self._external = refresher
        self._bearer = None
        if refresher is not None and refresher.mode is AuthMode.BEARER:
            self._bearer = BearerFlight(refresher)

    @property
    def external_auth(self) -> ExternalRefresher | None:
        """This manager's external source, if any."""
        return self._external

    async def aclose(self) -> None:
        """Wait for an in-flight refresh, then close the HTTP session this manager created.

        Derived managers own nothing; closing one does nothing.
        """
        if not self._is_base:
            return
        core = self._core
        try:
            await core.watcher.stop()
            await core.refresh.drain()
        finally:
            # Closed now, or (cancelled while a refresh runs) once that refresh has ended:
            # never under it.
            await core.refresh.close_session()

    async def __aenter__(self) -> Self:
        """Return the manager."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close what the manager owns."""
        await self.aclose()

    def __repr__(self) -> str:
        """Show the store and mode, never a secret."""
        kind = "derived " if not self._is_base else ""
        mode = self.mode
        return (
            f"<{kind}AuthManager store={self._core.store.kind} mode={mode.value if mode else None}>"
        )

    # -- reading ----------------------------------------------------------------------------

    @property
    def mode(self) -> AuthMode | None:
        """``BEARER`` for a bearer manager, else the mode of the cached snapshot (or ``None``)."""
        if self._external is not None and self._external.mode is AuthMode.BEARER:
            return AuthMode.BEARER
        snapshot = self._core.cell.snapshot
        return None if snapshot is None else snapshot.mode

    @property
    def store(self) -> AuthStore:
        """The configured store."""
        return self._core.store

    @property
    def oauth(self) -> OAuthConfig:
        """The token endpoint configuration."""
        return self._core.oauth

    @property
    def forced_workspace_id(self) -> str | None:
        """The ChatGPT workspace logins are restricted to, if any."""
        return self._core.forced_workspace_id

    def set_forced_workspace_id(self, workspace_id: str | None) -> None:
        """Change the forced workspace for this manager and every manager sharing its state.

        Args:
            workspace_id: The workspace, or ``None`` to lift the restriction.
        """
        core = self._core
        if core.forced_workspace_id != workspace_id:
            core.forced_workspace_id = workspace_id
            core.cell.notify(AuthChange("workspace", core.cell.snapshot))

    def auth_cached(self) -> Auth | None:
        """Return the cached snapshot: no I/O, no refresh (``None`` before the first load)."""
        return self._core.cell.snapshot

    def refresh_failure_for_auth(self, auth: Auth | None) -> RefreshTokenFailedError | None:
        """Return the permanent refresh failure recorded for exactly this snapshot, if any.

        Args:
            auth: A snapshot.

        Returns:
            The recorded error, or ``None``.
        """
        return self._core.cell.permanent_failure_for(auth)

    async def auth(self) -> Auth | None:
        """Return the auth to send now, refreshing it first when it is about to expire.

        A bearer manager returns its source's token (``None`` when the source fails; the error
        is logged). A managed ChatGPT login whose access token expires within the refresh window
        is refreshed once for all callers; while it is still valid, callers that find a refresh
        already running keep the current token instead of waiting. A failed proactive refresh is
        logged and the snapshot it had is returned.

        A personal access token is never refreshed; its account comes from the whoami call
        made when it is loaded.

        Returns:
            The snapshot, or ``None`` when logged out.

        Raises:
            StorageError: The store could not be read on the first load.
            UnsupportedLoginError: The stored login is of a mode this library cannot send
                requests with (``agentIdentity``, Bedrock, …); :meth:`auth_cached` and
                :attr:`mode` still report it, and the store is left as it is.
        """
        core = self._core
        core.cell.check_loop()
        if self._bearer is not None:
            return await self._bearer.auth()
        external = self._external
        snapshot = await core.current()
        if snapshot is None:
            return None
        if not snapshot.mode.can_send:
            raise UnsupportedLoginError(snapshot.mode.value, where=core.reader.where())
        if core.refresh.freshness.state(snapshot) is FRESH:
            return snapshot
        return await core.refresh.proactive(snapshot, external)

    async def reload(self) -> bool:
        """Re-read the store, replacing the cached snapshot.

        Unlike Codex (which compares only the mode), this reports any change of credentials.

        Returns:
            Whether the snapshot changed.

        Raises:
            StorageError: The store could not be read (the cached snapshot is kept).
        """
        return await self._core.reload()

    def changes(self) -> AuthChanges:
        """Subscribe to changes of auth state (load, reload, refresh, login, logout, workspace).

        With a store that sends change notices (``RedisAuthStore``), a change another host
        saved arrives here too, as a ``reload``, as soon as the store hears of it.

        Returns:
            An async iterator of :class:`AuthChange`, subscribed immediately.
        """
        return self._core.cell.subscribe()

    # -- logins -----------------------------------------------------------------------------

    async def login_with_api_key(self, api_key: str) -> None:
        """Log in with an API key: saves ``{"auth_mode": "apikey", ...}``, dropping tokens.

        Args:
            api_key: The key.

        Raises:
            ConfigError: The key is blank.
            StorageError: It could not be saved.
        """
        await login_with_api_key(self._core.cell, self._core.reader, api_key)

    async def login_with_tokens(
        self, access_token: str, account_id: str, plan_type: str | None = None
    ) -> None:
        """Use ChatGPT tokens supplied by a host app (``CHATGPT_AUTH_TOKENS``), in memory only.

        Args:
            access_token: The ChatGPT access token (a JWT).
            account_id: The workspace id.
            plan_type: The plan name, if known.

        Raises:
            AuthDataError: The access token is not a JWT.
        """
        core = self._core
        await login_with_tokens(core.cell, core.reader, access_token, account_id, plan_type)

    async def logout(self) -> bool:
        """Revoke a standard login at the provider, then remove the login and reload.

        For a standard provider's login with a ``revocation_url``, the stored refresh token
        (for a client's own login, its access token) is revoked first (RFC 7009), under the
        refresh lock so no refresh spends it meanwhile; a failed revocation is logged and the
        login is removed all the same. Then the login is removed from the memory store and
        the configured store.

        Returns:
            Whether anything was removed.

        Raises:
            StorageError: A store could not be cleared (the reload still happens).
        """
        core = self._core
        await revoke_stored_login(core.reader, core.refresh.lock)
        return await logout(core.cell, core.reader)

    async def enforce_login_restrictions(self) -> None:
        """Log out when the login breaks the forced method or workspace.

        API-key logins are exempt from the workspace rule. The workspace is read from the id
        token's ``chatgpt_account_id`` claim.

        Raises:
            LoginRestrictionError: The login broke a rule and was logged out; the message says
                which rule (reference §2.4).
        """
        core = self._core
        await enforce_restrictions(
            await core.current(),
            core.forced_login_method,
            core.forced_workspace_id,
            logout=self.logout,
        )

    # -- 401 recovery -----------------------------------------------------------------------

    def unauthorized_recovery(self, rejected: Auth | None = None) -> UnauthorizedRecovery:
        """Start the staged recovery of a request the server answered 401.

        Args:
            rejected: The auth the request carried. When given, a step adopts auth that another
                request already recovered instead of refreshing again.

        Returns:
            The recovery (``managed``: reload, refresh_token; ``external``: external_refresh).
        """
        return UnauthorizedRecovery(self, rejected)

    # -- refresh ----------------------------------------------------------------------------

    async def refresh_token(self) -> bool:
        """Force a guarded refresh of the managed login, once for all concurrent callers.

        Under the shared lock and the store's cross-process lock, the store is re-read first:
        tokens another task or process already refreshed are adopted without a network call.
        Host-supplied tokens are refreshed through the host's source; API keys are left alone.

        Returns:
            ``True`` when the manager now holds other auth (refreshed or adopted); ``False``
            for API keys and when logged out.

        Raises:
            RefreshTokenFailedError: Permanently refused (log in again); also when the stored
                account changed or vanished.
            TransientRefreshError: Try again later.
            StorageError: The store could not be read or written.
        """
        snapshot = await self._core.current()
        if snapshot is None or not snapshot.mode.is_refreshable:
            return False
        return await self._core.refresh.join(snapshot, self._external)
