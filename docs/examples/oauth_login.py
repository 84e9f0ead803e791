"""Log in to your own OAuth 2.0 / OpenID provider, then call an API with the login.

Usage: python oauth_login.py device|browser|service ISSUER CLIENT_ID HOME API_URL
(the client secret of a confidential client, if any, in $OAUTH_CLIENT_SECRET).
"""

import asyncio
import os
import sys

import aiohttp
from yarl import URL

from aioscopedauth import AuthManager, AuthMiddleware, DeviceCode, FileAuthStore, OAuthConfig


def show(code: DeviceCode) -> None:
    """Tell the user where to approve the login (called once)."""
    link = code.verification_uri_complete or code.verification_uri
    print(f"To log in, open {link} and enter the code {code.user_code}", flush=True)


async def main(kind: str, issuer: str, client_id: str, home: str, api_url: str) -> None:
    # A service asks for its API scope; a user's login asks for a refresh token as well.
    scopes = ("api:read",) if kind == "service" else ("openid", "offline_access")
    config = await OAuthConfig.discover(
        issuer,
        client_id=client_id,
        client_secret=os.environ.get("OAUTH_CLIENT_SECRET"),
        scopes=scopes,
    )
    async with AuthManager(FileAuthStore(home), config) as manager:
        if await manager.auth() is None:  # not logged in yet: log in once, kept in HOME
            if kind == "device":
                await manager.login_with_device_code(show)
            elif kind == "browser":
                await manager.login_with_browser()  # opens the system browser
            else:
                await manager.login_with_client_credentials()
            print("logged in", flush=True)
        middleware = AuthMiddleware(manager, origins=[URL(api_url).origin()])
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            session.get(api_url) as response,
        ):
            print(f"{api_url}: {response.status}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
