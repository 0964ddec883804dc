"""Classical restorations to set beside the learned one: what a user would otherwise run.

Each anchor gets what the degradation's model says it may know, and nothing from the clean photo:

- noise: [`denoise_bm3d`][dfpir.analysis.anchors.denoise_bm3d] (colour BM3D from the optional ``bm3d`` package) and
  [`denoise_nlm`][dfpir.analysis.anchors.denoise_nlm] (scikit-image's non-local means), both given the true sigma;
- motion blur: Wiener deconvolution with the photo's true kernel
  ([`wiener_deconvolve`][dfpir.degradations.synthetic.wiener_deconvolve]: a non-blind bound), and the one
  [`FixedWiener`][dfpir.analysis.anchors.FixedWiener] filter for the whole kernel distribution (the generic sharpening
  of [`blur_bound`][dfpir.analysis.blur_bound]);
- haze: the dark-channel prior of He, Sun and Tang (CVPR 2009), its transmission refined with their
  guided filter (ECCV 2010): [`dark_channel_prior`][dfpir.analysis.anchors.dark_channel_prior].

Images are (H, W, 3) float arrays in [0, 1], as [`dfpir.images.read_image`][dfpir.images.read_image] returns them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.restoration import denoise_nl_means

from ..degradations.synthetic import wiener_deconvolve

#: He et al.'s dark-channel window (pixels), haze kept on purpose (omega), smallest transmission
#: (t0) and the share of the brightest dark-channel pixels searched for the airlight.
DCP_WINDOW, DCP_OMEGA, DCP_T0, DCP_TOP = 15, 0.95, 0.1, 0.001
#: Guided filter radius and regularisation for the transmission: a radius of four dark-channel
#: windows smooths away the 15-px blocks, and eps = 1e-3 keeps edges of the grey guide's contrast.
GUIDED_RADIUS, GUIDED_EPS = 60, 1e-3


# --------------------------------------------------------------------------- noise


def bm3d_available() -> bool:
    """Whether the optional ``bm3d`` package is installed (``pip install bm3d``)."""
    return importlib.util.find_spec("bm3d") is not None


def denoise_bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Colour BM3D (``bm3d.bm3d_rgb``, Dabov et al. 2007) given the true noise level.

    Parameters
    ----------
    noisy : np.ndarray
        (H, W, 3) float image in [0, 1].
    sigma : float
        Noise standard deviation on the 0-255 scale (the registry's ``sigma``).

    Returns
    -------
    np.ndarray
        (H, W, 3) float32 denoised image, clipped to [0, 1].
    """
    import bm3d  # optional (the eval extra), and slow to import

    return np.clip(bm3d.bm3d_rgb(np.asarray(noisy, dtype=np.float64), sigma_psd=sigma / 255), 0, 1).astype(np.float32)


def denoise_nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means (scikit-image, fast mode) given the true noise level, with the settings of
    ``python -m dfpir.evaluate --baseline``: ``h = 0.8 sigma``, 5 x 5 patches, 13 x 13 search.

    Parameters
    ----------
    noisy : np.ndarray
        (H, W, 3) float image in [0, 1].
    sigma : float
        Noise standard deviation on the 0-255 scale.

    Returns
    -------
    np.ndarray
        (H, W, 3) float32 denoised image, clipped to [0, 1].
    """
    s = sigma / 255
    out = denoise_nl_means(np.asarray(noisy, dtype=np.float64), h=0.8 * s, sigma=s, patch_size=5, patch_distance=6,
                           fast_mode=True, channel_axis=-1)
    return np.clip(out, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- motion blur


def _as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64)).permute(2, 0, 1)[None]  # (1, 3, H, W)


def _as_image(batch: torch.Tensor) -> np.ndarray:
    return batch[0].permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)


def wiener_true_kernel(blurred: np.ndarray, kernel: np.ndarray, nsr: float) -> np.ndarray:
    """Wiener deconvolution of a whole photo with its *true* (K, K) kernel
    ([`wiener_deconvolve`][dfpir.degradations.synthetic.wiener_deconvolve], reflect padding, as the blur was made)."""
    k = torch.as_tensor(kernel, dtype=torch.float64)[None]  # (1, K, K)
    return _as_image(wiener_deconvolve(_as_batch(blurred), k, nsr))


def _centred_spectrum(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """rfft2 of an odd (S, S) ``kernel`` centred at pixel (0, 0) of an ``shape`` canvas; taps past the
    canvas wrap around, as a circular convolution on that canvas would see them."""
    s = kernel.shape[-1]
    rows = (torch.arange(s) - s // 2) % shape[0]
    cols = (torch.arange(s) - s // 2) % shape[1]
    canvas = torch.zeros(shape, dtype=kernel.dtype)
    canvas.index_put_((rows[:, None].expand(s, s), cols[None, :].expand(s, s)), kernel, accumulate=True)
    return torch.fft.rfft2(canvas)


@dataclass(frozen=True)
class FixedWiener:
    """The one linear filter for a whole kernel distribution, ``conj(E[K]) / (E[|K|^2] + nsr)``.

    The same filter as [`ensemble_wiener`][dfpir.degradations.synthetic.ensemble_wiener], built once and cheap on any
    image size: ``E[K]`` is the spectrum of the mean kernel, and ``E[|K|^2]`` the spectrum of the
    mean autocorrelation of the kernels (``|K|^2`` is the transform of ``k`` correlated with itself),
    so two small kernels replace thousands of photo-sized transforms.

    Parameters
    ----------
    mean : Tensor
        (K, K) mean kernel, K odd.
    autocorrelation : Tensor
        (2K - 1, 2K - 1) mean autocorrelation, lag 0 in the middle.
    """

    mean: torch.Tensor
    autocorrelation: torch.Tensor

    @classmethod
    def from_ensemble(cls, ensemble: torch.Tensor) -> FixedWiener:
        """The filter of (N, K, K) kernels drawn from the distribution (K odd)."""
        k = ensemble.shape[-1]
        side = 2 * k - 1  # lags -(K-1)..K-1: a canvas this wide holds them without wrapping
        spectra = torch.fft.rfft2(ensemble.double(), s=(side, side))  # (N, side, side // 2 + 1)
        lags = torch.fft.irfft2((spectra.abs() ** 2).mean(dim=0), s=(side, side))  # lag u at index u mod side
        return cls(ensemble.double().mean(dim=0), torch.roll(lags, (k - 1, k - 1), dims=(0, 1)))

    def __call__(self, blurred: np.ndarray, nsr: float) -> np.ndarray:
        """Filter an (H, W, 3) image (reflect padding, replicate where the image is too small to
        reflect, as [`ensemble_wiener`][dfpir.degradations.synthetic.ensemble_wiener] pads); clipped to [0, 1]."""
        x = _as_batch(blurred)
        h, w = x.shape[-2:]
        p = self.mean.shape[-1] // 2
        x = F.pad(x, (p, p, p, p), mode="reflect" if p < min(h, w) else "replicate")  # (1, 3, H+2p, W+2p)
        shape = tuple(x.shape[-2:])
        mean, power = _centred_spectrum(self.mean, shape), _centred_spectrum(self.autocorrelation, shape).real
        response = mean.conj() / (power + nsr).clamp_min(torch.finfo(power.dtype).tiny)
        y = torch.fft.irfft2(torch.fft.rfft2(x) * response, s=shape)
        return _as_image(y[..., p : p + h, p : p + w].clamp(0, 1))


# --------------------------------------------------------------------------- haze


def min_filter(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) minimum over the ``size`` x ``size`` window around each pixel (``size`` odd), the
    window cut at the borders. Separable: the minimum over rows, then over columns."""
    r = size // 2
    out = image
    for axis in (0, 1):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="edge")  # edge copies change no minimum
        out = np.lib.stride_tricks.sliding_window_view(padded, size, axis=axis).min(axis=-1)
    return out


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) mean over the (2r + 1)^2 window around each pixel, the window cut at the borders
    (so a constant stays constant); cumulative sums make it O(1) per pixel for any radius."""
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        sums = np.concatenate([np.zeros_like(out.take([0], axis=axis)), np.cumsum(out, axis=axis)], axis=axis)
        i = np.arange(n)
        hi, lo = np.minimum(i + radius + 1, n), np.maximum(i - radius, 0)
        count = (hi - lo).reshape([-1 if a == axis else 1 for a in (0, 1)])
        out = (sums.take(hi, axis=axis) - sums.take(lo, axis=axis)) / count
    return out


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS) -> np.ndarray:
    """He et al.'s guided filter (ECCV 2010) with a grey (H, W) ``guide``: ``source`` smoothed,
    its edges taken from the guide.

    In each window the output is the linear function ``a * guide + b`` closest to ``source``
    (ridge-regularised by ``eps``); each pixel averages the ``a`` and ``b`` of the windows over it.
    """
    mean_i, mean_p = box_mean(guide, radius), box_mean(source, radius)
    cov_ip = box_mean(guide * source, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i**2
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def dark_channel(image: np.ndarray, size: int = DCP_WINDOW) -> np.ndarray:
    """(H, W) dark channel: the minimum over the colours and the ``size`` x ``size`` window."""
    return min_filter(np.asarray(image).min(axis=-1), size)


def estimate_airlight(image: np.ndarray, dark: np.ndarray, top: float = DCP_TOP) -> np.ndarray:
    """(3,) atmospheric light: among the brightest ``top`` share of the dark channel (the haziest
    pixels), the colour of the brightest pixel of ``image`` (He et al. 2009, section 4.4).

    Every pixel tied with the last one of that share is taken too, and ties in brightness go to
    the first pixel in row order: an 8-bit image has hundreds of pixels on the boundary value,
    and which of them a partial sort keeps depends on the CPU's sorting kernels, which moved the
    dark-channel prior's gain by up to 0.07 dB between two machines.
    """
    flat_dark, flat = dark.reshape(-1), np.asarray(image).reshape(-1, 3)
    count = max(1, int(flat_dark.size * top))
    boundary = np.partition(flat_dark, flat_dark.size - count)[flat_dark.size - count]  # a value: the same on any CPU
    haziest = np.flatnonzero(flat_dark >= boundary)  # row order
    return flat[haziest[np.argmax(flat[haziest].sum(axis=1))]].astype(np.float64)


@dataclass
class Dehazed:
    """What [`dark_channel_prior`][dfpir.analysis.anchors.dark_channel_prior] found: the scene radiance, the atmospheric light and the refined transmission."""

    image: np.ndarray
    airlight: np.ndarray
    transmission: np.ndarray


def dark_channel_prior(hazy: np.ndarray, window: int = DCP_WINDOW, omega: float = DCP_OMEGA, t0: float = DCP_T0,
                       radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS, airlight: np.ndarray | None = None) -> Dehazed:
    """Dehaze by the dark-channel prior (He, Sun and Tang, CVPR 2009).

    In haze-free outdoor photos most windows hold a pixel dark in some colour, so the dark channel
    of a hazy image ``I = J t + A (1 - t)`` measures the haze: ``t = 1 - omega * dark(I / A)``
    (``omega < 1`` keeps a little haze, for depth). The transmission is refined with the guided
    filter (grey image as guide) instead of the paper's soft matting, then
    ``J = (I - A) / max(t, t0) + A``.

    Parameters
    ----------
    hazy : np.ndarray
        (H, W, 3) float image in [0, 1].
    window : int
        Dark-channel window side (odd), 15 as in the paper.
    omega : float
        Share of the haze removed, 0.95.
    t0 : float
        Lower bound of the transmission, 0.1: where almost no scene light arrives, dividing by
        ``t`` would only amplify noise.
    radius, eps : int, float
        The guided filter's radius and regularisation.
    airlight : np.ndarray, optional
        (3,) atmospheric light when it is known; estimated by [`estimate_airlight`][dfpir.analysis.anchors.estimate_airlight] otherwise.

    Returns
    -------
    Dehazed
        The (H, W, 3) float32 dehazed image clipped to [0, 1], the (3,) airlight and the (H, W)
        transmission.
    """
    image = np.asarray(hazy, dtype=np.float64)
    if airlight is None:
        airlight = estimate_airlight(image, dark_channel(image, window))
    airlight = np.asarray(airlight, dtype=np.float64)
    raw = 1 - omega * dark_channel(image / np.maximum(airlight, 1e-6), window)
    t = np.clip(guided_filter(image.mean(axis=-1), raw, radius, eps), 0, 1)
    restored = (image - airlight) / np.maximum(t, t0)[..., None] + airlight
    return Dehazed(np.clip(restored, 0, 1).astype(np.float32), airlight, t)
