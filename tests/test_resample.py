"""THE resampling rule (galmo.core.resample): the same numbers as PIL and torch's antialiased
resize, crop / pad, crop_frac, bands, what it says; and predict / evaluate / embed applying a model
to images of another size than it was trained on (they used to refuse)."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmo.cli import main
from galmo.core.errors import GalmoError
from galmo.core.resample import Framing, Resampler, describe, frame_images, match_bands

sys.path.insert(0, str(Path(__file__).parent))
from supervised_data import make_tiny_source  # noqa: E402

QUIET = ["--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("h,w,th,tw", [(64, 64, 224, 224), (512, 512, 64, 64), (150, 150, 64, 64), (33, 47, 20, 9)])
def test_resize_is_pil_and_torch_antialiased_bilinear(h, w, th, tw):
    import torch
    import torch.nn.functional as F
    from PIL import Image

    x = np.random.default_rng(0).random((2, 3, h, w), dtype=np.float32)
    y = frame_images(x[:, :, :, :], (th, tw))
    assert y.shape == (2, 3, th, tw) and y.dtype == np.float32
    if h * tw == w * th:  # same aspect ratio: a pure resample
        t = F.interpolate(torch.from_numpy(x), size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        np.testing.assert_allclose(y, t.numpy(), atol=1e-5)
        pil = Image.fromarray(x[0, 1], mode="F").resize((tw, th), Image.Resampling.BILINEAR)
        np.testing.assert_allclose(y[0, 1], np.asarray(pil), atol=1e-5)
    else:  # centre-crop to the aspect ratio first (47 → 21 columns), then resample
        np.testing.assert_allclose(y, frame_images(x[..., 13:34], (th, tw)), atol=0)


def test_flat_image_stays_flat_and_mean_is_kept():
    x = np.full((1, 1, 90, 90), 0.3, np.float32)
    np.testing.assert_allclose(frame_images(x, 32), 0.3, atol=1e-6)
    g = np.random.default_rng(1).random((1, 1, 128, 128), dtype=np.float32)
    assert frame_images(g, 32).mean() == pytest.approx(g.mean(), abs=1e-4)  # local averages: brightness kept


def test_crop_keeps_pixels_pads_with_zeros_and_crop_frac_zooms():
    x = np.arange(2 * 40 * 40, dtype=np.float32).reshape(1, 2, 40, 40)
    np.testing.assert_array_equal(frame_images(x, 24, "crop"), x[..., 8:32, 8:32])
    pad = frame_images(x[..., :10, :10], (16, 16), "crop")
    np.testing.assert_array_equal(pad[..., 3:13, 3:13], x[..., :10, :10])
    assert pad[..., :3, :].max() == 0 and pad[..., 13:, :].max() == 0
    np.testing.assert_array_equal(frame_images(x, 20, crop_frac=0.5), x[..., 10:30, 10:30])  # zoom 2×, no resample
    assert frame_images(x, 40) is not None and np.shares_memory(frame_images(x, 40), x)  # nothing to do
    with pytest.raises(GalmoError, match="--framing"):
        frame_images(x, 20, "stretch")
    with pytest.raises(GalmoError, match="--crop-frac"):
        frame_images(x, 20, crop_frac=1.5)


def test_bands_are_repeated_or_averaged_or_refused():
    x = np.random.default_rng(2).random((2, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(match_bands(x, 3), np.repeat(x, 3, 1))
    three = np.random.default_rng(3).random((2, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(match_bands(three, 1), three.mean(1, keepdims=True))
    with pytest.raises(GalmoError, match="images have 3 bands but the model takes 2"):
        match_bands(three, 2, where="x.fits")


def test_framing_record_round_trips_and_old_models_get_the_default():
    f = Framing("crop", 0.5, 0.262)
    assert Framing.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    assert Framing.from_dict(None) == Framing("resize", 1.0, None)
    assert f.override(None, None) == f and f.override("resize", 0.8) == Framing("resize", 0.8, 0.262)


def test_resampler_says_once_what_it_did():
    r = Resampler((3, 32, 32), Framing(pxscale=0.262), where="cutouts/", src_pxscale=0.06)
    x = np.random.default_rng(4).random((4, 1, 100, 100), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            y = r(x)
    assert y.shape == (4, 3, 32, 32)
    assert [str(w.message) for w in caught] == [
        "cutouts/: 100x100 px resized (centre-crop to the aspect ratio, antialiased bilinear) to the model's "
        "32x32; 1 band repeated over the model's 3; pixel scale 0.06\"/px, the model's 0.262\"/px"]
    assert describe((3, 32, 32), (3, 32, 32), Framing()) is None  # nothing done, nothing said


# ------------------------------------------------------------------ the verbs, at another size
@pytest.fixture(scope="module")
def tiny32(tmp_path_factory):
    d = tmp_path_factory.mktemp("rs")
    src32 = make_tiny_source(d / "t32.h5", n=48, size=32)
    run = d / "run"
    assert main(["train", "--data", str(src32), "--out", str(run), "--model", "simple_cnn", "--width", "4",
                 "--epochs", "1", "--batch-size", "16", "--seed", "0", *QUIET]) == 0
    return d, run


def test_a_model_records_its_framing_and_predicts_other_sizes(tiny32, capsys):
    d, run = tiny32
    sup = json.loads((run / "config.json").read_text())["supervised"]
    assert sup["shape"] == [3, 32, 32] and sup["framing"] == {"framing": "resize", "crop_frac": 1.0, "pxscale": 0.262}
    big = make_tiny_source(d / "t48.h5", n=12, size=48, seed=1)
    capsys.readouterr()
    out = d / "p48.parquet"
    assert main(["predict", "--run", str(run), "--data", str(big), "--out", str(out), *QUIET]) == 0
    err = capsys.readouterr().err
    assert err.count("galmo: warning:") == 1 and "48x48 px resized" in err and "to the model's 32x32" in err
    p = pd.read_parquet(out)[[f"prob_{k}" for k in range(10)]].to_numpy()
    assert p.shape == (12, 10) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    out2 = d / "p48crop.parquet"
    assert main(["predict", "--run", str(run), "--data", str(big), "--out", str(out2), "--framing", "crop",
                 *QUIET]) == 0
    assert "centre-cropped / zero-padded" in capsys.readouterr().err
    assert not np.allclose(pd.read_parquet(out2)[[f"prob_{k}" for k in range(10)]].to_numpy(), p)
    ev = d / "ev"
    assert main(["evaluate", "--run", str(run), "--data", str(big), "--split", "all", "--out", str(ev),
                 "--crop-frac", "0.75", *QUIET]) == 0
    m = json.loads((ev / "metrics.json").read_text())["all"]
    assert m["n"] == 12 and 0 <= m["top1"] <= 1
    assert "kept the central 0.75 of each side" in capsys.readouterr().err


def test_embed_with_a_run_resamples_to_its_input(tiny32):
    d, run = tiny32
    big = make_tiny_source(d / "t40.h5", n=6, size=40, seed=2)
    out = d / "e.parquet"
    assert main(["embed", "--encoder", str(run), "--data", str(big), "--out", str(out), *QUIET]) == 0
    from galmo.methods.embeddings.store import read_embeddings

    e = read_embeddings(out)
    assert e.X.shape[0] == 6 and np.isfinite(e.X).all()
    assert e.meta["framing"] == {"framing": "resize", "crop_frac": 1.0, "pxscale": 0.262}


def test_per_file_sources_are_framed_once_from_each_files_pixels(tmp_path):
    from PIL import Image

    from galmo.core.resample import fit_source
    from galmo.sources import open_source
    from galmo.sources.folder import read_image

    rng = np.random.default_rng(5)
    for side in (40, 100, 160):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(tmp_path / f"g{side}.png")
    with pytest.warns(UserWarning, match="mixed sizes 40–160 px"):
        src = open_source(tmp_path)
    assert src.shape == (3, 100, 100)
    with pytest.warns(UserWarning, match="files of 40–160 px resized .* to the model's 32x32; 3 bands averaged"):
        framed, fit = fit_source(src, (1, 32, 32), None, None, 0.5)
    got = fit(framed.read([0, 1, 2]))
    for k, side in enumerate((100, 160, 40)):  # sorted file names: g100, g160, g40
        raw = read_image(tmp_path / f"g{side}.png", 3)
        np.testing.assert_allclose(got[k], frame_images(raw, 32, crop_frac=0.5).mean(0, keepdims=True), atol=1e-6)
    assert framed.catalog is src.catalog and src.shape == (3, 100, 100)  # the opened source is left as it was
