"""``galmo pretrain``, ``embed``, ``similar``, ``outliers``, ``probe``: the embeddings method's verbs.

Each verb: flags generated from its config (:mod:`galmo.methods.embeddings.config`) → the config →
one library call (:mod:`galmo.methods.embeddings.run`) → a few printed lines.
"""

from __future__ import annotations

from galmo.methods.embeddings.config import EmbedConfig, OutliersConfig, PretrainConfig, ProbeConfig, SimilarConfig


def register(sub) -> None:
    from galmo.cli import add_verb
    from galmo.cli.engine import add_engine

    add_verb(sub, "pretrain", "self-supervised pretraining on unlabelled images: contrastive (a timm backbone) or astropt (a patch transformer)", PretrainConfig,
             cmd_pretrain, out_kind="dir", required=("data", "out"))
    p = add_verb(sub, "embed", "embed every galaxy of a source with any encoder", EmbedConfig, cmd_embed,
                 out_kind="file", required=("data", "out"))
    add_engine(p, "file")
    add_verb(sub, "similar", "nearest neighbours by cosine similarity (faiss); give --id or --image", SimilarConfig,
             cmd_similar, out_kind="file", required=("emb",))
    add_verb(sub, "outliers", "anomaly score per galaxy (IsolationForest + LOF grid, rank-normalised)",
             OutliersConfig, cmd_outliers, out_kind="dir", required=("emb", "out"))
    add_verb(sub, "probe", "linear probe with a fraction of the labels vs a CNN from scratch", ProbeConfig, cmd_probe,
             out_kind="file", required=("emb",))


def _print_pretrained(out, s: dict) -> None:
    best = s["best"] or {}
    first = s["history_first_loss"]
    print(f"pretrained {out}: {s['epochs_run']} epochs, first train loss "
          f"{first if first is None else format(first, '.4g')}, "
          f"best val loss {best.get('val_loss', best.get('train_loss', float('nan'))):.4g}")


def cmd_pretrain(args) -> int:
    from galmo.methods.embeddings.run import run_pretrain

    cfg = PretrainConfig.from_args(args)
    _print_pretrained(cfg.out, run_pretrain(cfg))
    return 0


def run_config(path, out=None) -> int:
    """``galmo run CONFIG.json`` of a pretrain run: the same settings again from scratch (into ``out``
    when given), so the same weights."""
    from galmo.methods.embeddings.run import run_pretrain

    cfg = PretrainConfig.load(path).replace(resume=False)
    cfg = cfg.replace(out=str(out)) if out else cfg
    _print_pretrained(cfg.out, run_pretrain(cfg))
    return 0


def cmd_embed(args) -> int:
    from galmo.methods.embeddings.run import run_embed

    if args.engine == "ray":
        from galmo.cli.engine import run_on_ray

        return run_on_ray("embed", EmbedConfig.from_args(args), args)
    r = run_embed(EmbedConfig.from_args(args))
    speed = r["meta"]["images_per_s"]
    print(f"wrote {r['path']}: {r['n']} embeddings of dimension {r['dim']}"
          + (f" ({speed:.0f} images/s)" if speed else ""))
    return 0


def cmd_similar(args) -> int:
    from galmo.methods.embeddings.run import run_similar

    cfg = SimilarConfig.from_args(args)
    r = run_similar(cfg)
    print(r["table"].drop(columns=["position"]).to_string(index=False))
    print(f"({'reused' if r['reused'] else 'built'} {r['index']} index {cfg.emb}.faiss)")
    if r["written"]:
        print(f"wrote {' and '.join(map(str, r['written']))}" + (f" ({r['note']})" if r["note"] else ""))
    return 0


def cmd_outliers(args) -> int:
    from galmo.methods.embeddings.run import run_outliers

    r = run_outliers(OutliersConfig.from_args(args))
    print(r["table"].head(10).to_string(index=False))
    auroc = r["metrics"].get("auroc_injected")
    note = r["metrics"].get("auroc_note")
    print(f"wrote {r['written'][0]} and {r['written'][1]}"
          + (f"; AUROC on injected anomalies {auroc:.3f}" if auroc is not None else f"; no AUROC: {note}" if note
             else ""))
    return 0


def cmd_probe(args) -> int:
    from galmo.methods.embeddings.run import run_probe

    df = run_probe(ProbeConfig.from_args(args))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0
