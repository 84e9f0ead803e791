"""``aioscopedauth --provider NAME`` for an OAuth provider of ``aioscopedauth.toml``.

The real console script in a subprocess, against the real provider: a device login approved
through the provider's own pages, a browser login whose ``$BROWSER`` is a script playing the
user (``browser.py``), a client-credentials login; then ``status``, ``token``, ``refresh``,
``request`` and ``logout`` on each. Exact outputs and exit codes; the client secret is never
printed, the tokens only by ``token``; Codex's own files are never written.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aioscopedauth._model import format_rfc3339
from oidc.harness import BASIC, NATIVE, SERVICE, OidcProvider

from processes import spawned

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

SCRIPT = shutil.which("aioscopedauth", path=str(Path(sys.executable).parent)) or "aioscopedauth"
BROWSER = Path(__file__).with_name("browser.py")
SECRET_ENV = "AIOSCOPEDAUTH_TEST_CLIENT_SECRET"
CODEX_CONFIG = '# the user\'s own Codex config, only ever read\nmodel = "o3"\n'
DEADLINE = 120.0


def _write_config(home: Path, oidc: OidcProvider, name: str, **table: object) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(CODEX_CONFIG)
    lines = [f"[oauth_providers.{name}]", f"issuer = {json.dumps(oidc.issuer)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    (home / "aioscopedauth.toml").write_text("\n".join(lines) + "\n")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BROWSER"}
    return {**env, "CODEX_HOME": str(home), **extra}


async def _run(*args: str, env: Mapping[str, str]) -> tuple[int, str, str]:
    async with spawned(
        SCRIPT,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    ) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _stored(home: Path, name: str) -> dict[str, object]:
    path = home / "providers" / name / "auth.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    doc: dict[str, object] = json.loads(path.read_text())
    return doc


def _tokens(home: Path, name: str) -> dict[str, str]:
    tokens = _stored(home, name)["tokens"]
    assert isinstance(tokens, dict)
    return tokens


def _codex_untouched(home: Path) -> None:
    assert (home / "config.toml").read_text() == CODEX_CONFIG
    assert not (home / "auth.json").exists()


async def _device_login(oidc: OidcProvider, env: Mapping[str, str]) -> list[str]:
    """Run ``login --device``, approve the code it prints as the user would; its stdout lines."""
    async with spawned(
        SCRIPT,
        "login",
        "--provider",
        "corp",
        "--device",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines: list[str] = []
        async with asyncio.timeout(DEADLINE):
            while not (line := (await proc.stdout.readline()).decode()).startswith("  (or open"):
                assert line, (lines, await proc.stderr.read())
                lines.append(line)
            lines.append(line)
            link = line.removeprefix("  (or open ").removesuffix(")\n")
            await oidc.approve_device(link)
            rest, err = await proc.communicate()
        assert (proc.returncode, err.decode()) == (0, "")
    return lines + rest.decode().splitlines(keepends=True)


async def test_device_login_then_every_command(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _write_config(
        home,
        oidc,
        "corp",
        client_id=BASIC[0],
        client_secret_env=SECRET_ENV,
        scopes=["openid", "offline_access"],
        api_base_url=oidc.issuer,
    )
    env = _env(home, **{SECRET_ENV: BASIC[1]})
    lines = await _device_login(oidc, env)
    prompt = rf"To log in, open {re.escape(oidc.issuer)}/device and enter the code "
    assert re.fullmatch(prompt + r"[A-Z]{4}-[A-Z]{4}\n", lines[0]), lines
    assert lines[1].startswith(f"  (or open {oidc.issuer}/device?user_code=")
    assert lines[2:] == [
        "Waiting for the approval (the code expires in 120 s)...\n",
        f"Logged in at corp with a device code (saved to {home / 'providers/corp/auth.json'}).\n",
    ]
    first = _tokens(home, "corp")
    _codex_untouched(home)

    code, out, err = await _run("status", "--provider", "corp", env=env)
    assert (code, err) == (0, "")
    assert out.startswith("Logged in with an OAuth provider's login\n")
    assert f"  store         file: {home / 'providers/corp/auth.json'}\n" in out
    assert "  subject       alice\n" in out
    assert "  grant         device_code\n" in out
    # The provider's access tokens are opaque: the expiry shown is the one the login stored.
    assert re.search(r"\n  access token  expires 20\S+Z \(in 5\ds\)\n", out), out
    assert f"  secret from   ${SECRET_ENV}\n" in out
    assert f"  client        {BASIC[0]}\n" in out
    for secret in (BASIC[1], first["access_token"], first["refresh_token"]):
        assert secret not in out

    code, out, err = await _run("token", "--provider", "corp", env=env)
    assert (code, out, err) == (0, first["access_token"] + "\n", "")

    code, out, err = await _run("refresh", "--provider", "corp", env=env)
    assert (code, err) == (0, "")
    assert out.startswith("Refreshed at the token endpoint: the access token now expires 20")
    second = _tokens(home, "corp")
    assert second["refresh_token"] != first["refresh_token"]  # rotated, and kept
    assert BASIC[1] not in out

    code, out, err = await _run("request", "--provider", "corp", oidc.resource_url, env=env)
    assert (code, err) == (0, "HTTP 200 OK\n")
    assert json.loads(out)["sub"] == "alice"
    assert await oidc.introspect(second["refresh_token"]) != {"active": False}

    code, out, err = await _run("logout", "--provider", "corp", env=env)
    assert (code, out, err) == (0, "Logged out.\n", "")
    assert await oidc.introspect(second["refresh_token"]) == {"active": False}  # revoked
    assert not (home / "providers" / "corp" / "auth.json").exists()

    code, out, err = await _run("token", "--provider", "corp", env=env)
    assert (code, out) == (1, "")
    assert err == (
        f"aioscopedauth: not logged in (looked in {home / 'providers/corp/auth.json'}); log in "
        "with `aioscopedauth login --provider corp` (a browser; --device or "
        "--client-credentials for those logins)\n"
    )
    _codex_untouched(home)
    stats = await oidc.stats()
    assert stats["reuseDetections"] == 0


async def test_browser_login(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _write_config(home, oidc, "web", client_id=NATIVE, scopes="openid offline_access")
    landed = tmp_path / "landed.txt"
    env = _env(
        home,
        BROWSER=f"{sys.executable} {BROWSER} %s",
        AIOSCOPEDAUTH_TEST_LANDED=str(landed),
    )
    code, out, err = await _run("login", "--provider", "web", env=env)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        "To log in, open this URL in a browser (opening it now if one is available):"
    )
    assert lines[1].startswith(f"  {oidc.issuer}/auth?response_type=code&client_id=native-client&")
    assert lines[2:] == [
        f"Logged in at web in the browser (saved to {home / 'providers/web/auth.json'}).",
    ]
    assert landed.read_text().startswith("200 <!DOCTYPE html>")
    assert "You are logged in. You may close this window" in landed.read_text()
    tokens = _tokens(home, "web")
    assert await oidc.call_resource(tokens["access_token"]) == 200

    # No api_base_url: `request` sends the login only where --origin allows it.
    code, out, err = await _run("request", "--provider", "web", oidc.resource_url, env=env)
    assert (code, out) == (2, "")
    assert err == (
        f"aioscopedauth: error: refusing to send the login to {oidc.issuer}: it is not one of "
        f"the login's origins (none); pass --origin {oidc.issuer} to allow it\n"
    )
    code, out, err = await _run(
        "request", "--provider", "web", "--origin", oidc.issuer, oidc.resource_url, env=env
    )
    assert (code, err) == (0, "HTTP 200 OK\n")
    _codex_untouched(home)


async def test_client_credentials_login(oidc: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _write_config(
        home,
        oidc,
        "svc",
        client_id=SERVICE[0],
        client_secret_env=SECRET_ENV,
        scopes=["api:read"],
        api_base_url=oidc.issuer,
    )
    env = _env(home, **{SECRET_ENV: SERVICE[1]})
    code, out, err = await _run("login", "--provider", "svc", "--client-credentials", env=env)
    assert (code, out, err) == (
        0,
        (
            f"Logged in at svc with the client's credentials (saved to "
            f"{home / 'providers/svc/auth.json'}).\n"
        ),
        "",
    )
    first = _tokens(home, "svc")
    assert "refresh_token" not in first or not first["refresh_token"]
    code, out, err = await _run("token", "--provider", "svc", env=env)
    assert (code, out, err) == (0, first["access_token"] + "\n", "")
    assert await oidc.call_resource(first["access_token"], scope="api:read") == 200

    code, out, err = await _run("refresh", "--provider", "svc", env=env)
    assert (code, err) == (0, "")
    assert out.startswith("Refreshed at the token endpoint: the access token now expires 20")
    assert _tokens(home, "svc")["access_token"] != first["access_token"]  # minted again

    # Without its secret the command says where it looked, and sends nothing.
    bare = {k: v for k, v in env.items() if k != SECRET_ENV}
    code, out, err = await _run("token", "--provider", "svc", env=bare)
    assert (code, out, err) == (
        1,
        "",
        (
            f"aioscopedauth: oauth_providers.svc: the client secret is read from ${SECRET_ENV}, "
            "which is not set; export it\n"
        ),
    )
    _codex_untouched(home)


def _age(home: Path, name: str, *, expires_in: int, issued_ago: int) -> None:
    """Rewrite the stored login's expiry and last refresh (as if time had passed)."""
    path = home / "providers" / name / "auth.json"
    doc = json.loads(path.read_text())
    now = datetime.now(UTC)
    doc["tokens"]["expires_at"] = format_rfc3339(now + timedelta(seconds=expires_in))
    doc["last_refresh"] = format_rfc3339(now - timedelta(seconds=issued_ago))
    path.write_text(json.dumps(doc))


async def test_token_never_prints_a_dead_token(
    start_oidc: Callable[..., OidcProvider], tmp_path: Path
) -> None:
    oidc = start_oidc()
    home = tmp_path / "home"
    home.mkdir()
    # Its endpoints, no issuer: nothing is discovered, so only the refresh meets the outage.
    (home / "aioscopedauth.toml").write_text(
        "[oauth_providers.svc]\n"
        f'token_url = "{oidc.token_url}"\n'
        f'client_id = "{SERVICE[0]}"\n'
        f'client_secret_env = "{SECRET_ENV}"\n'
        'scopes = "api:read"\n'
    )
    env = _env(home, **{SECRET_ENV: SERVICE[1]})
    code, _, err = await _run("login", "--provider", "svc", "--client-credentials", env=env)
    assert (code, err) == (0, "")
    token = _tokens(home, "svc")["access_token"]
    oidc.stop()  # the token endpoint is down from here on

    # Due (inside its refresh window) but alive: printed, with how long it has left.
    _age(home, "svc", expires_in=100, issued_ago=3500)
    code, out, err = await _run("token", "--provider", "svc", env=env)
    assert (code, out) == (0, token + "\n")
    left = r"\(printed the current token: 1m [34]\ds left\)"
    assert re.fullmatch(rf"aioscopedauth: warning: .+ {left}\n", err), err
    assert SERVICE[1] not in err

    # Expired, and the refresh fails: nothing on stdout, one error, exit 1.
    _age(home, "svc", expires_in=-5, issued_ago=3605)
    code, out, err = await _run("token", "--provider", "svc", env=env)
    assert (code, out) == (1, "")
    assert err.startswith("aioscopedauth: ")
    assert err.endswith(" (the access token has expired; try again later)\n")
    assert err.count("\n") == 1
    assert SERVICE[1] not in err
    assert token not in err
