"""MDTA: Restormer's multi-Dconv-head transposed attention (attention across channels).

Per head, with ``q, k, v`` of shape (c, HW), ``c = C / heads``::

    q_hat = q / max(||q||, 1e-12)          # L2 over the pixel axis, row by row
    k_hat = k / max(||k||, 1e-12)
    logits = (q_hat @ k_hat^T) * t          # (c, c) scaled cosine similarities, t = temperature
    out = softmax(logits, axis=-1) @ v      # (c, HW)

Mirrors [`dfpir.model.attention`][dfpir.model.attention].
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from numba import njit

from ._params import get
from .conv import _conv2d_from

NORM_EPS = 1e-12


def split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, C, H, W) -> (B, heads, C/heads, H*W); head h holds channels ``h*c .. (h+1)*c - 1``.

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features, C divisible by ``heads``.
    heads : int
        Number of heads.

    Returns
    -------
    ndarray
        (B, heads, C/heads, H*W) view.
    """
    b, c, h, w = x.shape
    if c % heads:
        raise ValueError(f"split_heads: {c} channels cannot be split into {heads} heads")
    return x.reshape(b, heads, c // heads, h * w)


def merge_heads(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, heads, c, H*W) -> (B, heads*c, H, W), the inverse of [`split_heads`][reference.attention.split_heads].

    Parameters
    ----------
    x : ndarray
        (B, heads, c, H*W).
    height, width : int
        Spatial size H, W.

    Returns
    -------
    ndarray
        (B, heads*c, H, W).
    """
    b, heads, c, _ = x.shape
    return x.reshape(b, heads * c, height, width)


def l2_normalize(x: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """``x / max(||x||_2, eps)`` along the last axis (``torch.nn.functional.normalize(x, dim=-1)``).

    Parameters
    ----------
    x : ndarray
        Any shape (..., N).
    eps : float
        Lower bound on the norm.

    Returns
    -------
    ndarray
        Same shape and dtype.
    """
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.maximum(norm, x.dtype.type(eps))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (max-subtracted; ``-inf`` entries get exactly 0).

    Parameters
    ----------
    x : ndarray
        (..., N) logits; each row needs at least one finite entry.

    Returns
    -------
    ndarray
        Same shape; every row sums to 1.
    """
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def channel_logits(q: np.ndarray, k: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """Scaled cosine similarities between channels: (B, heads, c, HW) x2 -> (B, heads, c, c).

    Parameters
    ----------
    q, k : ndarray
        (B, heads, c, HW) queries and keys.
    temperature : ndarray
        (heads, 1, 1) learnable per-head scale.

    Returns
    -------
    ndarray
        (B, heads, c, c), entry [i, j] = cos(q_i, k_j) * temperature.
    """
    return np.matmul(l2_normalize(q), np.swapaxes(l2_normalize(k), -1, -2)) * temperature


def transposed_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """Softmax attention over channels (vectorised): (B, heads, c, HW) -> (B, heads, c, HW).

    Parameters
    ----------
    q, k, v : ndarray
        (B, heads, c, HW).
    temperature : ndarray
        (heads, 1, 1).

    Returns
    -------
    ndarray
        ``softmax(channel_logits(q, k, t)) @ v``, (B, heads, c, HW).
    """
    return np.matmul(softmax(channel_logits(q, k, temperature)), v)


@njit(cache=True)
def _attention_kernel(q, k, v, temperature, kept, out):  # pragma: no cover - compiled
    # q, k, v: (B, heads, c, N) with N = H*W; temperature: (heads,); kept: entries kept per row
    b_, heads, c, n = q.shape
    qn = np.empty(n, dtype=q.dtype)
    logits = np.empty(c, dtype=np.float64)
    p = np.empty(c, dtype=np.float64)
    for b in range(b_):
        for h in range(heads):
            # norms of the key rows: ||k_j|| over pixels, clamped below at eps
            knorm = np.empty(c, dtype=np.float64)
            for j in range(c):
                s = 0.0
                for t in range(n):
                    s += k[b, h, j, t] * k[b, h, j, t]
                knorm[j] = max(np.sqrt(s), NORM_EPS)
            for i in range(c):
                # normalised query row: q_hat_i = q_i / max(||q_i||, eps)
                s = 0.0
                for t in range(n):
                    s += q[b, h, i, t] * q[b, h, i, t]
                qnorm = max(np.sqrt(s), NORM_EPS)
                for t in range(n):
                    qn[t] = q[b, h, i, t] / qnorm
                # logits_ij = temperature_h * <q_hat_i, k_j> / max(||k_j||, eps)
                for j in range(c):
                    s = 0.0
                    for t in range(n):
                        s += qn[t] * k[b, h, j, t]
                    logits[j] = s / knorm[j] * temperature[h]
                # top-k rule: keep j iff its stable descending rank is < kept, i.e.
                # rank_j = #{l : logit_l > logit_j} + #{l < j : logit_l == logit_j}
                m = -np.inf
                for j in range(c):
                    rank = 0
                    for l in range(c):
                        if logits[l] > logits[j] or (l < j and logits[l] == logits[j]):
                            rank += 1
                    p[j] = logits[j] if rank < kept else -np.inf
                    m = max(m, p[j])
                # softmax over the kept entries: p_j = exp(logit_j - max) / sum_l exp(logit_l - max)
                z = 0.0
                for j in range(c):
                    p[j] = np.exp(p[j] - m)
                    z += p[j]
                # out_i = sum_j p_j v_j  (a weighted mix of value rows)
                for t in range(n):
                    s = 0.0
                    for j in range(c):
                        s += p[j] / z * v[b, h, j, t]
                    out[b, h, i, t] = s
    return out


def transposed_attention_loop(q: np.ndarray, k: np.ndarray, v: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """Loop (Numba) version of [`transposed_attention`][reference.attention.transposed_attention], one query row at a time.

    Parameters
    ----------
    q, k, v : ndarray
        (B, heads, c, HW).
    temperature : ndarray
        (heads, 1, 1).

    Returns
    -------
    ndarray
        (B, heads, c, HW).
    """
    c = q.shape[2]
    return _attention_kernel(
        np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v),
        np.ascontiguousarray(temperature, dtype=np.float64).reshape(-1), c, np.empty_like(q),
    )


def mdta(x: np.ndarray, params: Mapping[str, np.ndarray], heads: int, prefix: str = "") -> np.ndarray:
    """Multi-Dconv head transposed attention ([`dfpir.model.attention.MDTA`][dfpir.model.attention.MDTA]).

    ``q, k, v = split(dwconv3x3(conv1x1(x, C -> 3C)))``, per-head transposed attention, then a
    1x1 output projection.

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features (already layer-normalised).
    params : mapping
        ``prefix + {"temperature", "qkv.weight", "qkv_dwconv.weight", "project_out.weight"}``
        (and ``.bias`` entries when the convs have bias).
    heads : int
        Number of heads.
    prefix : str
        Name prefix, e.g. ``"encoder1.0.attn."``.

    Returns
    -------
    ndarray
        (B, C, H, W).
    """
    _, c, h, w = x.shape
    qkv = _conv2d_from(x, params, prefix + "qkv.")  # (B, 3C, H, W)
    qkv = _conv2d_from(qkv, params, prefix + "qkv_dwconv.", groups=3 * c)  # depthwise 3x3
    q, k, v = (split_heads(t, heads) for t in np.split(qkv, 3, axis=1))  # 3 x (B, heads, c, HW)
    temperature = get(params, prefix, "temperature").astype(x.dtype, copy=False)
    out = transposed_attention(q, k, v, temperature)  # (B, heads, c, HW)
    return _conv2d_from(merge_heads(out, h, w), params, prefix + "project_out.")
