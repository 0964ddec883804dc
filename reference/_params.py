"""Small helpers for reading a flat ``{name: array}`` parameter dictionary."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

Params = Mapping[str, np.ndarray]


def get(params: Params, prefix: str, name: str) -> np.ndarray:
    """The parameter ``prefix + name``; a ``KeyError`` names the missing key."""
    key = prefix + name
    if key not in params:
        raise KeyError(f"reference: parameter {key!r} is missing from params")
    return params[key]


def get_optional(params: Params, prefix: str, name: str) -> Optional[np.ndarray]:
    """The parameter ``prefix + name`` or ``None`` when absent (a conv built with ``bias=False``)."""
    return params.get(prefix + name)
