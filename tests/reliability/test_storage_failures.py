"""Regressions from the third outside review (issue 20) that live in the stores.

Items 2 (a failing keyring in ``auto`` mode), 3 (root saving a user's login), 8 (keyring
discovery on the event loop) and 13 (one stuck thread per hung keyring call).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import keyring.backend
import keyring.backends.fail
import keyring.errors
import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AutoAuthStore,
    FileAuthStore,
    KeyringAuthStore,
    OAuthConfig,
    StorageError,
    store_key,
)
from aioscopedauth.testing import FakeAuthServer, chatgpt_auth, write_auth_json

from support import MemoryKeyring

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NOBODY = 65534

only_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can save another user's login")


def _owners(home: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_uid, p.lstat().st_gid) for p in sorted(home.iterdir())}


# -- item 3: files root creates in a user's home are the user's ------------------------------


@only_root
async def test_root_saving_a_users_login_leaves_every_file_theirs(home: Path) -> None:
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-first"))
    theirs = (NOBODY, NOBODY)
    assert _owners(home) == {"auth.json": theirs, "auth.json.lock": theirs, "auth.lock": theirs}
    async with store.lock():
        pass
    assert _owners(home) == {
        "aioscopedauth-refresh.lock": theirs,
        "auth.json": theirs,
        "auth.json.lock": theirs,
        "auth.lock": theirs,
    }
    # update() takes the locks on its own fast path; it keeps them theirs too.
    await store.update(lambda _: AuthDotJson.for_api_key("sk-second"))
    assert set(_owners(home).values()) == {theirs}


@only_root
async def test_files_root_left_behind_are_given_back(home: Path) -> None:
    home.mkdir(mode=0o700)
    for name in ("auth.json", "auth.lock", "auth.json.lock", "aioscopedauth-refresh.lock"):
        (home / name).touch(mode=0o600)
    os.chown(home, NOBODY, NOBODY)
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-1"))
    async with store.lock():
        pass
    assert set(_owners(home).values()) == {(NOBODY, NOBODY)}


@only_root
async def test_root_creating_a_users_home_makes_it_theirs(tmp_path: Path) -> None:
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    os.chown(user_dir, NOBODY, NOBODY)
    home = user_dir / "deeper" / ".codex"
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-1"))
    for folder in (user_dir / "deeper", home):
        assert (folder.stat().st_uid, folder.stat().st_gid) == (NOBODY, NOBODY)
    assert set(_owners(home).values()) == {(NOBODY, NOBODY)}


@only_root
async def test_root_never_gives_away_a_file_a_lock_name_points_at(
    home: Path, tmp_path: Path
) -> None:
    # A user who links auth.lock to a file of root's must not get that file from root.
    secret = tmp_path / "roots-file"
    secret.write_text("root's\n")
    linked = tmp_path / "hard-linked"
    linked.write_text("root's too\n")
    home.mkdir(mode=0o700)
    (home / "auth.lock").symlink_to(secret)
    os.link(linked, home / "auth.json.lock")
    os.chown(home, NOBODY, NOBODY)
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-1"))
    assert (secret.stat().st_uid, linked.stat().st_uid) == (0, 0)
    assert (home / "auth.json").stat().st_uid == NOBODY


# -- items 8 and 13: keyring calls run off the loop, one at a time per store -------------------


class GatedKeyring(keyring.backend.KeyringBackend):
    """A real backend whose reads wait until released, as one waiting for an unlock prompt."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring's base is untyped
        self.release = threading.Event()
        self.entered = threading.Event()
        self.guard = threading.Lock()
        self.calls = 0
        self.inside = 0
        self.most_inside = 0

    def get_password(self, service: str, username: str) -> str | None:
        with self.guard:
            self.calls += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.set()
        try:
            self.release.wait(30)
        finally:
            with self.guard:
                self.inside -= 1
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NotImplementedError

    def delete_password(self, service: str, username: str) -> None:
        raise NotImplementedError


@pytest.fixture
def gated_keyring() -> Iterator[GatedKeyring]:
    backend = GatedKeyring()
    try:
        yield backend
    finally:
        backend.release.set()


def _keyring_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "aioscopedauth-keyring"}


async def test_thirty_loads_against_a_hung_keyring_strand_one_thread(
    home: Path, gated_keyring: GatedKeyring
) -> None:
    before = _keyring_threads()
    store = KeyringAuthStore(home, timeout=0.2, backend=gated_keyring)
    with pytest.raises(StorageError) as first:
        await store.load()
    assert str(first.value) == (
        "failed to load CLI auth from keyring: the keyring did not answer within 0.2 s. "
        "Unlock it and retry."
    )
    for _ in range(29):
        with pytest.raises(StorageError, match=r"^failed to load CLI auth from keyring: the "
                           r"keyring has not answered a call made \d+ s ago, so no new one was "
                           r"made\. Unlock it and retry\.$"):  # fmt: skip
            await store.load()
    stuck = _keyring_threads() - before
    assert gated_keyring.calls == 1
    assert len(stuck) == 1
    # Once the keyring answers, the store uses it again.
    gated_keyring.release.set()
    await asyncio.to_thread(stuck.pop().join, 30)
    assert await store.load() is None
    assert gated_keyring.calls == 2


async def test_thirty_reloads_of_an_auto_store_strand_one_thread(
    home: Path, gated_keyring: GatedKeyring
) -> None:
    data = AuthDotJson.for_api_key("sk-file")
    write_auth_json(home, data)
    before = _keyring_threads()
    store = AutoAuthStore(home, keyring_timeout=0.2, backend=gated_keyring)
    async with AuthManager(store) as manager:
        changes = [await manager.reload() for _ in range(30)]
        auth = manager.auth_cached()
    assert changes == [True] + [False] * 29  # each reload fell back to auth.json, in time
    assert auth is not None
    assert auth.data == data
    # Saves fall back to the file at once too, without a call (or a thread) more.
    for n in range(5):
        await store.save(AuthDotJson.for_api_key(f"sk-{n}"))
    assert await FileAuthStore(home).load() == AuthDotJson.for_api_key("sk-4")
    assert gated_keyring.calls == 1
    assert len(_keyring_threads() - before) == 1


async def test_a_hung_call_whose_caller_was_cancelled_is_still_the_only_one(
    home: Path, gated_keyring: GatedKeyring
) -> None:
    store = KeyringAuthStore(home, timeout=0.3, backend=gated_keyring)
    cancelled = asyncio.create_task(store.load())
    assert await asyncio.to_thread(gated_keyring.entered.wait, 30)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # The next caller waits for the running call, up to its time limit, then gives up on it ...
    with pytest.raises(StorageError, match=r"did not answer within 0\.3 s"):
        await store.load()
    # ... and from then on callers fail at once.
    with pytest.raises(StorageError, match=r"has not answered a call made \d+ s ago"):
        await store.load()
    assert gated_keyring.calls == 1


async def test_concurrent_keyring_calls_of_one_store_take_turns(
    home: Path, gated_keyring: GatedKeyring
) -> None:
    store = KeyringAuthStore(home, timeout=30, backend=gated_keyring)
    first = asyncio.create_task(store.load())
    assert await asyncio.to_thread(gated_keyring.entered.wait, 30)
    second = asyncio.create_task(store.load())
    for _ in range(5):  # let the second caller reach its wait; it must not start a call
        await asyncio.sleep(0)
    assert gated_keyring.calls == 1
    gated_keyring.release.set()
    assert list(await asyncio.gather(first, second)) == [None, None]
    assert (gated_keyring.calls, gated_keyring.most_inside) == (2, 1)


_WEDGED_BACKEND = """
import os
import keyring.backend

class Keyring(keyring.backend.KeyringBackend):
    priority = 1

    def __init__(self):
        super().__init__()
        # Discovery waits as it does on a wedged D-Bus session bus: here until the test's
        # pipe closes.
        os.read(int(os.environ["WEDGE_FD"]), 1)

    def get_password(self, service, username):
        return None

    set_password = delete_password = get_password
"""

_FIRST_USE = """
import asyncio, json, sys, time
from aioscopedauth import KeyringAuthStore, StorageError

async def main():
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    imported = "keyring" in sys.modules
    try:
        await KeyringAuthStore(sys.argv[1], timeout=0.5).load()
        outcome = "loaded"
    except StorageError as exc:
        outcome = str(exc)
    ticker.cancel()
    print(json.dumps({"imported_before": imported, "outcome": outcome, "ticks": ticks}))

asyncio.run(main())
"""


def test_the_first_keyring_use_discovers_the_backend_off_the_loop_within_the_timeout(
    home: Path, tmp_path: Path
) -> None:
    (tmp_path / "wedged_keyring.py").write_text(textwrap.dedent(_WEDGED_BACKEND))
    read_end, write_end = os.pipe()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "PYTHON_KEYRING_BACKEND": "wedged_keyring.Keyring",
        "WEDGE_FD": str(read_end),
    }
    try:
        with subprocess.Popen(
            [sys.executable, "-c", _FIRST_USE, str(home)],
            stdout=subprocess.PIPE, env=env, pass_fds=[read_end], text=True,
        ) as proc:  # fmt: skip
            try:
                out, _ = proc.communicate(timeout=30)
            finally:
                proc.kill()
    finally:
        os.close(read_end)
        os.close(write_end)
    result = json.loads(out)
    assert result["imported_before"] is False
    assert result["outcome"] == (
        "failed to load CLI auth from keyring: the keyring did not answer within 0.5 s. "
        "Unlock it and retry."
    )
    assert result["ticks"] >= 5  # the loop kept turning while the backend was discovered


# -- item 2: a keyring that refuses writes never brings back an older login ------------------


class ReadOnlyKeyring(MemoryKeyring):
    """A real backend that reads but refuses every write, as a size-limited or locked one."""

    def set_password(self, service: str, username: str, password: str) -> None:
        self.calls.append("set")
        raise keyring.errors.PasswordSetError("the collection is read-only")

    def delete_password(self, service: str, username: str) -> None:
        self.calls.append("delete")
        raise keyring.errors.PasswordDeleteError("the collection is read-only")


class NoWritesKeyring(MemoryKeyring):
    """A real backend that refuses new entries (too large) but can delete its old one."""

    def set_password(self, service: str, username: str, password: str) -> None:
        self.calls.append("set")
        raise keyring.errors.PasswordSetError("the entry is too large for this keyring")


def _entry(home: Path) -> tuple[str, str]:
    return ("Codex Auth", store_key(home))


async def test_a_refresh_the_keyring_refused_is_what_the_next_process_spends(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    backend = ReadOnlyKeyring()
    backend.entries[_entry(home)] = server.login().to_json(compact=True)
    async with AuthManager(AutoAuthStore(home, backend=backend), oauth) as first:
        assert await first.refresh_token() is True  # the keyring refuses it: auth.json has it
    assert (home / "auth.json").exists()
    # Load, re-read under the refresh lock, commit (read, refused write), then the older entry
    # could not be removed either: get, delete, get.
    assert backend.calls == ["get", "get", "get", "set", "get", "delete", "get"]
    async with AuthManager(AutoAuthStore(home, backend=backend), oauth) as second:
        assert await second.refresh_token() is True  # spends the newest refresh token
    assert (server.refreshes, server.reuse_answers) == (2, 0)


async def test_a_save_the_keyring_refuses_removes_its_older_entry(home: Path) -> None:
    backend = NoWritesKeyring()
    backend.entries[_entry(home)] = chatgpt_auth(refresh_token="old").to_json(compact=True)
    new = chatgpt_auth(refresh_token="new")
    await AutoAuthStore(home, backend=backend).save(new)
    assert backend.entries == {}
    assert await FileAuthStore(home).load() == new
    assert await AutoAuthStore(home, backend=backend).load() == new


@pytest.mark.parametrize(
    ("keyring_refreshed", "file_refreshed", "winner"),
    [
        (None, None, "file"),
        (timedelta(0), timedelta(0), "file"),
        (timedelta(0), timedelta(minutes=1), "file"),
        (None, timedelta(minutes=1), "file"),
        (timedelta(minutes=1), None, "file"),
        # The keyring saved later but could not remove the older file.
        (timedelta(minutes=1), timedelta(0), "keyring"),
    ],
)
async def test_a_login_in_both_places_loads_the_newer(
    home: Path,
    keyring_refreshed: timedelta | None,
    file_refreshed: timedelta | None,
    winner: str,
) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    backend = ReadOnlyKeyring()
    in_keyring = chatgpt_auth(refresh_token="in-keyring")
    in_keyring = attrs.evolve(
        in_keyring, last_refresh=None if keyring_refreshed is None else start + keyring_refreshed
    )
    in_file = chatgpt_auth(refresh_token="in-file")
    in_file = attrs.evolve(
        in_file, last_refresh=None if file_refreshed is None else start + file_refreshed
    )
    backend.entries[_entry(home)] = in_keyring.to_json(compact=True)
    write_auth_json(home, in_file)
    loaded = await AutoAuthStore(home, backend=backend).load()
    assert loaded == (in_file if winner == "file" else in_keyring)


async def test_logout_that_cannot_clear_the_keyring_raises(home: Path, oauth: OAuthConfig) -> None:
    backend = ReadOnlyKeyring()
    backend.entries[_entry(home)] = chatgpt_auth().to_json(compact=True)
    write_auth_json(home, chatgpt_auth(refresh_token="in-file"))
    async with AuthManager(AutoAuthStore(home, backend=backend), oauth) as manager:
        with pytest.raises(StorageError) as raised:
            await manager.logout()
    assert str(raised.value) == (
        "failed to delete auth from keyring: the collection is read-only. The login may still "
        "be in the keyring (auth.json was removed); unlock the keyring and log out again."
    )
    assert not (home / "auth.json").exists()
    # The keyring-only store says so too, instead of answering False.
    with pytest.raises(StorageError, match=r"^failed to delete auth from keyring: the collection"):
        await KeyringAuthStore(home, backend=backend).delete()
    assert _entry(home) in backend.entries


async def test_logout_on_a_machine_without_a_keyring_removes_the_file(home: Path) -> None:
    write_auth_json(home, chatgpt_auth())
    no_backend = keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]  # untyped
    store = AutoAuthStore(home, backend=no_backend)
    assert await store.delete() is True
    assert not (home / "auth.json").exists()
    assert await store.delete() is False
