"""``python -m forcomp`` runs the command-line interface."""

import sys

from forcomp.cli import main

sys.exit(main())
