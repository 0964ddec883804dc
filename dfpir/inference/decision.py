"""What ``auto`` does with the classifier's probabilities: restore as the likeliest class, or choose
the action with the highest expected gain.

The classifier's mistakes do not cost the same. A blurred photo restored with the haze prompt can
end 10 to 15 dB below its input, a hazy photo restored with the blur prompt ends where it started,
and any prompt moves a clean photo away from itself. Two rules, [`AUTO_RULES`][dfpir.inference.decision.AUTO_RULES]:

- ``likely``: restore with the classifier's most likely class (leave the image as it is when that
  is [`CLEAN`][dfpir.model.classifier.CLEAN]);
- ``gain``: for each action (restore with one of the prompts, or leave the image as it is) the
  expected gain under the classifier's calibrated probabilities ``p``,
  ``E[a] = sum over classes c of p(c) G[a, c]``, and the action with the largest. ``G`` is a
  [`GainMatrix`][dfpir.inference.decision.GainMatrix]: the mean gain of each prompt on images of
  each true class, measured on a validation split (``python -m dfpir.train.gain_matrix``) and
  stored in the weights. Leaving an image as it is gains 0 whatever it is.

Gains are in dB, as the held-out targets measure them: ``10 log10((e_in + q) / (e_out + q))``
with ``e`` the mean squared error against the clean image and ``q`` the mean squared error of
rounding to 8 bits ([`ROUNDING_MSE`][dfpir.inference.decision.ROUNDING_MSE]). For a degraded
image ``q`` changes nothing that shows; for a clean one (``e_in = 0``) it makes the loss finite:
an 8-bit photo is that close to its scene at best, so a change as small as its rounding costs
3 dB, and one that leaves it 40 dB from itself about 19 dB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..model.classifier import CLEAN

AUTO_RULES = ("likely", "gain")
"""``auto``'s decision rules (see the module docstring)."""

ROUNDING_MSE = 1 / (12 * 255**2)
"""The mean squared error of rounding a uniform [0, 1] signal to 8 bits (a step of 1/255): the
floor under every gain, 58.9 dB in PSNR."""

METADATA_KEY = "auto_gains"
"""The checkpoint metadata entry that holds a [`GainMatrix`][dfpir.inference.decision.GainMatrix] (JSON)."""


def gain_db(mse_in: float, mse_out: float) -> float:
    """The gain in dB of an output with mean squared error ``mse_out`` over an input with
    ``mse_in`` (both against the clean image), floored by [`ROUNDING_MSE`][dfpir.inference.decision.ROUNDING_MSE]."""
    return 10 * math.log10((mse_in + ROUNDING_MSE) / (mse_out + ROUNDING_MSE))


@dataclass(frozen=True)
class GainMatrix:
    """The mean gain (dB) of each prompt on images of each true class.

    Parameters
    ----------
    prompts : tuple of str
        The degradation prompts, the rows.
    classes : tuple of str
        The classifier's classes, the columns, in its label order (``clean`` among them).
    gains : np.ndarray
        (prompts, classes) mean gains in dB.
    counts : tuple of int
        Images measured per class.
    source : dict
        How the matrix was measured (recorded, not read).
    """

    prompts: tuple[str, ...]
    classes: tuple[str, ...]
    gains: np.ndarray
    counts: tuple[int, ...]
    source: Mapping[str, Any]

    def __post_init__(self) -> None:
        shape = (len(self.prompts), len(self.classes))
        if np.shape(self.gains) != shape or len(self.counts) != len(self.classes):
            raise ValueError(f"a gain matrix for {shape[0]} prompts and {shape[1]} classes needs {shape} gains "
                             f"and {shape[1]} counts, got {np.shape(self.gains)} and {len(self.counts)}")
        if not np.isfinite(self.gains).all():
            raise ValueError("the gain matrix holds a NaN or infinite gain")
        if CLEAN in self.prompts:
            raise ValueError(f"{CLEAN!r} is not a prompt: leaving an image as it is is always an action")

    def expected(self, probabilities: Sequence[float] | np.ndarray) -> dict[str, float]:
        """The expected gain (dB) of each action under ``probabilities`` (one per class, in
        ``classes`` order): [`CLEAN`][dfpir.model.classifier.CLEAN] (leave the image as it is: 0) first,
        then each prompt."""
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if p.size != len(self.classes):
            raise ValueError(f"{p.size} probabilities for {len(self.classes)} classes")
        by_prompt = self.gains @ p  # (prompts,)
        return {CLEAN: 0.0, **{name: float(g) for name, g in zip(self.prompts, by_prompt)}}

    def choose(self, probabilities: Sequence[float] | np.ndarray) -> tuple[str, float]:
        """The action with the highest expected gain and that gain; on a tie, the first of
        [`expected`][dfpir.inference.decision.GainMatrix.expected]'s order (leaving the image as it is first)."""
        expected = self.expected(probabilities)
        best = max(expected, key=lambda a: expected[a])  # max keeps the first of equals
        return best, expected[best]

    def to_json(self) -> str:
        """The metadata text ([`from_json`][dfpir.inference.decision.GainMatrix.from_json] reads it back)."""
        return json.dumps({"prompts": list(self.prompts), "classes": list(self.classes),
                           "gains": [[round(float(g), 4) for g in row] for row in self.gains],
                           "counts": list(self.counts), "source": dict(self.source)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GainMatrix:
        """A matrix from [`to_json`][dfpir.inference.decision.GainMatrix.to_json]'s text; ``ValueError``
        names what is wrong with any other."""
        try:
            d = json.loads(text)
            return cls(tuple(d["prompts"]), tuple(d["classes"]), np.asarray(d["gains"], dtype=np.float64),
                       tuple(int(n) for n in d["counts"]), d.get("source", {}))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a gain matrix ({type(exc).__name__}: {exc})") from None

    def markdown(self) -> list[str]:
        """The matrix as a table (rows: the prompts, then leaving the image as it is; columns: the truth)."""
        head = ["prompt \\ truth", *(f"{c} ({n})" for c, n in zip(self.classes, self.counts))]
        rows = [[p, *(f"{g:+.2f}" for g in row)] for p, row in zip(self.prompts, self.gains)]
        rows.append(["left as it is", *("+0.00" for _ in self.classes)])
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]
