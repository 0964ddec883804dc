"""Restormer's per-pixel LayerNorm over channels, on (B, C, H, W) tensors."""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-5


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Normalise every pixel's channel vector.

    With ``bias`` (the "WithBias" variant) this is the usual LayerNorm over channels. Without it
    ("BiasFree") Restormer divides by ``sqrt(var + eps)`` *without* subtracting the mean.

    Parameters
    ----------
    x : Tensor
        (B, C, H, W) features.
    weight, bias : Tensor
        (C,) affine parameters; ``bias=None`` selects the BiasFree variant.
    """
    var = x.var(dim=1, keepdim=True, unbiased=False)  # (B, 1, H, W)
    scale = weight[:, None, None] * torch.rsqrt(var + EPS)
    if bias is None:
        return x * scale
    mu = x.mean(dim=1, keepdim=True)
    return (x - mu) * scale + bias[:, None, None]


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W) features (no permutes needed).

    Parameters
    ----------
    channels : int
        Number of channels C.
    with_bias : bool
        ``True`` for "WithBias", ``False`` for "BiasFree".
    """

    def __init__(self, channels: int, with_bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, C, H, W) over the channels at every pixel."""
        return layer_norm(x, self.weight, self.bias)
