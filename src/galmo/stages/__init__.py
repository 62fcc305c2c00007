"""scikit-learn estimators, one per file: the stages of the unsupervised method (eUML, 2024) and
what it grew. Parameters in ``__init__``, learnt state in attributes ending in ``_``; ``fit`` learns,
``transform`` reads that state and changes nothing. They compose::

    from sklearn.pipeline import Pipeline
    from galmo.stages import AutoPCA, Encoder, PolarUnwrap, VotingClustering

    pipe = Pipeline([("polar", PolarUnwrap()), ("encode", Encoder()), ("pca", AutoPCA()),
                     ("cluster", VotingClustering(20))])
    groups = pipe.fit_predict(images)          # images: float32 (N, C, H, W) in [0, 1]

Image stages take and return float32 (N, C, H, W) arrays; :class:`Encoder` returns (N, D)
features. Importing this package imports no torch: the torch stages load it when they run.
"""

from galmo.stages.denoise import Denoiser
from galmo.stages.encode import Encoder
from galmo.stages.graph import GraphEmbedding
from galmo.stages.invariant import InvariantFeatures, InvariantProjection, augmented_features
from galmo.stages.pca import AutoPCA
from galmo.stages.polar import PolarUnwrap
from galmo.stages.voting import VotingClustering

__all__ = ["AutoPCA", "Denoiser", "Encoder", "GraphEmbedding", "InvariantFeatures", "InvariantProjection",
           "PolarUnwrap", "VotingClustering", "augmented_features"]
