"""Upload a file through a token that may be revoked: FileBody is re-sent after the 401."""

import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp

from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, FileBody, OAuthConfig
from aioscopedauth.testing import FakeAuthServer


async def upload(home: Path, oauth: OAuthConfig, api: str, path: Path) -> int:
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        middleware = AuthMiddleware(manager, origins=api)  # one origin, as a string
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            # Streamed from disk in chunks; opened again if a 401 makes the middleware retry.
            session.put(f"{api}/api/files/{path.name}", data=FileBody(path)) as response,
        ):
            return response.status


async def try_it(path: Path) -> None:
    """Upload ``path`` to the test kit's API, in a temporary home, through a revoked token."""
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeAuthServer() as server:  # a token endpoint and an API on 127.0.0.1
            home = Path(tmp) / "codex-home"
            await FileAuthStore(home).save(server.login())
            server.revoke_access_tokens()  # the first send is answered 401
            oauth = OAuthConfig(server.token_url, server.client_id)
            status = await upload(home, oauth, server.url, path)
            received = server.last_api_request["body"] if server.last_api_request else b""
            print(f"PUT {path.name}: {status} after {server.api_rejections} 401")
            print(f"the server received {len(received)} bytes, sent twice from disk")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} FILE")
    asyncio.run(try_it(Path(sys.argv[1])))
