"""The pytest plugin of the test kit, registered through the ``pytest11`` entry point.

Fixtures (none is autouse; each is available once aioscopedauth is installed):

* ``fake_auth_server``: a started :class:`FakeAuthServer` on 127.0.0.1, closed after the test.
* ``fake_oauth_config``: an :class:`~aioscopedauth.OAuthConfig` for it (no failure backoff).
* ``codex_home``: a fresh Codex home folder (not created yet) under ``tmp_path``.
* ``token_script``: a factory, ``token_script("tok-1", "tok-2")``, for a real bearer script.
* ``auth_leak_guard``: fails the test if a log record of the library, or any
  :class:`~aioscopedauth.AuthError` constructed during it (even one the test catches), contains
  a token a :class:`FakeAuthServer` issued or a value planted with ``auth_leak_guard.plant(...)``,
  or if an aiohttp session was left unclosed. Make it autouse in your ``conftest.py`` to guard
  every test.

The async fixture runs under pytest-asyncio (any mode) or, in tests marked ``anyio``, under
anyio's pytest plugin (with both installed, anyio's fixture hook must wrap pytest-asyncio's:
``-p asyncio`` in ``addopts`` orders them so). Loading the plugin imports nothing heavy:
aiohttp and the library are imported when a test first uses one of these fixtures.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from aioscopedauth._errors import AuthError
    from aioscopedauth._oauth import OAuthConfig

    from ._scripts import TokenScript
    from ._server import FakeAuthServer

try:
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio the async fixture is unusable
    _async_fixture = pytest.fixture  # type: ignore[assignment]  # same call shape

__all__ = [
    "LeakGuard",
    "auth_leak_guard",
    "codex_home",
    "fake_auth_server",
    "fake_oauth_config",
    "token_script",
]


@_async_fixture
async def fake_auth_server() -> AsyncIterator[FakeAuthServer]:
    """A started fake token endpoint and API on 127.0.0.1."""
    from ._server import FakeAuthServer  # noqa: PLC0415 -- loading the plugin stays cheap

    async with FakeAuthServer() as server:
        yield server


@pytest.fixture
def fake_oauth_config(fake_auth_server: FakeAuthServer) -> OAuthConfig:
    """An OAuth config that points at ``fake_auth_server`` (token and whoami endpoints).

    Retries are not backed off, and a ``refresh_token_reused`` answer is final at once
    (``reuse_grace=0``): no other writer is waiting to commit in a test unless it makes one.
    """
    from aioscopedauth._oauth import OAuthConfig  # noqa: PLC0415 -- loading the plugin stays cheap

    return OAuthConfig(
        fake_auth_server.token_url,
        fake_auth_server.client_id,
        failure_backoff=timedelta(0),
        reuse_grace=timedelta(0),
        authapi_base_url=fake_auth_server.authapi_url,
    )


@pytest.fixture
def codex_home(tmp_path: Path) -> Path:
    """A Codex home folder under ``tmp_path``; it does not exist until something saves."""
    return tmp_path / "codex-home"


@pytest.fixture
def token_script(tmp_path: Path) -> Callable[..., TokenScript]:
    """Return a factory that writes a real bearer-token script printing the given lines."""
    from ._scripts import write_token_script  # noqa: PLC0415 -- loading the plugin stays cheap

    counter = iter(range(1_000_000))

    def make(*lines: str) -> TokenScript:
        return write_token_script(tmp_path / f"token-script-{next(counter)}", *lines)

    return make


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


class LeakGuard:
    """What ``auth_leak_guard`` watches; plant your own secrets with :meth:`plant`."""

    def __init__(self) -> None:
        """Start with no planted secret."""
        self.planted: set[str] = set()
        self.logs = _Recorder()
        self.asyncio_logs = _Recorder()
        self.errors: list[str] = []
        self.raised: list[AuthError] = []

    def plant(self, *secrets: str) -> None:
        """Add values that must never appear in a log record or an error.

        Args:
            *secrets: The values (API keys, tokens, command outputs).
        """
        self.planted.update(s for s in secrets if s)

    def check(self) -> None:
        """Fail if a secret leaked or an aiohttp session was left unclosed."""
        from ._server import issued_secrets  # noqa: PLC0415 -- loading the plugin stays cheap

        unclosed = [t for t in self.asyncio_logs.texts if "Unclosed" in t]
        assert not unclosed, f"unclosed aiohttp resources: {unclosed}"  # noqa: S101 -- pytest
        secrets = self.planted | issued_secrets()
        texts = self.logs.texts + self.errors + [_chain_text(e) for e in self.raised]
        for text in texts:
            leaked = any(secret in text for secret in secrets)
            assert not leaked, f"a secret leaked into a log record or error: {text[:200]!r}"  # noqa: S101 -- pytest


def _chain_text(error: BaseException) -> str:
    """The formatted traceback of ``error`` and the repr of every exception chained to it.

    ``__context__`` is followed even when suppressed (``raise ... from None``): the exception
    is still reachable from the one raised, and a ``repr`` (a ``UnicodeDecodeError``'s holds the
    bytes it failed on) or an attribute of it may quote a secret.
    """
    parts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        link = stack.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        parts.append(repr(link))
        parts.extend(repr(value) for value in vars(link).values() if isinstance(value, str | bytes))
        stack += [link.__cause__, link.__context__]
    return "\n".join(parts)


@pytest.fixture
def auth_leak_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[LeakGuard]:
    """Fail the test if a secret reaches a log record or an error; see :class:`LeakGuard`."""
    from aioscopedauth._errors import AuthError  # noqa: PLC0415 -- loading the plugin stays cheap

    from ._server import forget_issued_secrets  # noqa: PLC0415 -- loading the plugin stays cheap

    forget_issued_secrets()
    guard = LeakGuard()
    library_logger = logging.getLogger("aioscopedauth")
    # aiohttp reports an unclosed session or connector through asyncio's logger, not a warning.
    asyncio_logger = logging.getLogger("asyncio")
    previous_level = library_logger.level
    library_logger.addHandler(guard.logs)
    library_logger.setLevel(logging.DEBUG)
    asyncio_logger.addHandler(guard.asyncio_logs)
    original_init = AuthError.__init__

    # Not a mock: the real __init__ runs. This only observes each message, because an error a
    # test catches never reaches a report that could be scanned otherwise.
    def observing_init(self: AuthError, *args: object) -> None:
        original_init(self, *args)
        guard.errors.append(" ".join(str(a) for a in args))
        guard.raised.append(self)

    monkeypatch.setattr(AuthError, "__init__", observing_init)
    try:
        yield guard
    finally:
        asyncio_logger.removeHandler(guard.asyncio_logs)
        library_logger.removeHandler(guard.logs)
        library_logger.setLevel(previous_level)
    guard.check()
