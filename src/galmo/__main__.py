"""``python -m galmo``."""

import sys

from galmo.cli import main

sys.exit(main())
