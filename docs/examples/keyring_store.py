"""Keep the login in the system keyring, falling back to auth.json where there is none."""

import asyncio
import tempfile
from pathlib import Path

from aioscopedauth import AuthManager, AutoAuthStore, KeyringAuthStore, StorageError


async def main(codex_home: Path) -> None:
    # Codex's keyring entry: service "Codex Auth", account "cli|<hash of the home path>".
    strict = KeyringAuthStore(codex_home, timeout=5.0)  # errors if the keyring fails
    relaxed = AutoAuthStore(codex_home)  # falls back to codex_home/auth.json, with a warning

    async with AuthManager(relaxed) as manager:
        await manager.login_with_api_key("sk-example")
        try:
            loaded = await strict.load()
        except StorageError:  # no keyring backend (common on servers): the file was used
            print("stored in the keyring: False (there is none here; auth.json was used)")
        else:
            print("stored in the keyring:", loaded is not None)
        await manager.logout()  # the example removes its login again


if __name__ == "__main__":
    # A temporary home, never your real ~/.codex: its keyring entry is that home's own.
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(main(Path(home)))
