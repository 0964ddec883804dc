"""The prompt embeddings of the degradation registry's texts, computed as the original DFPIR did.

The original scripts load CLIP with ``clip.load("ViT-B/32", device=<a GPU>)`` (float16 weights),
tokenize one prompt text at a time, and pass ``encode_text(tokens).to(torch.float32)`` to the
network: the projected end-of-text features, **not normalised**. [`encode_texts`][dfpir.clip.prompts.encode_texts] does the
same, one text per forward pass as the test scripts do, so a prompt's vector never depends on
which other prompts are computed with it.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch

from ..degradations import DEGRADATIONS, get_degradation
from ..errors import UserError
from ..model.prompts import PromptBank
from .text_encoder import ClipTextEncoder
from .tokenizer import ClipTokenizer, default_tokenizer

PROMPT_SETS = ("detailed", "simple")
"""The registry's two prompt texts per degradation: ``detailed`` ("Gaussian noise with a standard
deviation of 15", ...) for most released checkpoints, ``simple`` ("Noise", "Rain", "Haze") for the
original's 3-task simple-prompt checkpoint."""


def prompt_texts(prompt_set: str = "detailed", names: Iterable[str] | None = None) -> dict[str, str]:
    """Degradation name -> its prompt text of ``prompt_set``, for ``names`` (default: every registered one)."""
    if prompt_set not in PROMPT_SETS:
        raise UserError(f"prompt set must be one of {', '.join(PROMPT_SETS)}, got {prompt_set!r}")
    rows = [get_degradation(n) for n in names] if names is not None else list(DEGRADATIONS.values())
    return {row.name: getattr(row, prompt_set) for row in rows}


def encode_texts(encoder: ClipTextEncoder, texts: Mapping[str, str], tokenizer: ClipTokenizer | None = None) -> dict[str, np.ndarray]:
    """Name -> float32 CLIP text features of its text, each text alone (batch of one), in the
    encoder's precision and cast to float32 afterwards, as the original."""
    tokenizer = tokenizer or default_tokenizer()
    device = encoder.projection.device
    out = {}
    with torch.no_grad():
        for name, text in texts.items():
            features = encoder(tokenizer(text).to(device))  # (1, embed_dim) in the encoder's dtype
            out[name] = features.float()[0].cpu().numpy()
    return out


def clip_prompt_bank(encoder: ClipTextEncoder, prompt_set: str = "detailed", names: Iterable[str] | None = None,
                     tokenizer: ClipTokenizer | None = None) -> PromptBank:
    """A [`PromptBank`][dfpir.model.prompts.PromptBank] of the CLIP features of ``names``' ``prompt_set`` texts (texts recorded)."""
    texts = prompt_texts(prompt_set, names)
    return PromptBank(encode_texts(encoder, texts, tokenizer), texts)
