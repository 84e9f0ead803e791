"""``AuthManager``: owns the auth snapshot, refreshes it once for everyone, and derives managers.

Concurrency invariants (DESIGN.md, "Rules that every change keeps"):

* Every managed or host-token refresh runs in **one** task per rejected snapshot (the in-flight
  refresh), under the shared ``asyncio.Lock`` and, for stores shared between processes, the
  store's cross-process ``lock()``. Each caller awaits a future of its own that the task settles
  when it ends (a shield, in effect): a cancelled caller stops waiting, but a refresh token
  already spent is still saved, so a cancellation can never lose a rotated refresh token.
* Under the lock, a caller whose snapshot was already replaced adopts the new one (no network);
  the store is re-read, and tokens another process wrote are adopted (no network); only then is
  the refresh token spent.
* Derived managers share the snapshot, the failure records, the forced workspace, the store and
  the lock by reference; each keeps its own external source.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import aiohttp
import attrs

from ._commit import refreshed_payload
from ._errors import (
    AuthDataError,
    AuthError,
    ConfigError,
    LoginRestrictionError,
    RefreshFailureReason,
    RefreshTokenFailedError,
    StorageError,
    TransientRefreshError,
    UnsupportedLoginError,
)
from ._external import (
    ExternalAuthTokens,
    ExternalRefresher,
    RefreshContext,
    auth_data_from_external_tokens,
)
from ._jwt import jwt_expiration
from ._model import UNSENDABLE, AccountIdentity, Auth, AuthDotJson, AuthMode, is_header_safe
from ._oauth import (
    ACCOUNT_MISMATCH_MESSAGE,
    OAuthConfig,
    min_refresh_gap,
    request_account_identity,
    request_token_refresh,
    stale_at,
)
from ._recovery import UnauthorizedRecovery
from ._storage import AuthStore, FileAuthStore, MemoryAuthStore, load_auth_data

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from ._oauth import TokenResponse

__all__ = ["AuthChange", "AuthChanges", "AuthManager", "ForcedLoginMethod"]

logger = logging.getLogger("aioscopedauth.manager")

_R = TypeVar("_R")
ForcedLoginMethod = Literal["api", "chatgpt"]
ChangeReason = Literal["load", "reload", "refresh", "login", "logout", "workspace", "external"]
_CHANGE_QUEUE_LIMIT = 256
_WINNER_POLL_FIRST = 0.02
_WINNER_POLL_MAX = 0.2
"""How often the store is re-read while waiting for another writer's tokens after a reuse."""
_WARNED_LIMIT = 64
_FAILURE_RECHECK = 1.0
"""After a failed refresh, ``auth()`` looks at the store for a newer login at most this often."""
_IDENTITY_CACHE_LIMIT = 16


def _now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class AuthChange:
    """One change of auth state, as yielded by :meth:`AuthManager.changes`.

    Attributes:
        reason: What changed it: ``load``, ``reload``, ``refresh``, ``login``, ``logout``,
            ``workspace`` (the forced workspace changed) or ``external`` (a host refresh).
        auth: The snapshot after the change (its ``repr`` holds no secret).
    """

    reason: ChangeReason
    auth: Auth | None


class AuthChanges:
    """An async iterator of :class:`AuthChange`, subscribed from the moment it is created.

    Use it as ``async with manager.changes() as changes: async for change in changes: ...`` or
    call :meth:`aclose` when done. A subscriber that falls more than 256 changes behind loses
    the oldest ones.
    """

    def __init__(self, subscribers: set[asyncio.Queue[AuthChange | None]]) -> None:
        """Subscribe to ``subscribers`` (done by :meth:`AuthManager.changes`)."""
        self._subscribers = subscribers
        self._queue: asyncio.Queue[AuthChange | None] = asyncio.Queue(_CHANGE_QUEUE_LIMIT)
        subscribers.add(self._queue)

    def __aiter__(self) -> Self:
        """Return the iterator itself."""
        return self

    async def __anext__(self) -> AuthChange:
        """Wait for the next change.

        Raises:
            StopAsyncIteration: After :meth:`aclose`.
        """
        if self._queue not in self._subscribers:
            raise StopAsyncIteration
        change = await self._queue.get()
        if change is None:  # closed while waiting
            raise StopAsyncIteration
        return change

    def empty(self) -> bool:
        """Whether no change is waiting (``__anext__`` would wait)."""
        return self._queue.empty()

    async def aclose(self) -> None:
        """Unsubscribe; a task waiting in ``__anext__`` stops iterating."""
        if self._queue in self._subscribers:
            self._subscribers.discard(self._queue)
            _put_dropping_oldest(self._queue, None)

    async def __aenter__(self) -> Self:
        """Return the iterator."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Unsubscribe."""
        await self.aclose()


@attrs.define(eq=False)
class _Failure:
    auth: Auth
    error: RefreshTokenFailedError | TransientRefreshError
    until: float | None  # monotonic deadline for transient failures; None = permanent
    checked: float = attrs.field(factory=time.monotonic)  # when the store was last looked at


class _ReaderGone(Exception):  # noqa: N818 -- a private signal, never raised to a caller
    """The caller reading the store for everyone was cancelled; a waiting caller reads instead."""


@attrs.define(eq=False)
class _InFlight:
    """The refresh under way for one rejected snapshot, and the callers waiting for it."""

    expected: Auth
    task: asyncio.Task[bool]
    waiters: list[asyncio.Future[bool]] = attrs.Factory(list)

    def wait(self) -> asyncio.Future[bool]:
        """Return a future of the refresh's outcome for one caller.

        Cancelling it stops that caller waiting, never the refresh (a spent refresh token is
        still saved). One future per caller rather than a shield per caller: a storm of 401s
        parks a thousand callers here, and a shield costs each of them two closures, two
        contexts and another future to keep alive, hence more garbage collection.
        """
        future: asyncio.Future[bool] = self.task.get_loop().create_future()
        self.waiters.append(future)
        return future

    def wake(self, task: asyncio.Task[bool]) -> None:
        """Hand the refresh's outcome to every caller still waiting (the task's done callback)."""
        waiters, self.waiters = self.waiters, []
        for future in waiters:
            if future.done():
                continue  # that caller was cancelled
            if task.cancelled():
                future.cancel()
            elif (error := task.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(task.result())


@attrs.define(eq=False)
class _Shared:
    """State shared by reference between a base manager and every manager derived from it."""

    store: AuthStore
    memory: MemoryAuthStore
    oauth: OAuthConfig
    api_key_env: str | None
    forced_login_method: ForcedLoginMethod | None
    forced_workspace_id: str | None
    http: aiohttp.ClientSession | None
    owns_http: bool
    snapshot: Auth | None = None
    loaded: bool = False
    failure: _Failure | None = None
    inflight: _InFlight | None = None
    loading: asyncio.Future[tuple[Auth | None, int]] | None = None
    """The store read under way that concurrent recoveries share (see ``_load_coalesced``)."""
    unsaved: tuple[AuthDotJson, AuthDotJson] | None = None
    """(replaced, refreshed): tokens a refresh got but could not save (a full disk). Until a
    save works, a read that finds the replaced payload gets the refreshed one instead, so a
    spent refresh token is never brought back from disk."""
    due: tuple[Auth | None, float | None] = (None, None)
    """The snapshot last checked for staleness and when it becomes stale (epoch seconds):
    decoding the access token once per snapshot keeps it off every request's path."""
    version: int = 0
    """Bumped on every change of ``snapshot``. A store read that started before a change is
    older than the snapshot and must not overwrite it (a coalesced reload finishing after a
    refresh would otherwise bring back the spent refresh token)."""
    loop: asyncio.AbstractEventLoop | None = None
    """The event loop that first used the manager; the only one it works on."""
    born_stale: tuple[Auth, float, float] | None = None
    """(snapshot, when, gap): a snapshot a refresh produced already due for a refresh (a clock
    ahead of the endpoint's), refreshed proactively at most once per gap seconds."""
    warned: set[str] = attrs.Factory(set)
    """Warnings already logged once (a failure that repeats on every call)."""
    warned_skew: bool = False
    """Whether the clock-skew warning was logged (once per manager family)."""
    refresh_lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    load_lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    identities: dict[str, AccountIdentity] = attrs.field(factory=dict, repr=False)
    """Whoami answers by the sha256 of their personal access token: one call per token."""
    identity_lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    subscribers: set[asyncio.Queue[AuthChange | None]] = attrs.Factory(set)
    watched: bool = False
    unwatch: Callable[[], Awaitable[None]] | None = None
    """Stops the store's change notices (stores with the optional ``watch`` method)."""
    store_reload: asyncio.Task[None] | None = None
    store_changed_again: bool = False
    requested: tuple[Auth | None, float] | None = None
    """(snapshot, when): the snapshot the last refresh of this process produced, and when
    (``time.monotonic()``) its token request was sent. A 401 recovery tells from it whether
    the token it adopted was asked for after its 401, i.e. after whatever revoked the old one."""


class AuthManager:
    """Owns a client's auth state: loads it, hands out snapshots, refreshes it once for everyone.

    The constructor does no I/O; the first :meth:`auth` loads from the store. ``async with``
    closes the HTTP session the manager created for the token endpoint.

    Args:
        store: Where the login is persisted (``FileAuthStore(home)`` for Codex's ``auth.json``).
        oauth: The token endpoint; defaults to :meth:`OAuthConfig.codex`.
        api_key_env: An environment variable whose (trimmed, non-blank) value, when set, is used
            as an API key before anything stored (Codex uses ``CODEX_API_KEY``).
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
        forced_login_method: ForcedLoginMethod | None = None,
        forced_workspace_id: str | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        """Create a manager; see the class docstring for the arguments."""
        if forced_login_method not in (None, "api", "chatgpt"):
            msg = "forced_login_method must be 'api', 'chatgpt' or None"
            raise ConfigError(msg)
        self._shared = _Shared(
            store=store,
            memory=store if isinstance(store, MemoryAuthStore) else MemoryAuthStore(),
            oauth=oauth or OAuthConfig.codex(),
            api_key_env=api_key_env,
            forced_login_method=forced_login_method,
            forced_workspace_id=forced_workspace_id,
            http=http,
            owns_http=http is None,
        )
        self._external: ExternalRefresher | None = None
        self._is_base = True
        self._bearer_requested: tuple[str, float] | None = None
        """(token, when): this manager's latest bearer token and the earliest start of a call
        to its source that returned it (``time.monotonic()``); see ``bearer_refreshed_since``."""

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
        derived = object.__new__(AuthManager)
        derived._shared = self._shared
        derived._external = refresher
        derived._is_base = False
        derived._bearer_requested = None
        return derived

    def set_external_auth(self, refresher: ExternalRefresher | None) -> None:
        """Set (or clear, with ``None``) this manager's external source.

        A host app that supplies ChatGPT tokens passes a source whose mode is
        ``AuthMode.CHATGPT_AUTH_TOKENS``; 401 recovery then asks it for new tokens.

        Args:
            refresher: The source, or ``None``.
        """
        self._external = refresher

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
        shared = self._shared
        await self._stop_watching()
        inflight = shared.inflight
        if inflight is not None and not inflight.task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(inflight.task)
        if shared.owns_http and shared.http is not None:
            http, shared.http = shared.http, None
            await http.close()

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
            f"<{kind}AuthManager store={self._shared.store.kind} "
            f"mode={mode.value if mode else None}>"
        )

    # -- reading ----------------------------------------------------------------------------

    @property
    def mode(self) -> AuthMode | None:
        """``BEARER`` for a bearer manager, else the mode of the cached snapshot (or ``None``)."""
        if self._external is not None and self._external.mode is AuthMode.BEARER:
            return AuthMode.BEARER
        snapshot = self._shared.snapshot
        return None if snapshot is None else snapshot.mode

    @property
    def store(self) -> AuthStore:
        """The configured store."""
        return self._shared.store

    @property
    def oauth(self) -> OAuthConfig:
        """The token endpoint configuration."""
        return self._shared.oauth

    @property
    def forced_workspace_id(self) -> str | None:
        """The ChatGPT workspace logins are restricted to, if any."""
        return self._shared.forced_workspace_id

    def set_forced_workspace_id(self, workspace_id: str | None) -> None:
        """Change the forced workspace for this manager and every manager sharing its state.

        Args:
            workspace_id: The workspace, or ``None`` to lift the restriction.
        """
        shared = self._shared
        if shared.forced_workspace_id != workspace_id:
            shared.forced_workspace_id = workspace_id
            self._notify(AuthChange("workspace", shared.snapshot))

    def auth_cached(self) -> Auth | None:
        """Return the cached snapshot: no I/O, no refresh (``None`` before the first load)."""
        return self._shared.snapshot

    def refreshed_since(self, auth: Auth | None, moment: float) -> bool:
        """Whether ``auth`` came from a token request this process sent at or after ``moment``.

        A 401 recovery asks this about the token its refresh step produced: a token requested
        before the 401 (a refresh already under way, which the step joined) may have been
        revoked with the rejected one, so its rejection says nothing about the login.

        Args:
            auth: A snapshot.
            moment: A ``time.monotonic()`` reading.

        Returns:
            ``False`` also when unknown (tokens another process saved, or an older refresh).
        """
        requested = self._shared.requested
        return (
            auth is not None
            and requested is not None
            and requested[0] == auth
            and requested[1] >= moment
        )

    def bearer_refreshed_since(self, moment: float) -> bool:
        """Whether this manager's latest bearer token was asked for at or after ``moment``.

        The bearer twin of :meth:`refreshed_since`: the earliest start of a ``resolve()`` or
        ``refresh()`` call that returned the token (a lower bound of when it was minted).

        Args:
            moment: A ``time.monotonic()`` reading.

        Returns:
            ``False`` also when no bearer token was returned yet.
        """
        requested = self._bearer_requested
        return requested is not None and requested[1] >= moment

    def _note_bearer(self, token: str, called: float) -> None:
        requested = self._bearer_requested
        if requested is None or requested[0] != token or called < requested[1]:
            self._bearer_requested = (token, called)

    def refresh_failure_for_auth(self, auth: Auth | None) -> RefreshTokenFailedError | None:
        """Return the permanent refresh failure recorded for exactly this snapshot, if any.

        Args:
            auth: A snapshot.

        Returns:
            The recorded error, or ``None``.
        """
        failure = self._shared.failure
        if failure is None or failure.until is not None or failure.auth != auth:
            return None
        assert isinstance(failure.error, RefreshTokenFailedError)  # noqa: S101 -- until None
        return failure.error

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
        self._check_loop()
        external = self._external
        if external is not None and external.mode is AuthMode.BEARER:
            return await self._bearer_auth(external)
        snapshot = await self._current()
        if snapshot is not None and not snapshot.mode.can_send:
            raise UnsupportedLoginError(snapshot.mode.value, where=self._where())
        if snapshot is None or not self._is_stale(snapshot):
            return snapshot
        return await self._refreshed_if_possible(snapshot)

    async def _refreshed_if_possible(self, snapshot: Auth) -> Auth | None:
        if self._known_failure(snapshot) is not None:
            # Already failed for this snapshot: do not hammer the endpoint on every call. But
            # the failure must not outlive a change of the store (another process or Codex
            # may have refreshed or logged in since): look at it, at most once a second.
            if await self._recheck_after_failure(snapshot):
                return self._shared.snapshot
            return snapshot
        inflight = self._shared.inflight
        waiting_would_help = inflight is None or inflight.expected != snapshot or _expired(snapshot)
        if not waiting_would_help or self._refreshed_too_recently(snapshot):
            # A refresh is already running while the token is still valid (keep using it),
            # or this token was refreshed too recently to refresh it again.
            return snapshot
        try:
            await self._refresh(snapshot)
        except StorageError as exc:
            # A read-only home, a full disk, a lock held too long: the same failure on every
            # call until someone fixes it. Back off like a transient failure and say it once.
            self._record_failure(snapshot, TransientRefreshError(f"Failed to refresh token: {exc}"))
            self._warn_once(f"Failed to refresh token: {exc}")
            return snapshot
        except (AuthError, aiohttp.ClientError) as exc:
            logger.warning("Failed to refresh token: %s", exc)
            return snapshot
        return self._shared.snapshot

    def _warn_once(self, message: str) -> None:
        warned = self._shared.warned
        if message in warned:
            logger.debug("%s", message)
            return
        if len(warned) >= _WARNED_LIMIT:
            warned.clear()
        warned.add(message)
        logger.warning("%s (said once; later repeats are logged at DEBUG)", message)

    def _refreshed_too_recently(self, snapshot: Auth) -> bool:
        """Whether ``snapshot`` came from a refresh already due, and was refreshed too lately.

        A token that is due for a refresh the moment a refresh produced it (this machine's
        clock is ahead of the endpoint's, or the endpoint issues expired tokens) would otherwise
        be refreshed on every call. Such a snapshot is refreshed proactively at most once per
        :func:`min_refresh_gap`; a 401 still refreshes it at once.
        """
        shared = self._shared
        born = shared.born_stale
        if born is None or born[0] is not snapshot:
            return False
        _, since, gap = born
        if time.monotonic() - since >= gap:
            return False
        if not shared.warned_skew:
            shared.warned_skew = True
            logger.warning(
                "The token endpoint returned an access token that is already due for a refresh "
                "by this machine's clock: the clock may be ahead of the endpoint's, or the "
                "endpoint issues expired tokens. Proactive refreshes are held to one every "
                "%.0f s; check the clock.",
                gap,
            )
        return True

    def _note_born_stale(self, new: Auth, reason: ChangeReason) -> None:
        # Only a snapshot our own refresh produced: whether another writer's tokens were due
        # when they were made cannot be told from here (each process bounds its own refreshes).
        shared = self._shared
        shared.born_stale = None
        if reason == "refresh" and self._is_stale(new):
            shared.born_stale = (new, time.monotonic(), min_refresh_gap(new))

    def _is_stale(self, snapshot: Auth) -> bool:
        shared = self._shared
        cached, due = shared.due
        if cached is not snapshot:
            moment = stale_at(snapshot, shared.oauth)
            due = None if moment is None else moment.timestamp()
            shared.due = (snapshot, due)
        return due is not None and time.time() >= due

    async def _bearer_auth(self, refresher: ExternalRefresher) -> Auth | None:
        called = time.monotonic()
        try:
            tokens = await refresher.resolve()
        except Exception as exc:  # noqa: BLE001 -- any source failure means "no auth", logged
            logger.warning("Failed to resolve external bearer auth: %s", _describe(exc))
            return None
        if tokens is None:
            return None
        if not tokens.access_token or not is_header_safe(tokens.access_token):
            logger.warning(
                "External bearer source returned an empty token or one that cannot be sent as a "
                "header (a line break, a control character or invalid Unicode)"
            )
            return None
        self._note_bearer(tokens.access_token, called)
        return Auth(AuthMode.BEARER, tokens.access_token)

    def _check_loop(self) -> None:
        # asyncio locks, tasks and the HTTP session belong to the loop that first used them;
        # from another loop they fail deep inside with "Event loop is closed" or hang.
        shared = self._shared
        loop = asyncio.get_running_loop()
        if shared.loop is None:
            shared.loop = loop
        elif shared.loop is not loop:
            msg = (
                "This AuthManager was first used on another event loop. A manager (and the "
                "managers derived from it) belongs to one event loop: make one manager per "
                "loop; they share the login through the store."
            )
            raise ConfigError(msg)

    async def _current(self) -> Auth | None:
        self._check_loop()
        shared = self._shared
        if not shared.watched:
            self._watch_store()
        if not shared.loaded:
            async with shared.load_lock:
                if not shared.loaded:
                    version = shared.version
                    loaded = await self._load()
                    if shared.version == version:
                        self._set(loaded, "load")
                    shared.loaded = True
        return shared.snapshot

    async def _load(self) -> Auth | None:
        shared = self._shared
        loaded = await load_auth_data(shared.store, shared.memory, api_key_env=shared.api_key_env)
        if loaded is None:
            return None
        header = shared.oauth.account_header
        if shared.unsaved is not None and loaded.data == shared.unsaved[0]:
            loaded = attrs.evolve(loaded, data=shared.unsaved[1])
        if loaded.origin == "env":
            assert loaded.data.openai_api_key is not None  # noqa: S101 -- env keys are non-blank
            return Auth(AuthMode.API_KEY, loaded.data.openai_api_key, account_header=header)
        try:
            auth = Auth.from_data(loaded.data, account_header=header)
        except AuthDataError as exc:
            logger.warning("Stored auth has no usable credential (%s); treating as logged out", exc)
            return None
        if auth.mode is AuthMode.PERSONAL_ACCESS_TOKEN:
            return await self._with_identity(auth)
        return auth

    async def _with_identity(self, auth: Auth) -> Auth:
        # Codex asks whoami each time it loads a personal access token; we ask once per token
        # (an account does not change under a token) and serialise the calls so concurrent
        # loads of one token make one call. A failure is not cached: the next load retries.
        shared = self._shared
        key = hashlib.sha256(auth.token.encode()).hexdigest()
        async with shared.identity_lock:
            identity = shared.identities.get(key)
            if identity is None:
                try:
                    identity = await request_account_identity(
                        self._http(), shared.oauth, auth.token
                    )
                except AuthError as exc:
                    logger.warning(
                        "Could not look up the account of the personal access token (%s); "
                        "using it without an account id until the next load",
                        exc,
                    )
                    return auth
                if len(shared.identities) >= _IDENTITY_CACHE_LIMIT:
                    shared.identities.pop(next(iter(shared.identities)))
                shared.identities[key] = identity
        return attrs.evolve(auth, account_id=identity.account_id, identity=identity)

    def _where(self) -> str:
        store = self._shared.store
        return str(store.path) if isinstance(store, FileAuthStore) else f"the {store.kind} store"

    async def reload(self) -> bool:
        """Re-read the store, replacing the cached snapshot.

        Unlike Codex (which compares only the mode), this reports any change of credentials.

        Returns:
            Whether the snapshot changed.

        Raises:
            StorageError: The store could not be read (the cached snapshot is kept).
        """
        logger.debug("Reloading auth")
        self._check_loop()
        shared = self._shared
        if not shared.watched:
            self._watch_store()
        version = shared.version
        new = await self._load()
        shared.loaded = True
        # A change made while we read (a refresh that saved, a login) is newer than our read.
        changed = shared.version == version and self._set(new, "reload")
        logger.debug("Reloaded auth, changed: %s", changed)
        return changed

    # -- change notices from the store (optional: stores that offer ``watch``) -------------

    def _watch_store(self) -> None:
        shared = self._shared
        shared.watched = True
        watch = getattr(shared.store, "watch", None)
        if callable(watch):
            shared.unwatch = watch(self._store_changed)

    def _store_changed(self) -> None:
        """The store says another writer changed it: one reload, however many notices."""
        shared = self._shared
        if shared.store_reload is not None and not shared.store_reload.done():
            shared.store_changed_again = True  # the running reload may have read too early
            return
        shared.store_reload = asyncio.get_running_loop().create_task(
            self._reload_after_notices(), name="aioscopedauth-store-changed"
        )

    async def _reload_after_notices(self) -> None:
        shared = self._shared
        while True:
            shared.store_changed_again = False
            try:
                await self.reload()
            except AuthError as exc:
                logger.info("Could not reload after the store changed: %s", exc)
            if not shared.store_changed_again:
                return

    async def _stop_watching(self) -> None:
        shared = self._shared
        unwatch, shared.unwatch = shared.unwatch, None
        if unwatch is not None:
            await unwatch()
        task, shared.store_reload = shared.store_reload, None
        if task is not None and not task.done():
            task.cancel()
            # Waited for, not awaited: `await task` raises the CancelledError of the task, and
            # suppressing that would also swallow a cancellation of our own caller.
            await asyncio.wait({task})

    def changes(self) -> AuthChanges:
        """Subscribe to changes of auth state (load, reload, refresh, login, logout, workspace).

        With a store that sends change notices (``RedisAuthStore``), a change another host
        saved arrives here too, as a ``reload``, as soon as the store hears of it.

        Returns:
            An async iterator of :class:`AuthChange`, subscribed immediately.
        """
        return AuthChanges(self._shared.subscribers)

    # -- state changes ----------------------------------------------------------------------

    def _set(self, new: Auth | None, reason: ChangeReason) -> bool:
        shared = self._shared
        old = shared.snapshot
        shared.snapshot = new
        if new == old:
            return False
        shared.version += 1
        if new is not None:
            self._note_born_stale(new, reason)
        if shared.failure is not None and shared.failure.auth != new:
            shared.failure = None
        self._notify(AuthChange(reason, new))
        return True

    def _notify(self, change: AuthChange) -> None:
        for queue in self._shared.subscribers:
            _put_dropping_oldest(queue, change)

    def _known_failure(self, auth: Auth) -> RefreshTokenFailedError | TransientRefreshError | None:
        failure = self._shared.failure
        if failure is None or failure.auth != auth:
            return None
        if failure.until is not None and time.monotonic() >= failure.until:
            return None
        return failure.error

    def _record_failure(
        self, attempted: Auth, error: RefreshTokenFailedError | TransientRefreshError
    ) -> None:
        # Only while the snapshot is still the one attempted: a concurrent reload to new
        # credentials must not be poisoned by the old ones' failure (reference §2.5).
        shared = self._shared
        if shared.snapshot != attempted:
            return
        if isinstance(error, RefreshTokenFailedError):
            shared.failure = _Failure(attempted, error, None)
        else:
            backoff = shared.oauth.failure_backoff.total_seconds()
            if backoff > 0:
                shared.failure = _Failure(attempted, error, time.monotonic() + backoff)

    async def login_with_api_key(self, api_key: str) -> None:
        """Log in with an API key: saves ``{"auth_mode": "apikey", ...}``, dropping tokens.

        Args:
            api_key: The key.

        Raises:
            ConfigError: The key is blank.
            StorageError: It could not be saved.
        """
        key = api_key.strip()
        if not key:
            msg = "The API key is empty."
            raise ConfigError(msg)
        if not is_header_safe(key):
            msg = f"The API key {UNSENDABLE}; paste only the key."
            raise ConfigError(msg)
        shared = self._shared
        await shared.store.save(AuthDotJson.for_api_key(key))
        if shared.memory is not shared.store:
            await shared.memory.delete()
        shared.loaded = True
        self._set(await self._load(), "login")

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
        tokens = ExternalAuthTokens.chatgpt(access_token, account_id, plan_type)
        data = auth_data_from_external_tokens(tokens, _now())
        shared = self._shared
        await shared.memory.save(data)
        shared.loaded = True
        self._set(Auth.from_data(data, account_header=shared.oauth.account_header), "login")

    async def logout(self) -> bool:
        """Remove the login from the memory store and the configured store, then reload.

        Returns:
            Whether anything was removed.

        Raises:
            StorageError: A store could not be cleared (the reload still happens).
        """
        shared = self._shared
        try:
            removed = await shared.memory.delete()
            if shared.store is not shared.memory:
                removed = await shared.store.delete() or removed
        finally:
            new = await self._load()
            shared.loaded = True
            self._set(new, "logout")
        return removed

    async def enforce_login_restrictions(self) -> None:
        """Log out when the login breaks the forced method or workspace.

        API-key logins are exempt from the workspace rule. The workspace is read from the id
        token's ``chatgpt_account_id`` claim.

        Raises:
            LoginRestrictionError: The login broke a rule and was logged out; the message says
                which rule (reference §2.4).
        """
        auth = await self._current()
        if auth is None:
            return
        message = _restriction_violation(
            auth, self._shared.forced_login_method, self._shared.forced_workspace_id
        )
        if message is None:
            return
        try:
            await self.logout()
        except StorageError as exc:
            message = f"{message}. Failed to remove auth.json: {exc}"
        raise LoginRestrictionError(message)

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

    async def reload_if_account_matches(
        self, expected_account: str | None, rejected: Auth | None = None
    ) -> bool:
        """Adopt what the store holds now, if it is still the same account (recovery's reload).

        Concurrent calls share one read of the store.

        Args:
            expected_account: The account id of the rejected auth.
            rejected: The rejected auth, if known.

        Returns:
            Whether the auth to send now differs from the rejected one.

        Raises:
            RefreshTokenFailedError: The store holds another account, or nothing (logged out or
                signed in elsewhere): sign in again.
            StorageError: The store could not be read.
        """
        current = self._shared.snapshot
        if (
            rejected is not None
            and current is not None
            and current != rejected
            and current.account_id == expected_account
        ):
            return True
        inflight = self._shared.inflight
        if (
            rejected is not None
            and inflight is not None
            and not inflight.task.done()
            and inflight.expected == rejected
        ):
            # A refresh of this very auth is under way: its guarded re-read, under the refresh
            # lock, sees whatever this read would (and more recently). Read nothing; the next
            # step joins that refresh. In a storm of 401s this spares a read per wave.
            return False
        stored, version = await self._load_coalesced()
        if self._shared.version != version:
            stored = self._shared.snapshot  # changed while we read: newer than what we read
        if stored is None or not _may_adopt(stored, expected_account):
            logger.info(
                "Skipping auth reload: the stored account is %s, not the one in use",
                "unknown" if stored is None else (stored.account_id or "unknown"),
            )
            raise RefreshTokenFailedError(RefreshFailureReason.OTHER, ACCOUNT_MISMATCH_MESSAGE)
        changed = self._set(stored, "reload")
        return changed if rejected is None else stored != rejected

    async def refresh_rejected(self, rejected: Auth | None = None) -> bool:
        """Refresh the managed login after a 401 (recovery's refresh_token step).

        Args:
            rejected: The rejected auth; if the manager already holds another one, it is
                adopted without calling the token endpoint.

        Returns:
            Whether the manager now holds other auth than the rejected one (``True`` on success).

        Raises:
            RefreshTokenFailedError: Refused for good, or a failure already recorded for it.
            TransientRefreshError: Try again later.
            StorageError: The store could not be read or written.
        """
        snapshot = rejected if rejected is not None else await self._current()
        if snapshot is None or not snapshot.mode.is_chatgpt:
            return False
        return await self._refresh(snapshot)

    async def _load_coalesced(self) -> tuple[Auth | None, int]:
        """Read the store once for every caller that asks while a read is under way."""
        shared = self._shared
        while (pending := shared.loading) is not None and not pending.done():
            try:
                return await asyncio.shield(pending)
            except _ReaderGone:
                continue  # the caller reading for everyone was cancelled: read again
        # This caller reads for everyone who asks meanwhile. It reads itself, in its own task,
        # rather than starting one: each task and shield in between costs a turn of the event
        # loop, and the first 401 of a storm waits for this read.
        loading: asyncio.Future[tuple[Auth | None, int]] = (
            asyncio.get_running_loop().create_future()
        )
        loading.add_done_callback(_retrieve_exception)
        shared.loading = loading
        try:
            result = await self._load_versioned()
        except Exception as exc:
            loading.set_exception(exc)
            raise
        except BaseException:
            loading.set_exception(_ReaderGone())
            raise
        loading.set_result(result)
        return result

    async def _load_versioned(self) -> tuple[Auth | None, int]:
        version = self._shared.version
        return await self._load(), version

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
        snapshot = await self._current()
        if snapshot is None or not snapshot.mode.is_chatgpt:
            return False
        return await self._refresh(snapshot)

    async def refresh_external_auth(self, rejected: Auth | None = None) -> bool:
        """Ask this manager's external source for a new token after a 401.

        For a bearer manager the new token lives in the source's cache only (nothing is
        persisted); for host-supplied ChatGPT tokens it is kept in the memory store.

        Args:
            rejected: The snapshot the server rejected, so concurrent 401s refresh once.

        Returns:
            Whether the auth changed (always ``True`` on success).

        Raises:
            TransientRefreshError: There is no external source, or it failed.
        """
        external = self._external
        if external is None:
            msg = "external auth is not configured"
            raise TransientRefreshError(msg)
        if external.mode is AuthMode.BEARER:
            context = RefreshContext(rejected_token=None if rejected is None else rejected.token)
            called = time.monotonic()
            outcome = await _call_source(external.refresh(context))
            if isinstance(outcome, str):
                msg = f"external bearer refresh failed: {outcome}"
                raise TransientRefreshError(msg)
            self._note_bearer(outcome.access_token, called)
            return True
        snapshot = rejected if rejected is not None else await self._current()
        if snapshot is None:
            msg = "there are no host-supplied tokens to refresh"
            raise TransientRefreshError(msg)
        return await self._refresh(snapshot)

    def _refresh(self, expected: Auth) -> asyncio.Future[bool]:
        """Join (or start) the one refresh of ``expected``; await the returned future."""
        self._check_loop()
        shared = self._shared
        inflight = shared.inflight
        if inflight is None or inflight.task.done() or inflight.expected != expected:
            task = asyncio.get_running_loop().create_task(
                self._refresh_locked(expected), name="aioscopedauth-refresh"
            )
            task.add_done_callback(_retrieve_exception)
            inflight = _InFlight(expected, task)
            task.add_done_callback(inflight.wake)
            shared.inflight = inflight
        # A cancelled caller stops waiting; the refresh itself runs to completion so a refresh
        # token that was spent is never lost.
        return inflight.wait()

    async def _refresh_locked(self, expected: Auth) -> bool:
        shared = self._shared
        async with shared.refresh_lock:
            if shared.snapshot != expected:
                logger.debug("Auth changed while waiting for the refresh lock; adopting it")
                return True
            known = self._known_failure(expected)
            if known is not None:
                # A failure recorded for a snapshot must not outlive a change of the store:
                # another process (or Codex) may have logged in or refreshed since.
                if await self._adopt_stored_change(expected):
                    return True
                raise known
            if expected.mode is AuthMode.CHATGPT_AUTH_TOKENS:
                return await self._refresh_host_tokens(expected)
            # Our refresh lock, which Codex never takes: it serialises our processes' refreshes
            # (read, spend, commit) without ever delaying a Codex write.
            async with shared.store.lock():
                await self._save_unsaved()
                stored = await self._load()
                if shared.snapshot != expected:
                    return True  # replaced in this process while we read (a login, a reload)
                if not _same_login(stored, expected):
                    self._skip_other_account(stored)
                    error = RefreshTokenFailedError(
                        RefreshFailureReason.OTHER, ACCOUNT_MISMATCH_MESSAGE
                    )
                    self._record_failure(expected, error)
                    raise error
                if stored != expected:
                    logger.debug("Skipping token refresh because auth changed after guarded reload")
                    self._set(stored, "reload")
                    return True
                return await self._spend_refresh_token(expected)

    @staticmethod
    def _skip_other_account(stored: Auth | None) -> None:
        logger.info(
            "Skipping auth reload: the stored account is %s, not the one in use",
            "unknown" if stored is None else (stored.account_id or "unknown"),
        )

    async def _recheck_after_failure(self, snapshot: Auth) -> bool:
        failure = self._shared.failure
        if failure is None or time.monotonic() - failure.checked < _FAILURE_RECHECK:
            return False
        failure.checked = time.monotonic()
        return await self._adopt_stored_change(snapshot)

    async def _adopt_stored_change(self, expected: Auth) -> bool:
        """Adopt the store's login if it changed since ``expected`` (same account: new tokens)."""
        try:
            stored, version = await self._load_coalesced()
        except StorageError:
            return False
        shared = self._shared
        if shared.version != version or shared.snapshot != expected:
            return True  # changed in this process while we read
        if stored == expected or not _same_login(stored, expected):
            return False
        logger.info("Adopting the tokens another process saved since the failed refresh")
        self._set(stored, "reload")
        return True

    async def _save_unsaved(self) -> None:
        shared = self._shared
        if shared.unsaved is None:
            return
        replaced, refreshed = shared.unsaved
        try:
            # Compare-and-swap: only over the payload the refresh replaced. If someone else
            # (another process, a login) wrote since, theirs is newer and is kept.
            await shared.store.update(lambda current: refreshed if current == replaced else current)
        except StorageError as exc:
            logger.warning("Still cannot save the refreshed tokens: %s", exc)
        else:
            shared.unsaved = None
            logger.info("Saved the refreshed tokens that could not be saved before")

    async def _spend_refresh_token(self, expected: Auth) -> bool:
        shared = self._shared
        data = expected.data
        if data is None or data.tokens is None:
            msg = "Token data is not available."
            raise TransientRefreshError(msg)
        spent = data.tokens.refresh_token
        logger.info("Refreshing token")
        sent = time.monotonic()  # before the endpoint mints: see refreshed_since
        try:
            answer = await request_token_refresh(self._http(), shared.oauth, spent)
        except RefreshTokenFailedError as exc:
            # Final only after a look at the store: whoever spent the token first (another of
            # our processes, or Codex, which spends before it locks) may be about to save.
            if await self._look_for_winner(expected, exc):
                return True
            self._record_failure(expected, exc)
            raise
        except TransientRefreshError as exc:
            self._record_failure(expected, exc)
            raise

        if not answer.usable:
            # Nothing in the answer can be kept: report it and leave the store as it is.
            msg = (
                "Failed to refresh token: the token endpoint's answer was unusable "
                f"({'; '.join(answer.problems)}). Retry later."
            )
            error = TransientRefreshError(msg)
            self._record_failure(expected, error)
            raise error

        def merge(stored: AuthDotJson) -> AuthDotJson:
            return stored.with_refreshed_tokens(
                id_token=answer.id_token,
                access_token=answer.access_token,
                refresh_token=answer.refresh_token,
                now=_now(),
            )

        try:
            merged = merge(data)
        except AuthDataError as exc:
            msg = f"Failed to refresh token: the token endpoint returned a bad id token ({exc})"
            raise TransientRefreshError(msg) from exc
        target = shared.memory if data.resolved_mode is AuthMode.CHATGPT_AUTH_TOKENS else None
        try:
            # Codex's commit protocol, held for milliseconds: the new tokens are written only
            # if the store still holds the refresh token just spent.
            result = await (target or shared.store).update(
                lambda current: refreshed_payload(current, spent, merge)
            )
        except StorageError as exc:
            # The endpoint already rotated the refresh token: dropping the answer would log
            # the user out. Keep it in memory and save it on the next refresh.
            shared.unsaved = (data, merged)
            logger.error(  # noqa: TRY400 -- the message says it all; no traceback wanted
                "Refreshed, but could not save the new tokens (%s); keeping them in memory "
                "and saving them again on the next refresh",
                exc,
            )
            shared.requested = (self._auth_for(merged), sent)
            self._set(shared.requested[0], "refresh")
            return self._report_unusable_parts(answer)
        shared.unsaved = None
        if result.written:
            # The answer is "does the caller now have other auth", not "did this call change
            # the snapshot": a reload that read the saved file meanwhile may have set it.
            shared.requested = (self._auth_for(result.after), sent)
            self._set(shared.requested[0], "refresh")
            return self._report_unusable_parts(answer)
        # Someone wrote the login after we read it: a logout, a new login, or another writer's
        # tokens. Theirs wins; the answer to our spent token is dropped.
        logger.info("Kept the login another process saved during the refresh; not writing ours")
        return self._adopt_after_spend(expected, self._auth_for(result.after))

    def _report_unusable_parts(self, answer: TokenResponse) -> bool:
        """After keeping the usable part of an answer, raise for the parts that were dropped."""
        if not answer.problems:
            return True
        if "refresh_token" in answer.dropped:
            kept = "it returned no usable refresh token, so if the next refresh fails, log in again"
        elif answer.refresh_token is not None:
            kept = "the new refresh token was kept"
        else:
            kept = "the rest was kept"
        msg = (
            "Failed to refresh token: the token endpoint's answer was partly unusable "
            f"({'; '.join(answer.problems)}); {kept}. Retry later."
        )
        error = TransientRefreshError(msg)
        snapshot = self._shared.snapshot
        if snapshot is not None:
            self._record_failure(snapshot, error)
        raise error

    def _auth_for(self, data: AuthDotJson | None) -> Auth | None:
        if data is None:
            return None
        try:
            return Auth.from_data(data, account_header=self._shared.oauth.account_header)
        except AuthDataError:
            return None

    def _adopt_after_spend(self, expected: Auth, stored: Auth | None) -> bool:
        """Adopt what the store holds after our refresh token was spent elsewhere or replaced.

        The store wins: new tokens of the same account, a new login (of any kind) or a logout.

        Returns:
            ``True``: the manager now holds the stored login.

        Raises:
            RefreshTokenFailedError: The store holds no login any more (logged out elsewhere).
        """
        self._set(stored, "reload")
        if stored is not None:
            if not _same_login(stored, expected):
                logger.info("A new login replaced the one being refreshed; using it")
            return True
        self._skip_other_account(stored)
        raise RefreshTokenFailedError(RefreshFailureReason.OTHER, ACCOUNT_MISMATCH_MESSAGE)

    async def _look_for_winner(self, expected: Auth, error: RefreshTokenFailedError) -> bool:
        """Wait (boundedly) for the tokens of whoever spent our refresh token first.

        Returns:
            Whether other auth was adopted.

        Raises:
            RefreshTokenFailedError: The store now holds no login or another account.
        """
        shared = self._shared
        grace = 0.0
        if error.reason is RefreshFailureReason.EXHAUSTED:
            grace = shared.oauth.reuse_grace.total_seconds()
        deadline = time.monotonic() + grace
        delay = _WINNER_POLL_FIRST
        while True:
            try:
                stored = await self._load()
            except StorageError:
                stored = expected  # unreadable right now: as if unchanged, look again
            if shared.snapshot != expected:
                return True  # replaced in this process meanwhile (a login, a logout)
            if stored != expected:
                logger.info("The refresh token was spent by another process; using its tokens")
                return self._adopt_after_spend(expected, stored)
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _WINNER_POLL_MAX)

    async def _refresh_host_tokens(self, expected: Auth) -> bool:
        shared = self._shared
        external = self._external
        if external is None or external.mode is not AuthMode.CHATGPT_AUTH_TOKENS:
            msg = "external auth is not configured"
            raise TransientRefreshError(msg)
        context = RefreshContext(
            previous_account_id=expected.account_id, rejected_token=expected.token
        )
        called = time.monotonic()
        outcome = await _call_source(external.refresh(context))
        if not isinstance(outcome, ExternalAuthTokens):
            msg = f"external auth refresh failed: {outcome}"
            raise TransientRefreshError(msg)
        tokens = outcome
        meta = tokens.chatgpt_metadata
        if meta is None:
            msg = "external auth refresh did not return ChatGPT metadata"
            raise TransientRefreshError(msg)
        wanted = shared.forced_workspace_id
        if wanted is not None and meta.account_id != wanted:
            msg = (
                f"external auth refresh returned workspace {meta.account_id!r}, expected {wanted!r}"
            )
            raise TransientRefreshError(msg)
        try:
            data = auth_data_from_external_tokens(tokens, _now())
        except AuthDataError as exc:
            msg = f"external auth refresh returned unusable tokens: {exc}"
            raise TransientRefreshError(msg) from exc
        await shared.memory.save(data)
        shared.requested = (
            Auth.from_data(data, account_header=shared.oauth.account_header),
            called,
        )
        self._set(shared.requested[0], "external")
        return True

    def _http(self) -> aiohttp.ClientSession:
        shared = self._shared
        if shared.http is None or (shared.owns_http and shared.http.closed):
            shared.http = aiohttp.ClientSession()
            shared.owns_http = True
        return shared.http


def _put_dropping_oldest(queue: asyncio.Queue[AuthChange | None], item: AuthChange | None) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def _retrieve_exception(task: asyncio.Future[Any]) -> None:
    # Every caller may have been cancelled; mark the result as seen so asyncio does not log
    # "exception was never retrieved" (the error was already raised to whoever was waiting).
    if not task.cancelled():
        task.exception()


def _same_login(stored: Auth | None, expected: Auth) -> bool:
    """Whether ``stored`` is a ChatGPT login of the account ``expected`` belongs to."""
    return (
        stored is not None and stored.mode.is_chatgpt and stored.account_id == expected.account_id
    )


def _expired(auth: Auth) -> bool:
    if auth.data is None or auth.data.tokens is None:
        return False
    try:
        exp = jwt_expiration(auth.data.tokens.access_token)
    except AuthDataError:
        return False
    return exp is not None and exp <= _now()


async def _call_source(call: Awaitable[_R]) -> _R | str:
    """Await a host's or provider's source; return its result, or a safe description of why not.

    The source's exception is described (by :func:`_describe`) and dropped here, so the error
    raised by the caller neither chains it nor has it as its context: a host app's exception may
    quote a token, and a chained one would reach every formatted traceback.
    """
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 -- any failure of a foreign source, described
        return _describe(exc)


def _describe(exc: BaseException) -> str:
    # Our own errors carry safe messages; for anything else show only the type, because a
    # third-party exception may quote a token.
    if isinstance(exc, AuthError):
        return str(exc)
    return type(exc).__name__


def _may_adopt(stored: Auth, expected_account: str | None) -> bool:
    """Whether recovery's reload may adopt ``stored`` for a login of ``expected_account``."""
    if stored.mode is AuthMode.PERSONAL_ACCESS_TOKEN:
        # A new token on disk is adopted; its account (or the rejected one's) may be unknown
        # when whoami failed, and an unknown account is no evidence of another account.
        return expected_account is None or stored.account_id in (None, expected_account)
    return stored.mode.is_chatgpt and stored.account_id == expected_account


def _restriction_violation(
    auth: Auth, method: ForcedLoginMethod | None, workspace: str | None
) -> str | None:
    """Return the reference's message for a login that breaks a restriction, else ``None``."""
    if method == "api" and auth.mode.is_chatgpt:
        return "API key login is required, but ChatGPT is currently being used. Logging out."
    if method == "chatgpt" and auth.mode is AuthMode.API_KEY:
        return "ChatGPT login is required, but an API key is currently being used. Logging out."
    if workspace is None or not auth.mode.is_chatgpt:
        return None
    tokens = None if auth.data is None else auth.data.tokens
    actual = None if tokens is None else tokens.id_token.chatgpt_account_id
    if actual is None:
        return (
            f"Login is restricted to workspace {workspace}, but current credentials lack a "
            "workspace identifier. Logging out."
        )
    if actual != workspace:
        return (
            f"Login is restricted to workspace {workspace}, but current credentials belong to "
            f"{actual}. Logging out."
        )
    return None
