"""The layering contract (checked by `lint-imports` in `nox -s lint`) names every module.

import-linter leaves a module that no layer names unconstrained, so a new room would escape
the check: this test makes adding it to a layer part of adding it.
"""

from __future__ import annotations

import pathlib
import tomllib

import aioscopedauth

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return {
        name.strip() for layer in contract["layers"] for name in layer.replace(":", "|").split("|")
    }


def _modules() -> set[str]:
    package = pathlib.Path(aioscopedauth.__file__).parent
    names = {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
    names |= {path.name for path in package.iterdir() if (path / "__init__.py").is_file()}
    return names


def test_every_module_is_in_a_layer() -> None:
    assert _modules() - _layered() == set()


def test_every_layer_names_a_module() -> None:
    assert _layered() - _modules() == set()
