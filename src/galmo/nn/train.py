"""The ONE training loop of galmo, shared by every model.

AdamW, linear warm-up then cosine decay (per step), optional on-the-fly augmentation, an optional
exponential moving average of the weights (``ema``: validated, checkpointed and returned instead of
the raw weights), optional mixed precision (``precision="bf16"``, also on CPUs with AVX-512 BF16, or
``"fp16"`` on CUDA) and channels-last memory for convolutional models, early
stopping on a validation metric, a progress bar with images/s, per-epoch metrics in
``metrics.jsonl``, checkpoints as safetensors + JSON (``galmo.nn.checkpoint``), and an exact
``resume``: every random choice (epoch order, augmentation, dropout) is derived from
(seed, epoch, step), so a run killed mid-epoch and resumed ends with the same weights and metrics
as an uninterrupted one.

A *task* tells the loop what a batch means::

    class Task:
        def loss(self, model, batch, generator) -> (loss_tensor, {"name": float, ...})
        def evaluate(self, model, loader) -> {"val_loss": float, ...}   # loader yields batches

``batch`` is a tuple of tensors already on the device. ``generator`` is a seeded torch.Generator
for any randomness the task wants (augmentation).
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from galmo.nn import checkpoint as ckpt
from galmo.nn.device import resolve_device
from galmo.core.errors import GalmoError
from galmo.core.io import atomic_path, write_json


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05       # fraction of all steps spent warming up linearly
    min_lr_frac: float = 0.01       # cosine decays to lr * min_lr_frac
    grad_clip: float | None = 1.0
    patience: int | None = None     # early stop after this many epochs without improvement
    monitor: str = "val_loss"
    mode: str = "min"               # "min" or "max"
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 0       # also checkpoint every N steps mid-epoch (0: epoch ends only)
    eval_batch_size: int = 256
    progress: bool = True
    stop_after_steps: int | None = None  # stop (checkpointed, resumable) after this many steps this session
    ema: float | None = None        # decay of a weight EMA (e.g. 0.999); None: no EMA
    precision: str = "fp32"         # "fp32", "bf16" (autocast; CPU or CUDA) or "fp16" (CUDA, loss scaling)
    channels_last: bool = False     # NHWC weights and image batches (faster convolutions on CPU and GPU)
    extra: dict = field(default_factory=dict)


EMA_DIR = "ema"  # last/ema/: the EMA weights of a resumable checkpoint


class TrainingInterrupted(Exception):
    """Raised by :func:`fit` when it stopped early but saved a resumable checkpoint."""


def _mix(*xs: int) -> int:
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) + 0x9E3779B9 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFF
    return h


def batches(dataset, indices: np.ndarray, batch_size: int, device) -> Iterator[tuple]:
    """Tuples of tensors on ``device`` for consecutive slices of ``indices``."""
    tensors = getattr(dataset, "tensors", None)
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        if tensors is not None:
            ti = torch.as_tensor(idx)
            b = tuple(t[ti] for t in tensors)
        else:
            items = [dataset[int(i)] for i in idx]
            b = tuple(torch.stack([torch.as_tensor(it[k]) for it in items]) for k in range(len(items[0])))
        yield tuple(t.to(device, non_blocking=True) for t in b)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    warm = max(1, int(cfg.warmup_frac * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def ema_avg_fn(decay: float):
    """``AveragedModel`` update: EMA with the usual warm-up, decay_n = min(decay, (1 + n) / (10 + n)),
    so the average does not drag the random initialisation through the first few hundred steps.
    Integer buffers (BatchNorm's batch counters) are copied."""

    @torch.no_grad()
    def update(ema_params, model_params, n_averaged):
        d = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, model_params, 1.0 - d)
        else:
            for e, m in zip(ema_params, model_params):
                e.copy_(m)

    return update


def _better(a: float, b: float | None, mode: str) -> bool:
    return b is None or (a < b if mode == "min" else a > b)


def fit(model, train_set, val_set, task, cfg: TrainConfig, run_dir: str | Path, *, model_name: str,
        model_kwargs: dict, resume: bool = False, extra_config: dict | None = None,
        on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train ``model``; best weights → ``run_dir/model.safetensors`` + ``config.json``.

    Returns a summary: ``{"best": {...metrics}, "epochs_run": n, "history": [...], "stopped_early": bool}``.
    Raises :class:`TrainingInterrupted` after Ctrl-C or ``stop_after_steps`` (state saved; use resume).
    """
    run_dir = Path(run_dir)
    last_dir = run_dir / "last"
    device = resolve_device(cfg.device)
    if cfg.precision not in PRECISIONS:
        raise GalmoError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    amp_dtype = PRECISIONS[cfg.precision]
    if amp_dtype is torch.float16 and device.type != "cuda":
        raise GalmoError("precision fp16 needs a CUDA device; on a CPU use bf16")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None
    ema = None
    if cfg.ema:
        if not 0.0 < cfg.ema < 1.0:
            raise GalmoError(f"ema must be a decay in (0, 1), e.g. 0.999; got {cfg.ema}")
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(model, multi_avg_fn=ema_avg_fn(cfg.ema), use_buffers=True)
    best_model = ema.module if ema is not None else model  # what is validated, saved and returned
    n = len(train_set)
    if n == 0:
        raise GalmoError("no training examples")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "best_metrics": None,
             "bad_epochs": 0, "loss_sum": 0.0, "loss_count": 0, "history": []}
    log_path = run_dir / "metrics.jsonl"
    if resume:
        if not (last_dir / ckpt.STATE_JSON).exists():
            raise GalmoError("nothing to resume: no checkpoint in last/ (start without --resume)", path=run_dir)
        model.load_state_dict(ckpt.load_state_dict(last_dir / ckpt.MODEL_FILE))
        state, _ = ckpt.load_train_state(last_dir, opt)
        if (ema is not None) != ("ema_n" in state):
            raise GalmoError("--resume must use the same --ema setting as the interrupted run (" +
                             ("it was trained with an EMA" if "ema_n" in state else
                              "the checkpoint has no EMA weights: it was trained without --ema") + ")", path=last_dir)
        if ema is not None:
            ema.module.load_state_dict(ckpt.load_state_dict(last_dir / EMA_DIR / ckpt.MODEL_FILE))
            ema.n_averaged.fill_(int(state.get("ema_n", 0)))
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("done"):  # hand back the best (EMA, when used) weights, as a finished run does
            model.load_state_dict(ckpt.load_state_dict(run_dir / ckpt.MODEL_FILE))
            return _summary(state)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        if log_path.exists():
            log_path.unlink()
    write_json(run_dir / "train_config.json", {"train": asdict(cfg), "model": {"name": model_name,
                                                                              "kwargs": model_kwargs}})
    extra = {"train": asdict(cfg), **(extra_config or {})}

    def save_last():
        ckpt.save_checkpoint(last_dir, model, model_name, model_kwargs, extra)
        if ema is not None:
            state["ema_n"] = int(ema.n_averaged)
            ckpt.save_checkpoint(last_dir / EMA_DIR, ema.module, model_name, model_kwargs, extra)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        ckpt.save_train_state(last_dir, opt, state)

    interrupted = {"flag": False}

    def on_sigint(signum, frame):  # finish the step, save, then stop
        interrupted["flag"] = True

    old = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    steps_this_session = 0
    try:
        while state["epoch"] < cfg.epochs:
            epoch = state["epoch"]
            order = np.random.default_rng(_mix(cfg.seed, epoch)).permutation(n)
            skip = state["step_in_epoch"]
            model.train()
            bar = _bar(cfg, steps_per_epoch, epoch, skip)
            t0, seen = time.perf_counter(), 0
            for k, batch in enumerate(batches(train_set, order[skip * cfg.batch_size:], cfg.batch_size, device)):
                step_in_epoch = skip + k
                gstep = state["global_step"]
                for g in opt.param_groups:
                    g["lr"] = lr_at(gstep, total_steps, cfg)
                torch.manual_seed(_mix(cfg.seed, epoch, step_in_epoch, 1))
                gen = torch.Generator(device="cpu").manual_seed(_mix(cfg.seed, epoch, step_in_epoch, 2))
                if cfg.channels_last:
                    batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t
                                  for t in batch)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    loss, logs = task.loss(model, batch, gen)
                if not torch.isfinite(loss):
                    raise GalmoError(f"training diverged: loss is {loss.item()} at epoch {epoch} step {step_in_epoch}; "
                                     "lower --lr")
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                if ema is not None:
                    ema.update_parameters(model)
                bs = batch[0].shape[0]
                seen += bs
                state["loss_sum"] += float(loss.detach()) * bs
                state["loss_count"] += bs
                state["global_step"] = gstep + 1
                state["step_in_epoch"] = step_in_epoch + 1
                steps_this_session += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{state['loss_sum'] / state['loss_count']:.4g}",
                                    img_s=f"{seen / (time.perf_counter() - t0):.0f}")
                stop_now = interrupted["flag"] or (cfg.stop_after_steps and steps_this_session >= cfg.stop_after_steps)
                if stop_now or (cfg.checkpoint_every and state["global_step"] % cfg.checkpoint_every == 0):
                    save_last()
                if stop_now:
                    if bar is not None:
                        bar.close()
                    raise TrainingInterrupted(f"stopped at epoch {epoch} step {step_in_epoch + 1}; "
                                              f"checkpoint in {last_dir} (resume to continue)")
            if bar is not None:
                bar.close()
            elapsed = time.perf_counter() - t0
            metrics = {"epoch": epoch, "step": state["global_step"], "lr": opt.param_groups[0]["lr"],
                       "train_loss": state["loss_sum"] / max(1, state["loss_count"]),
                       "train_images_per_s": seen / elapsed if elapsed > 0 else None}
            best_model.eval()
            with torch.no_grad():
                metrics.update(task.evaluate(best_model, batches(val_set, np.arange(len(val_set)), cfg.eval_batch_size,
                                                            device)) if val_set is not None and len(val_set) else {})
            mon = metrics.get(cfg.monitor, metrics["train_loss"])
            if _better(mon, state["best"], cfg.mode):
                state["best"], state["best_metrics"], state["bad_epochs"] = mon, metrics, 0
                ckpt.save_checkpoint(run_dir, best_model, model_name, model_kwargs, {**extra, "metrics": metrics})
            else:
                state["bad_epochs"] += 1
            state["history"].append(metrics)
            _append_jsonl(log_path, metrics)
            if on_epoch_end:
                on_epoch_end(metrics)
            state.update(epoch=epoch + 1, step_in_epoch=0, loss_sum=0.0, loss_count=0)
            if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
                state["stopped_early"] = True
                break
        state["done"] = True
        save_last()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    best = ckpt.load_state_dict(run_dir / ckpt.MODEL_FILE)
    model.load_state_dict(best)
    if cfg.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return _summary(state)


def _summary(state: dict) -> dict:
    return {"best": state["best_metrics"], "epochs_run": state["epoch"], "history": state["history"],
            "stopped_early": bool(state.get("stopped_early"))}


def _append_jsonl(path: Path, row: dict) -> None:
    """Append one line atomically (rewrite to temp + rename: the log is never half-written)."""
    old = path.read_text() if path.exists() else ""
    with atomic_path(path) as tmp:
        tmp.write_text(old + json.dumps(row) + "\n")


def _bar(cfg: TrainConfig, total: int, epoch: int, initial: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
