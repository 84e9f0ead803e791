"""JWT and auth.json helpers of the test kit."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aioscopedauth._jwt import IdTokenInfo
from aioscopedauth._model import AuthDotJson, AuthMode, TokenData

__all__ = ["AUTH_CLAIM", "chatgpt_auth", "make_id_token", "make_jwt", "write_auth_json"]

AUTH_CLAIM = "https://api.openai.com/auth"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any], *, header: dict[str, Any] | None = None) -> str:
    """Make an unsigned JWT (``alg: none``, signature ``sig``) as Codex's tests do.

    Args:
        claims: The payload.
        header: The header; defaults to ``{"alg": "none", "typ": "JWT"}``.

    Returns:
        ``header.payload.sig``, base64url without padding.
    """
    head = header if header is not None else {"alg": "none", "typ": "JWT"}
    return ".".join((_b64(json.dumps(head).encode()), _b64(json.dumps(claims).encode()), "sig"))


def make_id_token(
    *,
    email: str | None = "user@example.com",
    plan_type: str | None = None,
    account_id: str | None = None,
    user_id: str | None = "user-12345",
    exp: datetime | None = None,
) -> str:
    """Make an id token (or access token) with Codex's claims.

    Args:
        email: The ``email`` claim, or ``None`` to leave it out.
        plan_type: ``chatgpt_plan_type``, or ``None`` to leave it out.
        account_id: ``chatgpt_account_id``, or ``None`` to leave it out.
        user_id: ``chatgpt_user_id`` and ``user_id``, or ``None`` to leave them out.
        exp: The ``exp`` claim, or ``None`` to leave it out.

    Returns:
        The unsigned JWT.
    """
    auth: dict[str, Any] = {}
    if user_id is not None:
        auth["chatgpt_user_id"] = user_id
        auth["user_id"] = user_id
    if plan_type is not None:
        auth["chatgpt_plan_type"] = plan_type
    if account_id is not None:
        auth["chatgpt_account_id"] = account_id
    claims: dict[str, Any] = {}
    if email is not None:
        claims["email"] = email
        claims["email_verified"] = True
    claims[AUTH_CLAIM] = auth
    if exp is not None:
        claims["exp"] = int(exp.timestamp())
    return make_jwt(claims)


def chatgpt_auth(
    *,
    access_token: str | None = None,
    refresh_token: str = "refresh-0",
    account_id: str | None = "acct-1",
    plan_type: str | None = "pro",
    email: str | None = "user@example.com",
    expires_in: timedelta | None = timedelta(hours=1),
    last_refresh: datetime | None = None,
    mode: AuthMode | None = AuthMode.CHATGPT,
) -> AuthDotJson:
    """Build a managed ChatGPT payload whose access token is a JWT with an ``exp``.

    Args:
        access_token: The access token; by default a JWT that expires after ``expires_in``.
        refresh_token: The refresh token.
        account_id: The account id (stored and in the id token's claim).
        plan_type: The plan claim.
        email: The email claim.
        expires_in: The access token's lifetime from now (``None``: no ``exp``).
        last_refresh: When the tokens were refreshed; defaults to now.
        mode: The stored ``auth_mode`` (``None`` leaves it out).

    Returns:
        The payload.
    """
    now = datetime.now(UTC)
    if access_token is None:
        access_token = make_id_token(
            account_id=account_id,
            plan_type=plan_type,
            email=email,
            exp=None if expires_in is None else now + expires_in,
        )
    id_token = make_id_token(account_id=account_id, plan_type=plan_type, email=email)
    return AuthDotJson(
        auth_mode=mode,
        tokens=TokenData(
            id_token=IdTokenInfo.parse(id_token),
            access_token=access_token,
            refresh_token=refresh_token,
            account_id=account_id,
        ),
        last_refresh=last_refresh or now,
    )


def write_auth_json(home: str | os.PathLike[str], data: AuthDotJson | dict[str, Any]) -> Path:
    """Write ``home/auth.json`` as Codex would (pretty JSON, mode ``0600``), creating ``home``.

    Args:
        home: The Codex home folder.
        data: A payload, or a raw JSON object (to write files this library would not).

    Returns:
        The file's path.
    """
    folder = Path(home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "auth.json"
    text = data.to_json() if isinstance(data, AuthDotJson) else json.dumps(data, indent=2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path
