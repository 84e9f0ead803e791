"""A stand-in for the user's browser, run by :mod:`webbrowser` through ``$BROWSER``.

``aioscopedauth login --provider NAME`` opens the authorization URL with ``webbrowser.open``,
which runs ``$BROWSER`` with the URL. This script plays the user there: logs in as
``$AIOSCOPEDAUTH_TEST_ACCOUNT`` (default ``alice``) through the provider's interaction
endpoints, consents, follows the redirect back to the command's loopback page and writes that
page's status and text to ``$AIOSCOPEDAUTH_TEST_LANDED`` (a file the test reads).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oidc.harness import REDIRECT_URI, _browser, _follow


async def _main(url: str) -> int:
    account = os.environ.get("AIOSCOPEDAUTH_TEST_ACCOUNT", "alice")
    async with _browser() as http:
        location = await _follow(http, url, account=account, deny=False, stop=REDIRECT_URI)
        if location is None:
            return 1
        async with http.get(location) as response:
            landed = f"{response.status} {await response.text()}"
    Path(os.environ["AIOSCOPEDAUTH_TEST_LANDED"]).write_text(landed)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1])))
