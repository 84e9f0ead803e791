"""The tutorial "Log in to your own OAuth provider": its example, run as the page says.

``docs/examples/oauth_login.py`` runs in a subprocess against the real provider, once per
login kind: the device flow (the user approves from what it printed), the browser flow (the
system browser is ``$BROWSER``, here ``echo``, so the test sees the URL and plays the browser),
and client credentials. A second run finds the login in HOME and logs in no more.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from oidc.harness import BASIC, NATIVE, SERVICE

if TYPE_CHECKING:
    from oidc.harness import OidcProvider

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "oauth_login.py"
DEADLINE = 60.0


async def _start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), DEADLINE)).decode()


async def _rest(proc: asyncio.subprocess.Process) -> str:
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def _run(*args: str, env: dict[str, str] | None = None) -> str:
    return await _rest(await _start(*args, env=env))


async def test_device(oidc: OidcProvider, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    args = ("device", oidc.issuer, NATIVE, home, oidc.resource_url)
    proc = await _start(*args)
    try:
        first = await _line(proc)
        found = re.fullmatch(r"To log in, open (\S+) and enter the code (\S+)\n", first)
        assert found is not None, first
        await oidc.approve_device(found.group(1))
    finally:
        out = await _rest(proc)
    assert out == f"logged in\n{oidc.resource_url}: 200\n"
    assert await _run(*args) == f"{oidc.resource_url}: 200\n"


async def test_browser(oidc: OidcProvider, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    args = ("browser", oidc.issuer, NATIVE, home, oidc.resource_url)
    proc = await _start(*args, env={"BROWSER": "echo %s"})
    try:
        url = (await _line(proc)).strip()
        assert url.startswith(f"{oidc.issuer}/auth?"), url
        status, page = await oidc.open_in_browser(url)
        assert status == 200
        assert "You may close this window" in page
    finally:
        out = await _rest(proc)
    assert out == f"logged in\n{oidc.resource_url}: 200\n"
    assert await _run(*args) == f"{oidc.resource_url}: 200\n"


async def test_confidential_device_client(oidc: OidcProvider, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    env = {"OAUTH_CLIENT_SECRET": BASIC[1]}
    proc = await _start("device", oidc.issuer, BASIC[0], home, oidc.resource_url, env=env)
    try:
        found = re.search(r"open (\S+) and", await _line(proc))
        assert found is not None
        await oidc.approve_device(found.group(1))
    finally:
        out = await _rest(proc)
    assert out == f"logged in\n{oidc.resource_url}: 200\n"


async def test_service(oidc: OidcProvider, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    args = ("service", oidc.issuer, SERVICE[0], home, oidc.resource_url)
    env = {"OAUTH_CLIENT_SECRET": SERVICE[1]}
    assert await _run(*args, env=env) == f"logged in\n{oidc.resource_url}: 200\n"
    assert await _run(*args, env=env) == f"{oidc.resource_url}: 200\n"
