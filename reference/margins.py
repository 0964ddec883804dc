"""Optional bookkeeping of how close every discrete decision came to a tie.

The reference makes two discrete decisions: the channel order (a sort of the DGM scores) and the
top-k mask (the k-th versus (k+1)-th largest logit of each row). When two candidates are closer
than the rounding error of the arithmetic, float32 and float64 may decide differently, and no
tolerance can absorb the jump. Tests wrap a computation in [`decision_margins`][reference.margins.decision_margins] to read the
smallest gap it met and set aside near-ties honestly instead of loosening tolerances.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional

import numpy as np

_ACTIVE: Optional[List[np.ndarray]] = None


def _scaled(gaps: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (gaps / np.maximum(1.0, np.abs(values).max(axis=-1))).ravel()


def record_order_gaps(scores: np.ndarray) -> None:
    """Record the smallest gap between neighbouring sorted scores (nothing unless recording)."""
    if _ACTIVE is None or scores.shape[-1] < 2:
        return
    s = np.sort(scores.astype(np.float64), axis=-1)
    _ACTIVE.append(_scaled(np.diff(s, axis=-1).min(axis=-1), s))


def record_topk_gaps(logits: np.ndarray, k: int) -> None:
    """Record the smallest gap between the k-th and (k+1)-th largest entry of any row."""
    n = logits.shape[-1]
    if _ACTIVE is None or k >= n:
        return
    rows = logits.reshape(-1, n).astype(np.float64)
    s = -np.sort(-rows, axis=-1)
    _ACTIVE.append(_scaled(s[:, k - 1] - s[:, k], s))


@contextmanager
def decision_margins() -> Iterator[List[np.ndarray]]:
    """Collect the relative gap of every decision made inside the ``with`` block.

    Yields
    ------
    list of ndarray
        Filled while the block runs: one array per sort or top-k call, holding each row's
        smallest ``gap / max(1, max |row|)`` (0 for an exact tie, which the tie rule settles).
        The smallest *positive* entry is how close the computation came to deciding differently.

    Examples
    --------
    >>> import numpy as np, reference
    >>> from reference.margins import decision_margins
    >>> with decision_margins() as m:
    ...     _ = reference.channel_order(np.array([[3.0, 1.0, 2.5]]))
    >>> float(min(m[0]))
    0.1666...
    """
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, []
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = previous
