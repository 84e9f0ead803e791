"""The refresh coordinator: its decisions as tables, its single flight against a real endpoint."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from aioscopedauth import (
    Auth,
    AuthManager,
    AuthMode,
    ExternalAuthTokens,
    MemoryAuthStore,
    OAuthConfig,
    RefreshContext,
)
from aioscopedauth._refresh import Freshness, TokenState, Verdict, verdict
from aioscopedauth.testing import FakeAuthServer, chatgpt_auth, make_jwt

if TYPE_CHECKING:
    from aioscopedauth._refresh import Phase


def _login(refresh: str, account: str | None = "acct-1") -> Auth:
    return Auth.from_data(chatgpt_auth(refresh_token=refresh, account_id=account))


EXPECTED = _login("rt-expected")
ROTATED = _login("rt-rotated")  # the same account, newer tokens
OTHER = _login("rt-other", account="acct-2")  # another account
API_KEY = Auth(AuthMode.API_KEY, "sk-1")


# One row per situation a re-read can find: (stored, current, phase) -> verdict.
VERDICTS: list[tuple[str, Auth | None, Auth | None, Phase, Verdict]] = [
    ("moved on in this process", EXPECTED, ROTATED, "before_spend", Verdict.KEEP_CURRENT),
    ("moved on, after a failure", ROTATED, None, "after_failure", Verdict.KEEP_CURRENT),
    ("moved on, after a spend", EXPECTED, OTHER, "after_spend", Verdict.KEEP_CURRENT),
    ("store unchanged: spend", EXPECTED, EXPECTED, "before_spend", Verdict.SPEND),
    ("store unchanged: failure stands", EXPECTED, EXPECTED, "after_failure", Verdict.UNCHANGED),
    ("store unchanged: keep waiting", EXPECTED, EXPECTED, "after_spend", Verdict.UNCHANGED),
    ("another writer's tokens", ROTATED, EXPECTED, "before_spend", Verdict.ADOPT),
    ("another writer's tokens, after a failure", ROTATED, EXPECTED, "after_failure", Verdict.ADOPT),
    ("the winner's tokens", ROTATED, EXPECTED, "after_spend", Verdict.ADOPT),
    ("another account: refuse", OTHER, EXPECTED, "before_spend", Verdict.REFUSE),
    ("another account: failure stands", OTHER, EXPECTED, "after_failure", Verdict.UNCHANGED),
    ("another account after a spend wins", OTHER, EXPECTED, "after_spend", Verdict.ADOPT),
    ("an API key: refuse", API_KEY, EXPECTED, "before_spend", Verdict.REFUSE),
    ("an API key after a spend wins", API_KEY, EXPECTED, "after_spend", Verdict.ADOPT),
    ("logged out: refuse", None, EXPECTED, "before_spend", Verdict.REFUSE),
    ("logged out: failure stands", None, EXPECTED, "after_failure", Verdict.UNCHANGED),
    ("logged out after a spend", None, EXPECTED, "after_spend", Verdict.REFUSE),
]


@pytest.mark.parametrize(
    ("stored", "current", "phase", "expected"),
    [row[1:] for row in VERDICTS],
    ids=[row[0] for row in VERDICTS],
)
def test_verdict(
    stored: Auth | None, current: Auth | None, phase: Phase, expected: Verdict
) -> None:
    assert verdict(EXPECTED, stored, current, phase) is expected


def _token_state(lifetime: timedelta, age: timedelta) -> TokenState:
    now = int(time.time())
    access = make_jwt(
        {"exp": now + int(lifetime.total_seconds()), "iat": now - int(age.total_seconds())}
    )
    auth = Auth.from_data(chatgpt_auth(access_token=access))
    return Freshness(OAuthConfig.codex()).state(auth)


def test_freshness_states() -> None:
    assert _token_state(timedelta(hours=1), timedelta(0)) is TokenState.FRESH
    # Inside the five-minute window of a token that lived an hour: due, still valid.
    assert _token_state(timedelta(minutes=2), timedelta(hours=1)) is TokenState.DUE
    assert _token_state(timedelta(seconds=-5), timedelta(hours=1)) is TokenState.EXPIRED
    freshness = Freshness(OAuthConfig.codex())
    assert freshness.state(API_KEY) is TokenState.FRESH  # never refreshed proactively


def test_a_snapshot_born_due_is_held_back_once_per_gap(caplog: pytest.LogCaptureFixture) -> None:
    now = int(time.time())
    born_due = Auth.from_data(
        chatgpt_auth(access_token=make_jwt({"exp": now + 60, "iat": now - 3600}))
    )
    freshness = Freshness(OAuthConfig.codex())
    freshness.note(born_due, "reload")
    assert freshness.held_back(born_due) is False  # another writer's tokens: not ours to bound
    freshness.note(born_due, "refresh")
    with caplog.at_level("WARNING", logger="aioscopedauth.manager"):
        assert freshness.held_back(born_due) is True
        assert freshness.held_back(born_due) is True
    assert [r.getMessage()[:60] for r in caplog.records] == [
        "The token endpoint returned an access token that is already "
    ]


@pytest.fixture
async def coordinated(
    fake_auth_server: FakeAuthServer, fake_oauth_config: OAuthConfig
) -> tuple[AuthManager, MemoryAuthStore]:
    store = MemoryAuthStore(data=fake_auth_server.login(expired=True))
    return AuthManager(store, fake_oauth_config), store


async def test_joiners_of_one_snapshot_share_one_refresh(
    coordinated: tuple[AuthManager, MemoryAuthStore], fake_auth_server: FakeAuthServer
) -> None:
    manager, store = coordinated
    async with manager:
        snapshot = await manager._core.current()
        assert snapshot is not None
        refresh = manager._core.refresh
        results = await asyncio.gather(*(refresh.join(snapshot, None) for _ in range(50)))
        assert results == [True] * 50
        assert fake_auth_server.token_calls == 1
        stored = await store.load()
        assert stored is not None
        assert stored.tokens is not None
        assert manager.auth_cached() == Auth.from_data(stored)
        assert fake_auth_server.is_valid_refresh_token(stored.tokens.refresh_token)


async def test_a_cancelled_joiner_never_cancels_the_spend(
    coordinated: tuple[AuthManager, MemoryAuthStore], fake_auth_server: FakeAuthServer
) -> None:
    manager, store = coordinated
    gate = asyncio.Event()
    fake_auth_server.token_gate = gate
    async with manager:
        snapshot = await manager._core.current()
        assert snapshot is not None
        refresh = manager._core.refresh
        first = refresh.join(snapshot, None)
        second = refresh.join(snapshot, None)
        await fake_auth_server.token_request_seen.wait()
        first.cancel()  # the caller stops waiting; the refresh token is already spent
        gate.set()
        assert await second is True
        assert first.cancelled()
        assert fake_auth_server.token_calls == 1
        stored = await store.load()
        assert stored is not None
        assert stored.tokens is not None
        assert fake_auth_server.is_valid_refresh_token(stored.tokens.refresh_token)


async def test_a_reused_token_adopts_the_winners_tokens(
    coordinated: tuple[AuthManager, MemoryAuthStore], fake_auth_server: FakeAuthServer
) -> None:
    manager, store = coordinated
    async with manager:
        snapshot = await manager._core.current()
        assert snapshot is not None
        assert snapshot.data is not None
        # Another process spends the refresh token first and saves its tokens while our
        # request is on the wire.
        winner = fake_auth_server.login()

        async def another_process_wins(_body: object) -> None:
            fake_auth_server.token_hook = None
            fake_auth_server.expire_refresh_tokens()  # spent: ours is refused as reused
            await store.save(winner)

        fake_auth_server.token_hook = another_process_wins
        assert await manager._core.refresh.join(snapshot, None) is True
        assert manager.auth_cached() == Auth.from_data(winner)
        assert fake_auth_server.refreshes == 0


@attrs.define
class _HostSource:
    """A host app's token source that counts its calls."""

    name: str
    account_id: str
    calls: list[str] = attrs.Factory(list)

    @property
    def mode(self) -> AuthMode:
        return AuthMode.CHATGPT_AUTH_TOKENS

    async def resolve(self) -> ExternalAuthTokens | None:
        return None

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        self.calls.append(self.name)
        await asyncio.sleep(0)
        access = make_jwt({"exp": int(time.time()) + 3600, "https://api.openai.com/auth": {}})
        return ExternalAuthTokens.chatgpt(access, self.account_id, "pro")


async def test_a_host_refresh_asks_the_source_of_the_manager_that_started_it() -> None:
    # Pinned behaviour: joiners share the refresh the first caller started, with its source.
    manager = AuthManager(MemoryAuthStore())
    access = make_jwt({"exp": int(time.time()) + 3600, "https://api.openai.com/auth": {}})
    await manager.login_with_tokens(access, "acct-1", "pro")
    snapshot = manager.auth_cached()
    assert snapshot is not None
    first, second = _HostSource("first", "acct-1"), _HostSource("second", "acct-1")
    refresh = manager._core.refresh
    outcomes = await asyncio.gather(refresh.join(snapshot, first), refresh.join(snapshot, second))
    assert list(outcomes) == [True, True]
    assert (first.calls, second.calls) == (["first"], [])
    assert manager.auth_cached() != snapshot
