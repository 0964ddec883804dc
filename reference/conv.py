"""2-D convolutions with PyTorch's conventions: (B, C, H, W) inputs, (out, in/groups, kh, kw)
weights, stride 1, zero padding ``k // 2`` (so 1x1 and 3x3 keep the spatial size), optional groups.

Covers the three kinds DFPIR uses: 1x1 (channel mixing), depthwise 3x3 (``groups = C``) and dense
3x3. Like ``torch.nn.functional.conv2d`` this is a cross-correlation (the kernel is not flipped).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
from numba import njit

from ._params import get, get_optional


def _check(x: np.ndarray, weight: np.ndarray, groups: int) -> None:
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d needs (B, C, H, W) input and 4-d weight, got {x.shape} and {weight.shape}")
    c_out, c_in_g, kh, kw = weight.shape
    if x.shape[1] != c_in_g * groups or c_out % groups:
        raise ValueError(f"conv2d: input {x.shape} and weight {weight.shape} do not fit groups={groups}")
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError("conv2d: only odd kernel sizes ('same' padding k // 2) are supported")


def conv2d(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None, groups: int = 1) -> np.ndarray:
    """Same-size 2-D convolution (vectorised: one matrix product per kernel tap).

    Parameters
    ----------
    x : ndarray
        (B, C_in, H, W) input.
    weight : ndarray
        (C_out, C_in / groups, kh, kw) kernel, odd kh and kw.
    bias : ndarray, optional
        (C_out,) bias.
    groups : int
        Channel groups (``C_in`` for a depthwise conv).

    Returns
    -------
    ndarray
        (B, C_out, H, W), dtype of ``x``.
    """
    _check(x, weight, groups)
    b, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    weight = weight.astype(x.dtype, copy=False)
    if kh == 1 and kw == 1 and groups == 1:
        # 1x1: a matrix product over channels, (C_out, C_in) @ (B, C_in, HW)
        out = np.matmul(weight[:, :, 0, 0], x.reshape(b, c_in, h * w)).reshape(b, c_out, h, w)
    else:
        ph, pw = kh // 2, kw // 2
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # zero padding
        out = np.zeros((b, c_out, h, w), dtype=x.dtype)
        if groups == c_in and c_in_g == 1:
            # depthwise (with channel multiplier m = C_out / C_in): out[o] uses input channel o // m
            src = np.repeat(xp, c_out // c_in, axis=1) if c_out != c_in else xp
            for dy in range(kh):
                for dx in range(kw):
                    out += weight[None, :, 0, dy, dx, None, None] * src[:, :, dy : dy + h, dx : dx + w]
        else:
            g_out = c_out // groups
            for g in range(groups):
                xg = xp[:, g * c_in_g : (g + 1) * c_in_g]  # (B, C_in/groups, H+2p, W+2p)
                wg = weight[g * g_out : (g + 1) * g_out]  # (C_out/groups, C_in/groups, kh, kw)
                acc = out[:, g * g_out : (g + 1) * g_out]
                for dy in range(kh):
                    for dx in range(kw):
                        patch = np.ascontiguousarray(xg[:, :, dy : dy + h, dx : dx + w]).reshape(b, c_in_g, h * w)
                        acc += np.matmul(wg[:, :, dy, dx], patch).reshape(b, g_out, h, w)
    if bias is not None:
        out = out + bias.astype(x.dtype, copy=False)[None, :, None, None]
    return out


@njit(cache=True)
def _conv2d_kernel(x, weight, bias, groups, out):  # pragma: no cover - compiled
    b_, c_in, h_, w_ = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    g_out = c_out // groups
    ph = kh // 2
    pw = kw // 2
    for b in range(b_):
        for o in range(c_out):
            # output channel o belongs to group g and reads input channels g*c_in_g .. (g+1)*c_in_g - 1
            g = o // g_out
            for i in range(h_):
                for j in range(w_):
                    # out[b, o, i, j] = bias[o] + sum_{c, dy, dx} w[o, c, dy, dx] * x[b, g*c_in_g + c, i+dy-ph, j+dx-pw]
                    acc = bias[o]
                    for c in range(c_in_g):
                        for dy in range(kh):
                            y = i + dy - ph
                            # zero padding: taps that fall outside the image contribute nothing
                            if y < 0 or y >= h_:
                                continue
                            for dx in range(kw):
                                xx = j + dx - pw
                                if xx < 0 or xx >= w_:
                                    continue
                                acc += weight[o, c, dy, dx] * x[b, g * c_in_g + c, y, xx]
                    out[b, o, i, j] = acc
    return out


def conv2d_loop(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None, groups: int = 1) -> np.ndarray:
    """Loop (Numba) version of [`conv2d`][reference.conv.conv2d]: the textbook six nested sums.

    Parameters
    ----------
    x : ndarray
        (B, C_in, H, W) input.
    weight : ndarray
        (C_out, C_in / groups, kh, kw) kernel.
    bias : ndarray, optional
        (C_out,) bias.
    groups : int
        Channel groups.

    Returns
    -------
    ndarray
        (B, C_out, H, W).
    """
    _check(x, weight, groups)
    c_out = weight.shape[0]
    bvec = np.zeros(c_out, dtype=x.dtype) if bias is None else np.asarray(bias, dtype=x.dtype)
    out = np.empty((x.shape[0], c_out, x.shape[2], x.shape[3]), dtype=x.dtype)
    return _conv2d_kernel(np.ascontiguousarray(x), np.ascontiguousarray(weight, dtype=x.dtype), bvec, groups, out)


def _conv2d_from(x: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "", groups: int = 1) -> np.ndarray:
    """An ``nn.Conv2d`` (same padding) from parameters ``prefix + "weight"`` and optional ``"bias"``.

    Parameters
    ----------
    x : ndarray
        (B, C_in, H, W) input.
    params : mapping
        Parameter arrays under PyTorch state-dict names.
    prefix : str
        Name prefix of the conv, e.g. ``"embed."``.
    groups : int
        Channel groups.

    Returns
    -------
    ndarray
        (B, C_out, H, W).
    """
    return conv2d(x, get(params, prefix, "weight"), get_optional(params, prefix, "bias"), groups)
