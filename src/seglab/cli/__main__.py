"""``python -m seglab.cli``."""

import sys

from seglab.cli import app

sys.exit(app())
