"""Ctrl-C at random moments of both demos: a summary, exit 130, no traceback (issue 21 item 4).

Each demo runs as the real console script in a process group of its own, as a terminal's
foreground job does, and gets SIGINT on that whole group, as a terminal's Ctrl-C does. The
moments are seeded offsets after the demo's header (the demo has started), up to its end.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import re
import signal
import sys
from typing import TYPE_CHECKING

import pytest

from aioscopedauth._demo import DemoConfig, run_demo

if TYPE_CHECKING:
    from aioscopedauth.testing import RedisServer

pytestmark = pytest.mark.slow

SECONDS = 30.0
"""Longer than any moment below by far: on a loaded machine the interrupt still lands while the
demo runs (each test ends at its interrupt, so the length costs nothing)."""
LATEST = 3.5
"""The latest moment, in seconds after the demo's ready line, a test interrupts it."""
_SINGLE = random.Random(2104)
_FLEET = random.Random(2105)
SINGLE_MOMENTS = [0.0, *(round(_SINGLE.uniform(0.1, LATEST), 2) for _ in range(3))]
FLEET_MOMENTS = [0.0, *(round(_FLEET.uniform(0.1, LATEST), 2) for _ in range(2))]


async def _interrupt(
    *args: str, after: float, ready: re.Pattern[bytes] = re.compile(rb"demo:")
) -> tuple[int, str, str]:
    """Run ``aioscopedauth demo ARGS``; SIGINT its process group ``after`` s after it prints a
    line that matches ``ready`` (by default its header)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioscopedauth",
        "demo",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own group: the terminal's foreground job
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        header = line = b""
        while not ready.search(line):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, header
            header += line
        await asyncio.sleep(after)
        try:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        except ProcessLookupError:  # it ended before the interrupt: show what it said
            out, err = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
            pytest.fail(f"the demo ended before the interrupt:\n{(header + out + err).decode()}")
        out, err = await asyncio.wait_for(
            asyncio.gather(proc.stdout.read(), proc.stderr.read()), 60
        )
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, (header + out).decode(), err.decode()


def _assert_interrupted_cleanly(code: int, out: str, err: str) -> None:
    assert code == 130, out + err
    assert "Traceback" not in err, err
    assert "Exception ignored" not in err, err
    assert re.search(rf"^Interrupted after \d+\.\d s of {SECONDS:g} s", out, re.MULTILINE), out
    assert "INTERRUPTED: " in out, out


@pytest.mark.parametrize("after", SINGLE_MOMENTS)
async def test_ctrl_c_during_the_demo_prints_its_summary_and_exits_130(after: float) -> None:
    code, out, err = await _interrupt(
        "--agents", "10", "--seconds", f"{SECONDS:g}", "--seed", "7", after=after
    )
    _assert_interrupted_cleanly(code, out, err)
    assert "refresh tokens reused         0" in out
    assert err == ""


@pytest.mark.parametrize("after", FLEET_MOMENTS)
async def test_ctrl_c_during_the_fleet_demo_prints_its_summary_and_exits_130(after: float) -> None:
    code, out, err = await _interrupt(
        "--hosts", "2", "--agents", "2", "--seconds", f"{SECONDS:g}", "--seed", "7", after=after
    )
    _assert_interrupted_cleanly(code, out, err)
    assert re.search(r"^  total +\d+", out, re.MULTILINE), out
    assert re.search(r"refresh tokens reused +0$", out, re.MULTILINE), out
    assert err == ""


async def test_the_fleet_demo_shows_live_progress(redis_server: RedisServer) -> None:
    code, out, err = await _interrupt(
        "--hosts", "2", "--agents", "2", "--seconds", "60",
        "--redis-url", redis_server.url,
        after=0.0,
        ready=re.compile(rb"requests +[1-9]\d* +401s"),  # the hosts' requests are counted
    )  # fmt: skip
    assert code == 130, out + err
    # A plain line a second off a terminal, from the start of the run to the Ctrl-C.
    progress = re.findall(r"^ +\d+\.\ds +requests +(\d+) +401s +\d+", out, re.MULTILINE)
    assert progress, out
    assert int(progress[-1]) > 0, out
    assert re.search(r"^Interrupted after \d+\.\d s of 60 s", out, re.MULTILINE), out


@pytest.mark.parametrize("interrupt", [False, True], ids=["to-the-end", "interrupted"])
async def test_the_fleet_demo_leaves_nothing_in_a_redis_it_was_given(
    redis_server: RedisServer, interrupt: bool
) -> None:
    import redis.asyncio as aioredis  # noqa: PLC0415 -- the redis extra, only for this test

    args = ("--hosts", "2", "--agents", "2", "--seconds", "2", "--redis-url", redis_server.url)
    if interrupt:
        code, out, err = await _interrupt(*args, after=1.5)
        assert code == 130, out + err
    else:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aioscopedauth", "demo", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 90)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        out, err = raw_out.decode(), raw_err.decode()
        assert proc.returncode == 0, out + err
    assert re.search(r"^  Redis +redis://127\.0\.0\.1:\d+/0$", out, re.MULTILINE), out
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        left = [key async for key in client.scan_iter("aioscopedauth:{demo-*")]
    finally:
        await client.aclose()
    assert left == []


@pytest.mark.parametrize("turns", [1, 3, 10, 30, 100, 300])
async def test_a_cancel_while_the_demo_starts_still_prints_its_summary(turns: int) -> None:
    # In-process, to reach the start-up (servers, the login saved) at exact points: a Ctrl-C
    # in the first second of the demo cancels it there. (A task cancelled before its first
    # step never enters the demo: the command line then says "interrupted" itself.)
    out = io.StringIO()
    task = asyncio.create_task(run_demo(DemoConfig(agents=4, seconds=2.0, seed=1), out=out))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)
    assert re.search(
        r"^Interrupted after \d+\.\d s of 2 s with 4 agents", out.getvalue(), re.MULTILINE
    )
    assert "INTERRUPTED: " in out.getvalue()
