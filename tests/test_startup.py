"""A fast start (issue 13): what `--version`, `--help`, `import aioscopedauth` and the pytest
plugin import. Timings are measured by bench/startup.py, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("aiohttp", "asyncio", "attr", "anyio", "yarl", "aioscopedauth._demo")

_MODULES_AFTER = """
import json, runpy, sys
sys.argv = ["aioscopedauth", *sys.argv[1:]]
try:
    runpy.run_module("aioscopedauth", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules(code: str, *args: str) -> tuple[str, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, timeout=60
    )
    return proc.stdout, set(json.loads(proc.stderr.splitlines()[-1]))


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["status", "--help"]])
def test_the_cli_answers_version_and_help_without_aiohttp_or_the_demo(args: list[str]) -> None:
    out, modules = _modules(_MODULES_AFTER, *args)
    assert "aioscopedauth" in out
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY) == []


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["-h"]])
def test_version_and_help_do_not_even_import_the_command_line(args: list[str]) -> None:
    out, modules = _modules(_MODULES_AFTER, *args)
    assert out.startswith(("aioscopedauth 0.", "usage: aioscopedauth"))
    assert not {"argparse", "logging", "aioscopedauth._errors"} & modules
    assert not [m for m in modules if m.startswith("aioscopedauth._cli")]


@pytest.mark.parametrize("columns", ["80", "132", None])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_the_fast_help_is_what_argparse_prints_at_80_columns(
    columns: str | None, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aioscopedauth._cli import build_parser  # noqa: PLC0415 -- after COLUMNS is set
    from aioscopedauth._launch import HELP  # noqa: PLC0415 -- beside it

    monkeypatch.setenv("COLUMNS", "80")
    argparse_help = build_parser().format_help()
    # If this fails, the command line changed: copy its new help into _launch.HELP.
    assert argparse_help == HELP, argparse_help
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns  # None: no COLUMNS and no terminal, argparse's 80
    shown = subprocess.run(
        [sys.executable, "-m", "aioscopedauth", flag],
        capture_output=True, text=True, check=True, env=env, timeout=60,
    )  # fmt: skip
    assert shown.stdout == HELP
    assert shown.stderr == ""


def test_a_narrow_terminal_gets_argparse_s_own_wrapping(monkeypatch: pytest.MonkeyPatch) -> None:
    from aioscopedauth._cli import build_parser  # noqa: PLC0415 -- after COLUMNS is set
    from aioscopedauth._launch import HELP  # noqa: PLC0415 -- beside it

    monkeypatch.setenv("COLUMNS", "60")
    narrow = build_parser().format_help()
    shown = subprocess.run(
        [sys.executable, "-m", "aioscopedauth", "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert shown.stdout == narrow != HELP
    assert max(len(line) for line in narrow.splitlines()) <= 60


def test_import_aioscopedauth_imports_what_a_name_needs_when_it_is_used() -> None:
    code = (
        "import json, sys\nimport aioscopedauth\nbare = sorted(sys.modules)\n"
        "aioscopedauth.AuthMiddleware\nprint(json.dumps(bare))\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)"
    )
    out, used = _modules(code)
    bare = set(json.loads(out))
    assert not {"aiohttp", "attr", "anyio", "aioscopedauth._manager"} & bare
    assert {"aiohttp", "attr", "aioscopedauth._middleware"} <= used


def test_the_pytest_plugin_imports_nothing_heavy_until_a_fixture_is_used(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(
        "import json, sys\n"
        "def pytest_sessionfinish(session):\n"
        "    with open('modules.json', 'w') as f:\n"
        "        json.dump(sorted(sys.modules), f)\n"
    )
    pytester.makepyfile("def test_one():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    modules = set(json.loads((pytester.path / "modules.json").read_text()))
    assert "aioscopedauth.testing.plugin" in modules  # loaded through its entry point
    assert not {"aiohttp", "attr", "aioscopedauth.testing._server"} & modules


def test_a_fixture_of_the_plugin_still_works_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        "def test_codex_home(codex_home, token_script):\n"
        "    assert codex_home.name == 'codex-home'\n"
        "    assert token_script('tok').runs == 0\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
