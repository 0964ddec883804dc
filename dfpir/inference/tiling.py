"""Restore images of any size: whole when the activations fit a memory budget, else by tiles.

Memory model
------------
Peak activation memory of one forward pass (inference mode, batch 1) grows with the number of
pixels and with the level-1 width ``dim``. Measured on CPU with fp32 (peak RSS minus RSS before
the pass, each size in a fresh process: ``python -m dfpir.bench restore --fit --sizes 128 256 320``
for ``paper``, the same with ``--preset tiny``):

| preset | dim | input | bytes per pixel | per unit of dim |
|---|---|---|---|---|
| paper | 48 | 128 x 128 | 18,000 | 375 |
| paper | 48 | 256 x 256 | 12,170 | 254 |
| paper | 48 | 320 x 320 | 9,975 | 208 |
| tiny | 16 | 128 x 128 | 4,050 | 253 |
| tiny | 16 | 256 x 256 | 4,030 | 252 |

The bytes per pixel fall with size for ``paper`` (a few hundred MB of the peak does not scale
with the image: allocator arenas, weights' working copies), so one slope-only constant is
conservative for tiles of 256 pixels and more: ``BYTES_PER_PIXEL_PER_DIM`` = 256 (fp32).
Half precision scales it by the element size. With the default 1 GiB budget the ``paper``
preset gets 288-pixel tiles, and a 4096 x 4096 photo peaks at 1.8-2.1 GB RSS in total
(``python -m dfpir.bench restore``).

Tiled versus whole-image results
--------------------------------
A tile is not the same computation as the whole image. The convolutions see the same
neighbourhood away from tile borders, but the transposed (channel) attention of every
Transformer block computes a C x C attention map from *all* the pixels it is given, and the
DGPB's top-k mask is chosen from that map: a tile uses its own statistics instead of the
image's. So a tiled result differs from the whole-image one everywhere, not only at seams, by
an amount that depends on how different the tiles' content is from the whole. Overlapping tiles
blended with raised-cosine weights hide the seams (no step at tile borders) but not this global
difference. [`tiling_discrepancy`][dfpir.inference.tiling.tiling_discrepancy] measures it. Measured (``tests/test_restore.py``, which
asserts PSNR > 28 dB and max |diff| < 0.2): ``tiny`` preset with random weights, a 96 x 96
smooth image, 48-pixel tiles with 16-pixel overlap (9 tiles): tiled versus whole PSNR 32.1 dB,
max |diff| 0.136, mean |diff| 0.018, while the whole-image pass changes its input by 0.029 on
average. Trained weights have not been measured yet; run [`tiling_discrepancy`][dfpir.inference.tiling.tiling_discrepancy] on them
before trusting tiled numbers in a benchmark (``dfpir.evaluate`` tiles only images whose
activations exceed the budget, or with ``--tile``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..model.config import DFPIRConfig
from ..model.network import MULTIPLE
from ..errors import UserError

BYTES_PER_PIXEL_PER_DIM = 256  # fp32 activation peak, measured (see the module docstring)
DEFAULT_CPU_BUDGET = 1 << 30  # 1 GiB of activations: the 4096 x 4096 `paper` run peaks near 2 GB
MIN_TILE = 64


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of an H x W image start, and how wide they overlap.

    Parameters
    ----------
    tile : int
        Tile side in pixels (a multiple of 8, or the image side if smaller).
    overlap : int
        Minimum overlap between neighbouring tiles.
    ys, xs : tuple of int
        Top and left coordinates of the tiles along each axis.
    """

    tile: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def count(self) -> int:
        """Number of tiles."""
        return len(self.ys) * len(self.xs)


def activation_bytes(height: int, width: int, config: DFPIRConfig, dtype: torch.dtype = torch.float32) -> int:
    """Estimated peak activation memory of one forward pass on an H x W image (bytes).

    Parameters
    ----------
    height, width : int
        Image size (padded to the network's multiple of 8 internally).
    config : DFPIRConfig
        The model's architecture (only ``dim`` matters to the estimate).
    dtype : torch.dtype
        Compute precision; half precision halves the estimate.
    """
    ph, pw = height + (-height % MULTIPLE), width + (-width % MULTIPLE)
    element = torch.finfo(dtype).bits / 32
    return int(ph * pw * config.dim * BYTES_PER_PIXEL_PER_DIM * element)


def auto_tile(height: int, width: int, config: DFPIRConfig, budget: int, dtype: torch.dtype = torch.float32) -> int | None:
    """Tile side that keeps activations within ``budget`` bytes, or ``None`` if the whole fits.

    Parameters
    ----------
    height, width : int
        Image size.
    config : DFPIRConfig
        The model's architecture.
    budget : int
        Activation memory budget in bytes.
    dtype : torch.dtype
        Compute precision.
    """
    if activation_bytes(height, width, config, dtype) <= budget:
        return None
    per_pixel = activation_bytes(MULTIPLE, MULTIPLE, config, dtype) / MULTIPLE**2
    side = int(math.sqrt(budget / per_pixel)) // MULTIPLE * MULTIPLE
    return max(MIN_TILE, side)


def default_overlap(tile: int) -> int:
    """Overlap used when none is given: an eighth of the tile, at least 16, a multiple of 8."""
    return max(16, tile // 8 // MULTIPLE * MULTIPLE)


def tile_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Evenly spread starts of tiles of side ``tile`` covering ``length`` with >= ``overlap``.

    Parameters
    ----------
    length : int
        Image side.
    tile : int
        Tile side; one tile (start 0) when ``tile >= length``.
    overlap : int
        Minimum overlap of neighbouring tiles (< ``tile``).
    """
    if tile >= length:
        return (0,)
    if not 0 <= overlap < tile:
        raise UserError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    count = math.ceil((length - overlap) / (tile - overlap))
    return tuple(round(i * (length - tile) / (count - 1)) for i in range(count))


def plan_tiles(height: int, width: int, tile: int, overlap: int | None = None) -> TilePlan:
    """The [`TilePlan`][dfpir.inference.tiling.TilePlan] of an H x W image.

    Parameters
    ----------
    height, width : int
        Image size.
    tile : int
        Tile side (rounded down to a multiple of 8, at least 16).
    overlap : int, optional
        Minimum overlap; [`default_overlap`][dfpir.inference.tiling.default_overlap] when omitted.
    """
    tile = max(2 * MULTIPLE, tile // MULTIPLE * MULTIPLE)
    overlap = min(default_overlap(tile) if overlap is None else overlap, tile // 2)
    return TilePlan(tile, overlap, tile_starts(height, tile, overlap), tile_starts(width, tile, overlap))


def ramp(size: int, overlap: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blending weight: raised-cosine rise and fall over ``overlap`` pixels, 1 in between.

    Parameters
    ----------
    size : int
        Tile side.
    overlap : int
        Width of each ramp.
    rise, fall : bool
        Whether the tile has a neighbour before / after it (image borders get no ramp).
    """
    w = torch.ones(size)
    n = min(overlap, size // 2)
    if n == 0:
        return w
    edge = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n) + 0.5) / n)  # in (0, 1), never 0
    if rise:
        w[:n] = torch.minimum(w[:n], edge)
    if fall:
        w[size - n :] = torch.minimum(w[size - n :], edge.flip(0))
    return w


@torch.inference_mode()
def restore_whole(model: torch.nn.Module, image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """The model on the whole image: (1, 3, H, W) in, (1, 3, H, W) float32 on the CPU out.

    Parameters
    ----------
    model : DFPIR
        The restorer (its device and dtype are used).
    image : torch.Tensor
        (1, 3, H, W) float in [0, 1], any device.
    prompt : torch.Tensor
        (1, prompt_dim) embedding.
    """
    p = next(model.parameters())
    out = model(image.to(device=p.device, dtype=p.dtype), prompt.to(device=p.device, dtype=p.dtype))
    return out.float().cpu()


@torch.inference_mode()
def restore_tiled(
    model: torch.nn.Module,
    image: torch.Tensor,
    prompt: torch.Tensor,
    plan: TilePlan,
    progress: Callable[[int, int], None] | None = None,
    max_tiles: int | None = None,
) -> torch.Tensor:
    """The model tile by tile, blended with raised-cosine weights (see the module docstring).

    Parameters
    ----------
    model : DFPIR
        The restorer.
    image : torch.Tensor
        (1, 3, H, W) float in [0, 1]; kept on the CPU, tiles go to the model's device one at a time.
    prompt : torch.Tensor
        (1, prompt_dim) embedding.
    plan : TilePlan
        From [`plan_tiles`][dfpir.inference.tiling.plan_tiles].
    progress : callable, optional
        Called as ``progress(done, total)`` after each tile.
    max_tiles : int, optional
        Stop after this many tiles (benchmarks only: the rest of the output is left at 0).
    """
    _, _, h, w = image.shape
    total = torch.zeros(3, h, w)
    weight = torch.zeros(h, w)
    done = 0
    for iy, y in enumerate(plan.ys):
        for ix, x in enumerate(plan.xs):
            th, tw = min(plan.tile, h - y), min(plan.tile, w - x)
            out = restore_whole(model, image[..., y : y + th, x : x + tw], prompt)[0]
            wy = ramp(th, plan.overlap, iy > 0, iy < len(plan.ys) - 1)
            wx = ramp(tw, plan.overlap, ix > 0, ix < len(plan.xs) - 1)
            blend = wy[:, None] * wx[None, :]  # (th, tw)
            total[:, y : y + th, x : x + tw] += out * blend
            weight[y : y + th, x : x + tw] += blend
            done += 1
            if progress is not None:
                progress(done, plan.count)
            if max_tiles is not None and done >= max_tiles:
                return total.div_(weight.clamp_min(1e-8))[None]
    return total.div_(weight)[None]  # in place: no second full-size buffer


def restore_image(
    model: torch.nn.Module,
    image: torch.Tensor,
    prompt: torch.Tensor,
    tile: int | None = None,
    budget: int | None = None,
    overlap: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, TilePlan | None]:
    """Restore (1, 3, H, W), whole if it fits ``budget`` (or ``tile`` is 0), else by tiles.

    Parameters
    ----------
    model : DFPIR
        The restorer.
    image : torch.Tensor
        (1, 3, H, W) float in [0, 1].
    prompt : torch.Tensor
        (1, prompt_dim) embedding.
    tile : int, optional
        Tile side; ``0`` forces the whole image; ``None`` chooses from ``budget``.
    budget : int, optional
        Activation memory budget in bytes; [`default_budget`][dfpir.inference.tiling.default_budget] of the model's device if omitted.
    overlap : int, optional
        Tile overlap; [`default_overlap`][dfpir.inference.tiling.default_overlap] if omitted.
    progress : callable, optional
        ``progress(done, total)`` after each tile.

    Returns
    -------
    restored : torch.Tensor
        (1, 3, H, W) float32 on the CPU, not clipped.
    plan : TilePlan or None
        The tiles used, ``None`` for a whole-image pass.
    """
    h, w = image.shape[-2:]
    p = next(model.parameters())
    if tile is None:
        tile = auto_tile(h, w, model.config, budget or default_budget(p.device), p.dtype)
    if not tile or (tile >= h and tile >= w):
        return restore_whole(model, image, prompt), None
    plan = plan_tiles(h, w, tile, overlap)
    return restore_tiled(model, image, prompt, plan, progress), plan


def default_budget(device: torch.device | str) -> int:
    """Activation budget: 1 GiB on the CPU, half the free memory on a CUDA device."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return DEFAULT_CPU_BUDGET


def tiling_discrepancy(
    model: torch.nn.Module, image: torch.Tensor, prompt: torch.Tensor, tile: int, overlap: int | None = None
) -> dict[str, float]:
    """How far the tiled result is from the whole-image one, on clipped outputs.

    Parameters
    ----------
    model : DFPIR
        The restorer.
    image : torch.Tensor
        (1, 3, H, W) float in [0, 1].
    prompt : torch.Tensor
        (1, prompt_dim) embedding.
    tile : int
        Tile side.
    overlap : int, optional
        Tile overlap.

    Returns
    -------
    dict
        ``max_abs`` and ``mean_abs`` differences, ``psnr`` of tiled against whole (dB),
        ``whole_change`` (mean absolute change the whole-image pass makes to its input, for scale)
        and ``tiles``.
    """
    whole = restore_whole(model, image, prompt).clamp(0, 1)
    plan = plan_tiles(image.shape[-2], image.shape[-1], tile, overlap)
    tiled = restore_tiled(model, image, prompt, plan).clamp(0, 1)
    diff = (tiled - whole).abs()
    mse = float((diff.double() ** 2).mean())
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "psnr": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf"),
        "whole_change": float((whole - image.float().cpu()).abs().mean()),
        "tiles": float(plan.count),
    }
