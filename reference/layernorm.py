"""Restormer's per-pixel LayerNorm over the channel axis of (B, C, H, W) arrays.

Mirrors [`dfpir.model.layernorm.layer_norm`][dfpir.model.layernorm.layer_norm]. Two variants:

* "WithBias": ``(x - mean) / sqrt(var + eps) * weight + bias``;
* "BiasFree": ``x / sqrt(var + eps) * weight`` -- the mean is *not* subtracted (Restormer's choice).

The variance is the biased one (divide by C) and ``eps = 1e-5``.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
from numba import njit

from ._params import get, get_optional

EPS = 1e-5


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> np.ndarray:
    """Normalise every pixel's channel vector (vectorised NumPy).

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features.
    weight : ndarray
        (C,) per-channel scale.
    bias : ndarray or None
        (C,) per-channel shift; ``None`` selects the BiasFree variant (no mean subtraction).

    Returns
    -------
    ndarray
        (B, C, H, W), same dtype as ``x``.
    """
    var = x.var(axis=1, keepdims=True)  # (B, 1, H, W), biased
    scale = weight[None, :, None, None] / np.sqrt(var + EPS)  # (B, C, H, W)
    if bias is None:
        return (x * scale).astype(x.dtype, copy=False)
    mu = x.mean(axis=1, keepdims=True)  # (B, 1, H, W)
    return ((x - mu) * scale + bias[None, :, None, None]).astype(x.dtype, copy=False)


@njit(cache=True)
def _layer_norm_kernel(x, weight, bias, with_bias, out):  # pragma: no cover - compiled
    b_, c_, h_, w_ = x.shape
    for b in range(b_):
        for i in range(h_):
            for j in range(w_):
                # mean over channels: mu = (1/C) sum_c x[b, c, i, j]
                mu = 0.0
                for c in range(c_):
                    mu += x[b, c, i, j]
                mu /= c_
                # biased variance: var = (1/C) sum_c (x - mu)^2
                var = 0.0
                for c in range(c_):
                    var += (x[b, c, i, j] - mu) ** 2
                var /= c_
                # inverse standard deviation: 1 / sqrt(var + eps)
                inv = 1.0 / np.sqrt(var + EPS)
                for c in range(c_):
                    if with_bias:
                        # WithBias: (x - mu) * inv * weight + bias
                        out[b, c, i, j] = (x[b, c, i, j] - mu) * inv * weight[c] + bias[c]
                    else:
                        # BiasFree: x * inv * weight (mean not subtracted)
                        out[b, c, i, j] = x[b, c, i, j] * inv * weight[c]
    return out


def layer_norm_loop(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> np.ndarray:
    """Loop (Numba) version of [`layer_norm`][reference.layernorm.layer_norm], one pixel at a time.

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features.
    weight : ndarray
        (C,) scale.
    bias : ndarray or None
        (C,) shift, or ``None`` for BiasFree.

    Returns
    -------
    ndarray
        (B, C, H, W), same dtype as ``x``.
    """
    with_bias = bias is not None
    b = np.asarray(bias, dtype=x.dtype) if with_bias else np.zeros(x.shape[1], dtype=x.dtype)
    out = np.empty_like(x)
    return _layer_norm_kernel(x, np.asarray(weight, dtype=x.dtype), b, with_bias, out)


def _layer_norm_from(x: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """[`dfpir.model.layernorm.LayerNorm`][dfpir.model.layernorm.LayerNorm] from parameters ``prefix + "weight"`` (and ``"bias"``).

    The variant follows the parameters: a ``bias`` entry means WithBias, none means BiasFree.

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features.
    params : mapping
        Parameter arrays under PyTorch state-dict names.
    prefix : str
        Name prefix of this LayerNorm, e.g. ``"encoder1.0.norm1."``.

    Returns
    -------
    ndarray
        (B, C, H, W).
    """
    return layer_norm(x, get(params, prefix, "weight"), get_optional(params, prefix, "bias"))
