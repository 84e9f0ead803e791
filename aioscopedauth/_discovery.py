"""Reading a provider's metadata: OpenID Connect discovery, then RFC 8414.

The decisions (which URLs to try, whether the metadata is usable, which client authentication
to pick) are pure functions; :func:`discover_metadata` is the only code here that does I/O.
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["config_fields", "discover_metadata", "is_loopback", "metadata_urls"]

OPENID_WELL_KNOWN = "/.well-known/openid-configuration"
OAUTH_WELL_KNOWN = "/.well-known/oauth-authorization-server"
DEFAULT_TIMEOUT = 30.0
MAX_METADATA = 256 * 1024
"""A metadata document is a few KiB; a larger answer is refused rather than read."""

_ENDPOINTS = {
    "token_endpoint": "token_url",
    "device_authorization_endpoint": "device_authorization_url",
    "authorization_endpoint": "authorization_url",
    "revocation_endpoint": "revocation_url",
}


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine (``localhost``, 127.0.0.0/8, ``::1``).

    Args:
        host: A URL's host name.

    Returns:
        ``True`` for a loopback host.
    """
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, what: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"{what} must be an absolute https URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        # A client secret and refresh tokens would cross the network in clear text.
        return f"{what} must use https (http only on a loopback address)"
    if parts.query or parts.fragment:
        return f"{what} must have no query or fragment"
    return None


def metadata_urls(issuer: str) -> tuple[str, str]:
    """Where the metadata of ``issuer`` is looked for, in order.

    OpenID Connect Discovery §4 appends its well-known path to the issuer; RFC 8414 §3 inserts
    its own between the host and the issuer's path.

    Args:
        issuer: The issuer URL.

    Returns:
        The OpenID discovery URL, then the RFC 8414 one.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    openid = urlunsplit((parts.scheme, parts.netloc, path + OPENID_WELL_KNOWN, "", ""))
    oauth = urlunsplit((parts.scheme, parts.netloc, OAUTH_WELL_KNOWN + path, "", ""))
    return openid, oauth


def _same_issuer(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def metadata_problem(issuer: str, metadata: object) -> str | None:
    """Say why a metadata document cannot be used for ``issuer``, if it cannot.

    Args:
        issuer: The issuer asked for.
        metadata: The decoded document.

    Returns:
        A phrase, or ``None`` when it is usable.
    """
    if not isinstance(metadata, dict):
        return "it is not a JSON object"
    named = metadata.get("issuer")
    if not isinstance(named, str) or not _same_issuer(named, issuer):
        # RFC 8414 §3.3 and OpenID Discovery §4.3: a different issuer is a mix-up, refused.
        return "its issuer is not the one asked for"
    if not isinstance(metadata.get("token_endpoint"), str):
        return "it names no token_endpoint"
    for key in _ENDPOINTS:
        value = metadata.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"its {key} is not a string"
        problem = _check_url(value, f"its {key}")
        if problem is not None:
            return problem
    return None


def config_fields(
    metadata: Mapping[str, Any], *, client_secret: str | None, client_auth: str | None
) -> dict[str, Any]:
    """Turn usable metadata into :class:`~aioscopedauth.OAuthConfig` fields.

    Args:
        metadata: A document :func:`metadata_problem` accepted.
        client_secret: The client's secret, if it has one (only whether it is set matters).
        client_auth: The method the caller asked for, if any (it wins).

    Returns:
        ``token_url``, the other endpoints the provider has, and ``client_auth``.

    Raises:
        ConfigError: A client with a secret, and a provider that lists neither
            ``client_secret_basic`` nor ``client_secret_post``.
    """
    fields: dict[str, Any] = {
        field: metadata[key] for key, field in _ENDPOINTS.items() if metadata.get(key) is not None
    }
    if client_auth is not None:
        fields["client_auth"] = client_auth
        return fields
    if client_secret is None:
        fields["client_auth"] = "none"
        return fields
    # RFC 8414 §2: when the provider lists no methods, client_secret_basic is the default.
    listed = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if not isinstance(listed, list):
        listed = ["client_secret_basic"]
    for method in ("client_secret_basic", "client_secret_post"):
        if method in listed:
            fields["client_auth"] = method
            return fields
    methods = ", ".join(str(m) for m in listed)
    msg = (
        f"OAuthConfig.discover: the provider accepts no client secret at its token endpoint "
        f"(it lists {methods}); pass client_auth=... or use a client without a secret"
    )
    raise ConfigError(msg)


async def _fetch(http: aiohttp.ClientSession, url: str, wait: float) -> tuple[int, object]:
    """GET a metadata document: its status and decoded JSON (``None`` when not JSON)."""
    async with http.get(
        url,
        headers={"Accept": "application/json"},
        timeout=aiohttp.ClientTimeout(total=wait),
        middlewares=(),
        allow_redirects=False,
    ) as response:
        if response.status != 200:  # noqa: PLR2004 -- the one status a document comes with
            return response.status, None
        body = await response.content.read(MAX_METADATA + 1)
        if len(body) > MAX_METADATA:
            return response.status, None
    try:
        return 200, json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return 200, None


async def discover_metadata(
    issuer: str, *, http: aiohttp.ClientSession | None = None, wait: float | None = None
) -> dict[str, Any]:
    """Read the metadata of ``issuer``: OpenID discovery first, then RFC 8414.

    Args:
        issuer: The issuer URL.
        http: The session to read with (default: a new one, closed after).
        wait: Seconds each request may take (default 30).

    Returns:
        The first usable document.

    Raises:
        ConfigError: The issuer is not a usable URL, or neither document could be read or
            used; the message names both URLs and what each answered.
    """
    given: object = issuer
    problem = (
        _check_url(issuer, "the issuer")
        if isinstance(given, str)
        else "the issuer must be an absolute https URL"
    )
    if problem is not None:
        msg = f"OAuthConfig.discover: {problem}"
        raise ConfigError(msg)
    seconds = DEFAULT_TIMEOUT if wait is None else wait
    own = http is None
    session = aiohttp.ClientSession() if http is None else http
    found: list[str] = []
    try:
        for url in metadata_urls(issuer):
            try:
                status, metadata = await _fetch(session, url, seconds)
            except TimeoutError:
                found.append(f"{url} did not answer within {seconds:g} s")
                continue
            except aiohttp.ClientError as exc:
                found.append(f"{url} could not be reached ({type(exc).__name__})")
                continue
            if status != 200:  # noqa: PLR2004 -- the one status a document comes with
                found.append(f"{url} answered {status}")
                continue
            if metadata is None:
                found.append(f"{url} is not JSON (or larger than {MAX_METADATA // 1024} KiB)")
                continue
            problem = metadata_problem(issuer, metadata)
            if problem is None:
                assert isinstance(metadata, dict)  # noqa: S101 -- metadata_problem checked it
                return metadata
            found.append(f"{url}: {problem}")
    finally:
        if own:
            await session.close()
    msg = (
        f"OAuthConfig.discover: no usable metadata for {issuer}: {'; '.join(found)}. Check the "
        "issuer URL (exactly as the provider names itself) and that the provider is reachable."
    )
    raise ConfigError(msg)
