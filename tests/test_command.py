from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import (
    AuthManager,
    AuthMode,
    CommandBearerRefresher,
    CommandError,
    ConfigError,
    MemoryAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
    RefreshContext,
    parse_command_output,
)
from aioscopedauth.testing import TokenScript, write_token_script

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _config(script: TokenScript, **kw: object) -> ProviderAuthCommand:
    options: dict[str, object] = {
        "command": "./print-token.sh",
        "timeout": 5.0,
        "refresh_interval": 60.0,
        "cwd": script.folder,
    }
    options.update(kw)
    return ProviderAuthCommand(**options)  # type: ignore[arg-type]


def _bearer_manager(config: ProviderAuthCommand) -> AuthManager:
    base = AuthManager(MemoryAuthStore(), OAuthConfig("http://127.0.0.1:9/unused", "c"))
    return base.with_external_bearer_refresher(CommandBearerRefresher(config))


async def test_external_bearer_only_auth_manager_uses_cached_provider_token(
    tmp_path: Path,
) -> None:
    # Reference checklist 10.
    script = write_token_script(tmp_path, "provider-token", "next-token")
    manager = _bearer_manager(_config(script))
    first = await manager.auth()
    second = await manager.auth()
    assert first is not None
    assert second is not None
    assert (first.token, second.token) == ("provider-token", "provider-token")
    assert first.mode is AuthMode.BEARER
    assert manager.mode is AuthMode.BEARER
    assert first.headers() == {"Authorization": "Bearer provider-token"}
    assert script.runs == 1


async def test_external_bearer_only_auth_manager_returns_none_when_command_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Reference checklist 11.
    script = write_token_script(tmp_path, "FAIL")
    manager = _bearer_manager(_config(script))
    assert await manager.auth() is None
    assert "Failed to resolve external bearer auth: provider auth command" in caplog.text


async def test_unauthorized_recovery_uses_external_refresh_for_bearer_manager(
    tmp_path: Path,
) -> None:
    # Reference checklist 12.
    script = write_token_script(tmp_path, "provider-token", "refreshed-provider-token")
    manager = _bearer_manager(_config(script))
    first = await manager.auth()
    assert first is not None
    assert first.token == "provider-token"
    recovery = manager.unauthorized_recovery(first)
    assert recovery.has_next()
    assert (recovery.mode_name, recovery.step_name) == ("external", "external_refresh")
    step = await recovery.next()
    assert step.auth_state_changed is True
    assert not recovery.has_next()
    assert recovery.step_name == "done"
    after = await manager.auth()
    assert after is not None
    assert after.token == "refreshed-provider-token"


@pytest.mark.parametrize("interval", [0.0, 60.0])
async def test_external_bearer_only_auth_manager_disables_auto_refresh_when_interval_is_zero(
    tmp_path: Path, interval: float
) -> None:
    # Reference checklist 24 (and the zero-interval variant of 12).
    script = write_token_script(tmp_path, "provider-token", "refreshed-provider-token")
    manager = _bearer_manager(_config(script, refresh_interval=interval))
    tokens = [await manager.auth() for _ in range(5)]
    assert {t.token for t in tokens if t is not None} == {"provider-token"}
    assert script.runs == 1
    step = await manager.unauthorized_recovery(tokens[0]).next()
    assert step.auth_state_changed is True
    after = await manager.auth()
    assert after is not None
    assert after.token == "refreshed-provider-token"
    assert script.runs == 2


async def test_tiny_interval_reruns(tmp_path: Path) -> None:
    script = write_token_script(tmp_path, "one", "two")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=1e-9))
    first = await refresher.resolve()
    second = await refresher.resolve()
    assert first is not None
    assert second is not None
    assert (first.access_token, second.access_token) == ("one", "two")
    assert refresher.runs == 2


async def test_500_concurrent_resolves_run_once(tmp_path: Path) -> None:
    script = write_token_script(tmp_path, "only-once", "second")
    refresher = CommandBearerRefresher(_config(script))
    results = await asyncio.gather(*(refresher.resolve() for _ in range(500)))
    assert {r.access_token for r in results if r is not None} == {"only-once"}
    assert script.runs == 1


async def test_500_concurrent_refreshes_for_one_rejected_token_run_once(tmp_path: Path) -> None:
    script = write_token_script(tmp_path, "rejected", "replacement", "third")
    refresher = CommandBearerRefresher(_config(script))
    rejected = await refresher.resolve()
    assert rejected is not None
    context = RefreshContext(rejected_token=rejected.access_token)
    results = await asyncio.gather(*(refresher.refresh(context) for _ in range(500)))
    assert {r.access_token for r in results} == {"replacement"}
    assert script.runs == 2


async def test_a_stale_replacement_is_not_handed_out_after_a_401(tmp_path: Path) -> None:
    # Issue 23: a caller rejected with an older token used to get the cached one however old;
    # on a busy loop it had expired by the time the retry arrived. A stale one runs again.
    stale = json.dumps({"token": "stale", "expires_in": 0})
    script = write_token_script(tmp_path, "older", f"JSON:{stale}", "new", "unused")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=3600))
    older = await refresher.resolve()
    assert older is not None
    got = await refresher.refresh(RefreshContext(rejected_token=older.access_token))
    assert got.access_token == "stale"  # the run this 401 caused: returned however short-lived
    again = await refresher.refresh(RefreshContext(rejected_token=older.access_token))
    assert again.access_token == "new"  # a later 401 to "older": "stale" is no replacement
    results = await asyncio.gather(
        *(refresher.refresh(RefreshContext(rejected_token="stale")) for _ in range(100))
    )
    assert {r.access_token for r in results} == {"new"}  # fresh: adopted, no run
    assert script.runs == 3


async def test_resolve_keeps_a_valid_token_while_a_run_is_under_way(tmp_path: Path) -> None:
    # Like a managed login in its refresh window: a caller that finds the command running
    # keeps the cached token while it has not expired, instead of queueing on the lock.
    valid = json.dumps({"token": "first", "expires_in": 3600})
    script = write_token_script(tmp_path, f"JSON:{valid}", "second")
    # Due for a re-run as soon as it is fetched (a nanosecond interval), valid for an hour.
    refresher = CommandBearerRefresher(_config(script, refresh_interval=1e-9))
    assert (await refresher.resolve()).access_token == "first"  # type: ignore[union-attr]
    running = asyncio.create_task(refresher.refresh(RefreshContext()))  # runs the command
    meanwhile = asyncio.create_task(refresher.resolve())  # its first turn comes after that
    assert (await meanwhile).access_token == "first"  # type: ignore[union-attr]
    assert not running.done()
    assert (await running).access_token == "second"
    assert script.runs == 2


async def test_refresh_without_rejected_token_always_runs(tmp_path: Path) -> None:
    script = write_token_script(tmp_path, "a", "b", "c")
    refresher = CommandBearerRefresher(_config(script))
    await refresher.resolve()
    await refresher.refresh(RefreshContext())
    token = await refresher.refresh(RefreshContext())
    assert token.access_token == "c"
    assert script.runs == 3


@pytest.mark.parametrize(
    ("output", "token", "expires_at"),
    [
        ("plain-token", "plain-token", None),
        ("  padded-token \n\n", "padded-token", None),
        ('{"access_token": "at", "expires_in": 60}', "at", NOW + timedelta(seconds=60)),
        ('{"token": "tk", "expires_at": "2026-06-01T01:00:00Z"}', "tk", NOW + timedelta(hours=1)),
        (
            '{"token": "tk", "expires_at": 1780275600}',
            "tk",
            datetime.fromtimestamp(1780275600, UTC),
        ),
        ('{"access_token": "at"}', "at", None),
        (
            json.dumps(
                {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "kind": "ExecCredential",
                    "status": {"token": "k8s", "expirationTimestamp": "2026-06-01T00:30:00Z"},
                }
            ),
            "k8s",
            NOW + timedelta(minutes=30),
        ),
    ],
)
def test_output_formats(output: str, token: str, expires_at: datetime | None) -> None:
    parsed = parse_command_output(output, "cmd", NOW)
    assert parsed.access_token == token
    assert parsed.expires_at == expires_at


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "provider auth command `cmd` produced an empty token"),
        ("  \n ", "provider auth command `cmd` produced an empty token"),
        ('{"access_token": ""}', "provider auth command `cmd` produced an empty token"),
        ("{not json", "provider auth command `cmd` printed invalid JSON"),
        ('{"expires_in": 5}', "printed JSON without a string access_token, token or status.token"),
        ('{"token": "t", "expires_at": "soon"}', "printed an invalid expires_at expiry"),
        ('{"token": "t", "expires_in": "soon"}', "printed an invalid expires_in"),
        ('{"kind": "ExecCredential", "status": {}}', "without a string access_token"),
        ("line-one\nline-two", "printed more than one line; it must print only the token"),
    ],
)
def test_bad_outputs(output: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command_output(output, "cmd", NOW)
    assert message in str(info.value)
    for secret in ("line-one", "line-two", "not json"):
        assert secret not in str(info.value)


async def test_expiry_in_the_past_reruns_despite_long_interval(tmp_path: Path) -> None:
    expired = json.dumps({"token": "old", "expires_in": 0})
    script = write_token_script(tmp_path, f"JSON:{expired}", "new")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=3600))
    assert (await refresher.resolve()).access_token == "old"  # type: ignore[union-attr]
    assert (await refresher.resolve()).access_token == "new"  # type: ignore[union-attr]
    assert script.runs == 2


async def test_long_expiry_keeps_the_token(tmp_path: Path) -> None:
    good = json.dumps({"token": "long", "expires_in": 3600})
    script = write_token_script(tmp_path, f"JSON:{good}", "other")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=3600))
    for _ in range(3):
        assert (await refresher.resolve()).access_token == "long"  # type: ignore[union-attr]
    assert script.runs == 1


async def test_unexpired_token_is_served_when_a_rerun_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = json.dumps({"token": "still-valid", "expires_in": 3600})
    script = write_token_script(tmp_path, f"JSON:{good}", "FAIL")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=1e-9))
    assert (await refresher.resolve()).access_token == "still-valid"  # type: ignore[union-attr]
    assert (await refresher.resolve()).access_token == "still-valid"  # type: ignore[union-attr]
    assert script.runs == 2
    assert "using the cached token until it expires" in caplog.text
    assert "still-valid" not in caplog.text


async def test_token_without_expiry_is_not_served_after_a_failed_rerun(tmp_path: Path) -> None:
    script = write_token_script(tmp_path, "no-expiry", "FAIL")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=1e-9))
    await refresher.resolve()
    with pytest.raises(CommandError, match="exited with exit status: 1"):
        await refresher.resolve()


async def test_exit_status_message_has_trimmed_stderr(tmp_path: Path) -> None:
    script = write_token_script(tmp_path, "FAIL")
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(_config(script)).resolve()
    assert str(info.value) == (
        "provider auth command `./print-token.sh` exited with exit status: 1: "
        "token service unavailable"
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


async def test_exit_without_stderr_has_no_suffix(tmp_path: Path) -> None:
    _write(tmp_path / "quiet.sh", "#!/bin/sh\nexit 3\n")
    config = ProviderAuthCommand("./quiet.sh", cwd=tmp_path)
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(config).resolve()
    assert str(info.value) == "provider auth command `./quiet.sh` exited with exit status: 3"


async def test_long_stderr_is_truncated(tmp_path: Path) -> None:
    _write(tmp_path / "loud.sh", "#!/bin/sh\nprintf '%0600d' 0 >&2\nexit 1\n")
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(ProviderAuthCommand("./loud.sh", cwd=tmp_path)).resolve()
    assert str(info.value).endswith("0" * 500 + "…")


async def test_killed_by_signal(tmp_path: Path) -> None:
    _write(tmp_path / "die.sh", "#!/bin/sh\nkill -9 $$\n")
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(ProviderAuthCommand("./die.sh", cwd=tmp_path)).resolve()
    assert str(info.value) == "provider auth command `./die.sh` exited with signal: 9 (SIGKILL)"


async def test_non_utf8_stdout(tmp_path: Path) -> None:
    _write(tmp_path / "bin.sh", "#!/bin/sh\nprintf '\\377\\376tok'\n")
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(ProviderAuthCommand("./bin.sh", cwd=tmp_path)).resolve()
    assert str(info.value) == "provider auth command `./bin.sh` wrote non-UTF-8 data to stdout"


async def test_huge_stdout_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "big.sh", "#!/bin/sh\nhead -c 3000000 /dev/zero | tr '\\0' a\n")
    with pytest.raises(CommandError, match="wrote more than 1024 KiB to stdout"):
        await CommandBearerRefresher(ProviderAuthCommand("./big.sh", cwd=tmp_path)).resolve()


async def test_stderr_flood_does_not_deadlock(tmp_path: Path) -> None:
    # 4 MiB on stderr before the token: reading stdout first would block forever.
    _write(
        tmp_path / "flood.sh",
        "#!/bin/sh\nhead -c 4000000 /dev/zero >&2\necho flood-token\n",
    )
    token = await CommandBearerRefresher(ProviderAuthCommand("./flood.sh", cwd=tmp_path)).resolve()
    assert token is not None
    assert token.access_token == "flood-token"


async def test_failed_to_start(tmp_path: Path) -> None:
    config = ProviderAuthCommand("./missing.sh", cwd=tmp_path)
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(config).resolve()
    assert str(info.value) == (
        "provider auth command `./missing.sh` failed to start: "
        "No such file or directory (os error 2)"
    )


async def test_timed_out(tmp_path: Path) -> None:
    script = write_token_script(tmp_path, "HANG")
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(_config(script, timeout=0.3)).resolve()
    assert str(info.value) == "provider auth command `./print-token.sh` timed out after 300 ms"


async def test_stdin_is_dev_null(tmp_path: Path) -> None:
    # A command that prompts gets EOF at once instead of hanging.
    _write(tmp_path / "ask.sh", "#!/bin/sh\nread answer || echo no-tty-token\n")
    token = await CommandBearerRefresher(ProviderAuthCommand("./ask.sh", cwd=tmp_path)).resolve()
    assert token is not None
    assert token.access_token == "no-tty-token"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # A zombie waiting for its (new) parent to reap it is dead for our purposes.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _wait_dead(pids: list[int]) -> list[bool]:
    """Wait (bounded) until each process has exited, via a pidfd: an event, not a poll.

    A SIGKILLed grandchild is not ours to reap, and the signal takes effect when the kernel next
    schedules it: right after the call returns it may still be running for a moment.
    """
    loop = asyncio.get_running_loop()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            exited = asyncio.Event()
            loop.add_reader(fd, exited.set)
            try:
                async with asyncio.timeout(10):
                    await exited.wait()
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)
    return [_alive(pid) for pid in pids]


def _grandchild_script(folder: Path) -> Path:
    return _write(
        folder / "spawn.sh",
        '#!/bin/sh\nsleep 60 &\necho "$$ $!" > pids.tmp\nmv pids.tmp pids\nsleep 60\n',
    )


async def _pids(folder: Path) -> list[int]:
    path = folder / "pids"
    async with asyncio.timeout(10):
        # The script can only signal through the file system; bounded by the timeout above.
        while not path.exists():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return [int(p) for p in path.read_text().split()]


async def test_timeout_kills_child_and_grandchild(tmp_path: Path) -> None:
    _grandchild_script(tmp_path)
    config = ProviderAuthCommand("./spawn.sh", cwd=tmp_path, timeout=1.0)
    with pytest.raises(CommandError, match="timed out after 1000 ms"):
        await CommandBearerRefresher(config).resolve()
    pids = await _pids(tmp_path)
    assert len(pids) == 2
    assert await _wait_dead(pids) == [False, False]


async def test_cancellation_kills_child_and_grandchild(tmp_path: Path) -> None:
    _grandchild_script(tmp_path)
    config = ProviderAuthCommand("./spawn.sh", cwd=tmp_path, timeout=60.0)
    refresher = CommandBearerRefresher(config)
    task = asyncio.create_task(refresher.resolve())
    pids = await _pids(tmp_path)
    assert all(_alive(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_dead(pids) == [False, False]
    # The refresher's lock is free again.
    (tmp_path / "spawn.sh").write_text("#!/bin/sh\necho after-cancel\n")
    token = await refresher.resolve()
    assert token is not None
    assert token.access_token == "after-cancel"


async def test_relative_command_with_separator_resolves_against_cwd(tmp_path: Path) -> None:
    write_token_script(tmp_path / "bin", "nested-token")
    config = ProviderAuthCommand("bin/print-token.sh", cwd=tmp_path)
    assert config.program() == str(tmp_path / "bin" / "print-token.sh")
    token = await CommandBearerRefresher(config).resolve()
    assert token is not None
    assert token.access_token == "nested-token"


async def test_bare_name_uses_path_from_env(tmp_path: Path) -> None:
    write_token_script(tmp_path / "tools", "path-token", name="my-token-tool")
    config = ProviderAuthCommand(
        "my-token-tool",
        cwd=tmp_path,
        env={"PATH": f"{tmp_path / 'tools'}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert config.program() == "my-token-tool"
    token = await CommandBearerRefresher(config).resolve()
    assert token is not None
    assert token.access_token == "path-token"


async def test_env_is_added_to_the_inherited_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INHERITED_VAR", "inherited")
    _write(tmp_path / "env.sh", '#!/bin/sh\necho "$INHERITED_VAR-$EXTRA_VAR"\n')
    config = ProviderAuthCommand("./env.sh", cwd=tmp_path, env={"EXTRA_VAR": "extra"})
    token = await CommandBearerRefresher(config).resolve()
    assert token is not None
    assert token.access_token == "inherited-extra"


async def test_args_are_passed_verbatim(tmp_path: Path) -> None:
    config = ProviderAuthCommand(sys.executable, args=("-c", "print('$HOME *')"), cwd=tmp_path)
    token = await CommandBearerRefresher(config).resolve()
    assert token is not None
    assert token.access_token == "$HOME *"


def test_tilde_in_cwd_and_command_is_expanded() -> None:
    config = ProviderAuthCommand("~/bin/tok", cwd="~")
    assert config.cwd == Path.home()
    assert config.program() == str(Path.home() / "bin" / "tok")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"command": "  "}, "provider auth.command must not be empty"),
        ({"command": "x", "timeout": 0}, "timeout must be greater than zero"),
        ({"command": "x", "timeout": -1}, "timeout must be greater than zero"),
        ({"command": "x", "refresh_interval": -1}, "refresh_interval must not be negative"),
    ],
)
def test_invalid_command_config(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProviderAuthCommand(**kwargs)  # type: ignore[arg-type]


def test_repr_names_the_command_not_the_token(tmp_path: Path) -> None:
    refresher = CommandBearerRefresher(ProviderAuthCommand("./x.sh", cwd=tmp_path))
    assert repr(refresher) == "<CommandBearerRefresher command='./x.sh' runs=0>"


async def test_a_background_child_holding_stdout_does_not_hold_the_call(tmp_path: Path) -> None:
    # The command prints its token and exits 0, but leaves a child that keeps stdout open: the
    # call used to wait for the full timeout and then fail with "timed out".
    _write(tmp_path / "bg.sh", '#!/bin/sh\nsleep 60 &\necho "$!" > pid\necho bg-token\n')
    config = ProviderAuthCommand("./bg.sh", cwd=tmp_path, timeout=30.0)
    tokens = await CommandBearerRefresher(config).resolve()
    assert tokens is not None
    assert tokens.access_token == "bg-token"
    pid = int((tmp_path / "pid").read_text())
    assert await _wait_dead([pid]) == [False]


async def test_a_child_that_detached_with_setsid_but_kept_stdout_is_killed(tmp_path: Path) -> None:
    # setsid takes the child out of the command's process group, out of killpg's reach; it is
    # found by the pipe it still holds.
    _write(tmp_path / "detach.sh", '#!/bin/sh\nsetsid sleep 60 &\necho "$!" > pid\necho tok\n')
    config = ProviderAuthCommand("./detach.sh", cwd=tmp_path, timeout=30.0)
    tokens = await CommandBearerRefresher(config).resolve()
    assert tokens is not None
    assert tokens.access_token == "tok"
    pid = int((tmp_path / "pid").read_text())
    assert await _wait_dead([pid]) == [False]


async def test_a_daemon_that_closed_its_output_is_the_documented_limit(tmp_path: Path) -> None:
    # A child that detaches *and* closes the pipes cannot be found without cgroups: it is not
    # killed (documented), and it does not hold the call either.
    _write(
        tmp_path / "daemon.sh",
        # The script exits only once the daemon runs, with its output already closed (a
        # daemon still detaching while the command exits may be killed, which is fine too).
        "#!/bin/sh\n"
        "setsid sh -c 'echo $$ > pid.tmp && mv pid.tmp pid && exec sleep 60' "
        "</dev/null >/dev/null 2>&1 &\n"
        "while [ ! -s pid ]; do sleep 0.01; done\n"
        "echo tok\n",
    )
    config = ProviderAuthCommand("./daemon.sh", cwd=tmp_path, timeout=30.0)
    tokens = await CommandBearerRefresher(config).resolve()
    assert tokens is not None
    pid = int((tmp_path / "pid").read_text())
    try:
        assert _alive(pid)
    finally:
        os.kill(pid, 9)
    assert await _wait_dead([pid]) == [False]


@pytest.mark.parametrize("output", ["tok\x01en", "tok\x7f", "tok\x1ben", "tok\udcff"])
def test_a_token_with_a_control_character_is_refused(output: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command_output(output, "./print-token.sh", datetime.now(UTC))
    assert str(info.value) == (
        "provider auth command `./print-token.sh` printed a token that contains a line break, "
        "a control character or invalid Unicode"
    )


ARG_CANARY = "client-secret-CANARY-4e1f"


def test_repr_shows_the_program_and_the_argument_count_never_an_argument(tmp_path: Path) -> None:
    # Issue 20 item 12: arguments often carry secrets (the CLI hides them for that reason).
    config = ProviderAuthCommand(
        "./mint.sh", args=("--client-secret", ARG_CANARY, "--verbose"), cwd=tmp_path
    )
    for text in (repr(config), str(config), repr(CommandBearerRefresher(config))):
        assert ARG_CANARY not in text
        assert "--client-secret" not in text
    assert repr(config) == (
        f"ProviderAuthCommand(command='./mint.sh', args=<3 arguments>, timeout=5.0, "
        f"refresh_interval=300.0, cwd={tmp_path!r}, exec_api_version=None, "
        "interactive_mode=None)"
    )
    assert "args=<1 argument>" in repr(ProviderAuthCommand("x", args=("a",)))
    assert "args=<0 arguments>" in repr(ProviderAuthCommand("x"))


FAR_FUTURE = datetime.max.replace(tzinfo=UTC)
FAR_PAST = datetime.min.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("output", "expires_at"),
    [
        ('{"token": "t", "expires_in": 1e20}', FAR_FUTURE),
        ('{"token": "t", "expires_in": 1e308}', FAR_FUTURE),
        ('{"token": "t", "expires_in": Infinity}', FAR_FUTURE),
        ('{"token": "t", "expires_in": 300000000000}', FAR_FUTURE),  # past 9999-12-31
        ('{"token": "t", "expires_in": -1e20}', FAR_PAST),
        ('{"token": "t", "expires_in": -Infinity}', FAR_PAST),
        ('{"token": "t", "expires_at": 1e20}', FAR_FUTURE),
        ('{"token": "t", "expires_at": Infinity}', FAR_FUTURE),
        ('{"token": "t", "expires_at": -1e20}', FAR_PAST),
        ('{"token": "t", "expires_at": -Infinity}', FAR_PAST),
    ],
)
def test_an_expiry_beyond_the_calendar_saturates(output: str, expires_at: datetime) -> None:
    # Issue 20 item 15: these raised a bare OverflowError. Like the dates of a login, an expiry
    # past either end of the calendar saturates: valid for ever, or expired already.
    parsed = parse_command_output(output, "cmd", NOW)
    assert parsed.access_token == "t"
    assert parsed.expires_at == expires_at


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ('{"token": "t", "expires_in": NaN}', "printed an invalid expires_in"),
        ('{"token": "t", "expires_at": NaN}', "printed an invalid expires_at expiry"),
    ],
)
def test_a_nan_expiry_is_refused(output: str, message: str) -> None:
    # Issue 20 item 15: NaN raised a bare ValueError; it says nothing about when, so it is
    # refused like any other invalid expiry.
    with pytest.raises(CommandError) as info:
        parse_command_output(output, "cmd", NOW)
    assert str(info.value) == f"provider auth command `cmd` {message}"


async def test_a_token_valid_for_ever_is_served_after_a_failed_rerun(tmp_path: Path) -> None:
    forever = '{"token": "forever", "expires_in": 1e20}'
    script = write_token_script(tmp_path, f"JSON:{forever}", "FAIL")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=1e-9))
    assert (await refresher.resolve()).access_token == "forever"  # type: ignore[union-attr]
    assert (await refresher.resolve()).access_token == "forever"  # type: ignore[union-attr]
    assert script.runs == 2


async def test_a_token_expired_since_the_start_of_time_is_rerun(tmp_path: Path) -> None:
    ancient = '{"token": "ancient", "expires_in": -Infinity}'
    script = write_token_script(tmp_path, f"JSON:{ancient}", "new")
    refresher = CommandBearerRefresher(_config(script, refresh_interval=3600))
    assert (await refresher.resolve()).access_token == "ancient"  # type: ignore[union-attr]
    assert (await refresher.resolve()).access_token == "new"  # type: ignore[union-attr]
    assert script.runs == 2


def _pipe_of(pid: int, fd: int) -> str:
    return str(Path(f"/proc/{pid}/fd/{fd}").readlink())


def _holds(pid: int, link: str) -> bool:
    return any(str(fd.readlink()) == link for fd in Path(f"/proc/{pid}/fd").iterdir())


@contextlib.contextmanager
def _forked_bystander() -> Iterator[tuple[int, Callable[[], int]]]:
    """Fork this process, as a ProcessPoolExecutor would: the child holds every fd we hold.

    The child blocks until released, then exits 0; it also exits (EOF on its gate) if this
    process dies. Yields its pid and ``release()``, which returns its wait status. Killed and
    reaped on any failure.
    """
    gate_r, gate_w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the child; this one
        # only reads a pipe and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(gate_w)
            os.read(gate_r, 1)
        finally:
            os._exit(0)
    os.close(gate_r)
    status: list[int] = []

    def release() -> int:
        os.close(gate_w)
        status.append(os.waitpid(pid, 0)[1])
        return status[0]

    try:
        yield pid, release
    finally:
        if not status:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.close(gate_w)
            os.waitpid(pid, 0)


def _watching(pid: int) -> bool:
    for fd in Path("/proc/self/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            if f"Pid:\t{pid}\n" in fd.read_text():
                return True
    return False


async def _watched(pid: int) -> None:
    """Wait until the library watches ``pid`` through a pidfd: its spawn has fully returned.

    Before that, the worker thread's Popen may still hold the write end of its exec-status
    pipe; a process forked then would keep that end open, and Popen would wait for it (a
    hazard of any fork beside a thread that spawns, not of the sweep under test).
    """
    async with asyncio.timeout(10):
        # The library's pidfd is the only sign; bounded by the timeout above.
        while not _watching(pid):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _detached_script(folder: Path) -> None:
    # The command starts a grandchild that leaves its process group (setsid) but keeps the
    # pipes' write ends: only the pipe sweep can find it.
    _write(
        folder / "detached.sh",
        '#!/bin/sh\nsetsid sleep 60 &\necho "$$ $!" > pids.tmp\nmv pids.tmp pids\nsleep 60\n',
    )


@pytest.mark.parametrize("end", ["timeout", "cancellation"])
async def test_the_pipe_sweep_spares_a_process_the_application_forked_meanwhile(
    tmp_path: Path, end: str
) -> None:
    # Issue 20 item 6: a worker the application forks while the command runs inherits our read
    # ends of the command's pipes; the sweep killed it with the command's own processes.
    _detached_script(tmp_path)
    config = ProviderAuthCommand("./detached.sh", cwd=tmp_path, timeout=3.0)
    task = asyncio.create_task(CommandBearerRefresher(config).resolve())
    try:
        command_pid, detached_pid = await _pids(tmp_path)
        await _watched(command_pid)
        stdout = _pipe_of(command_pid, 1)
        with _forked_bystander() as (bystander, release):
            # Precondition: the bystander holds the pipe (the read end) and the command is
            # still running (the fork came before the timeout).
            assert _holds(bystander, stdout)
            assert _holds(detached_pid, stdout)
            assert _alive(command_pid)
            if end == "cancellation":
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with pytest.raises(CommandError, match="timed out after 3000 ms"):
                    await task
            # The command's own processes are gone, the detached grandchild too.
            assert await _wait_dead([command_pid, detached_pid]) == [False, False]
            # The bystander was never signalled: released, it exits 0 by itself.
            assert release() == 0
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
