"""zoobot's own training code (from PyPI, never a galmo dependency) beside galmo's, on the same catalog (issue 18).

One simulated sample (default: ``galmo simulate --n 3000 --size 64 --seed 0``) becomes a catalog in
zoobot's layout: PNG cutouts, ``id_str``, ``file_loc``, the Galaxy10 ``label`` and the vote counts of
a Galaxy Zoo campaign (``--schema``, default ``decals-dr5``: the simulator's volunteers answering
that campaign's tree, :func:`galmo.simulate.votes.campaign_counts`). Then, on the same train / val /
test split (galmo's seeded 70 / 10 / 20, read back from its ``split.csv``):

* galmo: ``galmo train --target votes --vote-loss L --schema S`` and ``galmo predict --format zoobot``
  for each model of ``--galmo`` (default: the same efficientnet_b0 from random weights as zoobot, and
  galmo's default view-pooling network ``rotinv`` with ``galmo demo``'s recipe) and each loss of
  ``--vote-loss`` (default ``dirichlet``; ``dirichlet,mse`` adds galmo's fraction loss);
* zoobot 2.9.0: ``train_default_zoobot_from_scratch`` (efficientnet_b0, its default augmentations at
  the same pixels, colour, CPU, ``gpus=0``), the *best* checkpoint loaded back (the function returns
  the last epoch's weights), predictions by calling the model on the images of a
  ``CatalogDataModule``'s predict loader (``predict_on_catalog`` fails on ``ZoobotTree``, and
  ``trainer.predict`` hands ``ZoobotTree.forward`` the batch dict).

Both are scored by this script in one way: vote-fraction RMSE of the cumulative fractions over the
schema's answers (from the predicted concentrations), Galaxy10 top-1 of a logistic regression on the
predicted fractions (fitted on the training split, scored on the test split) and its accuracy on the
50 % most confident, and training images per second (training batches only: all the images over all
the seconds; zoobot's through a Lightning callback), with the load average at each run's start and
end. One JSON line per run (also ``results.jsonl`` in ``--work``), then a Markdown table.

zoobot goes into a throwaway virtual environment (``python -m venv``) that sees galmo's own torch,
torchvision, timm, numpy and pandas through a ``.pth`` file, so no second torch is downloaded (a CPU
torch wheel beside PyPI's torchvision breaks it); ``zoobot`` and ``galaxy-datasets`` are installed
``--no-deps`` and their other imports (lightning, torchmetrics, omegaconf, datasets, webdataset,
wandb, huggingface_hub, litmodels) with their dependencies: 48 packages, ~200 MB. The environment is removed at the
end unless ``--env DIR`` names one to keep. Not run in CI.

    GALMO_THREADS=1 python benchmarks/peers/bench_zoobot.py --quick                     # smoke test, ~2 min
    GALMO_THREADS=1 python benchmarks/peers/bench_zoobot.py --vote-loss dirichlet,mse   # docs/catalogs.md's table
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
    if py.exists() and subprocess.run([py, "-c", "import zoobot"], check=False, capture_output=True).returncode == 0:
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


# ====================================================================== the peers
#: galmo's models here: the same efficientnet_b0 as zoobot (timm, random weights, the same batch size), and
#: galmo's default view-pooling network with the recipe of ``galmo demo``'s supervised run.
GALMO_MODELS = {
    "efficientnet_b0": lambda args: ["--model", "timm_classifier", "--backbone", "efficientnet_b0",
                                     "--weights", "none", "--batch-size", args.batch_size],
    "rotinv": lambda args: ["--model", "rotinv", "--width", "16", "--batch-size", "32", "--lr", "3e-3"],
}


def run_galmo(catalog: Path, work: Path, model: str, loss: str, args, log) -> dict:
    name = f"galmo-{model}-{loss}"
    out, preds = work / name, work / f"{name}_preds.parquet"
    first = work / "galmo"  # the first galmo run's split is everyone's (zoobot's too)
    split = ["--split-from", first] if (first / "split.csv").exists() else []
    load0 = os.getloadavg()[0]
    if args.reuse and preds.exists() and (out / "metrics.jsonl").exists():
        log(f"reusing {out}")
        kept = json.loads((out / "bench_wall.json").read_text())
        secs, load = kept["wall_s"], kept.get("load_avg", [None, None])
    else:
        shutil.rmtree(out, ignore_errors=True)
        secs = _run([sys.executable, "-m", "galmo", "train", "--data", catalog, "--out", out, "--target", "votes",
                     "--schema", args.schema, "--vote-loss", loss, *GALMO_MODELS[model](args), "--epochs", args.epochs,
                     "--seed", args.seed, *split, "--no-progress"], log)
        load = [load0, os.getloadavg()[0]]  # 1-minute load average when training started and ended
        (out / "bench_wall.json").write_text(json.dumps({"wall_s": secs, "load_avg": load}))
        _run([sys.executable, "-m", "galmo", "predict", "--run", out, "--data", catalog, "--out", preds,
              "--format", "zoobot", "--no-progress"], log)
    if not split:
        shutil.rmtree(first, ignore_errors=True)
        first.mkdir()
        shutil.copy(out / "split.csv", first / "split.csv")
    epochs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    rate = [e["train_images_per_s"] for e in epochs if e.get("train_images_per_s")]
    # all the training images over all the training seconds (as zoobot's clock), not a mean of per-epoch rates
    return {"peer": name, "preds": preds, "wall_s": secs, "load_avg": load,
            "images_per_s": len(rate) / sum(1 / r for r in rate) if rate else None}


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
        if not (args.reuse and (work / "zoobot_done.json").exists()):
            _run([py, __file__, "--zoobot-job", work / "zoobot_job.json"], log, env=env_vars)
        done = json.loads((work / "zoobot_done.json").read_text())
    finally:
        if not args.env:
            shutil.rmtree(env, ignore_errors=True)
    return {"peer": "zoobot-2.9.0", "preds": Path(job["preds"]), "wall_s": done["wall_s"],
            "load_avg": done.get("load_avg", [None, None]), "images_per_s": done["images_per_s"]}


def zoobot_job(path: Path) -> None:
    """In the zoobot environment: train, reload the best checkpoint, predict concentrations."""
    import lightning as L
    import numpy as np
    import pandas as pd
    import torch
    from galaxy_datasets import transforms
    from galaxy_datasets.pytorch.galaxy_datamodule import CatalogDataModule
    from zoobot.pytorch.estimators import define_model
    from zoobot.pytorch.training import train_with_pytorch_lightning as T
    from zoobot.shared.schemas import Schema

    class TrainClock(L.Callback):
        """Seconds and images of the training batches only (first batch fetched → last optimiser step of
        each epoch), like galmo's ``train_images_per_s``: no validation, test or checkpointing."""

        def __init__(self):
            self.seconds, self.images, self._t0, self._last = 0.0, 0, None, None

        def on_train_epoch_start(self, trainer, module):
            self._t0 = self._last = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self._last = time.perf_counter()
            self.images += int(batch["image"].shape[0])

        def on_train_epoch_end(self, trainer, module):  # runs after validation: count up to the last batch
            self.seconds += self._last - self._t0

    job = json.loads(Path(path).read_text())
    torch.set_num_threads(job["threads"])
    schema = Schema(job["pairs"], job["dependencies"])
    train_cfg, test_cfg = transforms.default_view_config(), transforms.minimal_view_config()
    for cfg in (train_cfg, test_cfg):
        cfg.output_size, cfg.greyscale = job["size"], False
    train, val, test = (pd.read_parquet(p) for p in job["catalogs"])
    clock = TrainClock()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    _, trainer = T.train_default_zoobot_from_scratch(
        save_dir=job["save_dir"], schema=schema, train_transform_cfg=train_cfg, test_transform_cfg=test_cfg,
        train_catalog=train, val_catalog=val, test_catalog=test, epochs=job["epochs"], patience=job["epochs"],
        architecture_name="efficientnet_b0", batch_size=job["batch_size"], gpus=0, num_workers=1,
        prefetch_factor=2, random_state=job["seed"], extra_callbacks=[clock])
    wall_s = time.perf_counter() - t0  # includes zoobot's own test pass on the best checkpoint
    load = [load0, os.getloadavg()[0]]
    best_path = trainer.checkpoint_callback.best_model_path
    best = define_model.ZoobotTree.load_from_checkpoint(best_path, map_location="cpu").eval()
    full = pd.read_parquet(job["all"])
    # trainer.predict hands ZoobotTree.forward the batch dict ({'id_str', 'image'}): call the model on the images
    dm = CatalogDataModule(label_cols=None, predict_catalog=full, test_transform=transforms.get_galaxy_transform(test_cfg),
                           batch_size=job["batch_size"], num_workers=1, prefetch_factor=2)
    dm.setup(stage="predict")
    ids, conc = [], []
    with torch.no_grad():
        for batch in dm.predict_dataloader():
            ids += [str(i) for i in batch["id_str"]]
            conc.append(best(batch["image"]).numpy())
    cols = [f"{c}_concentration" for c in schema.label_cols]
    out = pd.DataFrame(np.concatenate(conc), columns=cols)
    out.insert(0, "id_str", ids)
    out.to_parquet(job["preds"], index=False)
    done = {"train_s": clock.seconds, "wall_s": wall_s, "images_per_s": clock.images / clock.seconds,
            "epochs": trainer.current_epoch, "best_checkpoint": best_path, "load_avg": load}
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
    if f"{schema.label_cols[0]}_concentration" in preds:  # Dirichlet heads: the concentrations' means
        frac = schema.shares(preds[[f"{c}_concentration" for c in schema.label_cols]].to_numpy(np.float64))
    else:  # galmo's MSE head: its per-question fractions
        frac = preds[[f"{c}_fraction" for c in schema.label_cols]].to_numpy(np.float64)
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
            "load_avg_start_end": peer["load_avg"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a galmo source with truth (default: simulate --n N --size SIZE --seed 0)")
    p.add_argument("--schema", default="decals-dr5", help="the campaign whose vote counts both train on")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--galmo", default="efficientnet_b0,rotinv",
                   help=f"galmo's models, comma-separated, of {', '.join(GALMO_MODELS)}")
    p.add_argument("--vote-loss", default="dirichlet", help="galmo's vote losses, comma-separated: dirichlet, mse")
    p.add_argument("--reuse", action="store_true", help="keep finished runs found in --work (rerun after a failure)")
    p.add_argument("--env", help="keep and reuse the zoobot environment here (default: a temporary one, removed)")
    p.add_argument("--work", help="folder for the catalog, runs and predictions (default: a temporary one)")
    p.add_argument("--skip-zoobot", action="store_true", help="galmo only (no environment is made)")
    p.add_argument("--quick", action="store_true", help="smoke test: 300 galaxies, 1 epoch (the scores mean nothing: the models still predict near-constant fractions)")
    p.add_argument("--zoobot-job", help=argparse.SUPPRESS)  # the part that runs inside the zoobot environment
    args = p.parse_args(argv)
    if args.zoobot_job:
        zoobot_job(Path(args.zoobot_job))
        return 0
    if args.quick:
        args.n, args.epochs = 300, 1
    log = lambda m: print(m, file=sys.stderr, flush=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-zoobot-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = work / "sims.h5"
        if not (args.reuse and data.exists()):
            _run([sys.executable, "-m", "galmo", "simulate", "--n", args.n, "--size", args.size, "--seed", 0,
                  "--out", data], log)
    catalog = write_catalog(str(data), args.schema, work, log)
    peers = [run_galmo(catalog, work, m, loss, args, log)
             for m in args.galmo.split(",") for loss in args.vote_loss.split(",")]
    if not args.skip_zoobot:
        peers.append(run_zoobot(catalog, work, args, log))
    rows = [score(peer, catalog, work, args.schema) for peer in peers]
    for r in rows:
        print(json.dumps(r))
    (work / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("\n| | " + " | ".join(r["peer"] for r in rows) + " |\n|---|" + "---|" * len(rows))
    for key in ("top1", "acc_at_50pct_coverage", "vote_rmse", "train_images_per_s", "train_wall_s"):
        print(f"| {key} | " + " | ".join(f"{r[key]:.4g}" if r[key] is not None else "-" for r in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
