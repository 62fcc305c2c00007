"""Ablation of the unsupervised pipeline on the default sims: each stage on/off (and the optional
graph embedding), K=20.
Prints one JSON line per variant (fraction classified, purity/NMI/ARI of the classified set).
Usage: python benchmarks/ablation_unsupervised.py [N] [FEATURES|SIZE] [std|raw]
FEATURES: a preset of galmo cluster --features (texture, the default, or euml); a number: the euml
preset at that encoder size in px. std: standardise before PCA (default)."""
import json
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
from galmo.pipelines.unsupervised import (clean_display, cluster_features, encoding_options,  # noqa: E402
                                          features, score)
from galmo.simulate import default_sample  # noqa: E402
from galmo.sources import open_source  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 0
spec = sys.argv[2] if len(sys.argv) > 2 else "texture"
enc = encoding_options("euml", size=int(spec)) if spec.isdigit() else encoding_options(spec)
standardize = (sys.argv[3] != "raw") if len(sys.argv) > 3 else True
src = open_source(default_sample())
pos = np.arange(len(src)) if not n else np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
X = src.read(pos)
y = src.catalog["label"].to_numpy()[pos]
k = 20 if len(pos) >= 1000 else 10
den = None
for denoise in (True, False):
    for polar in (True, False):
        t = time.perf_counter()
        Xin = X
        if denoise and den is not None:
            Xin = den.transform(X)
        F, info = features(Xin, denoise=denoise and den is None, polar=polar, **enc, denoise_epochs=4,
                           denoise_max_train=1500, clean=clean_display(src, pos[:300]) if denoise and den is None
                           else None, log=lambda s: print(s, file=sys.stderr), progress=False)
        if denoise and den is None:
            den = info["denoiser"]
            # PSNR measured on the first 300 only
        extra = {k2: info[k2] for k2 in ("psnr_noisy", "psnr_denoised", "psnr_gain") if k2 in info}
        for pca, graph in ((True, False), (False, False), (True, True)):
            for min_agree in (None, 2):
                vc, ap, P, _ = cluster_features(F, k=k, pca=pca, standardize=standardize, min_agree=min_agree,
                                                graph=graph)
                s = score(vc, y)[k]
                print(json.dumps({"n": len(pos), "k": k, "features": spec, "standardize": standardize and pca,
                                  "denoise": denoise, "polar": polar, "pca": pca, "graph": graph,
                                  "min_agree": min_agree or 3, "pca_components": ap.n_components_ if ap else None,
                                  **{c: round(v, 4) if isinstance(v, float) else v for c, v in s.items()},
                                  **extra, "seconds": round(time.perf_counter() - t, 1)}), flush=True)
