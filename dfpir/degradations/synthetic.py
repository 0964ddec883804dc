"""Synthetic degradation models: noise, rain, haze, motion blur and low light.

Every model is a function ``f(clean, generator, **ranges) -> degraded`` on a batch of clean images
``clean`` of shape (B, C, H, W), float in [0, 1], on any device. Each sample of the batch gets its
own random parameters, drawn uniformly from the documented ranges with the ``torch.Generator``
passed in; pass a range as ``(lo, hi)`` or a single number to fix the parameter. Random numbers
are drawn on the generator's device and moved to the images' device, so a CPU generator gives the
same degradations on CPU and GPU.

The rows of [`dfpir.degradations.registry`][dfpir.degradations.registry] bind the registry names (``noise15``,
``noise25``, ``noise50``, ``rain``, ``haze``, ``blur``, ``lowlight``) to these functions with their
default ranges, and [`dfpir.degradations.degrade`][dfpir.degradations.registry.degrade] applies a (possibly different) named
degradation to each sample.

Examples
--------
>>> g = torch.Generator().manual_seed(0)
>>> hazy = haze(clean, g)                                  # doctest: +SKIP
>>> mixed = degrade(clean, ["rain", "blur", "noise25"], g)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError, UserTypeError

__all__ = [
    "Range",
    "RAIN_DENSITY",
    "RAIN_LENGTH",
    "RAIN_ANGLE",
    "RAIN_WIDTH",
    "RAIN_INTENSITY",
    "HAZE_BETA",
    "HAZE_AIRLIGHT",
    "HAZE_TINT",
    "BLUR_LENGTH",
    "LOWLIGHT_GAIN",
    "LOWLIGHT_GAMMA",
    "LOWLIGHT_PHOTONS",
    "LOWLIGHT_READ",
    "check_batch",
    "filter2d",
    "wiener_deconvolve",
    "ensemble_wiener",
    "gaussian_noise",
    "gaussian_noise_uint8",
    "rain_kernel_size",
    "line_kernels",
    "rain_streaks",
    "synthetic_depth",
    "atmospheric_scattering",
    "haze",
    "shake_trajectories",
    "rasterise",
    "blur_kernel_size",
    "blur_kernels",
    "motion_blur",
    "blur_with",
    "low_light",
]

Range = Union[float, tuple[float, float]]

# Default parameter ranges, one place to read them all (documented again on each function).
RAIN_DENSITY: Range = (0.002, 0.008)  # fraction of pixels that start a streak
RAIN_LENGTH: Range = (8.0, 28.0)  # pixels
RAIN_ANGLE: Range = (-25.0, 25.0)  # degrees from vertical, positive leans right at the bottom
RAIN_WIDTH: Range = (0.8, 2.0)  # pixels (full width at half maximum, roughly)
RAIN_INTENSITY: Range = (0.5, 0.9)  # peak brightness of a streak
HAZE_BETA: Range = (0.6, 2.4)  # scattering coefficient per unit of normalised depth
HAZE_AIRLIGHT: Range = (0.7, 1.0)  # grey level of the atmospheric light
HAZE_TINT: float = 0.04  # per-channel airlight deviation, so the haze is not always neutral grey
BLUR_LENGTH: Range = (4.0, 24.0)  # extent of the camera-shake trajectory in pixels
LOWLIGHT_GAIN: Range = (0.06, 0.3)  # exposure scale
LOWLIGHT_GAMMA: Range = (1.2, 2.0)  # > 1 darkens mid-tones more than highlights
LOWLIGHT_PHOTONS: Range = (150.0, 1500.0)  # photons per unit of intensity: fewer, noisier
LOWLIGHT_READ: Range = (0.002, 0.01)  # std of the signal-independent read noise


# --------------------------------------------------------------------------- helpers


def check_batch(clean: torch.Tensor) -> None:
    """Refuse anything but a float (B, C, H, W) batch, with a one-line reason."""
    """Refuse anything but a float (B, C, H, W) batch with a one-line reason."""
    if not isinstance(clean, torch.Tensor) or clean.ndim != 4:
        shape = tuple(clean.shape) if isinstance(clean, torch.Tensor) else type(clean).__name__
        raise UserError(f"degradations take a batch of shape (B, C, H, W), got {shape}")
    if not clean.is_floating_point():
        raise UserTypeError(f"degradations take float images in [0, 1], got {clean.dtype}")


def _as_range(value: Range, what: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else value
    if lo > hi:
        raise UserError(f"{what} range must be (low, high) with low <= high, got {value}")
    return float(lo), float(hi)


def _uniform(generator: torch.Generator, batch: int, value: Range, what: str, device: torch.device) -> torch.Tensor:
    """(B,) per-sample parameters drawn uniformly from ``value``."""
    lo, hi = _as_range(value, what)
    u = torch.rand(batch, generator=generator, device=generator.device)
    return (lo + (hi - lo) * u).to(device)


def _randn(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def _rand(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def filter2d(images: torch.Tensor, kernels: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """Convolve each sample with its own kernel (true convolution, same size output).

    Uses the FFT so the cost does not grow with the kernel size; the image is padded first
    (``reflect``, or ``replicate`` where the image is too small to reflect), so the circular
    wrap-around of the FFT only touches the padding that is cropped away.

    Parameters
    ----------
    images : Tensor
        (B, C, H, W) images.
    kernels : Tensor
        (B, K, K) kernels, K odd; every channel of sample b is filtered by ``kernels[b]``.
    padding : str
        ``"reflect"`` or ``"replicate"``.

    Returns
    -------
    Tensor
        (B, C, H, W) filtered images.
    """
    _check_kernels(kernels, images.shape[0])
    x, (h, w), p = _pad_for(images, kernels.shape[-1], padding)
    spectrum = torch.fft.rfft2(x) * _kernel_spectrum(kernels, x)[:, None]
    y = torch.fft.irfft2(spectrum, s=x.shape[-2:])
    return y[..., p : p + h, p : p + w]


def wiener_deconvolve(blurred: torch.Tensor, kernels: torch.Tensor, nsr: float, padding: str = "reflect") -> torch.Tensor:
    """Undo [`filter2d`][dfpir.degradations.synthetic.filter2d] with the *known* kernels: Wiener's filter ``conj(K) / (|K|^2 + nsr)``.

    A non-blind bound for deblurring: how much of what a blur removed can come back when the
    kernel is given, which a blind restorer must first estimate.

    Parameters
    ----------
    blurred : Tensor
        (B, C, H, W) images blurred by ``kernels``.
    kernels : Tensor
        (B, K, K) kernels, K odd, as given to [`filter2d`][dfpir.degradations.synthetic.filter2d].
    nsr : float
        Noise-to-signal ratio, > 0: larger values restore less and amplify less noise.
    padding : str
        The padding ``blurred`` was made with.

    Returns
    -------
    Tensor
        (B, C, H, W) deconvolved images, clipped to [0, 1].
    """
    if nsr <= 0:
        raise UserError(f"nsr must be > 0, got {nsr}")
    _check_kernels(kernels, blurred.shape[0])
    x, (h, w), p = _pad_for(blurred, kernels.shape[-1], padding)
    k = _kernel_spectrum(kernels, x)[:, None]
    y = torch.fft.irfft2(torch.fft.rfft2(x) * k.conj() / (k.abs() ** 2 + nsr), s=x.shape[-2:])
    return y[..., p : p + h, p : p + w].clamp(0, 1)


def ensemble_wiener(blurred: torch.Tensor, ensemble: torch.Tensor, nsr: float, padding: str = "reflect", chunk: int = 256) -> torch.Tensor:
    """Undo [`filter2d`][dfpir.degradations.synthetic.filter2d] with *one* linear filter for a whole distribution of kernels.

    The filter is ``conj(E[K]) / (E[|K|^2] + nsr)``, the expectations taken over ``ensemble``:
    with no noise (``nsr`` -> 0) it is the linear filter of least mean squared error when the
    kernel is drawn from that distribution and not known. What it gains is what restoring
    gets without estimating each image's kernel; a blind restorer must do better than this to
    approach [`wiener_deconvolve`][dfpir.degradations.synthetic.wiener_deconvolve].

    Parameters
    ----------
    blurred : Tensor
        (B, C, H, W) images, each blurred by some kernel of the distribution.
    ensemble : Tensor
        (N, K, K) kernels, K odd, drawn from the distribution (any N).
    nsr : float
        Noise-to-signal ratio, >= 0: regularises frequencies that the kernels mostly remove.
    padding : str
        The padding ``blurred`` was made with.
    chunk : int
        Kernels transformed at a time (bounds memory for a large ``ensemble``).

    Returns
    -------
    Tensor
        (B, C, H, W) filtered images, clipped to [0, 1].
    """
    if nsr < 0:
        raise UserError(f"nsr must be >= 0, got {nsr}")
    _check_kernels(ensemble)
    x, (h, w), p = _pad_for(blurred, ensemble.shape[-1], padding)
    mean = mean_power = 0.0
    for part in ensemble.split(chunk):
        k = _kernel_spectrum(part, x)  # (n, H', W'//2+1)
        mean = mean + k.sum(dim=0)
        mean_power = mean_power + (k.abs() ** 2).sum(dim=0)
    mean, mean_power = mean / len(ensemble), mean_power / len(ensemble)
    # mean_power >= |mean|^2 > 0 wherever the filter is not 0 (kernels sum to 1, so never at DC)
    response = mean.conj() / (mean_power + nsr).clamp_min(torch.finfo(mean_power.dtype).tiny)
    y = torch.fft.irfft2(torch.fft.rfft2(x) * response, s=x.shape[-2:])
    return y[..., p : p + h, p : p + w].clamp(0, 1)


def _check_kernels(kernels: torch.Tensor, batch: int | None = None) -> None:
    """Raise ValueError unless ``kernels`` is (batch, K, K) with K odd (any count if ``batch`` is None)."""
    k = kernels.shape[-1]
    n = kernels.shape[0] if batch is None else batch
    if kernels.shape != (n, k, k) or k % 2 == 0:
        raise UserError(f"kernels must have shape ({'N' if batch is None else batch}, K, K) with K odd, got {tuple(kernels.shape)}")


def _pad_for(images: torch.Tensor, k: int, padding: str) -> tuple[torch.Tensor, tuple[int, int], int]:
    """Pad ``images`` by half the kernel size ``k`` (``reflect``, or ``replicate`` where the image
    is too small to reflect); returns the padded images, the original (H, W) and the padding."""
    h, w = images.shape[-2:]
    p = k // 2
    mode = padding if (padding != "reflect" or (p < h and p < w)) else "replicate"
    return F.pad(images, (p, p, p, p), mode=mode), (h, w), p  # (B, C, H+2p, W+2p)


def _kernel_spectrum(kernels: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    """(B, H', W'//2+1) spectra of the kernels on the padded images' canvas, centre at (0, 0),
    so that a product of spectra is a centred convolution."""
    b, k = kernels.shape[0], kernels.shape[-1]
    hp, wp = padded.shape[-2:]
    canvas = torch.zeros(b, hp, wp, dtype=padded.dtype, device=padded.device)
    canvas[:, :k, :k] = kernels.to(padded.dtype)
    canvas = torch.roll(canvas, shifts=(-(k // 2), -(k // 2)), dims=(1, 2))
    return torch.fft.rfft2(canvas)


# --------------------------------------------------------------------------- noise


def gaussian_noise(clean: torch.Tensor, generator: torch.Generator, sigma: Range = 25.0, quantize: bool = False) -> torch.Tensor:
    """Add white Gaussian noise with standard deviation ``sigma`` on the 0-255 scale.

    Parameters
    ----------
    clean : Tensor
        (B, C, H, W) float images in [0, 1].
    generator : torch.Generator
        Source of the noise and of the per-sample sigma.
    sigma : float or (float, float)
        Noise standard deviation in 0-255 units (the paper's 15, 25, 50); a range draws one sigma
        per sample.
    quantize : bool
        Follow the original pipeline on the 0-255 scale: ``clip(x + N(0,1) sigma, 0, 255)`` cast to
        uint8 by truncation (``clean`` is taken as 8-bit values divided by 255). The result is then
        slightly darker on average (truncation, not rounding), as in the original training data.

    Returns
    -------
    Tensor
        Noisy images clipped to [0, 1].
    """
    check_batch(clean)
    s = _uniform(generator, clean.shape[0], sigma, "sigma", clean.device).to(clean.dtype)
    noise = _randn(clean.shape, generator, clean) * s[:, None, None, None]
    if quantize:
        return torch.floor(torch.clamp(torch.round(clean * 255) + noise, 0, 255)) / 255
    return torch.clamp(clean + noise / 255, 0, 1)


def gaussian_noise_uint8(image: np.ndarray, sigma: float, rng: np.random.Generator | np.random.RandomState | None = None) -> np.ndarray:
    """The original's on-the-fly noise, exactly: ``clip(x + N(0,1) sigma, 0, 255).astype(uint8)``.

    Parameters
    ----------
    image : ndarray
        uint8 image (any shape), values 0-255.
    sigma : float
        Noise standard deviation on the 0-255 scale.
    rng : numpy Generator or RandomState, optional
        Source of the noise; ``None`` uses NumPy's global state as the original did
        (``np.random.randn``), so ``np.random.seed(0)`` reproduces its stream.

    Returns
    -------
    ndarray
        uint8 noisy image; the cast truncates toward zero, as in the original.
    """
    normal = np.random.standard_normal if rng is None else rng.standard_normal
    noisy = np.clip(image.astype(np.float64) + normal(image.shape) * sigma, 0, 255)
    return noisy.astype(np.uint8)


# --------------------------------------------------------------------------- rain


def rain_kernel_size(length: Range = RAIN_LENGTH) -> int:
    """Side of the streak kernels of [`rain_streaks`][dfpir.degradations.synthetic.rain_streaks]: the smallest odd size that holds the longest streak."""
    return 2 * math.ceil(_as_range(length, "length")[1] / 2) + 1


def line_kernels(length: torch.Tensor, angle: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size) anti-aliased line kernels, peak 1, one per (length, angle, width).

    The angle is in degrees from the vertical (image rows grow downwards); the line's profile is
    Gaussian across its direction and fades smoothly at both ends, like a streak seen through a
    finite exposure.
    """
    r = torch.arange(size, dtype=torch.float32, device=length.device) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")  # (K, K)
    theta = torch.deg2rad(angle)[:, None, None]
    along = y * torch.cos(theta) + x * torch.sin(theta)  # (B, K, K)
    across = -y * torch.sin(theta) + x * torch.cos(theta)
    sigma = (width / 2.355)[:, None, None]  # FWHM -> std
    half = (length / 2)[:, None, None]
    profile = torch.exp(-0.5 * (across / sigma) ** 2)
    ends = torch.clamp(1 - (along / half) ** 2, min=0) ** 0.5  # soft fade toward the tips
    return profile * ends


def rain_streaks(
    clean: torch.Tensor,
    generator: torch.Generator,
    density: Range = RAIN_DENSITY,
    length: Range = RAIN_LENGTH,
    angle: Range = RAIN_ANGLE,
    width: Range = RAIN_WIDTH,
    intensity: Range = RAIN_INTENSITY,
) -> torch.Tensor:
    """Add bright, thin rain streaks, all parallel within a sample (one wind direction).

    Random seed points are smeared along the streak direction by a line kernel (the motion blur a
    falling drop leaves in one exposure), giving a grey rain layer ``R`` in [0, 1] that is screened
    onto the image: ``I = 1 - (1 - J)(1 - R)``, which brightens and never leaves [0, 1].

    Parameters
    ----------
    clean : Tensor
        (B, C, H, W) float images in [0, 1].
    generator : torch.Generator
        Source of all randomness.
    density : float or (float, float)
        Fraction of pixels that start a streak, default (0.002, 0.008).
    length : float or (float, float)
        Streak length in pixels, default (8, 28).
    angle : float or (float, float)
        Streak direction in degrees from the vertical, default (-25, 25).
    width : float or (float, float)
        Streak width (about the full width at half maximum) in pixels, default (0.8, 2).
    intensity : float or (float, float)
        Peak streak brightness, default (0.5, 0.9); each streak is further scaled by U(0.6, 1).

    Returns
    -------
    Tensor
        Rainy images in [0, 1].
    """
    check_batch(clean)
    b, _, h, w = clean.shape
    dev = clean.device
    dens = _uniform(generator, b, density, "density", dev)
    lens = _uniform(generator, b, length, "length", dev)
    angs = _uniform(generator, b, angle, "angle", dev)
    wids = _uniform(generator, b, width, "width", dev)
    peak = _uniform(generator, b, intensity, "intensity", dev)
    u = _rand((b, 1, h, w), generator, clean)
    strength = 0.6 + 0.4 * _rand((b, 1, h, w), generator, clean)
    seeds = (u < dens[:, None, None, None]).to(clean.dtype) * strength  # (B, 1, H, W)
    size = rain_kernel_size(length)
    kernels = line_kernels(lens.float(), angs.float(), wids.float(), size)
    layer = filter2d(seeds, kernels, padding="replicate").clamp(0, 1) * peak[:, None, None, None]
    return 1 - (1 - clean) * (1 - layer)


# --------------------------------------------------------------------------- haze


def synthetic_depth(batch: int, height: int, width: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 1, H, W) plausible normalised depth maps in [0, 1] (0 near, 1 far).

    A ramp toward a random "horizon" direction, mostly upward as in outdoor photos, plus smooth
    low-frequency noise (a coarse random grid upsampled bicubically) so that depth varies across
    the scene, then rescaled to span [0, 1] per sample.
    """
    tilt = (torch.rand(batch, generator=generator, device=generator.device) - 0.5) * math.pi / 2
    tilt = tilt.to(device)
    ys = torch.linspace(1, 0, height, device=device)[:, None]  # top of the image is far
    xs = torch.linspace(-0.5, 0.5, width, device=device)[None, :]
    ramp = ys * torch.cos(tilt)[:, None, None] + xs * torch.sin(tilt)[:, None, None]  # (B, H, W)
    coarse = torch.randn(batch, 1, 4, 4, generator=generator, device=generator.device).to(device)
    bumps = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[:, 0]
    depth = ramp + 0.25 * bumps
    lo = depth.amin(dim=(1, 2), keepdim=True)
    hi = depth.amax(dim=(1, 2), keepdim=True)
    return ((depth - lo) / (hi - lo).clamp_min(1e-6))[:, None]


def atmospheric_scattering(clean: torch.Tensor, transmission: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
    """Koschmieder's model ``I = J t + A (1 - t)``.

    Parameters
    ----------
    clean : Tensor
        (B, C, H, W) scene radiance J.
    transmission : Tensor
        (B, 1, H, W) transmission t in (0, 1].
    airlight : Tensor
        (B, C) atmospheric light A.
    """
    a = airlight[:, :, None, None]
    return clean * transmission + a * (1 - transmission)


def haze(
    clean: torch.Tensor,
    generator: torch.Generator,
    beta: Range = HAZE_BETA,
    airlight: Range = HAZE_AIRLIGHT,
    tint: float = HAZE_TINT,
    return_maps: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add haze by the atmospheric scattering model with a synthetic depth map.

    ``t = exp(-beta d)`` with ``d`` from [`synthetic_depth`][dfpir.degradations.synthetic.synthetic_depth], then
    [`atmospheric_scattering`][dfpir.degradations.synthetic.atmospheric_scattering]: far regions tend to the airlight, so they get brighter and
    flatter (less contrast).

    Parameters
    ----------
    clean : Tensor
        (B, C, H, W) float images in [0, 1].
    generator : torch.Generator
        Source of all randomness.
    beta : float or (float, float)
        Scattering coefficient for depth normalised to [0, 1], default (0.6, 2.4): the farthest
        point keeps between 9% and 55% of its radiance.
    airlight : float or (float, float)
        Grey level of the atmospheric light, default (0.7, 1.0).
    tint : float
        Each channel of the airlight deviates by U(-tint, tint), default 0.04 (slightly coloured haze).
    return_maps : bool
        Also return the (B, 1, H, W) transmission and depth maps.

    Returns
    -------
    Tensor or (Tensor, Tensor, Tensor)
        Hazy images in [0, 1] (and transmission, depth).
    """
    check_batch(clean)
    b, c, h, w = clean.shape
    dev = clean.device
    betas = _uniform(generator, b, beta, "beta", dev).to(clean.dtype)
    grey = _uniform(generator, b, airlight, "airlight", dev).to(clean.dtype)
    shift = (2 * _rand((b, c), generator, clean) - 1) * tint
    a = (grey[:, None] + shift).clamp(0, 1)  # (B, C)
    depth = synthetic_depth(b, h, w, generator, dev).to(clean.dtype)
    t = torch.exp(-betas[:, None, None, None] * depth)
    hazy = atmospheric_scattering(clean, t, a).clamp(0, 1)
    return (hazy, t, depth) if return_maps else hazy


# --------------------------------------------------------------------------- motion blur


def shake_trajectories(batch: int, generator: torch.Generator, steps: int = 96) -> torch.Tensor:
    """(B, steps, 2) random camera-shake paths (x, y), unit extent, centred on their mean.

    A random walk with inertia: the velocity keeps its direction, is nudged by Gaussian jitter,
    pulled back toward the start (hands return), and now and then jolted by an impulsive shake;
    the speed is held constant so the path length is spread evenly over the exposure.
    """
    g, dev = generator, generator.device
    n = steps - 1
    jitter = torch.rand(batch, 1, 1, generator=g, device=dev) * 0.7 + 0.1  # how shaky: 0.1 .. 0.8
    pull = (torch.rand(batch, 1, generator=g, device=dev) * 0.05).cpu().numpy()
    heading = torch.rand(batch, generator=g, device=dev) * 2 * math.pi
    kicks = torch.randn(batch, n, 2, generator=g, device=dev) * jitter
    jolts = (torch.rand(batch, n, 1, generator=g, device=dev) < 0.03) * torch.randn(batch, n, 2, generator=g, device=dev) * 3
    # All randomness is drawn above in a few calls; the walk itself is sequential and tiny, so it
    # runs in NumPy where a step costs microseconds rather than a dozen torch dispatches.
    push = (kicks + jolts).cpu().numpy().astype(np.float64)
    v = torch.stack([torch.cos(heading), torch.sin(heading)], dim=-1).cpu().numpy().astype(np.float64)  # (B, 2)
    pos = np.zeros((batch, 2))
    path = [pos]
    for i in range(n):
        v = v + push[:, i] - pull * pos
        v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-6)
        pos = pos + v
        path.append(pos)
    traj = torch.from_numpy(np.stack(path, axis=1)).to(dev, torch.float32)  # (B, steps, 2)
    traj = traj - traj.mean(dim=1, keepdim=True)
    extent = (traj.amax(dim=1) - traj.amin(dim=1)).amax(dim=-1).clamp_min(1e-6)  # (B,)
    return traj / extent[:, None, None]


def rasterise(trajectories: torch.Tensor, size: int) -> torch.Tensor:
    """Splat (B, N, 2) pixel-unit paths centred at 0 onto (B, size, size) kernels summing to 1.

    Bilinear splatting, so sub-pixel motion gives smooth kernels; every point carries equal
    weight, i.e. equal time along the exposure.
    """
    b, n, _ = trajectories.shape
    c = trajectories + size // 2  # kernel centre at (size // 2, size // 2)
    c = c.clamp(0, size - 1 - 1e-4)
    base = torch.floor(c)
    frac = c - base
    base = base.long()
    kernel = torch.zeros(b, size * size, device=trajectories.device)
    for dx in (0, 1):
        for dy in (0, 1):
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            wy = frac[..., 1] if dy else 1 - frac[..., 1]
            idx = (base[..., 1] + dy).clamp(max=size - 1) * size + (base[..., 0] + dx).clamp(max=size - 1)
            kernel.scatter_add_(1, idx, wx * wy)
    kernel = kernel.view(b, size, size)
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def blur_kernel_size(length: Range = BLUR_LENGTH) -> int:
    """Side of the kernels of [`blur_kernels`][dfpir.degradations.synthetic.blur_kernels]: the smallest odd size that holds the longest
    trajectory, plus a pixel each side for its anti-aliased ends."""
    return 2 * math.ceil(_as_range(length, "length")[1] / 2) + 3


def blur_kernels(batch: int, generator: torch.Generator, length: Range = BLUR_LENGTH) -> torch.Tensor:
    """(B, K, K) motion-blur kernels from random camera shakes, each summing to 1.

    Parameters
    ----------
    batch : int
        Number of kernels.
    generator : torch.Generator
        Source of all randomness (kernels are built on its device).
    length : float or (float, float)
        Extent of each trajectory in pixels (its largest side), default (4, 24); K is the smallest
        odd size that holds the longest allowed trajectory.
    """
    lo, hi = _as_range(length, "length")
    size = blur_kernel_size(length)
    extents = _uniform(generator, batch, (lo, hi), "length", generator.device)
    paths = shake_trajectories(batch, generator) * extents[:, None, None]
    return rasterise(paths, size)


def motion_blur(clean: torch.Tensor, generator: torch.Generator, length: Range = BLUR_LENGTH) -> torch.Tensor:
    """Blur each sample with its own random camera-shake kernel ([`blur_kernels`][dfpir.degradations.synthetic.blur_kernels]).

    Parameters
    ----------
    clean : Tensor
        (B, C, H, W) float images in [0, 1].
    generator : torch.Generator
        Source of all randomness.
    length : float or (float, float)
        Trajectory extent in pixels, default (4, 24).

    Returns
    -------
    Tensor
        Blurred images (reflect padding at the borders), clipped to [0, 1].
    """
    check_batch(clean)
    return blur_with(clean, blur_kernels(clean.shape[0], generator, length))


def blur_with(clean: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each sample of (B, C, H, W) ``clean`` with its (K, K) kernel of (B, K, K) ``kernels``, as
    [`motion_blur`][dfpir.degradations.synthetic.motion_blur] does: reflect padding, clipped to [0, 1]."""
    return filter2d(clean, kernels.to(clean.device), padding="reflect").clamp(0, 1)


# --------------------------------------------------------------------------- low light


def low_light(
    clean: torch.Tensor,
    generator: torch.Generator,
    gain: Range = LOWLIGHT_GAIN,
    gamma: Range = LOWLIGHT_GAMMA,
    photons: Range = LOWLIGHT_PHOTONS,
    read_noise: Range = LOWLIGHT_READ,
) -> torch.Tensor:
    """Under-expose: ``x = gain * J ** gamma`` then Poisson-Gaussian sensor noise.

    The shot noise is ``Poisson(photons * x) / photons`` (variance ``x / photons``, growing with the
    signal) and the read noise ``N(0, read_noise**2)`` is independent of it, so the noise variance
    is ``x / photons + read_noise**2``.

    Parameters
    ----------
    clean : Tensor
        (B, C, H, W) float images in [0, 1].
    generator : torch.Generator
        Source of all randomness.
    gain : float or (float, float)
        Exposure scale, default (0.06, 0.3).
    gamma : float or (float, float)
        Tone curve exponent, default (1.2, 2.0).
    photons : float or (float, float)
        Photons per unit intensity, default (150, 1500).
    read_noise : float or (float, float)
        Read-noise standard deviation, default (0.002, 0.01).

    Returns
    -------
    Tensor
        Dark, noisy images clipped to [0, 1].
    """
    check_batch(clean)
    b = clean.shape[0]
    dev = clean.device

    def per_sample(value: Range, what: str) -> torch.Tensor:
        return _uniform(generator, b, value, what, dev).to(clean.dtype)[:, None, None, None]

    k, gm, ph, rd = per_sample(gain, "gain"), per_sample(gamma, "gamma"), per_sample(photons, "photons"), per_sample(read_noise, "read_noise")
    dark = k * clean.clamp(0, 1) ** gm
    rate = (dark * ph).to(generator.device, torch.float32)
    shot = torch.poisson(rate, generator=generator).to(dev, clean.dtype) / ph
    return (shot + rd * _randn(clean.shape, generator, clean)).clamp(0, 1)
