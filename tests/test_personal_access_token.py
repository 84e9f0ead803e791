"""Personal access token logins, and logins of modes this library cannot send with."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import aiohttp
import pytest

from aioscopedauth import (
    AccountIdentity,
    AuthDotJson,
    AuthManager,
    AuthMiddleware,
    AuthMode,
    FileAuthStore,
    MemoryAuthStore,
    OAuthConfig,
    PlanType,
    RefreshTokenFailedError,
    UnsupportedLoginError,
)
from aioscopedauth.testing import FakeAuthServer, TokenFailure, write_auth_json

GOLDEN = Path(__file__).parent / "golden"

UNSENDABLE = {
    "agent_identity": "agentIdentity",
    "bedrock_api_key": "bedrockApiKey",
    "bedrock_access_keys": "bedrockAccessKeys",
    "headers": "headers",
    "unknown_mode": "someFutureMode",
}


def _pat_login(home: Path, token: str) -> Path:
    # Exactly what `codex login --with-access-token` writes: no auth_mode.
    return write_auth_json(home, {"OPENAI_API_KEY": None, "personal_access_token": token})


async def test_a_personal_access_token_login_sends_the_token_and_whoami_account(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    token = server.personal_access_token(
        email=None, plan_type="Enterprise", account_id="acct-pat", fedramp=True
    )
    _pat_login(home, token)
    auth = await manager.auth()
    assert auth is not None
    assert (auth.mode, auth.token, auth.account_id) == (
        AuthMode.PERSONAL_ACCESS_TOKEN,
        token,
        "acct-pat",
    )
    assert auth.identity == AccountIdentity(
        account_id="acct-pat",
        user_id="user-12345",
        email=None,
        plan_type=PlanType.ENTERPRISE,
        fedramp=True,
    )
    assert (auth.email, auth.plan_type) == (None, PlanType.ENTERPRISE)
    assert manager.mode is AuthMode.PERSONAL_ACCESS_TOKEN
    assert server.whoami_calls == 1
    assert server.last_whoami_request is not None
    assert server.last_whoami_request["path"] == "/authapi/v1/user-auth-credential/whoami"
    assert server.last_whoami_request["headers"]["Authorization"] == f"Bearer {token}"
    middleware = AuthMiddleware(manager)
    async with (
        aiohttp.ClientSession(middlewares=(middleware,)) as session,
        session.get(f"{server.url}/api/models") as response,
    ):
        assert response.status == 200
    assert server.last_api_request is not None
    headers = server.last_api_request["headers"]
    assert headers["Authorization"] == f"Bearer {token}"
    assert headers["ChatGPT-Account-ID"] == "acct-pat"
    assert headers["X-OpenAI-Fedramp"] == "true"
    assert server.token_calls == 0


async def test_whoami_is_called_once_per_token(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    first = server.personal_access_token(account_id="acct-1")
    _pat_login(home, first)
    results = await asyncio.gather(*(manager.auth() for _ in range(10)))
    assert {auth.account_id for auth in results if auth is not None} == {"acct-1"}
    assert await manager.reload() is False
    assert (await manager.auth()) == results[0]
    assert server.whoami_calls == 1
    second = server.personal_access_token(account_id="acct-2", fedramp=False)
    _pat_login(home, second)
    assert await manager.reload() is True
    auth = manager.auth_cached()
    assert auth is not None
    assert (auth.token, auth.account_id) == (second, "acct-2")
    assert "X-OpenAI-Fedramp" not in auth.headers()
    assert server.whoami_calls == 2
    _pat_login(home, first)
    assert await manager.reload() is True
    assert server.whoami_calls == 2


async def test_a_whoami_failure_is_logged_and_the_token_still_works(
    home: Path,
    manager: AuthManager,
    server: FakeAuthServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = server.personal_access_token(account_id="acct-pat")
    _pat_login(home, token)
    server.whoami_failures.append(TokenFailure(503, "down"))
    with caplog.at_level(logging.WARNING, logger="aioscopedauth"):
        auth = await manager.auth()
    assert auth is not None
    assert (auth.token, auth.account_id, auth.identity) == (token, None, None)
    assert auth.headers() == {"Authorization": f"Bearer {token}"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        (
            "Could not look up the account of the personal access token (the whoami endpoint "
            "answered 503 Service Unavailable); using it without an account id until the next load"
        )
    ]
    assert token not in caplog.text
    # Not cached: the next load asks again and gets the account.
    assert await manager.reload() is True
    auth = manager.auth_cached()
    assert auth is not None
    assert auth.account_id == "acct-pat"
    assert server.whoami_calls == 2


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (TokenFailure(200, "not json"), "the whoami answer is not a JSON object"),
        (
            TokenFailure(200, {"chatgpt_account_id": "a\nb", "chatgpt_account_is_fedramp": False}),
            "the whoami answer has no usable chatgpt_account_id",
        ),
        (
            TokenFailure(200, {"chatgpt_account_id": "a", "chatgpt_account_is_fedramp": "yes"}),
            "the whoami answer's chatgpt_account_is_fedramp is not a boolean",
        ),
        (TokenFailure(200, "x" * (65 * 1024)), "the whoami answer is larger than 64 KiB"),
        (TokenFailure(401, {"error": "nope"}), "the whoami endpoint answered 401 Unauthorized"),
    ],
)
async def test_bad_whoami_answers_leave_the_account_unknown(
    home: Path,
    manager: AuthManager,
    server: FakeAuthServer,
    caplog: pytest.LogCaptureFixture,
    failure: TokenFailure,
    reason: str,
) -> None:
    token = server.personal_access_token()
    _pat_login(home, token)
    server.whoami_failures.append(failure)
    with caplog.at_level(logging.WARNING, logger="aioscopedauth"):
        auth = await manager.auth()
    assert auth is not None
    assert (auth.token, auth.account_id) == (token, None)
    assert f"personal access token ({reason});" in caplog.text


async def test_an_unreachable_whoami_is_logged_without_the_token(
    home: Path, server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = server.personal_access_token()
    _pat_login(home, token)
    oauth = OAuthConfig(server.token_url, server.client_id, authapi_base_url="http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING, logger="aioscopedauth"):
        async with AuthManager(FileAuthStore(home), oauth) as manager:
            auth = await manager.auth()
    assert auth is not None
    assert auth.account_id is None
    assert "could not reach the whoami endpoint (ClientConnectorError" in caplog.text
    assert token not in caplog.text


async def test_the_base_url_comes_from_the_environment_when_not_configured(
    home: Path, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX_AUTHAPI_BASE_URL", f"  {server.authapi_url}/  ")
    assert OAuthConfig.codex().whoami_url() == (
        f"{server.authapi_url}/v1/user-auth-credential/whoami"
    )
    token = server.personal_access_token(account_id="acct-env")
    _pat_login(home, token)
    async with AuthManager(FileAuthStore(home), OAuthConfig.codex()) as manager:
        auth = await manager.auth()
    assert auth is not None
    assert auth.account_id == "acct-env"
    monkeypatch.setenv("CODEX_AUTHAPI_BASE_URL", " ")
    assert OAuthConfig.codex().whoami_url() == (
        "https://auth.openai.com/api/accounts/v1/user-auth-credential/whoami"
    )
    monkeypatch.delenv("CODEX_AUTHAPI_BASE_URL")
    configured = OAuthConfig("http://t", "c", authapi_base_url="http://a/base")
    assert configured.whoami_url() == "http://a/base/v1/user-auth-credential/whoami"


async def test_a_personal_access_token_is_never_refreshed(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    _pat_login(home, server.personal_access_token())
    assert await manager.refresh_token() is False
    assert await manager.refresh_rejected() is False
    assert server.token_calls == 0


async def test_a_401_adopts_a_new_token_from_disk_then_stops(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    old = server.personal_access_token(account_id="acct-pat")
    _pat_login(home, old)
    middleware = AuthMiddleware(manager)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        async with session.get(f"{server.url}/api/one") as response:
            assert response.status == 200
        # Revoked, and `codex login --with-access-token` saved a new one meanwhile.
        server.revoke_personal_access_tokens()
        new = server.personal_access_token(account_id="acct-pat")
        _pat_login(home, new)
        async with session.get(f"{server.url}/api/two") as response:
            assert response.status == 200
        assert server.last_api_request is not None
        assert server.last_api_request["headers"]["Authorization"] == f"Bearer {new}"
        assert (server.api_hits, server.api_rejections) == (3, 1)
        # Revoked again, nothing new on disk: reload changes nothing and recovery ends.
        server.revoke_personal_access_tokens()
        async with session.get(f"{server.url}/api/three") as response:
            assert response.status == 401
        assert (server.api_hits, server.api_rejections) == (4, 2)
    assert server.token_calls == 0


async def test_recovery_of_a_personal_access_token_is_reload_only(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    _pat_login(home, server.personal_access_token())
    rejected = await manager.auth()
    recovery = manager.unauthorized_recovery(rejected)
    assert (recovery.mode_name, recovery.step_name, recovery.has_next()) == (
        "managed",
        "reload",
        True,
    )
    steps = [step async for step in recovery]
    assert [(s.name, s.auth_state_changed) for s in steps] == [("reload", False)]
    assert recovery.unavailable_reason() == "recovery_exhausted"


async def test_a_401_after_the_login_switched_to_another_account_is_final(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    _pat_login(home, server.personal_access_token(account_id="acct-a"))
    rejected = await manager.auth()
    _pat_login(home, server.personal_access_token(account_id="acct-b"))
    recovery = manager.unauthorized_recovery(rejected)
    with pytest.raises(RefreshTokenFailedError):
        await recovery.next()
    assert recovery.step_name == "done"


@pytest.mark.parametrize("name", sorted(UNSENDABLE))
async def test_logins_this_library_cannot_send_with_are_reported_never_changed(
    name: str, home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    home.mkdir(mode=0o700)
    path = home / "auth.json"
    shutil.copy(GOLDEN / f"{name}.auth.json", path)
    path.chmod(0o600)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    mode = UNSENDABLE[name]
    message = (
        f"The login in {path} is {'an' if mode[0] in 'aeiou' else 'a'} `{mode}` login, which "
        "aioscopedauth cannot send requests with. Use the Codex CLI for it, or log in with an "
        "API key or ChatGPT."
    )
    with pytest.raises(UnsupportedLoginError) as caught:
        await manager.auth()
    assert str(caught.value) == message
    assert (caught.value.mode, caught.value.where) == (mode, str(path))
    cached = manager.auth_cached()
    assert cached is not None
    assert (cached.mode.value, cached.token) == (mode, "")
    assert manager.mode is AuthMode(mode)
    assert await manager.reload() is False
    assert await manager.refresh_token() is False
    with pytest.raises(UnsupportedLoginError):
        await manager.auth()
    # Through the middleware: the caller gets the error, the server no request.
    middleware = AuthMiddleware(manager)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        with pytest.raises(UnsupportedLoginError) as caught:
            await session.get(f"{server.url}/api/models")
    assert str(caught.value) == message
    assert server.api_hits == 0
    assert (server.token_calls, server.whoami_calls) == (0, 0)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


async def test_an_unsupported_login_in_another_store_names_the_store() -> None:
    store = MemoryAuthStore()
    await store.save(AuthDotJson.from_json((GOLDEN / "agent_identity.auth.json").read_text()))
    async with AuthManager(store, OAuthConfig("http://127.0.0.1:9/t", "c")) as manager:
        with pytest.raises(UnsupportedLoginError) as caught:
            await manager.auth()
    assert str(caught.value).startswith("The login in the memory store is an `agentIdentity`")
