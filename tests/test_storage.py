from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthStore,
    AutoAuthStore,
    FileAuthStore,
    KeyringAuthStore,
    MemoryAuthStore,
    StorageError,
    load_auth_data,
    store_key,
)
from aioscopedauth.testing import chatgpt_auth, write_auth_json

from processes import popen
from support import CANARIES, CANARY_API_KEY, BrokenKeyring, HangingKeyring, MemoryKeyring

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioscopedauth.redis import RedisAuthStore

GOLDEN = Path(__file__).parent / "golden"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


async def test_file_store_creates_private_folder_and_file(home: Path) -> None:
    store = FileAuthStore(home)
    data = chatgpt_auth()
    await store.save(data)
    assert _mode(home) == 0o700
    assert _mode(home / "auth.json") == 0o600
    assert (home / "auth.json").read_text() == data.to_json()
    assert await store.load() == data
    assert _no_temp_files(home)


async def test_file_store_writes_golden_bytes(home: Path) -> None:
    text = (GOLDEN / "chatgpt.auth.json").read_text()
    store = FileAuthStore(home)
    await store.save(AuthDotJson.from_json(text))
    assert (home / "auth.json").read_text() == text


async def test_save_tightens_an_existing_loose_file(home: Path) -> None:
    path = write_auth_json(home, chatgpt_auth())
    path.chmod(0o644)
    await FileAuthStore(home).save(chatgpt_auth())
    assert _mode(path) == 0o600


async def test_missing_auth_json_returns_none(home: Path) -> None:
    # Reference checklist 3.
    assert await FileAuthStore(home).load() is None


async def test_logout_removes_auth_file(home: Path) -> None:
    # Reference checklist 6.
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-test"))
    assert await store.delete() is True
    assert not (home / "auth.json").exists()
    assert await store.delete() is False


async def test_login_with_api_key_overwrites_existing_auth_json(home: Path) -> None:
    # Reference checklist 2.
    write_auth_json(home, chatgpt_auth())
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-new"))
    loaded = await store.load()
    assert loaded is not None
    assert loaded.openai_api_key == "sk-new"
    assert loaded.tokens is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"auth_mode": "apikey"}', "API key auth is missing a key."),
        (b'{"tokens": {"id_token": "bad"}}', "tokens.access_token is missing"),
        (b"\x00\x01binary", "not valid JSON"),
    ],
)
async def test_corrupt_file_is_reported_and_left_untouched(
    home: Path, content: bytes, problem: str
) -> None:
    home.mkdir()
    path = home / "auth.json"
    path.write_bytes(content)
    before = path.stat()
    store = FileAuthStore(home)
    with pytest.raises(StorageError) as info:
        await store.load()
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "left untouched" in message
    assert info.value.path == path
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == before.st_mtime_ns


async def test_huge_file_is_refused_without_reading_it_all(home: Path) -> None:
    home.mkdir()
    path = home / "auth.json"
    path.write_bytes(b" " * (2 * 1024 * 1024))
    with pytest.raises(StorageError, match="larger than 1024 KiB"):
        await FileAuthStore(home).load()
    assert path.stat().st_size == 2 * 1024 * 1024


async def test_folder_in_place_of_file_is_a_clear_error(home: Path) -> None:
    (home / "auth.json").mkdir(parents=True)
    with pytest.raises(StorageError, match="is a folder, not a file"):
        await FileAuthStore(home).load()


async def test_group_readable_file_is_reported_once(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_auth_json(home, chatgpt_auth())
    path.chmod(0o640)
    store = FileAuthStore(home)
    with caplog.at_level(logging.WARNING, logger="aioscopedauth"):
        await store.load()
        await store.load()
    warnings = [r for r in caplog.records if "can be read by other users" in r.getMessage()]
    assert len(warnings) == 1
    assert "0640" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


async def test_private_file_logs_no_warning(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_auth_json(home, chatgpt_auth())
    with caplog.at_level(logging.DEBUG, logger="aioscopedauth"):
        await FileAuthStore(home).load()
    assert caplog.records == []


async def test_symlinked_auth_json_is_updated_where_it_points(tmp_path: Path) -> None:
    real_dir = tmp_path / "dotfiles"
    real = write_auth_json(real_dir, AuthDotJson.for_api_key("sk-old"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "auth.json").symlink_to(real)
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-new"))
    assert (home / "auth.json").is_symlink()
    assert json.loads(real.read_text())["OPENAI_API_KEY"] == "sk-new"
    assert _no_temp_files(real_dir)


_FAILING_SAVE = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from aioscopedauth import AuthDotJson, FileAuthStore, StorageError

    # Make the kernel refuse writes past 512 bytes: a real failure in the middle of the write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))
    big = AuthDotJson.for_api_key("sk-" + "x" * 4096)
    try:
        asyncio.run(FileAuthStore(sys.argv[1]).save(big))
    except StorageError as exc:
        print("StorageError:", exc)
        sys.exit(3)
    sys.exit(0)
    """
)


def test_save_that_fails_midway_leaves_old_file_and_no_temp(home: Path) -> None:
    original = AuthDotJson.for_api_key("sk-old")
    path = write_auth_json(home, original)
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", _FAILING_SAVE, str(home)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Could not write" in proc.stdout
    assert "The previous file is intact" in proc.stdout
    assert "x" * 100 not in proc.stdout
    assert path.read_bytes() == before
    assert _no_temp_files(home)


_SAVER = textwrap.dedent(
    """
    import asyncio, sys
    from aioscopedauth import AuthDotJson, FileAuthStore

    async def main(home, tag, count):
        store = FileAuthStore(home)
        for i in range(count):
            await store.save(AuthDotJson.for_api_key(f"sk-{tag}-{i:04d}" + "y" * 2000))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.slow
def test_two_processes_saving_at_once_never_tear_the_file(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-start"))
    path = home / "auth.json"
    reads = 0
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(popen([sys.executable, "-c", _SAVER, str(home), tag, "150"]))
            for tag in ("a", "b")
        ]
        while any(p.poll() is None for p in procs):
            data = AuthDotJson.from_json(path.read_bytes())
            assert data.openai_api_key is not None
            assert data.openai_api_key.startswith(("sk-start", "sk-a-", "sk-b-"))
            reads += 1
        assert [p.wait() for p in procs] == [0, 0]
    final = AuthDotJson.from_json(path.read_bytes()).openai_api_key
    assert final is not None
    assert final.startswith(("sk-a-0149", "sk-b-0149"))
    assert reads > 0
    assert _no_temp_files(home)


_LOCK_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from aioscopedauth import FileAuthStore

    async def main():
        async with FileAuthStore(sys.argv[1]).lock():
            print("locked", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print("released", flush=True)

    asyncio.run(main())
    """
)


async def test_lock_excludes_another_process(home: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOCK_HOLDER,
        str(home),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert await proc.stdout.readline() == b"locked\n"
        store = FileAuthStore(home, lock_timeout=0.2)
        with pytest.raises(StorageError, match="another process is refreshing"):
            async with store.lock():
                pytest.fail("acquired a lock another process holds")
        # A waiter queued while the other process holds the lock gets it once released.
        waiter = asyncio.create_task(_hold(FileAuthStore(home, lock_timeout=60)))
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        assert await proc.stdout.readline() == b"released\n"
        assert await waiter == "held"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert _mode(home / "aioscopedauth-refresh.lock") == 0o600


async def _hold(store: FileAuthStore) -> str:
    async with store.lock():
        return "held"


async def test_lock_excludes_a_second_store_in_the_same_process(home: Path) -> None:
    first, second = FileAuthStore(home), FileAuthStore(home)
    order: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with first.lock():
            order.append("first-in")
            entered.set()
            await release.wait()
            order.append("first-out")

    async def contender() -> None:
        await entered.wait()
        async with second.lock():
            order.append("second-in")

    tasks = [asyncio.create_task(holder()), asyncio.create_task(contender())]
    await entered.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == ["first-in"]
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first-in", "first-out", "second-in"]


async def test_cancelled_lock_waiter_leaves_the_lock_free(home: Path) -> None:
    store = FileAuthStore(home)
    release = asyncio.Event()
    held = asyncio.Event()

    async def holder() -> None:
        async with store.lock():
            held.set()
            await release.wait()

    hold_task = asyncio.create_task(holder())
    await held.wait()
    waiter = asyncio.create_task(_hold(FileAuthStore(home)))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await hold_task
    assert await _hold(FileAuthStore(home, lock_timeout=1)) == "held"
    assert _open_fds_to(home / "aioscopedauth-refresh.lock") == []


def _open_fds_to(target: Path) -> list[Path]:
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if fd.readlink() == target:
                found.append(fd)
        except OSError:
            continue
    return found


async def test_memory_store() -> None:
    store = MemoryAuthStore()
    assert await store.load() is None
    assert await store.delete() is False
    data = chatgpt_auth()
    await store.save(data)
    assert await store.load() is data
    async with store.lock():
        pass
    assert await store.delete() is True
    assert await store.load() is None
    assert store.kind == "memory"


def test_store_key_matches_codex(tmp_path: Path) -> None:
    canonical = str(tmp_path.resolve())
    expected = "cli|" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert store_key(tmp_path) == expected
    missing = tmp_path / "missing"
    assert store_key(missing) == "cli|" + hashlib.sha256(str(missing).encode()).hexdigest()[:16]


def test_every_store_satisfies_the_protocol(home: Path) -> None:
    for store in (
        FileAuthStore(home),
        MemoryAuthStore(),
        KeyringAuthStore(home, backend=MemoryKeyring()),
        AutoAuthStore(home, backend=MemoryKeyring()),
    ):
        assert isinstance(store, AuthStore)


async def test_keyring_store_uses_codex_entry(home: Path, memory_keyring: MemoryKeyring) -> None:
    store = KeyringAuthStore(home)
    data = chatgpt_auth()
    await store.save(data)
    key = ("Codex Auth", store_key(home))
    assert memory_keyring.entries[key] == data.to_json(compact=True)
    assert "\n" not in memory_keyring.entries[key]
    assert await store.load() == data
    assert not (home / "auth.json").exists()
    assert await store.delete() is True
    assert key not in memory_keyring.entries
    assert await store.delete() is False
    assert await store.load() is None


async def test_keyring_save_removes_a_leftover_file(
    home: Path, memory_keyring: MemoryKeyring
) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-file"))
    await KeyringAuthStore(home).save(AuthDotJson.for_api_key("sk-ring"))
    assert not (home / "auth.json").exists()
    assert memory_keyring.entries


async def test_keyring_delete_removes_the_file_too(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-file"))
    assert await KeyringAuthStore(home, backend=MemoryKeyring()).delete() is True
    assert not (home / "auth.json").exists()


async def test_keyring_corrupt_entry_is_a_clear_error(
    home: Path, memory_keyring: MemoryKeyring
) -> None:
    memory_keyring.entries[("Codex Auth", store_key(home))] = "{broken " + CANARY_API_KEY
    with pytest.raises(
        StorageError, match=r"^failed to deserialize CLI auth from keyring: "
    ) as info:
        await KeyringAuthStore(home).load()
    assert CANARY_API_KEY not in str(info.value)


async def test_keyring_failures_are_storage_errors(home: Path) -> None:
    store = KeyringAuthStore(home, backend=BrokenKeyring())
    with pytest.raises(StorageError, match=r"^failed to load CLI auth from keyring: the keyring"):
        await store.load()
    with pytest.raises(StorageError, match=r"^failed to save the login to the keyring: "):
        await store.save(AuthDotJson.for_api_key(CANARY_API_KEY))
    with pytest.raises(StorageError, match=r"^failed to delete auth from keyring: "):
        await store.delete()


async def test_hanging_keyring_times_out(home: Path, hanging_keyring: HangingKeyring) -> None:
    store = KeyringAuthStore(home, timeout=0.1, backend=hanging_keyring)
    with pytest.raises(StorageError, match=r"did not answer within 0\.1 s"):
        await store.load()


async def test_auto_store_prefers_the_keyring(home: Path, memory_keyring: MemoryKeyring) -> None:
    store = AutoAuthStore(home)
    data = AuthDotJson.for_api_key("sk-ring")
    await store.save(data)
    assert not (home / "auth.json").exists()
    assert len(memory_keyring.entries) == 1
    assert await store.load() == data
    assert await store.delete() is True
    assert memory_keyring.entries == {}


async def test_auto_store_reads_the_file_when_keyring_is_empty(
    home: Path, memory_keyring: MemoryKeyring
) -> None:
    data = AuthDotJson.for_api_key("sk-file")
    write_auth_json(home, data)
    assert await AutoAuthStore(home).load() == data
    assert memory_keyring.calls == ["get"]


async def test_auto_store_falls_back_to_the_file_with_one_warning(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = AutoAuthStore(home, backend=BrokenKeyring())
    data = AuthDotJson.for_api_key(CANARY_API_KEY)
    with caplog.at_level(logging.DEBUG, logger="aioscopedauth"):
        await store.save(data)
        assert await store.load() == data
        assert await store.load() == data
        # A keyring that is there but failing may still hold a login: the delete says so.
        with pytest.raises(StorageError, match=r"may still be in the keyring \(auth\.json was "):
            await store.delete()
    assert _mode(home) == 0o700
    assert not (home / "auth.json").exists()
    assert [(r.levelno, r.getMessage().split(",")[0]) for r in caplog.records] == [
        (logging.WARNING, "Keyring save failed"),
        (
            logging.DEBUG,
            (
                "The keyring may still hold an older login: failed to remove the older login from "
                "the keyring: the keyring daemon is not running"
            ),
        ),
        (logging.DEBUG, "Keyring unavailable"),
        (logging.DEBUG, "Keyring unavailable"),
    ]
    for record in caplog.records:
        for canary in CANARIES:
            assert canary not in record.getMessage()


async def test_load_precedence_env_then_memory_then_store(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileAuthStore(home)
    memory = MemoryAuthStore()
    assert await load_auth_data(store, memory, api_key_env="TEST_KEY_ENV") is None

    write_auth_json(home, AuthDotJson.for_api_key("sk-file"))
    loaded = await load_auth_data(store, memory, api_key_env="TEST_KEY_ENV")
    assert loaded is not None
    assert (loaded.origin, loaded.data.openai_api_key) == ("store", "sk-file")

    await memory.save(chatgpt_auth())
    loaded = await load_auth_data(store, memory, api_key_env="TEST_KEY_ENV")
    assert loaded is not None
    assert loaded.origin == "memory"

    monkeypatch.setenv("TEST_KEY_ENV", "  sk-env  ")
    loaded = await load_auth_data(store, memory, api_key_env="TEST_KEY_ENV")
    assert loaded is not None
    assert (loaded.origin, loaded.data.openai_api_key) == ("env", "sk-env")

    # Without api_key_env the variable is never consulted.
    loaded = await load_auth_data(store, memory)
    assert loaded is not None
    assert loaded.origin == "memory"

    monkeypatch.setenv("TEST_KEY_ENV", "   ")
    loaded = await load_auth_data(store, memory, api_key_env="TEST_KEY_ENV")
    assert loaded is not None
    assert loaded.origin == "memory"


async def test_store_reprs_hold_no_secret(home: Path) -> None:
    memory = MemoryAuthStore()
    await memory.save(AuthDotJson.for_api_key(CANARY_API_KEY))
    for store in (memory, FileAuthStore(home), KeyringAuthStore(home, backend=MemoryKeyring())):
        assert CANARY_API_KEY not in repr(store)


async def test_save_sweeps_temp_files_left_by_a_crashed_save(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-old"))
    old_leftover = home / ".auth.json.aioscopedauth-abc123.tmp"
    young_leftover = home / ".auth.json.aioscopedauth-def456.tmp"  # may be a save in flight
    users_file = home / ".auth.json.backup.tmp"  # not ours: no marker, never swept
    for leftover in (old_leftover, young_leftover, users_file):
        leftover.write_text("partial")
    stale = time.time() - 3600
    os.utime(old_leftover, (stale, stale))
    os.utime(users_file, (stale, stale))
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-new"))
    assert not old_leftover.exists()
    assert young_leftover.exists()
    assert users_file.read_text() == "partial"


async def test_only_a_store_that_can_watch_is_a_watchable_store(
    home: Path, redis_stores: Callable[..., RedisAuthStore]
) -> None:
    from aioscopedauth._storage import WatchableStore  # noqa: PLC0415 -- not a public name

    assert isinstance(redis_stores(), WatchableStore)
    for store in (
        FileAuthStore(home),
        MemoryAuthStore(),
        KeyringAuthStore(home, backend=MemoryKeyring()),
        AutoAuthStore(home, backend=MemoryKeyring()),
    ):
        assert isinstance(store, AuthStore)
        assert not isinstance(store, WatchableStore)
