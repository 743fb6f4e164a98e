"""``python -m wxcode_pty``: the same as the ``wxcode-pty`` command."""

import sys

from .cli import main

sys.exit(main())
