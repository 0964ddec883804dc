"""The whole DFPIR forward pass (mirrors [`dfpir.model.network.DFPIR`][dfpir.model.network.DFPIR]).

``reference.dfpir_forward(params, image, prompt, config)`` takes the NumPy form of the PyTorch
model's ``state_dict()`` (same names) and ``dataclasses.asdict(model.config)``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from .conv import _conv2d_from
from .dgpb import dgpb
from .transformer import downsample, transformer_block, upsample

MULTIPLE = 8  # three 2x downsamplings


def pad_to_multiple(x: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Pad the bottom and right of (B, C, H, W) up to a multiple of ``multiple``.

    Reflect padding (torch ``"reflect"`` == NumPy ``"reflect"``: the edge pixel is not repeated)
    when both pads are smaller than the respective size, otherwise edge replication.

    Parameters
    ----------
    x : ndarray
        (B, C, H, W).
    multiple : int
        Target multiple.

    Returns
    -------
    ndarray
        (B, C, H', W') with H', W' the next multiples; ``x`` itself when no padding is needed.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


def _stage(x: np.ndarray, params: Mapping[str, np.ndarray], name: str, count: int, heads: int) -> np.ndarray:
    for i in range(count):
        x = transformer_block(x, params, heads, f"{name}.{i}.")
    return x


def dfpir_forward(
    params: Mapping[str, np.ndarray],
    image: np.ndarray,
    prompt: Optional[np.ndarray],
    config: Mapping[str, Any],
) -> np.ndarray:
    """Restore ``image`` with the DFPIR network described by ``config`` and ``params``.

    Computes in the dtype of ``image`` (float32 or float64): parameters and prompt are cast to it.

    Parameters
    ----------
    params : mapping
        ``{name: ndarray}``, the PyTorch model's ``state_dict()`` converted to NumPy.
    image : ndarray
        (B, 3, H, W) images, any H and W (padded to a multiple of 8, output cropped back).
    prompt : ndarray or None
        (B, prompt_dim) prompt embeddings; one per sample, they may differ. Unused (may be
        ``None``) when ``config["use_dgpb"]`` is false.
    config : mapping
        ``dataclasses.asdict(model.config)``: ``num_blocks``, ``num_refinement_blocks``, ``heads``,
        ``use_dgpb``, ``keep_ratio`` are read (widths and the LayerNorm variant follow ``params``).

    Returns
    -------
    ndarray
        (B, 3, H, W) restored images, not clipped.
    """
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[1] != 3 or not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be a float (B, 3, H, W) array, got {image.dtype} {image.shape}")
    dt = image.dtype
    p = {k: np.asarray(v).astype(dt, copy=False) if np.issubdtype(np.asarray(v).dtype, np.floating) else np.asarray(v)
         for k, v in params.items()}
    use_dgpb = bool(config.get("use_dgpb", True))
    if use_dgpb:
        if prompt is None:
            raise ValueError("this configuration uses DGPBs and needs a prompt (B, prompt_dim)")
        prompt = np.asarray(prompt, dtype=dt)
    b1, b2, b3, b4 = (int(n) for n in config["num_blocks"])
    h1, h2, h3, h4 = (int(n) for n in config["heads"])
    refine = int(config["num_refinement_blocks"])
    keep = float(config.get("keep_ratio", 0.9))

    def skip(level: int, f: np.ndarray, heads: int) -> np.ndarray:
        return dgpb(f, prompt, p, heads, keep, f"dgpb{level}.") if use_dgpb else f

    height, width = image.shape[-2:]
    x = pad_to_multiple(image)
    f1 = _stage(_conv2d_from(x, p, "embed."), p, "encoder1", b1, h1)  # (B, d, H, W)
    f2 = _stage(downsample(f1, p, "down1."), p, "encoder2", b2, h2)  # (B, 2d, H/2, W/2)
    f3 = _stage(downsample(f2, p, "down2."), p, "encoder3", b3, h3)  # (B, 4d, H/4, W/4)
    z = _stage(downsample(f3, p, "down3."), p, "latent", b4, h4)  # (B, 8d, H/8, W/8)
    z = skip(4, z, h4)  # the latent is replaced by its DGPB output
    d3 = np.concatenate([upsample(z, p, "up3."), skip(3, f3, h3)], axis=1)  # (B, 8d, H/4, W/4)
    d3 = _stage(_conv2d_from(d3, p, "fuse3."), p, "decoder3", b3, h3)  # (B, 4d, H/4, W/4)
    d2 = np.concatenate([upsample(d3, p, "up2."), skip(2, f2, h2)], axis=1)  # (B, 4d, H/2, W/2)
    d2 = _stage(_conv2d_from(d2, p, "fuse2."), p, "decoder2", b2, h2)  # (B, 2d, H/2, W/2)
    d1 = np.concatenate([upsample(d2, p, "up1."), skip(1, f1, h1)], axis=1)  # (B, 2d, H, W), no fuse
    d1 = _stage(d1, p, "decoder1", b1, h1)
    out = _conv2d_from(_stage(d1, p, "refinement", refine, h1), p, "output.") + x  # global residual
    return out[..., :height, :width]
