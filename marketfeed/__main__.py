"""``python -m marketfeed``: the same as the ``marketfeed`` command."""

import sys

from marketfeed.cli import main

sys.exit(main())
