"""A curriculum for motion blur: from one kernel to the full distribution.

Early in a run every blurred training crop shares one camera shake, so the network can first learn
to undo a single known kernel; the share of crops blurred with a kernel drawn from the full
distribution ([`motion_blur`][dfpir.degradations.synthetic.motion_blur]) then grows linearly from 0
at step 0 to 1 at step ``steps`` (``data.blur_curriculum``), after which training is as without it.

Whether a crop gets the one kernel is decided by a coin from its own random stream
([`uses_one_kernel`][dfpir.data.curriculum.uses_one_kernel]), so the crops themselves, their
positions and their augmentation, are those a run without the curriculum draws.
"""

from __future__ import annotations

import functools

import torch

from ..degradations.synthetic import blur_kernels, blur_with, check_batch
from .patches import item_rng

ONE_KERNEL_LENGTH = 14.0
"""Extent in pixels of the one kernel: the middle of the default range (4, 24)."""
ONE_KERNEL_SEED = 0
COIN_STREAM = 0xC0C0
"""Tag of the coins' random stream, which no other draw of an item uses."""


@functools.lru_cache(maxsize=1)
def one_kernel() -> torch.Tensor:
    """The (K, K) camera-shake kernel of the curriculum's start, the same on every call and machine."""
    generator = torch.Generator().manual_seed(ONE_KERNEL_SEED)
    return blur_kernels(1, generator, ONE_KERNEL_LENGTH)[0]


def one_kernel_blur(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur every sample of (B, C, H, W) ``clean`` with [`one_kernel`][dfpir.data.curriculum.one_kernel]
    (reflect padding, clipped to [0, 1]); ``generator`` is unused: the kernel is fixed."""
    check_batch(clean)
    return blur_with(clean, one_kernel().expand(clean.shape[0], -1, -1))  # kernels (B, K, K)


def full_share(step: int, steps: int) -> float:
    """Share of blurred crops whose kernel comes from the full distribution at ``step`` of a
    ``steps``-step curriculum: ``step / steps``, 1 from ``steps`` on (and always, when ``steps`` is 0)."""
    return 1.0 if steps <= 0 else min(1.0, max(step, 0) / steps)


def uses_one_kernel(seed: int, epoch: int, key: tuple[int, ...], step: int, steps: int) -> bool:
    """Whether the crop of item ``key`` (epoch ``epoch``, run seed ``seed``) drawn at ``step`` gets the one kernel."""
    share = full_share(step, steps)
    return share < 1.0 and bool(item_rng(seed, COIN_STREAM, epoch, *key).random() >= share)


__all__ = ["ONE_KERNEL_LENGTH", "ONE_KERNEL_SEED", "full_share", "one_kernel", "one_kernel_blur", "uses_one_kernel"]
