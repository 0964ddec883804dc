"""A small degradation classifier, so that restoring can run blind (``--degradation auto``).

DFPIR itself is non-blind: it needs the true degradation's prompt. This network guesses the
degradation from the degraded image; it is trained beside the restorer on the same data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DegradationClassifier(nn.Module):
    """Strided conv features, then mean and standard-deviation pooling, then a linear head.

    Standard-deviation pooling keeps the texture statistics (noise level, streaks, blur) that a
    plain average would wash out. Any input size works.

    Parameters
    ----------
    classes : list of str
        Degradation names, in label order.
    width : int
        Channels of the first stage (doubled twice).
    """

    def __init__(self, classes: list[str], width: int = 24) -> None:
        super().__init__()
        self.classes = list(classes)
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Linear(8 * w, len(classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, classes) logits."""
        f = self.features(image * 2 - 1)  # (B, 4w, H/8, W/8)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3), unbiased=False)], dim=1)  # (B, 8w)
        return self.head(pooled)

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Names and confidences (softmax probabilities) of the most likely degradation per image."""
        prob = F.softmax(self(image), dim=-1)
        conf, idx = prob.max(dim=-1)
        return [self.classes[i] for i in idx.tolist()], conf
