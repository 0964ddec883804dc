"""The model configuration: one dataclass and its named presets.

Parameter counts and FLOPs (conv and matmul multiply-adds counted as 2 FLOPs, 256 x 256 input,
measured by ``python -m dfpir.summary``):

| preset | parameters | trainable | GFLOPs @256 | use |
|---|---|---|---|---|
| paper | 31,104,761 | 29,315,417 | 331.1 | the published model (CVPR 2025) |
| restormer | 26,126,644 | 26,126,644 | 309.8 | the same backbone without DGPBs (baseline) |
| small | 4,802,788 | 3,382,804 | 38.1 | CPU training of a larger model |
| tiny | 2,464,992 | 1,168,128 | 12.5 | tests, tutorials, the shipped demo weights |

"Trainable" leaves out the frozen DGM linears (faithful guidance).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any
from ..errors import UserError

LAYERNORM_TYPES = ("WithBias", "BiasFree")
GUIDANCE_MODES = ("faithful", "learnable")


@dataclass(frozen=True)
class DFPIRConfig:
    """Hyper-parameters of a DFPIR network.

    Parameters
    ----------
    dim : int
        Width of level 1; levels 2-4 have 2x, 4x and 8x this many channels.
    num_blocks : tuple of int
        Transformer blocks in encoder levels 1-3 and the latent (the decoder mirrors 3-1).
    num_refinement_blocks : int
        Transformer blocks after decoder level 1.
    heads : tuple of int
        Attention heads at levels 1-4 (decoder level 1 and refinement use ``heads[0]``).
    ffn_expansion_factor : float
        GDFN hidden width is ``int(C * ffn_expansion_factor)``.
    bias : bool
        Bias in the backbone convolutions (the paper uses none).
    layernorm_type : {"WithBias", "BiasFree"}
        Restormer's two LayerNorm variants.
    use_dgpb : bool
        ``False`` gives the plain Restormer backbone (the ``restormer`` preset).
    guidance : {"faithful", "learnable"}
        ``"faithful"`` freezes the DGM as the original does (only the integer order of its output
        is used, so it never learns). ``"learnable"`` lets gradients reach the DGM through a
        straight-through gate, see [`dfpir.model.perturbation.ChannelPerturbation`][dfpir.model.perturbation.ChannelPerturbation].
    keep_ratio : float
        Fraction of each attention row kept by the top-k mask: ``k = max(1, floor(c * ratio))``.
    prompt_dim : int
        Width of the degradation prompt embedding (512 for CLIP ViT-B/32 text features).
    """

    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm_type: str = "WithBias"
    use_dgpb: bool = True
    guidance: str = "faithful"
    keep_ratio: float = 0.9
    prompt_dim: int = 512
    preset: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_blocks", tuple(int(n) for n in self.num_blocks))
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line reason if the configuration cannot be built."""
        if self.dim < 2 or self.dim % 2:
            raise UserError(f"dim must be a positive even number (downsampling halves it), got {self.dim}")
        if len(self.num_blocks) != 4 or len(self.heads) != 4:
            raise UserError("num_blocks and heads need 4 entries each (levels 1-4)")
        if min(self.num_blocks) < 0 or self.num_refinement_blocks < 0:
            raise UserError("block counts must be >= 0")
        if self.layernorm_type not in LAYERNORM_TYPES:
            raise UserError(f"layernorm_type must be one of {LAYERNORM_TYPES}, got {self.layernorm_type!r}")
        if self.guidance not in GUIDANCE_MODES:
            raise UserError(f"guidance must be one of {GUIDANCE_MODES}, got {self.guidance!r}")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise UserError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        for level, heads in enumerate(self.heads, start=1):
            width = self.width(level)
            if heads < 1 or width % heads:
                raise UserError(f"level {level}: {width} channels cannot be split into {heads} heads")
        if self.dim * 2 % self.heads[0]:
            raise UserError(f"decoder level 1: {2 * self.dim} channels cannot be split into {self.heads[0]} heads")
        if int(self.dim * self.ffn_expansion_factor) < 1:
            raise UserError("ffn_expansion_factor gives a GDFN hidden width of 0")

    def width(self, level: int) -> int:
        """Channels at encoder level 1-4."""
        return self.dim * 2 ** (level - 1)

    def replace(self, **changes: Any) -> "DFPIRConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["num_blocks"] = list(self.num_blocks)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DFPIRConfig":
        """Inverse of [`to_dict`][dfpir.model.config.DFPIRConfig.to_dict]; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown DFPIRConfig field(s): {', '.join(unknown)}")
        return cls(**d)


PRESETS: dict[str, DFPIRConfig] = {
    "paper": DFPIRConfig(preset="paper"),
    "restormer": DFPIRConfig(use_dgpb=False, preset="restormer"),
    "small": DFPIRConfig(dim=24, num_blocks=(2, 2, 2, 2), num_refinement_blocks=1, preset="small"),
    "tiny": DFPIRConfig(dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, preset="tiny"),
}


def get_config(name: str, **overrides: Any) -> DFPIRConfig:
    """Return the named preset, optionally with fields overridden.

    Raises
    ------
    ValueError
        If ``name`` is not a preset.
    """
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    return cfg.replace(**overrides) if overrides else cfg
