"""Sphinx configuration for the aioscopedauth documentation."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import aioscopedauth
import aioscopedauth.testing

if TYPE_CHECKING:
    from types import ModuleType

    from sphinx.application import Sphinx

project = "aioscopedauth"
author = "aioscopedauth developers"
copyright = "2026, aioscopedauth developers"
version = release = aioscopedauth.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "reference/errors-tree.md"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Inventories are kept in docs/_inventories (taken from Debian's python3.11-doc,
# python-aiohttp-doc and python-attr-doc packages) because the build machines have no internet.
# They link to the live sites; a newer name missing from an older inventory stays plain text.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python-3.11.inv"),
    "aiohttp": ("https://docs.aiohttp.org/en/stable", "_inventories/aiohttp.inv"),
    "attrs": ("https://www.attrs.org/en/stable", "_inventories/attrs.inv"),
}
# Type names from anyio and keyring (and names newer than the kept inventories) cannot be
# cross-referenced offline; they stay plain text.
_FOREIGN_MODULES = (
    "aiohttp|anyio|keyring|attr|attrs|contextlib|collections|datetime|pathlib|os|typing|enum"
    "|asyncio|yarl|itertools|types|redis"
)
_FOREIGN_NAMES = (
    "Path|Any|Mapping|Callable|AsyncIterator|AbstractAsyncContextManager|datetime|timedelta"
    "|_T|PathLike|KeyringBackend|ForcedLoginMethod|ChangeReason|URL|StepName|ModeName|Outcome"
    "|Self|Iterable|AsyncGenerator|TracebackType|Dialect|ClientAuth|GiveUpReason"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_FOREIGN_MODULES})\..*"),
    # AuthManager's private mixins (its members are documented as its own).
    (r"py:class", r"aioscopedauth\._facade_\w+\.\w+"),
    (r"py:.*", rf"({_FOREIGN_NAMES})"),
]

html_theme = "furo"
html_title = "aioscopedauth"


def _show_public_paths(package: ModuleType) -> None:
    """Name re-exported objects by the path users import them from.

    ``aioscopedauth.AuthDotJson`` is defined in ``aioscopedauth._model``; without this the
    reference page (and every signature that mentions it) would show the private path.
    """
    for name in package.__all__:
        obj = getattr(package, name)
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith(f"{package.__name__}._"):
            try:
                obj.__module__ = package.__name__
            except (AttributeError, TypeError):  # a type alias, a constant: nothing to rename
                continue


_show_public_paths(aioscopedauth)
_show_public_paths(aioscopedauth.testing)

# Docstrings point developers to the Codex behaviour reference that sits beside DESIGN.md
# ("(reference §3.3)"); that document is not part of these docs, so the pointers are dropped.
_REFERENCE_POINTER = re.compile(r" ?\((?:see )?reference §[\d.]+(?:,[^)]*)?\)")


def _drop_reference_pointers(
    _app: object, what: str, name: str, _obj: object, _options: object, lines: list[str]
) -> None:
    if what == "module" and name == "aioscopedauth":
        lines.clear()  # the package docstring says "see the documentation": this is it
        return
    lines[:] = _REFERENCE_POINTER.sub("", "\n".join(lines)).split("\n")


def setup(app: Sphinx) -> None:
    """Connect the docstring filter."""
    app.connect("autodoc-process-docstring", _drop_reference_pointers)
