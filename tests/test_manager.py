from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from aioscopedauth import (
    Auth,
    AuthDataError,
    AuthDotJson,
    AuthManager,
    AuthMode,
    CommandBearerRefresher,
    ConfigError,
    ExternalAuthTokens,
    FileAuthStore,
    LoginRestrictionError,
    MemoryAuthStore,
    OAuthConfig,
    PlanType,
    ProviderAuthCommand,
    RefreshContext,
    RefreshFailureReason,
    RefreshTokenFailedError,
    StorageError,
    TransientRefreshError,
)
from aioscopedauth._external import auth_data_from_external_tokens
from aioscopedauth._oauth import ACCOUNT_MISMATCH_MESSAGE, EXHAUSTED_MESSAGE
from aioscopedauth.testing import (
    FakeAuthServer,
    TokenFailure,
    chatgpt_auth,
    make_id_token,
    write_auth_json,
    write_token_script,
)

from support import CANARIES, GatedFileStore

if TYPE_CHECKING:
    from pathlib import Path

    from aioscopedauth.testing.plugin import LeakGuard


def _stored(home: Path) -> AuthDotJson:
    return AuthDotJson.from_json((home / "auth.json").read_text())


async def test_constructor_does_no_io(home: Path, oauth: OAuthConfig) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-1"))
    manager = AuthManager(FileAuthStore(home), oauth)
    assert (manager.auth_cached(), manager.mode) == (None, None)
    auth = await manager.auth()
    assert auth is not None
    assert auth.token == "sk-1"
    assert manager.mode is AuthMode.API_KEY
    await manager.aclose()


async def test_no_login_gives_none(manager: AuthManager) -> None:
    assert await manager.auth() is None
    assert await manager.refresh_token() is False


async def test_corrupt_file_raises_and_is_kept(home: Path, manager: AuthManager) -> None:
    home.mkdir()
    (home / "auth.json").write_text("{oops")
    with pytest.raises(StorageError, match=r"not a valid auth\.json"):
        await manager.auth()
    assert (home / "auth.json").read_text() == "{oops"


async def test_fresh_token_is_served_without_refresh(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login()
    write_auth_json(home, login)
    auth = await manager.auth()
    assert auth is not None
    assert login.tokens is not None
    assert auth.token == login.tokens.access_token
    assert auth.account_id == "acct-1"
    assert auth.headers()["ChatGPT-Account-ID"] == "acct-1"
    assert server.token_calls == 0


async def test_expired_token_is_refreshed_and_saved(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login(expired=True)
    write_auth_json(home, login)
    auth = await manager.auth()
    assert auth is not None
    assert server.token_calls == 1
    assert server.is_valid_access_token(auth.token)
    stored = _stored(home)
    assert stored.tokens is not None
    assert stored.tokens.access_token == auth.token
    assert login.tokens is not None
    assert stored.tokens.refresh_token != login.tokens.refresh_token
    assert stored.tokens.account_id == "acct-1"
    assert stored.last_refresh is not None
    assert login.last_refresh is not None
    assert stored.last_refresh >= login.last_refresh


async def test_refresh_request_body_matches_codex(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login(expired=True)
    write_auth_json(home, login)
    await manager.auth()
    assert login.tokens is not None
    assert server.token_requests == [
        {
            "client_id": "test-client",
            "grant_type": "refresh_token",
            "refresh_token": login.tokens.refresh_token,
        }
    ]
    assert list(server.token_requests[0]) == ["client_id", "grant_type", "refresh_token"]


async def test_window_refreshes_before_expiry(home: Path, server: FakeAuthServer) -> None:
    # Access tokens live 1 hour; a 2-hour window is capped at a quarter of the lifetime (15
    # minutes), so a fresh token is not refreshed, and one issued 57 minutes ago is.
    write_auth_json(home, server.login())
    config = OAuthConfig(server.token_url, server.client_id, refresh_window=timedelta(hours=2))
    async with AuthManager(FileAuthStore(home), config) as manager:
        await manager.auth()
        assert server.token_calls == 0
    near = chatgpt_auth(
        refresh_token=server.login().tokens.refresh_token,  # type: ignore[union-attr]
        expires_in=timedelta(minutes=3),
        last_refresh=datetime.now(UTC) - timedelta(minutes=57),
    )
    write_auth_json(home, near)
    async with AuthManager(FileAuthStore(home), config) as manager:
        await manager.auth()
        assert server.token_calls == 1


async def test_old_last_refresh_without_exp_is_refreshed(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login()
    assert login.tokens is not None
    old = chatgpt_auth(
        access_token="opaque-token",
        refresh_token=login.tokens.refresh_token,
        last_refresh=datetime.now(UTC) - timedelta(days=9),
    )
    write_auth_json(home, old)
    auth = await manager.auth()
    assert server.token_calls == 1
    assert auth is not None
    assert auth.token != "opaque-token"


async def test_200_concurrent_auth_calls_make_one_post(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    results = await asyncio.gather(*(manager.auth() for _ in range(200)))
    assert server.token_calls == 1
    tokens = {r.token for r in results if r is not None}
    assert len(tokens) == 1
    assert server.is_valid_access_token(tokens.pop())


async def test_queued_refresh_callers_do_not_refresh_again(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    await manager.auth()
    results = await asyncio.gather(*(manager.refresh_token() for _ in range(50)))
    assert server.token_calls == 1
    assert results.count(True) == 50


async def test_refresh_adopts_tokens_another_process_saved(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    assert await manager.reload() is True
    newer = server.login()  # what another process refreshed to, same account
    write_auth_json(home, newer)
    calls = server.token_calls
    assert await manager.refresh_token() is True
    assert server.token_calls == calls
    auth = manager.auth_cached()
    assert auth is not None
    assert newer.tokens is not None
    assert auth.token == newer.tokens.access_token


async def test_account_changed_on_disk_is_a_permanent_mismatch(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    await manager.reload()
    other = server.login(account_id="acct-other")
    write_auth_json(home, other)
    before = (home / "auth.json").read_bytes()
    with pytest.raises(RefreshTokenFailedError) as info:
        await manager.refresh_token()
    assert str(info.value) == ACCOUNT_MISMATCH_MESSAGE
    assert info.value.reason is RefreshFailureReason.OTHER
    assert server.token_calls == 0
    assert (home / "auth.json").read_bytes() == before


async def test_stale_proactive_refresh_does_not_overwrite_a_different_account_on_disk(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # Reference §6.4 (passes under the baseline): Skipped => keep the stale snapshot.
    stale = server.login(expired=True)
    write_auth_json(home, stale)
    await manager.reload()
    snapshot = manager.auth_cached()
    write_auth_json(home, server.login(account_id="acct-other"))
    before = (home / "auth.json").read_bytes()
    assert await manager.auth() == snapshot
    assert server.token_calls == 0
    assert (home / "auth.json").read_bytes() == before


async def test_stale_proactive_refresh_uses_newer_local_auth_before_spending_cached_refresh_token(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # Reference §6.4.
    write_auth_json(home, server.login(expired=True))
    await manager.reload()
    newer = server.login()
    write_auth_json(home, newer)
    auth = await manager.auth()
    assert server.token_calls == 0
    assert auth is not None
    assert newer.tokens is not None
    assert auth.token == newer.tokens.access_token


async def test_stale_proactive_refresh_uses_caller_snapshot_when_cache_already_changed(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # Reference §6.4: a caller whose stale snapshot was already replaced (in this process)
    # adopts the replacement without touching the endpoint.
    write_auth_json(home, server.login(expired=True))
    await manager.reload()
    stale = manager.auth_cached()
    assert stale is not None
    await manager.refresh_token()
    assert server.token_calls == 1
    fresh = manager.auth_cached()
    assert await manager.refresh_rejected(stale) is True
    assert server.token_calls == 1
    assert manager.auth_cached() == fresh


async def test_refresh_token_reused_with_unchanged_local_auth_keeps_relogin_failure(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # Reference §6.4 and §6.3: 401 refresh_token_reused is permanent, Exhausted, exact message,
    # and cached: a second attempt makes no request.
    login = server.login(expired=True)
    write_auth_json(home, login)
    server.failures.append(
        TokenFailure(401, {"error": {"code": "refresh_token_reused", "message": "used"}})
    )
    with pytest.raises(RefreshTokenFailedError) as info:
        await manager.refresh_token()
    assert info.value.reason is RefreshFailureReason.EXHAUSTED
    assert str(info.value) == EXHAUSTED_MESSAGE
    assert server.token_calls == 1
    with pytest.raises(RefreshTokenFailedError):
        await manager.refresh_token()
    assert server.token_calls == 1
    assert manager.refresh_failure_for_auth(manager.auth_cached()) is not None
    # auth() keeps serving the snapshot without hammering the endpoint.
    assert await manager.auth() == manager.auth_cached()
    assert server.token_calls == 1


async def test_refresh_failure_is_scoped_to_the_matching_auth_snapshot(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # Reference checklist 8.
    write_auth_json(home, server.login(expired=True))
    server.failures.append(TokenFailure(401, {"error": {"code": "refresh_token_expired"}}))
    with pytest.raises(RefreshTokenFailedError):
        await manager.refresh_token()
    failed = manager.auth_cached()
    assert manager.refresh_failure_for_auth(failed) is not None
    assert failed is not None
    assert failed.data is not None
    assert failed.data.tokens is not None
    different = attrs.evolve(
        failed,
        data=attrs.evolve(
            failed.data, tokens=attrs.evolve(failed.data.tokens, refresh_token="other")
        ),
    )
    assert manager.refresh_failure_for_auth(different) is None
    # A change of auth clears the record, and the refresh works again.
    write_auth_json(home, server.login(expired=True))
    assert await manager.reload() is True
    assert manager.refresh_failure_for_auth(failed) is None
    await manager.refresh_token()
    assert server.refreshes == 1


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, {"error": {"code": "refresh_token_expired"}}, RefreshFailureReason.EXPIRED),
        (401, {"error": "refresh_token_invalidated"}, RefreshFailureReason.REVOKED),
        (401, {"code": "REFRESH_TOKEN_REUSED"}, RefreshFailureReason.EXHAUSTED),
        (401, {"error": {"code": "something_new"}}, RefreshFailureReason.OTHER),
        (400, {"error": {"code": "refresh_token_reused"}}, RefreshFailureReason.EXHAUSTED),
        (403, {"error": {"code": "refresh_token_expired"}}, RefreshFailureReason.EXPIRED),
    ],
)
async def test_permanent_failures(
    home: Path,
    manager: AuthManager,
    server: FakeAuthServer,
    status: int,
    body: dict[str, object],
    reason: RefreshFailureReason,
) -> None:
    write_auth_json(home, server.login(expired=True))
    server.failures.append(TokenFailure(status, body))
    with pytest.raises(RefreshTokenFailedError) as info:
        await manager.refresh_token()
    assert info.value.reason is reason


@pytest.mark.parametrize(
    ("failure", "message", "status"),
    [
        (
            TokenFailure(500, {"error": {"message": "db down"}}),
            "Failed to refresh token: 500 Internal Server Error: db down",
            500,
        ),
        (
            TokenFailure(400, "Your session has ended"),
            "Failed to refresh token: 400 Bad Request: Your session has ended",
            400,
        ),
        (TokenFailure(502, ""), "Failed to refresh token: 502 Bad Gateway: Unknown error", 502),
        (
            TokenFailure(200, "<html>maintenance</html>", "text/html"),
            (
                "Failed to refresh token: the token endpoint answered with something that is "
                "not a JSON object. Retry later."
            ),
            200,
        ),
        (
            TokenFailure(200, {"access_token": 5}),
            (
                "Failed to refresh token: the token endpoint's answer was unusable (its "
                "access_token is not a string). Retry later."
            ),
            None,
        ),
    ],
)
async def test_transient_failures(
    home: Path,
    manager: AuthManager,
    server: FakeAuthServer,
    failure: TokenFailure,
    message: str,
    status: int | None,
) -> None:
    login = server.login(expired=True)
    write_auth_json(home, login)
    before = (home / "auth.json").read_bytes()
    server.failures.append(failure)
    with pytest.raises(TransientRefreshError) as info:
        await manager.refresh_token()
    assert str(info.value).startswith(message)
    assert info.value.status == status
    assert (home / "auth.json").read_bytes() == before
    # Transient failures are not cached: the next attempt reaches the endpoint and works.
    assert await manager.refresh_token() is True
    assert server.token_calls == 2


async def test_transient_failure_message_never_echoes_the_refresh_token(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login(expired=True)
    assert login.tokens is not None
    write_auth_json(home, login)
    server.failures.append(TokenFailure(500, f"bad token {login.tokens.refresh_token}"))
    with pytest.raises(TransientRefreshError) as info:
        await manager.refresh_token()
    assert login.tokens.refresh_token not in str(info.value)
    assert "[redacted]" in str(info.value)


async def test_transient_failure_backoff_fails_fast(home: Path, server: FakeAuthServer) -> None:
    write_auth_json(home, server.login(expired=True))
    config = OAuthConfig(server.token_url, server.client_id, failure_backoff=timedelta(hours=1))
    server.failures.append(TokenFailure(503, "busy"))
    async with AuthManager(FileAuthStore(home), config) as manager:
        for _ in range(5):
            with pytest.raises(TransientRefreshError, match="503 Service Unavailable: busy"):
                await manager.refresh_token()
    assert server.token_calls == 1


async def test_unreachable_endpoint_is_transient(home: Path, server: FakeAuthServer) -> None:
    write_auth_json(home, server.login(expired=True))
    url = server.token_url
    await server.close()
    async with AuthManager(FileAuthStore(home), OAuthConfig(url, "test-client")) as manager:
        with pytest.raises(TransientRefreshError, match="could not reach the token endpoint"):
            await manager.refresh_token()
        # auth() logs the failure and returns the snapshot it had.
        assert await manager.auth() == manager.auth_cached()


async def test_hanging_endpoint_times_out(home: Path, server: FakeAuthServer) -> None:
    write_auth_json(home, server.login(expired=True))
    server.token_gate = asyncio.Event()
    config = OAuthConfig(server.token_url, server.client_id, timeout=0.2)
    async with AuthManager(FileAuthStore(home), config) as manager:
        with pytest.raises(TransientRefreshError, match=r"did not answer within 0\.2 s"):
            await manager.refresh_token()
    server.token_gate.set()


async def test_cancelled_refresh_leaves_lock_free_and_saves_the_spent_token(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login(expired=True)
    write_auth_json(home, login)
    server.token_gate = asyncio.Event()
    caller = asyncio.create_task(manager.auth())
    await server.token_request_seen.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert _stored(home) == login  # nothing written yet
    server.token_gate.set()
    auth = await manager.auth()  # joins the refresh that is still running, no second POST
    assert auth is not None
    assert server.token_calls == 1
    assert server.is_valid_access_token(auth.token)
    stored = _stored(home)
    assert stored.tokens is not None
    assert stored.tokens.access_token == auth.token
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]
    async with FileAuthStore(home, lock_timeout=1).lock():
        pass


async def test_reload_reports_any_change_and_notifies(home: Path, manager: AuthManager) -> None:
    # Reference checklist 25, with one deliberate difference: reload() reports a change of
    # key too (Codex compares only the mode there); notifications fire for both, as in Codex.
    async with manager.changes() as changes:
        assert await manager.reload() is False
        write_auth_json(home, AuthDotJson.for_api_key("sk-one"))
        assert await manager.reload() is True
        change = await changes.__anext__()
        assert change.reason == "reload"
        assert change.auth is not None
        assert change.auth.token == "sk-one"
        write_auth_json(home, AuthDotJson.for_api_key("sk-two"))
        assert await manager.reload() is True
        change = await changes.__anext__()
        assert change.auth is not None
        assert change.auth.token == "sk-two"
        manager.set_forced_workspace_id("org-x")
        change = await changes.__anext__()
        assert change.reason == "workspace"
        assert manager.forced_workspace_id == "org-x"
        manager.set_forced_workspace_id("org-x")  # no change, no notification
        assert await manager.logout() is True
        change = await changes.__anext__()
        assert (change.reason, change.auth) == ("logout", None)
    with pytest.raises(StopAsyncIteration):
        await changes.__anext__()


async def test_changes_report_refresh_and_login(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    async with manager.changes() as changes:
        await manager.auth()
        load = await changes.__anext__()
        refresh = await changes.__anext__()
        await manager.login_with_api_key("sk-new")
        login = await changes.__anext__()
    assert (load.reason, refresh.reason, login.reason) == ("load", "refresh", "login")
    for change in (load, refresh, login):
        for canary in CANARIES:
            assert canary not in repr(change)


async def test_login_with_api_key_overwrites_tokens(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    await manager.login_with_api_key("  sk-fresh  ")
    assert json.loads((home / "auth.json").read_text()) == {
        "auth_mode": "apikey",
        "OPENAI_API_KEY": "sk-fresh",
    }
    auth = await manager.auth()
    assert auth is not None
    assert (auth.mode, auth.token) == (AuthMode.API_KEY, "sk-fresh")
    assert await manager.refresh_token() is False


async def test_api_key_env_wins(
    home: Path, oauth: OAuthConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_auth_json(home, chatgpt_auth())
    monkeypatch.setenv("MY_KEY", "sk-env")
    async with AuthManager(FileAuthStore(home), oauth, api_key_env="MY_KEY") as manager:
        auth = await manager.auth()
    assert auth is not None
    assert (auth.mode, auth.token, auth.data) == (AuthMode.API_KEY, "sk-env", None)


async def test_login_with_tokens_stays_in_memory(home: Path, manager: AuthManager) -> None:
    access = make_id_token(account_id="org-host", plan_type="team")
    await manager.login_with_tokens(access, "org-host", "business")
    auth = await manager.auth()
    assert auth is not None
    assert auth.mode is AuthMode.CHATGPT_AUTH_TOKENS
    assert auth.account_id == "org-host"
    assert auth.plan_type == PlanType.BUSINESS
    assert not (home / "auth.json").exists()


async def test_external_auth_tokens_without_chatgpt_metadata_cannot_seed_chatgpt_auth() -> None:
    # Reference checklist 9.
    with pytest.raises(AuthDataError, match=r"^external auth tokens are missing ChatGPT metadata$"):
        auth_data_from_external_tokens(
            ExternalAuthTokens.access_token_only("tok"), datetime.now(UTC)
        )


class HostRefresher:
    """A host app's token source: returns the next tokens it was given, counting calls."""

    def __init__(self, *tokens: ExternalAuthTokens) -> None:
        self.tokens = list(tokens)
        self.contexts: list[RefreshContext] = []

    @property
    def mode(self) -> AuthMode:
        return AuthMode.CHATGPT_AUTH_TOKENS

    async def resolve(self) -> ExternalAuthTokens | None:
        return None

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        self.contexts.append(context)
        return self.tokens.pop(0)


async def test_external_chatgpt_auth_manager_refresh_persists_ephemeral_auth(home: Path) -> None:
    # Reference checklist 13.
    store = FileAuthStore(home)
    async with AuthManager(store, OAuthConfig("http://127.0.0.1:9/unused", "c")) as manager:
        await manager.login_with_tokens(make_id_token(account_id="org_initial"), "org_initial")
        new_access = make_id_token(account_id="org_refreshed", plan_type="business")
        host = HostRefresher(ExternalAuthTokens.chatgpt(new_access, "org_refreshed", "business"))
        manager.set_external_auth(host)
        recovery = manager.unauthorized_recovery(manager.auth_cached())
        assert (recovery.mode_name, recovery.step_name) == ("external", "external_refresh")
        step = await recovery.next()
        assert step.auth_state_changed is True
        auth = manager.auth_cached()
    assert auth is not None
    assert auth.mode is AuthMode.CHATGPT_AUTH_TOKENS
    assert auth.mode.is_chatgpt
    assert auth.account_id == "org_refreshed"
    assert auth.data is not None
    assert auth.data.tokens is not None
    assert auth.data.tokens.id_token is not None
    assert auth.data.tokens.id_token.chatgpt_account_id == "org_refreshed"
    assert auth.plan_type == PlanType.BUSINESS
    assert auth.token == new_access
    assert host.contexts[0].previous_account_id == "org_initial"
    assert not (home / "auth.json").exists()


async def test_external_refresh_checks_forced_workspace(home: Path) -> None:
    oauth = OAuthConfig("http://127.0.0.1:9/unused", "c")
    async with AuthManager(FileAuthStore(home), oauth, forced_workspace_id="org_mine") as manager:
        await manager.login_with_tokens(make_id_token(account_id="org_mine"), "org_mine")
        host = HostRefresher(ExternalAuthTokens.chatgpt(make_id_token(), "org_other"))
        manager.set_external_auth(host)
        with pytest.raises(
            TransientRefreshError,
            match="external auth refresh returned workspace 'org_other', expected 'org_mine'",
        ):
            await manager.refresh_token()
        host.tokens.append(ExternalAuthTokens.access_token_only("bare"))
        with pytest.raises(TransientRefreshError, match="did not return ChatGPT metadata"):
            await manager.refresh_token()
        auth = manager.auth_cached()
    assert auth is not None
    assert auth.account_id == "org_mine"


async def test_enforce_login_restrictions_logs_out_for_method_mismatch(
    home: Path, oauth: OAuthConfig
) -> None:
    # Reference checklist 14.
    write_auth_json(home, AuthDotJson.for_api_key("sk-test"))
    manager = AuthManager(FileAuthStore(home), oauth, forced_login_method="chatgpt")
    with pytest.raises(LoginRestrictionError, match="ChatGPT login is required"):
        await manager.enforce_login_restrictions()
    assert not (home / "auth.json").exists()
    assert manager.auth_cached() is None


async def test_enforce_api_method_rejects_chatgpt(home: Path, oauth: OAuthConfig) -> None:
    write_auth_json(home, chatgpt_auth())
    manager = AuthManager(FileAuthStore(home), oauth, forced_login_method="api")
    with pytest.raises(LoginRestrictionError) as info:
        await manager.enforce_login_restrictions()
    assert str(info.value) == (
        "API key login is required, but ChatGPT is currently being used. Logging out."
    )
    assert not (home / "auth.json").exists()


async def test_enforce_login_restrictions_logs_out_for_workspace_mismatch(
    home: Path, oauth: OAuthConfig
) -> None:
    # Reference checklist 15.
    write_auth_json(home, chatgpt_auth(account_id="org_another_org"))
    manager = AuthManager(FileAuthStore(home), oauth, forced_workspace_id="org_mine")
    with pytest.raises(LoginRestrictionError, match="workspace org_mine") as info:
        await manager.enforce_login_restrictions()
    assert str(info.value) == (
        "Login is restricted to workspace org_mine, but current credentials belong to "
        "org_another_org. Logging out."
    )
    assert not (home / "auth.json").exists()


async def test_workspace_restriction_without_claim(home: Path, oauth: OAuthConfig) -> None:
    write_auth_json(home, chatgpt_auth(account_id=None))
    manager = AuthManager(FileAuthStore(home), oauth, forced_workspace_id="org_mine")
    with pytest.raises(LoginRestrictionError, match="lack a workspace identifier"):
        await manager.enforce_login_restrictions()


async def test_enforce_login_restrictions_allows_matching_workspace(
    home: Path, oauth: OAuthConfig
) -> None:
    # Reference checklist 16.
    write_auth_json(home, chatgpt_auth(account_id="org_mine"))
    manager = AuthManager(FileAuthStore(home), oauth, forced_workspace_id="org_mine")
    await manager.enforce_login_restrictions()
    assert (home / "auth.json").exists()


async def test_enforce_login_restrictions_allows_api_key_if_login_method_not_set_but_forced_chatgpt_workspace_id_is_set(  # noqa: E501
    home: Path, oauth: OAuthConfig
) -> None:
    # Reference checklist 17.
    write_auth_json(home, AuthDotJson.for_api_key("sk-test"))
    manager = AuthManager(FileAuthStore(home), oauth, forced_workspace_id="org_mine")
    await manager.enforce_login_restrictions()
    assert (home / "auth.json").exists()


async def test_enforce_login_restrictions_blocks_env_api_key_when_chatgpt_required(
    home: Path, oauth: OAuthConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reference checklist 18.
    monkeypatch.setenv("CODEX_API_KEY", "sk-env")
    manager = AuthManager(
        FileAuthStore(home), oauth, api_key_env="CODEX_API_KEY", forced_login_method="chatgpt"
    )
    with pytest.raises(LoginRestrictionError) as info:
        await manager.enforce_login_restrictions()
    assert "ChatGPT login is required, but an API key is currently being used." in str(info.value)


async def test_logout_clears_memory_and_store(home: Path, manager: AuthManager) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-1"))
    await manager.auth()
    assert await manager.logout() is True
    assert manager.auth_cached() is None
    assert not (home / "auth.json").exists()
    assert await manager.logout() is False


async def test_memory_store_manager(oauth: OAuthConfig) -> None:
    store = MemoryAuthStore()
    async with AuthManager(store, oauth) as manager:
        await manager.login_with_api_key("sk-mem")
        assert await store.load() == AuthDotJson.for_api_key("sk-mem")
        auth = await manager.auth()
        assert auth is not None
        assert auth.token == "sk-mem"


async def test_manager_repr_and_logs_hold_no_secret(
    home: Path,
    manager: AuthManager,
    server: FakeAuthServer,
    canary_logs: pytest.LogCaptureFixture,
) -> None:
    login = server.login(expired=True)
    assert login.tokens is not None
    write_auth_json(home, login)
    server.failures.append(TokenFailure(500, f"echo {login.tokens.refresh_token}"))
    await manager.auth()  # the proactive refresh fails and is logged
    text = "\n".join(r.getMessage() for r in canary_logs.records)
    assert "Failed to refresh token" in text
    assert login.tokens.refresh_token not in text
    assert login.tokens.access_token not in repr(manager)
    assert any(r.levelno == logging.WARNING for r in canary_logs.records)


async def test_bad_id_token_from_endpoint_is_transient_and_the_rest_is_kept(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login(expired=True))
    server.failures.append(TokenFailure(200, {"access_token": "a", "id_token": "nope"}))
    with pytest.raises(TransientRefreshError) as info:
        await manager.refresh_token()
    assert str(info.value) == (
        "Failed to refresh token: the token endpoint's answer was partly unusable (its "
        "id_token is unusable (invalid ID token format)); the rest was kept. Retry later."
    )
    assert _stored(home).tokens.access_token == "a"  # type: ignore[union-attr]


async def test_auth_without_account_id_still_refreshes(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    login = server.login(expired=True)
    assert login.tokens is not None
    legacy = attrs.evolve(login, tokens=attrs.evolve(login.tokens, account_id=None))
    write_auth_json(home, legacy)
    auth = await manager.auth()
    assert server.refreshes == 1
    assert auth is not None
    assert auth.account_id is None


def test_unsupported_forced_method_is_a_config_error(oauth: OAuthConfig) -> None:
    with pytest.raises(ConfigError, match="forced_login_method"):
        AuthManager(MemoryAuthStore(), oauth, forced_login_method="sso")  # type: ignore[arg-type]


async def test_a_read_that_started_before_a_refresh_never_brings_back_the_spent_token(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    store = GatedFileStore(home)
    async with AuthManager(store, oauth) as manager:
        old = await manager.auth()
        store.hold_next_load = True
        reload = asyncio.create_task(manager.reload())
        await store.holding.wait()  # the reload has read the old tokens and is held
        assert await manager.refresh_token() is True
        refreshed = manager.auth_cached()
        store.release.set()
        assert await reload is False
        assert manager.auth_cached() == refreshed != old
        # The next refresh spends the new refresh token, not the one already used.
        assert await manager.refresh_token() is True
    assert server.reuse_answers == 0
    assert server.refreshes == 2


async def test_derived_logout_is_seen_by_the_base(
    home: Path, tmp_path: Path, manager: AuthManager
) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-1"))
    await manager.auth()
    script = write_token_script(tmp_path / "s", "tok")
    derived = manager.with_external_bearer_refresher(
        CommandBearerRefresher(ProviderAuthCommand("./print-token.sh", cwd=script.folder))
    )
    assert await derived.logout() is True
    assert manager.auth_cached() is None
    assert await manager.auth() is None
    bearer = await derived.auth()
    assert bearer is not None
    assert bearer.token == "tok"


async def test_closing_changes_wakes_a_waiting_consumer(manager: AuthManager) -> None:
    changes = manager.changes()
    consumer = asyncio.create_task(anext(changes, "ended"))
    await asyncio.sleep(0)
    assert not consumer.done()
    await changes.aclose()
    assert await consumer == "ended"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("   ", "The API key is empty."),
        ("sk-1\nsk-2", "contains a line break, a control character or invalid Unicode"),
        ("sk-1\x01", "contains a line break, a control character or invalid Unicode"),
        ("sk-1\x7f", "contains a line break, a control character or invalid Unicode"),
        # A lone surrogate used to escape as a bare UnicodeEncodeError quoting the key.
        ("sk-1\udcff", "contains a line break, a control character or invalid Unicode"),
    ],
    ids=["blank", "line break", "control character", "DEL", "lone surrogate"],
)
async def test_login_with_a_bad_api_key_is_refused(
    home: Path, manager: AuthManager, key: str, message: str, leak_guard: LeakGuard
) -> None:
    leak_guard.plant(key.strip())  # the refusal must not quote it, nor chain what does
    with pytest.raises(ConfigError, match=message):
        await manager.login_with_api_key(key)
    assert not (home / "auth.json").exists()


async def test_refresh_reports_new_auth_even_when_a_reload_adopted_it_first(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    # Found by the demo: a reload read the file the refresh had just saved and set the
    # snapshot before the refresh did; the refresh then said "nothing changed" and the 401
    # recovery gave up.
    write_auth_json(home, server.login())
    store = GatedFileStore(home)
    async with AuthManager(store, oauth) as manager:
        rejected = await manager.auth()
        store.hold_next_save = True
        refresh = asyncio.create_task(manager.refresh_rejected(rejected))
        await store.holding.wait()  # the new tokens are on disk; the refresh has not returned
        assert await manager.reload() is True
        store.release.set()
        assert await refresh is True
        assert manager.auth_cached() != rejected
    assert server.refreshes == 1


class _StaticBearer:
    """A user's own bearer source (not a command) that returns one fixed token."""

    def __init__(self, token: str) -> None:
        self.token = token

    @property
    def mode(self) -> AuthMode:
        return AuthMode.BEARER

    async def resolve(self) -> ExternalAuthTokens | None:
        return ExternalAuthTokens.access_token_only(self.token)

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        return ExternalAuthTokens.access_token_only(self.token)


@pytest.mark.parametrize("token", ["", "tok\r\nX-Evil: 1"])
async def test_bearer_source_with_an_unsendable_token_gives_none(
    manager: AuthManager, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    derived = manager.with_external_bearer_refresher(_StaticBearer(token))
    assert await derived.auth() is None
    assert "empty token or one that cannot be sent as a header" in caplog.text


async def test_host_tokens_with_a_line_break_are_refused(manager: AuthManager) -> None:
    with pytest.raises(AuthDataError, match="line break"):
        await manager.login_with_tokens(make_id_token() + "\nX: 1", "org")


async def test_a_refresh_that_cannot_be_saved_keeps_the_new_tokens(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    login = server.login()
    write_auth_json(home, login)
    store = GatedFileStore(home)
    async with AuthManager(store, oauth) as manager:
        await manager.auth()
        store.failing_saves = 1
        assert await manager.refresh_token() is True
        assert "could not save the new tokens" in caplog.text
        refreshed = manager.auth_cached()
        assert refreshed is not None
        assert server.is_valid_access_token(refreshed.token)
        assert _stored(home) == login  # the disk still has the spent refresh token
        # A reload reads the old payload from disk but keeps the refreshed tokens.
        assert await manager.reload() is False
        assert manager.auth_cached() == refreshed
        # The next refresh first saves what it kept, then spends the new refresh token.
        assert await manager.refresh_token() is True
        stored = _stored(home)
        assert stored.tokens is not None
        assert stored.tokens.access_token == manager.auth_cached().token  # type: ignore[union-attr]
    assert server.reuse_answers == 0
    assert server.refreshes == 2


async def test_refreshes_while_the_disk_stays_full_never_bring_back_a_spent_token(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    # Issue 20 item 1: the second refresh spent the unsaved refresh token, its compare-and-swap
    # found the older one on disk, wrote nothing, and adopted the disk's long-spent token.
    login = server.login()
    write_auth_json(home, login)
    store = GatedFileStore(home)
    async with AuthManager(store, oauth) as manager:
        await manager.auth()
        store.full_disk = True
        for _ in range(3):
            assert await manager.refresh_token() is True
            held = manager.auth_cached()
            assert held is not None
            assert held.data is not None
            assert held.data.tokens is not None
            assert server.is_valid_refresh_token(held.data.tokens.refresh_token)
            assert _stored(home) == login  # nothing could be written
        # A reload still reads the spent login from disk and keeps the newest tokens.
        assert await manager.reload() is False
        assert manager.auth_cached() == held
        store.full_disk = False
        assert await manager.refresh_token() is True  # saves what it kept, then refreshes
        stored = _stored(home)
        assert stored.tokens is not None
        assert server.is_valid_refresh_token(stored.tokens.refresh_token)
        assert Auth.from_data(stored, account_header=oauth.account_header) == manager.auth_cached()
    assert server.reuse_answers == 0
    assert server.refreshes == 4
