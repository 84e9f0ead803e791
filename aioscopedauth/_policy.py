"""The refresh policy, without I/O: how fresh a token is, and what to do after a re-read.

Small pure functions and values the coordinator (:mod:`._refresh`) asks: :func:`verdict`
(adopt, spend or refuse, written once), :class:`Freshness` with its named states, the login
identity two stored logins are compared by, and the expiry a refresh's answer leaves.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import TYPE_CHECKING, Literal, TypeVar

import attrs

from ._errors import AuthDataError, AuthError
from ._jwt import jwt_expiration
from ._model import Auth, AuthMode
from ._oauth import absolute_expiry, min_refresh_gap, stale_at

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from datetime import datetime

    from ._oauth import OAuthConfig, TokenResponse
    from ._snapshot import ChangeReason

__all__ = [
    "DUE",
    "EXPIRED",
    "FRESH",
    "Freshness",
    "Phase",
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

_R = TypeVar("_R")


# -- decisions (pure) -------------------------------------------------------------------------


class TokenState(enum.Enum):
    """How fresh a snapshot's access token is (google-auth's FRESH/STALE/INVALID, named ours)."""

    FRESH = "fresh"
    """Not due for a refresh (or never refreshed: API keys, bearer tokens, access tokens)."""
    DUE = "due"
    """Inside the refresh window, still valid: refresh, but callers may keep using it."""
    EXPIRED = "expired"
    """Past its ``exp``: a caller gains nothing by sending it."""


# Module constants: on Python 3.11 reading an enum member through its class costs more than the
# rest of a steady-state auth() (about 130 ns each); auth() runs on every request.
FRESH = TokenState.FRESH
DUE = TokenState.DUE
EXPIRED = TokenState.EXPIRED


class Verdict(enum.Enum):
    """What to do with the login after re-reading the store (see :func:`verdict`)."""

    KEEP_CURRENT = "keep_current"
    """This process already moved on from the expected login (a login, a reload, a refresh)."""
    ADOPT = "adopt"
    """Take the stored login: another writer's tokens, or (after a spend) whatever is there."""
    SPEND = "spend"
    """The store holds exactly the expected login: spend its refresh token."""
    UNCHANGED = "unchanged"
    """Nothing newer to take: keep a recorded failure, or keep waiting for a winner."""
    REFUSE = "refuse"
    """The store holds another account, or nothing: sign in again."""


Phase = Literal["before_spend", "after_failure", "after_spend"]
"""When the store was re-read: under the lock before spending; to see whether a recorded
failure still stands; or after our refresh token was spent (by us, or by someone else)."""


def verdict(expected: Auth, stored: Auth | None, current: Auth | None, phase: Phase) -> Verdict:
    """Decide between adopting, spending and refusing after a re-read of the store.

    Args:
        expected: The snapshot the refresh is for.
        stored: What the store holds now.
        current: What this process holds now.
        phase: When the store was read (see :data:`Phase`).

    Returns:
        The verdict.
    """
    if current != expected:
        return Verdict.KEEP_CURRENT
    if stored == expected:
        return Verdict.SPEND if phase == "before_spend" else Verdict.UNCHANGED
    if phase == "after_spend":
        # Our refresh token is gone: whatever the store holds wins, even another login, and an
        # empty store means a logout elsewhere.
        return Verdict.REFUSE if stored is None else Verdict.ADOPT
    if not same_login(stored, expected):
        return Verdict.REFUSE if phase == "before_spend" else Verdict.UNCHANGED
    return Verdict.ADOPT


def same_login(stored: Auth | None, expected: Auth) -> bool:
    """Whether ``stored`` is the login ``expected`` belongs to (newer tokens, perhaps).

    A ChatGPT login: the same account. A standard login: the same provider, client and
    subject (:func:`login_identity`), since every standard login's account id is ``None``.
    """
    if stored is None:
        return False
    if expected.mode is AuthMode.OAUTH or stored.mode is AuthMode.OAUTH:
        return stored.mode is expected.mode and login_identity(stored) == login_identity(expected)
    return stored.mode.is_chatgpt and stored.account_id == expected.account_id


def login_identity(auth: Auth) -> tuple[str, str, str | None, bool] | None:
    """Who a standard login is: (issuer, client id, subject, a client's own login), if stored."""
    login = None if auth.data is None else auth.data.provider_login
    if login is None:
        return None
    return (login.issuer, login.client_id, login.subject, login.grant == "client_credentials")


def may_adopt(stored: Auth, expected_account: str | None, rejected: Auth | None = None) -> bool:
    """Whether recovery's reload may adopt ``stored`` for a login of ``expected_account``."""
    if AuthMode.OAUTH in (stored.mode, None if rejected is None else rejected.mode):
        return rejected is not None and same_login(stored, rejected)
    if stored.mode is AuthMode.PERSONAL_ACCESS_TOKEN:
        # A new token on disk is adopted; its account (or the rejected one's) may be unknown
        # when whoami failed, and an unknown account is no evidence of another account.
        return expected_account is None or stored.account_id in (None, expected_account)
    return stored.mode.is_chatgpt and stored.account_id == expected_account


async def call_source(call: Awaitable[_R]) -> _R | str:
    """Await a host's or provider's source; return its result, or a safe description of why not.

    The source's exception is described (by :func:`describe`) and dropped here, so the error
    raised by the caller neither chains it nor has it as its context: a host app's exception may
    quote a token, and a chained one would reach every formatted traceback.
    """
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 -- any failure of a foreign source, described
        return describe(exc)


def describe(exc: BaseException) -> str:
    """A description of ``exc`` safe to log: our own message, else only the type's name."""
    # Our own errors carry safe messages; a third-party exception may quote a token.
    if isinstance(exc, AuthError):
        return str(exc)
    return type(exc).__name__


def merged_expiry(
    answer: TokenResponse, sent: datetime, *, standard: bool
) -> datetime | Literal["keep"] | None:
    """The ``tokens.expires_at`` a refresh's answer leaves in the stored login.

    Codex's dialect keeps what is stored (Codex ignores ``expires_in``). A standard answer with
    a new access token sets ``sent + expires_in`` less the whole-second slack
    (:func:`absolute_expiry`; ``sent`` is taken before the request, so the expiry is never
    later than the provider's), or drops the stored one, the old token's, when
    the answer names no lifetime; an answer without a new access token keeps it.
    """
    if not standard or answer.access_token is None:
        return "keep"
    if answer.expires_in is None:
        return None
    return absolute_expiry(sent, answer.expires_in)


# -- freshness --------------------------------------------------------------------------------


@attrs.define(eq=False)
class Freshness:
    """When a snapshot is due, and the guard against refreshing a token born due on every call.

    Decoding the access token once per snapshot keeps it off every request's path.
    """

    oauth: OAuthConfig
    cached: tuple[Auth | None, float | None, float | None] = (None, None, None)
    """(snapshot, due, exp): when the last snapshot checked becomes due and expires (epoch s)."""
    born_stale: tuple[Auth, float, float] | None = None
    """(snapshot, when, gap): a snapshot a refresh produced already due for a refresh (a clock
    ahead of the endpoint's), refreshed proactively at most once per gap seconds."""
    warned_skew: bool = False

    def state(self, snapshot: Auth) -> TokenState:
        """How fresh ``snapshot`` is now."""
        cached, due, exp = self.cached
        if cached is not snapshot:
            moment = stale_at(snapshot, self.oauth)
            due = None if moment is None else moment.timestamp()
            exp = None
            if due is not None:
                exp = _expiry(snapshot)
            self.cached = (snapshot, due, exp)
        if due is None:
            return FRESH
        now = time.time()
        if now < due:
            return FRESH
        return EXPIRED if exp is not None and exp <= now else DUE

    def note(self, new: Auth, reason: ChangeReason) -> None:
        """Note a new snapshot (the cell's ``on_set`` hook)."""
        # Only a snapshot our own refresh produced: whether another writer's tokens were due
        # when they were made cannot be told from here (each process bounds its own refreshes).
        self.born_stale = None
        if reason == "refresh" and self.state(new) is not FRESH:
            self.born_stale = (new, time.monotonic(), min_refresh_gap(new))

    def held_back(self, snapshot: Auth) -> bool:
        """Whether ``snapshot`` came from a refresh already due, and was refreshed too lately.

        A token that is due for a refresh the moment a refresh produced it (this machine's
        clock is ahead of the endpoint's, or the endpoint issues expired tokens) would otherwise
        be refreshed on every call. Such a snapshot is refreshed proactively at most once per
        :func:`min_refresh_gap`; a 401 still refreshes it at once.
        """
        born = self.born_stale
        if born is None or born[0] is not snapshot:
            return False
        _, since, gap = born
        if time.monotonic() - since >= gap:
            return False
        if not self.warned_skew:
            self.warned_skew = True
            logger.warning(
                "The token endpoint returned an access token that is already due for a refresh "
                "by this machine's clock: the clock may be ahead of the endpoint's, or the "
                "endpoint issues expired tokens. Proactive refreshes are held to one every "
                "%.0f s; check the clock.",
                gap,
            )
        return True


def _expiry(auth: Auth) -> float | None:
    if auth.data is None or auth.data.tokens is None:
        return None
    stored = auth.data.tokens.expires_at
    if stored is not None:
        # A standard login's expiry, from the answer's expires_in: opaque tokens have no exp.
        return stored.timestamp()
    try:
        exp = jwt_expiration(auth.data.tokens.access_token)
    except AuthDataError:
        return None
    return None if exp is None else exp.timestamp()
