"""The degradation registry: one row per degradation type, the one place its facts are written.

A row holds the registry name, the two prompt texts the original encodes with CLIP, the original
code's task id, the synthetic generator that makes training pairs from a clean photo, how far
that generator reaches around a pixel (its ``extent``: training patches are degraded with that
much context, then cut, so no patch holds a padded border), and, for Gaussian noise, its sigma. Everything else (the prompt bank, the datasets, the training config,
the evaluation benchmarks, the analysis tools) reads these rows instead of spelling names out.

>>> from dfpir.degradations import get_degradation
>>> get_degradation("noise25").sigma
25.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from ..errors import UserError
from . import synthetic

DegradeFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Degradation:
    """One degradation type.

    Parameters
    ----------
    name : str
        Registry name (lower-case letters, digits and ``_``), e.g. ``"noise25"``.
    detailed : str
        The detailed prompt text (the one most released checkpoints were trained with).
    simple : str
        The one-word prompt text of the original's simple-prompt checkpoint.
    official_id : int or None
        The task id of the original code.
    synthesize : callable or None
        ``f(clean, generator) -> degraded`` on (B, C, H, W) batches in [0, 1]; ``None`` for a
        degradation that exists only as real pairs.
    sigma : float or None
        Gaussian noise standard deviation on the 0-255 scale (noise types only).
    extent : int or None
        How many pixels around an output pixel the generator reads (0: pixel by pixel); ``None``:
        not declared, [`DEFAULT_EXTENT`][dfpir.degradations.registry.DEFAULT_EXTENT] is assumed (see [`context`][dfpir.degradations.registry.context]).
    """

    name: str
    detailed: str
    simple: str
    official_id: int | None = None
    synthesize: DegradeFn | None = None
    sigma: float | None = None
    extent: int | None = None


DEGRADATIONS: dict[str, Degradation] = {}

DEFAULT_EXTENT = 32
"""Context assumed for a generator that declares no ``extent``: wider than any built-in kernel, so
an undeclared spatial degradation still sees real pixels around a training patch."""

HAZE_EXTENT = 32
"""Haze reads its whole depth map, which has no finite reach; a patch's haze is drawn over the patch
plus this margin, so the patch sees part of a larger depth field rather than the whole of one."""


def register_degradation(
    name: str,
    detailed: str,
    simple: str | None = None,
    official_id: int | None = None,
    synthesize: DegradeFn | None = None,
    sigma: float | None = None,
    extent: int | None = None,
) -> Degradation:
    """Add a degradation type to the registry (``name`` must be new) and return its row.

    Declare ``extent=0`` for a generator that works pixel by pixel: its patches then need no
    context; an undeclared extent costs a [`DEFAULT_EXTENT`][dfpir.degradations.registry.DEFAULT_EXTENT] margin per patch.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise UserError(f"degradation name {name!r} must be lower-case letters, digits and '_'")
    if name in DEGRADATIONS:
        raise UserError(f"degradation {name!r} is already registered")
    if extent is not None and (not isinstance(extent, int) or extent < 0):
        raise UserError(f"degradation {name!r}: extent must be a whole number of pixels >= 0, got {extent!r}")
    row = Degradation(name, detailed, simple or detailed, official_id, synthesize, sigma, extent)
    DEGRADATIONS[name] = row
    return row


def get_degradation(name: str) -> Degradation:
    """The row of a registered degradation; unknown names raise a ``UserError`` listing the known ones."""
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise UserError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}") from None


def synthetic_names() -> list[str]:
    """The registered degradations that have a synthetic generator, in registry order."""
    return [name for name, row in DEGRADATIONS.items() if row.synthesize is not None]


def noise_names() -> list[str]:
    """The registered Gaussian-noise degradations (those with a sigma), in registry order."""
    return [name for name, row in DEGRADATIONS.items() if row.sigma is not None]


def context(name: str) -> int:
    """Pixels of context a patch of ``name`` is degraded with: its declared extent, else
    [`DEFAULT_EXTENT`][dfpir.degradations.registry.DEFAULT_EXTENT]."""
    extent = get_degradation(name).extent
    return DEFAULT_EXTENT if extent is None else extent


def synthesizer(name: str) -> DegradeFn:
    """The synthetic generator of ``name``; a ``UserError`` if it has none."""
    row = get_degradation(name)
    if row.synthesize is None:
        raise UserError(f"degradation {name!r} has no synthetic model; the synthetic ones are: {', '.join(synthetic_names())}")
    return row.synthesize


def _noise(sigma: float) -> DegradeFn:
    return partial(synthetic.gaussian_noise, sigma=sigma)


for _row in [
    ("noise15", "Gaussian noise with a standard deviation of 15", "Noise", 0, _noise(15.0), 15.0, 0),
    ("noise25", "Gaussian noise with a standard deviation of 25", "Noise", 1, _noise(25.0), 25.0, 0),
    ("noise50", "Gaussian noise with a standard deviation of 50", "Noise", 2, _noise(50.0), 50.0, 0),
    ("rain", "Rain degradation with rain lines", "Rain", 3, synthetic.rain_streaks, None, synthetic.rain_kernel_size() // 2),
    ("haze", "Hazy degradation with normal haze", "Haze", 4, synthetic.haze, None, HAZE_EXTENT),
    ("blur", "Blur degradation with motion blur", "Blur", 5, synthetic.motion_blur, None, synthetic.blur_kernel_size() // 2),
    ("lowlight", "Lowlight degradation", "Lowlight", 6, synthetic.low_light, None, 0),
]:
    register_degradation(*_row)


def degrade(clean: torch.Tensor, names: list[str] | tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """Apply ``names[b]`` to sample ``b`` of the batch.

    Samples sharing a degradation are processed together, in the order each name first appears,
    so the result depends only on ``clean``, ``names`` and the generator's state.

    Parameters
    ----------
    clean : Tensor
        (B, C, H, W) float images in [0, 1].
    names : sequence of str
        B registry names.
    generator : torch.Generator
        Source of all randomness.

    Returns
    -------
    Tensor
        (B, C, H, W) degraded images.
    """
    synthetic.check_batch(clean)
    if len(names) != clean.shape[0]:
        raise UserError(f"got {len(names)} degradation names for a batch of {clean.shape[0]}")
    out = torch.empty_like(clean)
    for name in dict.fromkeys(names):
        fn = synthesizer(name)
        idx = torch.tensor([i for i, n in enumerate(names) if n == name], device=clean.device)
        out[idx] = fn(clean[idx], generator)
    return out
