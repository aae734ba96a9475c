"""``python -m unetkit.cli`` runs the command line, as the ``unetkit`` script does."""

import sys

from unetkit.cli import main

sys.exit(main(sys.argv[1:]))
