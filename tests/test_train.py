"""The one training loop: learning, early stopping, checkpoints, exact resume after a mid-epoch stop."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from galmo import checkpoint as ckpt
from galmo.errors import GalmoError
from galmo.models import register_model
from galmo.train import TrainConfig, TrainingInterrupted, fit


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

    def evaluate(self, model, loader):
        tot, correct, n = 0.0, 0, 0
        for x, y in loader:
            out = model(x)
            tot += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
        return {"val_loss": tot / n, "val_acc": correct / n}


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
