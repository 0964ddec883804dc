"""The Degradation-Guided Perturbation Block (DGPB)."""

from __future__ import annotations

import torch
from torch import nn

from . import fused
from .feedforward import GDFN
from .layernorm import LayerNorm
from .masked_attention import MaskedCrossAttention
from .perturbation import ChannelPerturbation


class DGPB(nn.Module):
    """Channel perturbation, masked cross attention and a GDFN.

    ``Q = reduce(shuffle(expand(F), order(DGM(e))))``,
    ``A = CAAPM(LN_q(Q), LN_kv(F))``, ``out = A + GDFN(LN_ffn(A))``.
    There is no residual from ``F`` (as in the original).

    Parameters
    ----------
    channels, heads : int
        Width and attention heads.
    expansion : float
        GDFN expansion factor.
    bias : bool
        Bias in the attention and GDFN convolutions.
    with_bias_norm : bool
        LayerNorm variant.
    prompt_dim : int
        Prompt width.
    guidance : str
        ``"faithful"`` or ``"learnable"``, see [`ChannelPerturbation`][dfpir.model.perturbation.ChannelPerturbation].
    keep_ratio : float
        Top-k mask ratio.
    """

    #: Run [`dfpir.model.fused`][dfpir.model.fused]'s strip kernels when no gradient is needed: True, False, or
    #: None to decide per call ([`fused.wanted`][dfpir.model.fused.wanted]; see [`DFPIR.set_fused`][dfpir.model.network.DFPIR.set_fused]).
    fused: bool | None = None

    def __init__(
        self,
        channels: int,
        heads: int,
        expansion: float,
        bias: bool,
        with_bias_norm: bool,
        prompt_dim: int = 512,
        guidance: str = "faithful",
        keep_ratio: float = 0.9,
    ) -> None:
        super().__init__()
        self.perturb = ChannelPerturbation(channels, prompt_dim, guidance)
        self.norm_q = LayerNorm(channels, with_bias_norm)
        self.norm_kv = LayerNorm(channels, with_bias_norm)
        self.attn = MaskedCrossAttention(channels, heads, bias, keep_ratio)
        self.norm_ffn = LayerNorm(channels, with_bias_norm)
        self.ffn = GDFN(channels, expansion, bias)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Features (B, C, H, W) and prompt embeddings (B, prompt_dim) -> (B, C, H, W)."""
        if fused.wanted(self.fused, self, x):
            q = fused.perturbation(self.perturb, x, prompt)
            a = fused.masked_cross_attention(self.attn, q, self.norm_q, x, self.norm_kv)
            return fused.gdfn_(self.norm_ffn, self.ffn, a)  # a is ours to overwrite
        q = self.perturb(x, prompt)  # (B, C, H, W)
        a = self.attn(self.norm_q(q), self.norm_kv(x))
        return a + self.ffn(self.norm_ffn(a))
