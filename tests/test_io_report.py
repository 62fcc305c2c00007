"""Crash-safe outputs, the report assembler, colour composites and the backbone loader."""

import numpy as np
import pytest

from galmo import report
from galmo.core.errors import GalmoError
from galmo.core.io import atomic_path, read_json, write_json
from galmo.core.transforms import asinh_stretch, legacy_rgb


def test_atomic_path_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old complete content\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old complete content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(3)})
    assert read_json(tmp_path / "m.json") == {"a": 0.5, "b": [0, 1, 2]}


def test_report_embeds_figures_in_order(tmp_path):
    from galmo.plots import bar

    fig = bar({"a": 1, "b": 3}, tmp_path / "figures" / "c.png", title="t")
    report.add_section(tmp_path, "supervised", "Supervised", "<p>sup</p>", [fig], ["counts"])
    report.add_section(tmp_path, "overview", "The sample", "<p>ov</p>")
    html = report.build_report(tmp_path).read_text()
    assert html.index("The sample") < html.index("Supervised")  # overview first whatever the write order
    assert "data:image/png;base64," in html and "counts" in html


def test_report_from_a_relative_run_folder(tmp_path, monkeypatch):
    from galmo.plots import bar

    monkeypatch.chdir(tmp_path)
    run = "runs/x"  # as `galmo demo --out runs/demo` passes it
    fig = bar({"a": 1}, f"{run}/figures/b.png")
    report.add_section(run, "overview", "Sample", "", [fig, "figures/b.png"])
    html = report.build_report(run).read_text()
    assert html.count("data:image/png;base64,") == 2


def test_legacy_rgb_colours_and_range():
    flux = np.zeros((3, 8, 8), np.float32)
    flux[2] = 1.0  # only z-band flux → red plane dominates
    rgb = legacy_rgb(flux)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert (rgb[..., 0] > rgb[..., 2]).all()
    s = asinh_stretch(np.stack([np.full((4, 4), np.nan), np.arange(16.0).reshape(4, 4)]))
    assert np.isfinite(s).all() and s[1].max() == pytest.approx(1.0, abs=0.02)


def test_offline_backbone_loads_real_weights_and_refuses_unknown(tmp_path):
    import torch

    from galmo.nn.backbones import create_backbone, encode

    m = create_backbone("tf_efficientnet_lite0")
    # ImageNet weights, not random: the BN running stats of the stem are not the init values
    assert not torch.allclose(m.bn1.running_var, torch.ones_like(m.bn1.running_var))
    rng = np.random.default_rng(0)
    f = encode(m, rng.random((4, 3, 32, 32), dtype=np.float32), size=64)
    assert f.shape == (4, 1280) and np.isfinite(f).all() and f.std() > 0
    with pytest.raises(GalmoError, match="--weights FILE"):
        create_backbone("convnext_large")
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GalmoError, match="cannot read weights"):
        create_backbone("resnet18", weights=str(bad))


def test_noise_sigma_and_sigma_nmad_are_the_mad_of_astropy():
    from astropy.stats import mad_std

    from galmo.core.metrics import sigma_nmad
    from galmo.core.transforms import noise_sigma

    rng = np.random.default_rng(4)
    X = rng.normal(0, 0.05, (3, 2, 40, 40)).astype(np.float32)
    X[:, 1] *= 2
    s = noise_sigma(X)
    assert s.shape == (3, 2) and s.dtype == np.float32
    np.testing.assert_allclose(s[:, 0], 0.05, rtol=0.1)
    np.testing.assert_allclose(s[:, 1], 0.10, rtol=0.1)
    d = np.diff(X, axis=-1).reshape(3, 2, -1)  # the hand-written formula it replaced, to the bit
    assert np.array_equal(s, (1.4826 * np.median(np.abs(d - np.median(d, -1, keepdims=True)), -1)
                              / np.sqrt(2.0)).astype(np.float32))
    z = rng.uniform(0, 0.3, 400)
    zp = z + rng.normal(0, 0.02, 400) * (1 + z)
    dz = (zp - z) / (1 + z)
    assert sigma_nmad(z, zp) == mad_std(dz)
    assert sigma_nmad(z, zp) == pytest.approx(1.4826 * np.median(np.abs(dz - np.median(dz))), rel=2e-6)
    assert sigma_nmad(z, zp) == pytest.approx(0.02, rel=0.15)


def test_contingency_counts_and_leaves_out_negatives():
    from galmo.core.metrics import contingency, purity

    groups = [0, 0, 2, 2, 2, -1, 0, 5]
    classes = [1, 1, 3, 1, 3, 3, -1, 3]
    table, g, c = contingency(groups, classes)
    assert list(g) == [0, 2, 5] and list(c) == [1, 3]
    assert table.tolist() == [[2, 0], [1, 2], [0, 1]] and table.dtype == np.int64
    assert purity(groups, classes) == pytest.approx(5 / 6)
    empty, g, c = contingency([-1], [0])
    assert empty.shape == (0, 0) and len(g) == len(c) == 0


def test_plots_leave_the_users_backend_and_style_alone(tmp_path):
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); size = matplotlib.rcParams['font.size']\n"
            "import galmo.plots as p\n"
            f"p.bar({{'a': 1, 'b': 2}}, r'{tmp_path / 'b.png'}')\n"
            "import sys; print(matplotlib.get_backend(), matplotlib.rcParams['font.size'] == size,"
            " 'matplotlib.pyplot' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["svg", "True", "False"]
    from PIL import Image

    assert Image.open(tmp_path / "b.png").format == "PNG"


def test_montage_shows_each_galaxy_in_its_cell_upright(tmp_path):
    """Same-shape images become one mosaic: read back, the cells sit in three columns, each holds its
    image's colour, and an image's first rows (origin "lower": its bottom) are drawn at the cell's bottom."""
    import matplotlib.image as mpimg

    from galmo.plots import montage

    imgs = []
    for k in range(6):
        im = np.zeros((16, 16, 3), np.uint8)
        im[..., k % 3] = 200
        im[:4] = 100  # rows 0-3, grey: the bottom of the drawn cell
        imgs.append(im)
    path = montage(imgs, tmp_path / "m.png", titles=[f"g{k}" for k in range(6)], ncols=3)
    png = mpimg.imread(path)[..., :3]
    inside = png.sum(-1) < 2.9  # not white
    cols = np.flatnonzero(inside.any(0))
    assert 1 + int((np.diff(cols) > 1).sum()) == 3  # three columns of cells
    first_cols = cols[:np.argmax(np.diff(cols) > 1)]
    rows = np.flatnonzero(inside[:, first_cols].all(1))
    cell = png[rows[0]:rows[0] + len(first_cols), first_cols]  # cell 0: red, grey at its bottom
    top, bottom = cell[:len(cell) // 4].mean((0, 1)), cell[-len(cell) // 8:].mean((0, 1))
    assert top[0] > 0.6 and top[1] < 0.15 and bottom[1] > 0.3
    mixed = montage(imgs[:5] + [imgs[5][:8, :8]], tmp_path / "mixed.png", ncols=3)  # other shapes: one axes each
    assert mpimg.imread(mixed).shape[0] > 50
