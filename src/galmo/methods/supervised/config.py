"""Settings of the supervised method (no torch: the CLI reads them)."""

MODELS = ("rotinv", "simple_cnn", "timm_classifier")
TARGETS = ("class", "votes")
