"""``aioscopedauth`` login, logout, token, refresh and demo."""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._cli_status import status_facts
from ._cli_support import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    build_manager,
    check_redis_url,
    for_provider,
    login_hint,
    mode_text,
    not_logged_in,
    provider_from,
    ready,
    span,
    where,
)
from ._errors import AuthDataError, AuthError, ConfigError, RefreshTokenFailedError

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from ._manager import AuthManager
    from ._model import Auth
    from ._storage import AuthStore


class _RefusedError(AuthError):
    """A command refused to run; its message says why and what to do.

    Args:
        message: Why, and what to do.
        path: The file it is about, when there is one.
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        """Create the error; see the class docstring for the arguments."""
        super().__init__(message)
        self.path = path


async def _refuse_unreadable(store: AuthStore, *, force: bool, flag_does: str) -> None:
    """Refuse to overwrite or remove a file that cannot be read, unless ``--force``.

    Only a file that is there and unreadable (corrupt, a bad mode, not a regular file): an
    unavailable keyring is not a reason to refuse, the save then says what failed.
    """
    from ._errors import AuthDataError, StorageError

    if force:
        return
    try:
        await store.load()
    except (AuthDataError, StorageError) as exc:
        if isinstance(exc, StorageError) and exc.path is None:
            return
        msg = f"{exc} (`--force` {flag_does}.)"
        raise _RefusedError(msg, path=getattr(exc, "path", None)) from None


def _read_key() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("API key: ")
    raw = sys.stdin.buffer.readline()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised below, outside the handler: the decode error holds the key's bytes
    msg = "The API key read from stdin is not UTF-8 text; paste only the key."
    raise ConfigError(msg)


async def run_login(args: argparse.Namespace) -> int:
    if args.oauth is not None:
        from ._cli_oauth import run_oauth_login

        return await run_oauth_login(args)
    if args.device or args.client_credentials:
        flag = "--device" if args.device else "--client-credentials"
        msg = f"{flag} needs --provider NAME, an [oauth_providers.NAME] of the --oauth-config file"
        raise UsageError(msg)
    if not args.api_key:
        msg = (
            "say how to log in: --api-key (a key on stdin), or --provider NAME for an OAuth "
            "provider"
        )
        raise UsageError(msg)
    async with build_manager(args) as manager:
        store = manager.store
        # Before the key is asked for: a corrupt file is said first, and never overwritten.
        await _refuse_unreadable(store, force=args.force, flag_does="replaces it")
        import asyncio

        key = await asyncio.to_thread(_read_key)
        await manager.login_with_api_key(key)
    print(f"Logged in with an API key (saved to {_saved_where(store)}).")
    return EXIT_OK


def _saved_where(store: AuthStore) -> str:
    from ._storage import AutoAuthStore

    if isinstance(store, AutoAuthStore):
        path = store.home / "auth.json"
        return str(path) if path.exists() else "the system keyring"
    return where(store)


async def run_logout(args: argparse.Namespace) -> int:
    async with build_manager(args) as manager:
        await _refuse_unreadable(manager.store, force=args.force, flag_does="removes it")
        removed = await manager.logout()
    print("Logged out." if removed else "Not logged in; nothing to remove.")
    return EXIT_OK


async def run_token(args: argparse.Namespace) -> int:
    provider = provider_from(args)
    async with build_manager(args) as base:
        manager = for_provider(provider, base)
        if not await ready(manager, base):
            if manager is not base:
                print(
                    f"aioscopedauth: no token: the command of provider {args.provider!r} "
                    "printed none",
                    file=sys.stderr,
                )
                return EXIT_AUTH
            return await not_logged_in(base.store, login_hint(args))
        auth = await _live_token(manager) if manager is base else await manager.auth()
    if auth is None:
        print("aioscopedauth: no token", file=sys.stderr)
        return EXIT_AUTH
    sys.stdout.write(auth.token + "\n")
    return EXIT_OK


class _DeadTokenError(AuthError):
    """The access token has expired and could not be refreshed: nothing to print."""


async def _live_token(manager: AuthManager) -> Auth | None:
    """The stored login's token, refreshed first when it is due; never a dead one.

    ``auth()`` would log a failed proactive refresh and hand back the token it had, which
    suits a request (a 401 then recovers) but not a script that stores what ``token`` prints.
    Here a due token is refreshed through ``refresh_token()`` (guarded: tokens another process
    saved are adopted), so its failure is known: refused for good, or the token has expired,
    is an error (exit 1, nothing on stdout); a token still valid whose refresh failed for now
    is printed with one warning saying how long it has left.
    """
    from ._jwt import jwt_expiration
    from ._oauth import is_stale

    snapshot = manager.auth_cached()
    now = datetime.now(UTC)
    if snapshot is None or not is_stale(snapshot, now, manager.oauth):
        return await manager.auth()
    try:
        await manager.refresh_token()
    except RefreshTokenFailedError:
        raise  # refused for good: its own message says to log in again
    except AuthError as exc:
        tokens = snapshot.data.tokens if snapshot.data is not None else None
        # A standard provider's login stores its expiry; else the JWT's `exp`.
        expiry = None if tokens is None else tokens.expires_at
        if expiry is None:
            try:
                expiry = None if tokens is None else jwt_expiration(tokens.access_token)
            except AuthDataError:
                expiry = None
        now = datetime.now(UTC)
        if expiry is not None and expiry <= now:
            msg = f"{exc} (the access token has expired; try again later)"
            raise _DeadTokenError(msg) from None
        left = (
            "its expiry is unknown"
            if expiry is None
            else f"{span(int((expiry - now).total_seconds()))} left"
        )
        print(f"aioscopedauth: warning: {exc} (printed the current token: {left})", file=sys.stderr)
        return snapshot
    return manager.auth_cached()


async def run_refresh(args: argparse.Namespace) -> int:
    provider = provider_from(args)
    async with build_manager(args) as base:
        manager = for_provider(provider, base)
        if manager is not base:
            # A provider with a token command: its bearer is what gets refreshed.
            await manager.refresh_external_auth()
            print(f"Ran the command of provider {args.provider!r}: it printed a new token.")
            return EXIT_OK
        await manager.reload()
        before = manager.auth_cached()
        if before is None:
            return await not_logged_in(manager.store, login_hint(args))
        if not before.mode.is_refreshable:
            print(f"Logged in with {mode_text(before.mode)}: nothing to refresh.")
            return EXIT_OK
        async with manager.changes() as changes:
            await manager.refresh_token()
            reasons = []
            while not changes.empty():
                reasons.append((await anext(changes)).reason)
        after = manager.auth_cached()
    facts = status_facts(manager.store, after)
    expiry = facts.get("access_token_expires") or "unknown"
    if "refresh" in reasons:
        how = "Refreshed at the token endpoint"
    else:
        how = "Adopted newer tokens another process had saved (no refresh token spent)"
    print(f"{how}: the access token now expires {expiry}.")
    return EXIT_OK


async def run_demo(args: argparse.Namespace) -> int:
    # A Ctrl-C ends a demo with its summary (it says "Interrupted"), then exit 130.
    import asyncio

    if args.hosts is not None and args.record is not None:
        msg = "--record traces the single-host demo only: drop --hosts or --record"
        raise UsageError(msg)
    try:
        if args.hosts is not None:
            if args.redis_url:
                check_redis_url(args)  # before anything starts
            from ._fleet_demo import FleetDemoConfig, run_fleet_demo

            fleet = FleetDemoConfig(
                hosts=args.hosts,
                agents=args.agents or 8,
                seconds=args.seconds,
                redis_url=args.redis_url,
                seed=args.seed,
            )
            return EXIT_OK if (await run_fleet_demo(fleet)).passed else EXIT_AUTH
        from ._demo import DemoConfig, run_demo

        result = await run_demo(
            DemoConfig(
                agents=args.agents or 50,
                seconds=args.seconds,
                revoke_every=args.revoke_every,
                seed=args.seed,
                record=args.record,
            )
        )
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.passed else EXIT_AUTH
