"""The one training loop: learning, early stopping, checkpoints, exact resume after a mid-epoch stop."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from galmo.nn import checkpoint as ckpt
from galmo.core.errors import GalmoError
from galmo.nn.models import register_model
from galmo.nn.infer import infer_batches
from galmo.nn.train import LRSchedule, TrainConfig, TrainingInterrupted, fit, read_progress


class TinyNet(nn.Module):
    def __init__(self, d_in=8, n_out=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, n_out))

    def forward(self, x):
        return self.net(x)


register_model(lambda **kw: TinyNet(**kw), name="test_tinynet")


class ClsTask:
    def loss(self, model, batch, gen):
        x, y = batch
        noise = torch.randn(x.shape, generator=gen) * 0.05  # augmentation from the loop's generator
        return F.cross_entropy(model(x + noise), y), {}

    def validate(self, model, loader):
        tot, correct, n = 0.0, 0, 0
        for out, y in ((o, b[1]) for b, o in _with_outputs(model, loader)):
            tot += F.cross_entropy(torch.from_numpy(out), y, reduction="sum").item()
            correct += (torch.from_numpy(out).argmax(1) == y).sum().item()
            n += len(y)
        return {"val_loss": tot / n, "val_acc": correct / n}


def _with_outputs(model, loader):
    """(batch, model outputs) pairs, the forward passes through galmo.nn.infer."""
    batches = list(loader)
    return zip(batches, infer_batches(lambda x, y: model(x), batches, device="cpu", dtype=None))


def _data(seed=0, n=300):
    centers = np.random.default_rng(42).normal(0, 2, (3, 8))
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    x = centers[y] + g.normal(0, 1, (n, 8))
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))


def _cfg(**kw):
    base = dict(epochs=4, batch_size=32, lr=3e-3, device="cpu", progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_learns_and_writes_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    res = fit(model, _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path, model_name="test_tinynet",
              model_kwargs={"d_in": 8, "n_out": 3})
    assert res["epochs_run"] == 4
    assert res["best"]["val_acc"] > 0.85
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    loaded, cfg = ckpt.load_checkpoint(tmp_path)
    x = _data(1, 200).tensors[0]
    assert torch.allclose(loaded(x), model.eval()(x))
    assert cfg["metrics"]["val_acc"] == pytest.approx(res["best"]["val_acc"])
    assert not list(tmp_path.glob("**/.*tmp*")), "temporary files left behind"


def _old_lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """The loop's former hand-written schedule (linear warm-up, then cosine to lr·min_lr_frac)."""
    warm = max(1, int(cfg.warmup_frac * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@pytest.mark.parametrize("total", [1, 2, 7, 40, 333, 2000])
@pytest.mark.parametrize("warmup_frac,min_lr_frac", [(0.05, 0.01), (0.0, 0.0), (0.1, 0.2), (0.5, 0.01)])
def test_timm_schedule_equals_the_former_formula(total, warmup_frac, min_lr_frac):
    cfg = TrainConfig(lr=3e-3, warmup_frac=warmup_frac, min_lr_frac=min_lr_frac)
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(3))], lr=cfg.lr)
    sched = LRSchedule(opt, total, cfg)
    got, want = [], []
    for step in range(total):
        sched.set(step)
        got.append(opt.param_groups[0]["lr"])
        want.append(_old_lr_at(step, total, cfg))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
    assert max(got) == pytest.approx(cfg.lr, rel=1e-12)  # the peak is reached
    if total > 2:
        assert cfg.lr * min_lr_frac <= got[-1] < max(got)  # and decays towards lr·min_lr_frac


def test_fit_leaves_the_callers_rng_alone_and_keeps_its_seeds(tmp_path):
    """The per-step seeds are set inside fork_rng: the caller's global RNG is untouched, and the final
    weights depend only on the initial weights and the loop's seed, not on the caller's RNG state."""
    torch.manual_seed(0)
    model = TinyNet()
    before = torch.get_rng_state()
    res = fit(model, _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path, model_name="test_tinynet",
              model_kwargs={})
    assert torch.equal(torch.get_rng_state(), before)
    assert res["best"]["val_loss"] < 0.9 * res["history"][0]["train_loss"]  # it learnt something
    torch.manual_seed(123)  # another global RNG state at the call: the same weights
    other = TinyNet()
    other.load_state_dict({k: v.clone() for k, v in _init_tinynet().items()})
    fit(other, _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path / "b", model_name="test_tinynet",
        model_kwargs={})
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())


def _init_tinynet() -> dict:
    torch.manual_seed(0)
    return TinyNet().state_dict()


def test_read_progress(tmp_path):
    assert read_progress(tmp_path / "none") == {"done": False, "epoch": 0, "global_step": 0, "step_in_epoch": 0,
                                                "history": [], "best": None, "stopped_early": False,
                                                "weights": False}
    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted):  # 10 steps per epoch: stopped at step 3 of epoch 2
        fit(TinyNet(), _data(0), _data(1, 200), ClsTask(), _cfg(stop_after_steps=13), tmp_path,
            model_name="test_tinynet", model_kwargs={})
    p = read_progress(tmp_path)
    assert (p["done"], p["epoch"], p["global_step"], p["step_in_epoch"], p["weights"]) == (False, 1, 13, 3, True)
    assert len(p["history"]) == 1 and "val_acc" in p["history"][0]
    res = fit(TinyNet(), _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path, model_name="test_tinynet",
              model_kwargs={}, resume=True)
    p = read_progress(tmp_path)
    assert p["done"] and p["epoch"] == 4 and p["global_step"] == 40 and p["history"] == res["history"]
    assert p["best"] == res["best"]
    (tmp_path / "last" / ckpt.STATE_JSON).write_text("{broken")
    with pytest.raises(GalmoError, match="unreadable training state"):
        read_progress(tmp_path)


def test_resume_mid_epoch_matches_uninterrupted(tmp_path):
    torch.manual_seed(0)
    ref = TinyNet()
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    res_ref = fit(ref, _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path / "a", model_name="test_tinynet",
                  model_kwargs={})
    m = TinyNet()
    m.load_state_dict(init)
    with pytest.raises(TrainingInterrupted):  # killed mid-epoch 2 (10 steps/epoch)
        fit(m, _data(0), _data(1, 200), ClsTask(), _cfg(stop_after_steps=13), tmp_path / "b",
            model_name="test_tinynet", model_kwargs={})
    m2 = TinyNet()  # a fresh process would start from a fresh model
    res = fit(m2, _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path / "b", model_name="test_tinynet",
              model_kwargs={}, resume=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert res["best"]["val_loss"] == res_ref["best"]["val_loss"]
    a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda s: {k: v for k, v in json.loads(s).items() if k != "train_images_per_s"}  # noqa: E731
    assert [strip(s) for s in a] == [strip(s) for s in b]


def test_early_stopping_and_resume_errors(tmp_path):
    torch.manual_seed(0)
    res = fit(TinyNet(), _data(0), _data(1, 200), ClsTask(), _cfg(epochs=30, lr=0.3, patience=2, monitor="val_acc",
                                                                   mode="max"),
              tmp_path / "c", model_name="test_tinynet", model_kwargs={})
    assert res["stopped_early"] and res["epochs_run"] < 30
    with pytest.raises(GalmoError, match="nothing to resume"):
        fit(TinyNet(), _data(0), None, ClsTask(), _cfg(), tmp_path / "none", model_name="test_tinynet",
            model_kwargs={}, resume=True)


def test_checkpoint_refuses_non_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GalmoError, match="not valid JSON"):
        ckpt.read_config(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(GalmoError, match="cannot read safetensors"):
        ckpt.load_state_dict(tmp_path / "w.safetensors")


def test_ema_update_rule():
    from galmo.nn.train import ema_avg_fn

    upd = ema_avg_fn(0.9)
    e, m = [torch.zeros(3)], [torch.ones(3)]
    upd(e, m, 0)  # warm-up: decay min(0.9, 1/10) = 0.1 → e = 0.9
    assert torch.allclose(e[0], torch.full((3,), 0.9))
    upd(e, m, 1000)  # steady state: decay 0.9 → e = 0.9·0.9 + 0.1
    assert torch.allclose(e[0], torch.full((3,), 0.91))
    ints = [torch.tensor(3)]
    upd(ints, [torch.tensor(7)], 5)  # BatchNorm's counter is copied, not averaged
    assert int(ints[0]) == 7


def test_ema_is_validated_saved_and_resumed_exactly(tmp_path):
    torch.manual_seed(0)
    init = TinyNet().state_dict()
    ref = TinyNet()
    ref.load_state_dict(init)
    cfg = _cfg(ema=0.9)
    res_ref = fit(ref, _data(0), _data(1, 200), ClsTask(), cfg, tmp_path / "a", model_name="test_tinynet",
                  model_kwargs={})
    # the returned and saved weights are the EMA, not the last raw weights
    raw = ckpt.load_state_dict(tmp_path / "a" / "last" / ckpt.MODEL_FILE)
    ema = ckpt.load_state_dict(tmp_path / "a" / "last" / "ema" / ckpt.MODEL_FILE)
    assert not torch.equal(raw["net.0.weight"], ema["net.0.weight"])
    saved = ckpt.load_state_dict(tmp_path / "a" / ckpt.MODEL_FILE)
    assert all(torch.equal(v, saved[k]) for k, v in ref.state_dict().items())
    val = _data(1, 200)
    ref.eval()
    loss = F.cross_entropy(ref(val.tensors[0]), val.tensors[1]).item()
    assert loss == pytest.approx(res_ref["best"]["val_loss"], rel=1e-5)  # what was validated is what was saved
    assert res_ref["best"]["epoch"] == cfg.epochs - 1  # the EMA kept improving: its last weights are the best
    assert torch.equal(saved["net.0.weight"], ema["net.0.weight"])
    assert res_ref["best"]["val_acc"] > 0.85
    m = TinyNet()
    m.load_state_dict(init)
    with pytest.raises(TrainingInterrupted):
        fit(m, _data(0), _data(1, 200), ClsTask(), _cfg(ema=0.9, stop_after_steps=17), tmp_path / "b",
            model_name="test_tinynet", model_kwargs={})
    m2 = TinyNet()
    res = fit(m2, _data(0), _data(1, 200), ClsTask(), cfg, tmp_path / "b", model_name="test_tinynet",
              model_kwargs={}, resume=True)
    assert res["best"]["val_loss"] == res_ref["best"]["val_loss"]
    for k, v in ref.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    with pytest.raises(TrainingInterrupted):  # a run trained without an EMA cannot be resumed with one
        fit(TinyNet(), _data(0), None, ClsTask(), _cfg(stop_after_steps=3), tmp_path / "c", model_name="test_tinynet",
            model_kwargs={})
    with pytest.raises(GalmoError, match="same --ema setting"):
        fit(TinyNet(), _data(0), None, ClsTask(), _cfg(ema=0.9), tmp_path / "c", model_name="test_tinynet",
            model_kwargs={}, resume=True)
    with pytest.raises(TrainingInterrupted):  # nor an EMA run without one
        fit(TinyNet(), _data(0), None, ClsTask(), _cfg(ema=0.9, stop_after_steps=3), tmp_path / "e",
            model_name="test_tinynet", model_kwargs={})
    with pytest.raises(GalmoError, match="trained with an EMA"):
        fit(TinyNet(), _data(0), None, ClsTask(), _cfg(), tmp_path / "e", model_name="test_tinynet",
            model_kwargs={}, resume=True)
    with pytest.raises(GalmoError, match="ema must be"):
        fit(TinyNet(), _data(0), None, ClsTask(), _cfg(ema=1.5), tmp_path / "d", model_name="test_tinynet",
            model_kwargs={})


class TinyConv(nn.Module):
    def __init__(self, n_out=2):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_out))

    def forward(self, x):
        return self.net(x)


register_model(lambda **kw: TinyConv(**kw), name="test_tinyconv")


def _blobs(seed, n=160):
    """Class 0: one bright centred blob; class 1: a ring. 16×16, Gaussian noise."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16] - 7.5
    r = np.hypot(yy, xx)
    y = g.integers(0, 2, n)
    blob, ring = np.exp(-r ** 2 / 8), np.exp(-(r - 5) ** 2 / 2)
    x = np.where(y[:, None, None] == 0, blob, ring) + g.normal(0, 0.3, (n, 16, 16))
    return TensorDataset(torch.tensor(x[:, None], dtype=torch.float32), torch.tensor(y))


def test_bf16_channels_last_training_learns_and_saves_fp32(tmp_path):
    torch.manual_seed(0)
    model = TinyConv()
    res = fit(model, _blobs(0), _blobs(1), ClsTask(), _cfg(epochs=6, lr=1e-2, precision="bf16", channels_last=True,
                                                           ema=0.9),
              tmp_path, model_name="test_tinyconv", model_kwargs={})
    assert res["best"]["val_acc"] > 0.9
    state = ckpt.load_state_dict(tmp_path / ckpt.MODEL_FILE)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert model.net[0].weight.is_contiguous()  # handed back in the default layout
    with pytest.raises(GalmoError, match="fp16 needs a CUDA"):
        fit(TinyConv(), _blobs(0), None, ClsTask(), _cfg(precision="fp16", device="cpu"), tmp_path / "x",
            model_name="test_tinyconv", model_kwargs={})


class SignalAt(ClsTask):
    """Sends ``sig`` to this process during the loss of global step ``at`` (as `kill PID` would)."""

    def __init__(self, sig, at):
        self.sig, self.at, self.calls = sig, at, 0

    def loss(self, model, batch, gen):
        self.calls += 1
        if self.calls == self.at:
            import os

            os.kill(os.getpid(), self.sig)
        return super().loss(model, batch, gen)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_the_step_saves_and_restores_the_handlers(tmp_path, sig):
    import signal

    sig = getattr(signal, sig)
    before = signal.getsignal(sig)
    torch.manual_seed(0)
    init = TinyNet().state_dict()
    m = TinyNet()
    m.load_state_dict(init)
    with pytest.raises(TrainingInterrupted, match="stopped by a signal at epoch 0 step 6"):
        fit(m, _data(0), _data(1, 200), SignalAt(sig, 6), _cfg(), tmp_path / "b",
            model_name="test_tinynet", model_kwargs={})
    assert signal.getsignal(sig) is before
    p = read_progress(tmp_path / "b")
    assert (p["done"], p["global_step"], p["step_in_epoch"]) == (False, 6, 6)
    m2 = TinyNet()
    fit(m2, _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path / "b", model_name="test_tinynet", model_kwargs={},
        resume=True)
    ref = TinyNet()
    ref.load_state_dict(init)
    fit(ref, _data(0), _data(1, 200), ClsTask(), _cfg(), tmp_path / "a", model_name="test_tinynet", model_kwargs={})
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in ref.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.name.startswith("last")) == ["last"]


def _saved_step_at_epoch_ends(tmp_path, **kw) -> list[int]:
    """The global step of last/ as each epoch ends (the callback runs before that epoch's own save)."""
    seen = []
    torch.manual_seed(0)
    fit(TinyNet(), _data(0), _data(1, 200), ClsTask(), _cfg(**kw), tmp_path, model_name="test_tinynet",
        model_kwargs={}, on_epoch_end=lambda m: seen.append(read_progress(tmp_path)["global_step"]))
    return seen


def test_checkpoints_by_steps_minutes_and_epoch_ends(tmp_path, monkeypatch):
    import galmo.nn.train as train_mod

    # 10 steps per epoch. Epochs shorter than EPOCH_END_SAVES saves: only the first epoch end saves (and
    # measures the cost of a save)
    monkeypatch.setattr(train_mod, "EPOCH_END_SAVES", 1e12)
    assert _saved_step_at_epoch_ends(tmp_path / "a", checkpoint_minutes=None) == [0, 10, 10, 10]
    assert _saved_step_at_epoch_ends(tmp_path / "b", checkpoint_minutes=None, checkpoint_every=4) == [8, 20, 28, 40]
    assert _saved_step_at_epoch_ends(tmp_path / "c", checkpoint_minutes=1e-9) == [10, 20, 30, 40]  # every step
    monkeypatch.setattr(train_mod, "EPOCH_END_SAVES", 0)  # long epochs: every epoch end saves
    assert _saved_step_at_epoch_ends(tmp_path / "d", checkpoint_minutes=None) == [0, 10, 20, 30]
    assert read_progress(tmp_path / "d")["done"]


def test_resume_with_other_settings_warns_and_the_log_keeps_each_epoch_once(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted):
        fit(TinyNet(), _data(0), _data(1, 200), ClsTask(), _cfg(stop_after_steps=25), tmp_path,
            model_name="test_tinynet", model_kwargs={})
    # as if killed after epoch 2 was logged but before it was saved: the log has a line too many
    log = tmp_path / "metrics.jsonl"
    log.write_text(log.read_text() + log.read_text().splitlines()[-1] + "\n")
    with pytest.warns(UserWarning, match=r"other settings than the interrupted run \(lr 0.003 → 0.001\)"):
        fit(TinyNet(), _data(0), _data(1, 200), ClsTask(), _cfg(lr=1e-3), tmp_path, model_name="test_tinynet",
            model_kwargs={}, resume=True)
    assert [json.loads(s)["epoch"] for s in log.read_text().splitlines()] == [0, 1, 2, 3]
