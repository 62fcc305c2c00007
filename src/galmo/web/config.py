"""Settings of ``galmo serve`` and ``galmo finetune`` (no torch, no fastapi: the CLI builds its parser
from these dataclasses, and ``galmo --help`` must stay fast)."""

from __future__ import annotations

from dataclasses import dataclass

from galmo.core.config import (
    HELP,
    Config,
    batch_size_option,
    device_option,
    option,
    progress_option,
    seed_option,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
QUEUE_ORDERS = ("confidence", "entropy", "margin")  # least confident, most uncertain, smallest top-2 margin
PAGE_SIZE = 48  # galaxies per page of every list


@dataclass
class ServeConfig(Config):
    """``galmo serve RUN_DIR [RUN_DIR ...]``: the explorer of run folders (the run folders are positional)."""

    method = "serve"

    runs: tuple[str, ...] = option((), "run folders (a demo folder: its sub-runs)", cli=False)
    host: str = option("127.0.0.1", "address to listen on; anything but loopback exposes the explorer (and "
                       "its labelling) to the network")
    port: int = option(8000, "TCP port to listen on")
    data: str | None = option(None, HELP["data"] + "; where the galaxy images come from (none: the sources "
                              "recorded in the run folders)", metavar="SOURCE")
    who: str | None = option(None, "name recorded with each expert label (none: the login name)")
    thumb_cache: str | None = option(None, "folder of the thumbnail cache (none: thumbs/ in the galmo cache, "
                                     "$GALMO_CACHE or ~/.cache/galmo)", metavar="DIR")


@dataclass
class FinetuneConfig(Config):
    """``galmo finetune RUN --expert-labels FILE --out RUN2``: retrain RUN with the expert labels (the
    run is positional)."""

    method = "finetune"

    run: str = option(None, "the run folder to fine-tune", cli=False)
    expert_labels: str = option(None, "expert labels exported by the explorer (.parquet or .csv: id, label, "
                                "decision)", metavar="FILE")
    data: str | None = option(None, HELP["data"] + " (none: the run's own source)", metavar="SOURCE")
    out: str = option(None, "run folder of the fine-tuned model")
    epochs: int = option(3, HELP["epochs"])
    lr: float = option(3e-4, HELP["lr"])
    batch_size: int = batch_size_option(64)
    seed: int = seed_option()
    device: str = device_option()
    progress: bool = progress_option()
