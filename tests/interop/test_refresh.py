"""Refreshes on one home shared by the real Codex CLI 0.169.0 and the library.

Single-use rotating refresh tokens (the kit's ``FakeAuthServer``): whoever spends second gets
``refresh_token_reused``. Codex's requests carry ``refresh_reason``; the library's do not.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import attrs

from aioscopedauth import AuthError, AuthMode
from aioscopedauth.testing import write_auth_json
from interop.harness import (
    expiring_login,
    file_mode,
    is_codex_request,
    read_json,
    stray_temp_files,
)

if TYPE_CHECKING:
    from pathlib import Path

    from aioscopedauth import AuthManager
    from aioscopedauth.testing import FakeAuthServer
    from interop.harness import AppServer, Backend, Codex

ROUNDS = 20
SLOW_LIBRARY_REFRESH = 8.0


def _disk_tokens(home: Path) -> dict[str, Any]:
    tokens = read_json(home / "auth.json")["tokens"]
    assert isinstance(tokens, dict)
    return tokens


async def test_codex_uses_the_library_refresh_without_spending(
    codex: Codex, home: Path, server: FakeAuthServer, backend: Backend, manager: AuthManager
) -> None:
    # A token 60 s from expiry: Codex alone would refresh it (see the proactive test).
    write_auth_json(home, expiring_login(server, 60))
    assert await manager.refresh_token() is True
    assert server.token_calls == 1
    assert not is_codex_request(server.token_requests[0])
    after_library = (home / "auth.json").read_bytes()
    tokens = _disk_tokens(home)

    async with codex.app_server() as app:
        answer = await app.read_account()
    assert "result" in answer, answer
    assert answer["result"]["account"]["email"] == "user@example.com"
    assert server.token_calls == 1  # Codex spent nothing
    assert backend.bearers("/wham/accounts/check") == [tokens["access_token"]]
    assert (home / "auth.json").read_bytes() == after_library
    assert server.is_valid_refresh_token(tokens["refresh_token"])


async def test_library_adopts_the_codex_refresh_without_spending(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    # Expired for the library; Codex ignores a fractional exp, so it refreshes only when asked.
    write_auth_json(home, expiring_login(server, -60, fractional=True))
    assert await manager.reload() is True
    stale = manager.auth_cached()
    assert stale is not None
    assert stale.mode is AuthMode.CHATGPT

    async with codex.app_server() as app:
        answer = await app.read_account(refresh=True)
    assert "result" in answer, answer
    assert [r["refresh_reason"] for r in server.token_requests] == ["forced"]
    codex_bytes = (home / "auth.json").read_bytes()
    tokens = _disk_tokens(home)

    # The library's snapshot is expired: auth() re-reads the store before spending and adopts.
    auth = await manager.auth()
    assert auth is not None
    assert auth.token == tokens["access_token"]
    assert server.token_calls == 1
    assert (home / "auth.json").read_bytes() == codex_bytes
    assert server.reuse_answers == 0
    assert server.is_valid_refresh_token(tokens["refresh_token"])


async def test_library_forced_refresh_adopts_a_codex_refresh(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    assert await manager.reload() is True
    async with codex.app_server() as app:
        answer = await app.read_account(refresh=True)
    assert "result" in answer, answer
    tokens = _disk_tokens(home)
    codex_bytes = (home / "auth.json").read_bytes()
    # The store changed since the library's snapshot: adopted without a network call.
    assert await manager.refresh_token() is True
    auth = manager.auth_cached()
    assert auth is not None
    assert auth.token == tokens["access_token"]
    assert server.token_calls == 1
    assert (home / "auth.json").read_bytes() == codex_bytes


@attrs.define
class _Round:
    number: int
    first: str
    posted: list[str] = attrs.field(factory=list)
    spent_by: list[str] = attrs.field(factory=list)
    reuse_answers: int = 0
    library: str = ""
    codex: str = ""
    library_logged_out: bool = False
    codex_logged_out: bool = False
    disk_valid: bool = False
    library_matches_disk: bool = False


class _Barrier:
    """Holds each token request until both sides have posted, then answers them in order."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.arrived: dict[str, asyncio.Event] = {
            "codex": asyncio.Event(),
            "library": asyncio.Event(),
        }
        self.answered_first = asyncio.Event()
        self.order: list[str] = []

    async def __call__(self, body: dict[str, Any]) -> None:
        who = "codex" if is_codex_request(body) else "library"
        self.order.append(who)
        self.arrived[who].set()
        other = "library" if who == "codex" else "codex"
        # Bounded: a side that adopted the other's tokens never posts.
        try:
            await asyncio.wait_for(self.arrived[other].wait(), 3.0)
        except TimeoutError:
            return
        if who == self.first:
            # The server spends synchronously after this returns, before the other resumes.
            self.answered_first.set()
        else:
            await self.answered_first.wait()


async def _library_refresh(manager: AuthManager) -> str:
    try:
        return f"returned {await manager.refresh_token()}"
    except AuthError as exc:
        return f"{type(exc).__name__}: {exc}"


async def _codex_refresh(app: AppServer) -> str:
    answer = await app.read_account(refresh=True)
    if "error" in answer:
        return f"error: {answer['error'].get('message')}"
    account = answer["result"].get("account")
    return "ok" if account else f"no account: {json.dumps(answer['result'])}"


async def _one_round(
    number: int, home: Path, server: FakeAuthServer, manager: AuthManager, codex: Codex
) -> _Round:
    record = _Round(number, first="codex" if number % 2 == 0 else "library")
    barrier = _Barrier(record.first)
    server.token_hook = barrier
    before_refreshes, before_reuse = server.refreshes, server.reuse_answers
    # A fresh app server each round: a running one skips a forced refresh when auth.json
    # changed since it last loaded it ("guarded reload"), so it would adopt, not race.
    async with codex.app_server() as app:
        record.library, record.codex = await asyncio.gather(
            _library_refresh(manager), _codex_refresh(app)
        )
    server.token_hook = None
    record.posted = list(barrier.order)
    record.reuse_answers = server.reuse_answers - before_reuse
    refreshes = server.refreshes - before_refreshes
    # The barrier answers `first` first, so when both posted the first one spent the token.
    record.spent_by = [record.first] if len(record.posted) == 2 else list(record.posted)
    assert refreshes == len(record.spent_by) == 1, (refreshes, record)
    try:
        auth = await manager.auth()
    except AuthError:
        auth = None
    record.library_logged_out = auth is None
    exists = (home / "auth.json").exists()
    record.codex_logged_out = not exists or record.codex != "ok"
    if exists:
        tokens = _disk_tokens(home)
        record.disk_valid = server.is_valid_refresh_token(tokens["refresh_token"])
        record.library_matches_disk = auth is not None and auth.token == tokens["access_token"]
    return record


async def test_simultaneous_library_and_codex_refreshes(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    rounds: list[_Round] = []
    started = time.monotonic()
    for number in range(ROUNDS):
        rounds.append(await _one_round(number, home, server, manager, codex))  # noqa: PERF401
    elapsed = time.monotonic() - started
    both = sum(len(r.posted) == 2 for r in rounds)
    summary = {
        "rounds": ROUNDS,
        "both_posted": both,
        "spent_by_codex": sum(r.spent_by == ["codex"] for r in rounds),
        "spent_by_library": sum(r.spent_by == ["library"] for r in rounds),
        "reuse_answers": sum(r.reuse_answers for r in rounds),
        "library_logged_out": sum(r.library_logged_out for r in rounds),
        "codex_failed": sum(r.codex_logged_out for r in rounds),
        "anyone_logged_out": sum(r.library_logged_out or r.codex_logged_out for r in rounds),
        "disk_invalid": sum(not r.disk_valid for r in rounds),
        "seconds": round(elapsed, 1),
    }
    for r in rounds:
        print(  # noqa: T201 -- the per-round record is the point of this run
            f"round {r.number:2d}: first={r.first:7s} posted={r.posted} spent_by={r.spent_by} "
            f"reuse={r.reuse_answers} library={r.library!r} codex={r.codex!r} "
            f"disk_valid={r.disk_valid} library_on_disk_tokens={r.library_matches_disk}"
        )
    print("INTEROP SUMMARY simultaneous refreshes:", json.dumps(summary))  # noqa: T201

    assert [r.library_logged_out for r in rounds] == [False] * ROUNDS
    assert [r.disk_valid for r in rounds] == [True] * ROUNDS
    assert [r.library_matches_disk for r in rounds] == [True] * ROUNDS
    assert [r.library.startswith("returned True") for r in rounds] == [True] * ROUNDS
    # Every round spent the token once; a loser's attempt is the only reuse answer.
    assert [len(r.spent_by) for r in rounds if len(r.posted) == 2] == [1] * both
    assert summary["reuse_answers"] == both
    # The disk is still good for one more refresh.
    assert await manager.refresh_token() is True
    assert server.reuse_answers == summary["reuse_answers"]
    assert file_mode(home / "auth.json") == 0o600
    assert stray_temp_files(home) == []


async def test_slow_library_refresh_while_codex_refreshes(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    library_posted = asyncio.Event()

    async def slow_library(body: dict[str, Any]) -> None:
        if not is_codex_request(body):
            library_posted.set()
            await asyncio.sleep(SLOW_LIBRARY_REFRESH)

    server.token_hook = slow_library
    started = time.monotonic()
    library = asyncio.create_task(manager.refresh_token())
    await asyncio.wait_for(library_posted.wait(), 20)
    async with codex.app_server() as app:
        answer = await app.read_account(refresh=True)
        codex_seconds = time.monotonic() - started
        # Codex spent first and committed while the library's request was still held.
        assert "result" in answer, answer
        assert "credential commit lock timed out" not in json.dumps(answer)
        assert codex_seconds < SLOW_LIBRARY_REFRESH
        codex_tokens = _disk_tokens(home)
        assert server.is_valid_refresh_token(codex_tokens["refresh_token"])
        assert await library is True
    assert time.monotonic() - started >= SLOW_LIBRARY_REFRESH
    # The library's late request was answered refresh_token_reused; it adopted Codex's tokens.
    assert server.refreshes == 1
    assert server.reuse_answers == 1
    assert _disk_tokens(home) == codex_tokens
    auth = await manager.auth()
    assert auth is not None
    assert auth.token == codex_tokens["access_token"]
    assert server.token_calls == 2
    assert file_mode(home / "auth.json") == 0o600
    assert stray_temp_files(home) == []


async def test_running_codex_adopts_library_refreshes_instead_of_spending(
    codex: Codex, home: Path, server: FakeAuthServer, backend: Backend, manager: AuthManager
) -> None:
    # A running app server asked to refresh re-reads auth.json first; when the library has
    # rotated the tokens since, Codex uses them ("guarded reload") and spends nothing.
    write_auth_json(home, server.login())
    async with codex.app_server() as app:
        answer = await app.read_account(refresh=True)
        assert "result" in answer, answer
        for _ in range(3):
            assert await manager.refresh_token() is True
            tokens = _disk_tokens(home)
            answer = await app.read_account(refresh=True)
            assert answer["result"]["account"]["email"] == "user@example.com", answer
            assert backend.bearers("/wham/accounts/check")[-1] == tokens["access_token"]
            assert _disk_tokens(home) == tokens
    reasons = [r.get("refresh_reason") for r in server.token_requests]
    assert reasons == ["forced", None, None, None]
    assert server.refreshes == 4
    assert server.reuse_answers == 0
    assert server.is_valid_refresh_token(_disk_tokens(home)["refresh_token"])
