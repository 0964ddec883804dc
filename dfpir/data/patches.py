"""Patches: worker-safe random streams, crops, the dihedral augmentation, and arrays to tensors.

Randomness is worker-safe: item ``i`` of epoch ``e`` draws from a NumPy generator seeded by
``(seed, e, i)`` ([`item_rng`][dfpir.data.patches.item_rng]), so the data do not depend on the number of DataLoader workers
nor on which worker serves an item.
"""

from __future__ import annotations

import numpy as np
import torch


def item_rng(seed: int, *key: int) -> np.random.Generator:
    """NumPy generator for one item, from its seed and key (e.g. epoch, index): worker-safe."""
    return np.random.default_rng([int(seed), *(int(k) for k in key)])


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch generator seeded from ``rng`` (for the degradation functions)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def crop_box(height: int, width: int, patch: int, rng: np.random.Generator) -> tuple[int, int]:
    """Uniformly random top-left corner of a ``patch`` square inside ``height`` x ``width``."""
    return int(rng.integers(0, max(height - patch, 0) + 1)), int(rng.integers(0, max(width - patch, 0) + 1))


def crop(image: np.ndarray, top: int, left: int, patch: int) -> np.ndarray:
    """A ``patch`` x ``patch`` crop; an image smaller than the patch is mirror-padded first."""
    h, w = image.shape[:2]
    if h < patch or w < patch:
        image = np.pad(image, ((0, max(patch - h, 0)), (0, max(patch - w, 0)), (0, 0)), mode="symmetric")
    return image[top : top + patch, left : left + patch]


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the square: ``k % 4`` quarter turns, transposed if ``k >= 4``.

    The original draws only the 7 non-identity ones; we use all 8 (no reason to never show the
    photo as it is).
    """
    out = np.rot90(image, k % 4, axes=(0, 1))
    if k >= 4:
        out = out.transpose(1, 0, 2)
    return np.ascontiguousarray(out)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) array -> (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
