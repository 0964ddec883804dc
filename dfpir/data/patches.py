"""Patches: worker-safe random streams, crops, the dihedral augmentation, degrade-then-crop, and
arrays to tensors.

Randomness is worker-safe: item ``i`` of epoch ``e`` draws from a NumPy generator seeded by
``(seed, e, i)`` ([`item_rng`][dfpir.data.patches.item_rng]), so the data do not depend on the number of DataLoader workers
nor on which worker serves an item.

Degrade, then crop ([`degraded_patch`][dfpir.data.patches.degraded_patch]): a degradation that reaches around a pixel (a blur
kernel, a rain streak, a haze depth field) is applied to the patch plus the degradation's
[`context`][dfpir.degradations.registry.context] on every side, and the patch is cut from the middle. Cropping first and degrading
afterwards would pad the patch's border (a 64-pixel patch under a 27-pixel blur kernel has most
of its pixels within reach of the padding), which is not what a camera makes. The result is the
same as degrading the whole photo and cropping it, except that the random draws that depend on
the area (noise, streak positions) differ.
"""

from __future__ import annotations

import numpy as np
import torch

from ..degradations import DegradeFn, context, get_degradation, synthesizer
from ..degradations.synthetic import gaussian_noise


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


def dihedral(image: np.ndarray, k: int, copy: bool = True) -> np.ndarray:
    """One of the 8 flips/rotations of the square: ``k % 4`` quarter turns, transposed if ``k >= 4``.

    The original draws only the 7 non-identity ones; we use all 8 (no reason to never show the
    photo as it is). ``copy=False`` returns a view (turning a whole photo before cutting a patch
    from it then costs nothing).
    """
    out = np.rot90(image, k % 4, axes=(0, 1))
    if k >= 4:
        out = out.transpose(1, 0, 2)
    return np.ascontiguousarray(out) if copy else out


def apply_degradation(name: str, clean: np.ndarray, rng: np.random.Generator, original_noise: bool = False,
                      synthesize: DegradeFn | None = None) -> torch.Tensor:
    """Degrade one (H, W, 3) image with the registry's generator ``name``; (3, H, W) float32.

    ``original_noise``: Gaussian noise as the original makes it (0-255 scale, truncated to uint8;
    see [`gaussian_noise`][dfpir.degradations.synthetic.gaussian_noise]). ``synthesize``: another
    generator for ``name`` (a curriculum's, say), used instead of the registry's.
    """
    x = to_tensor(clean)[None]
    g = torch_generator(rng)
    sigma = get_degradation(name).sigma
    if synthesize is not None:
        y = synthesize(x, g)
    elif original_noise and sigma is not None:
        y = gaussian_noise(x, g, sigma=sigma, quantize=True)
    else:
        y = synthesizer(name)(x, g)
    return y[0].float()


def degraded_patch(
    image: np.ndarray, top: int, left: int, patch: int, name: str, rng: np.random.Generator, original_noise: bool = False,
    synthesize: DegradeFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``patch`` square at (top, left) of ``image``, degraded with its surroundings, then cut.

    The region degraded is the patch grown by [`context`][dfpir.degradations.registry.context] pixels
    on each side, clipped to the photo: inside the photo the patch sees real pixels around it, and
    at the photo's own border it meets the generator's padding exactly as the whole photo would.
    ``original_noise`` and ``synthesize``: as in [`apply_degradation`][dfpir.data.patches.apply_degradation].

    Returns
    -------
    (Tensor, Tensor)
        The degraded patch and its clean target, each (3, patch, patch).
    """
    h, w = image.shape[:2]
    if h < patch or w < patch:  # smaller than a patch: mirror-padded, as crop() does
        image = np.pad(image, ((0, max(patch - h, 0)), (0, max(patch - w, 0)), (0, 0)), mode="symmetric")
        h, w = image.shape[:2]
    m = context(name)
    t0, l0 = max(top - m, 0), max(left - m, 0)
    region = image[t0 : min(top + patch + m, h), l0 : min(left + patch + m, w)]  # (h', w', 3)
    degraded = apply_degradation(name, region, rng, original_noise, synthesize)  # (3, h', w')
    dt, dl = top - t0, left - l0
    return degraded[:, dt : dt + patch, dl : dl + patch].contiguous(), to_tensor(crop(image, top, left, patch))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) array -> (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
