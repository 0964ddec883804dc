"""The DFPIR network: the part of the project that `reference/` mirrors operation by operation.

Read it top down: [`network`][dfpir.model.network] (the U-net) is built from
[`transformer`][dfpir.model.transformer] blocks and four [`dgpb`][dfpir.model.dgpb] blocks; a DGPB
is a [`perturbation`][dfpir.model.perturbation] (the prompt-ordered channel shuffle), a
[`masked_attention`][dfpir.model.masked_attention] (top-k masked cross attention) and a
[`feedforward`][dfpir.model.feedforward] GDFN. [`config`][dfpir.model.config] holds the presets,
[`prompts`][dfpir.model.prompts] the prompt bank, [`classifier`][dfpir.model.classifier] the small
degradation classifier of blind mode, and [`fused`][dfpir.model.fused] the strip kernels that
[`DFPIR.set_fused`][dfpir.model.network.DFPIR.set_fused] switches on for inference.

This package imports nothing from the data, training, inference or command-line parts of dfpir
(`tests/test_layout.py` checks it).
"""

from .classifier import DegradationClassifier
from .config import PRESETS, DFPIRConfig, get_config
from .network import DFPIR
from .prompts import HashingTextEncoder, PromptBank

__all__ = ["DFPIR", "DFPIRConfig", "PRESETS", "get_config", "PromptBank", "HashingTextEncoder", "DegradationClassifier"]
