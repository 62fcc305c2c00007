"""Ablation of the unsupervised pipeline on the default sims, K=20: the denoiser and the polar unwrap on/off,
the reduction (invariant projection learnt from augmented views, standardised PCA, none) and the graph embedding
on/off, all members required to agree, plus the default with 2 of 3.
Prints one JSON line per variant (fraction classified, purity/NMI/ARI of the classified set).
Usage: python benchmarks/ablation_unsupervised.py [N] [FEATURES|SIZE] [SEED]
FEATURES: a preset of galmo cluster --features (texture, the default, or euml); a number: the euml
preset at that encoder size in px. SEED: the clustering and augmentation seed (default 0).
The features of each (denoise, polar) pair are computed once (galmo.methods.unsupervised.run.features, the
pipeline's own stages and draws) and reused by every reduction."""
import json
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
from galmo.methods.unsupervised.config import ClusterConfig  # noqa: E402
from galmo.methods.unsupervised.run import clean_display, cluster_features, features, score  # noqa: E402
from galmo.simulate import default_sample  # noqa: E402
from galmo.sources import open_source  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 0
spec = sys.argv[2] if len(sys.argv) > 2 else "texture"
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
src = open_source(default_sample())
pos = np.arange(len(src)) if not n else np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
X = src.read(pos)
y = src.catalog["label"].to_numpy()[pos]
base = ClusterConfig(k=(20 if len(pos) >= 1000 else 10,), seed=seed, denoise_max_train=1500, progress=False,
                     **({"features": "euml", "image_size": (int(spec),)} if spec.isdigit() else {"features": spec}))


def variants():
    rows = [(red, graph, None) for red in ("invariant", "pca", "none") for graph in (True, False)]
    rows.insert(1, ("invariant", True, 2))
    return rows


for denoise in (False, True):
    for polar in (True, False):
        t = time.perf_counter()
        cfg = base.replace(denoise=denoise, polar=polar)
        F, V, idx, info = features(X, cfg, clean=clean_display(src, pos[:300]) if denoise else None,
                                   log=lambda s: print(s, file=sys.stderr))
        extra = {k2: info[k2] for k2 in ("psnr_noisy", "psnr_denoised", "psnr_gain") if k2 in info}
        for red, graph, min_agree in variants():
            c = cfg.replace(invariant=red == "invariant", pca=red == "pca", graph=graph, min_agree=min_agree)
            vc, red_obj, _, _ = cluster_features(F, c, V, idx)
            per_k = {k: (r["labels"], r["agreement"], r["member_labels"]) for k, r in vc.per_k_.items()}
            s = score(per_k, y, vc.member_names_)[c.k[0]]
            print(json.dumps({"n": len(pos), "k": c.k[0], "features": spec, "seed": seed, "denoise": denoise,
                              "polar": polar, "reduction": red, "graph": graph, "min_agree": min_agree or 3,
                              "components": red_obj.n_components_ if red_obj is not None else None,
                              **{k2: round(v, 4) if isinstance(v, float) else v for k2, v in s.items()},
                              **extra, "seconds": round(time.perf_counter() - t, 1)}), flush=True)
