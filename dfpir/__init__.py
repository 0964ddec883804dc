"""dfpir: Degradation-Aware Feature Perturbation for All-in-One Image Restoration (CVPR 2025).

>>> import dfpir
>>> model = dfpir.DFPIR(dfpir.get_config("tiny"))
>>> restored = model.restore(image, "noise25")          # doctest: +SKIP
"""

from .checkpoint import CheckpointError, load, save
from .model.config import PRESETS, DFPIRConfig, get_config
from .model.network import DFPIR
from .official import from_official
from .degradations import DEGRADATIONS, get_degradation, register_degradation
from .model.prompts import PromptBank

__all__ = [
    "DFPIR",
    "DFPIRConfig",
    "PRESETS",
    "get_config",
    "load",
    "save",
    "CheckpointError",
    "from_official",
    "PromptBank",
    "DEGRADATIONS",
    "get_degradation",
    "register_degradation",
]
__version__ = "0.1.0"
