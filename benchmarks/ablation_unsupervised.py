"""Ablation of the unsupervised pipeline on the default sims, K=20: the denoiser and the polar unwrap on/off,
the reduction (invariant projection learnt from augmented views, standardised PCA, none) and the graph embedding
on/off, all members required to agree, plus the default with 2 of 3.
Prints one JSON line per variant (fraction classified, purity/NMI/ARI of the classified set).
Usage: python benchmarks/ablation_unsupervised.py [N] [FEATURES|SIZE] [SEED]
FEATURES: a preset of galmo cluster --features (texture, the default, or euml); a number: the euml
preset at that encoder size in px. SEED: the clustering and augmentation seed (default 0)."""
import json
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
from galmo.methods.unsupervised.run import (DEFAULTS, clean_display, cluster_features,  # noqa: E402
                                          encoding_options, features, score)
from galmo.simulate import default_sample  # noqa: E402
from galmo.sources import open_source  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 0
spec = sys.argv[2] if len(sys.argv) > 2 else "texture"
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
enc = encoding_options("euml", size=int(spec)) if spec.isdigit() else encoding_options(spec)
src = open_source(default_sample())
pos = np.arange(len(src)) if not n else np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
X = src.read(pos)
y = src.catalog["label"].to_numpy()[pos]
k = 20 if len(pos) >= 1000 else 10
den = None
for denoise in (False, True):
    for polar in (True, False):
        t = time.perf_counter()
        Xin = X
        if denoise and den is not None:
            Xin = den.transform(X)
        F, info = features(Xin, denoise=denoise and den is None, polar=polar, **enc, denoise_epochs=4,
                           denoise_max_train=1500, clean=clean_display(src, pos[:300]) if denoise and den is None
                           else None, views=DEFAULTS["views"], views_max_fit=DEFAULTS["views_max_fit"], seed=seed,
                           log=lambda s: print(s, file=sys.stderr), progress=False)
        if denoise and den is None:
            den = info["denoiser"]  # PSNR measured on the first 300 only
        extra = {k2: info[k2] for k2 in ("psnr_noisy", "psnr_denoised", "psnr_gain") if k2 in info}
        rows = [(red, graph, None) for red in ("invariant", "pca", "none") for graph in (True, False)]
        rows.insert(1, ("invariant", True, 2))
        for red, graph, min_agree in rows:
            vc, red_obj, _, _ = cluster_features(F, k=k, invariant=red == "invariant", pca=red == "pca",
                                                 views=info["views"], view_index=info["view_index"],
                                                 min_agree=min_agree, graph=graph, seed=seed)
            s = score(vc, y)[k]
            print(json.dumps({"n": len(pos), "k": k, "features": spec, "seed": seed, "denoise": denoise,
                              "polar": polar, "reduction": red, "graph": graph, "min_agree": min_agree or 3,
                              "components": red_obj.n_components_ if red_obj is not None else None,
                              **{c: round(v, 4) if isinstance(v, float) else v for c, v in s.items()},
                              **extra, "seconds": round(time.perf_counter() - t, 1)}), flush=True)
