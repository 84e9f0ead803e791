"""A bearer source behind a manager: the same single flight for any source as for our own.

A user's :class:`ExternalRefresher` (a bearer source, ``mode`` ``AuthMode.BEARER``) gets from
the manager what :class:`CommandBearerRefresher` does for itself:

* ``refresh()`` runs **once per rejected token**, however many requests saw it rejected: the
  first caller starts it in a task of its own, every other caller rejected with the same token
  waits for that task (a future each, so a cancelled caller never cancels the refresh), and a
  caller whose rejected token was already replaced takes the replacement without a call.
* ``resolve()`` runs once per snapshot: its token is cached until a refresh replaces it, or
  until three quarters of its remaining lifetime when the source gave an ``expires_at``.
  Concurrent first calls share one ``resolve()``. A source that caches on its own terms (a
  command with a refresh interval) says so with ``cache_resolved = False``, and is then asked
  on every call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs

from ._errors import TransientRefreshError
from ._external import RefreshContext
from ._loader import retrieve_exception
from ._model import Auth, AuthMode, is_header_safe
from ._refresh import InFlight, call_source, describe

if TYPE_CHECKING:
    from ._external import ExternalAuthTokens, ExternalRefresher

__all__ = ["BearerFlight"]

logger = logging.getLogger("aioscopedauth.manager")

_STALE_FRACTION = 0.75
"""A resolved token with a known expiry is asked for again after this share of its life."""


class _ResolverGone(Exception):  # noqa: N818 -- a private signal, never raised to a caller
    """The caller resolving for everyone was cancelled; a waiting caller resolves instead."""


@attrs.define(eq=False)
class BearerFlight:
    """One bearer source with the manager's resolve cache and single-flight refresh."""

    source: ExternalRefresher
    cached: Auth | None = None
    """The token last resolved or refreshed (``None``: none yet; a failed resolve keeps it)."""
    stale_at: float | None = None
    """``time.monotonic()`` after which ``cached`` is resolved again (``None``: not by age)."""
    resolving: asyncio.Future[Auth | None] | None = None
    inflight: InFlight | None = None
    resolves: int = 0
    """How often the source's ``resolve()`` was called (for status and tests)."""
    refreshes: int = 0
    """How often the source's ``refresh()`` was called (for status and tests)."""
    requested: tuple[str, float] | None = attrs.field(default=None, repr=False)
    """(token, when): the latest token and the earliest start (``time.monotonic()``) of a call
    to the source that returned it, a lower bound of when it was minted."""

    def refreshed_since(self, moment: float) -> bool:
        """Whether the latest token was asked for at or after ``moment`` (see the recovery)."""
        requested = self.requested
        return requested is not None and requested[1] >= moment

    def _note(self, token: str, called: float) -> None:
        requested = self.requested
        if requested is None or requested[0] != token or called < requested[1]:
            self.requested = (token, called)

    @property
    def caches(self) -> bool:
        """Whether ``resolve()`` answers are cached (the source did not opt out)."""
        return bool(getattr(self.source, "cache_resolved", True))

    async def auth(self) -> Auth | None:
        """The bearer to send now; ``None`` when the source has none or failed (logged)."""
        cached = self.cached
        if (
            cached is not None
            and self.caches
            and (self.stale_at is None or time.monotonic() < self.stale_at)
        ):
            return cached
        while (pending := self.resolving) is not None and not pending.done():
            try:
                return await asyncio.shield(pending)
            except _ResolverGone:
                continue  # the caller resolving for everyone was cancelled: resolve again
        resolving: asyncio.Future[Auth | None] = asyncio.get_running_loop().create_future()
        resolving.add_done_callback(retrieve_exception)
        self.resolving = resolving
        try:
            auth = await self._resolve()
        except BaseException:
            # Only a cancellation gets here (a failure is logged and answered None): hand the
            # resolve to a waiting caller rather than the cancellation.
            resolving.set_exception(_ResolverGone())
            raise
        resolving.set_result(auth)
        return auth

    async def _resolve(self) -> Auth | None:
        self.resolves += 1
        called = time.monotonic()
        try:
            tokens = await self.source.resolve()
        except Exception as exc:  # noqa: BLE001 -- any source failure means "no auth", logged
            logger.warning("Failed to resolve external bearer auth: %s", describe(exc))
            return None
        auth = _bearer(tokens)
        if auth is not None:
            self._keep(auth, None if tokens is None else tokens.expires_at)
            self._note(auth.token, called)
        return auth

    def _keep(self, auth: Auth, expires_at: datetime | None) -> None:
        self.cached = auth
        self.stale_at = None
        if expires_at is not None:
            remaining = max((expires_at - datetime.now(UTC)).total_seconds(), 0.0)
            self.stale_at = time.monotonic() + remaining * _STALE_FRACTION

    def refresh(self, rejected: Auth | None) -> asyncio.Future[bool]:
        """Join (or start) the one refresh of ``rejected``; await the returned future.

        The outcome is ``True`` when the manager now holds another token (this refresh's, or
        one that had already replaced the rejected token).

        Raises (through the future):
            TransientRefreshError: The source failed or gave an unsendable token.
        """
        loop = asyncio.get_running_loop()
        cached = self.cached
        if rejected is not None and cached is not None and cached != rejected:
            # Already replaced since that request was sent: take the replacement.
            done: asyncio.Future[bool] = loop.create_future()
            done.set_result(True)
            return done
        key = rejected if rejected is not None else Auth(AuthMode.BEARER, "")
        inflight = self.inflight
        if inflight is None or inflight.task.done() or inflight.expected != key:
            task = loop.create_task(self._refresh(rejected), name="aioscopedauth-bearer-refresh")
            task.add_done_callback(retrieve_exception)
            inflight = InFlight(key, task)
            task.add_done_callback(inflight.wake)
            self.inflight = inflight
        return inflight.wait()

    async def _refresh(self, rejected: Auth | None) -> bool:
        self.refreshes += 1
        context = RefreshContext(rejected_token=None if rejected is None else rejected.token)
        called = time.monotonic()
        outcome = await call_source(self.source.refresh(context))
        if isinstance(outcome, str):
            msg = f"external bearer refresh failed: {outcome}"
            raise TransientRefreshError(msg)
        auth = _bearer(outcome)
        if auth is None:
            msg = (
                "external bearer refresh failed: the source returned an empty token or one that "
                "cannot be sent as a header"
            )
            raise TransientRefreshError(msg)
        self._keep(auth, outcome.expires_at)
        self._note(auth.token, called)
        return True


def _bearer(tokens: ExternalAuthTokens | None) -> Auth | None:
    if tokens is None:
        return None
    if not tokens.access_token or not is_header_safe(tokens.access_token):
        logger.warning(
            "External bearer source returned an empty token or one that cannot be sent as a "
            "header (a line break, a control character or invalid Unicode)"
        )
        return None
    return Auth(AuthMode.BEARER, tokens.access_token)
