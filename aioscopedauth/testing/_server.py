"""A fake OAuth token endpoint and protected API on loopback, for tests and the demo.

It behaves like the real services where it matters: refresh tokens are single-use and rotate
(spending one twice answers 401 ``refresh_token_reused``), access tokens are JWTs with ``exp``
that the API checks, personal access tokens (``at-…``) are answered by a whoami endpoint, and
every call is counted.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

import attrs
from aiohttp import web

from aioscopedauth._jwt import IdTokenInfo, decode_jwt_payload
from aioscopedauth._model import AuthDotJson, AuthMode, TokenData

from ._jwt_helpers import make_id_token, make_jwt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType


__all__ = [
    "FakeAuthServer",
    "TokenFailure",
    "forget_issued_secrets",
    "issued_secrets",
    "serve_on_loopback",
]

_AUTH_CLAIM = "https://api.openai.com/auth"
_ISSUED: set[str] = set()


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve an aiohttp application on a free port of 127.0.0.1.

    Args:
        app: The application.

    Returns:
        The runner (``await runner.cleanup()`` stops it) and the base URL.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def issued_secrets() -> frozenset[str]:
    """Every access and refresh token any :class:`FakeAuthServer` of this process has issued.

    A test can search its logs and errors for these to prove no token leaked.

    Returns:
        The tokens.
    """
    return frozenset(_ISSUED)


def forget_issued_secrets() -> None:
    """Clear the record kept for :func:`issued_secrets` (a test fixture does this per test)."""
    _ISSUED.clear()


@attrs.frozen
class TokenFailure:
    """An answer the token endpoint gives instead of a refresh.

    Attributes:
        status: The HTTP status.
        body: The body (a dict is sent as JSON, a str as text).
        content_type: The content type for a str body.
    """

    status: int
    body: dict[str, Any] | str = ""
    content_type: str = "text/plain"
    drop_connection: bool = False
    """Close the connection without answering (a crash or a network cut)."""


@attrs.define(eq=False)
class FakeAuthServer:
    """A token endpoint (``POST /oauth/token``) and an API (``/api/...``) on 127.0.0.1.

    Use it as ``async with FakeAuthServer() as server:``; :meth:`login` mints a valid login,
    :meth:`personal_access_token` a personal access token, whose account the whoami endpoint
    under :attr:`authapi_url` answers (use that URL as ``CODEX_AUTHAPI_BASE_URL``).

    Args:
        access_ttl: Lifetime of the access tokens it issues.
        client_id: The client id it expects.
        account_id: The account id in the tokens it issues.
        client_max_size: The largest request body it accepts (larger ones are answered 413).
    """

    access_ttl: timedelta = timedelta(hours=1)
    client_id: str = "test-client"
    account_id: str = "acct-1"
    client_max_size: int = 256 * 1024 * 1024

    token_calls: int = attrs.field(default=0, init=False)
    """Refresh requests received (every POST to the token endpoint)."""
    refreshes: int = attrs.field(default=0, init=False)
    """Refreshes that succeeded."""
    refresh_times: list[float] = attrs.field(factory=list, init=False)
    """When each successful refresh was answered (``time.monotonic()``), in order."""
    reuse_answers: int = attrs.field(default=0, init=False)
    """Requests that spent a refresh token that had already been spent."""
    api_hits: int = attrs.field(default=0, init=False)
    """Requests to the API, accepted or not."""
    api_rejections: int = attrs.field(default=0, init=False)
    """API requests answered 401."""
    token_requests: list[Any] = attrs.field(factory=list, init=False)
    """The decoded JSON body of every token request, in order (they carry refresh tokens)."""
    token_request_headers: list[dict[str, str]] = attrs.field(factory=list, init=False)
    """The headers of every token request, in order."""
    last_api_request: dict[str, Any] | None = attrs.field(default=None, init=False)
    """The method, path, headers and body of the last API request."""
    failures: list[TokenFailure] = attrs.field(factory=list, init=False)
    """Answers to give to the next token requests, first to last, instead of refreshing."""
    token_gate: asyncio.Event | None = attrs.field(default=None, init=False)
    """When set to an unset event, token requests wait for it (to hold a refresh in flight)."""
    token_request_seen: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    """Set when a token request arrives."""
    api_always_401: bool = attrs.field(default=False, init=False)
    """Answer every API request 401."""
    mangle_answer: Callable[[dict[str, Any]], dict[str, Any] | str] | None = attrs.field(
        default=None, init=False
    )
    """Rewrites each successful refresh's answer (the refresh token was spent and rotated
    already): return a dict to send as JSON, or a str to send as the raw body. For testing
    what a client does with a 200 answer that is partly unusable."""
    token_hook: Callable[[Any], Awaitable[None]] | None = attrs.field(default=None, init=False)
    """Awaited with each decoded token request body before it is answered (to delay or hold
    one client's refresh, e.g. only requests without Codex's ``refresh_reason``)."""
    whoami_calls: int = attrs.field(default=0, init=False)
    """Requests to the whoami endpoint, answered or not."""
    whoami_failures: list[TokenFailure] = attrs.field(factory=list, init=False)
    """Answers to give to the next whoami requests, first to last, instead of the account."""
    last_whoami_request: dict[str, Any] | None = attrs.field(default=None, init=False)
    """The method, path and headers of the last whoami request."""

    _valid_refresh: set[str] = attrs.field(factory=set, init=False, repr=False)
    _spent_refresh: set[str] = attrs.field(factory=set, init=False, repr=False)
    _expired_refresh: set[str] = attrs.field(factory=set, init=False, repr=False)
    _valid_access: set[str] = attrs.field(factory=set, init=False, repr=False)
    _pats: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False, repr=False)
    _counter: itertools.count[int] = attrs.field(factory=itertools.count, init=False, repr=False)
    _runner: web.AppRunner | None = attrs.field(default=None, init=False, repr=False)
    _port: int = attrs.field(default=0, init=False)

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def token_url(self) -> str:
        """The token endpoint's URL."""
        return f"{self.url}/oauth/token"

    @property
    def authapi_url(self) -> str:
        """The base URL to use as ``CODEX_AUTHAPI_BASE_URL`` (or ``authapi_base_url``).

        The whoami endpoint is ``GET {authapi_url}/v1/user-auth-credential/whoami``.
        """
        return f"{self.url}/authapi"

    async def start(self) -> None:
        """Start listening on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=self.client_max_size)
        app.router.add_post("/oauth/token", self._token)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/authapi/v1/user-auth-credential/whoami", self._whoami)
        self._runner, url = await serve_on_loopback(app)
        self._port = int(url.rsplit(":", 1)[1])

    async def close(self) -> None:
        """Stop the server."""
        if self.token_gate is not None:
            self.token_gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.close()

    # -- tokens ---------------------------------------------------------------------------

    def _mint_access(self, account_id: str) -> str:
        now = time.time()
        token = make_jwt(
            {
                "iat": int(now),
                "exp": now + self.access_ttl.total_seconds(),
                "jti": f"at-{next(self._counter)}-{secrets.token_hex(4)}",
                _AUTH_CLAIM: {"chatgpt_account_id": account_id},
            }
        )
        self._valid_access.add(token)
        _ISSUED.add(token)
        return token

    def _mint_refresh(self) -> str:
        # Random, so a leak scan never mistakes an ordinary word for a token.
        token = f"rt-{next(self._counter)}-{secrets.token_hex(8)}"
        self._valid_refresh.add(token)
        _ISSUED.add(token)
        return token

    def login(
        self, *, account_id: str | None = None, expired: bool = False, plan_type: str = "pro"
    ) -> AuthDotJson:
        """Mint a valid managed login, as a browser login would have saved it.

        Args:
            account_id: The account; defaults to the server's.
            expired: Make the access token already expired (so the first use refreshes).
            plan_type: The plan claim.

        Returns:
            The payload, ready for a store.
        """
        account = account_id or self.account_id
        access = self._mint_access(account)
        if expired:
            self._valid_access.discard(access)
            access = make_jwt({"exp": int(time.time()) - 60, _AUTH_CLAIM: {}})
        return AuthDotJson(
            auth_mode=AuthMode.CHATGPT,
            tokens=TokenData(
                id_token=IdTokenInfo.parse(make_id_token(account_id=account, plan_type=plan_type)),
                access_token=access,
                refresh_token=self._mint_refresh(),
                account_id=account,
            ),
            last_refresh=datetime.now(UTC),
        )

    def personal_access_token(
        self,
        *,
        email: str | None = "user@example.com",
        plan_type: str = "pro",
        account_id: str | None = None,
        fedramp: bool = False,
        user_id: str = "user-12345",
    ) -> str:
        """Mint a personal access token (``at-…``) that the API and the whoami endpoint accept.

        Args:
            email: The email whoami reports (``None``: the account has none).
            plan_type: The plan whoami reports.
            account_id: The account; defaults to the server's.
            fedramp: Whether whoami reports a FedRAMP account.
            user_id: The ChatGPT user id whoami reports.

        Returns:
            The token (also recorded for :func:`issued_secrets`).
        """
        token = f"at-{next(self._counter)}-{secrets.token_hex(12)}"
        self._pats[token] = {
            "email": email,
            "chatgpt_user_id": user_id,
            "chatgpt_account_id": account_id or self.account_id,
            "chatgpt_plan_type": plan_type,
            "chatgpt_account_is_fedramp": fedramp,
        }
        _ISSUED.add(token)
        return token

    def revoke_personal_access_tokens(self) -> None:
        """Make every personal access token invalid (the API and whoami answer 401)."""
        self._pats.clear()

    def revoke_access_tokens(self) -> None:
        """Make every access token issued so far invalid (the API answers 401 to them)."""
        self._valid_access.clear()

    def revoke_refresh_tokens(self) -> None:
        """Make every refresh token invalid (the endpoint answers ``refresh_token_invalidated``)."""
        self._valid_refresh.clear()

    def expire_refresh_tokens(self) -> None:
        """Make every refresh token expired (the endpoint answers ``refresh_token_expired``)."""
        self._expired_refresh |= self._valid_refresh
        self._valid_refresh.clear()

    def is_valid_refresh_token(self, token: str) -> bool:
        """Whether the endpoint would accept ``token`` now (issued, not spent or revoked)."""
        return token in self._valid_refresh

    def is_valid_access_token(self, token: str) -> bool:
        """Whether the API would accept ``token`` now."""
        return token in self._valid_access and _not_expired(token)

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_calls += 1
        self.token_request_headers.append(dict(request.headers))
        self.token_request_seen.set()
        if self.token_gate is not None:
            await self.token_gate.wait()
        if self.failures:
            failure = self.failures.pop(0)
            if failure.drop_connection and request.transport is not None:
                request.transport.abort()
            return _failure_response(failure)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "invalid_request"}, status=400)
        self.token_requests.append(body)
        if self.token_hook is not None:
            await self.token_hook(body)
        refused = self._refuse(body)
        if refused is not None:
            return refused
        self._valid_refresh.discard(body["refresh_token"])
        self._spent_refresh.add(body["refresh_token"])
        self.refreshes += 1
        self.refresh_times.append(time.monotonic())
        answer: dict[str, Any] = {
            "access_token": self._mint_access(self.account_id),
            "refresh_token": self._mint_refresh(),
            "id_token": make_id_token(account_id=self.account_id, plan_type="pro"),
        }
        if self.mangle_answer is not None:
            mangled = self.mangle_answer(answer)
            if isinstance(mangled, str):
                return web.Response(text=mangled, content_type="application/json")
            answer = mangled
        return web.json_response(answer)

    def _refuse(self, body: Any) -> web.Response | None:  # noqa: ANN401 -- any decoded JSON
        if not isinstance(body, dict):
            return web.json_response({"error": "invalid_request"}, status=400)
        if body.get("grant_type") != "refresh_token" or body.get("client_id") != self.client_id:
            return web.json_response({"error": "invalid_client"}, status=400)
        token = body.get("refresh_token")
        if token in self._spent_refresh:
            self.reuse_answers += 1
            return _error(401, "refresh_token_reused", "Your refresh token has already been used")
        if token in self._expired_refresh:
            return _error(401, "refresh_token_expired", "Your refresh token has expired")
        if token not in self._valid_refresh:
            return _error(401, "refresh_token_invalidated", "Your refresh token was revoked")
        return None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.api_hits += 1
        raw = await request.read()
        self.last_api_request = {
            "method": request.method,
            "path": request.path,
            "headers": dict(request.headers),
            "body": raw,
        }
        if not self._authorized(request):
            self.api_rejections += 1
            return _error(401, "invalid_token", "The access token is invalid or expired")
        return web.json_response({"ok": True, "path": request.path})

    def _authorized(self, request: web.Request) -> bool:
        token = _bearer(request)
        return (
            not self.api_always_401
            and token is not None
            and (self.is_valid_access_token(token) or token in self._pats)
        )

    async def _whoami(self, request: web.Request) -> web.StreamResponse:
        self.whoami_calls += 1
        self.last_whoami_request = {
            "method": request.method,
            "path": request.path,
            "headers": dict(request.headers),
        }
        if self.whoami_failures:
            failure = self.whoami_failures.pop(0)
            if failure.drop_connection and request.transport is not None:
                request.transport.abort()
            return _failure_response(failure)
        token = _bearer(request)
        if token is None or token not in self._pats:
            return _error(401, "invalid_token", "The personal access token is invalid")
        return web.json_response(self._pats[token])

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        """Redirect to ``?to=`` (any URL), without checking auth."""
        raise web.HTTPFound(request.query["to"])

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """A websocket that echoes text, after checking the bearer like the API does."""
        self.api_hits += 1
        if not self._authorized(request):
            self.api_rejections += 1
            return _error(401, "invalid_token", "The access token is invalid or expired")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str(f"echo:{message.data}")
        return socket


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None


def _failure_response(failure: TokenFailure) -> web.Response:
    if isinstance(failure.body, dict):
        return web.json_response(failure.body, status=failure.status)
    return web.Response(status=failure.status, text=failure.body, content_type=failure.content_type)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _not_expired(token: str) -> bool:
    exp = decode_jwt_payload(token).get("exp")
    return not isinstance(exp, int | float) or exp > time.time()
