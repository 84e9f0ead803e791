"""The tutorial: a manager, the middleware, real calls (against the test kit's server)."""

import asyncio
import tempfile
from pathlib import Path

import aiohttp

from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, OAuthConfig
from aioscopedauth.testing import FakeAuthServer


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # removed at the end, with the login in it
        await run(Path(tmp) / "codex-home")


async def run(home: Path) -> None:
    async with FakeAuthServer() as server:  # a token endpoint and an API on 127.0.0.1
        await FileAuthStore(home).save(server.login())  # what `codex login` would have saved

        oauth = OAuthConfig(token_url=server.token_url, client_id=server.client_id)
        async with AuthManager(FileAuthStore(home), oauth) as manager:
            middleware = AuthMiddleware(manager, origins=[server.url])
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
                async with session.get(f"{server.url}/api/hello") as response:
                    print("first call:", response.status)

                server.revoke_access_tokens()  # the server now rejects our access token
                async with session.get(f"{server.url}/api/hello") as response:
                    print("after a revoke:", response.status)  # recovered: still 200

        print("token refreshes:", server.refreshes)


if __name__ == "__main__":
    asyncio.run(main())
