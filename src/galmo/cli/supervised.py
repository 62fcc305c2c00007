"""``galmo train``, ``galmo predict``, ``galmo evaluate``: the supervised method's verbs.

Every flag comes from the configs of :mod:`galmo.methods.supervised.config` (argparse → config →
one library call); ``galmo run CONFIG.json`` re-runs a training through :func:`run_config`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from galmo.methods.supervised.config import DataEfficiencyConfig, EvaluateConfig, PredictConfig, SupervisedConfig


def register(sub) -> None:
    from galmo.cli import add_verb

    p = add_verb(sub, "train", "train a supervised morphology model (rotinv | simple_cnn | timm_classifier | "
                 "astroformer-SIZE)",
                 SupervisedConfig, cmd_train, out_kind="dir", required=("data", "out"))
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # testing the resume
    p = add_verb(sub, "predict", "probabilities / vote fractions per galaxy, with TTA and triage", PredictConfig,
                 cmd_predict, out_kind="file", required=("run", "data", "out"))
    from galmo.cli.engine import add_engine

    add_engine(p, "file")  # --engine ray: a folder of Parquet shards
    g = p.add_mutually_exclusive_group()
    g.add_argument("--triage", type=float, default=None, metavar="COVERAGE",
                   help="auto-classify this fraction (most confident); list the rest for experts (default: none)")
    g.add_argument("--threshold", type=float, default=None,
                   help="auto-classify the galaxies with confidence ≥ this (default: none)")
    add_verb(sub, "evaluate", "top-1, balanced accuracy, P/R, confusion, coverage, calibration, RMSE", EvaluateConfig,
             cmd_evaluate, out_kind="dir", required=("run", "data"))
    study = sub.add_parser("study", help="studies across many training runs (data-efficiency)")
    studies = study.add_subparsers(dest="study", metavar="STUDY", required=True)
    add_verb(studies, "data-efficiency", "accuracy vs training-set size: models × fractions × seeds, with and "
             "without the Astroformer recipe", DataEfficiencyConfig, cmd_study, out_kind="dir", required=("out",))


def run_train(cfg: SupervisedConfig) -> int:
    """Run one training config (an interruption is reported by galmo.cli.main: exit 130, resumable)."""
    from galmo.methods.supervised.run import run_train as train

    train(cfg)
    print(f"run folder: {cfg.out} (report: {Path(cfg.out) / 'report.html'})")
    return 0


def cmd_train(args) -> int:
    return run_train(SupervisedConfig.from_args(args, stop_after_steps=args.stop_after_steps))


def study(cfg: DataEfficiencyConfig) -> int:
    """Run (or finish) a data-efficiency study; the table and report in ``cfg.out``."""
    from galmo.methods.supervised.study import run_study

    table = run_study(cfg)
    print(f"{len(table)} runs; table {Path(cfg.out) / 'data_efficiency.csv'}, report {Path(cfg.out) / 'report.html'}")
    return 0


def cmd_study(args) -> int:
    """``galmo study data-efficiency``."""
    return study(DataEfficiencyConfig.from_args(args))


def run_study_config(path, out=None) -> int:
    """``galmo run STUDY/config.json [--out DIR]``: the same study again (finished runs in DIR are read back)."""
    cfg = DataEfficiencyConfig.load(path)
    return study(cfg.replace(out=str(out)) if out else cfg)


def run_config(path, out=None) -> int:
    """``galmo run CONFIG.json [--out DIR]``: the training saved in ``path``, again (same settings and seed)."""
    cfg = SupervisedConfig.load(path)
    return run_train(cfg.replace(out=str(out)) if out else cfg)


def _set_backend(name: str) -> None:
    from galmo.nn.infer import set_backend

    set_backend(name)


def cmd_predict(args) -> int:
    from galmo.core.catalog import write_catalog
    from galmo.methods.supervised.run import format_predictions, predict, triage, write_triage
    from galmo.sources import as_source
    from galmo.sources.base import report_rejected

    cfg = PredictConfig.from_args(args)
    if args.engine == "ray":
        from galmo.cli.engine import run_on_ray

        return run_on_ray("predict", cfg, args)
    _set_backend(cfg.backend)
    src = as_source(cfg.data, cfg.on_error)
    preds = predict(list(cfg.run), src, tta=cfg.tta, batch_size=cfg.batch_size, device=cfg.device,
                    progress=cfg.progress, framing=cfg.framing, crop_frac=cfg.crop_frac)
    if args.triage is not None or args.threshold is not None:
        auto, thr = triage(preds, coverage=args.triage, threshold=args.threshold)
        preds["auto_classified"] = auto
        files = write_triage(preds, auto, cfg.out, src)
        print(f"triage: {int(auto.sum())} auto-classified (confidence ≥ {thr:.4g}), {int((~auto).sum())} for "
              f"expert inspection: {files['expert_csv']}")
    write_catalog(format_predictions(preds, list(cfg.run), cfg.format), Path(cfg.out),
                  require_id=cfg.format == "galmo")
    print(f"{len(preds)} predictions → {cfg.out}")
    report_rejected(src, cfg.out, "file")
    return 0


def cmd_evaluate(args) -> int:
    from galmo.methods.supervised.run import evaluate

    cfg = EvaluateConfig.from_args(args)
    _set_backend(cfg.backend)
    evaluate(list(cfg.run), cfg.data, split=cfg.split, tta=cfg.tta, device=cfg.device, out=cfg.out,
             batch_size=cfg.batch_size, progress=cfg.progress, framing=cfg.framing, crop_frac=cfg.crop_frac)
    return 0
