"""CAAPM: the DGPB's cross attention with a top-k mask on every row of the channel logits.

Tie rule
--------
Each row keeps exactly ``k`` entries: every entry larger than the k-th largest value, then the
entries *equal* to it in increasing column order until ``k`` are kept (lower index first).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import nn

from .attention import channel_logits, merge_heads, split_heads


def kept_per_row(c: int, keep_ratio: float = 0.9) -> int:
    """Entries kept in a row of ``c`` logits: ``max(1, floor(c * keep_ratio))``.

    The ratio is taken as an exact fraction so that 0.9 gives ``c * 9 // 10`` (the original's
    ``int(c * 9 / 10)``) for every ``c``. ``c = 1`` keeps 1 instead of the original's 0, which
    would mask the whole row and make the softmax NaN.
    """
    ratio = Fraction(keep_ratio).limit_denominator(10_000)
    return max(1, math.floor(c * ratio))


def topk_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (same shape as ``logits``) of the ``k`` largest entries of every last-axis row.

    Exact and deterministic under ties (see the module's tie rule); cheaper than building a mask
    with scatter because it only needs the k-th largest value of each row.
    """
    n = logits.shape[-1]
    if k >= n:
        return torch.ones_like(logits, dtype=torch.bool)
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest value
    above = logits > kth
    tied = logits == kth
    room = k - above.sum(dim=-1, keepdim=True)  # how many tied entries still fit
    return above | (tied & (tied.cumsum(dim=-1) <= room))


def masked_softmax(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Softmax over the last axis after setting all but the top-k entries of each row to -inf."""
    return logits.masked_fill(~topk_mask(logits, k), float("-inf")).softmax(dim=-1)


class MaskedCrossAttention(nn.Module):
    """CAAPM: queries from the perturbed features, keys and values from the block input.

    ``A = project_out(scale * softmax(topk_mask(q k^T * temperature)) v)``, with the softmax taken
    over the kept entries only and ``scale`` a learnable scalar initialised to 0.2.

    Parameters
    ----------
    channels : int
        Width C.
    heads : int
        Number of heads.
    bias : bool
        Bias in the projections.
    keep_ratio : float
        Fraction of each row kept by the mask.
    """

    def __init__(self, channels: int, heads: int, bias: bool = False, keep_ratio: float = 0.9) -> None:
        super().__init__()
        self.heads = heads
        self.k = kept_per_row(channels // heads, keep_ratio)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.scale = nn.Parameter(torch.full((1,), 0.2))
        self.q = nn.Conv2d(channels, channels, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels, bias=bias)
        self.kv = nn.Conv2d(channels, 2 * channels, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(2 * channels, 2 * channels, kernel_size=3, padding=1, groups=2 * channels, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1, bias=bias)

    def attention_map(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The masked attention matrix (B, heads, c, c); masked entries are exactly 0."""
        q = split_heads(self.q_dwconv(self.q(query)), self.heads)
        k, _ = self.kv_dwconv(self.kv(context)).chunk(2, dim=1)
        return masked_softmax(channel_logits(q, split_heads(k, self.heads), self.temperature), self.k)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Queries from ``query``, keys and values from ``context`` (both (B, C, H, W)) -> (B, C, H, W)."""
        _, _, h, w = query.shape
        q = split_heads(self.q_dwconv(self.q(query)), self.heads)  # (B, heads, c, HW)
        k, v = (split_heads(t, self.heads) for t in self.kv_dwconv(self.kv(context)).chunk(2, dim=1))
        attn = masked_softmax(channel_logits(q, k, self.temperature), self.k)  # (B, heads, c, c)
        out = (attn @ v) * self.scale
        return self.project_out(merge_heads(out, h, w))
