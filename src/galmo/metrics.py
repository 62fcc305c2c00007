"""Metrics shared by every method (numpy / scikit-learn): classification, coverage, calibration,
vote-fraction RMSE, clustering purity/NMI/ARI, completeness/purity. Add functions here; keep
each small, documented and tested."""

from __future__ import annotations

import numpy as np  # noqa: F401
