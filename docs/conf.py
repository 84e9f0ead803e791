"""Sphinx configuration for the aioscopedauth documentation."""

from __future__ import annotations

import aioscopedauth

project = "aioscopedauth"
author = "aioscopedauth developers"
copyright = "2026, aioscopedauth developers"
version = release = aioscopedauth.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
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
# Type names from aiohttp, anyio and keyring cannot be cross-referenced without their
# inventories, which a machine with no internet cannot fetch.
_FOREIGN_MODULES = (
    "aiohttp|anyio|keyring|attr|attrs|contextlib|collections|datetime|pathlib|os|typing|enum"
    "|asyncio|yarl|itertools|types"
)
_FOREIGN_NAMES = (
    "Path|Any|Mapping|Callable|AsyncIterator|AbstractAsyncContextManager|datetime|timedelta"
    "|_T|PathLike|KeyringBackend|ForcedLoginMethod|ChangeReason|URL|StepName|ModeName|Outcome"
    "|Self|Iterable|AsyncGenerator|TracebackType"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_FOREIGN_MODULES})\..*"),
    (r"py:.*", rf"({_FOREIGN_NAMES})"),
]

html_theme = "furo"
html_title = "aioscopedauth"
