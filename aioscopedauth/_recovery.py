"""``UnauthorizedRecovery``: the staged answer to a 401 (reference §4).

Managed logins go ``reload`` (adopt what another process saved, if it is the same account) →
``refresh_token`` (spend the refresh token) → ``done``; a personal access token, which cannot
be refreshed, goes ``reload`` (adopt a new token saved since) → ``done``. External sources
(bearer commands and host-supplied tokens) go ``external_refresh`` → ``done``. API keys and
missing auth never recover. The choice of step is a pure function, :func:`next_step`.

A ``refresh_token`` or ``external_refresh`` step runs again when the token it produced was
asked for before the 401 arrived: it joined (or adopted) a refresh already under way, whose
token a revocation may have killed on its way back, so a 401 to it proves nothing about the
login (issue 23). After a step whose token was asked for after the 401 ("fresh") the recovery
is done; a caller whose retry with that token is rejected again says so
(:meth:`UnauthorizedRecovery.rejected_again`, as the middleware does), and one more refresh
step is allowed when that was the first fresh token rejected (a revocation may land right
after a token is minted) or when it had expired by then (a managed access token's ``exp``
says so). The second fresh token rejected ends the recovery, and so does the third refresh
step (``MAX_REFRESH_STEPS`` (3)) whatever its token.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from ._errors import AuthDataError, RefreshFailureReason, RefreshTokenFailedError
from ._jwt import jwt_expiration
from ._model import Auth, AuthMode

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from ._external import ExternalRefresher

__all__ = ["RecoveryStep", "RecoveryTarget", "StepName", "UnauthorizedRecovery", "next_step"]

StepName = Literal["reload", "refresh_token", "external_refresh", "done"]
ModeName = Literal["managed", "external"]
NO_MORE_STEPS_MESSAGE = "No more recovery steps available."
MAX_REFRESH_STEPS = 3
"""A refresh step runs at most this often in one recovery (the repeats: see the module)."""
FRESH_REJECTIONS = 2
"""Fresh tokens (asked for after their 401) rejected before the login is taken as unusable."""


@attrs.frozen
class RecoveryStep:
    """The outcome of one recovery step.

    Attributes:
        name: The step that ran.
        auth_state_changed: Whether it produced different auth (``False``: retrying would send
            the token the server just rejected).
        fresh: For a refresh step that changed the auth: whether its token was asked for
            after the 401 (``True``: the recovery is done, unless told of a rejection that
            proves nothing; see :meth:`UnauthorizedRecovery.rejected_again`) or before, by a
            refresh this step joined or adopted (``False``: another refresh step may follow).
            ``None`` for other steps.
    """

    name: StepName
    auth_state_changed: bool | None
    fresh: bool | None = attrs.field(default=None, eq=False)  # a detail: compare as before


def next_step(
    mode: ModeName, step: StepName, *, refreshable: bool = True, conclusive: bool = True
) -> StepName:
    """Return the step after ``step`` (the state machine, without I/O).

    Args:
        mode: ``managed`` or ``external``.
        step: The step that just succeeded.
        refreshable: ``False`` for a login that has no refresh token (a personal access
            token): a managed recovery ends after its reload.
        conclusive: ``False`` when a refresh step (``refresh_token``, ``external_refresh``)
            produced a token that was asked for before the 401, and may run again: a 401 to
            that token would not prove the login unusable.

    Returns:
        The following step.
    """
    if mode == "managed" and step == "reload" and refreshable:
        return "refresh_token"
    if step in {"refresh_token", "external_refresh"} and not conclusive:
        return step
    return "done"


class RecoveryTarget(Protocol):
    """What a recovery needs of the manager whose auth was rejected (``AuthManager`` has it).

    The recovery depends on this, not on the manager, so it sits below the manager in the
    import graph.
    """

    @property
    def mode(self) -> AuthMode | None:
        """``BEARER`` for a bearer manager, else the mode of the cached snapshot."""
        ...

    @property
    def external_auth(self) -> ExternalRefresher | None:
        """The manager's external source, if any."""
        ...

    def auth_cached(self) -> Auth | None:
        """The cached snapshot."""
        ...

    async def auth(self) -> Auth | None:
        """The auth to send now (for a bearer manager, its source's token)."""
        ...

    async def reload_if_account_matches(
        self, expected_account: str | None, rejected: Auth | None = None
    ) -> bool:
        """The reload step."""
        ...

    async def refresh_rejected(self, rejected: Auth | None = None) -> bool:
        """The refresh_token step."""
        ...

    async def refresh_external_auth(self, rejected: Auth | None = None) -> bool:
        """The external_refresh step."""
        ...

    def refreshed_since(self, auth: Auth | None, moment: float) -> bool:
        """Whether ``auth`` came from a token request sent at or after ``moment``."""
        ...

    def bearer_refreshed_since(self, moment: float) -> bool:
        """Whether the latest bearer token was asked for at or after ``moment``."""
        ...


def expired_by_now(auth: Auth) -> bool:
    """Whether ``auth``'s access token has expired by this machine's clock.

    Args:
        auth: A snapshot.

    Returns:
        ``False`` for a token without a known expiry (``tokens.expires_at`` or a JWT ``exp``).
    """
    if auth.data is None or auth.data.tokens is None:
        return False
    exp = auth.data.tokens.expires_at  # a standard provider's expires_in, kept
    if exp is None:
        try:
            exp = jwt_expiration(auth.token)
        except AuthDataError:
            return False
    return exp is not None and exp.timestamp() <= time.time()


class UnauthorizedRecovery:
    """Steps through the recovery of one rejected request.

    Get one from :meth:`AuthManager.unauthorized_recovery`. Either call :meth:`next` while
    :meth:`has_next`, or iterate: ``async for step in recovery:`` runs one step per iteration
    and ends when none is left. Calling :meth:`next` again says the auth the previous step
    produced was rejected too; so a repeated refresh step (see the module) runs for an
    iteration only when the auth rejected again is sent to the generator (``asend``).

    Args:
        manager: The manager whose auth was rejected.
        rejected: The auth the server rejected; defaults to the manager's cached snapshot.
    """

    # Slots: a storm of 401s keeps a thousand of these alive at once (one object each, no dict).
    __slots__ = (
        "_expected_account",
        "_final",
        "_fresh_steps",
        "_manager",
        "_mode",
        "_refreshable",
        "_refreshes",
        "_rejected",
        "_step",
    )

    def __init__(self, manager: RecoveryTarget, rejected: Auth | None = None) -> None:
        """Create the recovery; see the class docstring."""
        self._manager = manager
        cached = manager.auth_cached()
        self._rejected = rejected
        if rejected is None and manager.mode is not AuthMode.BEARER:
            self._rejected = cached
        basis = self._rejected or cached
        self._expected_account = None if basis is None else basis.account_id
        external = manager.mode is AuthMode.BEARER or (
            basis is not None and basis.mode is AuthMode.CHATGPT_AUTH_TOKENS
        )
        self._mode: ModeName = "external" if external else "managed"
        self._refreshable = basis is None or basis.mode is not AuthMode.PERSONAL_ACCESS_TOKEN
        self._step: StepName = "external_refresh" if external else "reload"
        self._refreshes = 0
        self._fresh_steps = 0
        self._final = False
        """Whether the last step was a fresh refresh step (see rejected_again)."""

    @property
    def mode_name(self) -> ModeName:
        """``managed`` or ``external``."""
        return self._mode

    @property
    def step_name(self) -> StepName:
        """The next step to run, or ``done``."""
        return self._step

    def unavailable_reason(self) -> str:
        """Why :meth:`has_next` is false, or ``ready``.

        Returns:
            ``ready``, ``recovery_exhausted``, ``not_chatgpt_auth`` or ``no_external_auth``.
        """
        manager = self._manager
        if manager.mode is AuthMode.BEARER:
            return "recovery_exhausted" if self._step == "done" else "ready"
        cached = manager.auth_cached()
        if cached is None or not (
            cached.mode.is_refreshable or cached.mode is AuthMode.PERSONAL_ACCESS_TOKEN
        ):
            return "not_chatgpt_auth"
        if self._mode == "external" and manager.external_auth is None:
            return "no_external_auth"
        return "recovery_exhausted" if self._step == "done" else "ready"

    def has_next(self) -> bool:
        """Whether another step can run (evaluated against the manager's current state)."""
        return self.unavailable_reason() == "ready"

    def rejected_again(self, auth: Auth) -> None:
        """Say that a retry with the auth the last step produced was answered 401 too.

        After a fresh refresh step (its token asked for after the 401) the recovery is done,
        but this rejection may still say nothing about the login: it is the first fresh token
        rejected (a revocation can land right after a token is minted), or the token had
        expired by the time it arrived (a stalled event loop). Then one more refresh step
        becomes available (:meth:`has_next`), within ``MAX_REFRESH_STEPS`` (3).

        Args:
            auth: The auth the rejected retry carried.
        """
        if not self._final or self._step != "done" or self._refreshes >= MAX_REFRESH_STEPS:
            return
        self._final = False
        if self._fresh_steps < FRESH_REJECTIONS or expired_by_now(auth):
            self._step = "external_refresh" if self._mode == "external" else "refresh_token"

    async def next(self, rejected: Auth | None = None) -> RecoveryStep:
        """Run the next step.

        Args:
            rejected: The auth the latest attempt carried, when the caller knows it (the
                middleware does). By default, the auth the previous step produced.

        Returns:
            What it did.

        Raises:
            RefreshTokenFailedError: No step is left, the stored account changed, or the refresh
                was refused for good (log in again).
            TransientRefreshError: The step failed for now; it was not advanced, so calling
                again retries it.
            StorageError: The store could not be read or written.
        """
        if not self.has_next():
            raise RefreshTokenFailedError(RefreshFailureReason.OTHER, NO_MORE_STEPS_MESSAGE)
        step = self._step
        manager = self._manager
        # The 401 that brought the caller here arrived before this moment, and so did whatever
        # revoked the rejected token: a token requested from now on was minted after it.
        observed = time.monotonic()
        if rejected is not None:
            self._rejected = rejected
        conclusive = True
        fresh: bool | None = None
        if step == "reload":
            try:
                changed = await manager.reload_if_account_matches(
                    self._expected_account, self._rejected
                )
            except RefreshTokenFailedError:
                self._step = "done"
                raise
        else:
            if step == "refresh_token":
                changed = await manager.refresh_rejected(self._rejected)
            else:
                changed = await manager.refresh_external_auth(self._rejected)
            self._refreshes += 1
            # Joining a refresh that was already under way (or adopting its result) may hand
            # us a token minted before the revocation that caused this 401, so dead too: a 401
            # to it is no evidence against the login. One more refresh is then allowed.
            if changed:
                fresh = (
                    manager.bearer_refreshed_since(observed)
                    if manager.mode is AuthMode.BEARER
                    else manager.refreshed_since(manager.auth_cached(), observed)
                )
                self._fresh_steps += fresh
            conclusive = not changed or bool(fresh) or self._refreshes >= MAX_REFRESH_STEPS
            self._final = bool(fresh)
        self._step = next_step(
            self._mode, step, refreshable=self._refreshable, conclusive=conclusive
        )
        if self._mode == "managed" or manager.mode is not AuthMode.BEARER:
            # The retry sends what the manager holds now; that is what a next 401 rejects.
            self._rejected = manager.auth_cached()
        elif changed:
            # A bearer token lives in the source's cache, not the snapshot.
            self._rejected = await manager.auth()
        return RecoveryStep(step, changed, fresh)

    async def __aiter__(self) -> AsyncGenerator[RecoveryStep, Auth | None]:
        """Run one step per iteration until none is left.

        The generator may be sent (``asend``) the auth the latest attempt carried; see
        :meth:`next`. Close it (``aclose``) when done early. A plain ``async for`` sends
        nothing, so it runs each step once: a second ``refresh_token`` needs word that the
        first one's token was rejected.
        """
        rejected: Auth | None = None
        while self.has_next():
            if rejected is None and self._refreshes:
                return
            rejected = yield await self.next(rejected)
            if rejected is not None:
                self.rejected_again(rejected)  # as the middleware does after a failed retry

    def __repr__(self) -> str:
        """Show the mode and the next step."""
        return f"<UnauthorizedRecovery mode={self._mode} step={self._step}>"
