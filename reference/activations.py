"""GELU in its exact (erf) form, as ``torch.nn.functional.gelu`` with ``approximate="none"``.

``gelu(x) = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))``. NumPy has no ``erf``, so the
element-wise loop is compiled with Numba, which provides ``math.erf``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


@njit(cache=True)
def _gelu_kernel(flat, out):  # pragma: no cover - compiled
    for n in range(flat.shape[0]):
        v = flat[n]
        # Phi(v) = (1 + erf(v / sqrt(2))) / 2 is the standard normal CDF; gelu(v) = v * Phi(v)
        out[n] = 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, element-wise.

    Parameters
    ----------
    x : ndarray
        Any shape, float32 or float64.

    Returns
    -------
    ndarray
        Same shape and dtype as ``x``.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    return _gelu_kernel(flat, out).reshape(x.shape)
