"""Image sources on real files written in the published schemas, including broken ones."""

from __future__ import annotations

import gc
import json
import pickle
import shutil
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image

from galmo.core.catalog import write_catalog
from galmo.core.errors import BadInput, GalmoError
from galmo.core.schema import ANSWER_COLUMNS, GALAXY10_CLASSES, QUESTION_SLICES, cumulative_from_conditional
from galmo.sources import detect_format, open_source, write_rejected
from galmo.sources.summary import summarise, summary_text

DATA = Path(__file__).parent / "data"
SPIRAL = DATA / "abell_2744_spiral_galaxy_f105w.fits.gz"
STATMORPH = DATA / "statmorph_slice.fits"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ================================================================================ file writers
def write_galaxy10(path, n=20, size=64, seed=0, sim=False, chunk=None, **replace):
    """A Galaxy10 DECaLS file (astroNN schema); ``sim`` adds galmo's simulator extras."""
    rng = np.random.default_rng(seed)
    data = {
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "ans": rng.integers(0, 10, n).astype(np.uint8),
        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-30, 30, n),
        "redshift": rng.uniform(0, 0.2, n), "pxscale": np.full(n, 0.262),
    }
    if sim:
        data["id"] = np.array([f"sim{i:05d}" for i in range(n)], dtype="S")
        data["flux"] = rng.normal(0, 1, (n, 3, size, size)).astype(np.float32)
        data["noiseless"] = rng.normal(0, 1, (n, 3, size, size)).astype(np.float32)
    data.update(replace)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if v is not None:
                f.create_dataset(k, data=v, chunks=chunk if k == "images" and chunk else None)
        if sim:
            f.attrs["bands"] = "grz"  # as galmo.simulate writes them
            f.attrs["class_names"] = json.dumps(GALAXY10_CLASSES)
    return data


def random_votes(n, seed=0):
    rng = np.random.default_rng(seed)
    cond = rng.uniform(0.05, 1, (n, 37))
    for a, b in QUESTION_SLICES:
        cond[:, a:b] /= cond[:, a:b].sum(1, keepdims=True)
    return cumulative_from_conditional(cond)


def write_gz2(root, n=6, size=48, seed=0, drop_columns=(), missing_images=(), bad_q1=()):
    """A Kaggle Galaxy Challenge folder: training_solutions_rev1.csv + images_training_rev1/*.jpg."""
    root = Path(root)
    (root / "images_training_rev1").mkdir(parents=True, exist_ok=True)
    ids = 100008 + 7 * np.arange(n)
    votes = random_votes(n, seed)
    df = pd.DataFrame(votes, columns=ANSWER_COLUMNS)
    df.insert(0, "GalaxyID", ids)
    for i in bad_q1:
        df.loc[i, "Class1.1"] += 0.3
    df.drop(columns=list(drop_columns)).to_csv(root / "training_solutions_rev1.csv", index=False)
    rng = np.random.default_rng(seed)
    for k, gid in enumerate(ids):
        if k not in missing_images:
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / "images_training_rev1" / f"{gid}.jpg", quality=95)
    return ids, votes


def write_fits(path, data, headers=None, ext_headers=()):
    """A FITS file: ``data`` is one array (primary HDU) or a list (primary + image extensions)."""
    arrays = data if isinstance(data, list) else [data]
    hdus = [fits.PrimaryHDU(arrays[0])]
    hdus += [fits.ImageHDU(a) for a in arrays[1:]]
    for h, hdr in zip(hdus, [headers or {}, *ext_headers]):
        h.header.update(hdr)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def truncate(path, frac=0.5):
    b = Path(path).read_bytes()
    Path(path).write_bytes(b[: int(len(b) * frac)])


def garbage(path, n=3000, seed=1):
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())


def galaxy_image(size=32, seed=0, bands=1):
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    base = np.exp(-np.hypot(x, y) / (size / 8)) + np.random.default_rng(seed).normal(0, 0.01, (size, size))
    return np.stack([base * (k + 1) for k in range(bands)]).astype(np.float32).squeeze()


# ================================================================================ Galaxy10 HDF5
def test_galaxy10_schema_ids_labels_and_pixels(tmp_path):
    p = tmp_path / "galaxy10.h5"
    d = write_galaxy10(p)
    src = open_source(p)
    assert src.format == "galaxy10_h5" and len(src) == 20 and src.shape == (3, 64, 64)
    assert src.bands == ("g", "r", "z") and src.kinds == ("image",)
    assert src.class_names == GALAXY10_CLASSES
    cat = src.catalog
    assert list(cat["id"][:2]) == ["g10_000000", "g10_000001"] and cat["id"].is_unique
    assert (cat["label"].to_numpy() == d["ans"]).all()
    assert cat["label_name"].iat[3] == GALAXY10_CLASSES[d["ans"][3]]
    np.testing.assert_allclose(cat["ra"], d["ra"])
    # kind 'image': uint8 / 255, channels in band order g, r, z = RGB planes reversed
    x = src.read([7, 2, 7])
    assert x.dtype == np.float32 and x.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(x[1], d["images"][2][..., ::-1].transpose(2, 0, 1) / 255, rtol=1e-6)
    np.testing.assert_array_equal(x[0], x[2])
    assert src.read(4).shape == (1, 3, 64, 64)
    rows = [(pos, im) for pos, im in src.iter_batches(batch_size=8, progress=False)]
    assert [len(p) for p, _ in rows] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate([p for p, _ in rows]), np.arange(20))
    np.testing.assert_allclose(rows[1][1][3], src.read([11])[0])
    with pytest.raises(GalmoError, match="no kind 'flux'"):
        src.read([0], kind="flux")
    src2 = pickle.loads(pickle.dumps(src))  # e.g. a DataLoader worker
    np.testing.assert_array_equal(src2.read([5]), src.read([5]))
    src.close()


def test_galaxy10_simulation_extras_and_truth_merge(tmp_path):
    p = tmp_path / "sims.h5"
    d = write_galaxy10(p, n=12, size=32, sim=True)
    truth = pd.DataFrame({"id": [f"sim{i:05d}" for i in range(12)][::-1], "sersic_n": np.arange(12.0)[::-1],
                          "redshift": np.full(12, -1.0), "class": np.arange(12) % 10})
    write_catalog(truth, tmp_path / "sims.truth.parquet")
    src = open_source(p)
    assert src.kinds == ("image", "flux", "noiseless") and src.bands == ("g", "r", "z")
    assert list(src.catalog["id"][:3]) == ["sim00000", "sim00001", "sim00002"]  # h5 order kept
    np.testing.assert_array_equal(src.catalog["sersic_n"], np.arange(12.0))
    np.testing.assert_allclose(src.catalog["redshift"], d["redshift"])  # the h5 value wins
    np.testing.assert_array_equal(src.read([3, 1], kind="flux"), d["flux"][[3, 1]])
    np.testing.assert_array_equal(src.read([0], kind="noiseless")[0], d["noiseless"][0])


@pytest.mark.parametrize("replace, message", [
    ({"images": None}, r"no dataset 'images' \(found: ans, dec, pxscale, ra, redshift\)"),
    ({"images": np.zeros((20, 64, 3), np.uint8)}, r"dataset 'images' has shape \(20, 64, 3\), expected \(N, H, W, 3\)"),
    ({"ans": np.zeros(19)}, r"dataset 'ans' has shape \(19,\), expected \(20,\)"),
    ({"ans": np.full(20, 12)}, r"dataset 'ans' has 20 values outside -1..9"),
    ({"flux": np.zeros((20, 3, 8, 8), np.float32)}, r"dataset 'flux' has shape \(20, 3, 8, 8\)"),
])
def test_galaxy10_schema_errors_name_file_and_key(tmp_path, replace, message):
    p = tmp_path / "galaxy10.h5"
    write_galaxy10(p, **replace)
    with pytest.raises(GalmoError, match=message) as e:
        open_source(p)
    assert str(e.value).startswith(str(p))


def test_galaxy10_truncated_and_garbage_files(tmp_path):
    p = tmp_path / "cut.h5"
    write_galaxy10(p)
    truncate(p)
    with pytest.raises(GalmoError, match=r"cut\.h5: the file is truncated"):
        open_source(p)
    g = tmp_path / "noise.hdf5"
    garbage(g)
    with pytest.raises(GalmoError, match=r"noise\.hdf5: not an HDF5 file"):
        open_source(g)


def test_galaxy10_iteration_is_lazy(tmp_path):
    """500 × 256² images: iterating must hold about one batch, not the file (98 MB uint8, 393 MB float)."""
    p = tmp_path / "big.h5"
    n, size, batch = 500, 256, 25
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(1, size, size, 3))
        block = np.random.default_rng(0).integers(0, 256, (100, size, size, 3), dtype=np.uint8)
        for s in range(0, n, 100):
            ds[s:s + 100] = block
        f["ans"] = np.zeros(n, np.uint8)
    del block
    gc.collect()
    src = open_source(p)
    tracemalloc.start()
    count, checksum = 0, 0.0
    for pos, images in src.iter_batches(batch_size=batch, progress=False):
        count += len(pos)
        checksum += float(images[:, 0, 0, 0].sum())
        del images
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_batch = batch * 3 * size * size * 4  # 19.7 MB
    assert count == n
    assert peak < 3 * one_batch, f"peak {peak / 2**20:.0f} MiB while iterating"


# ================================================================================ Galaxy Zoo 2
def test_gz2_kaggle_folder(tmp_path):
    ids, votes = write_gz2(tmp_path / "gz2")
    for path in (tmp_path / "gz2", tmp_path / "gz2" / "training_solutions_rev1.csv"):
        src = open_source(path)
        assert src.format == "gz2" and len(src) == 6 and src.shape == (3, 48, 48)
        assert src.bands == ("g", "r", "i") and src.class_names is None
        cat = src.catalog
        assert list(cat["id"]) == [str(i) for i in ids]
        assert (cat["label"] == -1).all()
        np.testing.assert_allclose(cat[ANSWER_COLUMNS].to_numpy(), votes, atol=1e-9)
        im = src.read([2])[0]
        jpg = np.asarray(Image.open(cat["ref"].iat[2]))
        np.testing.assert_allclose(im, jpg[..., ::-1].transpose(2, 0, 1) / 255, atol=1e-6)
    assert summarise(src)["vote_columns"] == 37


def test_gz2_missing_columns_are_listed(tmp_path):
    write_gz2(tmp_path, drop_columns=["Class11.6", "Class3.2"])
    with pytest.raises(GalmoError, match=r"training_solutions_rev1\.csv: .*missing columns Class3\.2, Class11\.6"):
        open_source(tmp_path)


def test_gz2_missing_images_and_broken_tree(tmp_path):
    ids, _ = write_gz2(tmp_path, missing_images=[1], bad_q1=[4])
    with pytest.raises(GalmoError, match=rf"2 of 6 galaxies have no image .*GalaxyID {ids[1]}.*on_error='skip'"):
        open_source(tmp_path)
    src = open_source(tmp_path, on_error="skip")
    assert list(src.catalog["id"]) == [str(i) for i in ids[[0, 2, 3, 5]]]
    reasons = dict(src.rejected)
    assert reasons[str(tmp_path / "images_training_rev1" / f"{ids[1]}.jpg")] == "image file not found"
    assert reasons[str(tmp_path / "images_training_rev1" / f"{ids[4]}.jpg")].startswith("Q1 fractions sum to 1.3")
    out = pd.read_csv(write_rejected(src, tmp_path / "run"))
    assert list(out.columns) == ["ref", "reason"] and len(out) == 2


# ================================================================================ FITS
def test_fits_single_image_with_nans(tmp_path):
    img = galaxy_image(32)
    img[:4, :8] = np.nan
    img[10, 10] = np.inf
    p = write_fits(tmp_path / "one.fits", img, {"FILTER": "F105W"})
    src = open_source(p)
    assert src.format == "fits" and src.shape == (1, 32, 32) and src.bands == ("F105W",)
    assert src.catalog["id"].iat[0] == "one"
    assert src.catalog["nan_frac"].iat[0] == pytest.approx(33 / 1024)
    flux = src.read([0], kind="flux")[0, 0]
    finite = np.isfinite(img)
    np.testing.assert_array_equal(flux[finite], img[finite])
    assert np.all(flux[~finite] == np.median(img[finite]))
    image = src.read([0])[0, 0]
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert image[16, 16] > 0.9 and image[0, 0] == pytest.approx(np.median(image[finite]))
    d = summarise(src)
    assert d["nan_images"] == 1 and d["nan_frac"] == pytest.approx(33 / 1024)


def test_fits_cube_and_multi_extension_bands(tmp_path):
    cube = np.stack([galaxy_image(24, k) for k in range(3)])
    write_fits(tmp_path / "a_cube.fits", cube, {"BANDS": "g,r,z"})
    src = open_source(tmp_path / "a_cube.fits")
    assert src.shape == (3, 24, 24) and src.bands == ("g", "r", "z")
    np.testing.assert_array_equal(src.read([0], kind="flux")[0], cube)
    # one band per extension + a mask extension that must be ignored
    planes = [galaxy_image(24, k) for k in range(3)]
    mask = np.zeros((24, 24), np.int16)
    write_fits(tmp_path / "b_mef.fits.gz", [planes[0], planes[1], planes[2], mask], {"FILTER": "g"},
               [{"FILTER": "r"}, {"FILTER": "z"}, {"EXTNAME": "MASK"}])
    src = open_source(tmp_path / "b_mef.fits.gz")
    assert src.bands == ("g", "r", "z") and src.shape == (3, 24, 24)
    np.testing.assert_array_equal(src.read([0], kind="flux")[0], np.stack(planes))
    # both in one folder: same band count, ids from the file stems
    src = open_source(tmp_path)
    assert list(src.catalog["id"]) == ["a_cube", "b_mef"]


def test_fits_broken_files_raise_or_are_skipped(tmp_path):
    write_fits(tmp_path / "good.fits", galaxy_image(32))
    nan_only = write_fits(tmp_path / "nan_only.fits", np.full((32, 32), np.nan, np.float32))
    cut = write_fits(tmp_path / "truncated.fits", galaxy_image(64))
    truncate(cut)
    junk = tmp_path / "junk.fits"
    garbage(junk)
    cases = {nan_only: "all pixels are NaN/Inf", cut: "file is truncated", junk: "not a FITS file"}
    for path, why in cases.items():
        with pytest.raises(BadInput, match=why) as e:
            open_source(path)
        assert e.value.path == str(path) and str(e.value).startswith(str(path))
    with pytest.raises(BadInput, match="junk.fits: not a FITS file"):
        open_source(tmp_path)  # raise mode: the first bad file (sorted) stops it
    src = open_source(tmp_path, on_error="skip")
    assert list(src.catalog["id"]) == ["good"]
    assert {r: w for r, w in src.rejected}.keys() == {str(p) for p in cases}
    for _ref, reason in src.rejected:
        assert any(w in reason for w in cases.values())
    assert summarise(src)["rejected"] == 3
    out = pd.read_csv(write_rejected(src, tmp_path / "run"))
    assert sorted(out["ref"]) == sorted(str(p) for p in cases)


def test_fits_band_count_mismatch(tmp_path):
    write_fits(tmp_path / "a.fits", galaxy_image(16))
    write_fits(tmp_path / "b.fits", np.stack([galaxy_image(16)] * 3))
    with pytest.raises(BadInput, match=r"b\.fits: has 3 bands, expected 1 like a\.fits"):
        open_source(tmp_path)
    assert len(open_source(tmp_path, on_error="skip")) == 1


def test_fits_different_sizes_are_resized_and_said(tmp_path):
    write_fits(tmp_path / "a.fits", galaxy_image(40))
    write_fits(tmp_path / "b.fits", galaxy_image(20))
    with pytest.warns(UserWarning, match="mixed sizes 20–40 px: resized to the median 30 px"):
        src = open_source(tmp_path)  # the median of the files, not the first file's 40 px
    assert src.read([0, 1]).shape == (2, 1, 30, 30)
    assert list(src.catalog["orig_height"]) == [40, 20]
    with pytest.warns(UserWarning, match="2 of 2 images are not 24x24 pixels: resized"):
        assert open_source(tmp_path, size=24).shape == (1, 24, 24)  # the caller's size wins
    src = open_source(tmp_path, size=24, fit="crop")
    x = src.read([0, 1], kind="flux")
    assert x.shape == (2, 1, 24, 24)
    np.testing.assert_array_equal(x[0, 0], galaxy_image(40)[8:32, 8:32])  # centre crop keeps pixels
    assert (x[1, 0, :2] == 0).all()  # smaller image zero-padded
    assert any("24x24" in n for n in summarise(src)["notes"])


def test_real_hst_cutouts(tmp_path):
    src = open_source(SPIRAL)
    assert src.shape == (1, 150, 150) and src.catalog["id"].iat[0] == "abell_2744_spiral_galaxy_f105w"
    raw = fits.getdata(SPIRAL).astype(np.float32)
    np.testing.assert_array_equal(src.read([0], kind="flux")[0, 0], raw)
    img = src.read([0])[0, 0]
    assert 0 <= img.min() and img.max() <= 1
    assert img[70:80, 70:80].mean() > img[:10, :10].mean() + 0.2  # the galaxy is brighter than the sky
    # statmorph's file: image + int32 segmentation map + int16 mask → one band
    src = open_source(STATMORPH)
    assert src.shape == (1, 162, 162)
    np.testing.assert_array_equal(src.read([0], kind="flux")[0, 0], fits.getdata(STATMORPH, 0))
    # NaN holes in a real image: counted, filled, the rest untouched
    holed = raw.copy()
    holed[60:70, 60:90] = np.nan
    write_fits(tmp_path / "holed.fits", holed)
    shutil.copy(SPIRAL, tmp_path / "spiral.fits.gz")
    src = open_source(tmp_path)
    assert list(src.catalog["id"]) == ["holed", "spiral"]
    assert src.catalog["nan_frac"].tolist() == pytest.approx([300 / 150**2, 0.0])
    flux = src.read([0], kind="flux")[0, 0]
    assert np.isfinite(flux).all() and flux[65, 65] == pytest.approx(np.nanmedian(holed))
    np.testing.assert_array_equal(flux[:60], raw[:60])


# ================================================================================ PNG / JPEG folders
def _png_folder(root, n=5, size=24, mode="RGB"):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays = []
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3) if mode == "RGB" else (size, size), dtype=np.uint8)
        Image.fromarray(a).save(root / f"gal_{i}.png")
        arrays.append(a)
    return arrays


def test_png_folder_with_label_csv(tmp_path):
    arrays = _png_folder(tmp_path / "imgs")
    pd.DataFrame({"filename": ["gal_0.png", "gal_1.png", "gal_3.png", "gal_9.png"],
                  "label": ["spiral", "elliptical", "spiral", "merger"],
                  "mag_r": [17.1, 18.0, 16.5, 19.0]}).to_csv(tmp_path / "labels.csv", index=False)
    src = open_source(tmp_path / "imgs", labels=tmp_path / "labels.csv")
    assert src.format == "folder" and src.shape == (3, 24, 24) and src.bands == ("blue", "green", "red")
    assert src.class_names == ["elliptical", "merger", "spiral"]
    cat = src.catalog
    assert list(cat["id"]) == [f"gal_{i}" for i in range(5)]
    assert list(cat["label"]) == [2, 0, -1, 2, -1] and cat["label_name"].iat[1] == "elliptical"
    assert cat["mag_r"].iat[3] == 16.5 and np.isnan(cat["mag_r"].iat[2])
    np.testing.assert_allclose(src.read([4])[0], arrays[4][..., ::-1].transpose(2, 0, 1) / 255, atol=1e-6)
    assert any("match no image" in n for n in src.notes)  # gal_9.png
    assert summarise(src)["class_counts"] == {"elliptical": 1, "merger": 0, "spiral": 2, "unlabelled": 2}


def test_grey_pngs_and_class_subfolders(tmp_path):
    _png_folder(tmp_path / "train" / "edge_on", n=2, mode="L")
    _png_folder(tmp_path / "train" / "bar", n=3, mode="L")
    src = open_source(tmp_path / "train")
    assert src.shape == (1, 24, 24) and src.bands == ("grey",)
    assert src.class_names == ["bar", "edge_on"]
    assert list(src.catalog["id"][:2]) == ["bar/gal_0", "bar/gal_1"]
    assert list(src.catalog["label"]) == [0, 0, 0, 1, 1]


def test_label_csv_problems(tmp_path):
    _png_folder(tmp_path / "imgs", n=2)
    pd.DataFrame({"filename": ["gal_0.png"], "class": ["x"]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(GalmoError, match=r"l\.csv: label file has no 'label' column \(columns: filename, class\)"):
        open_source(tmp_path / "imgs", labels=tmp_path / "l.csv")
    pd.DataFrame({"id": ["gal_0"], "label": [1]}).to_csv(tmp_path / "ok.csv", index=False)
    src = open_source(tmp_path / "imgs", labels=tmp_path / "ok.csv")
    assert list(src.catalog["label"]) == [1, -1] and src.class_names == ["0", "1"]


def test_broken_pngs(tmp_path):
    _png_folder(tmp_path, n=3)
    truncate(tmp_path / "gal_1.png", 0.4)  # the header survives: found when decoding
    garbage(tmp_path / "gal_2.png")  # found when opening
    with pytest.raises(BadInput, match=r"gal_2\.png: not a readable PNG/JPEG image"):
        open_source(tmp_path)
    src = open_source(tmp_path, on_error="skip")
    assert list(src.catalog["id"]) == ["gal_0", "gal_1"]
    with pytest.raises(BadInput, match=r"gal_1\.png: cannot decode image"):
        src.read([1])
    batches = list(src.iter_batches(batch_size=8, progress=False))
    assert len(batches) == 1 and list(batches[0][0]) == [0] and batches[0][1].shape == (1, 3, 24, 24)
    assert [Path(r).name for r, _ in src.rejected] == ["gal_2.png", "gal_1.png"]
    out = pd.read_csv(write_rejected(src, tmp_path / "run"))
    assert len(out) == 2 and out["reason"].str.len().min() > 10


def test_a_bad_item_is_listed_once_however_often_it_is_read(tmp_path):
    _png_folder(tmp_path, n=4)
    truncate(tmp_path / "gal_1.png", 0.4)  # found while decoding, on every pass
    truncate(tmp_path / "gal_3.png", 0.4)
    src = open_source(tmp_path, on_error="skip")
    for _ in range(3):
        rows = np.concatenate([r for r, _ in src.iter_batches(batch_size=2, progress=False)])
        assert list(rows) == [0, 2]
    assert [Path(r).name for r, _ in src.rejected] == ["gal_1.png", "gal_3.png"]
    assert len(pd.read_csv(write_rejected(src, tmp_path / "run"))) == 2
    src.rejected = [("x", "first"), ("x", "second"), ("y", "other")]  # assigning keeps the first reason
    assert src.rejected == [("x", "first"), ("y", "other")]


# ================================================================================ dispatch
def test_empty_unknown_and_missing_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalmoError, match=r"no images found in .*empty \(looked for \*\.fits, .*\*\.png"):
        open_source(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GalmoError, match=r"notes\.txt: unknown input format; supported: a Galaxy10"):
        open_source(tmp_path / "notes.txt")
    with pytest.raises(GalmoError, match="no such file or directory"):
        open_source(tmp_path / "nope.h5")
    write_galaxy10(tmp_path / "empty" / "g.h5", n=2, size=8)
    with pytest.raises(GalmoError, match=r"did you mean .*g\.h5"):
        open_source(tmp_path / "empty")


def test_catalog_file_source(tmp_path):
    (tmp_path / "cut").mkdir()
    for i in range(3):
        write_fits(tmp_path / "cut" / f"f{i}.fits", galaxy_image(16, i))
    cat = pd.DataFrame({"id": ["obj-b", "obj-a", "obj-c", "obj-d"],
                        "path": ["cut/f0.fits", "cut/f1.fits", "cut/f2.fits", "cut/missing.fits"],
                        "label": ["S", "E", "S", "E"], "z": [0.1, 0.2, 0.3, 0.4]})
    write_catalog(cat, tmp_path / "cat.parquet")
    assert detect_format(tmp_path / "cat.parquet") == "catalog"
    with pytest.raises(BadInput, match=r"missing\.fits: file not found \(catalog cat\.parquet, id obj-d\)"):
        open_source(tmp_path / "cat.parquet")
    src = open_source(tmp_path / "cat.parquet", on_error="skip")
    assert src.format == "catalog+fits" and len(src) == 3
    assert list(src.catalog["id"]) == ["obj-b", "obj-a", "obj-c"] and list(src.catalog["z"]) == [0.1, 0.2, 0.3]
    assert src.class_names == ["E", "S"] and list(src.catalog["label"]) == [1, 0, 1]
    np.testing.assert_array_equal(src.read([1], kind="flux")[0, 0], galaxy_image(16, 1))
    assert src.rejected[0][1] == "file not found"
    # the same catalog as a FITS table (FITS files as input must not be mistaken for images)
    write_catalog(cat.iloc[:3], tmp_path / "cat.fits")
    assert detect_format(tmp_path / "cat.fits") == "catalog"
    assert list(open_source(tmp_path / "cat.fits").catalog["id"]) == ["obj-b", "obj-a", "obj-c"]
    write_catalog(cat.drop(columns="path"), tmp_path / "nopath.csv")
    with pytest.raises(GalmoError, match=r"nopath\.csv: catalog has no 'path' or 'file' column"):
        open_source(tmp_path / "nopath.csv")


def test_summary_text(tmp_path):
    write_galaxy10(tmp_path / "g.h5", n=10, size=16)
    d = summarise(open_source(tmp_path / "g.h5"))
    assert d["count"] == 10 and d["shape"] == [3, 16, 16] and sum(d["class_counts"].values()) == 10
    assert d["vote_columns"] == 0 and d["label_columns"] == ["label", "label_name"]
    assert d["nan_frac"] == 0.0
    text = summary_text(d)
    assert "galaxy10_h5" in text and "3 x 16 x 16" in text and "Round Smooth" in text
    json.dumps(d)  # JSON-ready


# ======================================================== issue 11: declared sizes, mixed sizes, duplicate ids
def header_only_fits(path, naxis=(100000, 100000), bitpix=-32):
    """A FITS file that is a header alone, declaring ``naxis`` (NAXIS1, NAXIS2, ...) pixels."""
    cards = ["SIMPLE  =                    T", f"BITPIX  = {bitpix:>20}", f"NAXIS   = {len(naxis):>20}"]
    cards += [f"NAXIS{k + 1:<3}= {n:>20}" for k, n in enumerate(naxis)] + ["END"]
    Path(path).write_bytes("".join(c.ljust(80) for c in cards).ljust(2880).encode("ascii"))
    return path


def header_only_png(path, width, height):
    """A PNG whose IHDR declares ``width`` x ``height`` RGB pixels, with next to no image data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                           + chunk(b"IEND", b""))
    return path


def test_a_fits_header_declaring_more_than_the_file_holds_is_refused_before_allocating(tmp_path, capsys):
    import gzip

    from galmo.cli import main

    big = header_only_fits(tmp_path / "big.fits")  # 100000 x 100000 float32 = 40 GB declared, 2880 bytes
    msg = "file is truncated: header declares 100000×100000 pixels (40.0 GB) but the file holds 2,880 bytes"
    with pytest.raises(BadInput) as e:
        open_source(big)
    assert str(e.value) == f"{big}: {msg}"
    assert main(["info", str(big)]) == 2
    assert capsys.readouterr().err.strip() == f"galmo: error: {big}: {msg}"
    gz = tmp_path / "big.fits.gz"  # compressed: counted by streaming, never held
    gz.write_bytes(gzip.compress(big.read_bytes()))
    with pytest.raises(BadInput, match=r"big\.fits\.gz: file is truncated: header declares 100000×100000 pixels"):
        open_source(gz)
    cube = header_only_fits(tmp_path / "cube.fits", naxis=(64, 64, 3), bitpix=16)
    with pytest.raises(BadInput, match=r"header declares 3×64×64 pixels \(24\.6 kB\) but the file holds 2,880"):
        open_source(cube)
    # in a folder: the others are read, the liar is rejected with the same reason
    (tmp_path / "folder").mkdir()
    write_fits(tmp_path / "folder" / "good.fits", galaxy_image(16))
    liar = shutil.copy(big, tmp_path / "folder" / "liar.fits")
    src = open_source(tmp_path / "folder", on_error="skip")
    assert list(src.catalog["id"]) == ["good"]
    assert src.rejected == [(str(liar), msg)]


def test_png_and_hdf5_images_larger_than_max_side_are_refused(tmp_path, capsys):
    from galmo.cli import main
    from galmo.sources.base import MAX_SIDE

    bomb = header_only_png(tmp_path / "bomb.png", 100000, 100000)  # Pillow's decompression-bomb refusal
    with pytest.raises(BadInput, match=r"bomb\.png: header declares 100000×100000 pixels \(120\.0 GB as float32 "
                                       r"RGB\) but the file holds \d\d,?\d* bytes; galmo reads cutouts of at most "
                                       r"20000 px"):
        open_source(bomb)
    assert main(["info", str(bomb)]) == 2
    assert capsys.readouterr().err.startswith(f"galmo: error: {bomb}: header declares 100000×100000 pixels")
    wide = header_only_png(tmp_path / "wide.png", MAX_SIDE + 1, 10)  # under Pillow's limit, over ours
    with pytest.raises(BadInput, match=rf"wide\.png: header declares 10×{MAX_SIDE + 1} pixels"):
        open_source(wide)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    src = open_source(tmp_path, on_error="skip")
    assert list(src.catalog["id"]) == ["ok"] and sorted(Path(r).name for r, _ in src.rejected) == ["bomb.png",
                                                                                                    "wide.png"]
    h5 = tmp_path / "huge.h5"  # declared, never written: h5py allocates nothing, galmo must not either
    with h5py.File(h5, "w") as f:
        f.create_dataset("images", (2, 30000, 30000, 3), np.uint8)
        f["ans"] = np.zeros(2, np.uint8)
    assert h5.stat().st_size < 10_000
    with pytest.raises(GalmoError, match=r"huge\.h5: dataset 'images' declares 30000×30000-pixel images "
                                         r"\(10\.8 GB each as float32\); galmo reads cutouts of at most 20000"):
        open_source(h5)


def test_a_corrupt_hdf5_chunk_is_a_clear_error_for_its_rows(tmp_path):
    p = tmp_path / "chunked.h5"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    with h5py.File(p, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, 16, 16, 3), compression="gzip")
        f["ans"] = np.zeros(8, np.uint8)
        info = f["images"].id.get_chunk_info(3)  # row 3's compressed chunk
    raw = bytearray(p.read_bytes())
    raw[info.byte_offset:info.byte_offset + info.size] = bytes(info.size)  # zeroed: inflate fails
    p.write_bytes(bytes(raw))
    src = open_source(p)
    np.testing.assert_allclose(src.read([2])[0], images[2][..., ::-1].transpose(2, 0, 1) / 255, atol=1e-6)
    with pytest.raises(BadInput, match=r"chunked\.h5: cannot read rows 3\.\.3 of dataset 'images'"):
        src.read([3])
    src = open_source(p, on_error="skip")
    rows = [r.tolist() for r, _ in src.iter_batches(batch_size=4, progress=False)]
    assert rows == [[0, 1, 2], [4, 5, 6, 7]]
    assert [r for r, _ in src.rejected] == ["chunked.h5#3"]


def test_mixed_size_png_folder_goes_to_the_median_size_read_from_headers(tmp_path, monkeypatch):
    import warnings

    from galmo.sources import folder
    from galmo.sources.base import common_size

    rng = np.random.default_rng(5)
    sizes = {"a.png": 64, "b.png": 16, "c.png": 32}  # sorts first: the largest; the median is c's 32 px
    arrays = {}
    for name, s in sizes.items():
        arrays[name] = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
        Image.fromarray(arrays[name]).save(tmp_path / name)
    decoded, real_read = [], folder.read_image
    monkeypatch.setattr(folder, "read_image", lambda p, n: decoded.append(p) or real_read(p, n))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = open_source(tmp_path)
        src.read([0, 1, 2])
        src.read([0])
    assert decoded == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png", "a.png")]  # none while opening
    said = [str(w.message) for w in caught if "mixed sizes" in str(w.message)]
    assert said == [f"{tmp_path}: mixed sizes 16–64 px: resized to the median 32 px (2 of 3 images; "
                    f"centre-crop to the aspect ratio, then bilinear)"]
    assert src.shape == (3, 32, 32)
    assert list(src.catalog["orig_height"]) == [64, 16, 32]
    x = src.read([0, 1, 2])
    np.testing.assert_allclose(x[2], arrays["c.png"][..., ::-1].transpose(2, 0, 1) / 255, atol=1e-6)  # untouched
    np.testing.assert_allclose(x[0].mean(), arrays["a.png"].mean() / 255, atol=0.01)  # downsampled, same level
    assert open_source(tmp_path, size=64).shape == (3, 64, 64)  # a caller's size (a model's input) wins
    assert common_size([10, 21], [40, 40])[0] == (16, 40)  # median per axis, rounded half up


@pytest.mark.parametrize("reader", ["catalog", "gz2", "hdf5", "truth"])
def test_every_reader_refuses_duplicate_ids(tmp_path, reader):
    if reader == "catalog":
        for i in range(2):
            write_fits(tmp_path / f"f{i}.fits", galaxy_image(16, i))
        pd.DataFrame({"id": ["x", "x", "y"], "path": ["f0.fits", "f1.fits", "f0.fits"]}).to_csv(
            tmp_path / "cat.csv", index=False)
        path, msg = tmp_path / "cat.csv", r"cat\.csv: catalog has 1 duplicate ids \(e\.g\. 'x'\)"
    elif reader == "gz2":
        write_gz2(tmp_path, n=4)
        csv = tmp_path / "training_solutions_rev1.csv"
        df = pd.read_csv(csv)
        df.loc[2, "GalaxyID"] = df.loc[0, "GalaxyID"]
        df.to_csv(csv, index=False)
        path = tmp_path
        msg = rf"training_solutions_rev1\.csv: catalog has 1 duplicate ids \(e\.g\. '{df.GalaxyID[0]}'\)"
    elif reader == "hdf5":
        path = tmp_path / "g.h5"
        write_galaxy10(path, n=6, size=8, id=np.array([b"a", b"b", b"a", b"c", b"b", b"d"]))
        msg = r"g\.h5: dataset 'id' has 2 duplicate ids \(e\.g\. 'a'\)"
    else:
        path = tmp_path / "s.h5"
        write_galaxy10(path, n=3, size=8, sim=True)
        pd.DataFrame({"id": ["sim00000", "sim00000", "sim00001"], "z": [1.0, 2.0, 3.0]}).to_parquet(
            tmp_path / "s.truth.parquet")
        msg = r"s\.truth\.parquet: catalog has 1 duplicate ids \(e\.g\. 'sim00000'\)"
    with pytest.raises(GalmoError, match=msg):
        open_source(path)


def test_take_is_a_source_of_the_chosen_rows_and_skips_like_its_parent(tmp_path):
    root = tmp_path / "imgs"
    _png_folder(root, n=6)
    good = (root / "gal_0.png").read_bytes()
    (root / "bad.png").write_bytes(good[:len(good) // 2])  # the header reads, the pixels do not
    src = open_source(root, on_error="skip")
    bad = int(np.flatnonzero(src.catalog["ref"].astype(str).str.endswith("bad.png"))[0])
    good = [i for i in range(len(src)) if i != bad]
    rows = np.array([good[4], bad, good[0], good[2]])
    sub = src.take(rows)
    assert len(sub) == 4 and sub.shape == src.shape
    assert sub.catalog["id"].tolist() == src.catalog["id"].iloc[rows].tolist()
    np.testing.assert_array_equal(sub.read([0, 2]), src.read([good[4], good[0]]))
    got = [(p, x) for p, x in sub.iter_batches(batch_size=3, progress=False)]
    assert np.concatenate([p for p, _ in got]).tolist() == [0, 2, 3]  # the bad row left out
    np.testing.assert_array_equal(np.concatenate([x for _, x in got]), src.read([good[4], good[0], good[2]]))
    assert [Path(r).name for r, _ in sub.rejected] == ["bad.png"] == [Path(r).name for r, _ in src.rejected]
