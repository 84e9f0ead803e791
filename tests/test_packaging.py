"""The sdist and the wheel, built from this checkout and listed as a user would."""

from __future__ import annotations

import asyncio
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from processes import spawned

ROOT = Path(__file__).parent.parent


# Building the sdist and the wheel (hatchling, in a subprocess) may take minutes on a busy CI.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")

    async def build() -> None:
        async with spawned(
            sys.executable,
            "-m",
            "hatchling",
            "build",
            "-d",
            str(out),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        ) as proc:
            output, _ = await asyncio.wait_for(proc.communicate(), 300)
        assert proc.returncode == 0, output.decode()

    asyncio.run(build())
    (sdist,) = out.glob("aioscopedauth-*.tar.gz")
    (wheel,) = out.glob("aioscopedauth-*.whl")
    return sdist, wheel


def test_the_license_is_in_the_repository_the_sdist_and_the_wheel(
    built: tuple[Path, Path],
) -> None:
    sdist, wheel = built
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    with tarfile.open(sdist) as archive:
        prefix = archive.getnames()[0].split("/")[0]
        member = archive.extractfile(f"{prefix}/LICENSE")
        assert member is not None
        assert member.read().decode() == text
    with zipfile.ZipFile(wheel) as archive:
        (license_file,) = [
            n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")
        ]
        assert archive.read(license_file).decode() == text
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        fields = archive.read(metadata).decode()
    assert "License-Expression: Apache-2.0\n" in fields
    assert "License-File: LICENSE\n" in fields


def test_the_sdist_has_what_its_noxfile_needs(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"noxfile.py", "bench/run.py", "pyproject.toml", "README.md", "CHANGELOG.md"} <= names
    assert "tests/test_cli.py" in names
    assert {"tests/oidc/provider.mjs", "tests/oidc/package-lock.json"} <= names
    assert "docs/conf.py" in names


def test_the_long_description_reads_well_on_an_index(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        description = archive.read(metadata).decode().split("\n\n", 1)[1]
    assert "from a clone of this repository" not in description
    assert "pip install 'aioscopedauth[keyring]'" not in description  # not on an index yet
    assert "pip install '.[keyring]'" in description
    assert 'pip install "$(echo dist/aioscopedauth-*.whl)[keyring]"' in description
