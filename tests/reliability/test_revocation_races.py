"""A revocation that lands while a refresh is on its way back (issue 23).

The demo failed one run of four: a burst of managed requests ended in 401 at once, the login
fine. The token endpoint had minted a refreshed access token, the API's tokens were revoked, and
only then did the refresh's answer reach the client: the new token was dead on arrival. The
requests rejected with the old token had joined that refresh (it was the one running for the
token they carried), retried with its dead token, got a second 401 and had no step left.

Here the server's ``mangle_answer`` hook revokes every access token right after a refresh
minted its own, and ``token_gate`` holds that refresh until the burst has joined it: the
scenario happens every run, with no sleep and no timing luck. The bearer twin: a provider
request's recovery adopts the token another request's recovery got before this 401 arrived,
and that token is revoked before the retry reaches the API.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from aioscopedauth import (
    Auth,
    AuthManager,
    AuthMiddleware,
    AuthMode,
    CommandBearerRefresher,
    ProviderAuthCommand,
    RecoveryEvent,
)
from aioscopedauth._middleware import token_fingerprint
from aioscopedauth._recovery import FRESH_REJECTIONS, MAX_REFRESH_STEPS
from aioscopedauth.testing import (
    FakeAuthServer,
    make_jwt,
    serve_on_loopback,
    write_auth_json,
    write_token_script,
)

if TYPE_CHECKING:
    from pathlib import Path

BURST = 20
DEADLINE = 30.0
"""Seconds any bounded wait of this file allows before failing (never reached when it works)."""


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


def _revoke_after_minting(server: FakeAuthServer) -> None:
    """Revoke every access token once, right after the next refresh minted its own."""

    def mangle(answer: dict[str, Any]) -> dict[str, Any]:
        server.mangle_answer = None
        server.revoke_access_tokens()
        return answer

    server.mangle_answer = mangle


async def test_a_burst_that_joined_a_refresh_revoked_on_its_way_back_recovers(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    events: list[RecoveryEvent] = []
    joined = asyncio.Event()

    def on_event(event: RecoveryEvent) -> None:
        events.append(event)
        # A request whose reload found the refresh of its token under way joins that refresh
        # within the same turn of the event loop: once BURST have said so, all have joined.
        reloads = sum(e.step == "reload" and e.outcome == "unchanged" for e in events)
        if reloads == BURST:
            joined.set()

    middleware = AuthMiddleware(manager, origins=[server.url], on_event=on_event)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        assert await _status(session, f"{server.url}/api/warm") == 200
        # A refresh of the current token is under way (the proactive one, in the demo) and is
        # held at the endpoint until the burst below has joined it.
        server.token_gate = asyncio.Event()
        refresh = asyncio.create_task(manager.refresh_token())
        async with asyncio.timeout(DEADLINE):
            await server.token_request_seen.wait()
        server.revoke_access_tokens()  # the burst's token is rejected...
        _revoke_after_minting(server)  # ...and so will be the refresh's, minted before a revoke
        burst = [
            asyncio.create_task(_status(session, f"{server.url}/api/{i}")) for i in range(BURST)
        ]
        try:
            async with asyncio.timeout(DEADLINE):
                await joined.wait()
            server.token_gate.set()
            async with asyncio.timeout(DEADLINE):
                statuses = await asyncio.gather(*burst)
                assert await refresh is True
        finally:
            server.token_gate.set()
            for task in burst:
                task.cancel()
    # Every request recovered: the token they adopted was rejected, which says nothing about
    # the login, so one more refresh ran (one for all of them) and its token worked.
    assert statuses == [200] * BURST
    assert server.refreshes == 2
    assert server.token_calls == 2
    assert server.reuse_answers == 0
    assert not [e for e in events if e.outcome == "gave_up"]


@pytest.mark.parametrize("burst", [1, BURST])
async def test_a_refreshed_token_rejected_again_is_handed_back(
    home: Path, manager: AuthManager, server: FakeAuthServer, burst: int
) -> None:
    # The other side of the bound: two tokens asked for after the 401 that are rejected too
    # mean the login is unusable here, and the 401 is handed back, with the reason recorded.
    write_auth_json(home, server.login())
    events: list[RecoveryEvent] = []
    middleware = AuthMiddleware(manager, origins=[server.url], on_event=events.append)
    server.api_always_401 = True
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        async with asyncio.timeout(DEADLINE):
            statuses = await asyncio.gather(
                *(_status(session, f"{server.url}/api/{i}") for i in range(burst))
            )
    assert statuses == [401] * burst
    traces: dict[int, list[RecoveryEvent]] = {}
    for e in events:
        traces.setdefault(e.request, []).append(e)
    assert len(traces) == burst
    refreshes: list[int] = []
    for trace in traces.values():
        # reload (nothing new), refresh steps, then the 401 goes back.
        steps = [(e.step, e.outcome) for e in trace]
        k = len(steps) - 2
        assert steps == [
            ("reload", "unchanged"),
            *[("refresh_token", "changed")] * k,
            ("done", "gave_up"),
        ], steps
        refreshes.append(k)
        # A token asked for before the 401 (a refresh joined) proves nothing, nor does the
        # first fresh one: it ends at the second fresh token rejected, or at the third step.
        fresh = [e.fresh for e in trace[1:-1]]
        assert sum(map(bool, fresh)) == FRESH_REJECTIONS or k == MAX_REFRESH_STEPS, fresh
        assert sum(map(bool, fresh[:-1])) < FRESH_REJECTIONS
        assert [e.send for e in trace] == [1, *range(1, k + 1), k + 1]
    # Single flight: every token the burst retried with came from one refresh of its own.
    assert server.token_calls == len({e.retry_with for e in events if e.retry_with})
    assert server.api_hits == sum(k + 1 for k in refreshes)
    if burst == 1:
        assert (refreshes, server.token_calls, server.api_hits) == ([2], 2, 3)
    gave_up = [e for e in events if e.outcome == "gave_up"]
    assert {e.reason for e in gave_up} == {"recovery_exhausted"}


class _ProviderApi:
    """Accepts any bearer not revoked; holds the first ``held`` requests until told."""

    def __init__(self, held: int) -> None:
        self.revoked: set[str] = set()
        self.held = held
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.carried: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.carried.append(token)
        if len(self.carried) <= self.held:
            if len(self.carried) == self.held:
                self.arrived.set()
            await self.release.wait()
        if not token or token in self.revoked:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"ok": True})


async def test_a_bearer_burst_that_adopted_a_token_revoked_before_its_retry_recovers(
    tmp_path: Path, manager: AuthManager
) -> None:
    script = write_token_script(tmp_path / "s", "p1", "p2", "p3")
    refresher = CommandBearerRefresher(ProviderAuthCommand("./print-token.sh", cwd=script.folder))
    derived = manager.with_external_bearer_refresher(refresher)
    api = _ProviderApi(held=BURST)
    app = web.Application()
    app.router.add_get("/v1/{n}", api.handle)
    runner, url = await serve_on_loopback(app)
    events: list[RecoveryEvent] = []
    middleware = AuthMiddleware(derived, origins=[url], on_event=events.append)
    try:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            # A burst goes out with p1 and is held at the API...
            burst = [asyncio.create_task(_status(session, f"{url}/v1/{i}")) for i in range(BURST)]
            try:
                async with asyncio.timeout(DEADLINE):
                    await api.arrived.wait()
                # ...while another request's recovery gets p2 from the command, and then both
                # are revoked: p2 before any request of the burst could use it.
                assert await derived.refresh_external_auth(Auth(AuthMode.BEARER, "p1")) is True
                api.revoked |= {"p1", "p2"}
                api.release.set()
                async with asyncio.timeout(DEADLINE):
                    statuses = await asyncio.gather(*burst)
            finally:
                api.release.set()
                for task in burst:
                    task.cancel()
    finally:
        await runner.cleanup()
    assert statuses == [200] * BURST
    assert script.runs == 3  # p1, p2, and one more run (p3) for the whole burst
    assert api.carried.count("p1") == BURST
    assert api.carried.count("p2") == BURST  # adopted: asked for before their 401
    assert api.carried.count("p3") == BURST
    assert not [e for e in events if e.outcome == "gave_up"]


async def test_a_fresh_token_that_expired_before_the_retry_arrived_is_refreshed_again(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # A soak's failure: the loop stalled for seconds between a refresh and its retry's
    # arrival, and the API rejected the fresh token because it had expired meanwhile. A 401
    # to an expired token is explained by its expiry: the recovery refreshes again, even after
    # the second fresh token. Here the endpoint hands out two tokens expired already (as the
    # stall made them).
    write_auth_json(home, server.login())
    events: list[RecoveryEvent] = []
    middleware = AuthMiddleware(manager, origins=[server.url], on_event=events.append)
    minted: list[str] = []

    def expired_twice(answer: dict[str, Any]) -> dict[str, Any]:
        if len(minted) == 1:
            server.mangle_answer = None
        answer["access_token"] = make_jwt(
            {
                "exp": time.time() - 1,
                "https://api.openai.com/auth": {"chatgpt_account_id": "acct-1"},
            }
        )
        minted.append(answer["access_token"])
        return answer

    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        assert await _status(session, f"{server.url}/api/warm") == 200
        server.revoke_access_tokens()
        server.mangle_answer = expired_twice
        async with asyncio.timeout(DEADLINE):
            assert await _status(session, f"{server.url}/api/x") == 200
    assert server.token_calls == 3
    assert [(e.step, e.outcome, e.fresh) for e in events] == [
        ("reload", "unchanged", None),
        ("refresh_token", "changed", True),  # asked for after the 401, but expired on arrival
        ("refresh_token", "changed", True),  # the second: final, were it not expired
        ("refresh_token", "changed", True),
        ("done", "recovered", None),
    ]
    assert [e.rejected for e in events[2:4]] == [token_fingerprint(t) for t in minted]
