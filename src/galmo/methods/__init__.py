"""One package per method: config.py (its settings), run.py (the library calls), report.py."""
