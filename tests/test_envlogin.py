"""Logins from the environment, as Codex reads them: ``CODEX_ACCESS_TOKEN``, workload identity."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

import aiohttp
import pytest

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    AuthMode,
    FileAuthStore,
    UnsupportedLoginError,
    load_auth_data,
)
from aioscopedauth._envlogin import EnvIdentity, codex_env_identity, workload_identity_variables
from aioscopedauth.testing import write_auth_json

if TYPE_CHECKING:
    from pathlib import Path

    from aioscopedauth import OAuthConfig
    from aioscopedauth.testing import FakeAuthServer

WIF_WARNING = (
    "Codex would log in with workload identity here ({}), an identity aioscopedauth cannot use "
    "yet: this manager uses a different identity than Codex"
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite's own environment must not decide these tests.
    for name in (
        "CODEX_ACCESS_TOKEN",
        "CODEX_API_KEY",
        "OPENAI_FEDERATION_RULE_ID",
        "OPENAI_IDENTITY_TOKEN_FILE",
        "OPENAI_IDENTITY_TOKEN_SOURCE",
    ):
        monkeypatch.delenv(name, raising=False)


def _codex_manager(home: Path, oauth: OAuthConfig) -> AuthManager:
    return AuthManager(
        FileAuthStore(home),
        oauth,
        api_key_env="CODEX_API_KEY",
        access_token_env="CODEX_ACCESS_TOKEN",
    )


async def test_an_access_token_in_the_environment_wins_over_everything_stored(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Codex 0.169/0.171: CODEX_ACCESS_TOKEN beats auth.json, CODEX_API_KEY and OPENAI_API_KEY;
    # the value is trimmed; the file is never written.
    write_auth_json(home, server.login())
    stored = (home / "auth.json").read_bytes()
    token = server.personal_access_token(account_id="acct-env")
    monkeypatch.setenv("CODEX_ACCESS_TOKEN", f"  {token}\n")
    monkeypatch.setenv("CODEX_API_KEY", "sk-env-0123456789")
    async with _codex_manager(home, oauth) as manager:
        auth = await manager.auth()
        assert auth is not None
        assert (auth.mode, auth.token, auth.account_id) == (
            AuthMode.PERSONAL_ACCESS_TOKEN,
            token,
            "acct-env",
        )
        middleware = AuthMiddleware(manager)
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            session.get(f"{server.url}/api/models") as response,
        ):
            assert response.status == 200
        assert await manager.reload() is False
    assert server.last_api_request is not None
    headers = server.last_api_request["headers"]
    assert headers["Authorization"] == f"Bearer {token}"
    assert headers["ChatGPT-Account-ID"] == "acct-env"
    assert (server.whoami_calls, server.token_calls) == (1, 0)
    assert (home / "auth.json").read_bytes() == stored


async def test_a_rejected_access_token_from_the_environment_is_never_refreshed(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Codex has nothing to refresh an access token with; neither has the library: the 401 is
    # handed back after a reload, the token endpoint is never called, nothing is written.
    token = server.personal_access_token()
    monkeypatch.setenv("CODEX_ACCESS_TOKEN", token)
    server.api_always_401 = True
    async with _codex_manager(home, oauth) as manager:
        middleware = AuthMiddleware(manager)
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            session.get(f"{server.url}/api/models") as response,
        ):
            assert response.status == 401
        auth = await manager.auth()
        assert auth is not None
        assert auth.token == token
    assert server.token_calls == 0
    assert not home.exists()


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
async def test_a_blank_access_token_is_unset(
    home: Path,
    oauth: OAuthConfig,
    server: FakeAuthServer,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    login = server.login()
    write_auth_json(home, login)
    monkeypatch.setenv("CODEX_ACCESS_TOKEN", value)
    async with _codex_manager(home, oauth) as manager:
        auth = await manager.auth()
    assert auth is not None
    assert auth.mode is AuthMode.CHATGPT
    assert login.tokens is not None
    assert auth.token == login.tokens.access_token
    assert server.whoami_calls == 0


async def test_the_access_token_variable_is_read_only_when_asked_for(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX_ACCESS_TOKEN", server.personal_access_token())
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        assert await manager.auth() is None
    assert server.whoami_calls == 0


async def test_an_access_token_that_is_not_personal_is_an_agent_identity_we_cannot_send(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Codex reads any CODEX_ACCESS_TOKEN without the at- prefix as an agent identity JWT.
    secret = "eyJhbGciOiJSUzI1NiJ9.eyJhZ2VudCI6dHJ1ZX0.c2VjcmV0LXNpZ25hdHVyZQ"
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored-0123456789"})
    monkeypatch.setenv("CODEX_ACCESS_TOKEN", secret)
    async with _codex_manager(home, oauth) as manager:
        with pytest.raises(UnsupportedLoginError) as caught:
            await manager.auth()
        assert manager.mode is AuthMode.AGENT_IDENTITY
    assert str(caught.value) == (
        "The login in the CODEX_ACCESS_TOKEN variable is an `agentIdentity` login, which "
        "aioscopedauth cannot send requests with. Use the Codex CLI for it, or log in with an "
        "API key or ChatGPT."
    )
    assert secret not in repr(caught.value)
    assert server.whoami_calls == 0


async def test_workload_identity_is_warned_about_once_by_a_manager_that_follows_codex(
    home: Path,
    oauth: OAuthConfig,
    server: FakeAuthServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored-0123456789"})
    monkeypatch.setenv("OPENAI_FEDERATION_RULE_ID", "fr-123")
    monkeypatch.setenv("OPENAI_IDENTITY_TOKEN_FILE", "/run/secrets/id-token")
    with caplog.at_level(logging.WARNING, logger="aioscopedauth"):
        async with _codex_manager(home, oauth) as manager:
            auth = await manager.auth()
            assert auth is not None
            assert auth.mode is AuthMode.API_KEY
            for _ in range(3):
                await manager.reload()
        async with AuthManager(FileAuthStore(home), oauth) as plain:
            await plain.auth()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        WIF_WARNING.format("OPENAI_FEDERATION_RULE_ID, OPENAI_IDENTITY_TOKEN_FILE set")
    ]
    assert server.token_calls == 0


async def test_no_workload_identity_no_warning(
    home: Path,
    oauth: OAuthConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CODEX_API_KEY", "sk-env-0123456789")
    with caplog.at_level(logging.DEBUG, logger="aioscopedauth"):
        async with _codex_manager(home, oauth) as manager:
            auth = await manager.auth()
    assert auth is not None
    assert auth.mode is AuthMode.API_KEY
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_codex_env_identity_follows_codexs_order() -> None:
    pat = "at-1-abc"
    assert codex_env_identity({}) is None
    assert codex_env_identity({"CODEX_ACCESS_TOKEN": "  "}) is None
    assert codex_env_identity({"CODEX_ACCESS_TOKEN": pat}) == EnvIdentity(
        "personal_access_token", ("CODEX_ACCESS_TOKEN",), supported=True
    )
    assert codex_env_identity({"CODEX_ACCESS_TOKEN": "eyJ.x.y"}) == EnvIdentity(
        "agent_identity", ("CODEX_ACCESS_TOKEN",), supported=False
    )
    # Workload identity wins over an access token, and a blank variable still selects it.
    both = {"CODEX_ACCESS_TOKEN": pat, "OPENAI_FEDERATION_RULE_ID": ""}
    assert codex_env_identity(both) == EnvIdentity(
        "workload_identity", ("OPENAI_FEDERATION_RULE_ID",), supported=False
    )
    spiffe = {"OPENAI_FEDERATION_RULE_ID": "fr", "OPENAI_IDENTITY_TOKEN_SOURCE": "spiffe"}
    assert workload_identity_variables(spiffe) == (
        "OPENAI_FEDERATION_RULE_ID",
        "OPENAI_IDENTITY_TOKEN_SOURCE",
    )
    identity = codex_env_identity(spiffe)
    assert identity is not None
    assert identity.describe() == (
        "workload identity (OPENAI_FEDERATION_RULE_ID, OPENAI_IDENTITY_TOKEN_SOURCE)"
    )


async def _status(home: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    # The real command, in a child process with exactly this environment (and PYTHONPATH, so
    # the child imports the code under test).
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "PYTHONPATH", "HOME"}}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioscopedauth",
        "--home",
        str(home),
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=base | env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_says_codex_would_use_workload_identity(home: Path) -> None:
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored-0123456789"})
    env = {"OPENAI_FEDERATION_RULE_ID": "fr-123", "OPENAI_IDENTITY_TOKEN_FILE": "/run/id-token"}
    code, out, err = await _status(home, env=env)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "Logged in with an API key"
    assert out.splitlines()[-1] == (
        "Codex would use a different identity here: workload identity "
        "(OPENAI_FEDERATION_RULE_ID, OPENAI_IDENTITY_TOKEN_FILE) from the environment, which "
        "aioscopedauth cannot use yet; this command uses the stored login."
    )
    code, out, err = await _status(home, "--json", env=env)
    assert (code, err) == (0, "")
    assert json.loads(out)["codex_identity"] == {
        "kind": "workload_identity",
        "variables": ["OPENAI_FEDERATION_RULE_ID", "OPENAI_IDENTITY_TOKEN_FILE"],
        "supported": False,
        "message": (
            "Codex would use a different identity here: workload identity "
            "(OPENAI_FEDERATION_RULE_ID, OPENAI_IDENTITY_TOKEN_FILE) from the environment, "
            "which aioscopedauth cannot use yet; this command uses the stored login"
        ),
    }


async def test_status_says_codex_would_use_the_access_token_and_never_shows_it(
    home: Path,
) -> None:
    token = "at-0-status-secret-0123456789"
    code, out, err = await _status(home, "--json", env={"CODEX_ACCESS_TOKEN": token})
    assert (code, err) == (1, "")
    facts = json.loads(out)
    assert facts["logged_in"] is False
    assert facts["codex_identity"]["kind"] == "personal_access_token"
    assert facts["codex_identity"]["supported"] is True
    assert facts["codex_identity"]["variables"] == ["CODEX_ACCESS_TOKEN"]
    code, out, err = await _status(home, env={"CODEX_ACCESS_TOKEN": token})
    assert code == 1
    assert out.splitlines()[-1] == (
        "Codex would use a different identity here: personal access token "
        "(CODEX_ACCESS_TOKEN) from the environment; this command uses the stored login."
    )
    assert token not in out + err


async def test_status_without_an_environment_login_says_nothing_more(home: Path) -> None:
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored-0123456789"})
    code, out, _ = await _status(home, "--json", env={"CODEX_ACCESS_TOKEN": "  "})
    assert code == 0
    assert "codex_identity" not in json.loads(out)
    _, out, _ = await _status(home, env={})
    assert "Codex would" not in out


async def test_load_auth_data_reads_the_access_token_first(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored-0123456789"})
    monkeypatch.setenv("CODEX_ACCESS_TOKEN", " at-1-loaded ")
    monkeypatch.setenv("CODEX_API_KEY", "sk-env-0123456789")
    store = FileAuthStore(home)
    loaded = await load_auth_data(
        store, api_key_env="CODEX_API_KEY", access_token_env="CODEX_ACCESS_TOKEN"
    )
    assert loaded is not None
    assert loaded.origin == "access_token_env"
    assert loaded.data.resolved_mode is AuthMode.PERSONAL_ACCESS_TOKEN
    assert loaded.data.personal_access_token == "at-1-loaded"
    assert "at-1-loaded" not in repr(loaded)
    # Without the option, the API-key variable comes first, as before.
    loaded = await load_auth_data(store, api_key_env="CODEX_API_KEY")
    assert loaded is not None
    assert (loaded.origin, loaded.data.openai_api_key) == ("env", "sk-env-0123456789")
