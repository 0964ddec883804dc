"""Image quality metrics, as the original computes them (scikit-image, RGB, data range 1)."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from .errors import UserError

SSIM_WINDOW = 7  # scikit-image's default window side: smaller images have no SSIM


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) tensor or (H, W, 3) array -> (H, W, 3) float64 array clipped to [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)


def psnr(output: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """PSNR in dB of a clipped output against its target (``data_range=1``).

    ``inf`` when the two are equal, as scikit-image returns (without its divide-by-zero warning).
    """
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(to_hwc(target), to_hwc(output), data_range=1.0))


def ssim(output: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """SSIM with scikit-image's defaults (7 x 7 uniform window) over RGB (``channel_axis=-1``).

    Raises
    ------
    ValueError
        One line, for images smaller than the window (scikit-image's own message is a paragraph).
    """
    target, output = to_hwc(target), to_hwc(output)
    if min(target.shape[:2]) < SSIM_WINDOW:
        h, w = target.shape[:2]
        raise UserError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {w}x{h}")
    return float(structural_similarity(target, output, data_range=1.0, channel_axis=-1))


def centre_crop_multiple(image: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Centre-crop (H, W, C) to a multiple of ``multiple`` (the original's test protocol)."""
    h, w = image.shape[:2]
    th, tw = h - h % multiple, w - w % multiple
    top, left = (h - th) // 2, (w - tw) // 2
    return image[top : top + th, left : left + tw]
