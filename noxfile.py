"""Build steps: `nox` runs exactly what CI runs (tests, lint, typecheck, docs)."""

from __future__ import annotations

import pathlib
import shutil
import tempfile

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.error_on_missing_interpreters = True

ROOT = pathlib.Path(__file__).parent


def _build_wheel(session: nox.Session) -> str:
    out = pathlib.Path(tempfile.mkdtemp(prefix="aioscopedauth-wheel-"))
    session.run("python", "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT))
    wheels = sorted(out.glob("aioscopedauth-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel in {out}, found {wheels}")
    return str(wheels[0])


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the built wheel, not the checkout."""
    wheel = _build_wheel(session)
    session.install(f"aioscopedauth[test] @ file://{wheel}")
    # The conftest refuses to run when the package would be imported from the checkout.
    session.run(
        "pytest",
        *session.posargs,
        env={"AIOSCOPEDAUTH_REQUIRE_INSTALLED": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


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
