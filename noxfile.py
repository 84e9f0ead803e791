"""Build steps: `nox` runs exactly what CI runs (tests, lint, typecheck, docs)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import nox

ROOT = pathlib.Path(__file__).parent
CODEX_VERSIONS = ["0.169.0", "0.171.0"]
"""The Codex CLI releases the interop suite runs against (pinned: their behaviour is what is
tested); `nox -s interop` runs each, `nox -s "interop(codex='0.171.0')"` one."""


def _codex_cache(version: str) -> pathlib.Path:
    return pathlib.Path(
        os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"),
        "aioscopedauth",
        f"codex-{version}",
    )


CODEX_BINARY = "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
OIDC_DIR = ROOT / "tests" / "oidc"
"""package.json and package-lock.json of the OpenID provider the oidc suite runs (pinned)."""
OIDC_VERSION = "9.13.3"
OIDC_CACHE = _codex_cache(OIDC_VERSION).parent / f"oidc-provider-{OIDC_VERSION}"

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
if shutil.which("npm"):
    nox.options.sessions += ["interop", "oidc"]
elif not {"-s", "--session", "--sessions", "-e", "-l", "--list"} & set(sys.argv):
    print(  # noqa: T201 -- the one line the default run shows
        "nox: interop and oidc suites skipped: npm is not on PATH (they install "
        f"@openai/codex {', '.join(CODEX_VERSIONS)} and oidc-provider@{OIDC_VERSION}; run "
        "`nox -s interop` and `nox -s oidc` where npm is)",
        file=sys.stderr,
    )
PYTHONS = ["3.11", "3.12", "3.13"]
"""The supported Pythons: `nox -s tests` runs on each that is installed and skips the others
(`nox -s tests-3.12` picks one, `--force-python 3.12` forces it on any session)."""
nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"


def _pyenv_selects_every_installed_python() -> None:
    # pyenv's shims answer only for the selected versions, so nox would not find the others.
    # Keep the selected ones first (python3 stays what it was), then add every installed
    # CPython 3 after them.
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    selected = (
        os.environ.get("PYENV_VERSION")
        or subprocess.run(
            [pyenv, "version-name"], capture_output=True, text=True, check=False
        ).stdout.strip()
    )
    found = subprocess.run(
        [pyenv, "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    if not selected:
        return
    versions = selected.split(":")
    versions += [
        v for v in reversed(found) if re.fullmatch(r"3\.\d+\.\d+", v) and v not in versions
    ]
    os.environ["PYENV_VERSION"] = ":".join(versions)


_pyenv_selects_every_installed_python()


def _build_wheel(session: nox.Session) -> str:
    # In the session's own folder (.nox/<session>/tmp), never in the system temp folder.
    out = pathlib.Path(session.create_tmp()).resolve() / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    session.run("python", "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT))
    wheels = sorted(out.glob("aioscopedauth-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel in {out}, found {wheels}")
    return str(wheels[0])


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against the built wheel, not the checkout."""
    wheel = _build_wheel(session)
    session.install(f"aioscopedauth[test] @ file://{wheel}")
    # The conftest refuses to run when the package would be imported from the checkout.
    session.run(
        "pytest",
        "--ignore=tests/interop",
        "--ignore=tests/oidc",
        *session.posargs,
        env={"AIOSCOPEDAUTH_REQUIRE_INSTALLED": "1"},
    )


@nox.session
@nox.parametrize("codex", CODEX_VERSIONS)
def interop(session: nox.Session, codex: str) -> None:
    """Interop tests against the real Codex CLI (pinned npm package), on one shared home."""
    npm = shutil.which("npm")
    if npm is None:
        session.error(f"npm is needed to install @openai/codex@{codex}")
    cache = _codex_cache(codex)
    binary = cache / CODEX_BINARY
    if not binary.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        session.run(
            npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
            "--loglevel=error", f"@openai/codex@{codex}",
            external=True,
        )  # fmt: skip
    if not binary.is_file():
        session.error(f"the npm package did not ship the Linux binary at {binary}")
    wheel = _build_wheel(session)
    session.install(f"aioscopedauth[test] @ file://{wheel}")
    session.run(
        "pytest",
        "tests/interop",
        *session.posargs,
        env={
            "AIOSCOPEDAUTH_REQUIRE_INSTALLED": "1",
            "AIOSCOPEDAUTH_CODEX_BIN": str(binary),
            "AIOSCOPEDAUTH_CODEX_VERSION": codex,
        },
    )


def _oidc_modules(session: nox.Session) -> pathlib.Path:
    """Install the pinned provider into the cache once (again when the lock file changes)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        session.error(f"npm and node are needed to install oidc-provider@{OIDC_VERSION}")
    lock = (OIDC_DIR / "package-lock.json").read_bytes()
    installed = OIDC_CACHE / "package-lock.json"
    modules = OIDC_CACHE / "node_modules"
    if not (modules / "oidc-provider").is_dir() or not (
        installed.is_file() and installed.read_bytes() == lock
    ):
        OIDC_CACHE.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(OIDC_DIR / name, OIDC_CACHE / name)
        session.run(
            npm, "ci", "--prefix", str(OIDC_CACHE), "--no-audit", "--no-fund", "--loglevel=error",
            external=True,
        )  # fmt: skip
    return modules


@nox.session
def oidc(session: nox.Session) -> None:
    """Tests against a real OpenID provider (npm oidc-provider, pinned) on a loopback port."""
    modules = _oidc_modules(session)
    wheel = _build_wheel(session)
    session.install(f"aioscopedauth[test] @ file://{wheel}")
    session.run(
        "pytest",
        "tests/oidc",
        *session.posargs,
        env={"AIOSCOPEDAUTH_REQUIRE_INSTALLED": "1", "AIOSCOPEDAUTH_OIDC_MODULES": str(modules)},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff (lint and formatting) and the import layering check."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The layering check: no module imports a layer above it (pyproject's importlinter table).
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the doc examples."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "aioscopedauth", "tests", "docs/examples")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against bare aiohttp and peers; prints a table, writes bench/results.json."""
    wheel = _build_wheel(session)
    session.install(f"aioscopedauth[bench] @ file://{wheel}")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors."""
    session.install("-e", ".[docs]")
    build = ROOT / "docs" / "_build"
    shutil.rmtree(build, ignore_errors=True)
    session.run(
        "sphinx-build", "-W", "--keep-going", "-n", "-b", "html", "docs", str(build / "html")
    )
