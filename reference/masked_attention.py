"""CAAPM: the DGPB's cross attention with a top-k mask on every row of the channel logits
(mirrors [`dfpir.model.masked_attention`][dfpir.model.masked_attention]).

Per head: ``A = scale * softmax(topk_mask(cos(q_i, k_j) * t)) @ v``, masked logits set to
``-inf`` *before* the softmax, so the softmax renormalises over the kept entries.

Tie rule: each row keeps exactly ``k`` entries -- every entry larger than the k-th largest value,
then the entries equal to it in increasing column order. Equivalently: keep column j iff its
stable descending rank ``#{l : x_l > x_j} + #{l < j : x_l == x_j}`` is below k.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Mapping

import numpy as np
from numba import njit

from ._params import get
from .attention import _attention_kernel, channel_logits, merge_heads, softmax, split_heads
from .conv import _conv2d_from
from .margins import record_topk_gaps


def kept_per_row(c: int, keep_ratio: float = 0.9) -> int:
    """Entries kept in a row of ``c`` logits: ``max(1, floor(c * keep_ratio))``.

    The ratio is read as an exact fraction (denominator up to 10 000), so 0.9 gives ``c * 9 // 10``
    for every ``c``, as the original's ``int(c * 9 / 10)``; ``c = 1`` keeps 1 (not 0).

    Parameters
    ----------
    c : int
        Row length (channels per head).
    keep_ratio : float
        Fraction kept, in (0, 1].

    Returns
    -------
    int
        k, between 1 and c.
    """
    ratio = Fraction(keep_ratio).limit_denominator(10_000)
    return max(1, math.floor(c * ratio))


def topk_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest entries of every last-axis row (vectorised, exact ties).

    Parameters
    ----------
    logits : ndarray
        (..., N) values.
    k : int
        Entries kept per row.

    Returns
    -------
    ndarray
        bool, same shape; exactly ``min(k, N)`` True per row (see the module's tie rule).
    """
    record_topk_gaps(logits, k)  # no-op unless a test is measuring near-ties
    # stable ascending argsort of -x is the stable descending order of x (lower index first on ties)
    order = np.argsort(-logits, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(logits.shape[-1]), logits.shape), axis=-1)
    return rank < k


@njit(cache=True)
def _topk_kernel(x, k, out):  # pragma: no cover - compiled
    # x: (R, N) rows of logits; out: (R, N) bool
    r_, n = x.shape
    for r in range(r_):
        for j in range(n):
            # rank_j = #{l : x_l > x_j} + #{l < j : x_l == x_j}
            rank = 0
            for l in range(n):
                if x[r, l] > x[r, j] or (l < j and x[r, l] == x[r, j]):
                    rank += 1
            # keep the k entries of rank 0 .. k-1
            out[r, j] = rank < k
    return out


def topk_mask_loop(logits: np.ndarray, k: int) -> np.ndarray:
    """Loop (Numba) version of [`topk_mask`][reference.masked_attention.topk_mask], by counting ranks.

    Parameters
    ----------
    logits : ndarray
        (..., N) values.
    k : int
        Entries kept per row.

    Returns
    -------
    ndarray
        bool mask, same shape.
    """
    rows = np.ascontiguousarray(logits).reshape(-1, logits.shape[-1])
    return _topk_kernel(rows, k, np.empty(rows.shape, dtype=np.bool_)).reshape(logits.shape)


def masked_softmax(logits: np.ndarray, k: int) -> np.ndarray:
    """Softmax over the last axis after setting all but the top-k entries of each row to ``-inf``.

    Parameters
    ----------
    logits : ndarray
        (..., N) logits.
    k : int
        Entries kept per row.

    Returns
    -------
    ndarray
        Same shape; rows sum to 1 and masked entries are exactly 0.
    """
    return softmax(np.where(topk_mask(logits, k), logits, -np.inf).astype(logits.dtype, copy=False))


def masked_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, temperature: np.ndarray, kept: int) -> np.ndarray:
    """Top-k masked transposed attention core (vectorised): (B, heads, c, HW) -> (B, heads, c, HW).

    Parameters
    ----------
    q, k, v : ndarray
        (B, heads, c, HW).
    temperature : ndarray
        (heads, 1, 1).
    kept : int
        Entries kept per logits row (see [`kept_per_row`][reference.masked_attention.kept_per_row]).

    Returns
    -------
    ndarray
        ``masked_softmax(channel_logits(q, k, t), kept) @ v``.
    """
    return np.matmul(masked_softmax(channel_logits(q, k, temperature), kept), v)


def masked_attention_loop(q: np.ndarray, k: np.ndarray, v: np.ndarray, temperature: np.ndarray, kept: int) -> np.ndarray:
    """Loop (Numba) version of [`masked_attention`][reference.masked_attention.masked_attention] (shares the MDTA loop with ``kept < c``).

    Parameters
    ----------
    q, k, v : ndarray
        (B, heads, c, HW).
    temperature : ndarray
        (heads, 1, 1).
    kept : int
        Entries kept per row.

    Returns
    -------
    ndarray
        (B, heads, c, HW).
    """
    return _attention_kernel(
        np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v),
        np.ascontiguousarray(temperature, dtype=np.float64).reshape(-1), kept, np.empty_like(q),
    )


def masked_cross_attention(
    query: np.ndarray,
    context: np.ndarray,
    params: Mapping[str, np.ndarray],
    heads: int,
    keep_ratio: float = 0.9,
    prefix: str = "",
) -> np.ndarray:
    """CAAPM ([`dfpir.model.masked_attention.MaskedCrossAttention`][dfpir.model.masked_attention.MaskedCrossAttention]).

    Parameters
    ----------
    query : ndarray
        (B, C, H, W) normalised perturbed features ``LN_q(Q)``.
    context : ndarray
        (B, C, H, W) normalised block input ``LN_kv(F)`` (keys and values).
    params : mapping
        ``prefix + {"temperature", "scale", "q.weight", "q_dwconv.weight", "kv.weight",
        "kv_dwconv.weight", "project_out.weight"}`` (plus biases if any).
    heads : int
        Number of heads.
    keep_ratio : float
        Fraction of each row kept by the top-k mask.
    prefix : str
        Name prefix, e.g. ``"dgpb1.attn."``.

    Returns
    -------
    ndarray
        (B, C, H, W).
    """
    _, c, h, w = query.shape
    dt = query.dtype
    q = _conv2d_from(_conv2d_from(query, params, prefix + "q."), params, prefix + "q_dwconv.", groups=c)
    kv = _conv2d_from(context, params, prefix + "kv.")  # (B, 2C, H, W)
    kv = _conv2d_from(kv, params, prefix + "kv_dwconv.", groups=2 * c)
    k, v = (split_heads(t, heads) for t in np.split(kv, 2, axis=1))  # 2 x (B, heads, c, HW)
    temperature = get(params, prefix, "temperature").astype(dt, copy=False)
    out = masked_attention(split_heads(q, heads), k, v, temperature, kept_per_row(c // heads, keep_ratio))
    out = out * get(params, prefix, "scale").astype(dt, copy=False)  # learnable scalar (init 0.2)
    return _conv2d_from(merge_heads(out, h, w), params, prefix + "project_out.")
