"""SIGKILL a process in the middle of saving auth.json, hundreds of times."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import AuthDotJson

from processes import popen, read_tagged

if TYPE_CHECKING:
    from pathlib import Path

KILLS = 200

# A zygote: imports the library once, then forks a fresh saver for each round, so 200 kills
# cost milliseconds each instead of an interpreter start. It starts no thread before forking.
ZYGOTE = textwrap.dedent(
    """
    import asyncio, os, sys
    from aioscopedauth import AuthDotJson, FileAuthStore

    home = sys.argv[1]
    payloads = [AuthDotJson.for_api_key(f"sk-{tag}-" + tag * 20000) for tag in "ab"]

    async def save_forever():
        store = FileAuthStore(home)
        i = 0
        while True:
            await store.save(payloads[i % 2])
            i += 1
            if i == 1:
                print("saving", os.getpid(), flush=True)  # from here on, mid-loop

    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            asyncio.run(save_forever())
            os._exit(0)
        print("forked", pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", pid, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(300)  # 200 forks and kills; seconds unloaded, minutes on a busy machine
def test_sigkill_mid_save_never_leaves_a_torn_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    initial = AuthDotJson.for_api_key("sk-initial")
    allowed = {
        initial.to_json(),
        *(AuthDotJson.for_api_key(f"sk-{tag}-" + tag * 20000).to_json() for tag in "ab"),
    }
    home.mkdir(mode=0o700)
    (home / "auth.json").write_text(initial.to_json())
    rng = random.Random(20261128)
    seen = set()
    # The zygote and every saver share one session: leaving the block kills them all, however
    # the test ends (a failed assert here used to wait for ever in Popen.__exit__).
    with popen(
        [sys.executable, "-c", ZYGOTE, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as zygote:
        assert zygote.stdin is not None
        assert zygote.stdout is not None
        for _ in range(KILLS):
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            lines = read_tagged(zygote.stdout, {"forked", "saving"})
            pid = lines["forked"]
            assert lines["saving"] == pid
            # Fault injection: kill at a random moment of the save loop. This is not a wait
            # for a race; any moment is a valid moment to die.
            time.sleep(rng.uniform(0.0, 0.01))
            os.kill(pid, signal.SIGKILL)
            assert read_tagged(zygote.stdout, {"reaped"}) == {"reaped": pid}
            text = (home / "auth.json").read_text()
            assert text in allowed, f"torn auth.json after a kill: {text[:80]!r}..."
            AuthDotJson.from_json(text)
            seen.add(text)
        zygote.stdin.close()
        assert zygote.wait(timeout=30) == 0
    # The kills landed at different points of the loop: both payloads were seen.
    assert len(seen - {initial.to_json()}) == 2
    # Every file the dead savers left is a temp file, never a second auth.json.
    names = {p.name for p in home.iterdir()}
    locks = {"auth.lock", "auth.json.lock"}  # Codex's commit locks, taken by every save
    assert {n for n in names if not n.endswith(".tmp")} <= {"auth.json", *locks}
