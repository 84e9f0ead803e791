"""``python -m aioscopedauth``: the same as the ``aioscopedauth`` command."""

import sys

from ._launch import main

sys.exit(main())
