"""``AuthMiddleware``: auth headers on in-scope requests, and staged 401 recovery, for aiohttp.

Attach it with ``aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),))``. aiohttp runs
client middlewares again on every redirect hop, so the origin check happens per hop: a hop that
leaves the scope carries no credentials (the redirect token leak of aiohttp #12275).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import logging
from typing import TYPE_CHECKING, Literal

import attrs
from aiohttp import ClientError, hdrs
from yarl import URL

from ._errors import RefreshTokenFailedError, TransientRefreshError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

    from ._manager import AuthManager
    from ._model import Auth
    from ._recovery import UnauthorizedRecovery

__all__ = ["AuthMiddleware", "RecoveryEvent"]

logger = logging.getLogger("aioscopedauth.middleware")

_UNAUTHORIZED = 401
_MAX_SENDS = 4
"""A hard bound on the retries of one request. A managed recovery retries at most 4 times
(after a reload that found other tokens, then after up to 3 refresh steps; see ``_recovery``
for when a refresh step runs again), a bearer one 3."""
UNAUTHORIZED_BODY_LIMIT = 64 * 1024
"""A 401 body is buffered before recovering only when it declares at most this many bytes."""
UNAUTHORIZED_BODY_WAIT = 1.0
"""Seconds to wait for a 401 body to arrive in full before recovering without it."""
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})

Origin = tuple[str, str | None, int | None]

Outcome = Literal[
    "changed", "unchanged", "permanent_failure", "transient_failure", "recovered", "gave_up"
]
GiveUpReason = Literal[
    "recovery_exhausted",
    "not_chatgpt_auth",
    "no_external_auth",
    "no_new_auth",
    "not_replayable",
    "send_limit",
]

_UNAVAILABLE: dict[str, GiveUpReason] = {
    "not_chatgpt_auth": "not_chatgpt_auth",
    "no_external_auth": "no_external_auth",
}
"""Why a recovery has no step left, as a ``gave_up`` reason (else ``recovery_exhausted``)."""


def fingerprint(auth: Auth | None) -> str:
    """A short, stable name for a token, for telling snapshots apart in traces.

    The first 8 hex digits of the token's SHA-256: enough to tell the tokens of one run apart,
    far too little to recover or guess one.

    Args:
        auth: A snapshot, or ``None``.

    Returns:
        The fingerprint, or ``""`` for ``None``.
    """
    return "" if auth is None else token_fingerprint(auth.token)


def token_fingerprint(token: str) -> str:
    """``fingerprint`` of the auth that sends ``token`` (for a server's side of a trace).

    Args:
        token: A bearer token.

    Returns:
        The fingerprint.
    """
    return hashlib.sha256(token.encode()).hexdigest()[:8]


@attrs.frozen
class RecoveryEvent:
    """One thing the middleware did about a 401, for metrics, logs and traces (no secret).

    Every step emits one; a request's recovery then ends with a ``recovered`` event (a retry
    got another answer than 401) or a ``gave_up`` event (the caller gets the 401, ``reason``
    says why), or with a ``permanent_failure``/``transient_failure`` (the error is raised).
    Events of one request share ``request``, so a trace is all the events with one number.

    Attributes:
        mode: ``managed`` or ``external``.
        step: The step that ran (for ``recovered``/``gave_up``: the step that would be next).
        outcome: ``changed``, ``unchanged``, ``permanent_failure``, ``transient_failure``,
            ``recovered`` or ``gave_up``.
        auth_state_changed: What the step reported (``None`` when it failed, and for
            ``recovered``/``gave_up``).
        method: The request's method.
        url: The request's URL without query, fragment or user info.
        request: The number of the recovering request (per middleware, from 1).
        send: Which send of the request got the 401 this event answers (1: the first; for
            ``recovered``, the send that succeeded).
        rejected: ``fingerprint`` of the auth that 401 answered (for ``recovered``: of the
            auth that worked).
        retry_with: ``fingerprint`` of the auth the request is sent with next, after a
            step that changed it; else ``""``.
        next_step: The recovery's step after this event (``done``: none left).
        fresh: For a refresh step that changed the auth: whether its token was asked for after
            the 401 (see :attr:`RecoveryStep.fresh`); else ``None``.
        reason: For ``gave_up``: ``recovery_exhausted`` (every step ran and the last auth was
            rejected too), ``not_chatgpt_auth``, ``no_external_auth``, ``no_new_auth`` (a step
            reported a change but the manager has no other auth), ``not_replayable`` (the body
            cannot be sent again) or ``send_limit``; else ``""``.
    """

    mode: str
    step: str
    outcome: Outcome
    auth_state_changed: bool | None
    method: str
    url: str
    request: int = 0
    send: int = 0
    rejected: str = ""
    retry_with: str = ""
    next_step: str = ""
    reason: GiveUpReason | Literal[""] = ""
    fresh: bool | None = None


def _origins(origins: str | URL | Iterable[str | URL]) -> frozenset[Origin]:
    if isinstance(origins, str | URL):
        origins = [origins]
    return frozenset(_origin(o) for o in origins)


def _origin(url: str | URL) -> Origin:
    parsed = url if isinstance(url, URL) else URL(url)
    if not parsed.absolute:
        msg = f"origins must be absolute URLs, got {str(parsed)!r}"
        raise ValueError(msg)
    extra = [
        what
        for what, present in (
            ("a path", parsed.path not in {"", "/"}),
            ("a query", bool(parsed.query_string)),
            ("a fragment", bool(parsed.fragment)),
            ("user info", parsed.user is not None or parsed.password is not None),
        )
        if present
    ]
    if extra:
        # The scope is per origin: a path would not narrow it, so refuse to pretend it does.
        origin = f"{parsed.scheme}://{parsed.host_port_subcomponent}"
        msg = (
            f"origins are scheme://host[:port] only, got one with {' and '.join(extra)}; "
            f"use {origin!r} (every path of an origin in scope gets credentials)"
        )
        raise ValueError(msg)
    return (parsed.scheme, parsed.host, parsed.port)


def _is_loopback(host: str | None) -> bool:
    # Names and literals only: no DNS lookup on the request path.
    if host is None:
        return False
    host = host.rstrip(".").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _safe_url(url: URL) -> str:
    # No query string, fragment or user info: any of them may carry a secret.
    return str(url.with_query(None).with_fragment(None).with_user(None))


def _replayable(request: ClientRequest) -> bool:
    body = request.body
    # aiohttp payloads are re-sendable unless they were a one-shot stream (async iterator,
    # non-seekable file), which aiohttp marks as consumed after the first send. A FileBody is
    # never consumed: it opens its file again for each send.
    return not getattr(body, "consumed", False)


async def _buffer_small_body(response: ClientResponse) -> bool:
    """Read a 401 body that is small and arrives soon; return whether it was read.

    A body that declares more than :data:`UNAUTHORIZED_BODY_LIMIT` bytes is not waited for. Any
    other is waited for at most :data:`UNAUTHORIZED_BODY_WAIT` seconds without consuming it
    (a chunked body stops arriving once aiohttp's read buffer is full), so a body that is
    not read here is untouched: the caller can still read all of it.
    """
    length = response.content_length
    if length is not None and length > UNAUTHORIZED_BODY_LIMIT:
        return False
    content = response.content
    try:
        async with asyncio.timeout(UNAUTHORIZED_BODY_WAIT):
            await content.wait_eof()
    except (TimeoutError, ClientError):
        return False  # too slow, or broken: recover without it
    # All of it is buffered: reading is immediate, and frees the connection for the pool.
    await response.read()
    return True


class AuthMiddleware:
    """An aiohttp client middleware that authenticates requests and recovers from 401s.

    * Adds ``manager.auth()``'s headers to requests whose origin (scheme, host, port) is in
      ``origins``, or, when ``origins`` is ``None``, equals the origin of the first request it
      sees. Never to another origin, and never on a redirect hop that leaves the scope. A
      request that already carries ``Authorization`` is left alone.
    * On a 401 it steps the manager's recovery (taking the next step at once when a step
      changed nothing, instead of re-sending a rejected token) and retries with the new auth.
      Requests of the same burst that are still waiting for a connection then go out with the
      new auth instead of each earning a 401 (their headers are replaced before aiohttp
      writes them; a middleware placed after this one has already seen the old ones).
      When the recovery is exhausted the caller gets the last 401, readable in full. A
      permanent refresh failure raises :class:`RefreshTokenFailedError`; a transient one
      raises :class:`TransientRefreshError`.
    * Before recovering it buffers the 401 body only if it is small (at most 64 KiB declared)
      and arrives within a second, so the connection can be reused; a larger or slower body is
      left unread (and the connection closed if the request is retried), never read into
      memory or waited for.
    * A request whose body cannot be sent twice (an async iterator, a non-seekable stream) is
      not retried; the caller gets the 401 and a log line says why. Upload a file with
      :class:`FileBody` to have it re-sent.
    * A 401 from an origin out of scope that names the same loopback host differently (e.g.
      ``localhost`` when ``127.0.0.1`` is in scope, same scheme and port) logs a warning once:
      the request went without credentials because of the spelling.

    Args:
        manager: Where the auth comes from (a derived manager for a bearer provider).
        origins: The origins to authenticate, e.g. ``["https://api.example.com"]``, or a single
            one as a string or URL. Each is ``scheme://host[:port]``: the scope is per origin.
        on_event: Called with a :class:`RecoveryEvent` after every recovery step.

    Raises:
        ValueError: An origin is not an absolute URL, or has a path, query, fragment or user
            info (the scope cannot be narrower than an origin).
    """

    def __init__(
        self,
        manager: AuthManager,
        *,
        origins: str | URL | Iterable[str | URL] | None = None,
        on_event: Callable[[RecoveryEvent], None] | None = None,
    ) -> None:
        """Create the middleware; see the class docstring."""
        self._manager = manager
        self._origins = None if origins is None else _origins(origins)
        self._anchor: Origin | None = None
        self._warned_aliases: set[Origin] = set()
        self._on_event = on_event
        self._cached_headers: tuple[Auth | None, dict[str, str]] = (None, {})
        self._said_no_login = False
        self._sending: dict[ClientRequest, Auth] = {}
        """Requests in their first send (maybe still waiting for a connection), by the auth
        their headers carry now."""
        self._last_swap: tuple[Auth, Auth] | None = None
        self._numbers = itertools.count(1)
        """Numbers the recovering requests, so one request's events can be told apart."""

    @property
    def manager(self) -> AuthManager:
        """The manager the auth comes from."""
        return self._manager

    def in_scope(self, url: URL) -> bool:
        """Whether requests to ``url`` get credentials (pins the first origin when unset).

        Args:
            url: The request URL.

        Returns:
            Whether its origin (scheme, host, port) is in scope.
        """
        # Tuples, not URL.origin(): every request passes here.
        key = (url.scheme, url.host, url.port)
        if self._origins is not None:
            return key in self._origins
        if self._anchor is None:
            self._anchor = key
        return key == self._anchor

    def __repr__(self) -> str:
        """Show the scope."""
        keys = set(self._origins or ())
        if self._anchor is not None:
            keys.add(self._anchor)
        scope = sorted(f"{scheme}://{host}:{port}" for scheme, host, port in keys)
        return f"<AuthMiddleware scope={scope} manager={self._manager!r}>"

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Send ``request`` with auth, recovering from 401s; see the class docstring."""
        if not self.in_scope(request.url):
            response = await handler(request)
            if response.status == _UNAUTHORIZED:
                self._warn_if_loopback_alias(request.url)
            return response
        if hdrs.AUTHORIZATION in request.headers:
            return await handler(request)
        auth = await self._manager.auth()
        if auth is None:
            self._say_no_login(request)
            return await handler(request)
        # The hot path: every request passes here, so nothing is built unless a 401 comes.
        request.headers.update(self._headers(auth))
        sending = self._sending
        sending[request] = auth
        try:
            response = await handler(request)
        finally:
            del sending[request]
        if response.status != _UNAUTHORIZED:
            return response
        # `auth` may not be what went out (see _swap_waiting), but it was rejected: recovering
        # from it adopts the newer auth at once, and only a 401 to that one refreshes again.
        return await self._recover_and_retry(request, handler, auth, response)

    def _swap_waiting(self, rejected: Auth, new: Auth) -> None:
        """Give the requests not sent yet ``new`` instead of the rejected auth.

        A burst of requests waits for the connector's free connections with its headers set.
        When the first 401 brings new auth, those that have not gone out yet would each earn a
        401 of their own and a retry: their headers are replaced instead (aiohttp writes the
        headers the moment it has a connection, with nothing awaited in between, so a request
        goes out with either auth, whole). Requests already sent keep theirs; a 401 to one of
        them recovers from ``rejected`` as before. Runs once per rejected auth, not per 401.
        """
        last = self._last_swap
        if last is not None and last[0] is rejected and last[1] is new:
            return
        self._last_swap = (rejected, new)
        sending = self._sending
        for request, carried in sending.items():
            if carried is rejected:
                self._apply(request, new, rejected)
                sending[request] = new

    def _say_no_login(self, request: ClientRequest) -> None:
        # Once per middleware: a request sent without credentials is otherwise silent. A
        # bearer source that failed has already logged why; then this is only a debug line.
        level = logging.DEBUG if self._said_no_login else logging.WARNING
        if self._manager.external_auth is not None:
            level = logging.DEBUG
        self._said_no_login = True
        logger.log(
            level,
            "No login: sending %s %s without credentials (log in first, e.g. "
            "`aioscopedauth login --api-key` or `codex login`)",
            request.method,
            _safe_url(request.url),
        )

    def _warn_if_loopback_alias(self, url: URL) -> None:
        key = (url.scheme, url.host, url.port)
        if key in self._warned_aliases or not _is_loopback(url.host):
            return
        scope = self._origins if self._origins is not None else {self._anchor}
        twins = sorted(
            f"{scheme}://{host}:{port}"
            for origin in scope
            if origin is not None
            for scheme, host, port in (origin,)
            if (scheme, port) == (url.scheme, url.port) and _is_loopback(host)
        )
        if not twins:
            return
        self._warned_aliases.add(key)
        logger.warning(
            "%s://%s:%s answered 401 to a request sent without credentials: it is not in the "
            "scope %s, although it names the same loopback host; put it in origins, or use "
            "one spelling of the host",
            url.scheme,
            url.host,
            url.port,
            twins,
        )

    def _headers(self, auth: Auth) -> dict[str, str]:
        cached_auth, headers = self._cached_headers
        if cached_auth is not auth:
            headers = auth.headers()
            self._cached_headers = (auth, headers)
        return headers

    async def _recover_and_retry(
        self,
        request: ClientRequest,
        handler: ClientHandlerType,
        auth: Auth,
        response: ClientResponse,
    ) -> ClientResponse:
        # The recovery is stepped with next() rather than iterated: in a storm of 401s every
        # request passes here, and an async generator costs each one several more objects
        # (the generator, an awaitable per step, its closing), hence more garbage collection.
        recovery = self._manager.unauthorized_recovery(auth)
        number = next(self._numbers)
        previous: Auth | None = None
        for send in range(1, _MAX_SENDS + 1):
            # Buffer a small 401 body, so the connection goes back to the pool while we
            # refresh; a large or slow one stays unread, for the caller if we hand it back.
            buffered = await _buffer_small_body(response)
            # The recovery was built knowing the first rejected auth; later 401s tell it.
            new_auth = await self._recover(
                request, recovery, auth, number=number, send=send, started=previous is not None
            )
            if new_auth is None:
                return response
            if not _replayable(request):
                logger.warning(
                    "Not retrying %s %s after 401: its body was a stream that cannot be "
                    "sent twice; pass bytes, str, JSON, form data or a FileBody to get "
                    "retries",
                    request.method,
                    _safe_url(request.url),
                )
                self._emit(
                    request, recovery, "gave_up", number, send, auth, reason="not_replayable"
                )
                return response
            if not buffered:
                # Never read a body we are discarding: drop its connection instead.
                response.close()
            if previous is None:
                self._swap_waiting(auth, new_auth)
            previous, auth = auth, new_auth
            self._apply(request, auth, previous)
            response = await handler(request)
            if response.status != _UNAUTHORIZED:
                self._emit(request, recovery, "recovered", number, send + 1, auth)
                return response
            # Told, the recovery decides whether this 401 proves anything (see _recovery).
            recovery.rejected_again(auth)
        self._emit(request, recovery, "gave_up", number, _MAX_SENDS + 1, auth, reason="send_limit")
        return response

    async def _recover(  # noqa: PLR0913 -- the trace's numbers ride along, keyword-only
        self,
        request: ClientRequest,
        recovery: UnauthorizedRecovery,
        rejected: Auth,
        *,
        number: int,
        send: int,
        started: bool,
    ) -> Auth | None:
        """Step until the auth changes; return the auth to retry with, or ``None`` to give up.

        Giving up emits a ``gave_up`` event that says why.
        """
        while recovery.has_next():
            try:
                # The first step knows the rejected auth already; a later one is told the auth
                # the latest attempt carried, so a step never adopts that same auth again.
                step = await recovery.next(rejected if started else None)
            except RefreshTokenFailedError:
                self._emit(request, recovery, "permanent_failure", number, send, rejected)
                raise
            except TransientRefreshError:
                self._emit(request, recovery, "transient_failure", number, send, rejected)
                raise
            started = True
            if not step.auth_state_changed:
                self._emit(
                    request, recovery, "unchanged", number, send, rejected,
                    changed=step.auth_state_changed, step=step.name,
                )  # fmt: skip
                continue
            new_auth = await self._manager.auth()
            usable = new_auth is not None and new_auth != rejected
            self._emit(
                request, recovery, "changed", number, send, rejected,
                changed=True, step=step.name, retry_with=new_auth if usable else None,
                fresh=step.fresh,
            )  # fmt: skip
            if usable:
                return new_auth
            self._emit(request, recovery, "gave_up", number, send, rejected, reason="no_new_auth")
            return None
        reason = _UNAVAILABLE.get(recovery.unavailable_reason(), "recovery_exhausted")
        self._emit(request, recovery, "gave_up", number, send, rejected, reason=reason)
        return None

    def _apply(self, request: ClientRequest, auth: Auth, previous: Auth | None) -> None:
        headers = self._headers(auth)
        if previous is not None:
            for name in previous.headers():
                if name not in headers:
                    request.headers.popall(name, None)
        request.headers.update(headers)

    def _emit(  # noqa: PLR0913, PLR0917 -- one event's facts; private, called positionally
        self,
        request: ClientRequest,
        recovery: UnauthorizedRecovery,
        outcome: Outcome,
        number: int,
        send: int,
        rejected: Auth | None,
        *,
        changed: bool | None = None,
        step: str | None = None,
        retry_with: Auth | None = None,
        reason: GiveUpReason | Literal[""] = "",
        fresh: bool | None = None,
    ) -> None:
        on_event = self._on_event
        if on_event is None and not logger.isEnabledFor(logging.DEBUG):
            return  # nobody listens: no URL to build (a storm of 401s passes here per step)
        mode = recovery.mode_name
        name = step or recovery.step_name
        url = _safe_url(request.url)
        event = RecoveryEvent(
            mode,
            name,
            outcome,
            changed,
            request.method,
            url,
            request=number,
            send=send,
            rejected=fingerprint(rejected),
            retry_with=fingerprint(retry_with),
            next_step=recovery.step_name,
            reason=reason,
            fresh=fresh,
        )
        logger.debug(
            "401 recovery: mode=%s step=%s outcome=%s auth_state_changed=%s %s %s "
            "(request %d, send %d, rejected %s, retry with %s%s, next %s%s)",
            mode,
            name,
            outcome,
            changed,
            request.method,
            url,
            number,
            send,
            event.rejected or "-",
            event.retry_with or "-",
            "" if fresh is None else (" asked for after the 401" if fresh else " asked for before"),
            event.next_step,
            f", reason {reason}" if reason else "",
        )
        if on_event is not None:
            on_event(event)
