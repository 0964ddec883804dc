"""MDTA: Restormer's multi-Dconv-head transposed attention (attention across channels)."""

from __future__ import annotations

import torch
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, C/heads, H*W)."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w)


def merge_heads(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, heads, c, H*W) -> (B, heads*c, H, W)."""
    b, heads, c, _ = x.shape
    return x.reshape(b, heads * c, height, width)


def channel_logits(q: torch.Tensor, k: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities between channels: (B, heads, c, HW) x2 -> (B, heads, c, c).

    Restormer L2-normalises ``q`` and ``k`` along the pixel axis (``F.normalize``, eps 1e-12) and
    multiplies them; dividing the small (c x c) product by the two norms instead gives the same
    cosines without rewriting the two large (c x HW) tensors. Every logit is a cosine in [-1, 1]
    times the learnable per-head temperature.
    """
    q_norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-12)  # (B, heads, c, 1)
    k_norm = torch.linalg.vector_norm(k, dim=-1).clamp_min(1e-12)  # (B, heads, c)
    return (q @ k.transpose(-2, -1)) / (q_norm * k_norm[..., None, :]) * temperature


def transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Softmax attention over channels: (B, heads, c, HW) -> (B, heads, c, HW)."""
    attn = channel_logits(q, k, temperature).softmax(dim=-1)  # (B, heads, c, c)
    return attn @ v


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention.

    Parameters
    ----------
    channels : int
        Width C.
    heads : int
        Number of heads; each attends over ``C / heads`` channels.
    bias : bool
        Bias in the convolutions.
    """

    def __init__(self, channels: int, heads: int, bias: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * channels, 3 * channels, kernel_size=3, padding=1, groups=3 * channels, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): attention across channels, per head."""
        _, _, h, w = x.shape
        q, k, v = (split_heads(t, self.heads) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        out = transposed_attention(q, k, v, self.temperature)  # (B, heads, c, HW)
        return self.project_out(merge_heads(out, h, w))
