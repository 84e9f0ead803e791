"""Logins that never touch auth.json: what the real Codex does with them, and the library.

``CODEX_ACCESS_TOKEN`` (honoured by the library with ``access_token_env``) and workload identity
(``OPENAI_FEDERATION_RULE_ID`` with ``OPENAI_IDENTITY_TOKEN_FILE``; 0.171 also
``OPENAI_IDENTITY_TOKEN_SOURCE``), which the library cannot exchange yet: ``status`` and the
manager say so. docs/explanation/compatibility.md, "Logins from the environment", has the
observations these tests pin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import AuthManager, AuthMode, FileAuthStore, UnsupportedLoginError
from aioscopedauth.testing import write_auth_json
from interop.harness import CODEX_VERSION, ForeignHosts, read_json

if TYPE_CHECKING:
    from pathlib import Path

    from aioscopedauth import OAuthConfig
    from aioscopedauth.testing import FakeAuthServer
    from interop.harness import Backend, Codex, Tls

STORED_KEY = "sk-stored-0123456789abcdef"
ENV_KEY = "sk-env-0123456789ABCDEF"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _lines(text: str) -> list[str]:
    # Codex warns that it cannot make PATH aliases under /tmp (where the test homes are).
    return [line for line in text.splitlines() if "PATH aliases" not in line]


@pytest.fixture(autouse=True)
def _no_inherited_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CODEX_ACCESS_TOKEN",
        "CODEX_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_FEDERATION_RULE_ID",
        "OPENAI_IDENTITY_TOKEN_FILE",
        "OPENAI_IDENTITY_TOKEN_SOURCE",
    ):
        monkeypatch.delenv(name, raising=False)


async def test_an_access_token_in_the_environment_is_the_login_for_codex_and_the_library(
    codex: Codex,
    home: Path,
    server: FakeAuthServer,
    backend: Backend,
    oauth: OAuthConfig,
    authapi_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Codex: CODEX_ACCESS_TOKEN (trimmed) beats auth.json, CODEX_API_KEY and OPENAI_API_KEY;
    # an at- token is a personal access token, its account asked of whoami; the bearer and the
    # account header go out; nothing is written and nothing is refreshed.
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": STORED_KEY})
    stored = (home / "auth.json").read_bytes()
    token = server.personal_access_token(account_id="acct-env")
    backend.account_ids[:] = ["acct-env"]  # the workspace routing check lists this account
    env = {"CODEX_ACCESS_TOKEN": f"  {token}\n", "CODEX_API_KEY": ENV_KEY}
    codex.extra_env.update(env | {"OPENAI_API_KEY": ENV_KEY})
    status = await codex.run("login", "status")
    assert (status.returncode, _lines(status.stderr)) == (
        0,
        ["Logged in using personal access token"],
    )
    assert server.whoami_calls == 1
    async with codex.app_server() as app:
        answer = await app.read_account(refresh=True)
    assert "result" in answer, answer
    assert answer["result"]["account"]["type"] == "chatgpt"
    assert answer["result"]["workspaceRouting"]["chatgptAccountId"] == "acct-env"
    sent = [(path, bearer) for path, bearer in backend.requests if path.endswith("/check")]
    assert sent == [("/backend-api/wham/accounts/check", token)]
    assert server.token_calls == 0
    assert (home / "auth.json").read_bytes() == stored

    # The library, told Codex's variable names, picks the same login.
    monkeypatch.setenv("CODEX_AUTHAPI_BASE_URL", authapi_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    whoami = server.whoami_calls
    async with AuthManager(
        FileAuthStore(home),
        oauth,
        api_key_env="CODEX_API_KEY",
        access_token_env="CODEX_ACCESS_TOKEN",
    ) as manager:
        auth = await manager.auth()
    assert auth is not None
    assert (auth.mode, auth.token, auth.account_id) == (
        AuthMode.PERSONAL_ACCESS_TOKEN,
        token,
        "acct-env",
    )
    assert auth.headers()["ChatGPT-Account-ID"] == "acct-env"
    assert server.whoami_calls == whoami + 1
    assert server.token_calls == 0
    assert (home / "auth.json").read_bytes() == stored


async def test_a_blank_access_token_is_unset_for_both(
    codex: Codex, home: Path, server: FakeAuthServer, oauth: OAuthConfig
) -> None:
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": STORED_KEY})
    codex.extra_env["CODEX_ACCESS_TOKEN"] = "   "
    status = await codex.run("login", "status")
    assert status.returncode == 0
    assert _lines(status.stderr) == [
        "API key configured - sk-store***bcdef",
        "Authentication is checked when you send a request.",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEX_ACCESS_TOKEN", "   ")
        async with AuthManager(
            FileAuthStore(home), oauth, access_token_env="CODEX_ACCESS_TOKEN"
        ) as manager:
            auth = await manager.auth()
    assert auth is not None
    assert (auth.mode, auth.token) == (AuthMode.API_KEY, STORED_KEY)
    assert server.whoami_calls == 0


async def test_an_access_token_without_the_at_prefix_is_an_agent_identity_for_both(
    codex: Codex, home: Path, backend: Backend, tls: Tls, oauth: OAuthConfig
) -> None:
    # Codex verifies it as an agent identity JWT (it fetches the JWK set), then needs the
    # agent's private key; the library cannot send with an agent identity and says so.
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": STORED_KEY})
    jwt = tls.agent_identity_jwt()
    codex.extra_env["CODEX_ACCESS_TOKEN"] = jwt
    status = await codex.run("login", "status", chatgpt_backend=False)
    assert status.returncode == 1
    assert _lines(status.stderr) == [
        "Error checking login status: stored agent identity private key is not valid PKCS#8"
    ]
    assert backend.requests == [("/jwks/agent-identities/jwks", None)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEX_ACCESS_TOKEN", jwt)
        async with AuthManager(
            FileAuthStore(home), oauth, access_token_env="CODEX_ACCESS_TOKEN"
        ) as manager:
            with pytest.raises(UnsupportedLoginError):
                await manager.auth()
            assert manager.mode is AuthMode.AGENT_IDENTITY


async def test_workload_identity_wins_over_every_other_login_and_fails_closed(
    codex: Codex,
    home: Path,
    tmp_path: Path,
    server: FakeAuthServer,
    tls: Tls,
    oauth: OAuthConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Codex exchanges the identity token at the production token endpoint (no override; a
    # CONNECT proxy brings it to a loopback fake) and, when that fails, fails: it never falls
    # back to CODEX_ACCESS_TOKEN, CODEX_API_KEY or auth.json, and writes nothing.
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": STORED_KEY})
    stored = (home / "auth.json").read_bytes()
    identity_file = tmp_path / "identity-token"
    identity_file.write_text("header.workload-claims.signature\n")
    wif = {
        "OPENAI_FEDERATION_RULE_ID": "fr-interop",
        "OPENAI_IDENTITY_TOKEN_FILE": str(identity_file),
    }
    async with ForeignHosts(tls) as foreign:
        codex.extra_env.update(
            wif
            | foreign.env()
            | {"CODEX_ACCESS_TOKEN": server.personal_access_token(), "CODEX_API_KEY": ENV_KEY}
        )
        status = await codex.run("login", "status", chatgpt_backend=False)
    assert status.returncode == 1
    rejected = (
        "Error checking login status: the workload identity token exchange was rejected with "
        "HTTP 400"
    )
    assert _lines(status.stderr) == [rejected]
    assert foreign.connects == ["CONNECT auth.openai.com:443 HTTP/1.1"]
    # One request: `login status` does not retry (not a 429 or a 503 either, observed).
    assert len(foreign.requests) == 1
    first = foreign.requests[0]
    assert (first.host, first.method, first.path, first.content_type, first.authorization) == (
        "auth.openai.com",
        "POST",
        "/oauth/token",
        "application/x-www-form-urlencoded",
        None,
    )
    assert first.form == {
        "grant_type": JWT_BEARER,
        "assertion": "header.workload-claims.signature",
        "federation_rule_id": "fr-interop",
    }
    assert server.token_calls == 0
    assert (home / "auth.json").read_bytes() == stored

    # The library cannot exchange it: a manager that follows Codex's environment warns once,
    # and `status` says Codex would use a different identity.
    with pytest.MonkeyPatch.context() as patch:
        for name, value in wif.items():
            patch.setenv(name, value)
        with caplog.at_level(logging.WARNING, logger="aioscopedauth"):
            async with AuthManager(
                FileAuthStore(home), oauth, access_token_env="CODEX_ACCESS_TOKEN"
            ) as manager:
                auth = await manager.auth()
                await manager.reload()
    assert auth is not None
    assert auth.token == STORED_KEY
    warning = (
        "Codex would log in with workload identity here (OPENAI_FEDERATION_RULE_ID, "
        "OPENAI_IDENTITY_TOKEN_FILE set), an identity aioscopedauth cannot use yet: this "
        "manager uses a different identity than Codex"
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [warning]
    code, out = await _library_status(home, wif)
    assert code == 0
    assert out.splitlines()[-1] == (
        "Codex would use a different identity here: workload identity "
        "(OPENAI_FEDERATION_RULE_ID, OPENAI_IDENTITY_TOKEN_FILE) from the environment, which "
        "aioscopedauth cannot use yet; this command uses the stored login."
    )
    assert read_json(home / "auth.json") == {"auth_mode": "apikey", "OPENAI_API_KEY": STORED_KEY}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OPENAI_FEDERATION_RULE_ID": "fr-1"},
            "workload identity requires OPENAI_IDENTITY_TOKEN_FILE",
        ),
        (
            {"OPENAI_IDENTITY_TOKEN_FILE": "/run/id-token"},
            "workload identity requires OPENAI_FEDERATION_RULE_ID",
        ),
        (
            {"OPENAI_FEDERATION_RULE_ID": "", "OPENAI_IDENTITY_TOKEN_FILE": "/run/id-token"},
            "workload identity variable OPENAI_FEDERATION_RULE_ID is invalid",
        ),
        (
            {"OPENAI_FEDERATION_RULE_ID": "fr-1", "OPENAI_IDENTITY_TOKEN_FILE": "id-token"},
            "OPENAI_IDENTITY_TOKEN_FILE must be an absolute path",
        ),
    ],
)
async def test_a_partial_workload_identity_fails_without_falling_back(
    codex: Codex, home: Path, env: dict[str, str], message: str
) -> None:
    write_auth_json(home, {"auth_mode": "apikey", "OPENAI_API_KEY": STORED_KEY})
    codex.extra_env.update(env)
    status = await codex.run("login", "status", chatgpt_backend=False)
    assert status.returncode == 1
    assert _lines(status.stderr) == [f"Error checking login status: {message}"]


async def test_workload_identity_refuses_a_chatgpt_backend_other_than_openais(
    codex: Codex, tmp_path: Path
) -> None:
    identity_file = tmp_path / "identity-token"
    identity_file.write_text("header.claims.signature")
    codex.extra_env.update(
        {"OPENAI_FEDERATION_RULE_ID": "fr-1", "OPENAI_IDENTITY_TOKEN_FILE": str(identity_file)}
    )
    status = await codex.run("login", "status")  # chatgpt_base_url is the loopback fake
    assert status.returncode == 1
    refused = (
        "Error checking login status: workload identity auth supports only trusted production "
        "and staging app routing"
    )
    assert _lines(status.stderr) == [refused]


async def test_the_identity_token_source_variable_is_read_from_0_171_on(codex: Codex) -> None:
    # 0.169 ignores OPENAI_IDENTITY_TOKEN_SOURCE; 0.171 reads it (file or spiffe) and it alone
    # selects workload identity.
    codex.extra_env["OPENAI_IDENTITY_TOKEN_SOURCE"] = "spiffe"
    status = await codex.run("login", "status", chatgpt_backend=False)
    assert status.returncode == 1
    if CODEX_VERSION.startswith("0.169."):
        assert _lines(status.stderr) == ["Not logged in"]
    else:
        assert _lines(status.stderr) == [
            "Error checking login status: workload identity requires OPENAI_FEDERATION_RULE_ID"
        ]


async def _library_status(home: Path, env: dict[str, str]) -> tuple[int, str]:
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "PYTHONPATH"}}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioscopedauth",
        "--home",
        str(home),
        "status",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=keep | env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()
