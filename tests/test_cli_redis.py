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

from aioscopedauth._cli_support import shown_url
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
    assert "CANARY-cli-pw" not in err
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


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://fleet:CANARY-cli-pw@h:abc/0", "the port must be a number from 1 to 65535"),
        ("redis://h:99999/0", "the port must be a number from 1 to 65535"),
        ("redis://[::1", "it cannot be parsed (an unclosed '[' around an IPv6 address?)"),
    ],
)
@pytest.mark.parametrize("source", ["option", "environment"])
async def test_a_bad_redis_url_is_a_usage_error_in_one_line(
    tmp_path: Path, url: str, problem: str, source: str
) -> None:
    args = ("--home", str(tmp_path), "--store", "redis")
    if source == "option":
        code, out, err = await _run(*args, "--redis-url", url, "status")
    else:
        code, out, err = await _run(*args, "status", env={"AIOSCOPEDAUTH_REDIS_URL": url})
    assert (code, out) == (2, "")
    given_as = "--redis-url" if source == "option" else "$AIOSCOPEDAUTH_REDIS_URL"
    assert err == (
        f"aioscopedauth: error: {given_as} {shown_url(url)!r}: Bad Redis URL: {problem}. "
        "Write it as redis://[user:password@]"
        "host:port/db (or rediss://, unix:///path, redis+sentinel://[user:password@]host:port,"
        "host:port/SERVICE/db), with special characters in the user and password "
        "percent-encoded\n"
    )
    assert not list(tmp_path.iterdir())


async def test_a_bad_redis_name_or_key_is_a_usage_error(tmp_path: Path) -> None:
    args = ("--home", str(tmp_path), "--store", "redis", "--redis-url", "redis://h:1/0")
    code, out, err = await _run(*args, "--redis-name", "a b", "status")
    assert (code, out) == (2, "")
    assert err.startswith("aioscopedauth: error: Bad Redis login name 'a b': ")
    assert len(err.splitlines()) == 1
    code, out, err = await _run(*args, "status", env={"AIOSCOPEDAUTH_REDIS_KEY": "abc"})
    assert (code, out, err) == (
        2,
        "",
        "aioscopedauth: error: AIOSCOPEDAUTH_REDIS_KEY must be 64 hex digits (32 bytes)\n",
    )


def _children(pid: int) -> dict[int, bytes]:
    """The command lines of ``pid``'s children (read from /proc, as ``ps`` does)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc, as ps does")
async def test_the_fleet_demo_never_puts_the_redis_password_on_a_command_line() -> None:
    password = "CANARY-demo-redis-password-5e1"
    with RedisServer(password=password) as server:
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        proc = await asyncio.create_subprocess_exec(
            SCRIPT, "demo", "--hosts", "2", "--agents", "1", "--seconds", "4",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "AIOSCOPEDAUTH_REDIS_URL": url},
        )  # fmt: skip
        try:
            hosts: dict[int, bytes] = {}
            communicate = asyncio.ensure_future(proc.communicate())
            # Look at the hosts while they run (the demo waits for them for 4 s).
            while len(hosts) < 2 and not communicate.done():  # /proc has no event to wait on
                hosts.update(
                    (pid, line)
                    for pid, line in _children(proc.pid).items()
                    if b"aioscopedauth._fleet_demo" in line
                )
                await asyncio.sleep(0.05)
            out, err = await asyncio.wait_for(communicate, 120)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    assert len(hosts) == 2, (out + err).decode()[-2000:]
    for line in hosts.values():
        assert password.encode() not in line
        assert b"redis://" not in line
    assert proc.returncode == 0, (out + err).decode()[-2000:]
    assert password.encode() not in out + err
    assert b"PASS: every request on every host succeeded" in out


async def test_an_oauth_providers_login_has_its_own_redis_name(
    redis_server: RedisServer, redis_name: str, tmp_path: Path
) -> None:
    (tmp_path / "aioscopedauth.toml").write_text(
        '[oauth_providers.corp]\ntoken_url = "http://127.0.0.1:9/token"\nclient_id = "c"\n'
    )
    redis = ("--home", str(tmp_path), "--store", "redis", "--redis-url", redis_server.url)
    code, out, _ = await _run(*redis, "--provider", "corp", "status")
    assert code == 1
    # Never the Codex login's own name (`default`): the provider's.
    assert out.startswith(f"Not logged in (looked in {redis_server.url}, name oauth-corp).\n")
    code, out, _ = await _run(*redis, "--provider", "corp", "--redis-name", redis_name, "status")
    assert code == 1
    assert out.startswith(f"Not logged in (looked in {redis_server.url}, name {redis_name}).\n")
