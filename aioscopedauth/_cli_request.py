"""``aioscopedauth request``: one authenticated request, sent only to the login's own origins."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from ._cli_support import (
    EXIT_AUTH,
    EXIT_OK,
    UsageError,
    build_manager,
    for_provider,
    login_hint,
    not_logged_in,
    provider_from,
    ready,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from yarl import URL

    from ._config import ProviderInfo
    from ._model import Auth

_HTTP_ERROR = 400
# RFC 9110 tokens (methods, header names) and field values (no control character but tab).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_OPENAI_API = "https://api.openai.com"
_CHATGPT = "https://chatgpt.com"


def _parse_url(text: str) -> URL:
    from yarl import URL

    try:
        url = URL(text)
        host = url.host
    except (ValueError, TypeError):
        host, url = None, None
    if url is None or url.scheme not in {"http", "https"} or not host:
        msg = f"the URL must be an absolute http:// or https:// URL, got {text!r}"
        raise UsageError(msg)
    return url


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header in values:
        name, sep, value = header.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN.fullmatch(name):
            msg = f"a header must look like 'Name: value', got {header!r}"
            raise UsageError(msg)
        if _BAD_VALUE_CHAR.search(value):
            msg = f"the value of header {name!r} contains a line break or a control character"
            raise UsageError(msg)
        headers[name] = value
    return headers


def _origin_of(base_url: str | None) -> set[str]:
    from yarl import URL

    if not base_url:
        return set()
    try:
        return {str(URL(base_url).origin())}
    except ValueError:
        return set()


def _login_origins(auth: Auth | None, provider: ProviderInfo | None) -> set[str]:
    """The origins a login belongs to: where Codex itself would send it."""
    from yarl import URL

    from ._model import AuthMode

    if provider is not None and provider.base_url:
        try:
            return {str(URL(provider.base_url).origin())}
        except ValueError:
            return set()
    if auth is None:
        return set()
    if auth.mode.is_chatgpt or auth.mode is AuthMode.PERSONAL_ACCESS_TOKEN:
        return {_CHATGPT}
    base_url = os.environ.get("OPENAI_BASE_URL")
    if base_url:
        try:
            return {str(URL(base_url).origin())}
        except ValueError:
            pass
    return {_OPENAI_API}


async def run_request(args: argparse.Namespace) -> int:
    url = _parse_url(args.url)
    headers = _parse_headers(args.header)
    if args.data is not None and args.upload_file is not None:
        msg = "give the body once: --data or --upload-file, not both"
        raise UsageError(msg)
    default = "PUT" if args.upload_file is not None else "POST" if args.data is not None else "GET"
    method = args.method or default
    if not _TOKEN.fullmatch(method):
        msg = f"the method must be one word such as GET or POST, got {method!r}"
        raise UsageError(msg)
    extra = {str(_parse_url(origin).origin()) for origin in args.origin}
    provider = provider_from(args)

    import aiohttp

    from ._body import FileBody
    from ._middleware import AuthMiddleware

    data: str | FileBody | None = args.data
    path = args.upload_file or (args.data[1:] if args.data and args.data.startswith("@") else None)
    if path is not None:
        try:
            # Streamed from disk and opened anew for each send, so a 401 can be recovered.
            data = FileBody(path)
        except (OSError, ValueError) as exc:
            msg = f"cannot send {path} as the body: {exc}"
            raise UsageError(msg) from None

    async with build_manager(args) as base:
        manager = for_provider(provider, base)
        if not await ready(manager, base):
            return await not_logged_in(base.store, login_hint(args))
        # Raises for a login this library cannot send with, before any scope is decided.
        auth = await manager.auth()
        if args.oauth is not None:
            # An OAuth provider's login goes to its API (api_base_url), else only to --origin.
            origins = _origin_of(args.oauth.api_base_url) | extra
        else:
            origins = _login_origins(auth, provider) | extra
        target = str(url.origin())
        if target not in origins:
            mine = ", ".join(sorted(origins)) or "none"
            msg = (
                f"refusing to send the login to {target}: it is not one of the login's "
                f"origins ({mine}); pass --origin {target} to allow it"
            )
            raise UsageError(msg)
        middleware = AuthMiddleware(manager, origins=sorted(origins))
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            try:
                async with session.request(method, url, headers=headers, data=data) as response:
                    body = await response.read()
                    status, reason = response.status, response.reason
            except aiohttp.ClientError as exc:
                print(
                    f"aioscopedauth: request failed: {type(exc).__name__}: {exc}", file=sys.stderr
                )
                return EXIT_AUTH
    print(f"HTTP {status} {reason or ''}".rstrip(), file=sys.stderr)
    sys.stdout.buffer.write(body)
    if body and not body.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return EXIT_OK if status < _HTTP_ERROR else EXIT_AUTH
