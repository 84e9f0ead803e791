"""The console script with ``--store redis``, and the fleet demo, against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import FakeAuthServer, RedisServer

from processes import spawned

SCRIPT = shutil.which("aioscopedauth", path=str(Path(sys.executable).parent)) or "aioscopedauth"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"


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


async def test_every_command_works_on_a_redis_store(
    redis_server: RedisServer, redis_name: str, tmp_path: Path
) -> None:
    redis = ("--home", str(tmp_path), "--store", "redis", "--redis-url", redis_server.url)
    named = (*redis, "--redis-name", redis_name)
    code, out, err = await _run(*named, "login", "--api-key", stdin=b"sk-CANARY-apikey-7f3e9d1c\n")
    assert (code, err) == (0, "")
    assert out == f"Logged in with an API key (saved to {redis_server.url}, name {redis_name}).\n"
    code, out, _ = await _run(*named, "status", "--json")
    facts = json.loads(out)
    assert (code, facts["store"], facts["mode"]) == (0, "redis", "apikey")
    assert (facts["redis"], facts["name"]) == (redis_server.url, redis_name)
    code, out, _ = await _run(*named, "status")
    assert out.startswith("Logged in with an API key\n")
    assert f"store         redis: {redis_server.url}, name {redis_name}" in out
    assert "CANARY" not in out
    code, out, _ = await _run(*named, "token")
    assert (code, out) == (0, "sk-CANARY-apikey-7f3e9d1c\n")
    code, out, _ = await _run(*redis, "status")  # another name: another login
    assert code == 1
    assert out.startswith(f"Not logged in (looked in {redis_server.url}, name default).\n")
    code, out, _ = await _run(*named, "logout")
    assert (code, out) == (0, "Logged out.\n")
    async with RedisAuthStore.from_url(redis_server.url, name=redis_name) as store:
        assert await store.load() is None
    assert not list(tmp_path.iterdir())  # nothing was written to the home


async def test_refresh_with_a_sealed_redis_store(
    redis_server: RedisServer, redis_name: str, tmp_path: Path
) -> None:
    key = os.urandom(32)
    async with (
        FakeAuthServer(client_id=CODEX_CLIENT_ID) as server,
        RedisAuthStore.from_url(redis_server.url, name=redis_name, encryption_key=key) as store,
    ):
        await store.save(server.login())
        env = {
            "CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.token_url,
            "AIOSCOPEDAUTH_REDIS_URL": redis_server.url,
            "AIOSCOPEDAUTH_REDIS_KEY": key.hex(),
        }
        args = ("--home", str(tmp_path), "--store", "redis", "--redis-name", redis_name)
        code, out, err = await _run(*args, "refresh", env=env)
        assert (code, err) == (0, ""), err
        assert out.startswith("Refreshed at the token endpoint: the access token now expires")
        assert server.refreshes == 1
        code, _, err = await _run(*args, "status", env={**env, "AIOSCOPEDAUTH_REDIS_KEY": ""})
        assert code == 1
        assert "is encrypted: pass the fleet's encryption_key" in err


async def test_redis_without_a_url_is_a_clear_error(tmp_path: Path) -> None:
    env = {"AIOSCOPEDAUTH_REDIS_URL": ""}
    code, out, err = await _run("--home", str(tmp_path), "--store", "redis", "status", env=env)
    assert (code, out) == (2, "")  # a missing option is a usage error
    assert err == (
        "aioscopedauth: error: --store redis needs --redis-url URL (or $AIOSCOPEDAUTH_REDIS_URL)\n"
    )


@pytest.mark.slow
async def test_the_fleet_demo_passes_with_an_embedded_server() -> None:
    code, out, err = await _run("demo", "--hosts", "3", "--agents", "4", "--seconds", "5")
    assert code == 0, out + err
    assert "3 host processes x 4 agents for 5 s" in out
    assert "(embedded, restarted once mid-run)" in out
    assert "PASS: every request on every host succeeded and no refresh token was reused" in out
    total = re.search(r"^  total +(\d+) +(\d+) +(\d+)", out, flags=re.MULTILINE)
    assert total is not None
    requests, ok, failed = map(int, total.groups())
    assert requests == ok > 0
    assert failed == 0
    assert re.search(r"refresh tokens reused +0$", out, flags=re.MULTILINE)
    assert re.search(r"Redis restarts +1$", out, flags=re.MULTILINE)
