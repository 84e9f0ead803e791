"""``python -m aioscopedauth``: the same as the ``aioscopedauth`` command."""

import sys

from ._cli import main

sys.exit(main())
