from __future__ import annotations

from aioscopedauth import AuthManager, MemoryAuthStore
from tests.test_rv_bearer import _Src


async def test_asend_after_first_fresh_rejection_allows_one_more_refresh() -> None:
    base = AuthManager(store=MemoryAuthStore())
    src = _Src()
    src.gate.set()
    mgr = base.with_external_bearer_refresher(src)
    first = await mgr.auth()
    recovery = mgr.unauthorized_recovery(first)
    gen = recovery.__aiter__()
    step = await gen.__anext__()
    assert step.fresh is True
    again = await mgr.auth()
    # the retry with the fresh token got 401 too: the first fresh rejection proves nothing
    step2 = await gen.asend(again)  # raises StopAsyncIteration today
    assert step2.name == "external_refresh"
    assert len(src.calls) == 2
    await base.aclose()
