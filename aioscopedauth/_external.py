"""External token sources: the ``ExternalRefresher`` protocol and the values it exchanges.

Two kinds of source exist (reference §2.2): a *bearer* source (a command that mints a token for
one provider; ``mode`` is ``AuthMode.BEARER``) and a *host app* that supplies ChatGPT tokens
(``mode`` is ``AuthMode.CHATGPT_AUTH_TOKENS``).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from ._errors import AuthDataError
from ._jwt import IdTokenInfo, PlanType
from ._model import AuthDotJson, AuthMode, TokenData, is_header_safe

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "ChatgptMetadata",
    "ExternalAuthTokens",
    "ExternalRefresher",
    "RefreshContext",
    "RefreshReason",
    "auth_data_from_external_tokens",
]


class RefreshReason(enum.Enum):
    """Why an external source is asked for a new token."""

    UNAUTHORIZED = "unauthorized"
    """A server answered 401 to the current token."""


@attrs.frozen
class RefreshContext:
    """What an external source is told when it must refresh.

    Attributes:
        reason: Why.
        previous_account_id: The account id of the auth being replaced, if any.
        rejected_token: The token the server rejected, if known. A source uses it to refresh
            once for many concurrent 401s on the same token. Never shown in ``repr``.
    """

    reason: RefreshReason = RefreshReason.UNAUTHORIZED
    previous_account_id: str | None = None
    rejected_token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ChatgptMetadata:
    """The account details a host app sends with ChatGPT tokens.

    Attributes:
        account_id: The ChatGPT workspace (account) id.
        plan_type: The plan name, if known.
    """

    account_id: str
    plan_type: str | None = None


@attrs.frozen
class ExternalAuthTokens:
    """A token from an external source.

    Attributes:
        access_token: The bearer value. Never shown in ``repr``.
        chatgpt_metadata: Account details, for host-supplied ChatGPT tokens only.
        expires_at: When the token expires, if the source said so.
    """

    access_token: str = attrs.field(repr=False)
    chatgpt_metadata: ChatgptMetadata | None = None
    expires_at: datetime | None = None

    @classmethod
    def access_token_only(
        cls, access_token: str, *, expires_at: datetime | None = None
    ) -> ExternalAuthTokens:
        """Return a bearer-only token (no account).

        Args:
            access_token: The token.
            expires_at: When it expires, if known.

        Returns:
            The value.
        """
        return cls(access_token, None, expires_at)

    @classmethod
    def chatgpt(
        cls, access_token: str, account_id: str, plan_type: str | None = None
    ) -> ExternalAuthTokens:
        """Return host-supplied ChatGPT tokens.

        Args:
            access_token: The ChatGPT access token (a JWT).
            account_id: The workspace id.
            plan_type: The plan name, if known.

        Returns:
            The value.
        """
        return cls(access_token, ChatgptMetadata(account_id, plan_type))


@runtime_checkable
class ExternalRefresher(Protocol):
    """A source of tokens outside the store: a bearer command, or a host app's ChatGPT tokens.

    A manager gives a bearer source a single flight: ``refresh()`` runs once per rejected token
    however many requests saw it, and a ``resolve()`` answer is reused until a refresh replaces
    it (or, when it has an ``expires_at``, until three quarters of its remaining lifetime have
    passed). A source that caches on its own terms sets a class attribute
    ``cache_resolved = False``, and is then asked on every call.
    """

    @property
    def mode(self) -> AuthMode:
        """``AuthMode.BEARER`` for a bearer source, ``AuthMode.CHATGPT_AUTH_TOKENS`` for a host."""
        ...

    async def resolve(self) -> ExternalAuthTokens | None:
        """Return the current token, minting one if needed; ``None`` if the source has none.

        Raises:
            AuthError: The source failed (for a command: :class:`CommandError`).
        """
        ...

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        """Return a new token after a server rejected the current one.

        Args:
            context: Why, and which token was rejected.

        Raises:
            AuthError: The source failed.
        """
        ...


def auth_data_from_external_tokens(tokens: ExternalAuthTokens, now: datetime) -> AuthDotJson:
    """Build the in-memory payload for host-supplied ChatGPT tokens (reference §1.3).

    The access token's claims stand in for the id token's; the account id and plan from the
    metadata override the claims.

    Args:
        tokens: The host's tokens.
        now: Recorded as ``last_refresh``.

    Returns:
        A ``chatgptAuthTokens`` payload with an empty refresh token.

    Raises:
        AuthDataError: The tokens carry no ChatGPT metadata, or the access token is not a JWT.
    """
    meta = tokens.chatgpt_metadata
    if meta is None:
        msg = "external auth tokens are missing ChatGPT metadata"
        raise AuthDataError(msg)
    if not is_header_safe(tokens.access_token) or not is_header_safe(meta.account_id):
        msg = "external auth tokens contain a line break, a control character or invalid Unicode"
        raise AuthDataError(msg)
    info = IdTokenInfo.parse(tokens.access_token)
    plan = (
        PlanType.from_raw_value(meta.plan_type)
        if meta.plan_type
        else info.chatgpt_plan_type or PlanType.unknown("unknown")
    )
    info = attrs.evolve(info, chatgpt_account_id=meta.account_id, chatgpt_plan_type=plan)
    return AuthDotJson(
        auth_mode=AuthMode.CHATGPT_AUTH_TOKENS,
        tokens=TokenData(
            id_token=info,
            access_token=tokens.access_token,
            refresh_token="",
            account_id=meta.account_id,
        ),
        last_refresh=now,
    )
