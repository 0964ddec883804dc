"""The degradation registry: one row per degradation type, the one place its facts are written.

A row holds the registry name, the two prompt texts the original encodes with CLIP, the original
code's task id, the synthetic generator that makes training pairs from a clean photo, and, for
Gaussian noise, its sigma. Everything else (the prompt bank, the datasets, the training config,
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
    """

    name: str
    detailed: str
    simple: str
    official_id: int | None = None
    synthesize: DegradeFn | None = None
    sigma: float | None = None


DEGRADATIONS: dict[str, Degradation] = {}


def register_degradation(
    name: str,
    detailed: str,
    simple: str | None = None,
    official_id: int | None = None,
    synthesize: DegradeFn | None = None,
    sigma: float | None = None,
) -> Degradation:
    """Add a degradation type to the registry (``name`` must be new) and return its row."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise UserError(f"degradation name {name!r} must be lower-case letters, digits and '_'")
    if name in DEGRADATIONS:
        raise UserError(f"degradation {name!r} is already registered")
    row = Degradation(name, detailed, simple or detailed, official_id, synthesize, sigma)
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


def synthesizer(name: str) -> DegradeFn:
    """The synthetic generator of ``name``; a ``UserError`` if it has none."""
    row = get_degradation(name)
    if row.synthesize is None:
        raise UserError(f"degradation {name!r} has no synthetic model; the synthetic ones are: {', '.join(synthetic_names())}")
    return row.synthesize


def _noise(sigma: float) -> DegradeFn:
    return partial(synthetic.gaussian_noise, sigma=sigma)


for _row in [
    ("noise15", "Gaussian noise with a standard deviation of 15", "Noise", 0, _noise(15.0), 15.0),
    ("noise25", "Gaussian noise with a standard deviation of 25", "Noise", 1, _noise(25.0), 25.0),
    ("noise50", "Gaussian noise with a standard deviation of 50", "Noise", 2, _noise(50.0), 50.0),
    ("rain", "Rain degradation with rain lines", "Rain", 3, synthetic.rain_streaks, None),
    ("haze", "Hazy degradation with normal haze", "Haze", 4, synthetic.haze, None),
    ("blur", "Blur degradation with motion blur", "Blur", 5, synthetic.motion_blur, None),
    ("lowlight", "Lowlight degradation", "Lowlight", 6, synthetic.low_light, None),
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
