"""The Degradation-Guided Perturbation Block (mirrors [`dfpir.model.dgpb.DGPB`][dfpir.model.dgpb.DGPB]).

``Q = perturb(F, e)``, ``A = CAAPM(LN_q(Q), LN_kv(F))``, ``out = A + GDFN(LN_ffn(A))``;
there is no residual from ``F``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .feedforward import gdfn
from .layernorm import _layer_norm_from
from .masked_attention import masked_cross_attention
from .perturbation import perturb


def dgpb(
    x: np.ndarray,
    prompt: np.ndarray,
    params: Mapping[str, np.ndarray],
    heads: int,
    keep_ratio: float = 0.9,
    prefix: str = "",
) -> np.ndarray:
    """One DGPB.

    Parameters
    ----------
    x : ndarray
        (B, C, H, W) features F.
    prompt : ndarray
        (B, prompt_dim) prompt embeddings.
    params : mapping
        ``prefix + {"perturb.*", "norm_q.*", "norm_kv.*", "attn.*", "norm_ffn.*", "ffn.*"}``.
    heads : int
        Attention heads.
    keep_ratio : float
        Top-k mask ratio.
    prefix : str
        Name prefix, e.g. ``"dgpb1."``.

    Returns
    -------
    ndarray
        (B, C, H, W).
    """
    q = perturb(x, prompt, params, prefix + "perturb.")  # (B, C, H, W)
    a = masked_cross_attention(
        _layer_norm_from(q, params, prefix + "norm_q."),
        _layer_norm_from(x, params, prefix + "norm_kv."),
        params, heads, keep_ratio, prefix + "attn.",
    )
    return a + gdfn(_layer_norm_from(a, params, prefix + "norm_ffn."), params, prefix + "ffn.")
