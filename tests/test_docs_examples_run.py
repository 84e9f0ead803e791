"""Every example of the docs, run as its page says (`python docs/examples/X.py ARGS`).

Each runs in a child process from the source folder, with ``HOME``, ``TMPDIR`` and the XDG
folders pointed at this test's temporary folders and no ``CODEX_HOME`` unless the test sets
one, and must write nothing outside them: the real home's ``.codex`` and the source folder are
compared before and after, and the temporary folder must be left empty. No example may touch
a real keyring: the child's keyring backend is the failing one, or the tests' in-memory one.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from aioscopedauth import AuthDotJson
from aioscopedauth.testing import serve_on_loopback, write_auth_json, write_token_script

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aioscopedauth.testing import RedisServer

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden"
TESTS = Path(__file__).parent
NO_KEYRING = "keyring.backends.fail.Keyring"
_DROPPED = ("CODEX_", "OPENAI_", "AIOSCOPEDAUTH_", "PYTHON_KEYRING_BACKEND")


class Sandbox:
    """Temporary HOME, TMPDIR and XDG folders for one run, and the environment naming them."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.temp = root / "temp"
        for folder in (self.home, self.temp, root / "xdg-config", root / "xdg-data"):
            folder.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
        self.env.update(
            HOME=str(self.home),
            TMPDIR=str(self.temp),
            XDG_CONFIG_HOME=str(root / "xdg-config"),
            XDG_DATA_HOME=str(root / "xdg-data"),
            PYTHON_KEYRING_BACKEND=NO_KEYRING,
        )

    async def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run ``python ARGS`` from the source folder, as a page says to."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        assert "Traceback" not in err.decode(), err.decode()
        return proc.returncode, out.decode(), err.decode()


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    if not folder.is_dir():
        return {}
    found: dict[str, tuple[int, int]] = {}
    for path in folder.rglob("*"):
        if "__pycache__" in path.parts or ".git" in path.parts or ".nox" in path.parts:
            continue
        try:
            info = path.lstat()
        except FileNotFoundError:  # a file another test (of another process) just removed
            continue
        found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    real_codex = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".codex"
    watched = [real_codex, ROOT / "docs", ROOT / "README.md"]
    before = [_state(real_codex), _state(ROOT / "docs"), sorted(p.name for p in ROOT.iterdir())]
    box = Sandbox(tmp_path)
    yield box
    after = [_state(real_codex), _state(ROOT / "docs"), sorted(p.name for p in ROOT.iterdir())]
    assert after == before, f"an example wrote outside its temporary folders: {watched}"
    assert list(box.temp.iterdir()) == [], "an example left a temporary folder behind"


async def test_tutorial(sandbox: Sandbox) -> None:
    # docs/tutorial.md: `python docs/examples/tutorial.py`
    assert await sandbox.run("docs/examples/tutorial.py") == (
        0,
        "first call: 200\nafter a revoke: 200\ntoken refreshes: 1\n",
        "",
    )


async def test_codex_login_reads_the_login_and_writes_nothing(sandbox: Sandbox) -> None:
    # docs/howto/codex-login.md: `python docs/examples/codex_login.py` (reads ~/.codex, in bold)
    example = "docs/examples/codex_login.py"
    assert await sandbox.run(example) == (0, "Not logged in: run `codex login` first.\n", "")
    home = sandbox.home / ".codex"
    write_auth_json(home, AuthDotJson.from_json((GOLDEN / "chatgpt.auth.json").read_text()))
    stored = (home / "auth.json").read_bytes()
    assert await sandbox.run(example) == (
        0,
        "chatgpt login, account org-golden, email user@example.com\n",
        "",
    )
    assert (home / "auth.json").read_bytes() == stored
    other = sandbox.home / "elsewhere"
    write_auth_json(other, AuthDotJson.for_api_key("sk-elsewhere"))
    assert await sandbox.run(example, env={"CODEX_HOME": str(other)}) == (
        0,
        "apikey login, account None, email None\n",
        "",
    )


async def test_login_shapes_describes_the_login_of_codex_home(sandbox: Sandbox) -> None:
    # docs/howto/codex-login.md: `python docs/examples/login_shapes.py`
    example = "docs/examples/login_shapes.py"
    assert await sandbox.run(example) == (0, "not logged in\n", "")
    other = sandbox.home / "elsewhere"
    write_auth_json(other, AuthDotJson.for_api_key("sk-elsewhere"))
    assert await sandbox.run(example, env={"CODEX_HOME": str(other)}) == (
        0,
        "apikey: account None, plan None\n",
        "",
    )
    shutil.copy(GOLDEN / "agent_identity.auth.json", other / "auth.json")
    code, out, _ = await sandbox.run(example, env={"CODEX_HOME": str(other)})
    assert (code, out.split(":")[0]) == (0, "unusable here")


async def test_keyring_store_without_a_keyring_uses_a_temporary_home(sandbox: Sandbox) -> None:
    # docs/howto/keyring.md: `python docs/examples/keyring_store.py` on a server: no backend.
    code, out, err = await sandbox.run("docs/examples/keyring_store.py")
    assert (code, out) == (
        0,
        "stored in the keyring: False (there is none here; auth.json was used)\n",
    )
    assert err.startswith("Keyring save failed, writing ")
    assert str(sandbox.temp) in err  # the fallback file was in the temporary home
    assert not (sandbox.home / ".codex").exists()


async def test_keyring_store_with_a_keyring_removes_its_entry(sandbox: Sandbox) -> None:
    # A real backend class (the tests' in-memory one, which lives in the child process): the
    # login is stored there, read back and removed, and no file is written.
    path = os.pathsep.join(filter(None, [str(TESTS), sandbox.env.get("PYTHONPATH")]))
    env = {"PYTHON_KEYRING_BACKEND": "support.MemoryKeyring", "PYTHONPATH": path}
    assert await sandbox.run("docs/examples/keyring_store.py", env=env) == (
        0,
        "stored in the keyring: True\n",
        "",
    )
    assert not (sandbox.home / ".codex").exists()  # not even the store's lock files


async def test_provider_command_as_its_page_says(sandbox: Sandbox) -> None:
    # docs/howto/provider-command.md: `python docs/examples/provider_command.py CODEX_HOME
    # GATEWAY_URL`; without them, its usage (not an IndexError).
    example = "docs/examples/provider_command.py"
    assert await sandbox.run(example) == (
        1,
        "",
        f"usage: python {example} CODEX_HOME GATEWAY_URL\n",
    )
    home = sandbox.home / "corp-home"
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
        assert await sandbox.run(example, str(home), url) == (0, "gateway: 200\n", "")
    finally:
        await runner.cleanup()
    assert seen == ["Bearer gateway-token"]
    assert script.runs == 1
    (sandbox.home / "config.toml").write_text('[model_providers.other]\nname = "Other"\n')
    code, _, err = await sandbox.run(example, str(sandbox.home), url)
    assert (code, err) == (1, f"No [model_providers.corp] in {sandbox.home / 'config.toml'}\n")
    code, _, err = await sandbox.run(example, str(sandbox.temp), url)
    assert code == 1
    assert err == (
        f"Could not read the config file {sandbox.temp / 'config.toml'}: No such file or "
        "directory\n"
    )


async def test_upload_file_as_its_page_says(sandbox: Sandbox) -> None:
    # docs/howto/uploads.md: `python docs/examples/upload_file.py README.md`
    example = "docs/examples/upload_file.py"
    size = (ROOT / "README.md").stat().st_size
    assert await sandbox.run(example, "README.md") == (
        0,
        f"PUT README.md: 200 after 1 401\nthe server received {size} bytes, sent twice from disk\n",
        "",
    )
    assert await sandbox.run(example) == (1, "", f"usage: python {example} FILE\n")


async def test_fleet_login_as_its_page_says(sandbox: Sandbox, redis_server: RedisServer) -> None:
    # docs/howto/fleet.md: `python docs/examples/fleet_login.py redis://localhost:6379/0`, with
    # the session's real server in place of that URL.
    import redis.asyncio as aioredis  # noqa: PLC0415 -- the redis extra, only for this test

    example = "docs/examples/fleet_login.py"
    assert await sandbox.run(example, redis_server.url) == (
        0,
        "host B adopted host A's new token: True (reload)\nboth hosts send the same token: True\n",
        "",
    )
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        left = [key async for key in client.scan_iter("aioscopedauth:{fleet-example-*")]
    finally:
        await client.aclose()
    assert left == []  # the example deleted the login it put in Redis
    assert await sandbox.run(example) == (1, "", f"usage: python {example} REDIS_URL\n")
