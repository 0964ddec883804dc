"""Degradations: the registry of degradation types and the synthetic models that make them.

[`registry`][dfpir.degradations.registry] holds one row per type (name, prompt texts, the
original's id, synthetic generator, its extent, noise sigma); [`synthetic`][dfpir.degradations.synthetic]
holds the generators.
"""

from .registry import (
    DEFAULT_EXTENT,
    DEGRADATIONS,
    Degradation,
    DegradeFn,
    context,
    degrade,
    get_degradation,
    noise_names,
    register_degradation,
    synthesizer,
    synthetic_names,
)
from .synthetic import *  # noqa: F403 - the generators are this package's vocabulary too
from .synthetic import __all__ as _synthetic_all

__all__ = [
    "DEFAULT_EXTENT",
    "DEGRADATIONS",
    "Degradation",
    "DegradeFn",
    "context",
    "degrade",
    "get_degradation",
    "noise_names",
    "register_degradation",
    "synthesizer",
    "synthetic_names",
    *_synthetic_all,
]
