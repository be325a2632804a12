"""``python -m seglab``: the same as the ``seglab`` command."""

import sys

from seglab.cli import main

sys.exit(main())
