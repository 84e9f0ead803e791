"""``aioscopedauth status``: what the login is, where it is kept, when it expires; no secret."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._cli_support import (
    EXIT_AUTH,
    EXIT_OK,
    LOGIN_HINT,
    ago,
    build_manager,
    login_hint,
    mode_text,
    provider_from,
    unusable_login,
    where,
)
from ._errors import AuthError, shown_mode_name

if TYPE_CHECKING:
    import argparse

    from ._config import ProviderInfo
    from ._model import Auth, AuthMode, TokenData
    from ._oauth_providers import OAuthProvider
    from ._storage import AuthStore

_CANNOT_SEND = (
    "aioscopedauth cannot send requests with this login; use the Codex CLI for it, "
    "or log in with an API key or ChatGPT"
)


def _mode_name(mode: AuthMode) -> str:
    # The on-disk name; an unknown one only when it looks like a name (never a pasted key).
    return shown_mode_name(mode.value) or "unknown"


def _store_facts(store: AuthStore) -> dict[str, Any]:
    from ._storage import AutoAuthStore, FileAuthStore, KeyringAuthStore

    facts: dict[str, Any] = {"store": store.kind}
    if isinstance(store, FileAuthStore | KeyringAuthStore | AutoAuthStore):
        facts["home"] = str(store.home)
    if isinstance(store, FileAuthStore):
        facts["path"] = str(store.path)
    if store.kind == "redis":
        facts["redis"] = getattr(store, "where", None)
        facts["name"] = getattr(store, "name", None)
    facts["where"] = where(store)
    return facts


def _codex_identity_facts() -> dict[str, Any] | None:
    """The login Codex would take from the environment instead of the stored one, if any.

    This command reads only the store; Codex reads workload identity and ``CODEX_ACCESS_TOKEN``
    first (docs/explanation/compatibility.md, "Logins from the environment").
    """
    from ._envlogin import codex_env_identity

    identity = codex_env_identity(os.environ)
    if identity is None:
        return None
    why = "" if identity.supported else ", which aioscopedauth cannot use yet"
    return {
        "kind": identity.kind,
        "variables": list(identity.variables),
        "supported": identity.supported,
        "message": (
            f"Codex would use a different identity here: {identity.describe()} from the "
            f"environment{why}; this command uses the stored login"
        ),
    }


def token_expiry(tokens: TokenData) -> datetime | None:
    """When the access token expires: a standard provider's login stores it, else ``exp``."""
    from ._errors import AuthDataError
    from ._jwt import jwt_expiration

    if tokens.expires_at is not None:
        return tokens.expires_at
    try:
        return jwt_expiration(tokens.access_token)
    except AuthDataError:
        return None


def status_facts(store: AuthStore, auth: Auth | None, hint: str = LOGIN_HINT) -> dict[str, Any]:
    from ._model import format_rfc3339
    from ._storage import FileAuthStore

    now = datetime.now(UTC)
    facts: dict[str, Any] = {"logged_in": auth is not None, **_store_facts(store)}
    warnings: list[str] = []
    if isinstance(store, FileAuthStore):
        try:
            mode = stat.S_IMODE(store.path.stat().st_mode)
        except OSError:
            mode = None
        if mode is not None and mode & 0o077:
            warnings.append(
                f"{store.path} can be read by other users (mode {mode:04o}); run chmod 600"
            )
    if auth is None:
        facts["hint"] = hint
    else:
        facts["mode"] = _mode_name(auth.mode)
        facts["supported"] = auth.mode.can_send
        if not auth.mode.can_send:
            facts["note"] = _CANNOT_SEND
        facts["account_id"] = auth.account_id
        facts["email"] = auth.email
        facts["plan"] = None if auth.plan_type is None else str(auth.plan_type)
        data = auth.data
        if data is not None and data.tokens is not None:
            expiry = token_expiry(data.tokens)
            facts["access_token_expires"] = None if expiry is None else format_rfc3339(expiry)
            facts["access_token_seconds_left"] = (
                None if expiry is None else int((expiry - now).total_seconds())
            )
        if data is not None and data.last_refresh is not None:
            facts["last_refresh"] = format_rfc3339(data.last_refresh)
        login = None if data is None else data.provider_login
        if login is not None:
            facts["subject"] = login.subject
            facts["grant"] = login.grant
    if (identity := _codex_identity_facts()) is not None:
        facts["codex_identity"] = identity
    facts["warnings"] = warnings
    return facts


def _oauth_facts(provider: OAuthProvider) -> dict[str, Any]:
    # Where the secret comes from, never the secret: the table holds none.
    return {
        "name": provider.name,
        "issuer": provider.issuer,
        "token_url": provider.token_url,
        "client_id": provider.client_id,
        "client_auth": provider.client_auth,
        "scopes": list(provider.scopes),
        "client_secret_from": provider.secret_source,
        "api_base_url": provider.api_base_url,
    }


def _add_provider_facts(
    facts: dict[str, Any], provider: ProviderInfo | None, oauth: OAuthProvider | None
) -> None:
    if provider is not None:
        facts["provider"] = _provider_facts(provider)
    if oauth is not None:
        facts["oauth_provider"] = _oauth_facts(oauth)


def _print_oauth(provider: dict[str, Any]) -> None:
    print(f"OAuth provider {provider['name']}")
    rows = (
        ("issuer", provider["issuer"]),
        ("token URL", provider["token_url"]),
        ("client", provider["client_id"]),
        ("client auth", provider["client_auth"]),
        ("scopes", " ".join(provider["scopes"]) or None),
        ("secret from", provider["client_secret_from"]),
        ("API", provider["api_base_url"]),
    )
    for label, value in rows:
        if value is not None:
            print(f"  {label:<13} {value}")


def _provider_facts(provider: ProviderInfo) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "id": provider.id,
        "name": provider.name,
        "base_url": provider.base_url,
    }
    if provider.auth is not None:
        command = provider.auth
        # Only the program: arguments often carry secrets (a client secret, a token file).
        facts["command"] = command.command
        facts["args_count"] = len(command.args)
        facts["cwd"] = None if command.cwd is None else str(command.cwd)
        facts["timeout_seconds"] = command.timeout
        facts["refresh_interval_seconds"] = command.refresh_interval
    return facts


async def run_status(args: argparse.Namespace) -> int:
    provider = provider_from(args)
    async with build_manager(args) as manager:
        try:
            await manager.reload()
        except AuthError as exc:
            if not args.json:
                raise
            # Scripts read stdout: the failure is a JSON object there too.
            facts = {"logged_in": False, **_store_facts(manager.store), "error": str(exc)}
            if (identity := _codex_identity_facts()) is not None:
                facts["codex_identity"] = identity
            print(json.dumps(facts, indent=2))
            return EXIT_AUTH
        auth = manager.auth_cached()
        facts = status_facts(manager.store, auth, login_hint(args))
        unusable = None if auth is not None else await unusable_login(manager.store)
        if unusable is not None:
            facts["error"] = f"{facts['where']} holds no usable login ({unusable})"
    _add_provider_facts(facts, provider, args.oauth)
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        # The permission warning is not printed here: the store logs it, once.
        _print_login(facts, auth)
        if "codex_identity" in facts:
            print(f"{facts['codex_identity']['message']}.")
        if provider is not None:
            _print_provider(facts["provider"])
        if args.oauth is not None:
            _print_oauth(facts["oauth_provider"])
    # A provider with a token command needs no stored login.
    usable = auth is not None or (provider is not None and provider.auth is not None)
    return EXIT_OK if usable else EXIT_AUTH


def _print_login(facts: dict[str, Any], auth: Auth | None) -> None:
    if auth is None:
        if "error" in facts:
            print(f"Not logged in: {facts['error']}.")
        else:
            print(f"Not logged in (looked in {facts['where']}).")
        print(f"  To {facts['hint']}.")
        return
    now = datetime.now(UTC)
    print(f"Logged in with {mode_text(auth.mode)}")
    if not auth.mode.can_send:
        print(f"  {_CANNOT_SEND}.")
    rows: list[tuple[str, str]] = [("store", f"{facts['store']}: {facts['where']}")]
    for key, label in (
        ("account_id", "account"),
        ("subject", "subject"),
        ("email", "email"),
        ("plan", "plan"),
        ("grant", "grant"),
    ):
        if facts.get(key):
            rows.append((label, str(facts[key])))
    if facts.get("access_token_expires"):
        expiry = datetime.fromisoformat(facts["access_token_expires"])
        state = "expired " if expiry <= now else "expires "
        rows.append(
            ("access token", f"{state}{facts['access_token_expires']} ({ago(expiry, now)})")
        )
    if facts.get("last_refresh"):
        refreshed = datetime.fromisoformat(facts["last_refresh"])
        rows.append(("last refresh", f"{facts['last_refresh']} ({ago(refreshed, now)})"))
    for label, value in rows:
        print(f"  {label:<13} {value}")


def _print_provider(provider: dict[str, Any]) -> None:
    print(f"Provider {provider['id']} ({provider['name']})")
    if provider.get("args_count"):
        count = provider["args_count"]
        shown = f"{provider['command']} (+ {count} argument{'s' * (count > 1)}, not shown)"
        provider = {**provider, "command": shown}
    labels = (
        ("base_url", "base URL"),
        ("command", "command"),
        ("cwd", "cwd"),
        ("timeout_seconds", "timeout (s)"),
        ("refresh_interval_seconds", "refresh (s)"),
    )
    for key, label in labels:
        if provider.get(key) is not None:
            print(f"  {label:<13} {provider[key]}")
