"""Reuse the Codex CLI's login: same home, same auth.json, same environment variables."""

import asyncio
import os
from pathlib import Path

from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig


def codex_home() -> Path:
    """Where the Codex CLI keeps its login: $CODEX_HOME, else ~/.codex."""
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")


async def main() -> None:
    manager = AuthManager(
        FileAuthStore(codex_home()),
        OAuthConfig.codex(),  # Codex's token endpoint and client id
        api_key_env="CODEX_API_KEY",  # as the Codex CLI does, a key in the environment wins
        access_token_env="CODEX_ACCESS_TOKEN",  # noqa: S106 -- a name; an access token wins
    )
    async with manager:
        await manager.reload()
        auth = manager.auth_cached()  # no refresh, no network
        if auth is None:
            print("Not logged in: run `codex login` first.")
        else:
            print(f"{auth.mode.value} login, account {auth.account_id}, email {auth.email}")


if __name__ == "__main__":
    asyncio.run(main())
