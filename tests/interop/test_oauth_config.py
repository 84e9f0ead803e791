"""Codex's ``config.toml`` stays valid under ``codex --strict-config`` with our providers.

The command line's OAuth providers live in ``aioscopedauth.toml`` beside it: the library only
reads Codex's file, never writes it, and Codex (which refuses unknown tables under
``--strict-config``) never sees ours.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

from test_oauth_providers import UNREACHABLE, _run, _write

from interop.harness import codex_binary

if TYPE_CHECKING:
    from pathlib import Path


def _codex_config_check(binary: Path, home: Path) -> dict[str, object]:
    # `doctor` is the one command that takes --strict-config and reads the config offline; its
    # JSON report says whether the config loaded cleanly (`status: ok`, no startup warning).
    done = subprocess.run(
        [binary, "--strict-config", "doctor", "--json"],
        capture_output=True,
        env={**os.environ, "CODEX_HOME": str(home)},
        timeout=120,
        check=False,
    )
    check: dict[str, object] = json.loads(done.stdout)["checks"]["config.load"]
    details = check["details"]
    assert isinstance(details, dict)
    return {"status": check["status"], "warning": details.get("startup warning")}


async def test_codex_strict_config_still_accepts_the_users_config(tmp_path: Path) -> None:
    binary = codex_binary()
    assert binary is not None  # the suite's autouse fixture skips without it
    home = tmp_path / "home"
    _write(home, f'[oauth_providers.corp]\ntoken_url = "{UNREACHABLE}/token"\nclient_id = "c"\n')
    codex_config = b'model = "o3"\n\n[model_providers.corp]\nname = "Corp"\n'
    (home / "config.toml").write_bytes(codex_config)
    for command in ("status", "token", "refresh", "logout"):
        await _run(command, "--provider", "corp", home=home)
    code, _, _ = await _run("login", "--provider", "corp", "--client-credentials", home=home)
    assert code == 1  # the token endpoint is unreachable
    assert (home / "config.toml").read_bytes() == codex_config
    assert _codex_config_check(binary, home) == {"status": "ok", "warning": None}
    # The check can fail: our table in Codex's file is what --strict-config would refuse.
    (home / "config.toml").write_bytes(codex_config + (home / "aioscopedauth.toml").read_bytes())
    assert _codex_config_check(binary, home)["status"] == "warning"
