"""Shared fixtures: the installed-package guard, canary secrets, and a real in-memory keyring."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import keyring
import pytest

import aioscopedauth
from aioscopedauth import AuthError, AuthManager, FileAuthStore, OAuthConfig
from aioscopedauth.testing import FakeAuthServer, forget_issued_secrets, issued_secrets

from support import CANARIES, HangingKeyring, MemoryKeyring

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

if os.environ.get("AIOSCOPEDAUTH_REQUIRE_INSTALLED") == "1":
    # nox runs the suite against the built wheel; importing the checkout would hide packaging bugs.
    _checkout = Path(__file__).resolve().parent.parent / "aioscopedauth"
    if Path(aioscopedauth.__file__).resolve().parent == _checkout:
        msg = f"aioscopedauth was imported from the checkout ({_checkout}), not the installed wheel"
        raise RuntimeError(msg)


class _LeakRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


@pytest.fixture(autouse=True)
def leak_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test whose log records or raised errors contain a secret.

    Secrets are the planted canaries and every token a FakeAuthServer issued during the test.
    Every log record of the library is captured at DEBUG level, and every AuthError the library
    constructs is recorded, including the ones a test catches with pytest.raises.
    """
    forget_issued_secrets()
    recorder = _LeakRecorder()
    # aiohttp reports an unclosed session or connector through asyncio's logger, not a warning.
    unclosed = _LeakRecorder()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(unclosed)
    library_logger = logging.getLogger("aioscopedauth")
    previous_level = library_logger.level
    library_logger.addHandler(recorder)
    library_logger.setLevel(logging.DEBUG)
    errors: list[str] = []
    original_init = AuthError.__init__

    # Not a mock: the real __init__ runs; this only observes each message, because an error a
    # test catches never reaches a report that could be scanned otherwise.
    def observing_init(self: AuthError, *args: object) -> None:
        original_init(self, *args)
        errors.append(" ".join(str(a) for a in args))

    monkeypatch.setattr(AuthError, "__init__", observing_init)
    try:
        yield
    finally:
        asyncio_logger.removeHandler(unclosed)
        library_logger.removeHandler(recorder)
        library_logger.setLevel(previous_level)
    assert not [t for t in unclosed.texts if "Unclosed" in t], unclosed.texts
    secrets = set(CANARIES) | issued_secrets()
    for text in recorder.texts + errors:
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"a secret leaked into a log record or error: {text[:200]!r}"


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    """Register a fresh in-memory keyring as the process's keyring for one test."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def hanging_keyring() -> Iterator[HangingKeyring]:
    backend = HangingKeyring()
    try:
        yield backend
    finally:
        backend.release.set()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A Codex home folder that does not exist yet."""
    return tmp_path / "codex-home"


@pytest.fixture
def canary_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every log record of the library and fail the test if one carries a canary."""
    caplog.set_level(logging.DEBUG, logger="aioscopedauth")
    yield caplog
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        for canary in CANARIES:
            assert canary not in text, f"secret leaked into a log record: {record.getMessage()!r}"


@pytest.fixture
def server(fake_auth_server: FakeAuthServer) -> FakeAuthServer:
    """The test kit's fake token endpoint and API (1-hour access tokens)."""
    return fake_auth_server


@pytest.fixture
def oauth(fake_oauth_config: OAuthConfig) -> OAuthConfig:
    """The test kit's OAuth config for ``server`` (no failure backoff)."""
    return fake_oauth_config


@pytest.fixture
async def manager(home: Path, oauth: OAuthConfig) -> AsyncIterator[AuthManager]:
    """A manager over ``FileAuthStore(home)`` and ``server``; closed after the test."""
    async with AuthManager(FileAuthStore(home), oauth) as mgr:
        yield mgr
