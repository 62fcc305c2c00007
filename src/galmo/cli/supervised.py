"""``galmo train``, ``galmo predict``, ``galmo evaluate``: the supervised method's verbs."""

from __future__ import annotations

import sys
from pathlib import Path

from galmo.methods.supervised.config import MODELS, TARGETS


def register(sub) -> None:
    import argparse

    from galmo.cli import add_common

    p = sub.add_parser("train", help="train a supervised morphology model (rotinv | simple_cnn | timm_classifier)")
    p.add_argument("--data", required=True, help="labelled source (HDF5, GZ2, FITS/PNG folder with labels, ...)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/rotinv")
    p.add_argument("--model", default="rotinv", choices=MODELS, help="default rotinv (the view-pooling network)")
    p.add_argument("--backbone", default=None, help="timm_classifier: any timm name (default tf_efficientnet_lite0)")
    p.add_argument("--weights", default="auto", help="timm_classifier: auto (offline weights when known, else "
                   "random), offline, none, FILE or hub")
    p.add_argument("--target", default="class", choices=TARGETS, help="Galaxy10 class or Galaxy Zoo vote fractions")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=None, help="rotinv/simple_cnn: base channel width (default 32)")
    p.add_argument("--downsample", type=int, default=None, help="rotinv: stride of the first convolution (default 2)")
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--patience", type=int, default=None, help="early stop after this many epochs without improvement")
    p.add_argument("--max-images", type=int, default=None, help="train on a random subset of this many galaxies")
    p.add_argument("--no-augment", action="store_true", help="no rotation/translation/zoom/flip/brightness augmentation")
    p.add_argument("--zoom", type=float, default=None, help="augmentation: log-uniform zoom in [1/Z, Z] (default 1.3)")
    p.add_argument("--translate", type=float, default=None, help="augmentation: max shift in pixels (default 4)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights (e.g. 0.999)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="training arithmetic: bf16 autocast (CPUs with AVX-512 BF16 or AMX, recent GPUs) or "
                        "fp16 (CUDA); weights and predictions stay fp32")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions)")
    p.add_argument("--tta", type=int, default=1, help="test-time transforms for the final evaluation (default 1)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--split-from", default=None, metavar="RUN",
                   help="reuse the train/val/test split of another run (compare or ensemble on the same test set)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # testing the resume
    add_common(p, device=True, seed=True, batch_size=64, on_error=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="probabilities / vote fractions per galaxy, with TTA and triage")
    p.add_argument("--model", required=True, nargs="+", metavar="RUN",
                   help="a run folder made by `galmo train`; several: an ensemble (probabilities averaged)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="output .parquet or .csv (same id column)")
    p.add_argument("--tta", type=int, default=1, help="average over N transforms (8 = dihedral group; paper: 60)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--triage", type=float, default=None, metavar="COVERAGE",
                   help="auto-classify this fraction (most confident); list the rest for experts")
    g.add_argument("--threshold", type=float, default=None, help="auto-classify confidence ≥ this")
    add_common(p, device=True, batch_size=256, on_error=True)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="top-1, balanced accuracy, P/R, confusion, coverage, calibration, RMSE")
    p.add_argument("--model", required=True, nargs="+", metavar="RUN",
                   help="a run folder made by `galmo train`; several: their averaged ensemble (needs --out; "
                        "members must not have trained on the test split: train them with --split-from)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["test", "all"],
                   help="the run's saved test split when its ids are in --data (default), or every galaxy")
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("--out", default=None, help="folder for metrics/figures/report (default: the run folder)")
    add_common(p, device=True, batch_size=256)
    p.set_defaults(func=cmd_evaluate)


def cmd_train(args) -> int:
    from galmo.methods.supervised.run import train
    from galmo.nn.train import TrainingInterrupted

    weights = None if args.weights == "none" else args.weights
    try:
        train(args.data, args.out, model=args.model, target=args.target, backbone=args.backbone, weights=weights,
              width=args.width, downsample=args.downsample, epochs=args.epochs, batch_size=args.batch_size,
              lr=args.lr, val_frac=args.val_frac, test_frac=args.test_frac, seed=args.seed, device=args.device,
              resume=args.resume, patience=args.patience, augment=not args.no_augment, max_images=args.max_images,
              stop_after_steps=args.stop_after_steps, progress=not args.no_progress, tta=args.tta,
              on_error=args.on_error, split_from=args.split_from, ema=args.ema, precision=args.precision,
              channels_last=args.channels_last, zoom=args.zoom, translate=args.translate)
    except TrainingInterrupted as e:
        print(f"galmo: interrupted: {e}; run again with --resume", file=sys.stderr)
        return 130
    print(f"run folder: {args.out} (report: {Path(args.out) / 'report.html'})")
    return 0


def cmd_predict(args) -> int:
    from galmo.core.catalog import write_catalog
    from galmo.methods.supervised.run import predict, triage, write_triage
    from galmo.sources import as_source

    src = as_source(args.data, args.on_error)
    preds = predict(args.model, src, tta=args.tta, batch_size=args.batch_size, device=args.device)
    if args.triage is not None or args.threshold is not None:
        auto, thr = triage(preds, coverage=args.triage, threshold=args.threshold)
        preds["auto_classified"] = auto
        files = write_triage(preds, auto, args.out, src)
        print(f"triage: {int(auto.sum())} auto-classified (confidence ≥ {thr:.4g}), {int((~auto).sum())} for "
              f"expert inspection: {files['expert_csv']}")
    write_catalog(preds, Path(args.out))
    print(f"{len(preds)} predictions → {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from galmo.methods.supervised.run import evaluate

    evaluate(args.model, args.data, split=args.split, tta=args.tta, device=args.device, out=args.out,
             batch_size=args.batch_size)
    return 0
