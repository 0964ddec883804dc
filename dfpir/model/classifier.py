"""A small degradation classifier, so that restoring can run blind (``--degradation auto``).

DFPIR itself is non-blind: it needs the true degradation's prompt. This network guesses the
degradation from the degraded image; it is trained beside the restorer on the same data, and
(``train.clean_class``) also on the clean targets, as the class [`CLEAN`][dfpir.model.classifier.CLEAN]:
a photo with nothing to restore. Its confidences are calibrated by temperature scaling
([`fit_temperature`][dfpir.model.classifier.fit_temperature]) on the validation split, and their
calibration is measured by [`expected_calibration_error`][dfpir.model.classifier.expected_calibration_error].
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLEAN = "clean"
"""The class of an undegraded photo: ``auto`` leaves such a photo as it is."""

POOLINGS = ("meanstd", "meanstdtop")
"""How the feature maps are pooled: ``meanstd`` (mean and standard deviation per channel, what
``python -m dfpir.train`` trains) or ``meanstdtop`` (also the mean of each channel's strongest
[`TOP_SHARE`][dfpir.model.classifier.TOP_SHARE] of positions)."""

TOP_SHARE = 0.1
"""The share of positions the ``top`` statistic averages: a quantile rather than the maximum, so
that it means the same on a 256-pixel training crop and on a 512-pixel photo."""

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""The range [`fit_temperature`][dfpir.model.classifier.fit_temperature] searches: wide enough for
any classifier seen here, and it keeps a validation set that the classifier separates perfectly
(where the likelihood keeps growing as T shrinks) from driving T to 0."""


class DegradationClassifier(nn.Module):
    """Strided conv features, then mean and standard-deviation pooling, then a linear head.

    The network sees the image and its high-pass residual (image minus its 3 x 3 local mean,
    amplified): noise level, streaks and missing detail (blur) live there, and the residual makes
    them visible to the first layer instead of having to be learnt (on the built-in data this
    raised the validation accuracy after 600 steps from about 55% to 94%). Standard-deviation
    pooling keeps the texture statistics that a plain average would wash out. The ``meanstdtop``
    pooling adds the mean of each channel's strongest positions: whether *some* region is sharp
    (or dark), which tells a photo with a background out of focus (or a misty sky) from one
    blurred (or hazed) all over, where a mean over the whole image cannot. Any input size works.

    Parameters
    ----------
    classes : list of str
        Degradation names, in label order ([`CLEAN`][dfpir.model.classifier.CLEAN] among them when
        the classifier learnt undegraded photos).
    width : int
        Channels of the first stage (doubled twice).
    temperature : float
        The logits are divided by it before the softmax of [`predict`][dfpir.model.classifier.DegradationClassifier.predict]
        (temperature scaling; 1: as trained). Not a weight: checkpoints store it in their metadata.
    pooling : str
        One of [`POOLINGS`][dfpir.model.classifier.POOLINGS]; checkpoints store it in their metadata
        (``classifier_pooling``; ``meanstd`` when absent).
    """

    def __init__(self, classes: list[str], width: int = 24, temperature: float = 1.0, pooling: str = "meanstd") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.classes = list(classes)
        self.temperature = float(temperature)
        self.pooling = pooling
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(6, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Linear(len(pooling_stats(pooling)) * 4 * w, len(classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, classes) logits (not divided by the temperature)."""
        local_mean = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        residual = (image - local_mean) * 10  # (B, 3, H, W), amplified to the image's scale
        f = self.features(torch.cat([image * 2 - 1, residual], dim=1))  # (B, 4w, H/8, W/8)
        pooled = torch.cat([STATISTICS[name](f) for name in pooling_stats(self.pooling)], dim=1)  # (B, stats * 4w)
        return self.head(pooled)

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """(B, classes) calibrated probabilities: the softmax of the logits over the temperature."""
        return F.softmax(self(image) / self.temperature, dim=-1)

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Names and calibrated confidences ([`probabilities`][dfpir.model.classifier.DegradationClassifier.probabilities])
        of the most likely class per image."""
        conf, idx = self.probabilities(image).max(dim=-1)
        return [self.classes[i] for i in idx.tolist()], conf


def top_share_mean(f: torch.Tensor, share: float = TOP_SHARE) -> torch.Tensor:
    """(B, C, h, w) -> (B, C): the mean of each channel's largest ``share`` of the h * w values
    (at least one)."""
    flat = f.flatten(2)  # (B, C, h * w)
    k = max(1, math.ceil(share * flat.shape[-1]))
    return flat.topk(k, dim=-1).values.mean(dim=-1)


STATISTICS = {
    "mean": lambda f: f.mean(dim=(2, 3)),
    "std": lambda f: f.std(dim=(2, 3), unbiased=False),
    "top": top_share_mean,
}
"""Each pooled statistic: (B, C, h, w) feature maps -> (B, C)."""


def pooling_stats(pooling: str) -> tuple[str, ...]:
    """The statistics of a pooling, in the order the head reads them (``meanstdtop`` -> mean, std, top)."""
    return {"meanstd": ("mean", "std"), "meanstdtop": ("mean", "std", "top")}[pooling]


def with_pooling(classifier: DegradationClassifier, pooling: str) -> DegradationClassifier:
    """A copy of ``classifier`` that pools with ``pooling``: the features and the head's weights
    for the statistics both poolings use are copied, a new statistic's weights are zero. So where
    ``pooling`` keeps every statistic of the classifier's (``meanstd`` -> ``meanstdtop``), the
    copy predicts exactly as the classifier does until it is trained."""
    width = classifier.features[0].out_channels
    new = DegradationClassifier(classifier.classes, width=width, temperature=classifier.temperature, pooling=pooling)
    new.features.load_state_dict(classifier.features.state_dict())
    old_stats, new_stats = pooling_stats(classifier.pooling), pooling_stats(pooling)
    c = 4 * width  # channels of the last stage: the head reads one block of c per statistic
    with torch.no_grad():
        new.head.weight.zero_()
        new.head.bias.copy_(classifier.head.bias)
        for i, name in enumerate(new_stats):
            if name in old_stats:
                j = old_stats.index(name)
                new.head.weight[:, i * c:(i + 1) * c] = classifier.head.weight[:, j * c:(j + 1) * c]
    return new.to(classifier.head.weight.device).train(classifier.training)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
                    iterations: int = 60) -> float:
    """The temperature T that minimises the negative log-likelihood of ``labels`` under
    ``softmax(logits / T)`` (Guo et al. 2017, "On calibration of modern neural networks").

    With ``b = 1 / T`` the mean NLL is ``mean(logsumexp(b z) - b z_y)``, a convex function of ``b``
    whose slope ``mean(E_p[z] - z_y)`` (``p = softmax(b z)``) increases with ``b``; so bisecting
    for the zero of the slope, on ``log b``, finds the one minimum, or the bound it lies beyond.

    Parameters
    ----------
    logits : torch.Tensor
        (N, classes) raw logits.
    labels : torch.Tensor
        (N,) the true class indices.
    bounds : (float, float)
        The smallest and largest temperature returned.
    iterations : int
        Bisection steps (60 halve the bracket far below float precision).

    Returns
    -------
    float
        T in ``bounds``; 1 for an empty set (nothing to fit).
    """
    if len(labels) == 0:
        return 1.0
    z = logits.detach().double().cpu()
    z_true = z.gather(1, labels.long().cpu()[:, None])[:, 0]  # (N,)

    def slope(log_b: float) -> float:
        p = F.softmax(math.exp(log_b) * z, dim=-1)
        return float(((p * z).sum(dim=-1) - z_true).mean())

    lo, hi = -math.log(bounds[1]), -math.log(bounds[0])  # log b at the largest and the smallest T
    if slope(lo) >= 0:  # the NLL already grows at the largest T
        return bounds[1]
    if slope(hi) <= 0:  # still falling at the smallest T (a perfectly separated set)
        return bounds[0]
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return math.exp(-(lo + hi) / 2)


def expected_calibration_error(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                               bins: int = 10) -> float:
    """The expected calibration error: how far confidence is from accuracy, on average.

    The confidences are put in ``bins`` equal-width bins, bin ``b`` holding those in
    ``(b / bins, (b + 1) / bins]`` (the first bin also 0); then

    ``ECE = sum over bins of (n_b / n) * |accuracy_b - mean confidence_b|``

    (Naeini et al. 2015; Guo et al. 2017). 0 is perfect calibration; an empty input gives NaN.

    Parameters
    ----------
    confidence : sequence of float
        The confidence of each prediction, in [0, 1].
    correct : sequence of bool
        Whether each prediction was right.
    bins : int
        Number of bins.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(f"{conf.size} confidences but {hit.size} correctness flags")
    if conf.size == 0:
        return float("nan")
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (N,) bin index, right-closed
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.sum() / conf.size * abs(hit[inside].mean() - conf[inside].mean())
    return float(total)
