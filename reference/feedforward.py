"""GDFN: Restormer's gated-Dconv feed-forward network (mirrors [`dfpir.model.feedforward`][dfpir.model.feedforward]).

``h1, h2 = split(dwconv3x3(conv1x1(x, C -> 2 hidden)))``, ``out = conv1x1(gelu(h1) * h2)``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .activations import gelu
from .conv import _conv2d_from


def hidden_width(channels: int, expansion: float) -> int:
    """GDFN hidden width ``int(C * expansion)`` (truncated, as in the original).

    Parameters
    ----------
    channels : int
        Width C.
    expansion : float
        Expansion factor (2.66 in the paper).

    Returns
    -------
    int
        Hidden width.
    """
    return int(channels * expansion)


def gdfn(x: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """Gated-Dconv feed-forward ([`dfpir.model.feedforward.GDFN`][dfpir.model.feedforward.GDFN]).

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features (already layer-normalised).
    params : mapping
        ``prefix + {"project_in.weight", "dwconv.weight", "project_out.weight"}`` (plus biases if any).
        The hidden width is read from the weight shapes.
    prefix : str
        Name prefix, e.g. ``"encoder1.0.ffn."``.

    Returns
    -------
    ndarray
        (B, C, H, W).
    """
    h = _conv2d_from(x, params, prefix + "project_in.")  # (B, 2*hidden, H, W)
    h = _conv2d_from(h, params, prefix + "dwconv.", groups=h.shape[1])  # depthwise 3x3
    h1, h2 = np.split(h, 2, axis=1)  # 2 x (B, hidden, H, W)
    return _conv2d_from(gelu(h1) * h2, params, prefix + "project_out.")  # gate, then hidden -> C
