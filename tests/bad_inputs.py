"""The bad-input matrix of issue 11: builders of bad files, the verbs' command lines, and the verdict.

Shared by ``tests/test_bad_input_matrix.py`` (one parametrised test per verb × bad input) and
``benchmarks/bad_input_matrix.py`` (the same matrix, counted). Everything is built from one tiny
simulated sample (40 galaxies at 32 px): good PNG/JPEG/FITS folders made from its images, a
simple_cnn run trained on it and EfficientNet-Lite0 embeddings of the good PNG folder.

A case's verdict (:func:`verdict`):

* ``clean``: exit 2, stderr starts with ``galmo: error:`` and names the user's file, nothing
  half-written (no temp-named file, no final output);
* ``traceback``: an exception escaped ``galmo.cli.main``;
* ``silent``: exit 0 without an error;
* ``unnamed``: the error does not name the bad file; ``leftover``: a temp file or a final output
  was left behind; ``other``: any other exit status (argparse usage errors included).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_SIMS, SIZE = 40, 32
N_PER_CLASS = 6  # good images per class folder (two classes)
CLASSES = ("Round", "Spiral")
SIM_CLASSES = {"Round Smooth": 1, "Unbarred Tight Spiral": 1}  # two classes: splits of 40 stay stratifiable
DEVICE = ["--device", "cpu"]

# verbs reading a source, and the bad inputs given as that source
VERBS = ("info", "show", "cluster", "train", "predict", "evaluate", "pretrain", "embed",
         "similar", "outliers", "probe")
EMB_VERBS = ("similar", "outliers", "probe")  # they read --emb (made from the good PNG folder)
ON_ERROR_VERBS = ("info", "show", "cluster", "train", "predict", "pretrain", "embed")
OUT_VERBS = VERBS[1:] + ("simulate",)  # every verb with --out (info has none)
FILE_OUT_VERBS = ("show", "predict", "embed", "similar", "probe", "simulate")  # --out is one file
DATA_CASES = ("h5_truncated", "h5_wrong_keys", "h5_wrong_dtype", "h5_wrong_shape", "empty_folder",
              "png_one_corrupt", "jpeg_zero_bytes", "fits_all_nan", "fits_1d", "fits_huge_header",
              "catalog_no_id", "catalog_dup_ids", "catalog_missing_file", "catalog_folder_for_file")
OUT_CASES = ("out_under_file", "out_is_folder")
# with --on-error skip the good items are processed and rejected.csv names the bad one
SKIP_CASES = ("png_one_corrupt", "jpeg_zero_bytes", "fits_all_nan", "fits_1d", "catalog_missing_file",
              "catalog_folder_for_file")
SUBPROCESS_CASES = ("fits_huge_header",)  # may try to allocate 37 GiB: only under RLIMIT_AS
MEMORY_LIMIT = 6 * 2**30


def matrix() -> list[tuple[str, str]]:
    """Every (verb, case) that applies."""
    cells = [(v, c) for v in VERBS for c in DATA_CASES]
    cells += [(v, "out_under_file") for v in OUT_VERBS]
    cells += [(v, "out_is_folder") for v in FILE_OUT_VERBS]
    return cells


# ====================================================================== the good assets
@dataclass
class Assets:
    root: Path
    sims: Path
    png: Path  # class sub-folders Round/, Spiral/ of 32 px PNGs
    jpg: Path  # the same images as JPEG (same ids)
    fits: Path  # flat folder of 3-band 32 px FITS cubes
    run: Path | None = None  # simple_cnn trained on the sims
    emb: Path | None = None  # Lite0 embeddings of the PNG folder
    first_id: str = ""
    extra: dict = field(default_factory=dict)


def build_assets(root, models: bool = True) -> Assets:
    """The good sample, folders made from it, and (``models``) a trained run and embeddings."""
    from galmo.simulate import simulate
    from galmo.sources import open_source

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sims = simulate(n=N_SIMS, size=SIZE, seed=0, out=root / "sims.h5", workers=1, progress=False,
                    class_weights=SIM_CLASSES)
    src = open_source(sims)
    images = src.read(np.arange(2 * N_PER_CLASS), kind="image")
    flux = src.read(np.arange(2 * N_PER_CLASS), kind="flux")
    a = Assets(root, sims, root / "good_png", root / "good_jpg", root / "good_fits")
    _write_class_folders(a.png, images, "png")
    _write_class_folders(a.jpg, images, "jpg")
    _write_fits_folder(a.fits, flux)
    if models:
        _build_models(a)
    return a


def _names(k: int) -> tuple[str, str]:
    return CLASSES[k // N_PER_CLASS], f"g{k:03d}"


def _write_class_folders(folder: Path, images: np.ndarray, ext: str) -> None:
    from PIL import Image

    for k, im in enumerate(images):
        cls, name = _names(k)
        (folder / cls).mkdir(parents=True, exist_ok=True)
        rgb = (np.clip(im[::-1].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / cls / f"{name}.{ext}")


def _write_fits_folder(folder: Path, flux: np.ndarray) -> None:
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    for k, cube in enumerate(flux):
        hdu = fits.PrimaryHDU(cube.astype(np.float32))
        hdu.header["BANDS"] = "g,r,z"
        hdu.writeto(folder / f"g{k:03d}.fits")


def _build_models(a: Assets) -> None:
    from galmo.cli import main

    a.run, a.emb = a.root / "run", a.root / "emb.parquet"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["train", "--data", str(a.sims), "--out", str(a.run), "--model", "simple_cnn", "--width", "4",
                   "--epochs", "1", "--batch-size", "16", "--no-progress", "--no-augment", *DEVICE])
        assert rc == 0, "training the fixture model failed"
        rc = main(["embed", "--data", str(a.png), "--out", str(a.emb), "--image-size", "32", "--no-progress",
                   *DEVICE])
        assert rc == 0, "embedding the fixture folder failed"
    import pandas as pd

    a.first_id = str(pd.read_parquet(a.emb, columns=["id"])["id"].iloc[0])


# ====================================================================== the bad inputs
def make_case(case: str, a: Assets, where) -> tuple[Path, list[Path]]:
    """Build bad input ``case`` under ``where``: (the path given as the source, the paths an error
    may name: the bad file itself or the source that holds it)."""
    where = Path(where)
    where.mkdir(parents=True, exist_ok=True)
    return BUILDERS[case](a, where)


def _h5(path: Path, **datasets) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


def h5_truncated(a, w):
    data = a.sims.read_bytes()
    p = w / "truncated.h5"
    p.write_bytes(data[: len(data) // 3])
    return p, [p]


def h5_wrong_keys(a, w):
    p = _h5(w / "wrong_keys.h5", pictures=np.zeros((4, SIZE, SIZE, 3), np.uint8), labels=np.zeros(4, np.int64))
    return p, [p]


def h5_wrong_dtype(a, w):
    p = _h5(w / "wrong_dtype.h5", images=np.zeros((4, SIZE, SIZE, 3), np.int64), ans=np.zeros(4, np.int64))
    return p, [p]


def h5_wrong_shape(a, w):
    p = _h5(w / "wrong_shape.h5", images=np.zeros((4, SIZE, SIZE), np.uint8), ans=np.zeros(4, np.int64))
    return p, [p]


def empty_folder(a, w):
    p = w / "empty"
    p.mkdir()
    return p, [p]


def png_one_corrupt(a, w):
    """A copy of the good PNG folder with one file truncated after its header (opens, does not decode)."""
    p = w / "png"
    shutil.copytree(a.png, p)
    bad = p / CLASSES[1] / "g007.png"
    bad.write_bytes(bad.read_bytes()[:60])
    return p, [bad]


def jpeg_zero_bytes(a, w):
    p = w / "jpg"
    shutil.copytree(a.jpg, p)
    bad = p / CLASSES[0] / "zero.jpg"
    bad.write_bytes(b"")
    return p, [bad]


def _fits_folder_with(a, w, name: str, data, header: dict | None = None):
    from astropy.io import fits

    p = w / "fits"
    shutil.copytree(a.fits, p)
    bad = p / name
    hdu = fits.PrimaryHDU(data)
    for k, v in (header or {}).items():
        hdu.header[k] = v
    hdu.writeto(bad)
    return p, [bad]


def fits_all_nan(a, w):
    return _fits_folder_with(a, w, "g900_nan.fits", np.full((3, SIZE, SIZE), np.nan, np.float32), {"BANDS": "g,r,z"})


def fits_1d(a, w):
    return _fits_folder_with(a, w, "g901_1d.fits", np.arange(SIZE, dtype=np.float32))


def fits_huge_header(a, w):
    """A FITS file whose header claims 100000 x 100000 float32 pixels (37 GiB) but holds no data."""
    p = w / "fits"
    shutil.copytree(a.fits, p)
    bad = p / "g902_huge.fits"
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    2",
             "NAXIS1  =               100000", "NAXIS2  =               100000", "END"]
    bad.write_bytes("".join(c.ljust(80) for c in cards).ljust(2880).encode("ascii"))
    return p, [bad]


def _catalog(w: Path, a, rows: list[dict]) -> Path:
    import pandas as pd

    p = w / "catalog.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def _good_rows(a) -> list[dict]:
    return [{"id": f"{_names(k)[1]}", "path": str(a.png / _names(k)[0] / f"{_names(k)[1]}.png"),
             "label": _names(k)[0]} for k in range(2 * N_PER_CLASS)]


def catalog_no_id(a, w):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in _good_rows(a)]
    p = _catalog(w, a, rows)
    return p, [p]


def catalog_dup_ids(a, w):
    rows = _good_rows(a)
    rows[3]["id"] = rows[2]["id"]
    p = _catalog(w, a, rows)
    return p, [p]


def catalog_missing_file(a, w):
    rows = _good_rows(a)
    rows[4]["path"] = str(w / "gone.png")
    p = _catalog(w, a, rows)
    return p, [w / "gone.png"]


def catalog_folder_for_file(a, w):
    rows = _good_rows(a)
    folder = w / "a_folder.png"
    folder.mkdir()
    rows[5]["path"] = str(folder)
    p = _catalog(w, a, rows)
    return p, [folder]


BUILDERS = {name: globals()[name] for name in DATA_CASES}


# ====================================================================== the command lines
def command(verb: str, a: Assets, data: Path, out: Path) -> list[str]:
    """``galmo VERB`` on source ``data`` writing to ``out`` (a file or a run folder: see :func:`out_path`)."""
    d, o = str(data), str(out)
    quiet = ["--no-progress", *DEVICE]
    return {
        "info": ["info", d],
        "show": ["show", d, "--out", o, "--n", "64"],
        "cluster": ["cluster", "--data", d, "--out", o, "--k", "2", "--members", "kmeans", "--image-size", "32",
                    "--no-invariant", "--no-graph", "--morph-per-group", "0", "--batch-size", "16", *quiet],
        "train": ["train", "--data", d, "--out", o, "--model", "simple_cnn", "--width", "4", "--epochs", "1",
                  "--batch-size", "16", "--val-frac", "0.2", "--test-frac", "0.25", "--no-augment", *quiet],
        "predict": ["predict", "--run", str(a.run), "--data", d, "--out", o, *quiet],
        "evaluate": ["evaluate", "--run", str(a.run), "--data", d, "--split", "all", "--out", o, *quiet],
        "pretrain": ["pretrain", "--method", "astropt", "--data", d, "--out", o, "--epochs", "1", "--image-size", "32", "--batch-size",
                     "16", *quiet],
        "embed": ["embed", "--data", d, "--out", o, "--image-size", "32", "--batch-size", "16", *quiet],
        "similar": ["similar", "--emb", str(a.emb), "--id", a.first_id, "--data", d, "--out", o, "--top", "64"],
        "outliers": ["outliers", "--emb", str(a.emb), "--data", d, "--out", o, "--top", "64"],
        "probe": ["probe", "--emb", str(a.emb), "--data", d, "--out", o, "--fraction", "0.5", "--folds", "2"],
        "simulate": ["simulate", "--n", "2", "--size", "32", "--out", o, "--workers", "1", "--no-progress"],
    }[verb]


def out_path(verb: str, folder: Path) -> Path:
    """Where ``verb`` writes inside ``folder``: a file for the file verbs, else a run folder."""
    name = {"show": "montage.png", "predict": "pred.parquet", "embed": "emb.parquet", "similar": "similar.csv",
            "probe": "probe.json", "simulate": "sims.h5"}.get(verb, "run")
    return Path(folder) / name


# the files a verb writes when it succeeds (none may exist after a failure)
FINAL_OUTPUTS = {"cluster": ("report.html", "metrics.json", "cluster_catalog.parquet"),
                 "train": ("report.html", "metrics.json", "model.safetensors"),
                 "pretrain": ("report.html", "model.safetensors", "pretrain_summary.json"),
                 "evaluate": ("report.html", "metrics.json", "predictions_all.parquet"),
                 "outliers": ("outliers.csv", "top_outliers.png", "outliers_metrics.json")}


# ====================================================================== running and judging
@dataclass
class Outcome:
    verb: str
    case: str
    verdict: str
    rc: int | None
    stderr: str
    detail: str = ""

    def line(self) -> str:
        return json.dumps({"verb": self.verb, "case": self.case, "verdict": self.verdict, "rc": self.rc,
                           "detail": self.detail[:300]})


def run_main(argv: list[str], stdout: io.StringIO | None = None) -> tuple[int | None, str, str | None]:
    """(exit status or None, stderr, the escaped traceback or None) of ``galmo.cli.main(argv)``."""
    from galmo.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout or io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 (anything else escaping main is a traceback)
            return None, err.getvalue(), traceback.format_exc()
    return rc, err.getvalue(), None


def leftovers(verb: str, out: Path, scan: Path) -> list[str]:
    """Temp-named files under ``scan`` and final outputs of ``verb`` at ``out``."""
    bad = [str(p) for p in scan.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith("tmp"))]
    if out.is_file() and verb in FILE_OUT_VERBS:
        bad.append(str(out))
    if out.is_dir():
        bad += [str(out / f) for f in FINAL_OUTPUTS.get(verb, ()) if (out / f).exists()]
    return bad


def verdict(rc, err: str, tb: str | None, names: list[Path], left: list[str]) -> tuple[str, str]:
    """(verdict, detail) of one run (see the module docstring)."""
    if tb is not None:
        return "traceback", tb.strip().splitlines()[-1]
    if "Traceback (most recent call last)" in err:
        return "traceback", "printed: " + err.strip().splitlines()[-1]
    first = err.strip().splitlines()[-1] if err.strip() else ""
    if rc == 0 and "galmo: error" not in err:
        return "silent", "exit 0"
    lines = [ln for ln in err.splitlines() if "galmo: error:" in ln]
    if rc != 2 or not lines or not lines[0].startswith("galmo: error:"):
        return "other", f"exit {rc}: {first}"
    msg = err[err.index(lines[0]):].strip()
    if not any(str(n) in msg for n in names):
        return "unnamed", msg
    if left:
        return "leftover", f"{msg} | left: {', '.join(left)}"
    return "clean", msg


def run_case(verb: str, case: str, a: Assets, where) -> Outcome:
    """Build ``case`` under ``where``, run ``verb`` on it, judge it."""
    where = Path(where)
    if case in OUT_CASES:
        data, names = (a.png if verb in EMB_VERBS else a.sims), []  # the embeddings' own source
        outdir = where / "out"
        outdir.mkdir(parents=True, exist_ok=True)
        if case == "out_under_file":
            blocker = outdir / "a_file"
            blocker.write_text("not a folder\n")
            out = out_path(verb, blocker)
            names = [out, blocker]
        else:
            out = out_path(verb, outdir)
            out.mkdir()
            names = [out]
    else:
        data, names = make_case(case, a, where / "in")
        outdir = where / "out"
        outdir.mkdir(parents=True, exist_ok=True)
        out = out_path(verb, outdir)
    cwd = os.getcwd()
    os.chdir(outdir)  # galmo info writes rejected.csv in the working folder
    try:
        rc, err, tb = run_main(command(verb, a, data, out))
    finally:
        os.chdir(cwd)
    left = leftovers(verb, out, outdir)
    v, detail = verdict(rc, err, tb, names, left)
    return Outcome(verb, case, v, rc, err, detail)


# ====================================================================== --on-error skip
def skip_cells() -> list[tuple[str, str]]:
    """(verb, case) where ``--on-error skip`` must process the good items and list the bad one; not
    train on the FITS folders (they carry no labels)."""
    return [(v, c) for v in ON_ERROR_VERBS for c in SKIP_CASES if not (v == "train" and c.startswith("fits"))]


def rejected_csvs(verb: str, out: Path, cwd: Path) -> list[Path]:
    """Where ``--on-error skip`` may list the bad items: the run folder's rejected.csv; beside an
    output file ``<stem>.rejected.csv`` (or, before issue 11, ``rejected.csv``); for info the working
    folder's rejected.csv (issue 11: none, the printed summary lists them)."""
    if verb == "info":
        return [cwd / "rejected.csv"]
    if verb in FILE_OUT_VERBS:
        return [out.with_name(f"{out.stem}.rejected.csv"), out.parent / "rejected.csv"]
    return [out / "rejected.csv"]


def good_count(case: str) -> int:
    """How many good galaxies the source of ``case`` holds."""
    return 2 * N_PER_CLASS - (1 if case in ("png_one_corrupt", "catalog_missing_file",
                                              "catalog_folder_for_file") else 0)


def processed(verb: str, out: Path, stdout: str) -> int | None:
    """How many galaxies ``verb`` processed (None where its outputs do not say)."""
    import re

    import pandas as pd

    if verb in ("predict", "embed"):
        return len(pd.read_parquet(out, columns=["id"]))
    if verb == "show":
        m = re.search(r"\((\d+) galaxies\)", stdout)
        return int(m.group(1)) if m else -1
    # info counts the catalog's rows (the files found) and decodes only a sample of them: what it
    # skipped is checked by the listing of the bad item, not by the count
    if verb == "cluster":
        return len(pd.read_parquet(out / "cluster_catalog.parquet", columns=["id"]))
    return None


def run_skip_case(verb: str, case: str, a: Assets, where) -> tuple[bool, str]:
    """(passed, why) of ``verb --on-error skip`` on ``case``: exit 0, the good items processed,
    rejected.csv listing the bad item once."""
    import pandas as pd

    where = Path(where)
    data, names = make_case(case, a, where / "in")
    outdir = where / "out"
    outdir.mkdir(parents=True, exist_ok=True)
    out = out_path(verb, outdir)
    stdout = io.StringIO()
    cwd = os.getcwd()
    os.chdir(outdir)
    try:
        rc, err, tb = run_main(command(verb, a, data, out) + ["--on-error", "skip"], stdout)
    finally:
        os.chdir(cwd)
    if tb is not None or rc != 0:
        return False, f"exit {rc}: {(tb or err).strip()[-400:]}"
    want = sorted({str(n) for n in names})
    rej = next((p for p in rejected_csvs(verb, out, outdir) if p.is_file()), None)
    if rej is None and verb == "info":
        missing = [n for n in want if n not in stdout.getvalue()]
        if missing:
            return False, f"info --on-error skip neither lists {missing} nor writes rejected.csv"
    elif rej is None:
        return False, f"no rejected list at {' or '.join(map(str, rejected_csvs(verb, out, outdir)))}"
    elif sorted(pd.read_csv(rej)["ref"].astype(str)) != want:
        return False, f"{rej} lists {pd.read_csv(rej)['ref'].tolist()}, expected {want}"
    n = processed(verb, out, stdout.getvalue())
    if n is not None and n != good_count(case):
        return False, f"processed {n} galaxies, expected the {good_count(case)} good ones"
    return True, "ok"


def run_in_subprocess(cells: list[tuple[str, str]], assets_root: Path, where: Path,
                      limit: int = MEMORY_LIMIT, timeout: float = 300) -> dict[tuple[str, str], Outcome]:
    """Run ``cells`` in one child process under ``RLIMIT_AS = limit`` (the oversized-FITS case)."""
    code = ("import json, resource, sys; sys.path.insert(0, {tests!r});"
            "resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}));"
            "import bad_inputs as b; a = b.load_assets({root!r});"
            "[print('CELL ' + b.run_case(v, c, a, {where!r} + f'/{{v}}-{{c}}').line(), flush=True) "
            "for v, c in {cells!r}]").format(tests=str(Path(__file__).parent), limit=int(limit),
                                             root=str(assets_root), where=str(where), cells=list(cells))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    try:
        p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        p = subprocess.CompletedProcess(e.cmd, None, out, f"timed out after {timeout} s")
    got = {}
    for line in p.stdout.splitlines():
        if line.startswith("CELL "):
            d = json.loads(line[5:])
            got[(d["verb"], d["case"])] = Outcome(d["verb"], d["case"], d["verdict"], d["rc"], "", d["detail"])
    for v, c in cells:  # a crash of the child (killed for memory, segfault) is a traceback
        got.setdefault((v, c), Outcome(v, c, "traceback", None, p.stderr[-2000:],
                                       f"child exit {p.returncode}: {p.stderr.strip()[-300:]}"))
    return got


def save_assets(a: Assets) -> None:
    meta = {"sims": str(a.sims), "png": str(a.png), "jpg": str(a.jpg), "fits": str(a.fits),
            "run": str(a.run) if a.run else None, "emb": str(a.emb) if a.emb else None, "first_id": a.first_id}
    (a.root / "assets.json").write_text(json.dumps(meta))


def load_assets(root) -> Assets:
    m = json.loads((Path(root) / "assets.json").read_text())
    return Assets(Path(root), Path(m["sims"]), Path(m["png"]), Path(m["jpg"]), Path(m["fits"]),
                  Path(m["run"]) if m["run"] else None, Path(m["emb"]) if m["emb"] else None, m["first_id"])
