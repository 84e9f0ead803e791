"""Keep the login in the system keyring, falling back to auth.json where there is none."""

import asyncio
from pathlib import Path

from aioscopedauth import AuthManager, AutoAuthStore, KeyringAuthStore


async def main(codex_home: Path) -> None:
    # Codex's keyring entry: service "Codex Auth", account "cli|<hash of the home path>".
    strict = KeyringAuthStore(codex_home, timeout=5.0)  # errors if the keyring fails
    relaxed = AutoAuthStore(codex_home)  # falls back to codex_home/auth.json, with a warning

    async with AuthManager(relaxed) as manager:
        await manager.login_with_api_key("sk-example")
    loaded = await strict.load()
    print("stored in the keyring:", loaded is not None)


if __name__ == "__main__":
    asyncio.run(main(Path.home() / ".codex"))
