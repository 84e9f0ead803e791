"""The public test kit behaves as documented."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from aioscopedauth import AuthDotJson, FileAuthStore, IdTokenInfo, OAuthConfig, jwt_expiration
from aioscopedauth.testing import (
    FakeAuthServer,
    TokenFailure,
    TokenScript,
    chatgpt_auth,
    issued_secrets,
    make_id_token,
    make_jwt,
    write_auth_json,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest


async def _refresh(
    server: FakeAuthServer, token: str, client_id: str = "test-client"
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.token_url,
            json={"client_id": client_id, "grant_type": "refresh_token", "refresh_token": token},
        ) as response,
    ):
        return response.status, await response.json()


async def test_refresh_tokens_rotate_and_are_single_use(fake_auth_server: FakeAuthServer) -> None:
    login = fake_auth_server.login()
    assert login.tokens is not None
    status, body = await _refresh(fake_auth_server, login.tokens.refresh_token)
    assert status == 200
    assert set(body) == {"access_token", "refresh_token", "id_token"}
    assert body["refresh_token"] != login.tokens.refresh_token
    assert fake_auth_server.is_valid_access_token(body["access_token"])
    status, body = await _refresh(fake_auth_server, login.tokens.refresh_token)
    assert (status, body["error"]["code"]) == (401, "refresh_token_reused")
    assert (fake_auth_server.token_calls, fake_auth_server.refreshes) == (2, 1)
    assert fake_auth_server.reuse_answers == 1


async def test_revoked_and_unknown_refresh_tokens(fake_auth_server: FakeAuthServer) -> None:
    login = fake_auth_server.login()
    assert login.tokens is not None
    fake_auth_server.revoke_refresh_tokens()
    status, body = await _refresh(fake_auth_server, login.tokens.refresh_token)
    assert (status, body["error"]["code"]) == (401, "refresh_token_invalidated")
    status, body = await _refresh(fake_auth_server, "rt-made-up")
    assert status == 401
    status, body = await _refresh(fake_auth_server, "x", client_id="wrong")
    assert (status, body) == (400, {"error": "invalid_client"})


async def test_access_token_lifetime_and_api(fake_auth_server: FakeAuthServer) -> None:
    server = FakeAuthServer(access_ttl=timedelta(seconds=90))
    async with server:
        login = server.login()
        assert login.tokens is not None
        exp = jwt_expiration(login.tokens.access_token)
        assert exp is not None
        assert 85 < exp.timestamp() - time.time() <= 90
        assert not server.is_valid_access_token(server.login(expired=True).tokens.access_token)  # type: ignore[union-attr]
        headers = {"Authorization": f"Bearer {login.tokens.access_token}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/api/x", headers=headers) as response:
                assert response.status == 200
            server.revoke_access_tokens()
            async with session.get(f"{server.url}/api/x", headers=headers) as response:
                assert response.status == 401
        assert (server.api_hits, server.api_rejections) == (2, 1)
    assert fake_auth_server.api_hits == 0


async def test_failures_are_answered_in_order(fake_auth_server: FakeAuthServer) -> None:
    fake_auth_server.failures += [TokenFailure(503, "busy"), TokenFailure(400, {"error": "x"})]
    async with aiohttp.ClientSession() as session:
        async with session.post(fake_auth_server.token_url, json={}) as response:
            assert (response.status, await response.text()) == (503, "busy")
        async with session.post(fake_auth_server.token_url, json={}) as response:
            assert (response.status, await response.json()) == (400, {"error": "x"})
    assert fake_auth_server.failures == []


def test_issued_secrets_are_recorded(fake_auth_server: FakeAuthServer) -> None:
    login = fake_auth_server.login()
    assert login.tokens is not None
    assert {login.tokens.access_token, login.tokens.refresh_token} <= issued_secrets()


def test_fake_oauth_config_points_at_the_server(
    fake_auth_server: FakeAuthServer, fake_oauth_config: OAuthConfig
) -> None:
    assert fake_oauth_config.token_url == fake_auth_server.token_url
    assert fake_oauth_config.client_id == fake_auth_server.client_id
    assert fake_oauth_config.authapi_base_url == fake_auth_server.authapi_url
    assert fake_oauth_config.failure_backoff == timedelta(0)
    assert fake_oauth_config.reuse_grace == timedelta(0)


def test_codex_home_fixture(codex_home: Path, tmp_path: Path) -> None:
    assert codex_home.parent == tmp_path
    assert not codex_home.exists()


async def test_token_script_fixture(token_script: Callable[..., TokenScript]) -> None:
    script = token_script("one", "two")
    other = token_script("x")
    assert script.folder != other.folder
    assert script.runs == 0
    script.push("three")
    assert (script.folder / "tokens.txt").read_text() == "one\ntwo\nthree\n"


def test_jwt_helpers() -> None:
    jwt = make_jwt({"a": 1})
    header, payload, signature = jwt.split(".")
    assert signature == "sig"
    assert "=" not in header + payload
    info = IdTokenInfo.parse(make_id_token(account_id="org", plan_type="team"))
    assert (info.chatgpt_account_id, str(info.plan_type), info.email) == (
        "org",
        "team",
        "user@example.com",
    )


async def test_write_auth_json_is_codex_format(tmp_path: Path) -> None:
    data = chatgpt_auth()
    path = write_auth_json(tmp_path / "h", data)
    assert path.read_text() == data.to_json()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert await FileAuthStore(tmp_path / "h").load() == data
    raw = write_auth_json(tmp_path / "r", {"OPENAI_API_KEY": "sk", "weird": True})
    assert json.loads(raw.read_text()) == {"OPENAI_API_KEY": "sk", "weird": True}
    assert AuthDotJson.from_json(raw.read_text()).extra == {"weird": True}


async def test_expired_refresh_tokens(fake_auth_server: FakeAuthServer) -> None:
    login = fake_auth_server.login()
    assert login.tokens is not None
    fake_auth_server.expire_refresh_tokens()
    status, body = await _refresh(fake_auth_server, login.tokens.refresh_token)
    assert (status, body["error"]["code"]) == (401, "refresh_token_expired")
    # Tokens minted afterwards are valid again.
    fresh = fake_auth_server.login()
    assert fresh.tokens is not None
    assert (await _refresh(fake_auth_server, fresh.tokens.refresh_token))[0] == 200


def test_leak_guard_fails_tests_that_leak(pytester: pytest.Pytester) -> None:
    # The conftest is the one the testing how-to shows.
    example = Path(__file__).parent.parent / "docs" / "examples" / "leak_guard_conftest.py"
    pytester.makeconftest(example.read_text())
    pytester.makepyfile(
        """
        import logging

        import aiohttp
        from aioscopedauth import StorageError
        from aioscopedauth.testing import FakeAuthServer

        def test_clean():
            logging.getLogger("aioscopedauth.app").debug("nothing secret here")

        def test_planted_secret_in_a_log():
            logging.getLogger("aioscopedauth.app").debug("key %s", "PLANTED-SECRET-123")

        def test_planted_secret_in_a_caught_error():
            try:
                raise StorageError("oops PLANTED-SECRET-123")
            except StorageError:
                pass

        def test_issued_token_in_a_log():
            login = FakeAuthServer().login()
            logging.getLogger("aioscopedauth.app").info("%s", login.tokens.refresh_token)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines(["*a secret leaked into a log record or error*"])


async def test_personal_access_tokens_and_whoami(fake_auth_server: FakeAuthServer) -> None:
    server = fake_auth_server
    token = server.personal_access_token(
        email=None, plan_type="team", account_id="acct-t", fedramp=True
    )
    assert token.startswith("at-")
    assert token in issued_secrets()
    whoami = f"{server.authapi_url}/v1/user-auth-credential/whoami"
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(whoami, headers=headers) as response:
            assert response.status == 200
            assert await response.json() == {
                "email": None,
                "chatgpt_user_id": "user-12345",
                "chatgpt_account_id": "acct-t",
                "chatgpt_plan_type": "team",
                "chatgpt_account_is_fedramp": True,
            }
        async with session.get(f"{server.url}/api/x", headers=headers) as response:
            assert response.status == 200
        async with session.get(whoami, headers={"Authorization": "Bearer at-nope"}) as response:
            assert response.status == 401
        server.whoami_failures.append(TokenFailure(500, "boom"))
        async with session.get(whoami, headers=headers) as response:
            assert (response.status, await response.text()) == (500, "boom")
        server.revoke_personal_access_tokens()
        async with session.get(f"{server.url}/api/x", headers=headers) as response:
            assert response.status == 401
    assert server.whoami_calls == 3
    assert (server.api_hits, server.api_rejections) == (2, 1)
