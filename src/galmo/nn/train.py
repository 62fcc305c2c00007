"""The ONE training loop of galmo, shared by every model.

AdamW, linear warm-up then cosine decay stepped per update (timm's ``CosineLRScheduler``), optional
on-the-fly augmentation, an optional exponential moving average of the weights (``ema``: validated,
checkpointed and returned instead of the raw weights; torch's ``AveragedModel``), optional mixed
precision (``precision="bf16"``, also on CPUs with AVX-512 BF16, or ``"fp16"`` on CUDA) and
channels-last memory for convolutional models, early stopping on a validation metric, a progress
bar with images/s, per-epoch metrics in ``metrics.jsonl``, checkpoints as safetensors + JSON
(``galmo.nn.checkpoint``), and an exact ``resume``: every random choice (epoch order, augmentation,
dropout) is derived from (seed, epoch, step), so a run killed mid-epoch and resumed ends with the
same weights and metrics as an uninterrupted one. The per-step seeds are set inside
``torch.random.fork_rng``: the caller's global torch RNG is the same after :func:`fit` as before.

A *task* tells the loop what a batch means::

    class Task:
        def loss(self, model, batch, generator) -> (loss_tensor, {"name": float, ...})
        def validate(self, model, loader) -> {"val_loss": float, ...}   # loader yields batches

``batch`` is a tuple of tensors already on the device. ``generator`` is a seeded torch.Generator
for any randomness the task wants (augmentation). ``validate`` runs its forward passes through
:mod:`galmo.nn.infer`.

:func:`read_progress` is the public view of a run folder's training state (other methods must not
parse ``last/train_state.json`` themselves).

Checkpoints (crash-safe). ``run_dir/last/`` holds everything a resume needs (raw weights, EMA
weights, optimizer moments, counters, loss scaler). It is saved

* every ``checkpoint_minutes`` (default 5) of training, so a crash, ``kill -9`` or power cut loses
  at most that much;
* at every epoch end, unless the previous save is fewer than ``EPOCH_END_SAVES`` (50) save-durations
  old: with very short epochs (the probe's baseline, tiny tests) this caps the epoch-end saves at 2 %
  of the run;
* every ``checkpoint_every`` steps when set (default 0, off: a step count means seconds for one model
  and hours for another, so the wall-clock rule is the default; steps are for tests and for
  checkpointing more often than the time rule does);
* on SIGINT (Ctrl-C) or SIGTERM (``kill``, a batch system's time limit): the step in progress is
  finished, ``last/`` saved and :class:`TrainingInterrupted` raised (``galmo train`` exits 130); a
  second signal stops at once. The caller's handlers are restored when :func:`fit` returns.

Measured cost of one save (2 cores, local disk, fsync included): 8–13 ms for the demo's rotinv (width
16, 64 px: 1.1 MB with the Adam moments), against ~8 s per epoch of the demo's 2100 galaxies (0.1–0.2 %
with a save at every epoch end); a 3-epoch run of it on 320 images (36 s on 2 shared cores) spent
39 ms in its 3 saves, 0.11 %. 11 ms for width 32 with an EMA (5 MB); 80 ms for the EfficientNet-Lite0
timm_classifier with an EMA (55 MB), against 1.6 s per step of 32 images.

Each save writes the whole set into ``last.tmp/``, fsyncs every file and folder, and swaps it in by
renames (:func:`galmo.nn.checkpoint.save_resumable`): a kill at any moment leaves either the previous
complete checkpoint or the new one. ``resume`` after a kill continues from it and ends with the same
weights (bit for bit) and the same ``metrics.jsonl`` as an uninterrupted run: the epochs logged after
the checkpoint are dropped from the log and run again, and a run killed before its first checkpoint
starts again from step 0 (with a warning). What is not identical: the ``train_images_per_s`` of the
interrupted epoch (wall-clock), and the numbers themselves when the resume runs on another device or
torch thread count (float rounding of the kernels) or with other settings (warned: a resume with
another ``epochs``, ``lr``, ``batch_size``, ... is not the uninterrupted run of either).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import time
import warnings
from contextlib import contextmanager
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
    checkpoint_every: int = 0       # also checkpoint every N steps (0: off; see "Checkpoints" above)
    checkpoint_minutes: float | None = 5.0  # and every this many minutes of training (None or 0: off)
    eval_batch_size: int = 256
    progress: bool = True
    stop_after_steps: int | None = None  # stop (checkpointed, resumable) after this many steps this session
    ema: float | None = None        # decay of a weight EMA (e.g. 0.999); None: no EMA
    precision: str = "fp32"         # "fp32", "bf16" (autocast; CPU or CUDA) or "fp16" (CUDA, loss scaling)
    channels_last: bool = False     # NHWC weights and image batches (faster convolutions on CPU and GPU)
    extra: dict = field(default_factory=dict)


EMA_DIR = "ema"  # last/ema/: the EMA weights of a resumable checkpoint
TRAIN_CONFIG = "train_config.json"  # written when a training starts in a run folder
EPOCH_END_SAVES = 50  # an epoch end saves last/ when the previous save is ≥ 50 save-durations old
NOT_RESULTS = ("device", "progress", "eval_batch_size", "stop_after_steps", "checkpoint_every",
               "checkpoint_minutes")  # TrainConfig fields a resume may change without changing the weights
STOP_SIGNALS = ("SIGINT", "SIGTERM")  # finish the step, save last/, raise TrainingInterrupted
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


from galmo.core.errors import TrainingInterrupted  # noqa: E402,F401  (raised by fit; defined torch-free)


def _mix(*xs: int) -> int:
    """The seed of (seed, epoch[, step, stream]): numpy's SeedSequence hash of the numbers, so every
    epoch order, augmentation and dropout mask is a function of where the loop is (exact resume)."""
    return int(np.random.SeedSequence([int(x) & 0xFFFFFFFFFFFFFFFF for x in xs]).generate_state(1, np.uint64)[0])


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


# ---------------------------------------------------------------------------------- LR schedule
class LRSchedule:
    """Linear warm-up over ``warm = max(1, int(warmup_frac · total))`` updates to ``lr``, then cosine
    decay to ``lr · min_lr_frac`` over the remaining ``total − warm``: timm's ``CosineLRScheduler``
    (``warmup_prefix``, ``t_in_epochs=False``) stepped once per update.

    Update ``k`` (0-based) of the warm-up runs at ``lr·(k+1)/warm`` and the decay starts at the peak
    on update ``warm``, so the peak is held for two updates; timm counts warm-up updates from 0 at
    ``warmup_lr_init``, hence it is told ``k + 1`` during the warm-up and ``k`` after. This equals
    the former hand-written formula to floating-point rounding (≤ 1e-15 relative; tested to 1e-9)."""

    def __init__(self, optimizer, total_steps: int, cfg: TrainConfig):
        from timm.scheduler import CosineLRScheduler

        self.warm = max(1, int(cfg.warmup_frac * total_steps))
        with _quiet("timm.scheduler.cosine_lr"):  # its "t_initial = 1 has no effect" warning misleads here
            self.scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total_steps - self.warm),
                                               lr_min=cfg.lr * cfg.min_lr_frac, warmup_t=self.warm,
                                               warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)

    def t(self, step: int) -> int:
        """timm's update count for the loop's ``step``."""
        return step + 1 if step < self.warm else step

    def lr(self, step: int) -> float:
        return self.scheduler._get_lr(self.t(step))[0]

    def set(self, step: int) -> None:
        """Set every parameter group's learning rate for update ``step``."""
        self.scheduler.step_update(self.t(step))


@contextmanager
def _quiet(logger: str):
    log = logging.getLogger(logger)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


# ---------------------------------------------------------------------------------- pieces
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


def _amp_dtype(cfg: TrainConfig, device):
    if cfg.precision not in PRECISIONS:
        raise GalmoError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    amp_dtype = PRECISIONS[cfg.precision]
    if amp_dtype is torch.float16 and device.type != "cuda":
        raise GalmoError("precision fp16 needs a CUDA device; on a CPU use bf16")
    return amp_dtype


def _make_ema(model, cfg: TrainConfig):
    if not cfg.ema:
        return None
    if not 0.0 < cfg.ema < 1.0:
        raise GalmoError(f"ema must be a decay in (0, 1), e.g. 0.999; got {cfg.ema}")
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, multi_avg_fn=ema_avg_fn(cfg.ema), use_buffers=True)


def _make_optimizer(model, cfg: TrainConfig):
    """AdamW; biases and norm weights (≤ 1-D) without weight decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def _new_state() -> dict:
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "best_metrics": None,
            "bad_epochs": 0, "loss_sum": 0.0, "loss_count": 0, "history": []}


@dataclass
class _Run:
    """What one :func:`fit` call works with (set up by :func:`_setup`)."""

    model: torch.nn.Module
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp_dtype: object
    scaler: object
    ema: object
    opt: torch.optim.Optimizer
    schedule: LRSchedule
    steps_per_epoch: int
    n: int
    model_name: str
    model_kwargs: dict
    extra: dict
    config: object = None  # a galmo.core.config.Config: the run folder's config.json comes from its save()
    state: dict = field(default_factory=_new_state)
    interrupted: bool = False
    steps_this_session: int = 0
    last_save: float = field(default_factory=time.monotonic)  # when last/ was last written (monotonic s)
    save_seconds: float = 0.0       # how long the latest save of last/ took

    @property
    def last_dir(self) -> Path:
        return self.run_dir / ckpt.LAST

    @property
    def log_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def best_model(self):
        """What is validated, saved and returned: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model


def _setup(model, train_set, cfg: TrainConfig, run_dir, model_name: str, model_kwargs: dict,
           extra_config: dict | None, config) -> _Run:
    device = resolve_device(cfg.device)
    amp_dtype = _amp_dtype(cfg, device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None
    ema = _make_ema(model, cfg)
    n = len(train_set)
    if n == 0:
        raise GalmoError("no training examples")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = _make_optimizer(model, cfg)
    return _Run(model=model, cfg=cfg, run_dir=Path(run_dir), device=device, amp_dtype=amp_dtype, scaler=scaler,
                ema=ema, opt=opt, schedule=LRSchedule(opt, steps_per_epoch * cfg.epochs, cfg),
                steps_per_epoch=steps_per_epoch, n=n, model_name=model_name, model_kwargs=model_kwargs,
                extra={"train": asdict(cfg), **(extra_config or {})}, config=config)


def _resume(run: _Run) -> bool:
    """Load the last checkpoint of ``run.run_dir`` (weights, EMA, optimizer, counters, loss scaler) and
    cut ``metrics.jsonl`` back to its epochs. False (nothing loaded: the run starts at step 0, which is
    what an uninterrupted run does) when the folder holds a started training killed before its first
    checkpoint; a folder where no training started is an error."""
    last = ckpt.recover_resumable(run.run_dir)
    if last is None:
        if (run.run_dir / TRAIN_CONFIG).exists():
            warnings.warn(f"{run.run_dir}: no checkpoint yet (the run was stopped before its first one): "
                          "training starts again from step 0", stacklevel=3)
            return False
        raise GalmoError("nothing to resume: no checkpoint in last/ (start without --resume)", path=run.run_dir)
    run.model.load_state_dict(ckpt.load_state_dict(last / ckpt.MODEL_FILE))
    run.state, _ = ckpt.load_train_state(last, run.opt)
    has_ema = "ema_n" in run.state
    if (run.ema is not None) != has_ema:
        raise GalmoError("--resume must use the same --ema setting as the interrupted run (" +
                         ("it was trained with an EMA" if has_ema else
                          "the checkpoint has no EMA weights: it was trained without --ema") + ")", path=last)
    if run.ema is not None:
        run.ema.module.load_state_dict(ckpt.load_state_dict(last / EMA_DIR / ckpt.MODEL_FILE))
        run.ema.n_averaged.fill_(int(run.state.get("ema_n", 0)))
    if run.scaler is not None and run.state.get("scaler"):
        run.scaler.load_state_dict(run.state["scaler"])
    _warn_changed_settings(run)
    _rewrite_log(run.log_path, run.state["history"])  # epochs logged after the checkpoint are run again
    return True


def _warn_changed_settings(run: _Run) -> None:
    """Warn when a resume trains with other settings than the run it continues (not exact then)."""
    try:
        before = json.loads((run.run_dir / TRAIN_CONFIG).read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    now = asdict(run.cfg)
    changed = [f"{k} {before[k]} → {now[k]}" for k in now if k not in NOT_RESULTS and k in before
               and json.loads(json.dumps(now[k])) != before[k]]
    if changed:
        warnings.warn(f"{run.run_dir}: resumed with other settings than the interrupted run ({', '.join(changed)}): "
                      "the result will not equal an uninterrupted run", stacklevel=4)


def _save_last(run: _Run) -> None:
    """The resumable checkpoint ``last/`` (raw weights, EMA weights, optimizer and counters), written as
    one crash-safe set by :func:`galmo.nn.checkpoint.save_resumable` (fsynced, swapped by renames)."""
    t0 = time.monotonic()
    if run.ema is not None:
        run.state["ema_n"] = int(run.ema.n_averaged)
    if run.scaler is not None:
        run.state["scaler"] = run.scaler.state_dict()

    def write(folder: Path) -> None:
        ckpt.save_checkpoint(folder, run.model, run.model_name, run.model_kwargs, run.extra)
        if run.ema is not None:
            ckpt.save_checkpoint(folder / EMA_DIR, run.ema.module, run.model_name, run.model_kwargs, run.extra)
        ckpt.save_train_state(folder, run.opt, run.state)

    ckpt.save_resumable(run.run_dir, write)
    run.last_save = time.monotonic()
    run.save_seconds = run.last_save - t0


def _save_best(run: _Run, metrics: dict) -> None:
    ckpt.save_checkpoint(run.run_dir, run.best_model, run.model_name, run.model_kwargs,
                         {**run.extra, "metrics": metrics}, config=run.config)


def _train_step(run: _Run, task, batch: tuple, epoch: int, step_in_epoch: int) -> torch.Tensor:
    """One update: learning rate, the step's seeds, forward (autocast), backward, clip, step, EMA."""
    cfg, opt = run.cfg, run.opt
    run.schedule.set(run.state["global_step"])
    torch.manual_seed(_mix(cfg.seed, epoch, step_in_epoch, 1))  # dropout etc.; inside fit's fork_rng
    gen = torch.Generator(device="cpu").manual_seed(_mix(cfg.seed, epoch, step_in_epoch, 2))
    if cfg.channels_last:
        batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in batch)
    with torch.autocast(run.device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
        loss, _ = task.loss(run.model, batch, gen)
    if not torch.isfinite(loss):
        raise GalmoError(f"training diverged: loss is {loss.item()} at epoch {epoch} step {step_in_epoch}; "
                         "lower --lr")
    opt.zero_grad(set_to_none=True)
    scaler = run.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    return loss


def _train_epoch(run: _Run, task, train_set) -> dict:
    """The rest of the current epoch (from ``step_in_epoch`` on); returns its train metrics.
    Raises :class:`TrainingInterrupted` (checkpoint saved) on Ctrl-C or ``stop_after_steps``."""
    cfg, state = run.cfg, run.state
    epoch, skip = state["epoch"], state["step_in_epoch"]
    order = np.random.default_rng(_mix(cfg.seed, epoch)).permutation(run.n)
    run.model.train()
    bar = _bar(cfg, run.steps_per_epoch, epoch, skip)
    t0, seen = time.perf_counter(), 0
    try:
        for k, batch in enumerate(batches(train_set, order[skip * cfg.batch_size:], cfg.batch_size, run.device)):
            loss = _train_step(run, task, batch, epoch, skip + k)
            bs = batch[0].shape[0]
            seen += bs
            state["loss_sum"] += float(loss.detach()) * bs
            state["loss_count"] += bs
            state["global_step"] += 1
            state["step_in_epoch"] = skip + k + 1
            run.steps_this_session += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{state['loss_sum'] / state['loss_count']:.4g}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            _maybe_checkpoint(run, epoch)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    return {"epoch": epoch, "step": state["global_step"], "lr": run.opt.param_groups[0]["lr"],
            "train_loss": state["loss_sum"] / max(1, state["loss_count"]),
            "train_images_per_s": seen / elapsed if elapsed > 0 else None}


def _maybe_checkpoint(run: _Run, epoch: int) -> None:
    """After a step: save ``last/`` when it is due (every ``checkpoint_every`` steps, every
    ``checkpoint_minutes``); save and raise :class:`TrainingInterrupted` on a signal or ``stop_after_steps``."""
    cfg, state = run.cfg, run.state
    stop_now = run.interrupted or bool(cfg.stop_after_steps and run.steps_this_session >= cfg.stop_after_steps)
    by_steps = bool(cfg.checkpoint_every) and state["global_step"] % cfg.checkpoint_every == 0
    if stop_now or by_steps or _minutes_due(run):
        _save_last(run)
    if stop_now:
        raise TrainingInterrupted(_stopped_message(run, epoch))


def _minutes_due(run: _Run) -> bool:
    minutes = run.cfg.checkpoint_minutes
    return bool(minutes) and time.monotonic() - run.last_save >= 60.0 * minutes


def _epoch_end_due(run: _Run) -> bool:
    """At an epoch end: save unless the previous save is fewer than ``EPOCH_END_SAVES`` save-durations old
    (short epochs), which keeps the epoch-end saves under 1/EPOCH_END_SAVES = 2 % of the run."""
    return run.interrupted or time.monotonic() - run.last_save >= EPOCH_END_SAVES * run.save_seconds


def _stopped_message(run: _Run, epoch: int) -> str:
    why = "stopped by a signal" if run.interrupted else "stopped"
    return (f"{why} at epoch {epoch} step {run.state['step_in_epoch']}; checkpoint in {run.last_dir} "
            "(run again with --resume: it ends with the same weights as an uninterrupted run)")


def validate(task, model, val_set, batch_size: int, device) -> dict:
    """The task's validation metrics of ``model`` on ``val_set`` ({} without a validation set)."""
    if val_set is None or not len(val_set):
        return {}
    model.eval()
    with torch.no_grad():
        return task.validate(model, batches(val_set, np.arange(len(val_set)), batch_size, device))


def _end_epoch(run: _Run, metrics: dict, on_epoch_end) -> bool:
    """Keep the best weights, log the epoch, advance the counters; True when early stopping says stop."""
    cfg, state = run.cfg, run.state
    mon = metrics.get(cfg.monitor, metrics["train_loss"])
    if _better(mon, state["best"], cfg.mode):
        state["best"], state["best_metrics"], state["bad_epochs"] = mon, metrics, 0
        _save_best(run, metrics)
    else:
        state["bad_epochs"] += 1
    state["history"].append(metrics)
    _append_jsonl(run.log_path, metrics)
    if on_epoch_end:
        on_epoch_end(metrics)
    state.update(epoch=metrics["epoch"] + 1, step_in_epoch=0, loss_sum=0.0, loss_count=0)
    if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
        state["stopped_early"] = True
        return True
    return False


def _run_epochs(run: _Run, task, train_set, val_set, on_epoch_end) -> None:
    while run.state["epoch"] < run.cfg.epochs:
        metrics = _train_epoch(run, task, train_set)
        metrics.update(validate(task, run.best_model, val_set, run.cfg.eval_batch_size, run.device))
        if _end_epoch(run, metrics, on_epoch_end) or run.state["epoch"] >= run.cfg.epochs:
            break
        if _epoch_end_due(run):
            _save_last(run)
        if run.interrupted:  # the signal came during the validation
            raise TrainingInterrupted(_stopped_message(run, run.state["epoch"]))
    run.state["done"] = True
    _save_last(run)


def fit(model, train_set, val_set, task, cfg: TrainConfig, run_dir: str | Path, *, model_name: str,
        model_kwargs: dict, resume: bool = False, extra_config: dict | None = None,
        on_epoch_end: Callable[[dict], None] | None = None, config=None) -> dict:
    """Train ``model``; best weights → ``run_dir/model.safetensors`` + ``config.json``.

    ``config``: the method's :class:`galmo.core.config.Config`; when given, ``run_dir/config.json``
    is written by its ``save()`` (method, settings, versions) with the checkpoint's keys added, so
    ``galmo run`` can re-run the folder and ``load_checkpoint`` can load it.

    Returns a summary: ``{"best": {...metrics}, "epochs_run": n, "history": [...], "stopped_early": bool}``.
    Raises :class:`TrainingInterrupted` after Ctrl-C or ``stop_after_steps`` (state saved; use resume).
    The caller's global torch RNG is left as it was.
    """
    run = _setup(model, train_set, cfg, run_dir, model_name, model_kwargs, extra_config, config)
    if not (resume and _resume(run)):
        _start_fresh(run)
    elif run.state.get("done"):  # hand back the best (EMA, when used) weights, as a finished run does
        model.load_state_dict(ckpt.load_state_dict(run.run_dir / ckpt.MODEL_FILE))
        return _summary(run.state)
    write_json(run.run_dir / TRAIN_CONFIG, {"train": asdict(cfg), "model": {"name": model_name,
                                                                           "kwargs": model_kwargs}})
    with _stop_signals(run), torch.random.fork_rng(devices=_cuda_devices()):
        _run_epochs(run, task, train_set, val_set, on_epoch_end)
    model.load_state_dict(ckpt.load_state_dict(run.run_dir / ckpt.MODEL_FILE))
    if cfg.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return _summary(run.state)


def _start_fresh(run: _Run) -> None:
    """A new training in ``run_dir``: the log and any earlier run's resumable checkpoint go (a kill
    before the first save must not leave ``--resume`` an older run's state)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.log_path.exists():
        run.log_path.unlink()
    for name in (ckpt.LAST, ckpt.LAST_OLD, ckpt.LAST_TMP):
        if (run.run_dir / name).is_dir():
            shutil.rmtree(run.run_dir / name)


@contextmanager
def _stop_signals(run: _Run):
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, a batch system's time limit): the first finishes the step,
    saves ``last/`` and stops (:class:`TrainingInterrupted`); a second one stops at once
    (KeyboardInterrupt; the previous checkpoint stays). The previous handlers are restored on exit."""
    def on_signal(signum, frame):
        if run.interrupted:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped without saving")
        run.interrupted = True

    sigs = [getattr(signal, n) for n in STOP_SIGNALS if hasattr(signal, n)] if _main_thread() else []
    old = {s: signal.signal(s, on_signal) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _summary(state: dict) -> dict:
    return {"best": state["best_metrics"], "epochs_run": state["epoch"], "history": state["history"],
            "stopped_early": bool(state.get("stopped_early"))}


def read_progress(run_dir: str | Path) -> dict:
    """Where the training in ``run_dir`` stands, from its files (the public view of ``last/``).

    ``{"done": bool, "epoch": epochs completed, "global_step": int, "step_in_epoch": int,
    "history": [per-epoch metrics], "best": metrics of the best epoch or None, "stopped_early": bool,
    "weights": whether the best weights exist}``; a folder without a checkpoint reads as not started.
    Safe while the training runs: a checkpoint is only ever seen complete.
    """
    run_dir = Path(run_dir)
    scalars = _read_scalars(run_dir)
    return {"done": bool(scalars.get("done")), "epoch": int(scalars.get("epoch", 0)),
            "global_step": int(scalars.get("global_step", 0)), "step_in_epoch": int(scalars.get("step_in_epoch", 0)),
            "history": list(scalars.get("history", [])), "best": scalars.get("best_metrics"),
            "stopped_early": bool(scalars.get("stopped_early")),
            "weights": (run_dir / ckpt.MODEL_FILE).exists()}


def _read_scalars(run_dir: Path, tries: int = 5) -> dict:
    """The counters of the resumable checkpoint ({} when there is none); a swap by a running training
    between finding ``last/`` and reading it is retried."""
    for attempt in range(tries):
        last = ckpt.resumable_dir(run_dir)
        if last is None:
            return {}
        path = last / ckpt.STATE_JSON
        try:
            return json.loads(path.read_text())["scalars"]
        except FileNotFoundError:
            if attempt == tries - 1:
                raise
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise GalmoError(f"unreadable training state ({type(e).__name__}: {e})", path=path) from None
    return {}


def _rewrite_log(path: Path, history: list[dict]) -> None:
    """``metrics.jsonl`` holding exactly ``history`` (one line per epoch)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in history))


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
