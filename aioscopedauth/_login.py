"""Logins, logout and login restrictions: free functions over the state they need.

As in Codex, these live outside the manager: each takes the snapshot cell and the store
reader, never the manager, and ends with the cell's one writer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ._errors import ConfigError, LoginRestrictionError, StorageError
from ._external import ExternalAuthTokens, auth_data_from_external_tokens
from ._model import UNSENDABLE, Auth, AuthDotJson, AuthMode, is_header_safe

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._loader import StoreReader
    from ._snapshot import SnapshotCell

__all__ = [
    "ForcedLoginMethod",
    "enforce_restrictions",
    "login_with_api_key",
    "login_with_tokens",
    "logout",
    "restriction_violation",
]

ForcedLoginMethod = Literal["api", "chatgpt"]


async def login_with_api_key(cell: SnapshotCell, reader: StoreReader, api_key: str) -> None:
    """Save an API-key login (dropping tokens) and make it the snapshot.

    Raises:
        ConfigError: The key is blank or cannot be sent as a header.
        StorageError: It could not be saved.
    """
    key = api_key.strip()
    if not key:
        msg = "The API key is empty."
        raise ConfigError(msg)
    if not is_header_safe(key):
        msg = f"The API key {UNSENDABLE}; paste only the key."
        raise ConfigError(msg)
    await reader.store.save(AuthDotJson.for_api_key(key))
    if reader.memory is not reader.store:
        await reader.memory.delete()
    cell.loaded = True
    cell.set(await reader.load(), "login")


async def login_with_tokens(
    cell: SnapshotCell,
    reader: StoreReader,
    access_token: str,
    account_id: str,
    plan_type: str | None,
) -> None:
    """Keep host-supplied ChatGPT tokens in memory and make them the snapshot.

    Raises:
        AuthDataError: The access token is not a JWT.
    """
    tokens = ExternalAuthTokens.chatgpt(access_token, account_id, plan_type)
    data = auth_data_from_external_tokens(tokens, datetime.now(UTC))
    await reader.memory.save(data)
    cell.loaded = True
    cell.set(Auth.from_data(data, account_header=reader.oauth.account_header), "login")


async def logout(cell: SnapshotCell, reader: StoreReader) -> bool:
    """Remove the login from the memory store and the configured store, then reload.

    Returns:
        Whether anything was removed.

    Raises:
        StorageError: A store could not be cleared (the reload still happens).
    """
    try:
        removed = await reader.memory.delete()
        if reader.store is not reader.memory:
            removed = await reader.store.delete() or removed
    finally:
        new = await reader.load()
        cell.loaded = True
        cell.set(new, "logout")
    return removed


async def enforce_restrictions(
    auth: Auth | None,
    method: ForcedLoginMethod | None,
    workspace: str | None,
    *,
    logout: Callable[[], Awaitable[bool]],
) -> None:
    """Log out (with ``logout``) when ``auth`` breaks the forced method or workspace.

    Raises:
        LoginRestrictionError: It did; the message says which rule (reference §2.4).
    """
    if auth is None:
        return
    message = restriction_violation(auth, method, workspace)
    if message is None:
        return
    try:
        await logout()
    except StorageError as exc:
        message = f"{message}. Failed to remove auth.json: {exc}"
    raise LoginRestrictionError(message)


def restriction_violation(
    auth: Auth, method: ForcedLoginMethod | None, workspace: str | None
) -> str | None:
    """Return the reference's message for a login that breaks a restriction, else ``None``.

    The restrictions are Codex's (an API key or a ChatGPT login, a ChatGPT workspace): a
    standard provider's login (``AuthMode.OAUTH``) breaks neither.
    """
    if method == "api" and auth.mode.is_chatgpt:
        return "API key login is required, but ChatGPT is currently being used. Logging out."
    if method == "chatgpt" and auth.mode is AuthMode.API_KEY:
        return "ChatGPT login is required, but an API key is currently being used. Logging out."
    if workspace is None or not auth.mode.is_chatgpt:
        return None
    tokens = None if auth.data is None else auth.data.tokens
    id_token = None if tokens is None else tokens.id_token
    actual = None if id_token is None else id_token.chatgpt_account_id
    if actual is None:
        return (
            f"Login is restricted to workspace {workspace}, but current credentials lack a "
            "workspace identifier. Logging out."
        )
    if actual != workspace:
        return (
            f"Login is restricted to workspace {workspace}, but current credentials belong to "
            f"{actual}. Logging out."
        )
    return None
