"""``python -m daemon`` is the ``wastesort`` command."""

import sys

from daemon.cli import main

sys.exit(main())
