"""One interface over every encoder, so all are comparable on the same tasks.

:func:`load_encoder` gives an :class:`EmbeddingModel` for (a) a pretrained patch transformer run,
(b) any galmo checkpoint folder whose model has ``forward_features`` (supervised runs), (c) any timm
backbone name (offline EfficientNet-Lite0 by default, via :mod:`galmo.nn.backbones`).
:func:`embed_source` streams a source through it batch by batch (memory: one batch). Every forward
pass runs through the one inference loop: :func:`galmo.nn.infer.infer` for the patch transformer and
checkpoints (one module, :meth:`EmbeddingModel.module`, so ONNX Runtime applies), and
:func:`galmo.nn.backbones.encode` for timm backbones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError
from galmo.core.resample import Framing, Resampler, fit_source
from galmo.methods.embeddings.photometry import photometry_table

TOKENS = ("all", "image")


@dataclass
class EmbeddingModel:
    """An encoder: ``encode(images (B, C, H, W) [0, 1], photometry) → (B, d)`` float32."""

    name: str
    kind: str                      # "patch_transformer", "checkpoint" or "timm"
    model: object
    dim: int
    phot_names: list = field(default_factory=list)
    size: int | tuple | None = None  # timm input size (int or (height, width)); None: native
    device: str = "cpu"
    tokens: str = "all"            # patch transformers: "all" tokens or "image" tokens only
    input_shape: tuple | None = None  # (C or None: any bands, H, W) the images are resampled to
    framing: Framing = field(default_factory=Framing)  # how (galmo.core.resample), the model's record
    dihedral_mean: bool = False    # averaged over the 8 symmetries of the square by galmo embed --dihedral-mean

    def fitted(self, src=None, framing: Framing | None = None) -> tuple:
        """(source, resampler): THE resampling rule from ``src``'s images to this encoder's input
        (:func:`galmo.core.resample.fit_source`, said once); (src, None) when it takes any size."""
        if self.input_shape is None:
            return src, None
        return fit_source(src, self.input_shape, framing or self.framing)

    def module(self):
        """The embedding of one batch as one ``nn.Module`` (patch transformers and checkpoints:
        :class:`~galmo.nn.models.patch_transformer.FeatureEmbedder`), so that the inference loop can
        run it with ONNX Runtime (``--backend``)."""
        from galmo.nn.models.patch_transformer import FeatureEmbedder

        return FeatureEmbedder(self.model, self.tokens)

    def encode_batches(self, batches, fit: Resampler | None = None) -> np.ndarray:
        """Embeddings of an iterator of ``(images,)`` or ``(images, photometry)`` batches, one forward
        pass per batch, concatenated; the images brought to the input by ``fit`` (default
        :meth:`fitted`)."""
        fit = fit or self.fitted()[1]
        if fit is not None:
            batches = ((fit(b[0]), *b[1:]) for b in batches)
        if self.kind == "timm":
            from galmo.nn.backbones import encode

            return encode(self.model, (b[0] for b in batches), size=self.size, device=self.device)
        from galmo.nn.infer import infer

        return infer(self.module(), batches, device=self.device)

    def encode(self, images: np.ndarray, phot: np.ndarray | None = None, fit: Resampler | None = None) -> np.ndarray:
        """Embeddings of one array of images (one forward pass)."""
        batch = (images,) if phot is None or self.kind == "timm" else (images, phot)
        return self.encode_batches(iter([batch]), fit)


def load_encoder(spec: str | os.PathLike, device: str = "cpu", weights: str | None = "offline",
                 size=None, tokens: str = "all", dihedral_mean: bool = False) -> EmbeddingModel:
    """``spec``: a galmo checkpoint folder (pretrained patch transformer or supervised run) or a timm name.

    ``tokens`` (patch transformers with photometry tokens): "all" (image + photometry, the default)
    or "image" (image tokens only: no photometry needed or used). ``weights`` (timm): "offline", a
    file, "hub", or None / "none" (random). ``size`` (timm): input pixels, an int or (height, width).
    ``dihedral_mean`` (timm backbones and supervised runs): the embedding averaged over the 8
    symmetries of the square (:class:`galmo.nn.tta.DihedralMean`; contrastive runs always are)."""
    from galmo.nn.device import resolve_device

    device = str(resolve_device(device))
    path = Path(spec)
    if path.is_dir():
        return _symmetric(_load_checkpoint_encoder(path, str(spec), device, tokens), dihedral_mean)
    if path.exists() or os.sep in str(spec):
        raise GalmoError("not a galmo checkpoint folder (expected model.safetensors + config.json) "
                         "and not a timm model name", path=path)
    from galmo.nn.backbones import create_backbone, data_config

    weights = None if weights in (None, "none") else weights
    size = _image_size(size)
    model = create_backbone(str(spec), weights=weights, num_classes=0).eval()
    side = size or data_config(model)["input_size"][-1]
    hw = (side, side) if np.isscalar(side) else tuple(side)
    return _symmetric(EmbeddingModel(str(spec), "timm", model, int(model.num_features), size=size, device=device,
                                     input_shape=(None, *hw)), dihedral_mean)


def _symmetric(enc: EmbeddingModel, on: bool) -> EmbeddingModel:
    """``enc`` averaged over the 8 symmetries of the square when ``on`` (a timm backbone through its
    input preparation, :func:`galmo.nn.backbones.encoder_head`; a checkpoint through ``forward_features``);
    patch transformers and contrastive runs (already invariant) as they are."""
    from galmo.nn.models.contrastive import ContrastiveEncoder
    from galmo.nn.tta import DihedralMean

    if not on or enc.kind == "patch_transformer" or isinstance(enc.model, ContrastiveEncoder):
        return enc
    if enc.kind == "timm":
        from galmo.nn.backbones import encoder_head

        hw = enc.input_shape[1:]
        module = DihedralMean(encoder_head(enc.model, hw, None, "avg", enc.device), features=False)
    else:
        module = DihedralMean(enc.model)
    return replace(enc, kind="checkpoint", model=module, dihedral_mean=True)


def _image_size(size):
    """``--image-size``: None, one number (a square) or (height, width)."""
    if size is None or np.isscalar(size):
        return size
    size = [int(s) for s in size]
    if len(size) not in (1, 2):
        raise GalmoError(f"--image-size takes one number (square) or HEIGHT WIDTH, got {size}")
    return size[0] if len(size) == 1 else tuple(size)


def _load_checkpoint_encoder(path: Path, name: str, device: str, tokens: str) -> EmbeddingModel:
    from galmo.nn.checkpoint import load_checkpoint
    from galmo.nn.models.patch_transformer import PatchTransformer

    model, cfg = load_checkpoint(path, device=device)
    if isinstance(model, PatchTransformer):
        if tokens not in TOKENS:
            raise GalmoError(f"--tokens must be 'all' or 'image', got {tokens!r}")
        names = list(model.phot_names) if tokens == "all" else []
        return EmbeddingModel(name, "patch_transformer", model, model.num_features, names, device=device,
                              tokens=tokens, input_shape=(model.in_chans, model.img_size, model.img_size),
                              framing=Framing.from_dict(cfg.get("framing")))
    if not hasattr(model, "forward_features"):
        raise GalmoError(f"model {cfg['model']['name']!r} has no forward_features: cannot embed with it", path=path)
    dim = int(getattr(model, "num_features", 0) or 0)
    sup, kw = cfg.get("supervised") or {}, cfg["model"].get("kwargs", {})
    shape = sup.get("shape") or ((kw.get("in_chans"), kw["img_size"], kw["img_size"]) if "img_size" in kw else None)
    return EmbeddingModel(name, "checkpoint", model, dim, device=device, input_shape=tuple(shape) if shape else None,
                          framing=Framing.from_dict(sup.get("framing") or cfg.get("framing")))


def embed_source(encoder: EmbeddingModel, src, batch_size: int = 128, progress: bool = True,
                 fit: Resampler | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, embeddings (N, d) float32) for every galaxy of ``src``, one batch in memory at a time,
    brought to the encoder's input by ``fit`` (default: :meth:`EmbeddingModel.fitted`, said once)."""
    if fit is None:
        src, fit = encoder.fitted(src)
    cat = src.catalog
    phot_all = photometry_table(cat, encoder.phot_names) if encoder.phot_names else None
    positions = []

    def batches():
        for pos, images in src.iter_batches(batch_size=batch_size, kind="image", progress=progress):
            positions.append(pos)
            yield (images,) if phot_all is None else (images, phot_all[pos])

    X = encoder.encode_batches(batches(), fit)
    if not positions:
        raise GalmoError("no images to embed", path=getattr(src, "path", None))
    ids = cat["id"].astype(str).to_numpy()[np.concatenate(positions)]
    return ids, np.asarray(X).astype(np.float32)
