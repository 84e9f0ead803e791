"""Run the real OpenID provider (npm ``oidc-provider``, pinned) and drive its user side.

``provider.mjs`` beside this file configures it; ``nox -s oidc`` installs the package into a
cache folder and names it in ``AIOSCOPEDAUTH_OIDC_MODULES``. The user side (a login page, a
consent, a device code typed into a browser) is driven over HTTP with aiohttp: the provider's
own device pages, and interaction endpoints of the script that log in a test account and consent
to everything asked (the provider's consent and grant logic are its own).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import re
import secrets
import selectors
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote_plus, urlencode, urljoin, urlsplit

import aiohttp
import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

PROVIDER_VERSION = "9.13.3"
"""The oidc-provider the suite runs against (pinned in package.json and package-lock.json)."""
MODULES_ENV = "AIOSCOPEDAUTH_OIDC_MODULES"
"""The ``node_modules`` folder that holds oidc-provider; the nox session ``oidc`` sets it."""
SCRIPT = Path(__file__).with_name("provider.mjs")
START_DEADLINE = 30.0
"""Seconds a provider may take to start on a loaded machine."""

BASIC = ("basic client:1%", "basic secret: a+b/c%d&e=f")
"""client_secret_basic client: id and secret need RFC 6749 §2.3.1 encoding before Base64."""
POST = ("post-client", "post secret: a+b/c%d&e=f")
NATIVE = "native-client"
"""A public native client (auth method ``none``, PKCE, loopback redirect)."""
SERVICE = ("service-client", "service secret: a+b/c%d&e=f")
"""client_credentials only, scope ``api:read`` allowed."""
NO_REFRESH = ("no-refresh-client", "no-refresh secret")
"""May use the device flow but not the refresh_token grant."""
EXCHANGE = ("exchange-client", "exchange secret: a+b/c%d&e=f")
"""May exchange a workload's subject token (RFC 8693), with ``tokenExchange`` set only."""
REDIRECT_URI = "http://127.0.0.1/callback"


def modules_dir() -> Path | None:
    """The folder named by ``AIOSCOPEDAUTH_OIDC_MODULES``, if set."""
    value = os.environ.get(MODULES_ENV)
    return Path(value) if value else None


def skip_reason() -> str | None:
    """Why the oidc suite cannot run here, or ``None``."""
    modules = modules_dir()
    if modules is None:
        return (
            f"{MODULES_ENV} is not set: run `nox -s oidc`, which installs "
            f"oidc-provider@{PROVIDER_VERSION} with npm and sets it"
        )
    if not (modules / "oidc-provider" / "lib" / "index.js").is_file():
        return f"{MODULES_ENV}={modules} holds no oidc-provider"
    if shutil.which("node") is None:
        return "node is not on PATH"
    return None


@attrs.define
class OidcProvider:
    """A running provider process; :meth:`stop` ends it (closing its stdin ends it too)."""

    process: subprocess.Popen[bytes]
    issuer: str
    log: Path
    config: Mapping[str, Any]

    @classmethod
    def start(cls, log: Path, **config: Any) -> OidcProvider:
        """Start one and wait for its ready line; kill it if it does not come."""
        modules = modules_dir()
        node = shutil.which("node")
        assert modules is not None
        assert node is not None
        with log.open("wb") as err:
            process = subprocess.Popen(
                [node, str(SCRIPT), str(modules), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        try:
            line = _read_line(process, START_DEADLINE)
            issuer = json.loads(line)["issuer"]
        except BaseException:
            process.kill()
            process.wait()
            raise
        return cls(process, issuer, log, config)

    def stop(self) -> None:
        """End the process (stdin closed, then killed after 5 s) and reap it."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return f"{self.issuer}/token"

    @property
    def device_url(self) -> str:
        """The device authorization endpoint."""
        return f"{self.issuer}/device/auth"

    @property
    def revocation_url(self) -> str:
        """The revocation endpoint (RFC 7009)."""
        return f"{self.issuer}/token/revocation"

    @property
    def resource_url(self) -> str:
        """The protected resource beside the provider."""
        return f"{self.issuer}/resource"

    async def stats(self) -> dict[str, Any]:
        """The provider's counters (token requests and errors per grant type, reuse, revokes)."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.issuer}/__test/stats") as r:
            r.raise_for_status()
            stats: dict[str, Any] = await r.json()
            return stats

    async def call_resource(self, access_token: str, *, scope: str | None = None) -> int:
        """The status the protected resource answers for ``access_token`` (needing ``scope``)."""
        headers = {"Authorization": f"Bearer {access_token}"}
        params = {} if scope is None else {"scope": scope}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.resource_url, headers=headers, params=params) as r,
        ):
            return r.status

    async def introspect(self, token: str, client: str | tuple[str, str] = BASIC) -> dict[str, Any]:
        """RFC 7662 introspection of ``token`` by ``client`` (a public one by its id alone)."""
        url = f"{self.issuer}/token/introspection"
        form = {"token": token}
        headers = {}
        if isinstance(client, str):
            form["client_id"] = client
        else:
            headers = _basic(client)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=form, headers=headers) as r,
        ):
            r.raise_for_status()
            result: dict[str, Any] = await r.json()
            return result

    async def authorize(
        self,
        url: str,
        *,
        redirect_uri: str = REDIRECT_URI,
        account: str = "alice",
        deny: bool = False,
    ) -> dict[str, str]:
        """Play the user's browser from an authorization URL to the redirect back to the app.

        Args:
            url: The authorization request.
            redirect_uri: Where the provider sends the browser back (not fetched).
            account: Who logs in.
            deny: Refuse at the login step (``access_denied``).

        Returns:
            The query of the redirect back (``code`` and ``state``, or ``error``…).
        """
        async with _browser() as http:
            location = await _follow(http, url, account=account, deny=deny, stop=redirect_uri)
        assert location is not None, "the provider never sent the browser back"
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    async def open_in_browser(
        self, url: str, *, account: str = "alice", deny: bool = False
    ) -> tuple[int, str]:
        """Play the browser a login opens: log in, consent, land on the app's loopback page.

        Returns:
            The status and text of the page the app's redirect URI answered.
        """
        async with _browser() as http:
            location = await _follow(http, url, account=account, deny=deny, stop=REDIRECT_URI)
            assert location is not None, "the provider never sent the browser back"
            async with http.get(location) as response:
                return response.status, await response.text()

    async def code_login(
        self,
        client_id: str = NATIVE,
        client_secret: str | None = None,
        *,
        post: bool = False,
        scope: str = "openid offline_access",
        redirect_uri: str = REDIRECT_URI,
        account: str = "alice",
    ) -> dict[str, Any]:
        """A browser login (authorization code, PKCE S256), written out with raw HTTP.

        Independent of the library on purpose: it makes the logins the library's refresh is
        then tested on. The client authenticates with Basic (RFC 6749 §2.3.1 encoding) when it
        has a secret, in the form when ``post``.

        Returns:
            The token endpoint's answer.
        """
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        query = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "prompt": "consent",
            "state": "state-1",
            "code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        back = await self.authorize(
            f"{self.issuer}/auth?{urlencode(query)}", redirect_uri=redirect_uri, account=account
        )
        assert back.get("state") == "state-1", back
        form = {
            "grant_type": "authorization_code",
            "code": back["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {}
        if client_secret is None or post:
            form["client_id"] = client_id
            if client_secret is not None:
                form["client_secret"] = client_secret
        else:
            headers = _basic((client_id, client_secret))
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.token_url, data=form, headers=headers) as response,
        ):
            answer: dict[str, Any] = await response.json()
            assert response.status == 200, answer
            return answer

    async def approve_device(
        self, verification_uri_complete: str, *, account: str = "alice", deny: bool = False
    ) -> str:
        """Play the user who opens the device link, confirms the code and logs in.

        Args:
            verification_uri_complete: The link from the device authorization answer.
            account: Who logs in.
            deny: Press "Abort" on the confirmation page (``access_denied`` for the device).

        Returns:
            The last page's text.
        """
        async with _browser() as http:
            # The link answers an auto-submitting form; its submission, the confirm page.
            async with http.get(verification_uri_complete) as r:
                page = await r.text()
            action, fields = _form(page, r.url)
            async with http.post(action, data=fields) as r:
                page = await r.text()
            action, fields = _form(page, r.url)
            if deny:
                fields.pop("confirm", None)
                fields["abort"] = "yes"
            async with http.post(action, data=fields, allow_redirects=False) as r:
                if r.status not in {302, 303}:
                    return await r.text()
                location = urljoin(str(r.url), r.headers["Location"])
            async with await _walk(http, location, account=account, deny=False) as r:
                return await r.text()


def _basic(client: tuple[str, str]) -> dict[str, str]:
    # RFC 6749 §2.3.1, written out independently of the library's own encoding.
    pair = f"{quote_plus(client[0])}:{quote_plus(client[1])}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}


def _read_line(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert process.stdout is not None
    end = time.monotonic() + deadline
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = end - time.monotonic()
            if left <= 0:
                msg = f"the provider did not start within {deadline:g} s"
                raise TimeoutError(msg)
            if selector.select(left):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    msg = f"the provider exited ({process.wait()}) before it was ready"
                    raise RuntimeError(msg)
                buffer += chunk
    return buffer.split(b"\n", 1)[0]


def _browser() -> aiohttp.ClientSession:
    # unsafe=True: the provider's cookies are set by 127.0.0.1, which the default jar refuses.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


_INPUT = re.compile(r"<input\b([^>]*)>", re.IGNORECASE)
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_ACTION = re.compile(r'<form\b[^>]*\baction="([^"]*)"', re.IGNORECASE)


def _form(page: str, base: Any) -> tuple[str, dict[str, str]]:
    """The action and the named inputs of the page's form."""
    action = _ACTION.search(page)
    assert action is not None, f"no form on the page: {page[:300]!r}"
    fields: dict[str, str] = {}
    for tag in _INPUT.finditer(page):
        attrs_ = {k.lower(): html.unescape(v) for k, v in _ATTR.findall(tag.group(1))}
        if "name" in attrs_ and "value" in attrs_:
            fields[attrs_["name"]] = attrs_["value"]
    return urljoin(str(base), html.unescape(action.group(1))), fields


async def _walk(
    http: aiohttp.ClientSession, url: str, *, account: str, deny: bool
) -> aiohttp.ClientResponse:
    """GET ``url`` and play every interaction it leads to; the final response (not redirected)."""
    while True:
        response = await http.get(url, allow_redirects=False)
        if response.status not in {302, 303}:
            if "/interaction/" not in url:
                return response
            response.release()
            url = await _interact(http, url, account=account, deny=deny)
            continue
        url = urljoin(url, response.headers["Location"])
        response.release()


async def _follow(
    http: aiohttp.ClientSession, url: str, *, account: str, deny: bool, stop: str
) -> str | None:
    """Follow redirects and interactions until a redirect to ``stop`` (returned), else None."""
    target = urlsplit(stop)
    for _ in range(20):
        async with http.get(url, allow_redirects=False) as response:
            location = response.headers.get("Location")
            status = response.status
        if status not in {302, 303} or location is None:
            if "/interaction/" in url:
                url = await _interact(http, url, account=account, deny=deny)
                if _same_endpoint(url, target):
                    return url
                continue
            return None
        url = urljoin(url, location)
        if _same_endpoint(url, target):
            return url
    return None


def _same_endpoint(url: str, target: Any) -> bool:
    # A loopback redirect may use any port (RFC 8252 §7.3).
    parts = urlsplit(url)
    return (parts.scheme, parts.hostname, parts.path) == (
        target.scheme,
        target.hostname,
        target.path,
    )


async def _interact(http: aiohttp.ClientSession, url: str, *, account: str, deny: bool) -> str:
    """Answer one interaction (log in as ``account``, or consent); where it sends the browser."""
    action = "abort" if deny else "approve"
    async with http.post(
        f"{url}/{action}", json={"account": account}, allow_redirects=False
    ) as response:
        assert response.status == 303, f"the interaction answered {response.status}"
        return urljoin(url, response.headers["Location"])
