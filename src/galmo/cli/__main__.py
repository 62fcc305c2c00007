"""``python -m galmo.cli``."""

import sys

from galmo.cli import main

sys.exit(main())
