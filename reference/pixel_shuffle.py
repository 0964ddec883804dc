"""PixelShuffle / PixelUnshuffle with PyTorch's channel ordering.

``pixel_unshuffle`` with factor r maps (B, C, H, W) -> (B, C r^2, H/r, W/r) and
``out[b, c*r*r + dy*r + dx, i, j] = x[b, c, i*r + dy, j*r + dx]``; ``pixel_shuffle`` is its inverse.
Both are pure index permutations, so they are exact (bit for bit).
"""

from __future__ import annotations

import numpy as np


def pixel_unshuffle(x: np.ndarray, factor: int = 2) -> np.ndarray:
    """Space-to-depth: (B, C, H, W) -> (B, C*r*r, H/r, W/r) (torch ``nn.PixelUnshuffle``).

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) with H and W divisible by ``factor``.
    factor : int
        Downscale factor r.

    Returns
    -------
    ndarray
        (B, C*r*r, H/r, W/r).
    """
    b, c, h, w = x.shape
    r = factor
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle: H and W ({h}, {w}) must be divisible by {r}")
    t = x.reshape(b, c, h // r, r, w // r, r)  # (B, C, i, dy, j, dx)
    t = t.transpose(0, 1, 3, 5, 2, 4)  # (B, C, dy, dx, i, j)
    return np.ascontiguousarray(t).reshape(b, c * r * r, h // r, w // r)


def pixel_shuffle(x: np.ndarray, factor: int = 2) -> np.ndarray:
    """Depth-to-space: (B, C*r*r, H, W) -> (B, C, H*r, W*r) (torch ``nn.PixelShuffle``).

    Parameters
    ----------
    x : ndarray
        (B, C*r*r, H, W) input.
    factor : int
        Upscale factor r.

    Returns
    -------
    ndarray
        (B, C, H*r, W*r).
    """
    b, crr, h, w = x.shape
    r = factor
    if crr % (r * r):
        raise ValueError(f"pixel_shuffle: {crr} channels are not divisible by {r * r}")
    c = crr // (r * r)
    t = x.reshape(b, c, r, r, h, w)  # (B, C, dy, dx, i, j)
    t = t.transpose(0, 1, 4, 2, 5, 3)  # (B, C, i, dy, j, dx)
    return np.ascontiguousarray(t).reshape(b, c, h * r, w * r)
