"""The deblurring bound: what linear filters undo of the synthetic motion blur.

[`deblur_bound`][dfpir.analysis.blur_bound.deblur_bound] restores blurred crops with Wiener deconvolution *with the true kernel* (an
upper reference for what a blind restorer can learn) and with one fixed filter for every shake
(the generic sharpening a restorer gets without estimating the kernel); given checkpoints are
placed between the two.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..degradations import context
from ..degradations.synthetic import blur_kernels, ensemble_wiener, filter2d, wiener_deconvolve
from ..model.network import DFPIR
from .interference import clean_crops

#: Noise-to-signal ratios tried per crop by [`deblur_bound`][dfpir.analysis.blur_bound.deblur_bound] (the best one counts).
WIENER_NSRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def deblur_bound(images: Sequence[np.ndarray] | None = None, count: int = 64, patch: int = 128, seed: int = 0,
                 ensemble: int = 2048, models: Mapping[str, DFPIR] | None = None) -> dict[str, Any]:
    """How much of the synthetic motion blur linear filters undo, knowing the kernel or not.

    ``count`` clean crops are blurred by [`dfpir.degradations.motion_blur`][dfpir.degradations.synthetic.motion_blur]'s kernels (in
    float64, no noise) together with the kernel's reach of surroundings, then restored two ways,
    and scored on the ``patch`` square in the middle (so no score counts a padded border):

    - *non-blind*: Wiener's filter with each crop's true kernel
      ([`wiener_deconvolve`][dfpir.degradations.synthetic.wiener_deconvolve]), at the best of ``WIENER_NSRS`` for each
      crop. A blind restorer (such as DFPIR) must estimate the kernel first, so its gain is below
      this one.
    - *fixed*: one linear filter for every crop, the best for the kernel distribution
      ([`ensemble_wiener`][dfpir.degradations.synthetic.ensemble_wiener] over ``ensemble`` other kernels of the
      generator), at the one of ``WIENER_NSRS`` best on average. It needs no kernel: a
      restorer that gains no more than this has learnt a generic sharpening, not to deblur each
      image by its own shake.

    ``models`` (name -> DFPIR) are run on the same blurred regions with the ``blur`` prompt, so
    that trained restorers can be placed between the two.

    Returns
    -------
    dict
        ``input_psnr``, ``wiener_psnr``, ``fixed_psnr`` (means over the crops, dB), the gains
        ``gain`` (Wiener) and ``fixed_gain`` over the input, and ``models``: name -> mean PSNR.
    """
    from ..metrics import psnr  # scikit-image's metrics take seconds to import: only this bound needs them

    m = context("blur")

    def crop_psnr(restored: torch.Tensor) -> torch.Tensor:  # (count,) PSNR of each crop's middle
        middle = (..., slice(m, m + patch), slice(m, m + patch))
        return torch.tensor([psnr(x[middle], c[middle]) for x, c in zip(restored, clean)])

    clean = clean_crops(images, count, patch + 2 * m, seed).double()  # (count, 3, P + 2m, P + 2m)
    kernels = blur_kernels(count, torch.Generator().manual_seed(seed)).double()
    blurred = filter2d(clean, kernels).clamp(0, 1)
    best = torch.stack([crop_psnr(wiener_deconvolve(blurred, kernels, nsr)) for nsr in WIENER_NSRS]).amax(dim=0)
    others = blur_kernels(ensemble, torch.Generator().manual_seed(seed + 1)).double()
    fixed = max(float(crop_psnr(ensemble_wiener(blurred, others, nsr)).mean()) for nsr in WIENER_NSRS)
    before = float(crop_psnr(blurred).mean())
    after = float(best.mean())
    restored = {name: float(crop_psnr(_restore_blur(model, blurred)).mean()) for name, model in (models or {}).items()}
    return {"input_psnr": before, "wiener_psnr": after, "gain": after - before, "fixed_psnr": fixed, "fixed_gain": fixed - before,
            "models": restored}


def _restore_blur(model: DFPIR, blurred: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """``model``'s restorations of (B, 3, H, W) float64 ``blurred`` with the ``blur`` prompt."""
    with torch.no_grad():
        parts = [model.restore(x.float(), "blur").clamp(0, 1) for x in blurred.split(batch)]
    return torch.cat(parts).double()
