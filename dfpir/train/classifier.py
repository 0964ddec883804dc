"""The degradation classifier's part of training: its clean samples and its calibration.

With ``train.clean_class`` the classifier also learns the class [`CLEAN`][dfpir.model.classifier.CLEAN]
from undegraded patches: the clean targets of a seeded share of each batch
([`clean_mask`][dfpir.train.classifier.clean_mask]), about as many as one degradation gets. At each
validation ([`calibrate`][dfpir.train.classifier.calibrate]) its temperature is fitted on the
validation split and the expected calibration error is measured before and after; the checkpoint
stores the temperature (``classifier_temperature``), which [`predict`][dfpir.model.classifier.DegradationClassifier.predict]
then applies.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..data import item_rng
from ..degradations.synthetic import filter2d
from ..model.classifier import CLEAN, DegradationClassifier, expected_calibration_error, fit_temperature

CLEAN_STREAM = 0xC1EA
"""The key of the random stream that picks clean samples, apart from every data item's stream."""


def classifier_classes(degradations: Sequence[str], clean_class: bool) -> list[str]:
    """The classifier's classes: the run's degradations (their dataset labels), then ``clean``."""
    return [*degradations, CLEAN] if clean_class else list(degradations)


def clean_share(degradations: Sequence[str]) -> float:
    """The share of samples whose clean target is also shown as ``clean``: one degradation's share
    of the batch on average (``1 / degradations``), so clean is as frequent as one of them."""
    return 1 / len(degradations)


def clean_mask(seed: int, numbers: Sequence[int], share: float) -> torch.Tensor:
    """(len(numbers),) bool: the samples, by global number, whose clean target the classifier also sees.

    Each sample draws from its own stream, keyed by the run's seed and its global number (as
    [`batch_indices`][dfpir.train.sampling.batch_indices] numbers them): the picks depend on the sample
    alone, not on the processes, the accumulation or the global random state, so a resumed run
    picks exactly what an uninterrupted one would.
    """
    return torch.tensor([item_rng(seed, CLEAN_STREAM, n).random() < share for n in numbers], dtype=torch.bool)


def with_clean_labels(labels: torch.Tensor, clean: torch.Tensor | None, classes: Sequence[str]) -> torch.Tensor:
    """The degradation labels of a batch followed by the ``clean`` label of each clean image."""
    if clean is None:
        return labels
    return torch.cat([labels, torch.full((len(clean),), list(classes).index(CLEAN), dtype=labels.dtype)])


DEFOCUS_RADIUS = (2.0, 8.0)
"""Radii (pixels) of the disc that blurs the out-of-focus part in [`depth_of_field`][dfpir.train.classifier.depth_of_field]."""

SHARP_SHARE = (0.3, 0.7)
"""The share of the image that [`depth_of_field`][dfpir.train.classifier.depth_of_field] keeps in focus."""


def disc_kernel(radius: float, size: int) -> torch.Tensor:
    """(size, size) a uniform disc of ``radius`` pixels (edge pixels weighted by their coverage,
    approximately), summing to 1: the blur of a lens out of focus."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    dist = (r[:, None] ** 2 + r[None, :] ** 2).sqrt()
    k = (radius + 0.5 - dist).clamp(0, 1)
    return (k / k.sum()).float()


def depth_of_field(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A shallow depth of field on clean images: each gets a disc blur (radius drawn from
    [`DEFOCUS_RADIUS`][dfpir.train.classifier.DEFOCUS_RADIUS]) on one side of a random straight
    edge, softened over one radius, and stays sharp on the other side, a share drawn from
    [`SHARP_SHARE`][dfpir.train.classifier.SHARP_SHARE]. Such a photo is still ``clean``: the
    camera was focused on its subject, and nothing in it asks to be restored.

    Parameters
    ----------
    images : torch.Tensor
        (B, 3, H, W) clean images in [0, 1].
    generator : torch.Generator
        A CPU generator; every random number comes from it.

    Returns
    -------
    torch.Tensor
        (B, 3, H, W) the images with their background out of focus.
    """
    b, _, h, w = images.shape
    u = torch.rand(b, 3, generator=generator, dtype=torch.float64)  # radius, edge angle, sharp share
    radius = DEFOCUS_RADIUS[0] + u[:, 0] * (DEFOCUS_RADIUS[1] - DEFOCUS_RADIUS[0])
    size = 2 * math.ceil(DEFOCUS_RADIUS[1]) + 1
    kernels = torch.stack([disc_kernel(float(r), size) for r in radius])  # (B, size, size)
    blurred = filter2d(images, kernels.to(images.device, images.dtype))
    angle = u[:, 1] * 2 * math.pi
    ys = torch.arange(h, dtype=torch.float64)[:, None]
    xs = torch.arange(w, dtype=torch.float64)[None, :]
    masks = []
    for i in range(b):
        along = xs * torch.cos(angle[i]) + ys * torch.sin(angle[i])  # (H, W) position across the edge
        share = SHARP_SHARE[0] + float(u[i, 2]) * (SHARP_SHARE[1] - SHARP_SHARE[0])
        edge = torch.quantile(along.flatten(), share)
        masks.append(torch.sigmoid((edge - along) / radius[i]))  # 1: in focus
    sharp = torch.stack(masks)[:, None].to(images.device, images.dtype)  # (B, 1, H, W)
    return sharp * images + (1 - sharp) * blurred


@dataclass
class Calibration:
    """What one validation says about the classifier.

    Parameters
    ----------
    temperature : float
        The fitted temperature ([`fit_temperature`][dfpir.model.classifier.fit_temperature]).
    ece_before, ece_after : float
        Expected calibration error (10 bins) at temperature 1 and at the fitted one, on the crops it
        was fitted on (so ``ece_after`` is an optimistic estimate).
    accuracy : float
        Share of crops classified right (the temperature does not change it).
    clean_accuracy : float or None
        The same over the clean crops; ``None`` without a clean class.
    crops : int
        How many crops: every degraded validation crop, plus the clean ones.
    """

    temperature: float
    ece_before: float
    ece_after: float
    accuracy: float
    clean_accuracy: float | None
    crops: int

    def to_dict(self) -> dict[str, Any]:
        """The fields, for ``metrics.jsonl``."""
        return dataclasses.asdict(self)

    def line(self) -> str:
        """One line for the end of the validation table."""
        clean = "" if self.clean_accuracy is None else f" (clean {self.clean_accuracy:.1%})"
        return (f"classifier: accuracy {self.accuracy:.1%} on {self.crops} crops{clean}; temperature {self.temperature:.3g}; "
                f"ECE {self.ece_before:.3f} before, {self.ece_after:.3f} after calibration (fitted on these crops)")


@torch.no_grad()
def validation_logits(classifier: DegradationClassifier, samples, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, classes) logits and (N,) labels of the validation crops.

    Every degraded input, and with a clean class the clean target of every k-th sample (k: the
    number of degradations), so that clean is about as frequent as one degradation here too.
    """
    classes = classifier.classes
    every = max(1, len(classes) - 1) if CLEAN in classes else 0
    images, labels = [], []
    for i in range(len(samples)):
        s = samples[i]
        images.append(s["input"])
        labels.append(classes.index(s["degradation"]))
        if every and i % every == 0:
            images.append(s["target"])
            labels.append(classes.index(CLEAN))
    logits = [classifier(x[None].to(device))[0].float().cpu() for x in images]  # one at a time: crops may differ in size
    return torch.stack(logits) if logits else torch.zeros(0, len(classes)), torch.tensor(labels, dtype=torch.long)


def calibrate(classifier: DegradationClassifier, samples, device: torch.device) -> Calibration:
    """Fit the temperature on the validation crops and measure the calibration before and after
    (the classifier itself is not changed: the caller sets its ``temperature``)."""
    logits, labels = validation_logits(classifier, samples, device)
    temperature = fit_temperature(logits, labels)
    hit = logits.argmax(dim=-1) == labels

    def ece(t: float) -> float:
        return expected_calibration_error(F.softmax(logits / t, dim=-1).amax(dim=-1).numpy(), hit.numpy())

    clean = labels == classifier.classes.index(CLEAN) if CLEAN in classifier.classes else None
    return Calibration(
        temperature=temperature,
        ece_before=ece(1.0),
        ece_after=ece(temperature),
        accuracy=float(hit.double().mean()) if len(hit) else math.nan,
        clean_accuracy=float(hit[clean].double().mean()) if clean is not None and clean.any() else None,
        crops=len(labels),
    )
