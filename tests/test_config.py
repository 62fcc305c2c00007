"""The config base (flags and config.json from one dataclass) and the one inference loop."""

import argparse
from dataclasses import dataclass

import numpy as np
import pytest

from galmo.core.config import Config, add_options, option
from galmo.core.errors import GalmoError


@dataclass
class ToyConfig(Config):
    method = "toy"
    k: int = option(20, "number of groups", short="-k")
    graph: bool = option(True, "use the graph")
    size: tuple[int, ...] = option((64, 252), "encoder input")
    weights: str | None = option(None, "weights file")
    ratio: float = option(0.5, "a ratio")
    hidden: int = option(3, "library only", cli=False)


def parse(argv):
    p = argparse.ArgumentParser()
    add_options(p, ToyConfig)
    return ToyConfig.from_args(p.parse_args(argv)), p


def test_flags_come_from_the_fields_with_defaults_shown():
    cfg, p = parse([])
    assert cfg == ToyConfig()
    helps = {a.dest: a.help for a in p._actions}
    assert "(default: 20)" in helps["k"] and "(default: true)" in helps["graph"]
    assert "(default: 64 252)" in helps["size"] and "hidden" not in helps
    cfg, _ = parse(["-k", "7", "--no-graph", "--size", "96", "--weights", "w.safetensors", "--ratio", "0.25"])
    assert (cfg.k, cfg.graph, cfg.size, cfg.weights, cfg.ratio) == (7, False, (96,), "w.safetensors", 0.25)


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    cfg = ToyConfig(k=5, size=(32, 32), hidden=9)
    path = cfg.save(tmp_path)
    back = ToyConfig.load(tmp_path)
    assert back == cfg and isinstance(back.size, tuple)
    import json

    d = json.loads(path.read_text())
    assert d["method"] == "toy" and "numpy" in d["versions"]
    d["config"]["kk"] = 1
    path.write_text(json.dumps(d))
    with pytest.raises(GalmoError, match="unknown toy setting.*kk"):
        ToyConfig.load(path)


def test_a_field_without_help_is_refused():
    @dataclass
    class Bad(Config):
        x: int = option(1, "")

    with pytest.raises(TypeError, match="no help"):
        add_options(argparse.ArgumentParser(), Bad)


def test_infer_equals_one_big_forward_and_streams():
    import torch

    from galmo.nn.infer import infer, infer_batches

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    X = np.random.default_rng(0).random((37, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(X)).numpy()
    out = infer(net, X, batch_size=10)
    assert out.shape == (37, 4) and np.allclose(out, ref, atol=1e-6)
    streamed = np.concatenate(list(infer_batches(net, (X[i:i + 16] for i in range(0, 37, 16)))))
    assert np.allclose(streamed, ref, atol=1e-6)
    two = infer(lambda a, b: net(a) + b, (X, np.ones((37, 4), np.float32)), batch_size=8)
    assert np.allclose(two, ref + 1, atol=1e-6)
