"""reference: a NumPy + Numba twin of every DFPIR operation, the oracle of [`dfpir`][dfpir].

Channels-first arrays and PyTorch weight shapes throughout, so a PyTorch ``state_dict()``
converted to NumPy feeds [`dfpir_forward`][reference.network.dfpir_forward] directly. Compute-heavy operations come twice: a
vectorised NumPy function and a ``*_loop`` twin compiled with Numba, written as teaching text.
This package never imports ``torch`` or ``dfpir``.

>>> import numpy as np, reference
>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> bool((reference.pixel_shuffle(reference.pixel_unshuffle(x)) == x).all())
True
"""

from .activations import gelu
from .attention import (
    channel_logits,
    l2_normalize,
    mdta,
    merge_heads,
    softmax,
    split_heads,
    transposed_attention,
    transposed_attention_loop,
)
from .conv import conv2d, conv2d_loop
from .dgpb import dgpb
from .feedforward import gdfn, hidden_width
from .layernorm import layer_norm, layer_norm_loop
from .masked_attention import (
    kept_per_row,
    masked_attention,
    masked_attention_loop,
    masked_cross_attention,
    masked_softmax,
    topk_mask,
    topk_mask_loop,
)
from .network import dfpir_forward, pad_to_multiple
from .perturbation import (
    channel_order,
    channel_order_loop,
    channel_perturbation,
    dgm,
    inverse_order,
    perturb,
)
from .pixel_shuffle import pixel_shuffle, pixel_unshuffle
from .transformer import downsample, transformer_block, upsample

__all__ = [
    "layer_norm", "layer_norm_loop",
    "conv2d", "conv2d_loop",
    "pixel_shuffle", "pixel_unshuffle",
    "gelu",
    "split_heads", "merge_heads", "l2_normalize", "softmax", "channel_logits",
    "transposed_attention", "transposed_attention_loop", "mdta",
    "hidden_width", "gdfn",
    "dgm", "channel_order", "channel_order_loop", "channel_perturbation", "inverse_order", "perturb",
    "kept_per_row", "topk_mask", "topk_mask_loop", "masked_softmax",
    "masked_attention", "masked_attention_loop", "masked_cross_attention",
    "dgpb", "transformer_block", "downsample", "upsample",
    "pad_to_multiple", "dfpir_forward",
]
