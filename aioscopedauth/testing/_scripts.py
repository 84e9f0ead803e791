"""Real token scripts for tests: each run pops the next line of a file and counts itself."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

__all__ = ["TokenScript", "write_token_script"]

_SCRIPT = '''#!{python}
"""Print the first line of tokens.txt (removing it) and count the run in runs.txt.

A line FAIL exits 1 with a message on stderr; a line HANG sleeps for an hour; a line that
starts with JSON: prints the rest as is. When tokens.txt is empty it prints nothing.
"""
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "runs.txt"), "a") as runs:
    runs.write("run\\n")
path = os.path.join(here, "tokens.txt")
with open(path) as f:
    lines = f.read().splitlines()
line = lines[0] if lines else ""
with open(path, "w") as f:
    f.write("".join(l + "\\n" for l in lines[1:]))
if line == "FAIL":
    sys.stderr.write("token service unavailable\\n")
    sys.exit(1)
if line == "HANG":
    time.sleep(3600)
print(line.removeprefix("JSON:"))
'''


@attrs.frozen
class TokenScript:
    """A token script written by :func:`write_token_script`.

    Attributes:
        path: The executable script.
        folder: Its folder (also holds ``tokens.txt`` and ``runs.txt``).
    """

    path: Path
    folder: Path

    @property
    def runs(self) -> int:
        """How many times the script has run."""
        try:
            return len((self.folder / "runs.txt").read_text().splitlines())
        except FileNotFoundError:
            return 0

    def push(self, *lines: str) -> None:
        """Append lines for the next runs to print."""
        with (self.folder / "tokens.txt").open("a") as handle:
            handle.writelines(f"{line}\n" for line in lines)


def write_token_script(
    folder: str | Path, *lines: str, name: str = "print-token.sh"
) -> TokenScript:
    """Write an executable token script that prints ``lines``, one per run.

    Special lines: ``FAIL`` (exit 1 with a stderr message), ``HANG`` (sleep an hour),
    ``JSON:{...}`` (print the JSON). After the last line it prints nothing.

    Args:
        folder: Where to write it (created if needed).
        *lines: What successive runs print.
        name: The script's file name.

    Returns:
        The script.
    """
    where = Path(folder)
    where.mkdir(parents=True, exist_ok=True)
    script = where / name
    script.write_text(_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    (where / "tokens.txt").write_text("".join(f"{line}\n" for line in lines))
    return TokenScript(script, where)
