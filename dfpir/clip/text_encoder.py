"""CLIP's text encoder (the text tower of ViT-B/32), with the original's precision semantics.

A causal transformer over the 77 token positions: token plus position embeddings, 12 residual
attention blocks of width 512 with 8 heads (pre-LayerNorm, QuickGELU MLP of width 2048), a final
LayerNorm, the features at the end-of-text token, and a linear projection to 512 values.

Precision can change a channel order, so it follows OpenAI's ``clip`` package exactly:

- ``"fp16"`` (``clip.load`` on a GPU, how the original DFPIR computed its prompts): the linear
  layers and the projection hold float16; the token and position embeddings and the LayerNorm
  parameters stay float32 (``clip`` converts only linear, attention and projection weights); the
  embeddings are cast to float16 before they are added, every LayerNorm computes in float32 and
  returns float16, everything else (attention, QuickGELU, residual sums) runs in float16.
- ``"fp32"`` (``clip.load`` on a CPU, which calls ``model.float()``): everything in float32.

On a CPU, ``"fp16"`` runs the same float16 operations with PyTorch's CPU kernels; a GPU's kernels
round the same operations in another order, so the two agree to float16 rounding, not bit for
bit (see ``docs/guide/convert.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

PRECISIONS = ("fp16", "fp32")
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class ClipTextConfig:
    """The text tower's sizes (ViT-B/32's by default).

    Parameters
    ----------
    vocab_size : int
        Token ids (49,408 for CLIP's BPE).
    context_length : int
        Token positions (77).
    width : int
        Transformer width (512).
    heads : int
        Attention heads (8; CLIP always uses width / 64).
    layers : int
        Residual attention blocks (12).
    embed_dim : int
        Width of the projected text features (512: DFPIR's prompt width).
    """

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    heads: int = 8
    layers: int = 12
    embed_dim: int = 512


VIT_B_32 = ClipTextConfig()


def check_precision(precision: str) -> torch.dtype:
    """The dtype of ``"fp16"`` or ``"fp32"``; anything else is a one-line ``UserError``."""
    if precision not in DTYPES:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return DTYPES[precision]


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype, returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (..., width), normalised in float32."""
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, ``x * sigmoid(1.702 x)`` (its weights were trained with it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise, in the input's dtype."""
        return x * torch.sigmoid(1.702 * x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``i`` sees positions ``<= i``.

    ``qkv`` packs the query, key and value projections as PyTorch's ``nn.MultiheadAttention``
    does (its ``in_proj_weight`` rows: queries, keys, values; each split into heads in order).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, width) and an additive (L, L) mask -> (N, L, width)."""
        n, length, width = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (N, heads, L, d)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, L, d); scale 1/sqrt(d)
        return self.out(y.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = Fp32LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.norm2 = Fp32LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, width) -> (N, L, width)."""
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(L, L) additive mask: 0 on and below the diagonal, -inf above (in ``dtype``, as CLIP's)."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu(1)


class ClipTextEncoder(nn.Module):
    """Token ids -> CLIP text features (not normalised: the original DFPIR uses them as they are).

    Parameters
    ----------
    config : ClipTextConfig
        The sizes (ViT-B/32's by default).
    random_init : bool
        Draw random weights (``False``: leave PyTorch's default initialisation, for weights about to
        be loaded).

    Notes
    -----
    A new encoder has random weights drawn at CLIP's initial scales (so that its activations have
    realistic magnitudes, float16 included); [`load_text_encoder`][dfpir.clip.weights.load_text_encoder] gives one with
    the pretrained weights.
    """

    def __init__(self, config: ClipTextConfig = VIT_B_32, random_init: bool = True) -> None:
        super().__init__()
        if config.width % config.heads:
            raise UserError(f"CLIP text width {config.width} is not a multiple of its {config.heads} heads")
        self.config = config
        self.token_embedding = nn.Parameter(torch.empty(config.vocab_size, config.width))  # (vocab, width)
        self.position_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(config.width, config.heads) for _ in range(config.layers))
        self.final_norm = Fp32LayerNorm(config.width)
        self.projection = nn.Parameter(torch.empty(config.width, config.embed_dim))
        if random_init:  # skipped for weights about to be loaded: drawing 63M normals takes a second
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random weights at CLIP's initial scales (normal; biases 0, LayerNorms the identity)."""
        width, layers = self.config.width, self.config.layers
        nn.init.normal_(self.token_embedding, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        residual_std = width**-0.5 * (2 * layers) ** -0.5  # the layers writing into the residual stream
        for block in self.blocks:
            nn.init.normal_(block.attention.qkv.weight, std=width**-0.5)
            nn.init.normal_(block.attention.out.weight, std=residual_std)
            nn.init.normal_(block.mlp[0].weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp[2].weight, std=residual_std)
            for linear in (block.attention.qkv, block.attention.out, block.mlp[0], block.mlp[2]):
                nn.init.zeros_(linear.bias)
        nn.init.normal_(self.projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the linear weights (float16 or float32)."""
        return self.projection.dtype

    @property
    def precision(self) -> str:
        """``"fp16"`` or ``"fp32"``."""
        return next(name for name, dtype in DTYPES.items() if dtype == self.dtype)

    def set_precision(self, precision: str) -> "ClipTextEncoder":
        """Cast as ``clip.load`` leaves the model: ``"fp16"`` makes the linear layers and the projection
        float16 and keeps the embeddings and LayerNorms float32; ``"fp32"`` makes everything float32.
        Returns ``self``."""
        dtype = check_precision(precision)
        self.float()
        if dtype == torch.float16:
            for block in self.blocks:
                block.attention.half()
                block.mlp.half()
            self.projection.data = self.projection.data.half()
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L) int64 token ids, each row ending with ``<|endoftext|>`` -> (N, embed_dim) in
        [`dtype`][dfpir.clip.text_encoder.ClipTextEncoder.dtype]."""
        n, length = tokens.shape
        if length > self.config.context_length:
            raise UserError(f"{length} token positions, CLIP's context holds {self.config.context_length}")
        dtype = self.dtype
        x = self.token_embedding[tokens].to(dtype) + self.position_embedding[:length].to(dtype)  # (N, L, width)
        mask = causal_mask(length, dtype, tokens.device)
        for block in self.blocks:
            x = block(x, mask)
        x = self.final_norm(x)
        # <|endoftext|> has the largest id, so each row's argmax is its position: pool there.
        pooled = x[torch.arange(n, device=tokens.device), tokens.argmax(dim=-1)]  # (N, width)
        return pooled @ self.projection  # (N, embed_dim)

    def num_parameters(self) -> int:
        """Number of parameters (63.4 million for ViT-B/32's text tower)."""
        return sum(p.numel() for p in self.parameters())

