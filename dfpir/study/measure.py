"""What the study measures of a trained run: held-out quality and gradient conflicts.

Held-out set: a folder of clean photos no arm trains on, from another source than the training
photos (the intended one is the Debian package ``mate-backgrounds``, ``/usr/share/backgrounds/mate/``).
Each photo is scaled so its shorter side has a fixed length (area averaging: no aliasing, no
randomness), centre-cropped to a fixed square, and degraded by each degradation with a generator
seeded by (photo name, degradation), so every run is scored on the very same inputs.

Gradient conflicts: the cosines between the degradations' gradients over the shared backbone
only (the DGPBs' own weights left out, so arms with and without DGPBs are compared on the same
kind of parameters), averaged over a fixed series of batches of the training photos
([`dfpir.analysis.task_batches`][dfpir.analysis.interference.task_batches], seeds ``CONFLICT_SEED + k``).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.interference import interference_from_gradients, task_batches, task_gradients
from ..data import list_images, read_image, to_tensor
from ..degradations import degrade
from ..errors import UserError
from ..metrics import psnr, ssim
from ..model.network import DFPIR
from .arms import backbone

CONFLICT_SEED = 10_000  # batch k of every conflict measurement is task_batches(seed=CONFLICT_SEED + k)


@dataclass(frozen=True)
class HeldOut:
    """The held-out photos, cropped: ``names`` (file names) and ``images`` (N, 3, S, S) in [0, 1]."""

    names: tuple[str, ...]
    images: torch.Tensor

    @property
    def digest(self) -> str:
        """SHA-256 of the names and pixels: runs scored on different sets are never pooled."""
        h = hashlib.sha256()
        for name, image in zip(self.names, self.images):
            h.update(name.encode() + b"\0" + image.numpy().astype("<f4").tobytes())
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        """What a result file records of the set."""
        return {"images": list(self.names), "crop": int(self.images.shape[-1]), "digest": self.digest}


def centre_crop(image: np.ndarray | torch.Tensor, size: int) -> np.ndarray | torch.Tensor:
    """The centre ``size`` x ``size`` square of (H, W, 3)."""
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def scale_shorter_side(image: torch.Tensor, side: int) -> torch.Tensor:
    """(3, H, W) scaled by area averaging so that min(H, W) == ``side`` (0 or larger than it: as is)."""
    h, w = image.shape[-2:]
    if side <= 0 or min(h, w) <= side:
        return image
    size = (side, round(w * side / h)) if h <= w else (round(h * side / w), side)
    return F.interpolate(image[None], size=size, mode="area")[0]


def heldout_set(folder: str, crop: int, count: int = 0, side: int = 0) -> HeldOut:
    """The held-out photos of ``folder`` (the first ``count`` in name order; 0: all), scaled so
    their shorter side is ``side`` (0: not scaled), centre-cropped to ``crop``.

    Raises
    ------
    UserError
        For a missing or empty folder, an unreadable file, or a photo smaller than ``crop``.
    """
    files = list_images(folder)
    if not files:
        raise UserError(f"--heldout {folder}: no images found; give a folder of clean photos that no arm trains on "
                        "(e.g. /usr/share/backgrounds/mate/ from the Debian package mate-backgrounds)")
    files = files[:count] if count else files
    crops = []
    for f in files:
        image = scale_shorter_side(to_tensor(read_image(f)), side)  # (3, H, W)
        if min(image.shape[-2:]) < crop:
            raise UserError(f"{f}: {image.shape[-1]}x{image.shape[-2]} is smaller than the grid's {crop}x{crop} "
                            "held-out crop; remove it from the folder")
        crops.append(centre_crop(image.permute(1, 2, 0), crop).permute(2, 0, 1).contiguous())
    return HeldOut(tuple(f.name for f in files), torch.stack(crops))


def degraded(heldout: HeldOut, degradation: str) -> torch.Tensor:
    """(N, 3, S, S): each photo with ``degradation``, from a generator seeded by (photo, degradation)."""
    out = []
    for name, image in zip(heldout.names, heldout.images):
        g = torch.Generator().manual_seed(zlib.crc32(f"{name}/{degradation}".encode()))
        out.append(degrade(image[None], [degradation], g)[0].clamp(0, 1))
    return torch.stack(out)


def finite(x: float) -> float | None:
    """``x``, or ``None`` where JSON has no number for it (NaN, infinity)."""
    return float(x) if math.isfinite(x) else None


@torch.no_grad()
def evaluate(model: DFPIR, heldout: HeldOut, degradations: Sequence[str], device: torch.device) -> dict[str, Any]:
    """Per degradation: PSNR and SSIM of the input and of the restored photos, mean and per photo."""
    model = model.to(device).eval()
    out = {}
    for name in degradations:
        inputs = degraded(heldout, name)
        rows: dict[str, list[float | None]] = {"psnr": [], "ssim": [], "input_psnr": [], "input_ssim": []}
        for noisy, clean in zip(inputs, heldout.images):
            prompt = model.embed_prompts(name, 1) if model.config.use_dgpb else None
            restored = model(noisy[None].to(device), prompt)[0].cpu()
            rows["psnr"].append(finite(psnr(restored, clean)))
            rows["ssim"].append(finite(ssim(restored, clean)))
            rows["input_psnr"].append(finite(psnr(noisy, clean)))
            rows["input_ssim"].append(finite(ssim(noisy, clean)))
        out[name] = {**{k: finite(float(np.mean([v for v in vs if v is not None]))) for k, vs in rows.items()},
                     "per_image": rows}
    return out


def gradient_conflicts(model: DFPIR, degradations: Sequence[str], batches: int, batch: int, patch: int,
                       device: torch.device) -> dict[str, Any]:
    """Gradient cosines between degradations over the backbone, averaged over ``batches`` batches.

    Returns
    -------
    dict
        ``mean_cosine`` (over task pairs, then batches), its ``sd`` over batches,
        ``conflict_fraction`` (pairs with a negative cosine, mean over batches), ``cosine`` (the
        (T, T) matrix averaged over batches), ``per_batch`` mean cosines, and the number of
        ``parameters`` measured.
    """
    if len(degradations) < 2:
        raise UserError("gradient conflicts need at least two degradations")
    model = model.to(device).train()
    for name, p in model.named_parameters():  # the DGPBs still pass gradients through to the backbone
        p.requires_grad_(p.requires_grad and backbone(name))
    means, fractions, matrices = [], [], []
    for k in range(batches):
        grads, _ = task_gradients(model, task_batches(degradations, batch=batch, patch=patch, seed=CONFLICT_SEED + k))
        measured = interference_from_gradients(grads)
        means.append(measured.mean_cosine)
        fractions.append(measured.conflict_fraction)
        matrices.append(measured.cosine)
    return {
        "batches": batches,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "mean_cosine": finite(float(np.mean(means))),
        "sd": finite(float(np.std(means, ddof=1))) if batches > 1 else None,
        "conflict_fraction": finite(float(np.mean(fractions))),
        "cosine": [[finite(float(v)) for v in row] for row in np.mean(matrices, axis=0)],
        "per_batch": [finite(m) for m in means],
    }
