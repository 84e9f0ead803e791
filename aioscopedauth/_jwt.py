"""Unsigned JWT payload decoding, the id-token claims, the plan type and the ``exp`` claim.

Nothing here verifies a signature: the tokens come from our own token endpoint or store, and
the claims are only used to display the account and to decide when to refresh (reference §1.3).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from ._errors import AuthDataError

__all__ = ["IdTokenInfo", "PlanType", "decode_jwt_payload", "jwt_expiration"]

_AUTH_CLAIM = "https://api.openai.com/auth"
_PROFILE_CLAIM = "https://api.openai.com/profile"
_MIN_JWT_PARTS = 3


_NOT_JSON = object()


def decode_jwt_payload(jwt: str) -> dict[str, Any]:
    """Decode the payload of a JWT without checking its signature.

    Args:
        jwt: The compact JWT (``header.payload.signature``).

    Returns:
        The payload's JSON object.

    Raises:
        AuthDataError: The string is not a JWT with a base64url (unpadded) JSON-object payload.
            The message never quotes the token.
    """
    parts = jwt.split(".")
    # Reference §1.3: three non-empty parts at least; extra parts are ignored.
    if len(parts) < _MIN_JWT_PARTS or not all(parts[:_MIN_JWT_PARTS]):
        msg = "invalid ID token format"
        raise AuthDataError(msg)
    payload = parts[1]
    # Codex decodes with base64url *without* padding and rejects padded input; so do we.
    if "=" in payload or len(payload) % 4 == 1:
        msg = "invalid ID token format: the payload is not unpadded base64url"
        raise AuthDataError(msg)
    claims: object = None
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        # Handled here and raised below: the decoder's exception holds the decoded token.
        claims = _NOT_JSON
    if claims is _NOT_JSON:
        msg = "invalid ID token format: the payload is not base64url-encoded JSON"
        raise AuthDataError(msg)
    if not isinstance(claims, dict):
        msg = "invalid ID token format: the payload is not a JSON object"
        raise AuthDataError(msg)
    return claims


def jwt_expiration(jwt: str) -> datetime | None:
    """Read the standard ``exp`` claim of a JWT.

    Args:
        jwt: The compact JWT, normally an access token.

    Returns:
        The expiry as an aware UTC datetime, or ``None`` when the token has no ``exp``.

    Raises:
        AuthDataError: The token is not a JWT, or ``exp`` is not a number of seconds.
    """
    exp = decode_jwt_payload(jwt).get("exp")
    if exp is None:
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        msg = "invalid JWT: the exp claim is not a number"
        raise AuthDataError(msg)
    try:
        return datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        msg = "invalid JWT: the exp claim is out of range"
        raise AuthDataError(msg) from exc


@attrs.frozen(repr=False)
class PlanType:
    """A ChatGPT plan, as found in the id token's ``chatgpt_plan_type`` claim.

    Known plans are class constants (``PlanType.PRO`` …); anything else is
    ``PlanType.unknown(raw)``, which keeps the raw claim.

    Attributes:
        value: The canonical plan name for a known plan, else the raw claim.
        known: Whether the plan is one of the known names.
    """

    value: str
    known: bool = True

    FREE: ClassVar[PlanType]
    GO: ClassVar[PlanType]
    PLUS: ClassVar[PlanType]
    PRO: ClassVar[PlanType]
    PROLITE: ClassVar[PlanType]
    TEAM: ClassVar[PlanType]
    BUSINESS: ClassVar[PlanType]
    ENTERPRISE: ClassVar[PlanType]
    EDU: ClassVar[PlanType]
    SELF_SERVE_BUSINESS_USAGE_BASED: ClassVar[PlanType]
    ENTERPRISE_CBP_USAGE_BASED: ClassVar[PlanType]

    _KNOWN: ClassVar[dict[str, PlanType]]
    _ALIASES: ClassVar[dict[str, str]] = {"hc": "enterprise", "education": "edu"}

    @classmethod
    def unknown(cls, raw: str) -> PlanType:
        """Return the plan for a claim that names no known plan.

        Args:
            raw: The claim as found.

        Returns:
            ``PlanType(raw, known=False)``.
        """
        return cls(raw, known=False)

    @classmethod
    def from_claim(cls, raw: str) -> PlanType:
        """Parse the claim the way Codex deserialises it: exact lowercase names, else unknown.

        Args:
            raw: The ``chatgpt_plan_type`` claim.

        Returns:
            The known plan with that exact name, else ``PlanType.unknown(raw)``.
        """
        return cls._KNOWN.get(raw) or cls.unknown(raw)

    @classmethod
    def from_raw_value(cls, raw: str) -> PlanType:
        """Parse a plan name case-insensitively, with Codex's aliases (``hc``, ``education``).

        Args:
            raw: A plan name, e.g. from a host app's metadata.

        Returns:
            The known plan, else ``PlanType.unknown(raw)``.
        """
        name = raw.strip().lower()
        return cls._KNOWN.get(cls._ALIASES.get(name, name)) or cls.unknown(raw)

    def __repr__(self) -> str:
        """Show ``PlanType.PRO`` or ``PlanType.unknown('raw')``."""
        if self.known:
            return f"PlanType.{self.value.upper()}"
        return f"PlanType.unknown({self.value!r})"

    def __str__(self) -> str:
        """Return the plan name (the raw claim for an unknown plan)."""
        return self.value


PlanType._KNOWN = {}  # noqa: SLF001 -- the class fills its own registry once, at import
for _name in (
    "free",
    "go",
    "plus",
    "pro",
    "prolite",
    "team",
    "business",
    "enterprise",
    "edu",
    "self_serve_business_usage_based",
    "enterprise_cbp_usage_based",
):
    _plan = PlanType(_name)
    PlanType._KNOWN[_name] = _plan  # noqa: SLF001 -- see above
    setattr(PlanType, _name.upper(), _plan)
del _name, _plan


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        msg = f"invalid ID token: the {key} claim is not a string"
        raise AuthDataError(msg)
    return value


@attrs.frozen
class IdTokenInfo:
    """The claims of an id token that aioscopedauth uses, and the raw JWT, kept verbatim.

    Attributes:
        email: The ``email`` claim, else the profile claim's ``email``.
        chatgpt_plan_type: The plan claim, or ``None`` when absent (see :attr:`plan_type`).
        chatgpt_user_id: ``chatgpt_user_id``, else ``user_id``, from the auth claim.
        chatgpt_account_id: The workspace (account) id claim.
        raw_jwt: The token as stored; written back unchanged. Never shown in ``repr``.
    """

    email: str | None = None
    chatgpt_plan_type: PlanType | None = None
    chatgpt_user_id: str | None = None
    chatgpt_account_id: str | None = None
    raw_jwt: str = attrs.field(default="", repr=False)

    @property
    def plan_type(self) -> PlanType:
        """The plan, with a missing claim reported as ``PlanType.unknown('unknown')``."""
        return self.chatgpt_plan_type or PlanType.unknown("unknown")

    @classmethod
    def parse(cls, jwt: str) -> IdTokenInfo:
        """Parse an id token (no signature check).

        Args:
            jwt: The raw id token.

        Returns:
            The claims, with ``raw_jwt`` set to ``jwt``.

        Raises:
            AuthDataError: The token is not a JWT or a claim has the wrong type.
        """
        claims = decode_jwt_payload(jwt)
        email = _optional_str(claims, "email")
        if email is None:
            profile = claims.get(_PROFILE_CLAIM)
            if isinstance(profile, dict):
                email = _optional_str(profile, "email")
        auth = claims.get(_AUTH_CLAIM)
        if not isinstance(auth, dict):
            return cls(email=email, raw_jwt=jwt)
        plan = _optional_str(auth, "chatgpt_plan_type")
        return cls(
            email=email,
            chatgpt_plan_type=None if plan is None else PlanType.from_claim(plan),
            chatgpt_user_id=_optional_str(auth, "chatgpt_user_id")
            or _optional_str(auth, "user_id"),
            chatgpt_account_id=_optional_str(auth, "chatgpt_account_id"),
            raw_jwt=jwt,
        )
