"""GDFN: Restormer's gated-Dconv feed-forward network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hidden_width(channels: int, expansion: float) -> int:
    """GDFN hidden width, truncated as in the original (``int(C * factor)``)."""
    return int(channels * expansion)


class GDFN(nn.Module):
    """Gated-Dconv feed-forward: ``conv1x1(gelu(h1) * h2)`` with ``h1, h2`` from a 1x1 + dw 3x3 conv.

    Parameters
    ----------
    channels : int
        Input and output width C.
    expansion : float
        Hidden width is ``int(C * expansion)``.
    bias : bool
        Bias in the three convolutions.
    """

    def __init__(self, channels: int, expansion: float, bias: bool = False) -> None:
        super().__init__()
        hidden = hidden_width(channels, expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, kernel_size=3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): ``project_out(gelu(h1) * h2)``."""
        h1, h2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)  # 2 x (B, hidden, H, W)
        return self.project_out(F.gelu(h1) * h2)
