"""The persisted auth payload (Codex's ``auth.json``) and the snapshot handed to callers.

``AuthDotJson`` reads and writes the exact structure Codex does (reference §1.2): field names
and order, ``OPENAI_API_KEY`` always written, ``account_id`` always written inside ``tokens``,
``last_refresh`` as RFC 3339 UTC with ``Z``. Fields this version does not know are kept and
written back, so a newer Codex's additions survive our saves.
"""

from __future__ import annotations

import enum
import json
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._errors import AuthDataError, UnsupportedLoginError, shown_mode_name
from ._jwt import IdTokenInfo, PlanType
from ._text import UNSENDABLE, format_rfc3339, is_header_safe, parse_rfc3339

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_ACCOUNT_HEADER",
    "FEDRAMP_HEADER",
    "OAUTH_FIELD",
    "UNSENDABLE",
    "AccountIdentity",
    "Auth",
    "AuthDotJson",
    "AuthMode",
    "LoginGrant",
    "ProviderLogin",
    "TokenData",
    "format_rfc3339",
    "is_header_safe",
    "parse_rfc3339",
]

DEFAULT_ACCOUNT_HEADER = "ChatGPT-Account-ID"
FEDRAMP_HEADER = "X-OpenAI-Fedramp"
"""Sent as ``true`` for accounts the whoami call reports as FedRAMP accounts (as Codex does)."""
PAT_FIELD = "personal_access_token"
EXPIRES_AT_FIELD = "expires_at"
"""``tokens.expires_at``: the access token's absolute expiry, written for standard providers."""
OAUTH_FIELD = "oauth"
"""The top-level object naming a standard login's provider, client, subject and grant."""

_TOP_KEYS = ("auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh")
_TOKEN_KEYS = ("id_token", "access_token", "refresh_token", "account_id")


class AuthMode(enum.Enum):
    """How a snapshot authenticates. The values are the strings stored in ``auth.json``.

    Any other string is a mode too: ``AuthMode("someFutureMode")`` returns a pseudo-member
    named ``UNKNOWN`` whose value is that string (the same object for the same string), so a
    login written by a newer Codex loads, is kept, and is reported instead of failing.
    """

    API_KEY = "apikey"
    """An OpenAI API key."""
    CHATGPT = "chatgpt"
    """Managed OAuth tokens, refreshed by this library and persisted in the store."""
    CHATGPT_AUTH_TOKENS = "chatgptAuthTokens"
    """Tokens supplied by a host app; kept in memory only, refreshed through the host."""
    BEARER = "bearer"
    """A token from an external bearer source (a command); never persisted."""
    PERSONAL_ACCESS_TOKEN = "personalAccessToken"  # noqa: S105 -- a mode name, not a secret
    """A personal access token (``at-…``), sent as the bearer; never refreshed."""
    AGENT_IDENTITY = "agentIdentity"
    """A Codex agent identity; needs signed task assertions this library does not make."""
    BEDROCK_API_KEY = "bedrockApiKey"
    """An Amazon Bedrock API key (Codex's app server)."""
    BEDROCK_ACCESS_KEYS = "bedrockAccessKeys"
    """Amazon Bedrock access keys (Codex's app server)."""
    HEADERS = "headers"
    """Caller-supplied request headers (named by Codex's protocol schema)."""
    OAUTH = "oauth"
    """A login at a standard OAuth 2.0 / OpenID provider (RFC 6749), refreshed by this library.

    Codex does not know this mode: it keeps such a file as it is and reports the mode as
    unknown. The top-level ``oauth`` object names the provider, the client, the subject and
    the grant (:attr:`AuthDotJson.provider_login`); an id token is optional.
    """

    @classmethod
    def _missing_(cls, value: object) -> AuthMode | None:
        # Only strings become modes; anything else stays a ValueError. The cache keeps one
        # object per string, so `is` comparisons and hashing behave like real members.
        if not isinstance(value, str):
            return None
        with _UNKNOWN_LOCK:
            member = _UNKNOWN_MODES.get(value)
            if member is None:
                member = object.__new__(cls)
                member._name_ = "UNKNOWN"
                member._value_ = value
                _UNKNOWN_MODES[value] = member
            return member

    def __repr__(self) -> str:
        """Show the member; an unknown mode's value only when it looks like a mode name."""
        if self.is_known or shown_mode_name(self._value_) is not None:
            return f"<AuthMode.{self._name_}: {self._value_!r}>"
        return "<AuthMode.UNKNOWN>"

    @property
    def is_known(self) -> bool:
        """Whether this is one of the members above (``False`` for a pseudo-member)."""
        return self._name_ != "UNKNOWN"

    @property
    def can_send(self) -> bool:
        """Whether aioscopedauth can send requests with a login of this mode."""
        return self in _SENDABLE_MODES

    @property
    def is_chatgpt(self) -> bool:
        """Whether this is one of the two ChatGPT token modes."""
        return self in (AuthMode.CHATGPT, AuthMode.CHATGPT_AUTH_TOKENS)

    @property
    def is_refreshable(self) -> bool:
        """Whether a login of this mode has tokens this library refreshes (or asks a host for).

        The two ChatGPT modes and ``OAUTH``.
        """
        return self.is_chatgpt or self is AuthMode.OAUTH


_UNKNOWN_MODES: dict[str, AuthMode] = {}
_UNKNOWN_LOCK = threading.Lock()
_SENDABLE_MODES = frozenset(
    {
        AuthMode.API_KEY,
        AuthMode.CHATGPT,
        AuthMode.CHATGPT_AUTH_TOKENS,
        AuthMode.BEARER,
        AuthMode.PERSONAL_ACCESS_TOKEN,
        AuthMode.OAUTH,
    }
)


def _str_field(
    obj: Mapping[str, Any], key: str, where: str, *, required: bool, header: bool = False
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            msg = f"{where}.{key} is missing"
            raise AuthDataError(msg)
        return None
    if not isinstance(value, str):
        msg = f"{where}.{key} must be a string"
        raise AuthDataError(msg)
    if header and not is_header_safe(value):
        # It is sent as a header value; a line break there is header injection, not a token.
        msg = f"{where}.{key} {UNSENDABLE}"
        raise AuthDataError(msg)
    return value


def _extra(obj: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


@attrs.frozen
class TokenData:
    """The OAuth tokens of a login (ChatGPT's, or a standard provider's).

    Attributes:
        id_token: The parsed id token (its raw JWT is kept verbatim); ``None`` for a standard
            login without one (the key is then left out of the stored ``tokens``). A ChatGPT
            login always has one (:meth:`AuthDotJson.validate`).
        access_token: The bearer sent to the API. Never shown in ``repr``.
        refresh_token: Spent to get new tokens; may be ``""`` for host-supplied tokens.
        account_id: The ChatGPT workspace (account) id, sent as the account header.
        extra: Fields of the stored ``tokens`` object that this version does not know.
    """

    id_token: IdTokenInfo | None
    access_token: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    account_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_dict(cls, obj: object) -> TokenData:
        """Parse the ``tokens`` object of an ``auth.json``.

        Args:
            obj: The decoded JSON value.

        Returns:
            The tokens.

        An absent ``id_token`` is ``None`` here (a standard login may have none); a ChatGPT
        payload without one is refused by :meth:`AuthDotJson.validate`.

        Raises:
            AuthDataError: A field is missing or has the wrong type, or the id token is no JWT.
        """
        if not isinstance(obj, dict):
            msg = "tokens must be a JSON object"
            raise AuthDataError(msg)
        id_token = _str_field(obj, "id_token", "tokens", required=False)
        access = _str_field(obj, "access_token", "tokens", required=True, header=True)
        refresh = _str_field(obj, "refresh_token", "tokens", required=True)
        assert access is not None  # noqa: S101 -- required=True never returns None
        assert refresh is not None  # noqa: S101 -- required=True never returns None
        info = None
        if id_token is not None:
            try:
                info = IdTokenInfo.parse(id_token)
            except AuthDataError as exc:
                msg = f"tokens.id_token: {exc}"
                raise AuthDataError(msg) from exc
        return cls(
            id_token=info,
            access_token=access,
            refresh_token=refresh,
            account_id=_str_field(obj, "account_id", "tokens", required=False, header=True),
            extra=_extra(obj, _TOKEN_KEYS),
        )

    @property
    def expires_at(self) -> datetime | None:
        """When the access token expires, if the login stored it (``tokens.expires_at``).

        Codex does not write it: a login of a standard provider does, from the token
        endpoint's ``expires_in``, so that an opaque access token (no ``exp`` to read) is still
        refreshed before it expires. It is kept in ``extra``, so a payload is written back
        byte for byte. Read as an RFC 3339 timestamp, or seconds since the epoch; anything else
        (or nothing) is ``None``: the expiry is unknown.
        """
        value = self.extra.get(EXPIRES_AT_FIELD)
        if isinstance(value, str):
            try:
                return parse_rfc3339(value)
            except AuthDataError:
                return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(value, tz=UTC)
            except (OverflowError, OSError, ValueError):
                return None
        return None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object, in Codex's field order, unknown fields last.

        ``id_token`` is left out when there is none (never written as ``null``).
        """
        out: dict[str, Any] = {}
        if self.id_token is not None:
            out["id_token"] = self.id_token.raw_jwt
        out["access_token"] = self.access_token
        out["refresh_token"] = self.refresh_token
        out["account_id"] = self.account_id
        out.update(self.extra)
        return out


LoginGrant = Literal["authorization_code", "device_code", "refresh_token", "client_credentials"]
"""How a standard login was made (``oauth.grant``)."""
_GRANTS: tuple[LoginGrant, ...] = (
    "authorization_code",
    "device_code",
    "refresh_token",
    "client_credentials",
)


@attrs.frozen
class ProviderLogin:
    """Whose login a standard (``AuthMode.OAUTH``) payload holds: the top-level ``oauth``.

    Two logins are the same login when these are equal, so a refresh never adopts another
    user's (or another client's, or another provider's) tokens from a shared store.

    Attributes:
        issuer: The provider's issuer (from discovery), else its token endpoint.
        client_id: The OAuth client.
        subject: The user (``sub``, from the id token) when known; ``None`` for a client's own
            login and when the provider gave no id token.
        grant: How the login was made; ``"client_credentials"`` is re-minted, not refreshed.
    """

    issuer: str
    client_id: str
    subject: str | None = None
    grant: Literal["authorization_code", "device_code", "refresh_token", "client_credentials"] = (
        "authorization_code"
    )

    @classmethod
    def from_dict(cls, obj: object) -> ProviderLogin:
        """Parse the ``oauth`` object.

        Raises:
            AuthDataError: It is not an object with string ``issuer`` and ``client_id`` (and a
                string ``sub`` and a known ``grant`` when present).
        """
        if not isinstance(obj, dict):
            msg = f"{OAUTH_FIELD} must be a JSON object"
            raise AuthDataError(msg)
        issuer = _str_field(obj, "issuer", OAUTH_FIELD, required=True)
        client_id = _str_field(obj, "client_id", OAUTH_FIELD, required=True)
        subject = _str_field(obj, "sub", OAUTH_FIELD, required=False)
        grant = obj.get("grant", "authorization_code")
        if grant not in _GRANTS:
            msg = f"{OAUTH_FIELD}.grant must be one of {', '.join(_GRANTS)}"
            raise AuthDataError(msg)
        assert issuer is not None  # noqa: S101 -- required=True never returns None
        assert client_id is not None  # noqa: S101 -- required=True never returns None
        return cls(issuer, client_id, subject, grant)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object (``sub`` left out when unknown)."""
        out: dict[str, Any] = {"issuer": self.issuer, "client_id": self.client_id}
        if self.subject is not None:
            out["sub"] = self.subject
        out["grant"] = self.grant
        return out


@attrs.frozen
class AuthDotJson:
    """The persisted auth payload, structurally identical to Codex's ``auth.json``.

    Attributes:
        auth_mode: The stored mode, or ``None`` when the file has none (see :attr:`resolved_mode`).
        openai_api_key: The API key (``OPENAI_API_KEY``). Never shown in ``repr``.
        tokens: The OAuth tokens, if any.
        last_refresh: When the tokens were last refreshed (aware, UTC).
        extra: The other top-level fields, written back unchanged and in their order: fields
            this version does not know, and those it reads but keeps verbatim
            (``personal_access_token``, ``agent_identity``, ``bedrock_api_key``,
            ``bedrock_access_keys``).
        last_refresh_text: The timestamp exactly as read, so an unchanged payload is written
            back byte for byte even when it carries nanoseconds.
    """

    auth_mode: AuthMode | None = None
    openai_api_key: str | None = attrs.field(default=None, repr=False)
    tokens: TokenData | None = None
    last_refresh: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    last_refresh_text: str | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def resolved_mode(self) -> AuthMode:
        """The mode this payload logs in with, decided as Codex decides it.

        ``auth_mode`` when set; else a personal access token when one is stored; else a
        Bedrock API key, then Bedrock access keys, when stored; else an API key when
        ``OPENAI_API_KEY`` is not null; else ChatGPT.
        """
        # The order follows Codex's `AuthDotJson::resolved_mode` (codex-rs/login/src/auth/
        # manager.rs): a personal access token wins over a stale OPENAI_API_KEY, because
        # `codex login --with-access-token` writes it next to `"OPENAI_API_KEY": null`
        # without an `auth_mode`.
        if self.auth_mode is not None:
            return self.auth_mode
        if self.extra.get(PAT_FIELD) is not None:
            return AuthMode.PERSONAL_ACCESS_TOKEN
        if self.extra.get("bedrock_api_key") is not None:
            return AuthMode.BEDROCK_API_KEY
        if self.extra.get("bedrock_access_keys") is not None:
            return AuthMode.BEDROCK_ACCESS_KEYS
        if self.openai_api_key is not None:
            return AuthMode.API_KEY
        return AuthMode.CHATGPT

    @property
    def provider_login(self) -> ProviderLogin | None:
        """Whose standard login this is (the top-level ``oauth`` object), if the payload has one."""
        value = self.extra.get(OAUTH_FIELD)
        if value is None:
            return None
        try:
            return ProviderLogin.from_dict(value)
        except AuthDataError:
            return None  # refused by validate() for an OAUTH payload; ignored otherwise

    @property
    def personal_access_token(self) -> str | None:
        """The stored personal access token (``at-…``), if any; a secret, never in ``repr``."""
        value = self.extra.get(PAT_FIELD)
        return value if isinstance(value, str) else None

    @classmethod
    def from_dict(cls, obj: object) -> AuthDotJson:
        """Build the payload from a decoded JSON value and check its mode rules.

        Args:
            obj: The decoded JSON document.

        Returns:
            The payload.

        Raises:
            AuthDataError: The document is not a valid ``auth.json`` (the message names the
                field, never its value).
        """
        if not isinstance(obj, dict):
            msg = "auth.json must hold a JSON object"
            raise AuthDataError(msg)
        mode_raw = obj.get("auth_mode")
        mode: AuthMode | None = None
        if mode_raw is not None:
            if not isinstance(mode_raw, str):
                msg = "auth_mode must be a string"
                raise AuthDataError(msg)
            # Any string: a mode this version does not know still loads (and is reported).
            mode = AuthMode(mode_raw)
        key = _str_field(obj, "OPENAI_API_KEY", "auth.json", required=False, header=True)
        # Kept verbatim in `extra` (so it is written back where it was); checked here because
        # it is sent as a header value.
        _str_field(obj, PAT_FIELD, "auth.json", required=False, header=True)
        tokens_raw = obj.get("tokens")
        tokens = None if tokens_raw is None else TokenData.from_dict(tokens_raw)
        refreshed_text = _str_field(obj, "last_refresh", "auth.json", required=False)
        refreshed = None
        if refreshed_text is not None:
            try:
                refreshed = parse_rfc3339(refreshed_text)
            except AuthDataError as exc:
                msg = f"last_refresh is {exc}"
                raise AuthDataError(msg) from exc
        data = cls(
            auth_mode=mode,
            openai_api_key=key,
            tokens=tokens,
            last_refresh=refreshed,
            extra=_extra(obj, _TOP_KEYS),
            last_refresh_text=refreshed_text,
        )
        data.validate()
        return data

    @classmethod
    def from_json(cls, text: str | bytes) -> AuthDotJson:
        """Parse an ``auth.json`` document.

        Args:
            text: The file's content.

        Returns:
            The payload.

        Raises:
            AuthDataError: Not JSON, or not a valid ``auth.json``.
        """
        try:
            # RFC 8259: JSON exchanged between systems is UTF-8; json.loads would also guess
            # UTF-16/32 from bytes, which Codex does not accept.
            obj = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # The decoder's own message gives a position only, never file content.
            problem = str(exc)
        except RecursionError:
            problem = "nested too deeply"
        else:
            return cls.from_dict(obj)
        # Raised outside the handler, so the decoder's exception is not even the context: it
        # holds the whole document (``doc``, ``object``), secrets included.
        msg = f"not valid JSON ({problem})"
        raise AuthDataError(msg)

    def validate(self) -> None:
        """Check the rules that tie the mode to the rest of the payload.

        Raises:
            AuthDataError: API-key mode without a key ("API key auth is missing a key."); a
                ChatGPT login whose tokens have no id token; a standard login without a
                valid ``oauth`` object.
        """
        mode = self.resolved_mode
        if mode is AuthMode.API_KEY and self.openai_api_key is None:
            msg = "API key auth is missing a key."
            raise AuthDataError(msg)
        if mode is AuthMode.OAUTH:
            ProviderLogin.from_dict(self.extra.get(OAUTH_FIELD))
        elif mode.is_chatgpt and self.tokens is not None and self.tokens.id_token is None:
            # Codex needs one in every ChatGPT login; only a standard login may lack it.
            msg = "tokens.id_token is missing"
            raise AuthDataError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object in Codex's field order, unknown fields last."""
        out: dict[str, Any] = {}
        if self.auth_mode is not None:
            out["auth_mode"] = self.auth_mode.value
        out["OPENAI_API_KEY"] = self.openai_api_key
        if self.tokens is not None:
            out["tokens"] = self.tokens.to_dict()
        if self.last_refresh is not None:
            text = self.last_refresh_text
            if text is None or parse_rfc3339(text) != self.last_refresh:
                text = format_rfc3339(self.last_refresh)
            out["last_refresh"] = text
        out.update(self.extra)
        return out

    def to_json(self, *, compact: bool = False) -> str:
        """Serialise as Codex does.

        Args:
            compact: ``True`` for the keyring's one-line form; else 2-space pretty JSON.

        Returns:
            The document (no trailing newline, as Codex writes it).
        """
        if compact:
            return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def with_refreshed_tokens(
        self,
        *,
        id_token: str | None,
        access_token: str | None,
        refresh_token: str | None,
        now: datetime,
        expires_at: datetime | Literal["keep"] | None = "keep",
    ) -> AuthDotJson:
        """Merge a token endpoint's answer into this (currently stored) payload (§3.4).

        A token the answer leaves out keeps its stored value; ``account_id`` is never changed
        by a refresh; ``last_refresh`` becomes ``now``.

        Args:
            id_token: The new raw id token, or ``None``.
            access_token: The new access token, or ``None``.
            refresh_token: The new refresh token, or ``None``.
            now: The refresh time.
            expires_at: The new access token's expiry (stored as ``tokens.expires_at``), or
                ``None`` when the answer gave no lifetime (a stored one is removed: it was the
                old token's). ``"keep"`` (the default) leaves what ``tokens`` has (Codex's
                refresh).

        Returns:
            The merged payload.

        Raises:
            AuthDataError: The new id token is not a JWT, or there are no stored tokens and the
                answer lacks one of them.
        """
        old = self.tokens
        if old is None:
            if id_token is None or access_token is None or refresh_token is None:
                msg = "Token data is not available."
                raise AuthDataError(msg)
            new_tokens = TokenData(IdTokenInfo.parse(id_token), access_token, refresh_token)
        else:
            new_tokens = attrs.evolve(
                old,
                id_token=old.id_token if id_token is None else IdTokenInfo.parse(id_token),
                access_token=old.access_token if access_token is None else access_token,
                refresh_token=old.refresh_token if refresh_token is None else refresh_token,
            )
        if expires_at != "keep":
            extra = {k: v for k, v in new_tokens.extra.items() if k != EXPIRES_AT_FIELD}
            if expires_at is not None:
                # Where it was (dicts keep the order of the first insertion), else last.
                extra = dict(new_tokens.extra)
                extra[EXPIRES_AT_FIELD] = format_rfc3339(expires_at)
            new_tokens = attrs.evolve(new_tokens, extra=extra)
        return attrs.evolve(self, tokens=new_tokens, last_refresh=now, last_refresh_text=None)

    @classmethod
    def for_provider_login(  # noqa: PLR0913 -- the login's parts, named
        cls,
        login: ProviderLogin,
        *,
        access_token: str,
        refresh_token: str | None,
        id_token: str | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> AuthDotJson:
        """Return the payload a standard login writes (``auth_mode: "oauth"``).

        Args:
            login: The provider, client, subject and grant.
            access_token: The access token.
            refresh_token: The refresh token (``None``: a client's own login, stored as ``""``).
            id_token: The raw id token, if the provider gave one.
            expires_at: The access token's expiry, if known (``tokens.expires_at``).
            now: The login time (``last_refresh``).

        Returns:
            The payload.

        Raises:
            AuthDataError: The access token cannot be sent as a header, or the id token is not
                a JWT.
        """
        if not is_header_safe(access_token):
            msg = f"the provider's access token {UNSENDABLE}"
            raise AuthDataError(msg)
        extra: dict[str, Any] = {}
        if expires_at is not None:
            extra[EXPIRES_AT_FIELD] = format_rfc3339(expires_at)
        tokens = TokenData(
            None if id_token is None else IdTokenInfo.parse(id_token),
            access_token,
            refresh_token or "",
            extra=extra,
        )
        return cls(
            auth_mode=AuthMode.OAUTH,
            tokens=tokens,
            last_refresh=now,
            extra={OAUTH_FIELD: login.to_dict()},
        )

    @classmethod
    def for_api_key(cls, key: str) -> AuthDotJson:
        """Return the payload an API-key login writes (tokens dropped).

        Args:
            key: The API key.

        Returns:
            ``{"auth_mode": "apikey", "OPENAI_API_KEY": key}``.
        """
        return cls(auth_mode=AuthMode.API_KEY, openai_api_key=key)


@attrs.frozen
class AccountIdentity:
    """Who a personal access token belongs to, as the whoami call answers.

    Attributes:
        account_id: The ChatGPT account (workspace) id, sent as the account header.
        user_id: The ChatGPT user id.
        email: The user's email, if the account has one.
        plan_type: The ChatGPT plan.
        fedramp: Whether the account is a FedRAMP account (adds ``X-OpenAI-Fedramp: true``).
    """

    account_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    plan_type: PlanType | None = None
    fedramp: bool = False


@attrs.frozen
class Auth:
    """An immutable snapshot of the credentials to send, as handed out by ``AuthManager``.

    Attributes:
        mode: How it authenticates.
        token: The bearer value. Never shown in ``repr`` or ``str``.
        account_id: The ChatGPT account id, if any.
        data: The stored payload it came from, or ``None`` (env key, bearer command).
        account_header: The header that carries the account id.
        identity: For a personal access token, who it belongs to (from the whoami call), or
            ``None`` when that is not known (yet). Not part of equality: two snapshots are
            equal when they send the same credentials.
    """

    mode: AuthMode
    token: str = attrs.field(repr=False)
    account_id: str | None = None
    data: AuthDotJson | None = attrs.field(default=None, repr=False)
    account_header: str = attrs.field(default=DEFAULT_ACCOUNT_HEADER, eq=False, repr=False)
    identity: AccountIdentity | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_data(cls, data: AuthDotJson, *, account_header: str = DEFAULT_ACCOUNT_HEADER) -> Auth:
        """Build the snapshot for a stored payload.

        Unlike Codex, a ChatGPT payload without ``last_refresh`` still yields its access token:
        sending no ``Authorization`` and then spending the refresh token is worse (reference §7).

        Args:
            data: The stored payload.
            account_header: The header for the account id.

        A personal access token's snapshot has no account id yet (the manager adds it from
        the whoami call). A mode this library cannot send with (see
        :attr:`AuthMode.can_send`) gives a snapshot with an empty token whose
        :meth:`headers` raise :class:`UnsupportedLoginError`.

        Returns:
            The snapshot.

        Raises:
            AuthDataError: The payload has no usable credential for its mode.
        """
        mode = data.resolved_mode
        if mode is AuthMode.API_KEY:
            data.validate()
            assert data.openai_api_key is not None  # noqa: S101 -- validate() checked it
            return cls(mode, data.openai_api_key, None, data, account_header)
        if mode is AuthMode.PERSONAL_ACCESS_TOKEN:
            token = data.personal_access_token
            if not token:
                msg = "Personal access token auth is missing a token. Log in again."
                raise AuthDataError(msg)
            return cls(mode, token, None, data, account_header)
        if not mode.can_send:
            return cls(mode, "", None, data, account_header)
        if data.tokens is None:
            who = "OAuth" if mode is AuthMode.OAUTH else "ChatGPT"
            msg = f"{who} auth has no tokens. Log in again."
            raise AuthDataError(msg)
        return cls(mode, data.tokens.access_token, data.tokens.account_id, data, account_header)

    @property
    def email(self) -> str | None:
        """The account's email, from the id token (from whoami for a personal access token)."""
        if self.identity is not None:
            return self.identity.email
        if self.data is None or self.data.tokens is None or self.data.tokens.id_token is None:
            return None
        return self.data.tokens.id_token.email

    @property
    def plan_type(self) -> PlanType | None:
        """The ChatGPT plan (unknown when the claim is absent); ``None`` for non-ChatGPT auth.

        For a personal access token it is the plan whoami reported, or ``None`` before that.
        """
        if self.mode is AuthMode.PERSONAL_ACCESS_TOKEN:
            return None if self.identity is None else self.identity.plan_type
        if not self.mode.is_chatgpt or self.data is None or self.data.tokens is None:
            return None
        if self.data.tokens.id_token is None:
            return None
        return self.data.tokens.id_token.plan_type

    def headers(self) -> dict[str, str]:
        """Return the request headers that carry this auth.

        Returns:
            ``Authorization: Bearer <token>``, plus the account header when there is an
            account id, plus ``X-OpenAI-Fedramp: true`` for a FedRAMP account.

        Raises:
            UnsupportedLoginError: The mode is one this library cannot send with.
        """
        if not self.mode.can_send:
            raise UnsupportedLoginError(self.mode.value)
        out = {"Authorization": f"Bearer {self.token}"}
        if self.account_id:
            out[self.account_header] = self.account_id
        if self.identity is not None and self.identity.fedramp:
            out[FEDRAMP_HEADER] = "true"
        return out
