"""Mixed precision for training (and for ``python -m dfpir.bench train``, which times the same step)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from ..errors import UserError


def check_precision(device: torch.device, precision: str, option: str = "train.precision") -> None:
    """Refuse fp16 off CUDA: its loss scaling is a GPU recipe, and CPUs have bf16 for this."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"{option}=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context for ``precision`` (``fp32``: none; ``bf16`` or ``fp16``)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
