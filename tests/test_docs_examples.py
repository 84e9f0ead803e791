"""Every code example in the docs runs here, against real local servers."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

import aioscopedauth
from aioscopedauth import AuthDotJson, AuthManager, AuthMode, MemoryAuthStore, OAuthConfig
from aioscopedauth.testing import (
    FakeAuthServer,
    serve_on_loopback,
    write_auth_json,
    write_token_script,
)

from processes import spawned

if TYPE_CHECKING:
    from types import ModuleType

    from support import MemoryKeyring

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
GOLDEN = Path(__file__).parent / "golden"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_tutorial(capsys: pytest.CaptureFixture[str]) -> None:
    await _load("tutorial").main()
    assert capsys.readouterr().out == "first call: 200\nafter a revoke: 200\ntoken refreshes: 1\n"


async def test_reuse_codex_login(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _load("codex_login")
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.delenv("CODEX_API_KEY", raising=False)
    await example.main()
    assert capsys.readouterr().out == "Not logged in: run `codex login` first.\n"
    write_auth_json(home, AuthDotJson.from_json((GOLDEN / "chatgpt.auth.json").read_text()))
    await example.main()
    assert capsys.readouterr().out == (
        "chatgpt login, account org-golden, email user@example.com\n"
    )
    monkeypatch.setenv("CODEX_API_KEY", "sk-from-env")
    await example.main()
    assert capsys.readouterr().out == "apikey login, account None, email None\n"


async def test_login_shapes(
    home: Path, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    describe = _load("login_shapes").describe
    monkeypatch.setenv("CODEX_AUTHAPI_BASE_URL", server.authapi_url)
    assert await describe(home) == "not logged in"
    token = server.personal_access_token(account_id="acct-pat", plan_type="team")
    write_auth_json(home, {"OPENAI_API_KEY": None, "personal_access_token": token})
    assert await describe(home) == "personalAccessToken: account acct-pat, plan team"
    shutil.copy(GOLDEN / "agent_identity.auth.json", home / "auth.json")
    assert await describe(home) == (
        f"unusable here: The login in {home / 'auth.json'} is an `agentIdentity` login, which "
        "aioscopedauth cannot send requests with. Use the Codex CLI for it, or log in with an "
        "API key or ChatGPT."
    )


async def test_provider_command(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-base"))
    script = write_token_script(home / "tools", "gateway-token")
    (home / "config.toml").write_text(
        '[model_providers.corp]\nname = "Corp"\n'
        '[model_providers.corp.auth]\ncommand = "./print-token.sh"\ncwd = "tools"\n'
    )
    seen: list[str] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner, url = await serve_on_loopback(app)
    try:
        await _load("provider_command").main(home, url)
    finally:
        await runner.cleanup()
    assert capsys.readouterr().out == "gateway: 200\n"
    assert seen == ["Bearer gateway-token"]
    assert script.runs == 1


def test_provider_from_code() -> None:
    base = AuthManager(MemoryAuthStore(), OAuthConfig("http://127.0.0.1:9/t", "c"))
    derived = _load("provider_command").from_code(base)
    assert derived.mode is AuthMode.BEARER
    command = derived.external_auth.command
    assert (command.program(), command.refresh_interval, dict(command.env)) == (
        "/opt/tools/mint-token.sh",
        0,
        {"AUDIENCE": "api"},
    )


async def test_keyring_store(
    home: Path, memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str]
) -> None:
    await _load("keyring_store").main(home)
    assert capsys.readouterr().out == "stored in the keyring: True\n"
    # Stored in the keyring, never in a file, and removed again at the end.
    assert memory_keyring.calls.count("set") == 1
    assert memory_keyring.entries == {}
    assert not (home / "auth.json").exists()


async def test_upload_file(tmp_path: Path, home: Path, server: FakeAuthServer) -> None:
    upload = tmp_path / "report.csv"
    upload.write_text("id,value\n" + "".join(f"{i},{i * i}\n" for i in range(20_000)))
    write_auth_json(home, server.login())
    server.revoke_access_tokens()
    config = OAuthConfig(server.token_url, server.client_id)
    assert await _load("upload_file").upload(home, config, server.url, upload) == 200
    assert (server.api_rejections, server.refreshes) == (1, 1)
    received = server.last_api_request
    assert received is not None
    assert (received["method"], received["path"]) == ("PUT", "/api/files/report.csv")
    assert received["body"] == upload.read_bytes()
    assert received["headers"]["Content-Type"] == "text/csv"


@pytest.mark.parametrize(
    "ini",
    [
        "[pytest]\n",  # like a user's project: pytest-asyncio's defaults (strict mode)
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
    ],
    ids=["default-strict", "auto"],
)
def test_testing_examples_pass_in_a_fresh_project(pytester: pytest.Pytester, ini: str) -> None:
    # The testing how-to's two files, copied as a user would: the test, and the conftest.
    shutil.copy(EXAMPLES / "test_with_the_kit.py", pytester.path / "test_with_the_kit.py")
    shutil.copy(EXAMPLES / "leak_guard_conftest.py", pytester.path / "conftest.py")
    pytester.makeini(ini)
    # Every warning is an error, except pytest-asyncio's own nag about its unset loop scope.
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-W",
        "default::pytest.PytestDeprecationWarning",
        timeout=120,
    )
    result.assert_outcomes(passed=1)


def test_readme_python_compiles_and_uses_real_names() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "aioscopedauth":
                for alias in node.names:
                    assert hasattr(aioscopedauth, alias.name), alias.name


async def test_the_tutorial_leaves_nothing_in_the_temp_folder(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    async with spawned(
        sys.executable,
        str(EXAMPLES / "tutorial.py"),
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    ) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    assert out.decode() == "first call: 200\nafter a revoke: 200\ntoken refreshes: 1\n"
    assert list(temp.iterdir()) == []
