"""Review: a bearer recovery stepped with next() (no rejected passed) must call the source again."""
from __future__ import annotations

import asyncio

from aioscopedauth import AuthManager, AuthMode, ExternalAuthTokens, MemoryAuthStore, RefreshContext


class _Src:
    def __init__(self) -> None:
        self.n = 1
        self.calls: list[str | None] = []
        self.gate = asyncio.Event()

    @property
    def mode(self) -> AuthMode:
        return AuthMode.BEARER

    async def resolve(self) -> ExternalAuthTokens:
        return ExternalAuthTokens.access_token_only(f"tok-{self.n}")

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        self.calls.append(context.rejected_token)
        await self.gate.wait()
        self.n += 1
        return ExternalAuthTokens.access_token_only(f"tok-{self.n}")


async def test_second_bearer_step_calls_source_again() -> None:
    base = AuthManager(store=MemoryAuthStore())
    src = _Src()
    mgr = base.with_external_bearer_refresher(src)
    first = await mgr.auth()
    assert first is not None
    # a refresh of tok-1 already under way before the 401 (another request's)
    early = asyncio.ensure_future(mgr.refresh_external_auth(first))
    await asyncio.sleep(0)
    recovery = mgr.unauthorized_recovery(first)
    src.gate.set()
    await early
    step1 = await recovery.next()
    assert step1.auth_state_changed and step1.fresh is False
    assert recovery.has_next()
    step2 = await recovery.next()  # "by default, the auth the previous step produced" (tok-2)
    # tok-2 was asked for before the 401: step 2 must ask the source for a token minted after it
    assert len(src.calls) == 2, (src.calls, step2)
    await base.aclose()
