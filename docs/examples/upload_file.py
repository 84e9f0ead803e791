"""Upload a file through a token that may be revoked: FileBody is re-sent after the 401."""

from pathlib import Path

import aiohttp

from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, FileBody, OAuthConfig


async def upload(home: Path, oauth: OAuthConfig, api: str, path: Path) -> int:
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        middleware = AuthMiddleware(manager, origins=api)  # one origin, as a string
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            # Streamed from disk in chunks; opened again if a 401 makes the middleware retry.
            session.put(f"{api}/api/files/{path.name}", data=FileBody(path)) as response,
        ):
            return response.status
