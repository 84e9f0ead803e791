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
from typing import Any

import pytest

from aioscopedauth import AuthDotJson
from aioscopedauth.testing import FakeAuthServer, chatgpt_auth, write_auth_json, write_token_script

from processes import spawned

GOLDEN = Path(__file__).parent / "golden"
SCRIPT = shutil.which("aioscopedauth", path=str(Path(sys.executable).parent)) or "aioscopedauth"


async def _run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    async with spawned(
        SCRIPT,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    ) as proc:
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
    assert golden.tokens.id_token is not None
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
    # The warning is said once: the store's, not a log record and then the command's own.
    assert err == (
        f"aioscopedauth: warning: {home / 'auth.json'} can be read by other users (mode 0644); "
        "run `chmod 600` on it. The next save writes it 0600.\n"
    )
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


LOGIN_HINT = (
    "log in with `aioscopedauth login --api-key` (it reads the key from stdin) or `codex login`"
)


async def test_status_when_logged_out_exits_1_with_how_to_log_in(home: Path) -> None:
    code, out, err = await _run("--home", str(home), "status")
    assert (code, err) == (1, "")
    assert out == f"Not logged in (looked in {home / 'auth.json'}).\n  To {LOGIN_HINT}.\n"
    code, out, err = await _run("--home", str(home), "status", "--json")
    assert (code, err) == (1, "")
    facts = json.loads(out)
    assert (facts["logged_in"], facts["hint"]) == (False, LOGIN_HINT)


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


async def test_token_and_request_when_logged_out_exit_1_with_how_to_log_in(
    home: Path, server: FakeAuthServer
) -> None:
    expected = f"aioscopedauth: not logged in (looked in {home / 'auth.json'}); {LOGIN_HINT}\n"
    assert await _run("--home", str(home), "token") == (1, "", expected)
    url = f"{server.url}/api/hello"
    assert await _run("--home", str(home), "request", "--origin", server.url, url) == (
        1,
        "",
        expected,
    )
    assert server.last_api_request is None  # nothing was sent without credentials


async def test_token_of_a_provider(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-base"))
    write_token_script(home / "tools", "provider-token", "provider-token")
    (home / "config.toml").write_text(
        '[model_providers.corp.auth]\ncommand = "./print-token.sh"\ncwd = "tools"\n'
    )
    code, out, err = await _run("--home", str(home), "--provider", "corp", "token")
    assert (code, out, err) == (0, "provider-token\n", "")
    # Global options work after the command too.
    code, out, err = await _run("token", "--provider", "corp", "--home", str(home))
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
        "--origin",
        server.url,
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
    # Said once: no log record of the same failure before it.
    assert err == (
        "aioscopedauth: Your access token could not be refreshed because your refresh token was "
        "revoked. Please log out and sign in again.\n"
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
        ("demo", "--agents", "abc"),
        ("demo", "--seconds", "nan"),
        ("status", "--bogus"),
        ("status", "--store", "floppy"),
        ("request", "-X", "GE T", "https://api.openai.com/v1/models"),
        ("request", "http://[::1"),
        ("request", "ftp://api.openai.com/"),
        ("request", "/v1/models"),
        ("request", "-H", "X-A: b\nX-B: c", "https://api.openai.com/v1/models"),
        ("request", "-H", "X-A: b\x1b[2J", "https://api.openai.com/v1/models"),
        ("request", "-H", "no colon", "https://api.openai.com/v1/models"),
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
    async with spawned(
        sys.executable,
        "-m",
        "aioscopedauth",
        "--home",
        str(home),
        "status",
        stdout=asyncio.subprocess.PIPE,
    ) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1
    assert out.decode().startswith("Not logged in")


@pytest.mark.slow
async def test_demo_passes() -> None:
    code, out, err = await _run("demo", "--agents", "12", "--seconds", "3", "--seed", "7")
    assert code == 0, out + err
    assert "Summary after 3 s with 12 agents (measured)" in out
    # A 3 s run may see no revocation of one kind; then it says so instead of a plain PASS.
    verdicts = [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(verdicts) == 1, out
    assert verdicts[0].startswith(
        ("PASS: every request succeeded and no refresh token was reused.", "PASS, partly: ")
    )
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


async def test_global_options_go_before_or_after_the_command(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-anywhere"))
    for args in (
        ("--home", str(home), "status"),
        ("status", "--home", str(home)),
        ("-v", "status", "--home", str(home)),
        ("status", "-v", "--home", str(home), "--store", "file"),
    ):
        code, out, err = await _run(*args)
        assert (code, err) == (0, ""), args
        assert out.startswith("Logged in with an API key\n"), args
    # A value given before the command is not reset by the command's parser.
    other = home.parent / "other"
    code, out, _ = await _run("--home", str(other), "status", "-v")
    assert (code, out.splitlines()[0]) == (1, f"Not logged in (looked in {other / 'auth.json'}).")


@pytest.mark.parametrize(
    "command", ["status", "login", "logout", "token", "refresh", "request", "demo"]
)
async def test_every_command_help_lists_the_global_options(command: str) -> None:
    code, out, err = await _run(command, "--help")
    assert (code, err) == (0, "")
    assert "global options (before or after the command):" in out
    for option in ("--home DIR", "--config FILE", "--provider NAME", "--store", "-v, --verbose"):
        assert option in out


async def test_login_with_api_key_is_codex_spelling(home: Path) -> None:
    code, out, err = await _run(
        "login", "--with-api-key", "--home", str(home), stdin=b"sk-codex-spelling\n"
    )
    assert (code, out, err) == (
        0,
        f"Logged in with an API key (saved to {home / 'auth.json'}).\n",
        "",
    )
    assert await _run("--home", str(home), "token") == (0, "sk-codex-spelling\n", "")


async def test_corrupt_auth_json_is_neither_overwritten_nor_removed(home: Path) -> None:
    home.mkdir(mode=0o700)
    path = home / "auth.json"
    path.write_text("{")
    path.chmod(0o600)
    code, out, err = await _run("--home", str(home), "status")
    assert (code, out) == (1, "")
    message = err.removeprefix("aioscopedauth: ").removesuffix("\n")
    assert message.startswith(f"{path} is not a valid auth.json: ")
    code, out, err = await _run("--home", str(home), "login", "--api-key", stdin=b"sk-new\n")
    assert (code, out) == (1, "")
    assert err == f"aioscopedauth: {message} (`--force` replaces it.)\n"
    code, out, err = await _run("--home", str(home), "logout")
    assert (code, out) == (1, "")
    assert err == f"aioscopedauth: {message} (`--force` removes it.)\n"
    assert path.read_text() == "{"
    code, out, err = await _run("--home", str(home), "status", "--json")
    assert (code, err) == (1, "")
    assert json.loads(out) == {
        "logged_in": False,
        "store": "file",
        "home": str(home),
        "path": str(path),
        "where": str(path),
        "error": message,
    }
    code, out, err = await _run("--home", str(home), "logout", "--force")
    assert (code, out, err) == (0, "Logged out.\n", "")
    path.write_text("{")
    code, out, err = await _run(
        "--home", str(home), "login", "--api-key", "--force", stdin=b"sk-new\n"
    )
    assert (code, err) == (0, "")
    assert json.loads(path.read_text())["OPENAI_API_KEY"] == "sk-new"


async def test_a_failing_provider_command_is_said_once(home: Path) -> None:
    write_token_script(home / "tools", "FAIL")
    (home / "config.toml").write_text(
        '[model_providers.corp.auth]\ncommand = "./print-token.sh"\ncwd = "tools"\n'
    )
    code, out, err = await _run("--home", str(home), "token", "--provider", "corp")
    assert (code, out) == (1, "")
    assert err.startswith("aioscopedauth: ")
    assert len(err.splitlines()) == 1, err


async def test_status_of_a_provider_does_not_show_the_command_arguments(home: Path) -> None:
    (home / "tools").mkdir(parents=True)
    (home / "config.toml").write_text(
        '[model_providers.corp]\nbase_url = "https://gateway.example.com/v1"\n'
        "[model_providers.corp.auth]\n"
        'command = "mint"\nargs = ["--client-secret", "cs-do-not-print"]\ncwd = "tools"\n'
    )
    code, out, err = await _run("--home", str(home), "status", "--provider", "corp")
    assert code == 0, err  # the provider's command is a usable login by itself
    assert "  command       mint (+ 2 arguments, not shown)\n" in out
    code, out, err = await _run("--home", str(home), "status", "--provider", "corp", "--json")
    assert code == 0, err
    facts = json.loads(out)["provider"]
    assert (facts["command"], facts["args_count"]) == ("mint", 2)
    assert "cs-do-not-print" not in out + err


async def test_refresh_with_a_provider_runs_its_command(home: Path) -> None:
    script = write_token_script(home / "tools", "provider-token")
    (home / "config.toml").write_text(
        '[model_providers.corp.auth]\ncommand = "./print-token.sh"\ncwd = "tools"\n'
    )
    code, out, err = await _run("--home", str(home), "refresh", "--provider", "corp")
    assert (code, out, err) == (
        0,
        "Ran the command of provider 'corp': it printed a new token.\n",
        "",
    )
    assert script.runs == 1


def _sent(server: FakeAuthServer) -> dict[str, Any] | None:
    return server.last_api_request


async def test_request_is_scoped_to_the_login_origins(home: Path, server: FakeAuthServer) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-scoped"))
    url = f"{server.url}/api/hello"
    code, out, err = await _run("--home", str(home), "request", url)
    assert (code, out) == (2, "")
    assert err == (
        f"aioscopedauth: error: refusing to send the login to {server.url}: it is not one of "
        f"the login's origins (https://api.openai.com); pass --origin {server.url} to allow it\n"
    )
    assert _sent(server) is None
    code, out, err = await _run(
        "--home", str(home), "request", url, env={"OPENAI_BASE_URL": f"{server.url}/v1"}
    )
    # The fake API accepts only its own tokens: the answer is a 401, but the key was sent.
    assert (code, err) == (1, "HTTP 401 Unauthorized\n")
    assert _sent(server) is not None
    server.last_api_request = None
    code, out, err = await _run("--home", str(home), "request", "--origin", server.url, url)
    assert (code, err) == (1, "HTTP 401 Unauthorized\n")
    sent = _sent(server)
    assert sent is not None
    assert sent["headers"]["Authorization"] == "Bearer sk-scoped"


async def test_request_exits_1_on_an_http_error(home: Path, server: FakeAuthServer) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-404"))
    code, _, err = await _run(
        "--home", str(home), "request", "--origin", server.url, f"{server.url}/nope"
    )
    assert (code, err) == (1, "HTTP 404 Not Found\n")


async def test_a_file_as_home_is_a_usage_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    code, out, err = await _run("--home", str(not_a_folder), "login", "--api-key", stdin=b"sk\n")
    assert (code, out) == (2, "")
    assert err == (
        f"aioscopedauth: error: --home {not_a_folder} is a file; it must be a folder "
        "(or not exist yet)\n"
    )


async def test_store_auto_and_keyring_say_where_they_look(home: Path) -> None:
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    code, out, _ = await _run("--home", str(home), "--store", "auto", "status", env=env)
    assert code == 1
    assert out.splitlines()[0] == (
        f"Not logged in (looked in the system keyring, else {home / 'auth.json'})."
    )
    code, out, err = await _run(
        "--home", str(home), "--store", "auto", "login", "--api-key", stdin=b"sk-auto\n", env=env
    )
    assert (code, out) == (0, f"Logged in with an API key (saved to {home / 'auth.json'}).\n")
    code, out, err = await _run(
        "--home", str(home), "--store", "keyring", "login", "--api-key", stdin=b"sk-k\n", env=env
    )
    assert (code, out) == (1, "")
    assert err.startswith("aioscopedauth: failed to save the login to the keyring: ")
    assert len(err.splitlines()) == 1


def _modules_after(*code: str) -> set[str]:
    script = "\n".join(
        [
            "import sys",
            *code,
            "print(' '.join(sorted(sys.modules)))",
        ]
    )
    import subprocess  # noqa: PLC0415 -- only this helper runs a synchronous child

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_neither_aiohttp_nor_the_demo(flag: str) -> None:
    package = _modules_after("import aioscopedauth")
    after = _modules_after(
        "from aioscopedauth._cli import main",
        "try:",
        f"    main([{flag!r}])",
        "except SystemExit:",
        "    pass",
    )
    added = after - package
    assert not {m for m in added if m.split(".")[0] in {"aiohttp", "yarl", "multidict"}}, added
    assert "aioscopedauth._demo" not in after
    if "aiohttp" not in package:  # once the package itself imports lazily
        assert "aiohttp" not in after


@pytest.mark.parametrize("how", ["--upload-file", "--data"])
async def test_request_streams_a_file_through_a_revoked_token(
    home: Path, tmp_path: Path, server: FakeAuthServer, how: str
) -> None:
    write_auth_json(home, server.login())
    server.client_id = "app_EMoamEEZ73f0CkXaXp7hrann"
    server.revoke_access_tokens()  # the first send is answered 401; the file is sent again
    body = os.urandom(3 * 1024 * 1024)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    value = str(upload) if how == "--upload-file" else f"@{upload}"
    code, _, err = await _run(
        "--home",
        str(home),
        "request",
        "--origin",
        server.url,
        how,
        value,
        f"{server.url}/api/upload",
        env={"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.token_url},
    )
    assert code == 0, err
    assert err == "HTTP 200 OK\n"
    sent = server.last_api_request
    assert sent is not None
    assert sent["method"] == ("PUT" if how == "--upload-file" else "POST")
    assert sent["body"] == body
    assert server.refreshes == 1
    assert server.api_rejections == 1
