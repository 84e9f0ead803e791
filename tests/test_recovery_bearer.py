"""A bearer recovery stepped by hand (``next()``, ``asend``) refreshes as the middleware does."""

from __future__ import annotations

import asyncio

from aioscopedauth import (
    AuthManager,
    AuthMode,
    ExternalAuthTokens,
    MemoryAuthStore,
    RefreshContext,
)


class _Source:
    """A user's bearer source: mints tok-1, tok-2, ... and records each refresh."""

    def __init__(self) -> None:
        self.number = 1
        self.refreshed: list[str | None] = []
        self.gate = asyncio.Event()

    @property
    def mode(self) -> AuthMode:
        return AuthMode.BEARER

    async def resolve(self) -> ExternalAuthTokens:
        return ExternalAuthTokens.access_token_only(f"tok-{self.number}")

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        self.refreshed.append(context.rejected_token)
        await self.gate.wait()
        self.number += 1
        return ExternalAuthTokens.access_token_only(f"tok-{self.number}")


async def test_a_second_step_after_a_joined_refresh_asks_the_source_again() -> None:
    source = _Source()
    async with AuthManager(MemoryAuthStore()) as base:
        manager = base.with_external_bearer_refresher(source)
        first = await manager.auth()
        assert first is not None
        # Another request's refresh of tok-1 is under way before this request's 401.
        early = asyncio.ensure_future(manager.refresh_external_auth(first))
        await asyncio.sleep(0)
        recovery = manager.unauthorized_recovery(first)
        source.gate.set()
        await early
        step = await recovery.next()
        assert (step.auth_state_changed, step.fresh) == (True, False)
        assert recovery.has_next()
        # By default the next step is told the auth the previous step produced (tok-2), which
        # was asked for before the 401: it must ask the source for a newer one.
        await recovery.next()
    assert source.refreshed == ["tok-1", "tok-2"]


async def test_asend_of_a_rejected_fresh_token_allows_one_more_refresh() -> None:
    source = _Source()
    source.gate.set()
    async with AuthManager(MemoryAuthStore()) as base:
        manager = base.with_external_bearer_refresher(source)
        first = await manager.auth()
        steps = manager.unauthorized_recovery(first).__aiter__()
        step = await steps.__anext__()
        assert step.fresh is True
        # The retry with the fresh token got a 401 too: the first fresh rejection proves nothing.
        again = await manager.auth()
        step = await steps.asend(again)
        assert step.name == "external_refresh"
        await steps.aclose()
    assert source.refreshed == ["tok-1", "tok-2"]
