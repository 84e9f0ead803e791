"""The refresh coordinator: one refresh for everyone, and the spend-and-commit transaction.

Concurrency invariants (DESIGN.md, "Rules that every change keeps"):

* Every managed or host-token refresh runs in **one** task per rejected snapshot (the in-flight
  refresh, :class:`InFlight`), under the family's ``asyncio.Lock`` and, for stores shared
  between processes, the store's cross-process ``lock()``. Each caller awaits a future of its
  own that the task settles when it ends (a shield, in effect): a cancelled caller stops
  waiting, but a refresh token already spent is still saved, so a cancellation can never lose
  a rotated refresh token.
* Under the lock, a caller whose snapshot was already replaced adopts the new one (no
  network); the store is re-read, and tokens another process wrote are adopted (no network);
  only then is the refresh token spent. What to do after each re-read is one pure decision,
  :func:`verdict`.
* The new tokens are committed with a compare-and-swap: written only if the store still holds
  the refresh token just spent; otherwise the stored login wins and is adopted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiohttp
import attrs

from ._commit import refreshed_payload, spend_key
from ._dialect import request_token_refresh
from ._errors import (
    AuthDataError,
    AuthError,
    RefreshFailureReason,
    RefreshTokenFailedError,
    StorageError,
    TransientRefreshError,
)
from ._external import ExternalAuthTokens, RefreshContext, auth_data_from_external_tokens
from ._grants import request_client_credentials
from ._loader import retrieve_exception
from ._model import Auth, AuthMode
from ._oauth import ACCOUNT_MISMATCH_MESSAGE
from ._policy import (
    EXPIRED,
    Freshness,
    Phase,
    TokenState,
    Verdict,
    call_source,
    describe,
    login_identity,
    may_adopt,
    merged_expiry,
    same_login,
    verdict,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._external import ExternalRefresher
    from ._loader import StoreReader
    from ._model import AuthDotJson
    from ._oauth import OAuthConfig, TokenResponse
    from ._session import SessionHolder
    from ._snapshot import ChangeReason, SnapshotCell

__all__ = [
    "Freshness",
    "InFlight",
    "Phase",
    "RefreshCoordinator",
    "TokenState",
    "Verdict",
    "call_source",
    "describe",
    "login_identity",
    "may_adopt",
    "merged_expiry",
    "same_login",
    "verdict",
]

logger = logging.getLogger("aioscopedauth.manager")

_WINNER_POLL_FIRST = 0.02
_WINNER_POLL_MAX = 0.2
"""How often the store is re-read while waiting for another writer's tokens after a reuse."""
_FAILURE_RECHECK = 1.0
"""After a failed refresh, ``auth()`` looks at the store for a newer login at most this often."""


def _now() -> datetime:
    return datetime.now(UTC)


def _skip_other_account(stored: Auth | None) -> None:
    logger.info(
        "Skipping auth reload: the stored account is %s, not the one in use",
        "unknown" if stored is None else (stored.account_id or "unknown"),
    )


def _mismatch() -> RefreshTokenFailedError:
    return RefreshTokenFailedError(RefreshFailureReason.OTHER, ACCOUNT_MISMATCH_MESSAGE)


async def _request(
    session: aiohttp.ClientSession, config: OAuthConfig, expected: Auth, refresh_token: str
) -> TokenResponse:
    """Spend the login's grant: its refresh token, or a client's own credentials again."""
    login = None if expected.data is None else expected.data.provider_login
    if (
        expected.mode is AuthMode.OAUTH
        and login is not None
        and login.grant == "client_credentials"
    ):
        # No refresh token (RFC 6749 §4.4.3): the token is minted again, as single-flight as a
        # refresh.
        return await request_client_credentials(session, config)
    return await request_token_refresh(session, config, refresh_token)


# -- single flight ----------------------------------------------------------------------------


@attrs.define(eq=False)
class InFlight:
    """The refresh under way for one rejected snapshot, and the callers waiting for it."""

    expected: Auth
    task: asyncio.Task[bool]
    waiters: list[asyncio.Future[bool]] = attrs.Factory(list)

    def wait(self) -> asyncio.Future[bool]:
        """Return a future of the refresh's outcome for one caller.

        Cancelling it stops that caller waiting, never the refresh (a spent refresh token is
        still saved). One future per caller rather than a shield per caller: a storm of 401s
        parks a thousand callers here, and a shield costs each of them two closures, two
        contexts and another future to keep alive, hence more garbage collection.
        """
        future: asyncio.Future[bool] = self.task.get_loop().create_future()
        self.waiters.append(future)
        return future

    def wake(self, task: asyncio.Task[bool]) -> None:
        """Hand the refresh's outcome to every caller still waiting (the task's done callback)."""
        waiters, self.waiters = self.waiters, []
        for future in waiters:
            if future.done():
                continue  # that caller was cancelled
            if task.cancelled():
                future.cancel()
            elif (error := task.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(task.result())


@attrs.define(eq=False)
class RefreshCoordinator:
    """Runs every refresh of a manager family: once per rejected snapshot, for all callers."""

    cell: SnapshotCell
    reader: StoreReader
    oauth: OAuthConfig
    session: SessionHolder
    forced_workspace: Callable[[], str | None]
    freshness: Freshness
    lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    inflight: InFlight | None = None
    requested: tuple[Auth | None, float] | None = None
    """(snapshot, when): the snapshot this process's last refresh produced, and when
    (``time.monotonic()``) its token request was sent. A 401 recovery tells from it whether the
    token it adopted was asked for after its 401, i.e. after whatever revoked the old one."""
    closing: asyncio.Task[None] | None = None
    """Closes the owned session once the refresh ends, when ``aclose()`` could not wait."""
    _closing_after: InFlight | None = None

    # -- entry points ------------------------------------------------------------------------

    def running_for(self, auth: Auth) -> bool:
        """Whether a refresh of exactly ``auth`` is under way."""
        inflight = self.inflight
        return inflight is not None and not inflight.task.done() and inflight.expected == auth

    def refreshed_since(self, auth: Auth | None, moment: float) -> bool:
        """Whether ``auth`` came from a token request this process sent at or after ``moment``."""
        requested = self.requested
        return (
            auth is not None
            and requested is not None
            and requested[0] == auth
            and requested[1] >= moment
        )

    def join(self, expected: Auth, host: ExternalRefresher | None) -> asyncio.Future[bool]:
        """Join (or start) the one refresh of ``expected``; await the returned future.

        Args:
            expected: The snapshot to refresh.
            host: The source of host-supplied tokens of the manager that starts the refresh
                (a refresh of host tokens asks it; a managed refresh ignores it).
        """
        self.cell.check_loop()
        inflight = self.inflight
        if inflight is None or inflight.task.done() or inflight.expected != expected:
            task = asyncio.get_running_loop().create_task(
                self._locked(expected, host), name="aioscopedauth-refresh"
            )
            task.add_done_callback(retrieve_exception)
            inflight = InFlight(expected, task)
            task.add_done_callback(inflight.wake)
            self.inflight = inflight
        # A cancelled caller stops waiting; the refresh itself runs to completion so a refresh
        # token that was spent is never lost.
        return inflight.wait()

    async def drain(self) -> None:
        """Wait for the refresh under way, if any (its outcome is its callers').

        ``aclose()`` drains before it closes the session. Cancelled meanwhile (an anyio cancel
        scope around ``async with manager`` cancels ``aclose()`` as well), it stops waiting,
        but the refresh goes on and may be reading the answer to a spent refresh token: the
        session is closed when the refresh ends, never under it.
        """
        inflight = self.inflight
        if inflight is None or inflight.task.done():
            return
        try:
            # asyncio.wait neither cancels the refresh nor raises its error (its callers').
            await asyncio.wait((inflight.task,))
        except asyncio.CancelledError:
            self._close_session_after(inflight)
            raise

    async def close_session(self) -> None:
        """Close the owned session now, or when the refresh under way ends (never under it)."""
        inflight = self.inflight
        if inflight is not None and not inflight.task.done():
            self._close_session_after(inflight)
            return
        await self.session.aclose()

    def _close_session_after(self, inflight: InFlight) -> None:
        if self._closing_after is inflight:
            return
        self._closing_after = inflight
        inflight.task.add_done_callback(self._close_session)

    def _close_session(self, _: object) -> None:
        self.closing = asyncio.get_running_loop().create_task(
            self.session.aclose(), name="aioscopedauth-close-session"
        )
        self.closing.add_done_callback(retrieve_exception)

    async def proactive(self, snapshot: Auth, host: ExternalRefresher | None) -> Auth | None:
        """Refresh a due snapshot if that can help; return the snapshot to use now.

        A failure is logged (said once for a storage failure) and the snapshot it had is
        returned.
        """
        if self.cell.known_failure(snapshot) is not None:
            # Already failed for this snapshot: do not hammer the endpoint on every call. But
            # the failure must not outlive a change of the store (another process or Codex
            # may have refreshed or logged in since): look at it, at most once a second.
            if await self._recheck_after_failure(snapshot):
                return self.cell.snapshot
            return snapshot
        # The latest refresh, running or ended, was for this snapshot and it is still valid:
        # keep using it rather than queue behind (or repeat) that refresh.
        inflight = self.inflight
        waiting_would_help = (
            inflight is None
            or inflight.expected != snapshot
            or self.freshness.state(snapshot) is EXPIRED
        )
        if not waiting_would_help or self.freshness.held_back(snapshot):
            # A refresh is already running while the token is still valid (keep using it),
            # or this token was refreshed too recently to refresh it again.
            return snapshot
        try:
            await self.join(snapshot, host)
        except StorageError as exc:
            # A read-only home, a full disk, a lock held too long: the same failure on every
            # call until someone fixes it. Back off like a transient failure and say it once.
            self._record(snapshot, TransientRefreshError(f"Failed to refresh token: {exc}"))
            self.cell.warn_once(f"Failed to refresh token: {exc}")
            return snapshot
        except (AuthError, aiohttp.ClientError) as exc:
            # Our refresh errors already say "Failed to refresh token: …"; say it once.
            text, prefix = str(exc), "Failed to refresh token: "
            logger.warning("%s", text if text.startswith(prefix) else prefix + text)
            return snapshot
        return self.cell.snapshot

    async def recovery_reload(self, expected_account: str | None, rejected: Auth | None) -> bool:
        """Adopt what the store holds now, if it is still the same account (recovery's reload).

        Returns:
            Whether the auth to send now differs from the rejected one.

        Raises:
            RefreshTokenFailedError: The store holds another account, or nothing.
            StorageError: The store could not be read.
        """
        cell = self.cell
        current = cell.snapshot
        if (
            rejected is not None
            and current is not None
            and current != rejected
            and current.account_id == expected_account
            and (rejected.mode is not AuthMode.OAUTH or same_login(current, rejected))
        ):
            return True
        if rejected is not None and self.running_for(rejected):
            # A refresh of this very auth is under way: its guarded re-read, under the refresh
            # lock, sees whatever this read would (and more recently). Read nothing; the next
            # step joins that refresh. In a storm of 401s this spares a read per wave.
            return False
        stored, version = await self.reader.load_coalesced()
        if cell.version != version:
            stored = cell.snapshot  # changed while we read: newer than what we read
        if stored is None or not may_adopt(stored, expected_account, rejected or current):
            _skip_other_account(stored)
            raise _mismatch()
        changed = cell.set(stored, "reload")
        return changed if rejected is None else stored != rejected

    # -- the locked refresh ------------------------------------------------------------------

    async def _locked(self, expected: Auth, host: ExternalRefresher | None) -> bool:
        cell = self.cell
        async with self.lock:
            if cell.snapshot != expected:
                logger.debug("Auth changed while waiting for the refresh lock; adopting it")
                return True
            known = cell.known_failure(expected)
            if known is not None:
                # A failure recorded for a snapshot must not outlive a change of the store:
                # another process (or Codex) may have logged in or refreshed since.
                if await self._adopt_stored_change(expected):
                    return True
                raise known
            if expected.mode is AuthMode.CHATGPT_AUTH_TOKENS:
                return await self._refresh_host_tokens(expected, host)
            # Our refresh lock, which Codex never takes: it serialises our processes' refreshes
            # (read, spend, commit) without ever delaying a Codex write.
            async with self.reader.store.lock():
                await self._save_unsaved()
                stored = await self.reader.load()
                decision = verdict(expected, stored, cell.snapshot, "before_spend")
                if decision is Verdict.KEEP_CURRENT:
                    return True  # replaced in this process while we read (a login, a reload)
                if decision is Verdict.REFUSE:
                    _skip_other_account(stored)
                    error = _mismatch()
                    self._record(expected, error)
                    raise error
                if decision is Verdict.ADOPT:
                    logger.debug("Skipping token refresh because auth changed after guarded reload")
                    cell.set(stored, "reload")
                    return True
                return await self._spend(expected)

    async def _recheck_after_failure(self, snapshot: Auth) -> bool:
        failure = self.cell.failure
        if failure is None or time.monotonic() - failure.checked < _FAILURE_RECHECK:
            return False
        failure.checked = time.monotonic()
        return await self._adopt_stored_change(snapshot)

    async def _adopt_stored_change(self, expected: Auth) -> bool:
        """Adopt the store's login if it changed since ``expected`` (same account: new tokens)."""
        try:
            stored, version = await self.reader.load_coalesced()
        except StorageError:
            return False
        cell = self.cell
        if cell.version != version:
            return True  # changed in this process while we read
        decision = verdict(expected, stored, cell.snapshot, "after_failure")
        if decision is Verdict.KEEP_CURRENT:
            return True
        if decision is not Verdict.ADOPT:
            return False
        logger.info("Adopting the tokens another process saved since the failed refresh")
        cell.set(stored, "reload")
        return True

    async def _save_unsaved(self) -> None:
        reader = self.reader
        if reader.unsaved is None:
            return
        replaced, refreshed = reader.unsaved
        try:
            # Compare-and-swap: only over the payload the refresh replaced. If someone else
            # (another process, a login) wrote since, theirs is newer and is kept.
            await reader.store.update(lambda current: refreshed if current == replaced else current)
        except StorageError as exc:
            logger.warning("Still cannot save the refreshed tokens: %s", exc)
        else:
            reader.unsaved = None
            logger.info("Saved the refreshed tokens that could not be saved before")

    # -- spend: post, merge, commit ----------------------------------------------------------

    async def _spend(self, expected: Auth) -> bool:
        data = expected.data
        if data is None or data.tokens is None:
            msg = "Token data is not available."
            raise TransientRefreshError(msg)
        # The CAS key; a client's own login has no refresh token, its access token stands in.
        spent = spend_key(data.tokens)
        sent = _now()  # before the POST: the lifetime runs from when the endpoint answered
        asked = time.monotonic()  # likewise: see refreshed_since
        answer = await self._post(expected, data.tokens.refresh_token)
        if answer is None:
            return True  # someone else's tokens were adopted
        merge = self._merger(answer, sent, standard=self.oauth.is_standard)
        try:
            merged = merge(data)
        except AuthDataError as exc:
            msg = f"Failed to refresh token: the token endpoint returned a bad id token ({exc})"
            raise TransientRefreshError(msg) from exc
        return await self._commit(
            expected, data=data, spent=spent, merge=merge, merged=merged, answer=answer, asked=asked
        )

    async def _post(self, expected: Auth, spent: str) -> TokenResponse | None:
        """Spend ``spent`` at the token endpoint.

        Returns:
            The usable answer, or ``None`` when the refusal was another writer's win and its
            tokens were adopted.
        """
        logger.info("Refreshing token")
        try:
            answer = await _request(self.session.get(), self.oauth, expected, spent)
        except RefreshTokenFailedError as exc:
            # Final only after a look at the store: whoever spent the token first (another of
            # our processes, or Codex, which spends before it locks) may be about to save.
            if await self._look_for_winner(expected, exc):
                return None
            self._record(expected, exc)
            raise
        except TransientRefreshError as exc:
            self._record(expected, exc)
            raise
        if not answer.usable:
            # Nothing in the answer can be kept: report it and leave the store as it is.
            msg = (
                "Failed to refresh token: the token endpoint's answer was unusable "
                f"({'; '.join(answer.problems)}). Retry later."
            )
            error = TransientRefreshError(msg)
            self._record(expected, error)
            raise error
        return answer

    @staticmethod
    def _merger(
        answer: TokenResponse, sent: datetime, *, standard: bool
    ) -> Callable[[AuthDotJson], AuthDotJson]:
        expires_at = merged_expiry(answer, sent, standard=standard)

        def merge(stored: AuthDotJson) -> AuthDotJson:
            return stored.with_refreshed_tokens(
                id_token=answer.id_token,
                access_token=answer.access_token,
                refresh_token=answer.refresh_token,
                now=_now(),
                expires_at=expires_at,
            )

        return merge

    async def _commit(  # noqa: PLR0913 -- the transaction's parts, named rather than bundled
        self,
        expected: Auth,
        *,
        data: AuthDotJson,
        spent: str,
        merge: Callable[[AuthDotJson], AuthDotJson],
        merged: AuthDotJson,
        answer: TokenResponse,
        asked: float,
    ) -> bool:
        reader = self.reader
        host_tokens = data.resolved_mode is AuthMode.CHATGPT_AUTH_TOKENS
        target = reader.memory if host_tokens else reader.store
        unsaved = reader.unsaved
        # While an earlier refresh's tokens are unsaved, the store still holds the payload they
        # replaced: the commit compares against what this process knows it stands for, or it
        # would find the long-spent token there, write nothing and adopt it.
        replaced = unsaved[0] if unsaved is not None and unsaved[1] == data else data

        def change(current: AuthDotJson | None) -> AuthDotJson | None:
            known = unsaved[1] if unsaved is not None and current == unsaved[0] else current
            new = refreshed_payload(known, spent, merge)
            return current if new is known else new

        try:
            # Codex's commit protocol, held for milliseconds: the new tokens are written only
            # if the store still holds the refresh token just spent.
            result = await target.update(change)
        except StorageError as exc:
            # The endpoint already rotated the refresh token: dropping the answer would log
            # the user out. Keep it in memory (over what the store still holds) and save it
            # on the next refresh.
            reader.unsaved = (replaced, merged)
            logger.error(  # noqa: TRY400 -- the message says it all; no traceback wanted
                "Refreshed, but could not save the new tokens (%s); keeping them in memory "
                "and saving them again on the next refresh",
                exc,
            )
            self._produced(reader.auth_for(merged), asked, "refresh")
            return self._report_unusable_parts(answer)
        reader.unsaved = None
        if result.written:
            # The answer is "does the caller now have other auth", not "did this call change
            # the snapshot": a reload that read the saved file meanwhile may have set it.
            self._produced(reader.auth_for(result.after), asked, "refresh")
            return self._report_unusable_parts(answer)
        # Someone wrote the login after we read it: a logout, a new login, or another writer's
        # tokens. Theirs wins; the answer to our spent token is dropped.
        logger.info("Kept the login another process saved during the refresh; not writing ours")
        return self._adopt_after_spend(expected, reader.auth_for(result.after))

    def _report_unusable_parts(self, answer: TokenResponse) -> bool:
        """After keeping the usable part of an answer, raise for the parts that were dropped."""
        if not answer.problems:
            return True
        if "refresh_token" in answer.dropped:
            kept = "it returned no usable refresh token, so if the next refresh fails, log in again"
        elif answer.refresh_token is not None:
            kept = "the new refresh token was kept"
        else:
            kept = "the rest was kept"
        msg = (
            "Failed to refresh token: the token endpoint's answer was partly unusable "
            f"({'; '.join(answer.problems)}); {kept}. Retry later."
        )
        error = TransientRefreshError(msg)
        snapshot = self.cell.snapshot
        if snapshot is not None:
            self._record(snapshot, error)
        raise error

    def _adopt_after_spend(self, expected: Auth, stored: Auth | None) -> bool:
        """Adopt what the store holds after our refresh token was spent elsewhere or replaced.

        The store wins: new tokens of the same account, a new login (of any kind) or a logout.

        Returns:
            ``True``: the manager now holds the stored login.

        Raises:
            RefreshTokenFailedError: The store holds no login any more (logged out elsewhere).
        """
        self.cell.set(stored, "reload")
        if stored is not None:
            if not same_login(stored, expected):
                logger.info("A new login replaced the one being refreshed; using it")
            return True
        _skip_other_account(stored)
        raise _mismatch()

    async def _look_for_winner(self, expected: Auth, error: RefreshTokenFailedError) -> bool:
        """Wait (boundedly) for the tokens of whoever spent our refresh token first.

        Returns:
            Whether other auth was adopted.

        Raises:
            RefreshTokenFailedError: The store now holds no login.
        """
        grace = 0.0
        if error.reason is RefreshFailureReason.EXHAUSTED:
            grace = self.oauth.reuse_grace.total_seconds()
        deadline = time.monotonic() + grace
        delay = _WINNER_POLL_FIRST
        while True:
            try:
                stored = await self.reader.load()
            except StorageError:
                stored = expected  # unreadable right now: as if unchanged, look again
            decision = verdict(expected, stored, self.cell.snapshot, "after_spend")
            if decision is Verdict.KEEP_CURRENT:
                return True  # replaced in this process meanwhile (a login, a logout)
            if decision is not Verdict.UNCHANGED:
                logger.info("The refresh token was spent by another process; using its tokens")
                return self._adopt_after_spend(expected, stored)
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _WINNER_POLL_MAX)

    # -- host-supplied tokens ----------------------------------------------------------------

    async def _refresh_host_tokens(self, expected: Auth, host: ExternalRefresher | None) -> bool:
        if host is None or host.mode is not AuthMode.CHATGPT_AUTH_TOKENS:
            msg = "external auth is not configured"
            raise TransientRefreshError(msg)
        context = RefreshContext(
            previous_account_id=expected.account_id, rejected_token=expected.token
        )
        asked = time.monotonic()
        outcome = await call_source(host.refresh(context))
        if not isinstance(outcome, ExternalAuthTokens):
            msg = f"external auth refresh failed: {outcome}"
            raise TransientRefreshError(msg)
        meta = outcome.chatgpt_metadata
        if meta is None:
            msg = "external auth refresh did not return ChatGPT metadata"
            raise TransientRefreshError(msg)
        wanted = self.forced_workspace()
        if wanted is not None and meta.account_id != wanted:
            msg = (
                f"external auth refresh returned workspace {meta.account_id!r}, expected {wanted!r}"
            )
            raise TransientRefreshError(msg)
        try:
            data = auth_data_from_external_tokens(outcome, _now())
        except AuthDataError as exc:
            msg = f"external auth refresh returned unusable tokens: {exc}"
            raise TransientRefreshError(msg) from exc
        await self.reader.memory.save(data)
        self._produced(
            Auth.from_data(data, account_header=self.oauth.account_header), asked, "external"
        )
        return True

    def _produced(self, auth: Auth | None, asked: float, reason: ChangeReason) -> None:
        """Make ``auth``, which a token request sent at ``asked`` produced, the snapshot."""
        self.requested = (auth, asked)
        self.cell.set(auth, reason)

    def _record(
        self, attempted: Auth, error: RefreshTokenFailedError | TransientRefreshError
    ) -> None:
        self.cell.record_failure(attempted, error, self.oauth.failure_backoff.total_seconds())
