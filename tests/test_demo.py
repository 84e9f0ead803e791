"""The demo as a user sees it: on an 80-column terminal, in a pipe, interrupted, too short."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import shutil
import signal
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from processes import spawned

SCRIPT = shutil.which("aioscopedauth", path=str(Path(sys.executable).parent)) or "aioscopedauth"
_ENV = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}


async def _demo(*args: str, columns: int = 80) -> tuple[int, str, str]:
    async with spawned(
        SCRIPT,
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**_ENV, "COLUMNS": str(columns)},
    ) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_piped_output_fits_80_columns_and_says_everything_once() -> None:
    code, out, err = await _demo("--agents", "8", "--seconds", "2.5")
    assert code == 0, out + err
    assert err == ""
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    progress = [line for line in lines if re.match(r"^ *\d+\.\ds  requests", line)]
    assert progress, out
    # One line a second, and not the last one again after the run.
    assert len(progress) == len({line.split("s", 1)[0] for line in progress}) <= 3
    prose = " ".join(out.split())
    assert "expected (computed, not measured" in prose
    assert "About one refresh per expiry or revocation is right" in prose


@pytest.mark.slow
async def test_a_run_too_short_to_prove_anything_says_so() -> None:
    code, out, _ = await _demo("--agents", "3", "--seconds", "0.3")
    assert code == 0
    verdict = " ".join(out.split("\n\n")[-1].split())
    assert verdict == (
        "PASS, partly: every request succeeded and no refresh token was reused, but this run "
        "was too short to show a managed revocation, a provider revocation, a token refresh, "
        "a recovered 401 (a revocation comes about every 1.5 s; run it longer, e.g. "
        "--seconds 10)."
    )


def _read_until(fd: int, wanted: bytes, so_far: bytearray) -> None:
    while wanted not in so_far:
        chunk = os.read(fd, 4096)
        if not chunk:
            msg = f"{wanted!r} never came: {bytes(so_far)!r}"
            raise AssertionError(msg)
        so_far += chunk


def _read_all(fd: int, so_far: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        so_far += chunk


@pytest.mark.slow
async def test_on_an_80_column_terminal_ctrl_c_prints_an_interrupted_summary() -> None:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        SCRIPT,
        "demo",
        "--agents",
        "8",
        "--seconds",
        "60",
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=_ENV,
        start_new_session=True,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        # The first redraw of the live line: the run is under way.
        await asyncio.to_thread(_read_until, controller, b"\r\x1b[2K", seen)
        await asyncio.to_thread(_read_until, controller, b"requests", seen)
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(_read_all, controller, seen)
        code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        os.close(controller)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = seen.decode()
    assert code == 130, text
    assert "Traceback" not in text
    # Every redraw fits in 79 columns, so it never wraps; every other line in 80.
    for segment in re.split(r"\r\n|\r|\n", text.replace("\x1b[2K", "")):
        assert len(segment) <= 80, segment
    for redraw in text.split("\r\x1b[2K")[1:]:
        assert len(redraw.split("\r")[0]) <= 79, redraw
    assert re.search(r"\r\n\r\nInterrupted after \d+\.\d s of 60 s with 8 agents", text), text
    assert "INTERRUPTED: no request failed and no refresh token was reused so far" in text
    assert "PASS" not in text


async def test_an_early_ctrl_c_prints_no_traceback() -> None:
    async with spawned(
        SCRIPT,
        "demo",
        "--seconds",
        "60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_ENV,
    ) as proc:
        # As soon as the process exists: during interpreter start-up or the imports.
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert "Traceback" not in err.decode(), err.decode()
    assert proc.returncode in {130, -signal.SIGINT}, (out + err).decode()


async def test_record_keeps_the_traces_of_failed_recoveries_only(tmp_path: Path) -> None:
    # The recorder follows each recovery by its request number and keeps only those that end
    # in a failure, with what happened around them; nothing is written until the run ends.
    import json  # noqa: PLC0415 -- only this test reads JSON

    from aioscopedauth._demo import DemoResult, _describe, _Recorder  # noqa: PLC0415
    from aioscopedauth._middleware import RecoveryEvent  # noqa: PLC0415

    result = DemoResult()
    seen: list[RecoveryEvent] = []
    recorder = _Recorder(0.0, result, seen.append)
    recorder.observe_answer({"access_token": "fresh-token"})
    recorder.revocation("managed")
    managed = recorder.listener("managed")

    def event(request: int, step: str, outcome: Any, **more: Any) -> RecoveryEvent:
        return RecoveryEvent(
            "managed", step, outcome, None, "GET", "http://h/api", request=request, **more
        )

    managed(event(1, "reload", "unchanged", send=1, rejected="aaaaaaaa", next_step="refresh_token"))
    managed(event(2, "reload", "unchanged", send=1, rejected="aaaaaaaa", next_step="refresh_token"))
    managed(
        event(
            1,
            "refresh_token",
            "changed",
            send=1,
            rejected="aaaaaaaa",
            retry_with="bbbbbbbb",
            next_step="done",
            fresh=True,
        )
    )
    managed(
        event(
            2,
            "refresh_token",
            "changed",
            send=1,
            rejected="aaaaaaaa",
            retry_with="bbbbbbbb",
            next_step="done",
            fresh=True,
        )
    )
    managed(event(1, "done", "recovered", send=2, rejected="bbbbbbbb", next_step="done"))
    managed(
        event(
            2,
            "done",
            "gave_up",
            send=2,
            rejected="bbbbbbbb",
            next_step="done",
            reason="recovery_exhausted",
        )
    )
    assert len(seen) == 6  # the caller's on_event still sees everything
    assert result.recovered_401s == 1  # requests whose retry worked
    assert result.traced_failures == 1
    path = tmp_path / "traces.jsonl"
    await recorder.write(path)
    (line,) = path.read_text().splitlines()
    trace = json.loads(line)
    assert (trace["api"], trace["reason"], trace["revocations"]) == (
        "managed",
        "recovery_exhausted",
        [trace["revocations"][0]],
    )
    assert [(s["step"], s["outcome"], s["send"]) for s in trace["steps"]] == [
        ("reload", "unchanged", 1),
        ("refresh_token", "changed", 1),
        ("done", "gave_up", 2),
    ]
    assert trace["steps"][1]["fresh"] is True
    assert result.traces == [trace]
    described = _describe(trace)
    assert "refresh_token changed" in described
    assert "gave_up (recovery_exhausted) after send 2" in described
