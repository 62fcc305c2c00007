"""zoobot's own training code (from PyPI, never a galmo dependency) beside galmo's, on the same catalog (issue 18).

One simulated sample (default: ``galmo simulate --n 3000 --size 64 --seed 0``) becomes a catalog in
zoobot's layout: PNG cutouts, ``id_str``, ``file_loc``, the Galaxy10 ``label`` and the vote counts of
a Galaxy Zoo campaign (``--schema``, default ``decals-dr5``: the simulator's volunteers answering
that campaign's tree, :func:`galmo.simulate.votes.campaign_counts`). Then, on the same train / val /
test split (galmo's seeded 70 / 10 / 20, read back from its ``split.csv``):

* galmo: ``galmo train --target votes --vote-loss dirichlet --schema S`` (efficientnet_b0 from
  scratch by default, as zoobot) and ``galmo predict --format zoobot``;
* zoobot 2.9.0: ``train_default_zoobot_from_scratch`` (efficientnet_b0, its default augmentations at
  the same pixels, colour, CPU, ``gpus=0``), the *best* checkpoint loaded back (the function returns
  the last epoch's weights), predictions through ``trainer.predict`` on a ``CatalogDataModule``
  (``predict_on_catalog`` is not used: it fails on ``ZoobotTree``).

Both are scored by this script in one way: vote-fraction RMSE of the cumulative fractions over the
schema's answers (from the predicted concentrations), Galaxy10 top-1 of a logistic regression on the
predicted fractions (fitted on the training split, scored on the test split) and its accuracy on the
50 % most confident, and training images per second. One JSON line per peer, then a Markdown table.

zoobot goes into a throwaway virtual environment (``python -m venv``) that sees galmo's own torch,
torchvision, timm, numpy and pandas through a ``.pth`` file, so no second torch is downloaded (a CPU
torch wheel beside PyPI's torchvision breaks it); ``zoobot`` and ``galaxy-datasets`` are installed
``--no-deps`` and their other imports (lightning, torchmetrics, omegaconf, datasets, webdataset,
wandb, huggingface_hub) with their dependencies: ~100 packages. The environment is removed at the
end unless ``--env DIR`` names one to keep. Not run in CI.

    GALMO_THREADS=2 python benchmarks/peers/bench_zoobot.py --quick          # a smoke test, minutes
    GALMO_THREADS=2 python benchmarks/peers/bench_zoobot.py --epochs 10      # the issue's table
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ZOOBOT = ("zoobot==2.9.0", "galaxy-datasets==0.0.25")
ZOOBOT_IMPORTS = ("lightning>=2.2.5", "torchmetrics", "omegaconf", "datasets", "webdataset", "wandb",
                  "huggingface_hub", "litmodels")


def _threads() -> int:
    return int(os.environ.get("GALMO_THREADS") or 0) or os.cpu_count() or 1


def _run(cmd, log, **kw) -> float:
    """Run ``cmd`` (output shown), raise on failure; the seconds it took."""
    log("$ " + " ".join(map(str, cmd)))
    t0 = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, **kw)
    return time.perf_counter() - t0


# ====================================================================== the throwaway environment
def ensure_env(env: Path, log) -> Path:
    """A venv at ``env`` with zoobot installed and galmo's site-packages visible; its python."""
    py = env / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import zoobot"], capture_output=True).returncode == 0:
        log(f"reusing the zoobot environment {env}")
        return py
    _run([sys.executable, "-m", "venv", env], log)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "galmo_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # galmo's torch & co
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(pip + ["--no-deps", *ZOOBOT], log)
    _run(pip + list(ZOOBOT_IMPORTS), log)
    return py


# ====================================================================== the catalog
def write_catalog(data: str, schema_name: str, work: Path, log) -> Path:
    """PNG cutouts of ``data`` and a zoobot-layout catalog (id_str, file_loc, label, vote counts)."""
    import numpy as np
    from PIL import Image

    from galmo.simulate.votes import campaign_counts
    from galmo.sources import open_source

    src = open_source(data)
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    locs = []
    for rows, batch in src.iter_batches(512, progress=False):
        for r, img in zip(rows, batch):
            loc = images / f"{src.catalog['id'].iat[r]}.png"
            Image.fromarray((img[::-1].transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(loc)  # bands → RGB
            locs.append(str(loc))
    counts = campaign_counts(src.catalog, schema_name, seed=0)
    cat = counts.rename(columns={"id": "id_str"})
    cat.insert(1, "file_loc", locs)
    cat.insert(2, "label", src.catalog["label"].to_numpy())
    path = work / f"catalog_{schema_name}.parquet"
    cat.to_parquet(path, index=False)
    log(f"catalog {path}: {len(cat)} galaxies, {schema_name} vote counts")
    return path


# ====================================================================== the two peers
def run_galmo(catalog: Path, work: Path, args, log) -> dict:
    out = work / "galmo"
    model = ["--model", "timm_classifier", "--backbone", args.backbone, "--weights", "none"] \
        if args.backbone != "rotinv" else ["--model", "rotinv", "--width", "16"]
    secs = _run([sys.executable, "-m", "galmo", "train", "--data", catalog, "--out", out, "--target", "votes",
                 "--schema", args.schema, "--vote-loss", "dirichlet", *model, "--epochs", args.epochs,
                 "--batch-size", args.batch_size, "--seed", args.seed, "--no-progress"], log)
    preds = work / "galmo_preds.parquet"
    _run([sys.executable, "-m", "galmo", "predict", "--run", out, "--data", catalog, "--out", preds,
          "--format", "zoobot", "--no-progress"], log)
    epochs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    rate = [e["train_images_per_s"] for e in epochs if e.get("train_images_per_s")]
    return {"peer": "galmo", "preds": preds, "wall_s": secs,
            "images_per_s": sum(rate) / len(rate) if rate else None}


def split_catalogs(catalog: Path, work: Path) -> list[Path]:
    """The catalog cut into galmo's train / val / test split (its split.csv), for zoobot."""
    import pandas as pd

    cat = pd.read_parquet(catalog)
    split = pd.read_csv(work / "galmo" / "split.csv", dtype={"id": str}).set_index("id")["split"]
    out = []
    for part in ("train", "val", "test"):
        p = work / f"zoobot_{part}.parquet"
        cat[cat["id_str"].astype(str).map(split).eq(part).to_numpy()].to_parquet(p, index=False)
        out.append(p)
    return out


def run_zoobot(catalog: Path, work: Path, args, log) -> dict:
    from galmo.core.schemas import SCHEMAS

    env = Path(args.env) if args.env else Path(tempfile.mkdtemp(prefix="zoobot-env-"))
    try:
        py = ensure_env(env, log)
        data = SCHEMAS[args.schema]
        job = {"pairs": {q: list(a) for q, a in data["pairs"].items()}, "dependencies": data["dependencies"],
               "catalogs": [str(p) for p in split_catalogs(catalog, work)], "all": str(catalog),
               "size": args.size, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
               "threads": _threads(), "save_dir": str(work / "zoobot"), "preds": str(work / "zoobot_preds.parquet")}
        (work / "zoobot_job.json").write_text(json.dumps(job))
        env_vars = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": ""}
        _run([py, __file__, "--zoobot-job", work / "zoobot_job.json"], log, env=env_vars)
        done = json.loads((work / "zoobot_done.json").read_text())
    finally:
        if not args.env:
            shutil.rmtree(env, ignore_errors=True)
    return {"peer": "zoobot-2.9.0", "preds": Path(job["preds"]), "wall_s": done["train_s"],
            "images_per_s": done["images_per_s"]}


def zoobot_job(path: Path) -> None:
    """In the zoobot environment: train, reload the best checkpoint, predict concentrations."""
    import lightning as L
    import pandas as pd
    import torch
    from galaxy_datasets import transforms
    from galaxy_datasets.pytorch.galaxy_datamodule import CatalogDataModule
    from zoobot.pytorch.estimators import define_model
    from zoobot.pytorch.training import train_with_pytorch_lightning as T
    from zoobot.shared.schemas import Schema

    job = json.loads(Path(path).read_text())
    torch.set_num_threads(job["threads"])
    schema = Schema(job["pairs"], job["dependencies"])
    train_cfg, test_cfg = transforms.default_view_config(), transforms.minimal_view_config()
    for cfg in (train_cfg, test_cfg):
        cfg.output_size, cfg.greyscale = job["size"], False
    train, val, test = (pd.read_parquet(p) for p in job["catalogs"])
    t0 = time.perf_counter()
    _, trainer = T.train_default_zoobot_from_scratch(
        save_dir=job["save_dir"], schema=schema, train_transform_cfg=train_cfg, test_transform_cfg=test_cfg,
        train_catalog=train, val_catalog=val, test_catalog=test, epochs=job["epochs"], patience=job["epochs"],
        architecture_name="efficientnet_b0", batch_size=job["batch_size"], gpus=0, num_workers=1,
        prefetch_factor=2, random_state=job["seed"])
    train_s = time.perf_counter() - t0
    best = define_model.ZoobotTree.load_from_checkpoint(trainer.checkpoint_callback.best_model_path).eval()
    full = pd.read_parquet(job["all"])
    dm = CatalogDataModule(label_cols=None, predict_catalog=full, test_transform=transforms.get_galaxy_transform(test_cfg),
                           batch_size=job["batch_size"], num_workers=1)
    dm.setup(stage="predict")
    conc = torch.cat(L.Trainer(accelerator="cpu", devices=1, logger=False).predict(best, dm)).numpy()
    cols = [f"{c}_concentration" for c in schema.label_cols]
    pd.concat([full[["id_str"]].reset_index(drop=True), pd.DataFrame(conc, columns=cols)], axis=1).to_parquet(job["preds"])
    done = {"train_s": train_s, "images_per_s": len(train) * trainer.current_epoch / train_s}
    (Path(job["preds"]).parent / "zoobot_done.json").write_text(json.dumps(done))


# ====================================================================== one scoring for both
def score(peer: dict, catalog: Path, work: Path, schema_name: str) -> dict:
    """RMSE of the cumulative fractions, top-1 and 50 %-coverage accuracy of a logistic regression on the
    predicted fractions (train split → test split), throughput."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from galmo.core import metrics as M
    from galmo.core.schema import get_schema

    schema = get_schema(schema_name)
    cat = pd.read_parquet(catalog).set_index(pd.read_parquet(catalog)["id_str"].astype(str))
    preds = pd.read_parquet(peer["preds"])
    preds = preds.set_index(preds["id_str"].astype(str)).loc[cat.index]
    conc = preds[[f"{c}_concentration" for c in schema.label_cols]].to_numpy(np.float64)
    frac = schema.shares(conc)
    split = pd.read_csv(work / "galmo" / "split.csv", dtype={"id": str}).set_index("id")["split"].reindex(cat.index)
    tr, te = (split == "train").to_numpy(), (split == "test").to_numpy()
    true = schema.cumulative_from_counts(cat[schema.label_cols].to_numpy(np.float64))
    y = cat["label"].to_numpy()
    lr = LogisticRegression(max_iter=2000).fit(frac[tr], y[tr])
    prob = lr.predict_proba(frac[te])
    pred = lr.classes_[prob.argmax(1)]
    return {"peer": peer["peer"], "schema": schema_name, "n_test": int(te.sum()),
            "vote_rmse": M.vote_rmse(schema.cumulative_from_conditional(frac)[te], true[te]),
            "top1": float((pred == y[te]).mean()),
            "acc_at_50pct_coverage": M.accuracy_at_coverage(y[te], pred, prob.max(1), 0.5),
            "train_images_per_s": peer["images_per_s"], "train_wall_s": peer["wall_s"],
            "load_avg": os.getloadavg()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a galmo source with truth (default: simulate --n N --size SIZE --seed 0)")
    p.add_argument("--schema", default="decals-dr5", help="the campaign whose vote counts both train on")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="efficientnet_b0", help="galmo's timm backbone (from scratch), or rotinv")
    p.add_argument("--env", help="keep and reuse the zoobot environment here (default: a temporary one, removed)")
    p.add_argument("--work", help="folder for the catalog, runs and predictions (default: a temporary one)")
    p.add_argument("--skip-zoobot", action="store_true", help="galmo only (no environment is made)")
    p.add_argument("--quick", action="store_true", help="smoke test: 300 galaxies, 1 epoch")
    p.add_argument("--zoobot-job", help=argparse.SUPPRESS)  # the part that runs inside the zoobot environment
    args = p.parse_args(argv)
    if args.zoobot_job:
        zoobot_job(Path(args.zoobot_job))
        return 0
    if args.quick:
        args.n, args.epochs = 300, 1
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-zoobot-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = work / "sims.h5"
        _run([sys.executable, "-m", "galmo", "simulate", "--n", args.n, "--size", args.size, "--seed", 0,
              "--out", data], log)
    catalog = write_catalog(str(data), args.schema, work, log)
    peers = [run_galmo(catalog, work, args, log)]
    if not args.skip_zoobot:
        peers.append(run_zoobot(catalog, work, args, log))
    rows = [score(peer, catalog, work, args.schema) for peer in peers]
    for r in rows:
        print(json.dumps(r))
    print("\n| | " + " | ".join(r["peer"] for r in rows) + " |\n|---|" + "---|" * len(rows))
    for key in ("top1", "acc_at_50pct_coverage", "vote_rmse", "train_images_per_s"):
        print(f"| {key} | " + " | ".join(f"{r[key]:.4g}" if r[key] is not None else "-" for r in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
