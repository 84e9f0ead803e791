"""Regressions from the outside review (issue 11): storms, dates, loops, keyrings, commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import signal
import sys
import textwrap
import threading
import time
import traceback
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AuthMode,
    ConfigError,
    ExternalAuthTokens,
    FileAuthStore,
    KeyringAuthStore,
    MemoryAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
    RefreshContext,
    TokenData,
    TransientRefreshError,
    load_providers,
    store_key,
)
from aioscopedauth import _file_store as storage_module
from aioscopedauth import _files as files_module
from aioscopedauth._paths import codex_home, user_path
from aioscopedauth.testing import FakeAuthServer, make_id_token, make_jwt, write_auth_json

from processes import spawned

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioscopedauth.testing.plugin import LeakGuard

_CLAIM = "https://api.openai.com/auth"


def _issue_tokens_dated(iat_offset: float, exp_offset: float) -> Callable[[dict[str, Any]], Any]:
    """Make the endpoint's access tokens carry ``iat``/``exp`` relative to now (a skewed clock)."""

    def mangle(answer: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        access = make_jwt({"iat": int(now + iat_offset), "exp": int(now + exp_offset), _CLAIM: {}})
        return {**answer, "access_token": access}

    return mangle


@pytest.mark.parametrize(
    ("iat_offset", "exp_offset"),
    [(-480, 120), (-7200, -3600)],
    ids=["our clock 8 minutes ahead of 10-minute tokens", "the endpoint issues expired tokens"],
)
async def test_tokens_due_right_after_a_refresh_do_not_refresh_on_every_call(
    home: Path,
    oauth: OAuthConfig,
    server: FakeAuthServer,
    caplog: pytest.LogCaptureFixture,
    iat_offset: float,
    exp_offset: float,
) -> None:
    # The review measured 113 refreshes per second with the clock 8 minutes fast, and 297 with
    # an endpoint that issues expired tokens.
    write_auth_json(home, server.login(expired=True))
    server.mangle_answer = _issue_tokens_dated(iat_offset, exp_offset)
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        first = await manager.auth()
        assert server.refreshes == 1
        for _ in range(200):
            assert await manager.auth() == first
        assert server.token_calls == 1
        # A 401 is the server's word, not our clock's: it still refreshes at once.
        assert await manager.refresh_rejected(first) is True
        assert server.token_calls == 2
    warnings = [r for r in caplog.records if "already due for a refresh" in r.getMessage()]
    assert len(warnings) == 1


def _with_access_token(login: AuthDotJson, access_token: str, **changes: Any) -> AuthDotJson:
    assert login.tokens is not None
    tokens = TokenData.from_dict({**login.tokens.to_dict(), "access_token": access_token})
    return AuthDotJson(**{"tokens": tokens, "last_refresh": login.last_refresh, **changes})


@pytest.mark.parametrize(
    ("access_token", "last_refresh", "refreshes"),
    [
        (make_jwt({"exp": -62135596800, _CLAIM: {}}), None, 1),
        ("opaque-not-a-jwt", datetime(9999, 12, 30, tzinfo=UTC), 0),
        (make_jwt({"exp": 253402300799, "iat": -62135596800}), None, 0),
    ],
    ids=["exp at year 1", "last_refresh 1 day before 9999-12-31", "iat at year 1, exp at 9999"],
)
async def test_dates_at_the_ends_of_the_calendar_never_raise(
    home: Path,
    oauth: OAuthConfig,
    server: FakeAuthServer,
    access_token: str,
    last_refresh: datetime | None,
    refreshes: int,
) -> None:
    login = server.login()
    changes = {} if last_refresh is None else {"last_refresh": last_refresh}
    write_auth_json(home, _with_access_token(login, access_token, **changes))
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        auth = await manager.auth()  # used to raise OverflowError
        assert auth is not None
    assert server.refreshes == refreshes


async def test_a_manager_used_from_a_second_event_loop_says_so(home: Path) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-1"))
    manager = AuthManager(FileAuthStore(home), OAuthConfig("http://127.0.0.1:9/t", "c"))
    assert await manager.auth() is not None

    def other_loop() -> None:
        asyncio.run(manager.auth())

    with pytest.raises(ConfigError) as info:
        await asyncio.to_thread(other_loop)
    assert str(info.value) == (
        "This AuthManager was first used on another event loop. A manager (and the managers "
        "derived from it) belongs to one event loop: make one manager per loop; they share the "
        "login through the store."
    )
    await manager.aclose()


async def test_refreshes_are_bounded_by_time_per_snapshot_not_by_luck(
    home: Path, server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Tokens that live one second are refreshed about once per lifetime, never more: the bound
    # (half a lifetime between proactive refreshes) never holds back an ordinary refresh.
    caplog.set_level(logging.WARNING, logger="aioscopedauth")
    server.access_ttl = timedelta(seconds=1)
    write_auth_json(home, server.login())
    oauth = OAuthConfig(server.token_url, server.client_id)
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            auth = await manager.auth()
            assert auth is not None
            await asyncio.sleep(0.01)
    assert server.refreshes >= 2
    assert not [r for r in caplog.records if "already due for a refresh" in r.getMessage()]


# -- bad paths and command settings (item 17) ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ProviderAuthCommand("tok\0en"), "provider auth.command must not contain a NUL"),
        (lambda: ProviderAuthCommand("t", args=("a\0",)), "provider auth.args must be strings"),
        (lambda: ProviderAuthCommand("t", env={"A=B": "1"}), "env names must be non-empty"),
        (lambda: ProviderAuthCommand("t", env={"": "1"}), "env names must be non-empty"),
        (
            lambda: ProviderAuthCommand("t", env={"A": 1}),  # type: ignore[dict-item]
            "env value of A must be a string",
        ),
        (lambda: ProviderAuthCommand("t", env={"A": "x\0"}), "env value of A must be a string"),
        (
            lambda: ProviderAuthCommand("t", cwd="~nosuchuser-aioscopedauth"),
            "provider auth.cwd starts with ~nosuchuser-aioscopedauth, but there is no user",
        ),
        (
            lambda: FileAuthStore("~nosuchuser-aioscopedauth/codex"),
            "the home folder starts with ~nosuchuser-aioscopedauth, but there is no user",
        ),
        (lambda: FileAuthStore("codex\0home"), "the home folder contains a NUL byte"),
        (
            # Issue 20 item 14: a bare RuntimeError from the first resolve() before.
            lambda: ProviderAuthCommand("~nosuchuser-aioscopedauth/bin/tok"),
            (
                "provider auth.command starts with ~nosuchuser-aioscopedauth, but there is no user "
                "'nosuchuser-aioscopedauth' to expand it for"
            ),
        ),
        (
            lambda: codex_home({"CODEX_HOME": "~nosuchuser-aioscopedauth/codex"}),
            "CODEX_HOME starts with ~nosuchuser-aioscopedauth, but there is no user",
        ),
        (lambda: codex_home({"CODEX_HOME": "co\0dex"}), "CODEX_HOME contains a NUL byte"),
    ],
    ids=[
        "NUL in command",
        "NUL in args",
        "= in env name",
        "empty env name",
        "env value not a string",
        "NUL in env value",
        "cwd of an unknown user",
        "home of an unknown user",
        "NUL in home",
        "command of an unknown user",
        "CODEX_HOME of an unknown user",
        "NUL in CODEX_HOME",
    ],
)
def test_bad_paths_and_command_settings_are_config_errors(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    ("cwd", "message"),
    [
        ("~nosuchuser-aioscopedauth", "auth.cwd starts with ~nosuchuser-aioscopedauth"),
        ("loop", "goes through a symbolic link loop"),
    ],
)
def test_bad_cwd_in_config_is_a_config_error(tmp_path: Path, cwd: str, message: str) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    config = tmp_path / "config.toml"
    config.write_text(f'[model_providers.corp.auth]\ncommand = "tok"\ncwd = "{cwd}"\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_providers(config)


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            'command = "~nosuchuser-aioscopedauth/tok"',
            "model_providers.corp: provider auth.command starts with ~nosuchuser-aioscopedauth",
        ),
        (
            'command = "tok"\nargs = ["a\\u0000b"]',
            "model_providers.corp: provider auth.args must be strings without NUL bytes",
        ),
        (
            'command = "t\\u0000ok"',
            "model_providers.corp: provider auth.command must not contain a NUL byte",
        ),
    ],
    ids=["command of an unknown user", "NUL in an argument", "NUL in the command"],
)
def test_a_bad_command_in_config_names_its_provider(
    tmp_path: Path, auth: str, message: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[model_providers.corp.auth]\n{auth}\n")
    with pytest.raises(ConfigError) as info:
        load_providers(config)
    assert str(info.value).startswith(message)


def test_the_codex_home_is_codex_home_expanded_else_dot_codex_in_the_home_folder() -> None:
    assert codex_home({"CODEX_HOME": "~/elsewhere"}) == Path.home() / "elsewhere"
    assert codex_home({"CODEX_HOME": ""}) == Path.home() / ".codex"
    assert codex_home({}) == Path.home() / ".codex"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become a uid without a name")
def test_a_user_without_a_home_folder_gets_a_config_error() -> None:
    # Without HOME and without a passwd entry, Path.home() raises a bare RuntimeError. A forked
    # child that becomes a uid with no name is the honest way there (a fresh interpreter could
    # not run as that uid where the interpreter lives under a private home folder).
    import pwd  # noqa: PLC0415 -- imported before the fork, so the child never takes the import lock

    with pytest.raises(KeyError):
        pwd.getpwuid(UNNAMED_UID)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the child; this child
        # only computes two strings and writes them to a pipe.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setuid(UNNAMED_UID)
            os.environ.pop("HOME", None)
            lines = []
            calls: list[Callable[[], object]] = [
                lambda: codex_home({}),
                lambda: user_path("~/x", "--home"),
            ]
            for call in calls:
                try:
                    call()
                except ConfigError as exc:
                    lines.append(str(exc))
                except BaseException as exc:  # noqa: BLE001 -- reported to the parent
                    lines.append(f"{type(exc).__name__}: {exc}")
            os.write(write_end, "\n".join(lines).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            ready, _, _ = select.select([pipe], [], [], 30)
            assert ready, "the child did not answer within 30 s"
            out = pipe.read().decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a no-op once it has exited; a hang ends here
        os.waitpid(pid, 0)
    assert out.splitlines() == [
        "Could not find your home folder (for ~/.codex): set HOME, or CODEX_HOME",
        "--home starts with ~, but your home folder is unknown: set HOME",
    ]


UNNAMED_UID = 54_321


def test_a_keyring_store_of_a_home_that_is_a_symlink_loop_is_created(tmp_path: Path) -> None:
    # store_key canonicalises the home: a loop raised a bare RuntimeError (Python 3.11, 3.12)
    # from KeyringAuthStore(home); the loop is reported when the home is used instead.
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert store_key(loop) == store_key(str(loop))
    assert KeyringAuthStore(loop).account == store_key(loop)


def test_a_config_file_that_is_not_utf8_does_not_chain_its_bytes(
    tmp_path: Path, leak_guard: LeakGuard
) -> None:
    secret = "bearer-CANARY-in-config"
    leak_guard.plant(secret)
    config = tmp_path / "config.toml"
    config.write_bytes(f'experimental_bearer_token = "{secret}"\n\xff'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_providers(config)


# -- a keyring that never answers (item 9) ---------------------------------------------------

_HUNG_KEYRING = textwrap.dedent(
    """
    import asyncio, sys, threading
    import keyring.backend
    from aioscopedauth import KeyringAuthStore, StorageError

    class Hung(keyring.backend.KeyringBackend):
        priority = 1
        def get_password(self, service, username):
            threading.Event().wait()  # a keyring waiting for an unlock prompt, forever
        def set_password(self, service, username, password):
            threading.Event().wait()
        def delete_password(self, service, username):
            threading.Event().wait()

    async def main():
        try:
            await KeyringAuthStore(sys.argv[1], timeout=0.2, backend=Hung()).load()
        except StorageError as exc:
            print(exc, flush=True)

    asyncio.run(main())
    """
)


async def test_a_keyring_that_never_answers_does_not_keep_the_process_alive(
    tmp_path: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HUNG_KEYRING,
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # Bounded: the process used to print its message and then never exit.
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode() == (
        "failed to load CLI auth from keyring: the keyring did not answer within 0.2 s. "
        "Unlock it and retry.\n"
    )


# -- saves and locks under cancellation (items 3 and 20) -------------------------------------


def _open_count(target: Path) -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            count += fd.readlink() == target
    return count


async def test_a_cancelled_save_never_lands_after_a_newer_one(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk cannot be made in a test: the real write is held at its start by an event
    # (the only injected delay here), so the cancelled save is still writing when a newer
    # save begins. It used to land a second after the newer one.
    real_write = files_module._atomic_write
    writing, release = threading.Event(), threading.Event()

    def held_write(path: Path, payload: bytes) -> None:
        if b"sk-OLD" in payload:
            writing.set()
            release.wait(30)
        real_write(path, payload)

    monkeypatch.setattr(storage_module, "_atomic_write", held_write)
    old = asyncio.create_task(FileAuthStore(home).save(AuthDotJson.for_api_key("sk-OLD")))
    assert await asyncio.to_thread(writing.wait, 30)
    old.cancel()
    new = asyncio.create_task(FileAuthStore(home).save(AuthDotJson.for_api_key("sk-NEW")))
    deadline = time.monotonic() + 30
    while _open_count(home / "auth.lock") < 2:  # the newer save is waiting for the lock
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await old
    await new
    assert await FileAuthStore(home).load() == AuthDotJson.for_api_key("sk-NEW")


async def test_cancelling_tasks_entering_the_lock_never_leaks_a_descriptor(home: Path) -> None:
    store = FileAuthStore(home)

    async def enter() -> None:
        async with store.lock():
            await asyncio.sleep(0)

    for i in range(400):
        task = asyncio.create_task(enter())
        for _ in range(i % 5):  # cancel at each step of entering: opening, polling, holding
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Opens still running in their threads when their caller was cancelled close their
    # descriptor as soon as they finish.
    deadline = time.monotonic() + 30
    while _open_count(store.lock_path):
        assert time.monotonic() < deadline, "a lock-file descriptor was leaked"
        await asyncio.sleep(0.01)
    async with FileAuthStore(home, lock_timeout=1).lock():
        pass


async def test_a_home_where_the_refresh_lock_cannot_be_made_says_so_once(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    # As on a read-only home: the lock file cannot be created, so the login can never refresh.
    login = server.login(expired=True)
    write_auth_json(home, login)
    (home / "aioscopedauth-refresh.lock").mkdir()
    async with AuthManager(FileAuthStore(home), oauth) as manager:
        for _ in range(50):
            auth = await manager.auth()
            assert auth is not None
            assert auth.data == login
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"Failed to refresh token: Could not open the lock file {home}/aioscopedauth-refresh.lock"
    )
    assert server.token_calls == 0


async def test_cli_login_with_non_utf8_stdin_is_a_clear_error(home: Path) -> None:
    async with spawned(
        sys.executable,
        "-m",
        "aioscopedauth",
        "--home",
        str(home),
        "login",
        "--api-key",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    ) as proc:
        _, err = await asyncio.wait_for(proc.communicate(b"sk-\xff\xfe-not-utf8\n"), 120)
    assert proc.returncode == 1
    assert "Traceback" not in err.decode()
    assert "The API key read from stdin is not UTF-8 text; paste only the key." in err.decode()
    assert not (home / "auth.json").exists()


# -- exceptions of a host's or provider's source are never chained (item 5) ------------------


class _LeakySource:
    """A source whose exception quotes a token, as a careless host app's might."""

    def __init__(self, mode: AuthMode, secret: str) -> None:
        self._mode, self.secret = mode, secret

    @property
    def mode(self) -> AuthMode:
        return self._mode

    async def resolve(self) -> ExternalAuthTokens | None:
        return ExternalAuthTokens.access_token_only("tok-resolved")

    async def refresh(self, context: RefreshContext) -> ExternalAuthTokens:
        msg = f"upstream said no to {self.secret} ({context.rejected_token})"
        raise ValueError(msg)


@pytest.mark.parametrize("mode", [AuthMode.CHATGPT_AUTH_TOKENS, AuthMode.BEARER])
async def test_a_sources_exception_is_described_not_chained(
    mode: AuthMode, leak_guard: LeakGuard
) -> None:
    secret = "host-CANARY-4d1e"
    leak_guard.plant(secret)
    base = AuthManager(MemoryAuthStore(), OAuthConfig("http://127.0.0.1:9/unused", "c"))
    source = _LeakySource(mode, secret)
    if mode is AuthMode.BEARER:
        manager = base.with_external_bearer_refresher(source)
    else:
        manager = base
        await manager.login_with_tokens(make_id_token(account_id="org"), "org")
        manager.set_external_auth(source)
    with pytest.raises(TransientRefreshError) as info:
        await manager.refresh_external_auth(await manager.auth())
    error = info.value
    assert str(error).endswith("refresh failed: ValueError")
    # Neither chained nor even the suppressed context: a formatted traceback (an app's
    # logger.exception) or a debugger walking the chain must not find the token.
    assert error.__cause__ is None
    assert error.__context__ is None
    assert secret not in "".join(traceback.format_exception(error))
    await base.aclose()
