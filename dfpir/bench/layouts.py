"""The original code's layout of three operations, the baseline the speed benchmarks compare with.

The original computes LayerNorm through (B, HW, C) permutes and back, normalises q and k before
their product, and builds the top-k mask from zeros, ``scatter`` and ``where``. The same
function, more memory traffic. [`original_layout`][dfpir.bench.layouts.original_layout] swaps these in for the model's own
operations, process-wide, which is why it lives here and not in the model.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ..inference import speed
from ..model import attention, layernorm, masked_attention
from ..model.network import DFPIR

#: The execution variants a benchmark can time: the original layout, then ``dfpir.inference.speed.VARIANTS``.
VARIANTS = ("original", *speed.VARIANTS)


def layer_norm_original_layout(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """LayerNorm as the original computes it: (B, C, H, W) -> (B, HW, C), normalise, and back."""
    b, c, h, w = x.shape
    t = x.flatten(2).transpose(1, 2)  # (B, HW, C)
    var = t.var(-1, keepdim=True, unbiased=False)
    if bias is None:
        t = t / torch.sqrt(var + layernorm.EPS) * weight
    else:
        t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(var + layernorm.EPS) * weight + bias
    return t.transpose(1, 2).reshape(b, c, h, w)


def masked_softmax_original_layout(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k mask as the original builds it: zeros, scatter of ``topk`` indices, ``where``.

    Same result as [`dfpir.model.masked_attention.masked_softmax`][dfpir.model.masked_attention.masked_softmax] whenever the row has no tie at
    the k-th value (``torch.topk`` does not define which tied entry it returns).
    """
    mask = torch.zeros_like(logits)
    mask.scatter_(-1, logits.topk(k, dim=-1).indices, 1.0)
    return torch.where(mask > 0, logits, torch.full_like(logits, float("-inf"))).softmax(dim=-1)


def channel_logits_original_layout(q: torch.Tensor, k: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Transposed-attention logits as the original computes them: normalise q and k, then multiply."""
    return (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * temperature


@contextlib.contextmanager
def original_layout() -> Iterator[None]:
    """Within this context every DFPIR module computes with the original code's layout."""
    saved = layernorm.layer_norm, masked_attention.masked_softmax, attention.channel_logits, masked_attention.channel_logits
    layernorm.layer_norm = layer_norm_original_layout
    masked_attention.masked_softmax = masked_softmax_original_layout
    attention.channel_logits = masked_attention.channel_logits = channel_logits_original_layout
    try:
        yield
    finally:
        layernorm.layer_norm, masked_attention.masked_softmax, attention.channel_logits, masked_attention.channel_logits = saved


def prepare(model: DFPIR, variant: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """[`dfpir.inference.speed.prepare`][dfpir.inference.speed.prepare], plus ``"original"``: the plain model in the original layout."""
    if variant != "original":
        return speed.prepare(model, variant)
    plain = speed.prepare(model, "plain")

    def run(image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        with original_layout():
            return plain(image, prompt)

    return run
