"""``aioscopedauth.toml``'s ``[oauth_providers.NAME]`` tables, and the command line's use of them.

What needs no provider: the file's checks (a secret in it is refused, without echoing it),
where the secret comes from, where the login is kept, the usage errors of ``login``, and an
offline ``status``. The logins themselves run against the real provider in
``tests/oidc/test_cli_oauth.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import ConfigError
from aioscopedauth._oauth_providers import (
    KEYRING_SERVICE,
    OAuthProvider,
    client_secret,
    load_oauth_providers,
    oauth_config,
    parse_oauth_providers,
)

from processes import spawned

if TYPE_CHECKING:
    from support import MemoryKeyring

SCRIPT = shutil.which("aioscopedauth", path=str(Path(sys.executable).parent)) or "aioscopedauth"
SECRET = "s3cret-CANARY-client"
UNREACHABLE = "http://127.0.0.1:9"


async def _run(*args: str, home: Path, **extra: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BROWSER"}
    async with spawned(
        SCRIPT,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**env, "CODEX_HOME": str(home), **extra},
    ) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "aioscopedauth.toml"
    path.write_text(text)
    return path


def test_a_table_is_read() -> None:
    providers = parse_oauth_providers(
        {
            "oauth_providers": {
                "corp": {
                    "issuer": "https://login.example.test",
                    "client_id": "cli",
                    "scopes": "openid offline_access",
                    "client_secret_env": "CORP_SECRET",
                    "api_base_url": "https://api.example.test/v1",
                    "redirect_port": 8765,
                }
            }
        }
    )
    assert providers == {
        "corp": OAuthProvider(
            name="corp",
            client_id="cli",
            issuer="https://login.example.test",
            scopes=("openid", "offline_access"),
            client_secret_env="CORP_SECRET",
            api_base_url="https://api.example.test/v1",
            redirect_port=8765,
        )
    }
    assert providers["corp"].secret_source == "$CORP_SECRET"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"token_url": "https://x.test/token", "client_id": "c", "client_secret": SECRET},
            (
                "oauth_providers.corp: client_secret is refused: a secret is never read from this "
                'file; name the environment variable that holds it with client_secret_env = "VAR", '
                "or keep it in the system keyring with client_secret_keyring = true"
            ),
        ),
        (
            {"client_id": "c"},
            "oauth_providers.corp: give issuer (its endpoints are discovered) or token_url",
        ),
        ({"issuer": "https://x.test"}, "oauth_providers.corp: client_id is required"),
        (
            {"issuer": "https://x.test", "client_id": "c", "scope": "openid"},
            (
                "oauth_providers.corp: unknown key 'scope' (known: api_base_url, "
                "authorization_url, client_auth, client_id, client_secret_env, "
                "client_secret_keyring, device_authorization_url, issuer, redirect_port, "
                "revocation_url, scopes, token_url)"
            ),
        ),
        (
            {
                "issuer": "https://x.test",
                "client_id": "c",
                "client_secret_env": "V",
                "client_secret_keyring": True,
            },
            "oauth_providers.corp: give client_secret_env or client_secret_keyring, not both",
        ),
        (
            {"issuer": "https://x.test", "client_id": "c", "redirect_port": 70000},
            "oauth_providers.corp: redirect_port must be a port number (0: any free port)",
        ),
    ],
)
def test_a_bad_table_is_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_oauth_providers({"oauth_providers": {"corp": table}})
    assert str(caught.value) == message
    assert SECRET not in str(caught.value)


def test_a_missing_file_has_no_providers(tmp_path: Path) -> None:
    assert load_oauth_providers(tmp_path / "aioscopedauth.toml") == {}


async def test_the_secret_comes_from_the_environment() -> None:
    provider = OAuthProvider(
        name="corp",
        client_id="c",
        token_url="https://x.test/token",
        client_secret_env="CORP_SECRET",
    )
    assert await client_secret(provider, {"CORP_SECRET": f" {SECRET}\n"}) == SECRET
    with pytest.raises(ConfigError) as caught:
        await client_secret(provider, {})
    assert str(caught.value) == (
        "oauth_providers.corp: the client secret is read from $CORP_SECRET, which is not set; "
        "export it"
    )
    config = await oauth_config(provider, {"CORP_SECRET": SECRET})
    assert (config.token_url, config.client_id, config.client_secret) == (
        "https://x.test/token",
        "c",
        SECRET,
    )
    assert (config.dialect, config.client_auth) == ("rfc6749", "client_secret_basic")
    assert SECRET not in repr(config)


async def test_the_secret_comes_from_the_keyring(memory_keyring: MemoryKeyring) -> None:
    provider = OAuthProvider(
        name="corp", client_id="c", token_url="https://x.test/token", client_secret_keyring=True
    )
    with pytest.raises(ConfigError) as caught:
        await client_secret(provider)
    assert str(caught.value) == (
        "oauth_providers.corp: the system keyring holds no client secret; store it with "
        f"`keyring set {KEYRING_SERVICE} corp`"
    )
    memory_keyring.entries[(KEYRING_SERVICE, "corp")] = SECRET
    assert await client_secret(provider) == SECRET


async def test_a_secret_in_the_file_is_refused_by_every_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _write(
        home,
        f'[oauth_providers.corp]\ntoken_url = "{UNREACHABLE}/token"\nclient_id = "c"\n'
        f'client_secret = "{SECRET}"\n',
    )
    for command in ("status", "token", "login"):
        code, out, err = await _run(command, "--provider", "corp", home=home)
        assert (code, out) == (1, ""), command
        assert err.startswith(f"aioscopedauth: {path}: oauth_providers.corp: client_secret is ")
        assert SECRET not in err


async def test_login_usage_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out, err = await _run("login", home=home)
    assert (code, out, err) == (
        2,
        "",
        (
            "aioscopedauth: error: say how to log in: --api-key (a key on stdin), or --provider "
            "NAME for an OAuth provider\n"
        ),
    )
    code, out, err = await _run("login", "--device", home=home)
    assert (code, out, err) == (
        2,
        "",
        (
            "aioscopedauth: error: --device needs --provider NAME, an [oauth_providers.NAME] of "
            "the --oauth-config file\n"
        ),
    )
    _write(home, f'[oauth_providers.corp]\ntoken_url = "{UNREACHABLE}/token"\nclient_id = "c"\n')
    code, out, err = await _run("login", "--provider", "corp", "--api-key", home=home)
    assert (code, out, err) == (
        2,
        "",
        (
            "aioscopedauth: error: --api-key is for the Codex login; provider 'corp' logs in "
            "with a browser (the default), --device or --client-credentials\n"
        ),
    )
    code, _, err = await _run("login", "--device", "--client-credentials", home=home)
    assert code == 2
    assert "not allowed with argument" in err
    assert not (home / "auth.json").exists()


async def test_status_is_offline_and_says_how_to_log_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    other = tmp_path / "elsewhere.toml"
    other.write_text(
        f'[oauth_providers.corp]\nissuer = "{UNREACHABLE}"\nclient_id = "cli"\n'
        'client_secret_env = "CORP_SECRET"\nscopes = ["openid"]\n'
    )
    # The provider is unreachable and its secret unset: status reads the store only.
    code, out, err = await _run(
        "status", "--provider", "corp", "--oauth-config", str(other), home=home
    )
    assert (code, err) == (1, "")
    where = home / "providers" / "corp" / "auth.json"
    assert out == (
        f"Not logged in (looked in {where}).\n"
        "  To log in with `aioscopedauth login --provider corp` (a browser; --device or "
        "--client-credentials for those logins).\n"
        "OAuth provider corp\n"
        f"  issuer        {UNREACHABLE}\n"
        "  client        cli\n"
        "  scopes        openid\n"
        "  secret from   $CORP_SECRET\n"
    )
    code, out, err = await _run(
        "status", "--json", "--provider", "corp", "--oauth-config", str(other), home=home
    )
    assert (code, err) == (1, "")
    facts = json.loads(out)
    assert facts["oauth_provider"] == {
        "name": "corp",
        "issuer": UNREACHABLE,
        "token_url": None,
        "client_id": "cli",
        "client_auth": None,
        "scopes": ["openid"],
        "client_secret_from": "$CORP_SECRET",
        "api_base_url": None,
    }
    assert facts["path"] == str(where)
    assert not home.exists() or not (home / "auth.json").exists()
