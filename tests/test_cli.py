"""The real console script, run in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest

from aioscopedauth import AuthDotJson
from aioscopedauth.testing import FakeAuthServer, chatgpt_auth, write_auth_json, write_token_script

GOLDEN = Path(__file__).parent / "golden"
SCRIPT = shutil.which("aioscopedauth", path=str(Path(sys.executable).parent)) or "aioscopedauth"


async def _run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        SCRIPT,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_shows_the_account_without_secrets(home: Path) -> None:
    golden = AuthDotJson.from_json((GOLDEN / "chatgpt.auth.json").read_text())
    write_auth_json(home, golden)
    code, out, err = await _run("--home", str(home), "status")
    assert code == 0, err
    assert "Logged in with ChatGPT (managed OAuth tokens)" in out
    assert "org-golden" in out
    assert "user@example.com" in out
    assert "plan          pro" in out
    assert "access token  expires 2030-03-17T17:46:40Z" in out
    assert "last refresh  2026-03-31T18:02:11.123456Z" in out
    assert golden.tokens is not None
    for secret in (
        golden.tokens.access_token,
        golden.tokens.refresh_token,
        golden.tokens.id_token.raw_jwt,
    ):
        assert secret not in out + err
    assert err == ""


async def test_status_json(home: Path) -> None:
    write_auth_json(home, chatgpt_auth(account_id="acct-j", refresh_token="rt-secret")).chmod(0o644)
    code, out, err = await _run("--home", str(home), "status", "--json")
    assert code == 0
    facts = json.loads(out)
    assert facts["logged_in"] is True
    assert facts["mode"] == "chatgpt"
    assert facts["account_id"] == "acct-j"
    assert facts["store"] == "file"
    assert facts["path"] == str(home / "auth.json")
    assert 3500 < facts["access_token_seconds_left"] <= 3600
    assert facts["warnings"] == [
        f"{home / 'auth.json'} can be read by other users (mode 0644); run chmod 600"
    ]
    assert "rt-secret" not in out + err


async def test_status_when_logged_out(home: Path) -> None:
    code, out, _ = await _run("--home", str(home), "status")
    assert code == 0
    assert out == f"Not logged in (looked in {home / 'auth.json'}).\n"


async def test_codex_home_env_is_the_default(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-env-home"))
    code, out, _ = await _run("status", env={"CODEX_HOME": str(home)})
    assert code == 0
    assert "Logged in with an API key" in out


async def test_login_reads_the_key_from_stdin_and_token_prints_it(home: Path) -> None:
    code, out, err = await _run("--home", str(home), "login", "--api-key", stdin=b"sk-from-stdin\n")
    assert code == 0, err
    assert out == f"Logged in with an API key (saved to {home / 'auth.json'}).\n"
    assert "sk-from-stdin" not in out + err
    assert stat.S_IMODE((home / "auth.json").stat().st_mode) == 0o600
    code, out, err = await _run("--home", str(home), "token")
    assert (code, out, err) == (0, "sk-from-stdin\n", "")


async def test_logout(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-1"))
    assert (await _run("--home", str(home), "logout"))[:2] == (0, "Logged out.\n")
    assert not (home / "auth.json").exists()
    assert (await _run("--home", str(home), "logout"))[:2] == (
        0,
        "Not logged in; nothing to remove.\n",
    )


async def test_token_when_logged_out_exits_1(home: Path) -> None:
    code, out, err = await _run("--home", str(home), "token")
    assert (code, out) == (1, "")
    assert err == "aioscopedauth: no token: not logged in\n"


async def test_token_of_a_provider(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-base"))
    write_token_script(home / "tools", "provider-token")
    (home / "config.toml").write_text(
        '[model_providers.corp.auth]\ncommand = "./print-token.sh"\ncwd = "tools"\n'
    )
    code, out, err = await _run("--home", str(home), "--provider", "corp", "token")
    assert (code, out, err) == (0, "provider-token\n", "")
    code, out, err = await _run("--home", str(home), "--provider", "corp", "status")
    assert code == 0, err
    assert "Provider corp (corp)" in out
    assert "  command       ./print-token.sh\n" in out
    assert f"  cwd           {home / 'tools'}\n" in out
    assert "provider-token" not in out
    code, _, err = await _run("--home", str(home), "--provider", "nope", "token")
    assert code == 1
    assert err.startswith("aioscopedauth: No provider 'nope' in ")
    assert err.endswith("(known: corp)\n")


async def test_refresh_and_request_against_a_server(home: Path, server: FakeAuthServer) -> None:
    write_auth_json(home, server.login())
    env = {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.token_url}
    # The CLI uses Codex's client id; the fake server is told to expect it.
    server.client_id = "app_EMoamEEZ73f0CkXaXp7hrann"
    code, out, err = await _run("--home", str(home), "refresh", env=env)
    assert code == 0, err
    assert out.startswith("Refreshed at the token endpoint: the access token now expires ")
    assert server.refreshes == 1
    server.revoke_access_tokens()
    code, out, err = await _run(
        "--home",
        str(home),
        "request",
        "-X",
        "POST",
        "-H",
        "X-Test: 1",
        "--data",
        "hello",
        f"{server.url}/api/echo",
        env=env,
    )
    assert code == 0, err
    assert err == "HTTP 200 OK\n"
    assert json.loads(out) == {"ok": True, "path": "/api/echo"}
    assert server.refreshes == 2
    sent = server.last_api_request
    assert sent is not None
    assert (sent["method"], sent["body"], sent["headers"]["X-Test"]) == ("POST", b"hello", "1")


async def test_refresh_failure_exits_1_with_the_message(home: Path, server: FakeAuthServer) -> None:
    write_auth_json(home, server.login())
    server.revoke_refresh_tokens()
    server.client_id = "app_EMoamEEZ73f0CkXaXp7hrann"
    code, out, err = await _run(
        "--home", str(home), "refresh", env={"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.token_url}
    )
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "aioscopedauth: Your access token could not be refreshed because your refresh token was "
        "revoked. Please log out and sign in again."
    )


async def test_corrupt_file_exits_1(home: Path) -> None:
    home.mkdir()
    (home / "auth.json").write_text("{")
    code, _, err = await _run("--home", str(home), "status")
    assert code == 1
    assert "is not a valid auth.json" in err
    assert (home / "auth.json").read_text() == "{"


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("frobnicate",),
        ("login",),
        ("demo", "--agents", "0"),
        ("status", "--bogus"),
    ],
)
async def test_bad_usage_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    code, out, err = await _run(*args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("aioscopedauth")
    assert "error:" in err


async def test_python_dash_m_matches_the_script(home: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioscopedauth",
        "--home",
        str(home),
        "status",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert out.decode().startswith("Not logged in")


@pytest.mark.slow
async def test_demo_passes() -> None:
    code, out, err = await _run("demo", "--agents", "12", "--seconds", "3", "--seed", "7")
    assert code == 0, out + err
    assert "Summary after 3 s with 12 agents" in out
    assert "PASS: every request succeeded and no refresh token was reused" in out
    rows = dict(re.findall(r"^ {2,4}(\S.*?) {2,}(\S+)$", out, flags=re.MULTILINE))
    assert rows["failed"] == "0"
    assert rows["refresh tokens reused"] == "0"
    assert int(rows["token refreshes"]) >= 1


async def test_status_of_a_personal_access_token(home: Path, server: FakeAuthServer) -> None:
    token = server.personal_access_token(email="pat@example.com", plan_type="team")
    write_auth_json(home, {"OPENAI_API_KEY": None, "personal_access_token": token})
    env = {"CODEX_AUTHAPI_BASE_URL": server.authapi_url}
    code, out, err = await _run("--home", str(home), "status", env=env)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "Logged in with a personal access token",
        f"  store         file: {home / 'auth.json'}",
        "  account       acct-1",
        "  email         pat@example.com",
        "  plan          team",
    ]
    code, out, err = await _run("--home", str(home), "status", "--json", env=env)
    facts = json.loads(out)
    assert (facts["mode"], facts["supported"], facts["account_id"]) == (
        "personalAccessToken",
        True,
        "acct-1",
    )
    code, out, _ = await _run("--home", str(home), "token", env=env)
    assert (code, out) == (0, f"{token}\n")
    assert server.whoami_calls == 3


@pytest.mark.parametrize(
    ("name", "mode", "article"),
    [("agent_identity", "agentIdentity", "an"), ("unknown_mode", "someFutureMode", "a")],
)
async def test_status_of_a_login_this_library_cannot_use(
    home: Path, name: str, mode: str, article: str
) -> None:
    home.mkdir(mode=0o700)
    path = home / "auth.json"
    shutil.copy(GOLDEN / f"{name}.auth.json", path)
    path.chmod(0o600)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    code, out, err = await _run("--home", str(home), "status")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"Logged in with {article} `{mode}` login",
        (
            "  aioscopedauth cannot send requests with this login; use the Codex CLI for it, "
            "or log in with an API key or ChatGPT."
        ),
        f"  store         file: {path}",
    ]
    code, out, err = await _run("--home", str(home), "status", "--json")
    facts = json.loads(out)
    assert (facts["mode"], facts["supported"]) == (mode, False)
    assert facts["note"].startswith("aioscopedauth cannot send requests with this login")
    code, out, err = await _run("--home", str(home), "token")
    assert (code, out) == (1, "")
    assert err == (
        f"aioscopedauth: The login in {path} is {article} `{mode}` login, which aioscopedauth "
        "cannot send requests with. Use the Codex CLI for it, or log in with an API key or "
        "ChatGPT.\n"
    )
    code, out, err = await _run("--home", str(home), "refresh")
    assert (code, out) == (0, f"Logged in with {article} `{mode}` login: nothing to refresh.\n")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
