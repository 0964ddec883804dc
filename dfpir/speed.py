"""Execution variants of the same network, for speed, and the original code's layout as a baseline.

Every variant computes the same function as the plain model (tests compare them):

- ``plain``: the model as written (channels-first, eval mode, ``torch.no_grad``);
- ``fast``: channels-last memory format and ``torch.inference_mode``;
- ``fused``: ``fast`` with :mod:`dfpir.fused`'s strip kernels in every transformer block and
  DGPB (the default of ``python -m dfpir.restore``);
- ``compile``: ``fused`` plus ``torch.compile``;
- ``bf16``: ``fast`` under bfloat16 autocast (not bit-exact: about 2-3 significant digits);
- ``original``: the original code's layout, kept only as the benchmark baseline: LayerNorm
  through (B, HW, C) permutes and back, q and k normalised before their product, and the top-k
  mask built from zeros, ``scatter`` and ``where``.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Callable, Iterator

import torch

import torch.nn.functional as F

from . import attention, fused, layernorm, masked_attention
from .network import DFPIR

VARIANTS = ("original", "plain", "fast", "fused", "compile", "bf16")

#: glibc's ``mallopt`` parameters (``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> bool:
    """Ask the C library's ``malloc`` to keep freed memory for reuse instead of unmapping it.

    By default glibc gives every allocation above a threshold (at most 32 MB) fresh pages from
    the operating system and returns them when the tensor is freed, so each large temporary
    pays a page fault and the kernel's zero-filling for every 4 kB it touches. Raising the
    thresholds to 1 GB keeps freed memory in the process, where the next tensor reuses it; the
    process's peak memory stays what it was. The setting is process-wide, so only
    ``python -m dfpir.bench --reuse-memory`` makes it; the fused path gains nothing measurable
    from it (docs/results.md, Speed). ``LD_PRELOAD`` of jemalloc or tcmalloc has a similar effect.

    Returns
    -------
    bool
        True where the setting took effect (glibc), False elsewhere (nothing was changed).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = 2**30
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))


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

    Same result as :func:`dfpir.masked_attention.masked_softmax` whenever the row has no tie at
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
    """A callable ``f(image, prompt)`` running ``model`` in ``variant`` (see :data:`VARIANTS`).

    ``fast``, ``fused``, ``compile`` and ``bf16`` convert ``model`` to channels-last in place;
    ``fused`` switches its blocks to the fused kernels, every other variant switches them back.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    model.eval()
    fused.enable(model, variant in ("fused", "compile"))
    if variant in ("plain", "original"):
        def run(image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
            ctx = original_layout() if variant == "original" else contextlib.nullcontext()
            with torch.no_grad(), ctx:
                return model(image, prompt)

        return run
    model.to(memory_format=torch.channels_last)
    forward = torch.compile(model, dynamic=False) if variant == "compile" else model

    def run_fast(image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        image = image.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast(image.device.type, dtype=torch.bfloat16) if variant == "bf16" else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            return forward(image, prompt).float().contiguous()

    return run_fast
