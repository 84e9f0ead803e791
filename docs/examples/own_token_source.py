"""Your own bearer source behind AuthMiddleware: run `python own_token_source.py`."""

import asyncio
import itertools

import aiohttp
from aiohttp import web

from aioscopedauth import (
    AuthManager,
    AuthMiddleware,
    AuthMode,
    ExternalAuthTokens,
    MemoryAuthStore,
    RefreshContext,
)
from aioscopedauth.testing import serve_on_loopback


class TokenService:
    """Stands in for wherever your tokens come from (a vault, an SSO helper, an STS)."""

    def __init__(self) -> None:
        """Start with one valid token."""
        self._numbers = itertools.count(1)
        self.current = f"token-{next(self._numbers)}"
        self.mints = 0

    async def mint(self) -> str:
        """Issue a new token; the old one stops working."""
        await asyncio.sleep(0.05)  # a network round trip
        self.mints += 1
        self.current = f"token-{next(self._numbers)}"
        return self.current


class MyTokenSource:
    """A bearer source: `mode`, `resolve()` and `refresh(context)` are all it takes."""

    def __init__(self, service: TokenService) -> None:
        """Take tokens from ``service``."""
        self.service = service

    @property
    def mode(self) -> AuthMode:
        """A bearer source."""
        return AuthMode.BEARER

    async def resolve(self) -> ExternalAuthTokens | None:
        """Return the token to send now."""
        # Asked once per token: the manager reuses the answer until a 401 (or, with an
        # expires_at, until three quarters of its remaining lifetime have passed).
        return ExternalAuthTokens.access_token_only(self.service.current)

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        """Return a new token: the server rejected ``context.rejected_token``."""
        # Asked once per rejected token, however many requests it was rejected on.
        del context  # this service needs no hint; a cache keyed by token would use it
        return ExternalAuthTokens.access_token_only(await self.service.mint())


async def main() -> None:
    service = TokenService()

    async def api(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {service.current}":
            return web.Response(status=401)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/v1/things", api)
    runner, url = await serve_on_loopback(app)
    try:
        async with AuthManager(MemoryAuthStore()) as base:
            manager = base.with_external_bearer_refresher(MyTokenSource(service))
            middleware = AuthMiddleware(manager, origins=[url])
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:

                async def get() -> int:
                    async with session.get(f"{url}/v1/things") as response:
                        return response.status

                print("before:", await get())
                await service.mint()  # the service rotates: the token we hold is now rejected
                statuses = await asyncio.gather(*(get() for _ in range(20)))
                print("after a rotation:", sorted(set(statuses)), "for", len(statuses))
                print("tokens minted for those 20 requests:", service.mints - 1)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
