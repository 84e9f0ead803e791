"""Every auth.json shape, both ways, between the real Codex CLI 0.169.0 and the library."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

import aioscopedauth
from aioscopedauth import AuthManager, AuthMode, FileAuthStore
from aioscopedauth.testing import write_auth_json
from interop.harness import expiring_login, file_mode, kit, read_json, stray_temp_files

from processes import spawned

if TYPE_CHECKING:
    from pathlib import Path

    from aioscopedauth import Auth, OAuthConfig
    from aioscopedauth.testing import FakeAuthServer
    from interop.harness import Backend, Codex

API_KEY = "sk-interop-0123456789abcdef"
ACCOUNT_READ_CHATGPT = {
    "account": {
        "type": "chatgpt",
        "email": "user@example.com",
        "planType": "pro",
        "workspaceName": None,
    },
    "userId": "user-12345",
    "requiresOpenaiAuth": True,
}


def _apikey_bytes(key: str) -> bytes:
    # What Codex 0.169 writes, byte for byte: 2-space JSON, no trailing newline.
    return b'{\n  "auth_mode": "apikey",\n  "OPENAI_API_KEY": "' + key.encode() + b'"\n}'


def _plan(auth: Auth) -> str | None:
    return None if auth.plan_type is None else auth.plan_type.value


async def _library_cli(home: Path, *args: str) -> tuple[int, str]:
    async with spawned(
        sys.executable,
        "-m",
        "aioscopedauth",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"CODEX_HOME": str(home), "PATH": "/usr/bin:/bin"},
    ) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_api_key_files_are_byte_identical_both_ways(
    codex: Codex, home: Path, tmp_path: Path, oauth: OAuthConfig
) -> None:
    # Codex writes, the library reads.
    done = await codex.run("login", "--with-api-key", stdin=API_KEY + "\n")
    assert done.returncode == 0, done.stderr
    codex_bytes = (home / "auth.json").read_bytes()
    assert codex_bytes == _apikey_bytes(API_KEY)
    assert file_mode(home / "auth.json") == 0o600
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        auth = await manager.auth()
        assert auth is not None
        assert (auth.mode, auth.token) == (AuthMode.API_KEY, API_KEY)
        assert auth.headers()["Authorization"] == f"Bearer {API_KEY}"
    assert (home / "auth.json").read_bytes() == codex_bytes

    # The library writes, Codex reads: the same bytes.
    other = tmp_path / "library-home"
    async with AuthManager(FileAuthStore(other), oauth) as manager:
        await manager.login_with_api_key(API_KEY)
    assert (other / "auth.json").read_bytes() == codex_bytes
    assert file_mode(other / "auth.json") == 0o600
    (home / "auth.json").unlink()
    (home / "auth.json").write_bytes((other / "auth.json").read_bytes())
    (home / "auth.json").chmod(0o600)
    status = await codex.run("login", "status")
    assert status.returncode == 0, status.stderr
    assert "API key configured" in status.stdout + status.stderr
    async with codex.app_server() as app:
        answer = await app.read_account()
    assert answer["result"]["account"] == {"type": "apiKey"}, answer
    assert (home / "auth.json").read_bytes() == codex_bytes


async def test_codex_reads_a_login_the_library_refreshed(
    codex: Codex, home: Path, server: FakeAuthServer, backend: Backend, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    assert await manager.refresh_token() is True
    refreshed = (home / "auth.json").read_bytes()
    stored = json.loads(refreshed)
    assert server.token_calls == 1
    assert file_mode(home / "auth.json") == 0o600

    async with codex.app_server() as app:
        answer = await app.read_account()
    assert "result" in answer, answer
    result = answer["result"]
    assert {k: result[k] for k in ACCOUNT_READ_CHATGPT} == ACCOUNT_READ_CHATGPT
    assert result["workspaceRouting"]["chatgptAccountId"] == "acct-1"
    # Codex called the backend with the library's new access token and spent nothing.
    assert backend.bearers("/wham/accounts/check") == [stored["tokens"]["access_token"]]
    assert server.token_calls == 1
    assert (home / "auth.json").read_bytes() == refreshed


async def test_library_reads_a_login_codex_refreshed_byte_for_byte(
    codex: Codex, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    async with codex.app_server() as app:
        answer = await app.read_account(refresh=True)
    assert "result" in answer, answer
    assert server.refreshes == 1
    assert server.token_requests[0]["refresh_reason"] == "forced"
    codex_bytes = (home / "auth.json").read_bytes()
    stored = json.loads(codex_bytes)
    # Codex stamps last_refresh with nanoseconds: "...:SS.123456789Z".
    assert len(stored["last_refresh"].rsplit(".", 1)[1]) == len("123456789Z")
    assert file_mode(home / "auth.json") == 0o600

    auth = await manager.auth()
    assert auth is not None
    assert auth.mode is AuthMode.CHATGPT
    assert auth.token == stored["tokens"]["access_token"]
    assert (auth.account_id, auth.email, _plan(auth)) == ("acct-1", "user@example.com", "pro")
    loaded = await FileAuthStore(home).load()
    assert loaded is not None
    assert loaded.to_json().encode() == codex_bytes
    # Saving what was read writes Codex's bytes back, nanoseconds included.
    await FileAuthStore(home).save(loaded)
    assert (home / "auth.json").read_bytes() == codex_bytes
    assert server.token_calls == 1


async def test_library_reads_a_personal_access_token_codex_wrote(
    codex: Codex,
    home: Path,
    server: FakeAuthServer,
    authapi_url: str,
    oauth: OAuthConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODEX_AUTHAPI_BASE_URL", authapi_url)
    token = kit(server, "personal_access_token")()
    assert isinstance(token, str)
    assert token.startswith("at-")
    done = await codex.run("login", "--with-access-token", stdin=token + "\n")
    assert done.returncode == 0, done.stderr
    written = (home / "auth.json").read_bytes()
    assert read_json(home / "auth.json") == {"OPENAI_API_KEY": None, "personal_access_token": token}
    assert file_mode(home / "auth.json") == 0o600
    status = await codex.run("login", "status")
    assert "Logged in using personal access token" in status.stdout + status.stderr

    async with aiohttp.ClientSession() as session:
        url = f"{authapi_url}/v1/user-auth-credential/whoami"
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            whoami: dict[str, Any] = await response.json()
    calls = kit(server, "whoami_calls")

    async with AuthManager(FileAuthStore(home), oauth) as manager:
        auth = await manager.auth()
        assert auth is not None
        assert auth.mode is AuthMode("personalAccessToken")
        assert auth.token == token
        assert auth.headers()["Authorization"] == f"Bearer {token}"
        assert auth.account_id == whoami["chatgpt_account_id"]
        assert auth.email == whoami["email"]
        assert _plan(auth) == whoami["chatgpt_plan_type"]
        await manager.auth()
    # Fetched once and cached; never refreshed; the file is untouched.
    assert kit(server, "whoami_calls") == calls + 1
    assert server.token_calls == 0
    assert (home / "auth.json").read_bytes() == written


async def test_agent_identity_codex_wrote_is_kept_and_reported(
    codex: Codex, home: Path, server: FakeAuthServer, oauth: OAuthConfig
) -> None:
    jwt = codex.backend.tls.agent_identity_jwt()
    done = await codex.run("login", "--with-access-token", stdin=jwt + "\n", chatgpt_backend=False)
    assert done.returncode == 0, done.stderr
    written = (home / "auth.json").read_bytes()
    assert read_json(home / "auth.json") == {
        "auth_mode": "agentIdentity",
        "OPENAI_API_KEY": None,
        "agent_identity": jwt,
    }
    assert file_mode(home / "auth.json") == 0o600

    unsupported = kit(aioscopedauth, "UnsupportedLoginError")
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        with pytest.raises(unsupported) as caught:
            await manager.auth()
        assert caught.value.mode == "agentIdentity"
        assert manager.mode is AuthMode("agentIdentity")
    code, out = await _library_cli(home, "status")
    assert "agentIdentity" in out, (code, out)
    assert jwt not in out
    assert (home / "auth.json").read_bytes() == written
    assert server.token_calls == 0
    assert stray_temp_files(home) == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"type": "amazonBedrock", "apiKey": "bedrock-key-1", "region": "us-east-1"},
            {
                "auth_mode": "bedrockApiKey",
                "OPENAI_API_KEY": None,
                "bedrock_api_key": {"api_key": "bedrock-key-1", "region": "us-east-1"},
            },
        ),
        (
            {
                "type": "amazonBedrockAccessKeys",
                "accessKeyId": "AKIAINTEROPEXAMPLE",
                "secretAccessKey": "bedrock-secret-1",
                "sessionToken": None,
                "region": "us-east-1",
            },
            {
                "auth_mode": "bedrockAccessKeys",
                "OPENAI_API_KEY": None,
                "bedrock_access_keys": {
                    "access_key_id": "AKIAINTEROPEXAMPLE",
                    "secret_access_key": "bedrock-secret-1",
                },
            },
        ),
    ],
    ids=["bedrockApiKey", "bedrockAccessKeys"],
)
async def test_bedrock_login_codex_wrote_is_kept_and_reported(
    codex: Codex,
    home: Path,
    server: FakeAuthServer,
    oauth: OAuthConfig,
    params: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    async with codex.app_server() as app:
        answer = await app.request("account/login/start", params)
    assert answer.get("result") == {"type": "amazonBedrock"}, answer
    written = (home / "auth.json").read_bytes()
    assert read_json(home / "auth.json") == expected
    assert file_mode(home / "auth.json") == 0o600

    unsupported = kit(aioscopedauth, "UnsupportedLoginError")
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        with pytest.raises(unsupported) as caught:
            await manager.auth()
        assert caught.value.mode == expected["auth_mode"]
    code, out = await _library_cli(home, "status")
    assert expected["auth_mode"] in out, (code, out)
    assert (home / "auth.json").read_bytes() == written
    assert server.token_calls == 0


async def test_codex_proactively_refreshes_a_token_expiring_within_5_minutes(
    codex: Codex, home: Path, server: FakeAuthServer
) -> None:
    # Ground truth for the adoption tests: a 60 s token makes Codex spend on its own.
    write_auth_json(home, expiring_login(server, 60))
    async with codex.app_server() as app:
        answer = await app.read_account()
    assert "result" in answer, answer
    assert [r.get("refresh_reason") for r in server.token_requests] == ["proactive_expiry"]
    assert server.refreshes == 1
