"""Say what a Codex login is, whatever Codex wrote: use it when possible, report it when not."""

import asyncio
import os
from pathlib import Path

from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig, UnsupportedLoginError


async def describe(home: Path) -> str:
    """One line about the login in ``home``: its mode and account, or why it cannot be used."""
    # OAuthConfig.codex() also reads $CODEX_AUTHAPI_BASE_URL for personal access tokens.
    async with AuthManager(FileAuthStore(home), OAuthConfig.codex()) as manager:
        try:
            auth = await manager.auth()
        except UnsupportedLoginError as error:
            # agentIdentity, Bedrock and newer modes: kept as they are, usable by Codex only.
            return f"unusable here: {error}"
        if auth is None:
            return "not logged in"
        return f"{auth.mode.value}: account {auth.account_id}, plan {auth.plan_type}"


if __name__ == "__main__":
    # Your Codex login: $CODEX_HOME, else ~/.codex (as the Codex CLI does).
    home = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    print(asyncio.run(describe(home)))
