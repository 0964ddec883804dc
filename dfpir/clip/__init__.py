"""CLIP's ViT-B/32 text encoder and tokenizer, to compute the prompt embeddings the released weights need.

The original DFPIR steers every DGPB with the CLIP text features of a degradation prompt, and the
channel order is an argsort of a function of them: the released weights restore as published only
with the embeddings the original computed. This package computes them itself, without OpenAI's
``clip`` package (which needs ``torchvision``, whose newest release would replace the pinned
``torch``):

- [`tokenizer`][dfpir.clip.tokenizer]: CLIP's byte-level BPE ([`ClipTokenizer`][dfpir.clip.tokenizer.ClipTokenizer]), with OpenAI's merges shipped;
- [`text_encoder`][dfpir.clip.text_encoder]: the text transformer ([`ClipTextEncoder`][dfpir.clip.text_encoder.ClipTextEncoder]) with ``clip.load``'s float16 and float32 semantics;
- [`weights`][dfpir.clip.weights]: OpenAI's ``ViT-B-32.pt`` (downloaded only when asked, SHA-256 checked) or a local file;
- [`prompts`][dfpir.clip.prompts]: the registry's prompt texts -> a [`PromptBank`][dfpir.model.prompts.PromptBank], as the original computed them;
- [`cli`][dfpir.clip.cli]: ``python -m dfpir.clip prompts -o FILE``.

The tokenizer needs the optional extra: ``pip install 'dfpir[clip]'`` (``ftfy``, ``regex``).
"""

from .cli import main
from .prompts import PROMPT_SETS, clip_prompt_bank, encode_texts, prompt_texts
from .text_encoder import PRECISIONS, VIT_B_32, ClipTextConfig, ClipTextEncoder
from .tokenizer import ClipTokenizer, default_tokenizer, extra_available
from .weights import VIT_B_32_SHA256, VIT_B_32_URL, default_weights_path, download, load_text_encoder, read_state_dict

__all__ = [
    "PROMPT_SETS",
    "PRECISIONS",
    "VIT_B_32",
    "VIT_B_32_SHA256",
    "VIT_B_32_URL",
    "ClipTextConfig",
    "ClipTextEncoder",
    "ClipTokenizer",
    "clip_prompt_bank",
    "default_tokenizer",
    "default_weights_path",
    "download",
    "encode_texts",
    "extra_available",
    "load_text_encoder",
    "main",
    "prompt_texts",
    "read_state_dict",
]
