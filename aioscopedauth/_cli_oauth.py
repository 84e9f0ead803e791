"""``aioscopedauth login --provider NAME``: a login at an OAuth provider of ``aioscopedauth.toml``.

A browser login by default (the URL is printed too, for a machine without a browser), a device
login with ``--device`` (the code and where to enter it are printed), a machine login with
``--client-credentials``. The login is kept in the provider's own folder (``_oauth_providers``).
Nothing secret is printed: the user code of a device login is not one (it is shown to be typed).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ._cli_support import EXIT_OK, UsageError, build_manager, where

if TYPE_CHECKING:
    import argparse

    from ._grants import DeviceCode


def _say(text: str) -> None:
    # Flushed at once: the user (or a script) acts on it while the command waits.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _show_device_code(code: DeviceCode) -> None:
    _say(f"To log in, open {code.verification_uri} and enter the code {code.user_code}")
    if code.verification_uri_complete is not None:
        _say(f"  (or open {code.verification_uri_complete})")
    _say(f"Waiting for the approval (the code expires in {int(code.expires_in)} s)...")


def _open_url(url: str) -> bool:
    import webbrowser

    _say(f"To log in, open this URL in a browser (opening it now if one is available):\n  {url}")
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False  # no browser here: the printed URL is the way


async def run_oauth_login(args: argparse.Namespace) -> int:
    """Log in at ``args.oauth`` (configured in ``args.oauth_settings``) the way the flags say."""
    provider = args.oauth
    if args.api_key:
        msg = (
            f"--api-key is for the Codex login; provider {provider.name!r} logs in with a "
            "browser (the default), --device or --client-credentials"
        )
        raise UsageError(msg)
    if args.force:
        msg = "--force is for --api-key; a provider's login replaces the one it had"
        raise UsageError(msg)
    async with build_manager(args) as manager:
        if args.client_credentials:
            await manager.login_with_client_credentials()
            how = "with the client's credentials"
        elif args.device:
            await manager.login_with_device_code(_show_device_code)
            how = "with a device code"
        else:
            await manager.login_with_browser(_open_url, redirect_port=provider.redirect_port)
            how = "in the browser"
        store = manager.store
    _say(f"Logged in at {provider.name} {how} (saved to {where(store)}).")
    return EXIT_OK
