"""A custom provider whose bearer token comes from a command, configured Codex-style."""

import asyncio
import sys
from pathlib import Path

import aiohttp

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    CommandBearerRefresher,
    ConfigError,
    FileAuthStore,
    ProviderAuthCommand,
    load_providers,
    manager_for_provider,
)


async def main(codex_home: Path, gateway_url: str) -> None:
    providers = load_providers(codex_home / "config.toml")
    if "corp" not in providers:
        sys.exit(f"No [model_providers.corp] in {codex_home / 'config.toml'}")
    async with AuthManager(FileAuthStore(codex_home)) as base:
        corp = manager_for_provider(base, providers["corp"])  # base stays the OpenAI login
        middleware = AuthMiddleware(corp, origins=[gateway_url])
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            session.get(f"{gateway_url}/v1/models") as response,
        ):
            print("gateway:", response.status)


def from_code(base: AuthManager) -> AuthManager:
    command = ProviderAuthCommand(
        "./mint-token.sh",  # relative to cwd; a bare name is looked up on PATH
        cwd="/opt/tools",
        timeout=5.0,  # seconds for the whole run
        refresh_interval=0,  # re-run only after a 401
        env={"AUDIENCE": "api"},  # added to the inherited environment
    )
    return base.with_external_bearer_refresher(CommandBearerRefresher(command))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: python {sys.argv[0]} CODEX_HOME GATEWAY_URL")
    try:
        asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
    except ConfigError as error:  # no config.toml there, or a bad one: one line, no traceback
        sys.exit(str(error))
