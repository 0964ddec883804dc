"""The Restormer transformer block and the down/up-sampling steps of the U-net."""

from __future__ import annotations

import torch
from torch import nn

from . import fused
from .attention import MDTA
from .feedforward import GDFN
from .layernorm import LayerNorm


class TransformerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``, with two separate LayerNorms."""

    #: Run [`dfpir.model.fused`][dfpir.model.fused]'s strip kernels when no gradient is needed: True, False, or
    #: None to decide per call ([`fused.wanted`][dfpir.model.fused.wanted]; see [`DFPIR.set_fused`][dfpir.model.network.DFPIR.set_fused]).
    fused: bool | None = None

    def __init__(self, channels: int, heads: int, expansion: float, bias: bool, with_bias_norm: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm(channels, with_bias_norm)
        self.attn = MDTA(channels, heads, bias)
        self.norm2 = LayerNorm(channels, with_bias_norm)
        self.ffn = GDFN(channels, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``; shape unchanged."""
        if fused.wanted(self.fused, self, x):
            return fused.gdfn_(self.norm2, self.ffn, fused.mdta(self.norm1, self.attn, x))  # mdta: a new tensor
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nn.Module):
    """3x3 conv C -> C/2, then PixelUnshuffle(2): (B, C, H, W) -> (B, 2C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False)
        self.unshuffle = nn.PixelUnshuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 2C, H/2, W/2)."""
        return self.unshuffle(self.conv(x))


class Upsample(nn.Module):
    """3x3 conv C -> 2C, then PixelShuffle(2): (B, C, H, W) -> (B, C/2, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 2, kernel_size=3, padding=1, bias=False)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C/2, 2H, 2W)."""
        return self.shuffle(self.conv(x))
