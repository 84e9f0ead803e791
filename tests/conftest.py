"""Shared fixtures: the installed-package guard, canary secrets, and a real in-memory keyring."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import keyring
import pytest

import aioscopedauth
from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig
from aioscopedauth.testing import FakeAuthServer

from support import CANARIES, HangingKeyring, MemoryKeyring

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

if os.environ.get("AIOSCOPEDAUTH_REQUIRE_INSTALLED") == "1":
    # nox runs the suite against the built wheel; importing the checkout would hide packaging bugs.
    _checkout = Path(__file__).resolve().parent.parent / "aioscopedauth"
    if Path(aioscopedauth.__file__).resolve().parent == _checkout:
        msg = f"aioscopedauth was imported from the checkout ({_checkout}), not the installed wheel"
        raise RuntimeError(msg)


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
async def server() -> AsyncIterator[FakeAuthServer]:
    """A fake token endpoint and API on 127.0.0.1 (1-hour access tokens)."""
    async with FakeAuthServer() as fake:
        yield fake


@pytest.fixture
def oauth(server: FakeAuthServer) -> OAuthConfig:
    """The OAuth config for ``server`` (no failure backoff, so retries are immediate)."""
    return OAuthConfig(server.token_url, server.client_id, failure_backoff=timedelta(0))


@pytest.fixture
async def manager(home: Path, oauth: OAuthConfig) -> AsyncIterator[AuthManager]:
    """A manager over ``FileAuthStore(home)`` and ``server``; closed after the test."""
    async with AuthManager(FileAuthStore(home), oauth) as mgr:
        yield mgr
