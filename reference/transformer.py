"""The Restormer transformer block and the U-net's down/up-sampling steps
(mirrors [`dfpir.model.transformer`][dfpir.model.transformer])."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .attention import mdta
from .conv import _conv2d_from
from .feedforward import gdfn
from .layernorm import _layer_norm_from
from .pixel_shuffle import pixel_shuffle, pixel_unshuffle


def transformer_block(x: np.ndarray, params: Mapping[str, np.ndarray], heads: int, prefix: str = "") -> np.ndarray:
    """``x + MDTA(LN1(x))`` then ``x + GDFN(LN2(x))``.

    Parameters
    ----------
    x : ndarray
        (B, C, H, W).
    params : mapping
        ``prefix + {"norm1.*", "attn.*", "norm2.*", "ffn.*"}``.
    heads : int
        Attention heads.
    prefix : str
        Name prefix, e.g. ``"encoder1.0."``.

    Returns
    -------
    ndarray
        (B, C, H, W).
    """
    x = x + mdta(_layer_norm_from(x, params, prefix + "norm1."), params, heads, prefix + "attn.")
    return x + gdfn(_layer_norm_from(x, params, prefix + "norm2."), params, prefix + "ffn.")


def downsample(x: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """3x3 conv C -> C/2 then pixel-unshuffle by 2: (B, C, H, W) -> (B, 2C, H/2, W/2).

    Parameters
    ----------
    x : ndarray
        (B, C, H, W), H and W even.
    params : mapping
        ``prefix + "conv.weight"``.
    prefix : str
        Name prefix, e.g. ``"down1."``.

    Returns
    -------
    ndarray
        (B, 2C, H/2, W/2).
    """
    return pixel_unshuffle(_conv2d_from(x, params, prefix + "conv."), 2)


def upsample(x: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """3x3 conv C -> 2C then pixel-shuffle by 2: (B, C, H, W) -> (B, C/2, 2H, 2W).

    Parameters
    ----------
    x : ndarray
        (B, C, H, W).
    params : mapping
        ``prefix + "conv.weight"``.
    prefix : str
        Name prefix, e.g. ``"up1."``.

    Returns
    -------
    ndarray
        (B, C/2, 2H, 2W).
    """
    return pixel_shuffle(_conv2d_from(x, params, prefix + "conv."), 2)
