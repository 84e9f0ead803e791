"""The test harness itself: a failing test's processes die, and a hang ends within its limit."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from processes import ended, popen, read_tagged, spawned

TESTS = Path(__file__).parent

# Starts a grandchild in its own group, says both pids, then never ends by itself.
STUCK = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen(["sleep", "600"])
    print(os.getpid(), child.pid, flush=True)
    time.sleep(600)
    """
)


def _fail_inside_popen(pids: list[int]) -> subprocess.Popen[str]:
    with popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        pids.extend(int(pid) for pid in proc.stdout.readline().split())
        msg = "a deliberate failure"
        raise AssertionError(msg)


def test_a_failure_inside_popen_kills_the_process_and_what_it_started() -> None:
    pids: list[int] = []
    started = time.monotonic()
    with pytest.raises(AssertionError, match="a deliberate failure"):
        _fail_inside_popen(pids)
    assert len(pids) == 2
    assert ended(pids[0])
    assert ended(pids[1])
    # Popen.__exit__ would have waited the full 600 s for the stuck process.
    assert time.monotonic() - started < 60


async def _time_out_inside_spawned(pids: list[int]) -> None:
    async with spawned(sys.executable, "-c", STUCK, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        pids.extend(int(pid) for pid in (await proc.stdout.readline()).split())
        await asyncio.wait_for(proc.wait(), 0.2)  # it never ends by itself


async def test_a_timeout_inside_spawned_kills_the_process_and_what_it_started() -> None:
    pids: list[int] = []
    with pytest.raises(TimeoutError):
        await _time_out_inside_spawned(pids)
    assert len(pids) == 2
    assert await asyncio.to_thread(ended, pids[0])
    assert await asyncio.to_thread(ended, pids[1])


async def test_a_cancelled_test_still_kills_and_reaps_its_process() -> None:
    told = asyncio.Event()
    pids: list[int] = []

    async def body() -> None:
        async with spawned(sys.executable, "-c", STUCK, stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            pids.extend(int(pid) for pid in (await proc.stdout.readline()).split())
            told.set()
            await proc.wait()

    task = asyncio.create_task(body())
    await told.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pids) == 2
    assert await asyncio.to_thread(ended, pids[0])
    assert await asyncio.to_thread(ended, pids[1])


def test_the_crash_safety_protocol_reads_the_two_writers_in_either_order() -> None:
    # Issue 20 item 10: the zygote's and its child's lines share one pipe; under load the child
    # printed first and int("saving") raised. Tagged lines are read in whatever order they come.
    for text in ("forked 41\nsaving 41\n", "saving 41\nforked 41\n"):
        assert read_tagged(io.StringIO(text), {"forked", "saving"}) == {
            "forked": 41,
            "saving": 41,
        }
    with pytest.raises(AssertionError, match="the writer ended early"):
        read_tagged(io.StringIO("forked 41\n"), {"forked", "saving"})


INNER = textwrap.dedent(
    """
    import subprocess, sys
    import pytest
    from processes import popen, spawned

    STUCK = {stuck!r}

    @pytest.mark.timeout(2)
    def test_sync_hang(tmp_path):
        with popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE, text=True) as proc:
            pids = proc.stdout.readline()
            open({sync_pids!r}, "w").write(pids)
            proc.wait()  # never ends: the time limit ends the test

    @pytest.mark.timeout(2)
    async def test_async_hang():
        async with spawned(sys.executable, "-c", STUCK, stdout=subprocess.PIPE) as proc:
            pids = await proc.stdout.readline()
            open({async_pids!r}, "wb").write(pids)
            await proc.wait()  # never ends: the time limit ends the test
    """
)


@pytest.mark.timeout(180)  # two interpreters and a pytest run inside this one
def test_a_hanging_process_test_fails_within_its_time_limit_and_leaves_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_pids, async_pids = pytester.path / "sync.pids", pytester.path / "async.pids"
    pytester.makepyfile(
        test_hang=INNER.format(stuck=STUCK, sync_pids=str(sync_pids), async_pids=str(async_pids))
    )
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "timeout_method = signal\n"
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    took = time.monotonic() - started
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*Failed: Timeout (>2.0s) from pytest-timeout.*"] * 2)
    # Two 2 s limits and an interpreter start: far from the 600 s the processes would take.
    assert took < 60, took
    for path in (sync_pids, async_pids):
        pids = [int(pid) for pid in path.read_text().split()]
        assert len(pids) == 2
        assert all(ended(pid) for pid in pids), path.name
