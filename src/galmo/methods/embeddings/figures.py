"""Figures of the embeddings method: montages of galaxies by id and the 2-D map of embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from galmo.methods.embeddings.threads import single_threaded_blas


def montage_rows(src, ids_rows, titles_rows, path, suptitle=None):
    """One montage PNG: a row of galaxies (by catalog id) per entry of ``ids_rows``, titled."""
    from galmo.plots import montage

    pos_of = pd.Series(np.arange(len(src)), index=src.catalog["id"].astype(str).to_numpy())
    flat = [i for row in ids_rows for i in row]
    titles = [t for row in titles_rows for t in row]
    images = src.read(pos_of.loc[flat].to_numpy(), kind="image")
    return montage(list(images), path, titles=titles, ncols=max(len(r) for r in ids_rows), suptitle=suptitle)


@single_threaded_blas
def map2d(X: np.ndarray, quick: bool) -> np.ndarray:
    """2-D map of embeddings: PCA to 30 dimensions, then t-SNE (the first two PCs when ``quick`` or
    above 5000 galaxies)."""
    from sklearn.decomposition import PCA

    Z = PCA(n_components=min(30, X.shape[1], len(X)), random_state=0).fit_transform(X)
    if quick or len(X) > 5000:
        return Z[:, :2]
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, init="pca", random_state=0, perplexity=30, max_iter=500).fit_transform(Z)
