"""AstroPT's own model code (from PyPI, never a galmo dependency) beside galmo's encoders (issue 15).

Trains AstroPT's GPT (``astropt.model.GPT``, its ``astropt001M`` shape: 4 layers x 128 wide, 8 heads;
patch 8; the per-patch normalisation of its ``scripts/train.py``; spiral patch order through its own
``GalaxyImageDataset.process_galaxy``; next-patch Huber loss through its own ``process_modes`` and
``GPT.forward``; its ``configure_optimizers`` AdamW with wd 0.1, betas (0.9, 0.95), grad clip 1, warm-up
and cosine decay to lr/10) on the images of a galmo source for a wall-time budget, takes the
per-galaxy embeddings the way AstroPT does (``GPT.generate_embeddings``: mean over the tokens of the
middle block), writes them as a galmo embeddings Parquet and runs galmo's own linear probe on them,
so the numbers sit beside ``galmo probe`` of galmo's encoders. One JSON line per label fraction:

    {"encoder": "astropt-2.0.9", "fraction": 0.01, "accuracy": ..., "std": ..., "train_seconds": ...,
     "images_per_s": ..., ...}

AstroPT goes into a throwaway folder (``pip install --no-deps --target DIR astropt==VER einops
loralib``: its two small pure-Python imports that galmo's environment lacks; torch, torchvision,
numpy and astropy are the environment's own, so no second torch is downloaded) and runs in a
subprocess of this same interpreter with ``PYTHONPATH=DIR``; this process never imports it. The
folder is a temporary one under /tmp, removed at the end, unless ``--env DIR`` names one to keep and
reuse.

Usage (the cores may be shared: set GALMO_THREADS, see "load_avg" in the output):
    GALMO_THREADS=1 python benchmarks/peers/bench_astropt.py --quick
    GALMO_THREADS=1 python benchmarks/peers/bench_astropt.py --data sims.h5 --seconds 300
Without ``--data`` the default sample is simulated first (``galmo simulate --n 3000 --seed 0``; 256
with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASTROPT_VERSION = "2.0.9"
# what astropt.model / astropt.local_datasets import that galmo's environment does not have (both
# pure Python, no dependencies of their own); the rest of its declared requirements (datasets, wandb,
# slack-sdk, tiktoken, pre-commit, ...) belong to its scripts and are never imported here
EXTRA_DEPS = ("einops==0.8.2", "loralib==0.1.2")

# AstroPT's config/scaling/astropt001M.py (n_layer 4, n_head 8, n_embd 128, lr 1e-3, min_lr lr/10)
# and the defaults of its scripts/train.py (wd 0.1, betas 0.9/0.95, grad clip 1, warm-up 2000 and
# cosine decay to 29700 of 30000 iterations, no dropout, no bias, causal attention, "aim" tokeniser)
MODEL = {"n_layer": 4, "n_head": 8, "n_embd": 128, "dropout": 0.0, "bias": False, "attn_type": "causal",
         "tokeniser": "aim"}
OPTIM = {"lr": 1e-3, "min_lr_ratio": 0.1, "weight_decay": 0.1, "betas": (0.9, 0.95), "grad_clip": 1.0,
         "warmup_frac": 2000 / 30000, "decay_end_frac": 27000 * 1.1 / 30000}


def _threads() -> int:
    return int(os.environ.get("GALMO_THREADS") or 0) or os.cpu_count() or 1


def _size(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ====================================================================== the throwaway environment
def ensure_env(env: Path, version: str, log) -> dict:
    """AstroPT ``version`` and its small extra imports installed into ``env`` (reused when there)."""
    import importlib.metadata as md

    def have(dist):
        found = list(md.distributions(path=[str(env)], name=dist))
        return found[0].version if found else None

    wanted = {"astropt": version, **dict(d.split("==") for d in EXTRA_DEPS)}
    if all(have(d) == v for d, v in wanted.items()):
        log(f"reusing the AstroPT environment {env}")
    else:
        env.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--upgrade", "--target", str(env), f"astropt=={version}", *EXTRA_DEPS]
        log("installing: " + " ".join(cmd[2:]))
        subprocess.run(cmd, check=True)
    if (env / "torch").exists():  # --no-deps: the environment's own torch must be the one used
        raise SystemExit(f"{env} holds a torch of its own; give an --env without one")
    return {d: have(d) for d in wanted}


# ====================================================================== the data
def default_data(work: Path, quick: bool, threads: int, log) -> Path:
    """The default sample simulated into ``work`` (256 galaxies when quick)."""
    out = work / "sims.h5"
    n = 256 if quick else 3000
    cmd = [sys.executable, "-m", "galmo", "simulate", "--n", str(n), "--out", str(out), "--seed", "0",
           "--workers", str(threads), "--no-progress"]
    log("simulating: galmo " + " ".join(cmd[3:]))
    subprocess.run(cmd, check=True)
    return out


# ====================================================================== the AstroPT part (subprocess)
def normalise(x):
    """AstroPT v2.0.9 scripts/train.py ``normalise`` (the package does not ship it): each patch
    (row of the (patches, pixels) token matrix) standardised over its own pixels and channels."""
    import torch

    std, mean = torch.std_mean(x, dim=1, keepdim=True)
    x_norm = (x - mean) / (std + 1e-8)
    return x_norm.to(torch.float16)


def lr_at(progress: float) -> float:
    """AstroPT's ``get_lr`` (linear warm-up, cosine decay to lr/10) on the fraction of the budget spent."""
    lr, min_lr = OPTIM["lr"], OPTIM["lr"] * OPTIM["min_lr_ratio"]
    w, d = OPTIM["warmup_frac"], OPTIM["decay_end_frac"]
    if progress < w:
        return lr * progress / w
    if progress > d:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * (progress - w) / (d - w))) * (lr - min_lr)


def _train(model, optimizer, batch, n: int, spec: dict) -> tuple:
    """AstroPT's training step (their loss, clipping, AdamW) over shuffled epochs of whole batches until
    the time budget or the epoch cap is used up; (losses, steps, images seen, seconds)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(spec["seed"])
    bs, budget = spec["batch_size"], spec["seconds"]
    steps_per_epoch = max(1, n // bs)  # whole batches only, like a DataLoader with drop_last
    max_steps = spec["epochs"] * steps_per_epoch if spec["epochs"] else None
    losses, step, seen = [], 0, 0
    model.train()
    t0 = time.perf_counter()
    while True:
        order = rng.permutation(n)
        for k in range(steps_per_epoch):
            elapsed = time.perf_counter() - t0
            progress = max(elapsed / budget, step / max_steps if max_steps else 0.0)
            if progress >= 1.0:
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(progress)
            B = batch(torch.as_tensor(order[k * bs:(k + 1) * bs]))
            _, loss = model(B["X"], targets=B["Y"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            seen += bs
        else:
            continue
        break
    train_s = time.perf_counter() - t0
    return losses, step, seen, train_s


def _embeddings(model, tokens, positions):
    """AstroPT's ``generate_embeddings`` (mean over the tokens), 256 galaxies at a time."""
    import numpy as np
    import torch

    n, n_tok = len(tokens), len(positions)
    model.eval()
    embs = []
    with torch.no_grad():
        for s in range(0, n, 256):
            x = tokens[s:s + 256].to(torch.float)
            embs.append(model.generate_embeddings({"images": x, "images_positions": positions.expand(len(x), n_tok)},
                                                  reduction="mean")["images"].numpy())
    return np.concatenate(embs).astype(np.float32)


def worker(spec: dict) -> None:
    """Tokenise, train and embed with AstroPT's own classes; write ``spec["out"]`` (.npz)."""
    import importlib.metadata as md

    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    import astropt.model as apm
    from astropt.local_datasets import GalaxyImageDataset
    from astropt.model import GPT, GPTConfig, ModalityConfig, ModalityRegistry

    from galmo.methods.embeddings.run import load_images
    from galmo.sources import as_source

    env = Path(spec["env"]).resolve()
    if env not in Path(apm.__file__).resolve().parents:
        raise SystemExit(f"astropt imported from {apm.__file__}, not from {env}")
    version = md.version("astropt")

    src = as_source(spec["data"])
    pos, images = load_images(src, max_images=spec["max_images"], seed=spec["seed"])
    ids = np.asarray(src.catalog["id"].astype(str).to_numpy()[pos], dtype=str)
    n, c, h, w = images.shape
    p = spec["patch"]
    side = min(h, w) // p * p  # AstroPT needs a square grid of whole patches: centre crop to one
    y0, x0 = (h - side) // 2, (w - side) // 2
    images = images[:, :, y0:y0 + side, x0:x0 + side]
    n_tok = (side // p) ** 2

    modalities = [ModalityConfig(name="images", input_size=p * p * c, patch_size=p, loss_weight=1.0,
                                 embed_pos=True, pos_input_size=1)]
    registry = ModalityRegistry(modalities)
    galproc = GalaxyImageDataset(paths=None, transform={"images": normalise}, spiral=True,
                                 modality_registry=registry)
    t0 = time.perf_counter()
    # their process_galaxy: "c (h p1) (w p2) -> (h w) (p1 p2 c)", per-patch normalisation, spiral order
    tokens = torch.stack([galproc.process_galaxy(torch.from_numpy(im.astype(np.float32))) for im in images])
    tokenise_s = time.perf_counter() - t0
    positions = torch.arange(n_tok, dtype=torch.long)

    torch.manual_seed(spec["seed"])
    cfg = GPTConfig(block_size=n_tok, n_chan=c, modalities=modalities, **MODEL)
    model = GPT(cfg, registry)
    optimizer = model.configure_optimizers(OPTIM["weight_decay"], OPTIM["lr"], OPTIM["betas"], "cpu")

    def batch(idx):  # the dict their DataLoader yields, through their own process_modes (X: 0..T-2, Y: 1..T-1)
        b = {"images": tokens[idx].to(torch.float), "images_positions": positions.expand(len(idx), n_tok)}
        return GalaxyImageDataset.process_modes(b, registry, "cpu")

    bs = spec["batch_size"]
    losses, step, seen, train_s = _train(model, optimizer, batch, n, spec)

    t0 = time.perf_counter()
    emb = _embeddings(model, tokens, positions)
    embed_s = time.perf_counter() - t0
    stats = {"astropt_version": version, "n_images": int(n), "image_px": int(side), "n_tokens": int(n_tok),
             "params": int(model.get_num_params()), "steps": step, "images_seen": seen,
             "epochs_done": round(seen / n, 2), "batch_size": bs, "train_seconds": round(train_s, 1),
             "images_per_s": round(seen / train_s, 1) if train_s > 0 else None,
             "tokenise_seconds": round(tokenise_s, 1), "embed_seconds": round(embed_s, 1),
             "embed_images_per_s": round(n / embed_s, 1) if embed_s > 0 else None,
             "loss_first": round(float(np.mean(losses[:10])), 4) if losses else None,
             "loss_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
             "threads": torch.get_num_threads()}
    np.savez(spec["out"], ids=ids, emb=emb, stats=json.dumps(stats))


# ====================================================================== the probe (this process)
def probe(npz: Path, data: Path, work: Path, args, load_log) -> list[dict]:
    import numpy as np

    from galmo.methods.embeddings.config import ProbeConfig
    from galmo.methods.embeddings.run import run_probe
    from galmo.methods.embeddings.store import write_embeddings
    from galmo.sources import as_source

    z = np.load(npz)
    stats = json.loads(str(z["stats"]))
    name = f"astropt-{stats['astropt_version']}"
    cat = as_source(data).catalog
    cat = cat.set_index(cat["id"].astype(str))
    extra = cat.loc[z["ids"], [c for c in ("label", "label_name") if c in cat.columns]]
    emb_path = work / f"{name}.parquet"
    write_embeddings(emb_path, z["ids"], z["emb"], {
        "model": name, "encoder_kind": "astropt", "data": str(data),
        "embedding": "AstroPT GPT.generate_embeddings(reduction='mean'): mean over the tokens of the middle block",
        "images_per_s": stats["embed_images_per_s"], "pretrain": stats}, extra=extra)
    t0 = time.perf_counter()
    rows = run_probe(ProbeConfig(emb=str(emb_path), data=str(data), fraction=tuple(args.fraction), folds=args.folds,
                                 cnn=False, seed=args.seed, out=str(work / f"probe_{name}.json")))
    probe_s = time.perf_counter() - t0
    out = []
    for r in rows.itertuples():
        out.append({"encoder": name, "fraction": r.fraction, "accuracy": round(r.mean, 4), "std": round(r.std, 4),
                    "train_seconds": stats["train_seconds"], "images_per_s": stats["images_per_s"],
                    "n_train": r.n_train, "n_images": stats["n_images"], "epochs_done": stats["epochs_done"],
                    "steps": stats["steps"], "batch_size": stats["batch_size"], "params": stats["params"],
                    "loss_first": stats["loss_first"], "loss_last": stats["loss_last"],
                    "embed_images_per_s": stats["embed_images_per_s"], "probe_seconds": round(probe_s, 1),
                    "threads": stats["threads"], "load_avg": load_log})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="galmo source (default: simulate the default sample)")
    ap.add_argument("--seconds", type=float, default=300.0, help="training budget in wall seconds")
    ap.add_argument("--epochs", type=int, default=20, help="cap on epochs (0: the budget alone)")
    ap.add_argument("--max-images", type=int, default=None, help="a random subset of the source")
    ap.add_argument("--batch-size", type=int, default=64, help="images per step (galmo pretrain's default)")
    ap.add_argument("--patch", type=int, default=8, help="patch side in pixels")
    ap.add_argument("--fraction", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="label fractions probed")
    ap.add_argument("--folds", type=int, default=5, help="probe cross-validation folds (galmo probe's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--version", default=ASTROPT_VERSION, help="astropt version from PyPI")
    ap.add_argument("--env", help="folder for AstroPT to install into and reuse (default: a temporary one, removed)")
    ap.add_argument("--work", help="folder for the embeddings, probe JSON and simulated data (default: temporary, "
                                   "removed)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 256 images, 20 s")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(Path(args.worker).read_text()))
        return
    if args.quick:
        args.seconds, args.max_images = min(args.seconds, 20.0), args.max_images or 256

    def log(msg):
        print(f"# {msg}", file=sys.stderr, flush=True)

    threads = _threads()
    env = Path(args.env) if args.env else Path(tempfile.mkdtemp(prefix="galmo-astropt-env-", dir="/tmp"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="galmo-astropt-work-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        versions = ensure_env(env, args.version, log)
        pkgs = ", ".join(f"{k} {v}" for k, v in versions.items())
        log(f"AstroPT environment {env}: {_size(env) / 2**20:.1f} MiB ({pkgs})")
        data = Path(args.data) if args.data else default_data(work, args.quick, threads, log)
        spec = {"env": str(env), "data": str(data), "max_images": args.max_images, "seed": args.seed,
                "patch": args.patch, "batch_size": args.batch_size, "seconds": args.seconds, "epochs": args.epochs,
                "threads": threads, "out": str(work / "astropt_embeddings.npz")}
        (work / "worker.json").write_text(json.dumps(spec))
        pythonpath = os.pathsep.join([str(env), *filter(None, [os.environ.get("PYTHONPATH")])])
        child_env = {**os.environ, "PYTHONPATH": pythonpath,
                     "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                     "OPENBLAS_NUM_THREADS": str(threads)}
        log(f"training AstroPT for {args.seconds:g} s (cap {args.epochs or 'none'} epochs) on {data}, "
            f"{threads} thread(s)")
        load_before = os.getloadavg()[0]
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(work / "worker.json")],
                       check=True, env=child_env)
        load_after = os.getloadavg()[0]
        for row in probe(work / "astropt_embeddings.npz", data, work, args,
                         {"before": round(load_before, 2), "after_training": round(load_after, 2)}):
            print(json.dumps(row), flush=True)
    finally:
        if not args.env:
            log(f"removing the AstroPT environment {env} ({_size(env) / 2**20:.1f} MiB)")
            shutil.rmtree(env, ignore_errors=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
