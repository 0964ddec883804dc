"""The DFPIR network: a Restormer U-net whose skips and latent pass through DGPBs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, UserTypeError
from .config import DFPIRConfig
from .dgpb import DGPB
from .prompts import PromptBank
from .transformer import Downsample, TransformerBlock, Upsample

MULTIPLE = 8  # three 2x downsamplings


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Pad bottom and right of (B, C, H, W) to a multiple of ``multiple``.

    Reflect padding, as the usual restoration practice; an image too small to reflect (pad >= size)
    is padded by replicating its edge instead.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def check_inputs(image: torch.Tensor, prompt: torch.Tensor | None, prompt_dim: int, needs_prompt: bool) -> None:
    """Raise a [`UserError`][dfpir.errors.UserError] with a one-line reason for inputs the network cannot take.

    Only shapes and types are checked here, which costs nothing; whether the pixels are finite is
    checked once where images enter (``restore``, the training data), not in every forward pass.
    """
    if not isinstance(image, torch.Tensor):
        raise UserTypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 4 or image.shape[1] != 3:
        raise UserError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise UserTypeError(f"image must be a float tensor in [0, 1], got {image.dtype} (divide 8-bit images by 255)")
    if image.shape[0] == 0:
        raise UserError("image batch is empty (shape (0, 3, H, W))")
    if not needs_prompt:
        return
    if prompt is None:
        raise UserError("this DFPIR model needs a prompt embedding of shape (B, %d)" % prompt_dim)
    if not isinstance(prompt, torch.Tensor) or not prompt.is_floating_point():
        raise UserTypeError("prompt must be a float torch.Tensor of shape (B, %d)" % prompt_dim)
    if prompt.ndim != 2 or prompt.shape[1] != prompt_dim or prompt.shape[0] != image.shape[0]:
        raise UserError(
            f"prompt must have shape ({image.shape[0]}, {prompt_dim}) for this batch, got {tuple(prompt.shape)}"
        )
    # This data-dependent branch would split a torch.compile graph in two, so compiled calls skip
    # it; every eager call (the one a user makes with a bad prompt) keeps it.
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(prompt).all()):
        raise UserError("prompt contains NaN or infinite values")


def _stage(channels: int, heads: int, count: int, cfg: DFPIRConfig) -> nn.Sequential:
    with_bias_norm = cfg.layernorm_type == "WithBias"
    return nn.Sequential(
        *(TransformerBlock(channels, heads, cfg.ffn_expansion_factor, cfg.bias, with_bias_norm) for _ in range(count))
    )


def _dgpb(channels: int, heads: int, cfg: DFPIRConfig) -> DGPB:
    return DGPB(
        channels,
        heads,
        cfg.ffn_expansion_factor,
        cfg.bias,
        cfg.layernorm_type == "WithBias",
        cfg.prompt_dim,
        cfg.guidance,
        cfg.keep_ratio,
    )


class DFPIR(nn.Module):
    """DFPIR: ``model(image, prompt)`` restores a (B, 3, H, W) image in [0, 1].

    Parameters
    ----------
    config : DFPIRConfig
        Architecture; see [`dfpir.model.config`][dfpir.model.config] for the presets.
    prompts : PromptBank, optional
        Degradation name -> embedding table carried with the model (and its checkpoints).
        Defaults to [`dfpir.model.prompts.PromptBank.default`][dfpir.model.prompts.PromptBank.default].

    Notes
    -----
    Any H x W is accepted: the image is padded to a multiple of 8 and the output cropped back.
    Each sample of a batch may carry its own prompt (its own degradation).
    """

    def __init__(self, config: DFPIRConfig | None = None, prompts: PromptBank | None = None) -> None:
        super().__init__()
        cfg = config or DFPIRConfig()
        self.config = cfg
        self.prompts = prompts if prompts is not None else PromptBank.default(cfg.prompt_dim)
        d, (h1, h2, h3, h4) = cfg.dim, cfg.heads
        b1, b2, b3, b4 = cfg.num_blocks

        self.embed = nn.Conv2d(3, d, kernel_size=3, padding=1, bias=cfg.bias)
        self.encoder1 = _stage(d, h1, b1, cfg)
        self.down1 = Downsample(d)
        self.encoder2 = _stage(2 * d, h2, b2, cfg)
        self.down2 = Downsample(2 * d)
        self.encoder3 = _stage(4 * d, h3, b3, cfg)
        self.down3 = Downsample(4 * d)
        self.latent = _stage(8 * d, h4, b4, cfg)
        if cfg.use_dgpb:
            self.dgpb1 = _dgpb(d, h1, cfg)
            self.dgpb2 = _dgpb(2 * d, h2, cfg)
            self.dgpb3 = _dgpb(4 * d, h3, cfg)
            self.dgpb4 = _dgpb(8 * d, h4, cfg)
        self.up3 = Upsample(8 * d)
        self.fuse3 = nn.Conv2d(8 * d, 4 * d, kernel_size=1, bias=cfg.bias)
        self.decoder3 = _stage(4 * d, h3, b3, cfg)
        self.up2 = Upsample(4 * d)
        self.fuse2 = nn.Conv2d(4 * d, 2 * d, kernel_size=1, bias=cfg.bias)
        self.decoder2 = _stage(2 * d, h2, b2, cfg)
        self.up1 = Upsample(2 * d)
        self.decoder1 = _stage(2 * d, h1, b1, cfg)  # no 1x1 fuse at level 1: 2d channels carry on
        self.refinement = _stage(2 * d, h1, cfg.num_refinement_blocks, cfg)
        self.output = nn.Conv2d(2 * d, 3, kernel_size=3, padding=1, bias=cfg.bias)

    def _skip(self, level: int, x: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        if not self.config.use_dgpb:
            return x
        return getattr(self, f"dgpb{level}")(x, prompt)

    def forward_padded(self, x: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        """The network on an image whose H and W are already multiples of 8 (no checks)."""
        f1 = self.encoder1(self.embed(x))  # (B, d, H, W)
        f2 = self.encoder2(self.down1(f1))  # (B, 2d, H/2, W/2)
        f3 = self.encoder3(self.down2(f2))  # (B, 4d, H/4, W/4)
        z = self.latent(self.down3(f3))  # (B, 8d, H/8, W/8)
        z = self._skip(4, z, prompt)  # the latent is replaced by its DGPB output
        d3 = self.decoder3(self.fuse3(torch.cat([self.up3(z), self._skip(3, f3, prompt)], dim=1)))
        d2 = self.decoder2(self.fuse2(torch.cat([self.up2(d3), self._skip(2, f2, prompt)], dim=1)))
        d1 = self.decoder1(torch.cat([self.up1(d2), self._skip(1, f1, prompt)], dim=1))  # (B, 2d, H, W)
        return self.output(self.refinement(d1)) + x

    def forward(self, image: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``image`` (B, 3, H, W) in [0, 1] given ``prompt`` (B, prompt_dim).

        The output is not clipped (the training loss sees the raw values); clip it for display.
        """
        check_inputs(image, prompt, self.config.prompt_dim, self.config.use_dgpb)
        weights = self.embed.weight
        if image.dtype != weights.dtype and not torch.is_autocast_enabled(image.device.type):
            raise UserTypeError(f"image is {image.dtype} but the model's weights are {weights.dtype}; "
                            f"convert one of them (image.to({weights.dtype}) or model.to({image.dtype}))")
        h, w = image.shape[-2:]
        out = self.forward_padded(pad_to_multiple(image), prompt)
        return out[..., :h, :w]

    def embed_prompts(self, names: str | list[str], batch: int | None = None) -> torch.Tensor:
        """Prompt embeddings (B, prompt_dim) for degradation names, on the model's device and dtype.

        A single name with ``batch`` given is repeated ``batch`` times.
        """
        if isinstance(names, str):
            names = [names] * (batch or 1)
        elif batch is not None and len(names) != batch:
            raise UserError(f"got {len(names)} degradation names for a batch of {batch}: give one name, or one per image")
        p = next(self.parameters())
        return self.prompts.embed(names).to(device=p.device, dtype=p.dtype)

    def restore(self, image: torch.Tensor, degradation: str | list[str], *, grad: bool = False) -> torch.Tensor:
        """Restore ``image`` (B, 3, H, W) with the prompts of ``degradation`` (one name, or one per image).

        ``self(image, self.embed_prompts(degradation, len(image)))``, without recording gradients
        unless ``grad=True``: inference needs none, and the graph autograd would keep holds every
        intermediate feature map of the image. The plain call ``model(image, prompt)`` keeps
        autograd's usual rules (training uses it).

        Parameters
        ----------
        image : torch.Tensor
            (B, 3, H, W) float in [0, 1], on the model's device and in its dtype.
        degradation : str or list of str
            A degradation name for the whole batch, or one per image.
        grad : bool
            Record gradients (to differentiate through the restoration).
        """
        with torch.set_grad_enabled(grad):
            return self(image, self.embed_prompts(degradation, image.shape[0]))

    def set_fused(self, on: bool | None = True) -> "DFPIR":
        """Switch every transformer block and DGPB to [`dfpir.model.fused`][dfpir.model.fused]'s strip kernels (True),
        to the plain modules (False), or back to the default (None): the kernels wherever they are
        faster, that is in eval mode on the CPU ([`fused.wanted`][dfpir.model.fused.wanted]).

        The kernels take effect only when no gradient is recorded (``torch.no_grad`` or
        ``inference_mode``); training always runs the plain modules.
        """
        for module in self.modules():
            if isinstance(module, (TransformerBlock, DGPB)):
                module.fused = on
        return self

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (the frozen DGM counts unless ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
