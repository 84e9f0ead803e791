"""Reading the login: the store (or memory, or an environment key) turned into a snapshot.

Invariants:

* A read that finds the payload an unsaved refresh replaced gets the refreshed one instead
  (``unsaved``): a spent refresh token is never brought back from disk.
* Concurrent recoveries share one read of the store (:meth:`StoreReader.load_coalesced`); a
  reader cancelled midway hands the read to the next caller, never its cancellation.
* A personal access token's account is asked of the whoami endpoint once per token.
* A login from the environment (``access_token_env``, ``api_key_env``) is never saved; a manager
  that follows Codex's environment warns once when Codex would use workload identity instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

import attrs

from ._envlogin import workload_identity_variables
from ._errors import AuthDataError, AuthError
from ._model import AccountIdentity, Auth, AuthDotJson, AuthMode
from ._oauth import request_account_identity
from ._storage import FileAuthStore, MemoryAuthStore, load_auth_data

if TYPE_CHECKING:
    from ._oauth import OAuthConfig
    from ._session import SessionHolder
    from ._snapshot import SnapshotCell
    from ._storage import AuthStore

__all__ = ["IdentityCache", "StoreReader", "retrieve_exception"]

logger = logging.getLogger("aioscopedauth.manager")

_IDENTITY_CACHE_LIMIT = 16


class _ReaderGone(Exception):  # noqa: N818 -- a private signal, never raised to a caller
    """The caller reading the store for everyone was cancelled; a waiting caller reads instead."""


@attrs.define(eq=False)
class IdentityCache:
    """Whoami answers by the sha256 of their personal access token: one call per token."""

    identities: dict[str, AccountIdentity] = attrs.field(factory=dict, repr=False)
    lock: asyncio.Lock = attrs.Factory(asyncio.Lock)

    async def identify(self, auth: Auth, session: SessionHolder, oauth: OAuthConfig) -> Auth:
        """Return ``auth`` with the account of its personal access token, as whoami tells it.

        A failure is logged and not cached: the token is used without an account id until the
        next load retries.
        """
        # Codex asks whoami each time it loads a personal access token; we ask once per token
        # (an account does not change under a token) and serialise the calls so concurrent
        # loads of one token make one call.
        key = hashlib.sha256(auth.token.encode()).hexdigest()
        async with self.lock:
            identity = self.identities.get(key)
            if identity is None:
                try:
                    identity = await request_account_identity(session.get(), oauth, auth.token)
                except AuthError as exc:
                    logger.warning(
                        "Could not look up the account of the personal access token (%s); "
                        "using it without an account id until the next load",
                        exc,
                    )
                    return auth
                if len(self.identities) >= _IDENTITY_CACHE_LIMIT:
                    self.identities.pop(next(iter(self.identities)))
                self.identities[key] = identity
        return attrs.evolve(auth, account_id=identity.account_id, identity=identity)


@attrs.define(eq=False)
class StoreReader:
    """Turns what the store holds into the snapshot to hand out.

    Attributes:
        store: The configured store.
        memory: The in-memory store (host-supplied tokens; the store itself when it is one).
        unsaved: ``(replaced, refreshed)``: tokens a refresh got but could not save (a full
            disk). Until a save works, a read that finds the replaced payload gets the
            refreshed one instead.
        access_token_env: The variable an access token is read from before anything else
            (Codex's ``CODEX_ACCESS_TOKEN``), or ``None``.
        origin: Where the last load found the login (``None`` before one, or when none).
    """

    store: AuthStore
    memory: MemoryAuthStore
    oauth: OAuthConfig
    api_key_env: str | None
    session: SessionHolder
    cell: SnapshotCell
    unsaved: tuple[AuthDotJson, AuthDotJson] | None = None
    loading: asyncio.Future[tuple[Auth | None, int]] | None = None
    """The store read under way that concurrent recoveries share."""
    identities: IdentityCache = attrs.Factory(IdentityCache)
    access_token_env: str | None = None
    origin: str | None = None
    warned_workload_identity: bool = False

    async def load(self) -> Auth | None:
        """Read the login and build its snapshot (``None`` when there is none).

        Raises:
            StorageError: The store could not be read.
        """
        loaded = await load_auth_data(
            self.store,
            self.memory,
            api_key_env=self.api_key_env,
            access_token_env=self.access_token_env,
        )
        self.origin = None if loaded is None else loaded.origin
        self.warn_workload_identity()
        if loaded is None:
            return None
        header = self.oauth.account_header
        if self.unsaved is not None and loaded.data == self.unsaved[0]:
            loaded = attrs.evolve(loaded, data=self.unsaved[1])
        if loaded.origin == "env":
            assert loaded.data.openai_api_key is not None  # noqa: S101 -- env keys are non-blank
            return Auth(AuthMode.API_KEY, loaded.data.openai_api_key, account_header=header)
        try:
            auth = Auth.from_data(loaded.data, account_header=header)
        except AuthDataError as exc:
            logger.warning("Stored auth has no usable credential (%s); treating as logged out", exc)
            return None
        if auth.mode is AuthMode.PERSONAL_ACCESS_TOKEN:
            return await self.identities.identify(auth, self.session, self.oauth)
        return auth

    async def load_coalesced(self) -> tuple[Auth | None, int]:
        """Read the store once for every caller that asks while a read is under way.

        Returns:
            The snapshot read and the cell's version when the read started.
        """
        while (pending := self.loading) is not None and not pending.done():
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
        loading.add_done_callback(retrieve_exception)
        self.loading = loading
        try:
            version = self.cell.version
            result = (await self.load(), version)
        except Exception as exc:
            loading.set_exception(exc)
            raise
        except BaseException:
            loading.set_exception(_ReaderGone())
            raise
        loading.set_result(result)
        return result

    def auth_for(self, data: AuthDotJson | None) -> Auth | None:
        """The snapshot of ``data`` (``None`` when it holds no usable credential)."""
        if data is None:
            return None
        try:
            return Auth.from_data(data, account_header=self.oauth.account_header)
        except AuthDataError:
            return None

    def warn_workload_identity(self) -> None:
        """Warn once when Codex would log in with workload identity and this manager cannot.

        Only a manager that follows Codex's environment logins (``access_token_env`` or
        ``api_key_env`` set) warns: its user expects the identity Codex would use here, and
        Codex picks workload identity before any of them (and fails rather than fall back).
        """
        if self.warned_workload_identity or not (self.access_token_env or self.api_key_env):
            return
        variables = workload_identity_variables(os.environ)
        if not variables:
            return
        self.warned_workload_identity = True
        # Names only: the values (a rule id, a path) are configuration, but say nothing useful.
        logger.warning(
            "Codex would log in with workload identity here (%s set), an identity "
            "aioscopedauth cannot use yet: this manager uses a different identity than Codex",
            ", ".join(variables),
        )

    def where(self) -> str:
        """Where the login lives, for messages."""
        if self.origin == "access_token_env":
            return f"the {self.access_token_env} variable"
        if self.origin == "env":
            return f"the {self.api_key_env} variable"
        store = self.store
        return str(store.path) if isinstance(store, FileAuthStore) else f"the {store.kind} store"


def retrieve_exception(task: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (a done callback).

    Every caller may have been cancelled; this keeps asyncio from logging "exception was never
    retrieved" for an error already raised to whoever was waiting.
    """
    if not task.cancelled():
        task.exception()
