"""Restoring whole photos with a trained model: tiling under a memory budget
([`tiling`][dfpir.inference.tiling]), prompts and blind mode ([`runner`][dfpir.inference.runner]),
and the fast execution variants ([`speed`][dfpir.inference.speed])."""

from .runner import Prompt, Restorer
from .tiling import TilePlan, restore_image

__all__ = ["Restorer", "Prompt", "TilePlan", "restore_image"]
