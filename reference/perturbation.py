"""Degradation-guided channel perturbation (mirrors [`dfpir.model.perturbation`][dfpir.model.perturbation]).

The DGM maps the prompt embedding ``e`` (B, 512) to one score per expanded channel,
``g = W2 (W1 e + b1) + b2`` (two linears, no nonlinearity). The channel order is the descending
sort of ``g``; the expanded features are gathered in that order.

Tie rule: a *stable* descending sort -- among equal scores the lower channel index comes first.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from numba import njit

from ._params import get
from .conv import _conv2d_from
from .margins import record_order_gaps


def dgm(prompt: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """Degradation guidance module: (B, prompt_dim) -> (B, 2C) channel scores.

    Parameters
    ----------
    prompt : ndarray
        (B, prompt_dim) prompt embeddings.
    params : mapping
        ``prefix + {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}``
        (``nn.Linear`` layout: weight is (out, in)).
    prefix : str
        Name prefix, e.g. ``"dgpb1.perturb.dgm."``.

    Returns
    -------
    ndarray
        (B, 2C) scores, dtype of ``prompt``.
    """
    dt = prompt.dtype
    w1, b1 = get(params, prefix, "linear1.weight").astype(dt, copy=False), get(params, prefix, "linear1.bias").astype(dt, copy=False)
    w2, b2 = get(params, prefix, "linear2.weight").astype(dt, copy=False), get(params, prefix, "linear2.bias").astype(dt, copy=False)
    hidden = prompt @ w1.T + b1  # (B, prompt_dim), no activation follows
    return hidden @ w2.T + b2  # (B, 2C)


def channel_order(scores: np.ndarray) -> np.ndarray:
    """Stable descending argsort of every row: (B, N) -> (B, N) int64.

    Parameters
    ----------
    scores : ndarray
        (B, N) finite scores.

    Returns
    -------
    ndarray
        (B, N) int64; row b lists channel indices from highest to lowest score, lower index first
        among equal scores (``-0.0`` and ``0.0`` count as equal).
    """
    record_order_gaps(scores)  # no-op unless a test is measuring near-ties
    # argsort(-s) ascending == argsort(s) descending; negation is exact and keeps equal values equal
    return np.argsort(-scores, axis=-1, kind="stable").astype(np.int64)


@njit(cache=True)
def _order_kernel(scores, out):  # pragma: no cover - compiled
    b_, n = scores.shape
    for b in range(b_):
        for j in range(n):
            # rank_j = #{l : s_l > s_j} + #{l < j : s_l == s_j}  (stable descending position of j)
            rank = 0
            for l in range(n):
                if scores[b, l] > scores[b, j] or (l < j and scores[b, l] == scores[b, j]):
                    rank += 1
            # channel j goes to position rank_j of the order
            out[b, rank] = j
    return out


def channel_order_loop(scores: np.ndarray) -> np.ndarray:
    """Loop (Numba) version of [`channel_order`][reference.perturbation.channel_order], by counting each channel's rank.

    Parameters
    ----------
    scores : ndarray
        (B, N) finite scores.

    Returns
    -------
    ndarray
        (B, N) int64 order.
    """
    s = np.ascontiguousarray(scores)
    return _order_kernel(s, np.empty(s.shape, dtype=np.int64))


def channel_perturbation(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Gather channels per sample: ``out[b, i] = x[b, order[b, i]]`` (exact).

    Parameters
    ----------
    x : ndarray
        (B, N, H, W) features.
    order : ndarray
        (B, N) integer permutation of ``range(N)`` per sample.

    Returns
    -------
    ndarray
        (B, N, H, W).
    """
    return np.take_along_axis(x, order[:, :, None, None], axis=1)


def inverse_order(order: np.ndarray) -> np.ndarray:
    """The permutation that undoes ``order``: ``inv[b, order[b, i]] = i``.

    Parameters
    ----------
    order : ndarray
        (B, N) permutations.

    Returns
    -------
    ndarray
        (B, N) int64 with ``channel_perturbation(channel_perturbation(x, o), inverse_order(o)) == x``.
    """
    inv = np.empty_like(order, dtype=np.int64)
    np.put_along_axis(inv, order, np.broadcast_to(np.arange(order.shape[-1]), order.shape), axis=-1)
    return inv


def perturb(x: np.ndarray, prompt: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """Expand C -> 2C, shuffle in the DGM's order, reduce 2C -> C
    ([`dfpir.model.perturbation.ChannelPerturbation`][dfpir.model.perturbation.ChannelPerturbation], faithful guidance).

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features.
    prompt : ndarray
        (B, prompt_dim) prompt embeddings (one per sample, may differ).
    params : mapping
        ``prefix + {"dgm.*", "expand.weight", "expand.bias", "reduce.weight", "reduce.bias"}``.
    prefix : str
        Name prefix, e.g. ``"dgpb1.perturb."``.

    Returns
    -------
    ndarray
        (B, C, H, W) the perturbed query features Q.
    """
    order = channel_order(dgm(prompt, params, prefix + "dgm."))  # (B, 2C)
    expanded = _conv2d_from(x, params, prefix + "expand.")  # (B, 2C, H, W)
    return _conv2d_from(channel_perturbation(expanded, order), params, prefix + "reduce.")  # (B, C, H, W)
