"""``python -m seglab.cli``."""

import sys

from seglab.cli import main

sys.exit(main())
