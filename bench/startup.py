"""Start-up costs (issue 13 item 4): imports, the CLI's --version and --help, the pytest plugin.

Runs every command in interleaved rounds (so a load change hits all of them alike) and prints
the median with min-max, and the ratios the issue states targets for, computed from medians:

* ``aioscopedauth --version`` and ``--help`` at most 1.5x ``python -c pass``;
* ``import aioscopedauth`` at most 1.05x ``import aiohttp``;
* the pytest plugin adds under 20 ms to a one-test session that uses none of its fixtures.

Usage: ``python bench/startup.py [--rounds N] [--baseline DIR]`` (in an environment where
aioscopedauth, pytest and pytest-asyncio are installed). ``--baseline DIR`` also measures the
package found in ``DIR`` (e.g. ``git archive OLD aioscopedauth | tar -x -C DIR``), put first
on ``PYTHONPATH``, in the same interleaved rounds. Byte code is written and used, as in an
installed wheel, even where ``PYTHONDONTWRITEBYTECODE`` is set. Nothing here is asserted:
tests check which modules are imported (``tests/test_startup.py``), never timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def _commands(project: Path, *, baseline: bool) -> dict[str, list[str]]:
    pytest_run = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)]
    # The console script pip installed, else `python -m`. A baseline runs `python -m` (the
    # console script names the installed version's entry point, which it may not have).
    installed = Path(PY).with_name("aioscopedauth")
    module = [PY, "-m", "aioscopedauth"]
    script = [str(installed)] if installed.exists() and not baseline else module
    return {
        "python -m aioscopedauth --version": [*module, "--version"],
        "python -c pass": [PY, "-c", "pass"],
        "import aiohttp": [PY, "-c", "import aiohttp"],
        "import aioscopedauth": [PY, "-c", "import aioscopedauth"],
        "common path": [
            PY,
            "-c",
            "from aioscopedauth import AuthManager, AuthMiddleware, FileAuthStore, OAuthConfig",
        ],
        "aioscopedauth --version": [*script, "--version"],
        "aioscopedauth --help": [*script, "--help"],
        "pytest, plugin loaded": pytest_run,
        "pytest, -p no:aioscopedauth": [*pytest_run, "-p", "no:aioscopedauth"],
    }


def _time(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=env
    )
    return time.perf_counter() - start


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", type=Path, help="also measure the package in this folder")
    options = parser.parse_args()
    rounds = options.rounds
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    envs = {"": env}
    if options.baseline is not None:
        path = os.pathsep.join(filter(None, [str(options.baseline), env.get("PYTHONPATH")]))
        envs[" [baseline]"] = {**env, "PYTHONPATH": path}
    with tempfile.TemporaryDirectory(prefix="aioscopedauth-startup-") as folder:
        project = Path(folder)
        (project / "test_one.py").write_text("def test_one():\n    assert True\n")
        runs = {
            name + label: (command, run_env)
            for label, run_env in envs.items()
            for name, command in _commands(project, baseline=bool(label)).items()
        }
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for command, run_env in runs.values():  # warm the caches (.pyc files, page cache)
            _time(command, project, run_env)
        for _ in range(rounds):
            for name, (command, run_env) in runs.items():
                samples[name].append(_time(command, project, run_env))
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {rounds} rounds"
    )
    median = {name: statistics.median(values) for name, values in samples.items()}
    for name, values in samples.items():
        print(
            f"{name:<42} median {median[name] * 1000:7.1f} ms"
            f"  (min {min(values) * 1000:6.1f}, max {max(values) * 1000:6.1f})"
        )
    for label in envs:
        _ratios(median, label)


def _ratios(median: dict[str, float], label: str) -> None:
    def m(name: str) -> float:
        return median[name + label]

    base, aiohttp = m("python -c pass"), m("import aiohttp")
    plugin = m("pytest, plugin loaded") - m("pytest, -p no:aioscopedauth")
    print(f"ratios{label or ' '}")
    print(f"  --version / python -c pass:           {m('aioscopedauth --version') / base:.2f}")
    print(f"  --help / python -c pass:              {m('aioscopedauth --help') / base:.2f}")
    module = m("python -m aioscopedauth --version")
    print(f"  python -m aioscopedauth --version / python -c pass: {module / base:.2f}")
    print(f"  import aioscopedauth / import aiohttp: {m('import aioscopedauth') / aiohttp:.2f}")
    print(f"  common path / import aiohttp:         {m('common path') / aiohttp:.2f}")
    print(f"  pytest plugin overhead:               {plugin * 1000:.1f} ms")


if __name__ == "__main__":
    main()
