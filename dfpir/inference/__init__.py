"""Restoring whole photos with a trained model: tiling under a memory budget, prompts and blind
mode (:mod:`~dfpir.inference.runner`), and the fast execution variants (:mod:`~dfpir.inference.speed`)."""

from .runner import Prompt, Restorer
from .tiling import TilePlan, restore_image

__all__ = ["Restorer", "Prompt", "TilePlan", "restore_image"]
