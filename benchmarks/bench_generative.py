"""Generator throughput: training images/s through the one loop (galmo.nn.train.fit with the diffusion task)
and guided sampling images/s (DDIM, guidance 3: two forward passes per step) at 10, 25 and 50 steps.
One JSON line per measurement, with the thread count and os.getloadavg() (the cores may be shared).
Training is measured at batch 16 and 32, in fp32 and with bf16 autocast (``--generator-precision bf16``
of galmo augment; 1.4–1.5× on CPUs with AVX-512 BF16, much slower on CPUs without it).
Usage: python benchmarks/bench_generative.py [SIZE ...]   (default: tiny; micro, small, base also)
Threads: GALMO_THREADS (default: all cores)."""
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

from galmo.methods.generative.sample import sample
from galmo.nn.device import set_threads
from galmo.nn.models import create
from galmo.nn.tasks.diffusion import DiffusionTask
from galmo.nn.train import TrainConfig, fit

BATCHES, PRECISIONS, N_TRAIN, N_SAMPLE = (16, 32), ("fp32", "bf16"), 256, 16


def emit(**row):
    print(json.dumps({**row, "threads": torch.get_num_threads(), "load_avg": [round(x, 2) for x in os.getloadavg()]}),
          flush=True)


def bench_training(size: str, model, batch: int, precision: str) -> None:
    px = model.image_size
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (N_TRAIN, 3, px, px)).astype(np.float32))
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 10, N_TRAIN))
    with tempfile.TemporaryDirectory() as tmp:
        s = fit(model, torch.utils.data.TensorDataset(x, y), None, DiffusionTask(model.noise_schedule),
                TrainConfig(epochs=2, batch_size=batch, lr=5e-4, ema=0.999, progress=False, device="cpu",
                            precision=precision), tmp, model_name="diffusion_unet", model_kwargs={"size": size})
    emit(bench="generator_train", size=size, px=px, batch=batch, precision=precision,
         params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
         train_img_s=round(s["history"][-1]["train_images_per_s"], 1))  # the 2nd epoch: warmed up


def bench_sampling(size: str, model) -> None:
    cond = np.arange(N_SAMPLE) % 10
    sample(model, cond[:2], [0, 1], steps=2)  # warm-up
    for steps in (10, 25, 50):
        t = time.perf_counter()
        sample(model, cond, np.arange(N_SAMPLE), steps=steps, guidance=3.0, batch_size=N_SAMPLE)
        emit(bench="generator_sample", size=size, px=model.image_size, steps=steps, guidance=3.0, n=N_SAMPLE,
             sample_img_s=round(N_SAMPLE / (time.perf_counter() - t), 2))


if __name__ == "__main__":
    set_threads()
    for size in sys.argv[1:] or ["tiny"]:
        for batch in BATCHES:
            for precision in PRECISIONS:
                torch.manual_seed(0)
                bench_training(size, create("diffusion_unet", size=size), batch, precision)
        torch.manual_seed(0)
        bench_sampling(size, create("diffusion_unet", size=size).eval())
