"""``galmo finetune RUN --expert-labels FILE --out RUN2``: retrain a run with its expert labels, measure it.

The expert labels change the source's catalog in memory (the source's files are left alone):

* a ``class`` decision on a galaxy of the run's train or validation split replaces its catalog label;
  on a galaxy outside the run's split (or one ``--train-frac`` left ``unused``) it adds that galaxy to
  the training split;
* ``not_a_galaxy`` removes the galaxy from training; ``skip`` changes nothing;
* labels on the run's **test** galaxies are not used: the test split stays held out and labelled as the
  catalog says, so the accuracy before and after is measured on the same galaxies with the same truth.

Training is the shared supervised path (:func:`galmo.methods.supervised.run.run_train` with
``init_from=RUN`` and the run's split plus the added galaxies as ``split_from``). ``RUN2`` then holds a
normal training run, plus ``finetune.json`` (the label counts, the test metrics before and after),
``before/`` (the run re-evaluated on the same test split), ``finetune/split.csv`` (the split trained on),
``predictions.parquet`` (the run's queue re-predicted by the new model: the queue re-ranked) and the
expert labels carried over (``expert_labels.jsonl``), so that labelling goes on from there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError
from galmo.core.io import write_json
from galmo.web.config import FinetuneConfig
from galmo.web.labels import read_expert_labels, write_journal
from galmo.web.runs import PREDICTIONS, Run

METRICS = ("n", "top1", "balanced_accuracy", "acc_at_50pct_coverage", "ece")
SPLIT_DIR = "finetune"


def finetune(cfg: FinetuneConfig, log=print) -> dict:
    """Run one fine-tuning (see the module docstring); returns the content of ``finetune.json``."""
    from galmo.methods.supervised.config import SupervisedConfig
    from galmo.methods.supervised.run import evaluate, run_train
    from galmo.sources import as_source

    run, out = Path(cfg.run), Path(cfg.out)
    base = SupervisedConfig.load(run)
    if base.target != "class":
        raise GalmoError("finetune: expert labels are classes, but this run predicts vote fractions", path=run)
    labels = read_expert_labels(cfg.expert_labels)
    src = as_source(cfg.data or Run(run.name, run).source_path or base.data)
    original = src.catalog
    src.catalog, split, counts = relabel(original, labels, run, _class_names(run))
    write_catalog(split, out / SPLIT_DIR / "split.csv")
    log(f"[finetune] {counts['used']} expert labels: {counts['changed']} changed, {counts['added']} added, "
        f"{counts['removed']} removed (not galaxies), {counts['ignored_test']} on test galaxies ignored")
    before = evaluate(run, src, split="test", out=out / "before", report=False, device=cfg.device, log=log)
    tuned = base.replace(data=str(src.path), out=str(out), init_from=str(run), split_from=str(out / SPLIT_DIR),
                         epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                         progress=cfg.progress, max_images=None, train_frac=1.0, resume=False,
                         stop_after_steps=None, evaluate_at_end=True)
    after = run_train(tuned, log=log, source=src)["test"]
    src.catalog = original
    result = {"init_from": str(run.resolve()), "expert_labels": str(Path(cfg.expert_labels).resolve()),
              "labels": counts, "before": _pick(before), "after": _pick(after),
              "change": {k: after[k] - before[k] for k in METRICS[1:]}, "reranked": rerank(run, out, src, cfg)}
    write_journal(out, labels)
    write_json(out / "finetune.json", result)
    log(f"[finetune] test top-1 {before['top1']:.4f} → {after['top1']:.4f} ({result['change']['top1']:+.4f}) "
        f"on {after['n']} held-out galaxies")
    return result


def _class_names(run: Path) -> list[str]:
    from galmo.nn.checkpoint import read_config

    return list((read_config(run).get("supervised") or {}).get("class_names") or [])


def _pick(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRICS}


def relabel(catalog: pd.DataFrame, labels: pd.DataFrame, run: Path, class_names: list[str]):
    """(the catalog with the expert labels applied, the split to train on (id, split), the counts).
    Galaxies outside the run's split and not labelled by the experts get label -1 (not trained on)."""
    cat = catalog.copy()
    ids = cat["id"].astype(str)
    old = cat["label"].to_numpy(np.int64) if "label" in cat.columns else np.full(len(cat), -1)
    split = pd.read_csv(run / "split.csv", dtype={"id": str}).set_index("id")["split"]
    part = ids.map(split).to_numpy(dtype=object)
    outside = pd.isna(part) | (part == "unused")  # not trained on by the run (``--train-frac``: 'unused')
    lab = np.where(outside, -1, old)
    labels = labels.assign(id=labels["id"].astype(str)).drop_duplicates("id", keep="last")
    pos = pd.Index(ids).get_indexer(labels["id"])
    if (pos < 0).all() and len(labels):
        raise GalmoError(f"none of the {len(labels)} expert-labelled ids is in the source (e.g. "
                         f"{labels['id'].iloc[0]!r}): give the --data the run was trained on")
    known = labels[pos >= 0].assign(pos=pos[pos >= 0])
    in_test = part[known["pos"]] == "test"
    use = known[~in_test & known["decision"].ne("skip")]
    bad = use[(use["decision"] == "class") & ~use["label"].between(0, len(class_names) - 1)]
    if len(bad):
        raise GalmoError(f"{len(bad)} labels are not classes of the run (e.g. {bad['label'].iloc[0]!r}; "
                         f"0..{len(class_names) - 1})")
    p = use["pos"].to_numpy()
    new = np.where(use["decision"] == "class", use["label"].to_numpy(np.int64), -1)
    counts = {"used": len(use), "unknown_ids": int((pos < 0).sum()), "ignored_test": int(in_test.sum()),
              "changed": int(((lab[p] >= 0) & (new >= 0) & (lab[p] != new)).sum()),
              "added": int(((lab[p] < 0) & (new >= 0)).sum()), "removed": int(((lab[p] >= 0) & (new < 0)).sum())}
    lab[p] = new
    part[p[outside[p]]] = "train"
    cat["label"] = lab
    cat["label_name"] = [class_names[k] if 0 <= k < len(class_names) else "" for k in lab]
    keep = lab >= 0
    return cat, pd.DataFrame({"id": ids[keep].to_numpy(), "split": part[keep]}), counts


def rerank(run: Path, out: Path, src, cfg: FinetuneConfig) -> int | None:
    """The galaxies of ``run``'s queue (its predictions.parquet / predictions_all.parquet) predicted by the
    fine-tuned model into ``out/predictions.parquet``; how many (None when the run has no queue)."""
    from galmo.methods.supervised.run import predict

    queue = next((run / f for f in PREDICTIONS[:2] if (run / f).is_file()), None)
    if queue is None:
        return None
    ids = pd.read_parquet(queue, columns=["id"])["id"].astype(str)
    rows = pd.Index(src.catalog["id"].astype(str)).get_indexer(ids)
    preds = predict(out, src, rows=np.sort(rows[rows >= 0]), batch_size=256, device=cfg.device)
    write_catalog(preds, out / "predictions.parquet")
    return len(preds)
