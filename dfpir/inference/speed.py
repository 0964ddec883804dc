"""Execution variants of the same network, for speed: channels-last, fused strip kernels, compile, bf16.

Every variant computes the same function as the plain model (tests compare them):

- ``plain``: the model as written (channels-first, eval mode, ``torch.no_grad``);
- ``fast``: channels-last memory format and ``torch.inference_mode``;
- ``fused``: ``fast`` with [`dfpir.model.fused`][dfpir.model.fused]'s strip kernels in every transformer block and
  DGPB (the default of ``python -m dfpir.restore``);
- ``compile``: ``fused`` plus ``torch.compile``;
- ``bf16``: under bfloat16 autocast, with the fused kernels on the CPU (``fused``; what
  ``python -m dfpir.restore --precision bf16`` runs) and as ``fast`` on CUDA (not bit-exact:
  about 2-3 significant digits).

The original code's layout, the benchmarks' baseline, lives with the benchmarks
([`dfpir.bench.layouts`][dfpir.bench.layouts]).
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Callable

import torch

from ..model.network import DFPIR
from ..errors import UserError

VARIANTS = ("plain", "fast", "fused", "compile", "bf16")

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


def prepare(model: DFPIR, variant: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A callable ``f(image, prompt)`` running ``model`` in ``variant`` (see ``VARIANTS``).

    ``fast``, ``fused``, ``compile`` and ``bf16`` convert ``model`` to channels-last in place;
    ``fused``, ``compile`` and (on the CPU) ``bf16`` switch its blocks to the fused kernels, every
    other variant switches them back.
    """
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    model.eval()
    on_cpu = next(model.parameters()).device.type == "cpu"
    model.set_fused(variant in ("fused", "compile") or (variant == "bf16" and on_cpu))
    if variant == "plain":
        def run(image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
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
