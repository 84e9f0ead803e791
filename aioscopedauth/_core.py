"""``Core``: what a base manager and every manager derived from it share, wired together."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs

from ._loader import StoreReader
from ._policy import Freshness
from ._refresh import RefreshCoordinator
from ._session import SessionHolder
from ._snapshot import SnapshotCell
from ._storage import MemoryAuthStore
from ._watch import StoreWatcher

if TYPE_CHECKING:
    import aiohttp

    from ._login import ForcedLoginMethod
    from ._model import Auth
    from ._oauth import OAuthConfig
    from ._storage import AuthStore

__all__ = ["Core"]

logger = logging.getLogger("aioscopedauth.manager")


@attrs.define(eq=False)
class Core:
    """What a base manager and every manager derived from it share, by reference."""

    store: AuthStore
    oauth: OAuthConfig
    forced_login_method: ForcedLoginMethod | None
    forced_workspace_id: str | None
    session: SessionHolder
    cell: SnapshotCell
    reader: StoreReader
    refresh: RefreshCoordinator
    watcher: StoreWatcher

    @classmethod
    def build(  # noqa: PLR0913 -- the manager's configuration, passed through
        cls,
        store: AuthStore,
        oauth: OAuthConfig,
        *,
        api_key_env: str | None,
        access_token_env: str | None,
        forced_login_method: ForcedLoginMethod | None,
        forced_workspace_id: str | None,
        http: aiohttp.ClientSession | None,
    ) -> Core:
        """Wire the rooms together."""
        session = SessionHolder.of(http)
        freshness = Freshness(oauth)
        cell = SnapshotCell(on_set=freshness.note)
        memory = store if isinstance(store, MemoryAuthStore) else MemoryAuthStore()
        reader = StoreReader(
            store, memory, oauth, api_key_env, session, cell, access_token_env=access_token_env
        )
        core: Core

        def forced_workspace() -> str | None:
            return core.forced_workspace_id

        async def reload() -> bool:
            return await core.reload()

        refresh = RefreshCoordinator(cell, reader, oauth, session, forced_workspace, freshness)
        core = cls(
            store=store,
            oauth=oauth,
            forced_login_method=forced_login_method,
            forced_workspace_id=forced_workspace_id,
            session=session,
            cell=cell,
            reader=reader,
            refresh=refresh,
            watcher=StoreWatcher(store, reload),
        )
        return core

    async def current(self) -> Auth | None:
        """The snapshot, loaded from the store on first use."""
        cell = self.cell
        cell.check_loop()
        if not self.watcher.watched:
            self.watcher.start()
        if not cell.loaded:
            async with cell.load_lock:
                if not cell.loaded:
                    version = cell.version
                    loaded = await self.reader.load()
                    if cell.version == version:
                        cell.set(loaded, "load")
                    cell.loaded = True
        return cell.snapshot

    async def reload(self) -> bool:
        """Re-read the store; whether the snapshot changed."""
        logger.debug("Reloading auth")
        cell = self.cell
        cell.check_loop()
        if not self.watcher.watched:
            self.watcher.start()
        version = cell.version
        new = await self.reader.load()
        cell.loaded = True
        # A change made while we read (a refresh that saved, a login) is newer than our read.
        changed = cell.version == version and cell.set(new, "reload")
        logger.debug("Reloaded auth, changed: %s", changed)
        return changed
