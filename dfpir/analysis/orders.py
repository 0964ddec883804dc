"""What the DGPBs do with a prompt: the channel order of each block, and the masked attention."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import UserError
from ..model.network import DFPIR

@torch.no_grad()
def channel_orders(model: DFPIR, degradations: Sequence[str]) -> dict[int, np.ndarray]:
    """The channel order of every DGPB for each degradation's prompt.

    Parameters
    ----------
    model : DFPIR
        A model with DGPBs.
    degradations : sequence of str
        Names in the model's prompt bank.

    Returns
    -------
    dict
        ``{level (1-4): (T, 2C) int64 array}``; row t is the order for ``degradations[t]``.
    """
    if not model.config.use_dgpb:
        raise UserError("this model has no DGPBs, hence no channel orders")
    prompts = model.embed_prompts(list(degradations))
    return {level: getattr(model, f"dgpb{level}").perturb.order(prompts).cpu().numpy() for level in range(1, 5)}


def rank_correlation(order_a: np.ndarray | torch.Tensor, order_b: np.ndarray | torch.Tensor) -> float:
    """Spearman rank correlation between two channel orders of the same length.

    Each order lists channels from highest to lowest score; the correlation compares the
    position every channel takes in the two orders (1: same order, -1: reversed, about 0:
    unrelated). Uses ``scipy.stats.spearmanr`` when SciPy is installed, otherwise the exact
    formula for untied ranks ``1 - 6 sum d^2 / (n (n^2 - 1))``.

    Parameters
    ----------
    order_a, order_b : array
        (N,) permutations of ``range(N)``.
    """
    a = np.asarray(order_a.cpu() if isinstance(order_a, torch.Tensor) else order_a).ravel()
    b = np.asarray(order_b.cpu() if isinstance(order_b, torch.Tensor) else order_b).ravel()
    n = a.size
    if b.size != n or n < 2:
        raise UserError(f"need two orders of the same length >= 2, got {a.size} and {b.size}")
    if not (np.array_equal(np.sort(a), np.arange(n)) and np.array_equal(np.sort(b), np.arange(n))):
        raise UserError("orders must be permutations of range(N)")
    rank_a, rank_b = np.empty(n), np.empty(n)
    rank_a[a], rank_b[b] = np.arange(n), np.arange(n)  # position of channel j in each order
    try:
        from scipy.stats import spearmanr  # here, not at the top: scipy.stats takes about a second to import
    except ImportError:  # pragma: no cover - SciPy comes with scikit-image
        d = rank_a - rank_b
        return float(1 - 6 * (d * d).sum() / (n * (n * n - 1)))
    return float(spearmanr(rank_a, rank_b).statistic)


def order_similarity(orders: np.ndarray) -> np.ndarray:
    """(T, T) pairwise [`rank_correlation`][dfpir.analysis.orders.rank_correlation] of T orders given as a (T, N) array."""
    orders = np.asarray(orders)
    t = orders.shape[0]
    out = np.ones((t, t))
    for i in range(t):
        for j in range(i + 1, t):
            out[i, j] = out[j, i] = rank_correlation(orders[i], orders[j])
    return out


# --------------------------------------------------------------------------------- attention


@torch.no_grad()
def attention_map(model: DFPIR, image: torch.Tensor, degradation: str, level: int = 1) -> torch.Tensor:
    """The masked cross-attention matrix of one DGPB while the model restores ``image``.

    Parameters
    ----------
    model : DFPIR
        A model with DGPBs.
    image : Tensor
        (B, 3, H, W) in [0, 1].
    degradation : str
        The prompt's degradation name.
    level : int
        Which DGPB (1-4).

    Returns
    -------
    Tensor
        (B, heads, c, c) attention weights; rows sum to 1, masked entries are exactly 0.
    """
    if not model.config.use_dgpb:
        raise UserError("this model has no DGPBs, hence no masked attention")
    block = getattr(model, f"dgpb{level}")
    seen: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
        seen["x"], seen["prompt"] = args[0], args[1]

    handle = block.register_forward_hook(hook)
    try:
        model.restore(image, degradation)
    finally:
        handle.remove()
    x, prompt = seen["x"], seen["prompt"]
    q = block.perturb(x, prompt)
    return block.attn.attention_map(block.norm_q(q), block.norm_kv(x))
