"""``python -m unetkit`` runs the command line, as the ``unetkit`` script does."""

import sys

from unetkit.cli import main

if __name__ == "__main__":  # importing the module (tests/test_imports.py) must not run the CLI
    sys.exit(main(sys.argv[1:]))
