"""Test pairs from your own clean photos: ``python -m dfpir.data degrade``.

Each clean image is degraded by each synthetic degradation of [`dfpir.degradations`][dfpir.degradations] (the
same models the built-in training data uses) and written as ``OUT/<degradation>/<stem>.png``,
so that ``python -m dfpir.evaluate --input OUT/rain --target CLEAN --degradation rain`` scores a
model on photos it has never seen. Every (photo, degradation) draws from its own generator,
seeded by ``--seed``, the photo's name and the degradation's name: rerunning gives the same
files, and adding photos or degradations does not change the others.

The degraded images are written as RGB PNGs at the clean image's bit depth (8 or 16), even for
grey photos: the noise and rain are drawn per channel, and averaging them back to grey would
change their strength. An alpha channel is kept. ``--with-clean`` also writes each photo as it is,
in the same form, to ``OUT/clean/<stem>.png``: the class ``clean`` of the blind mode's confusion matrix.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..degradations import degrade, synthetic_names
from ..errors import UserError
from ..files import check_output_folder
from ..images import Image, read_image, write_image
from ..model.classifier import CLEAN
from .patches import item_rng, torch_generator


def pair_generator(seed: int, photo: str, degradation: str) -> torch.Generator:
    """The generator of one (photo, degradation), keyed like the datasets' items
    ([`item_rng`][dfpir.data.patches.item_rng]): stable across runs, Python versions and machines."""
    return torch_generator(item_rng(seed, zlib.crc32(photo.encode()), zlib.crc32(degradation.encode())))


def degrade_image(image: Image, degradation: str, generator: torch.Generator) -> Image:
    """``image`` degraded by the registry function ``degradation`` (``clean``: not at all), as an RGB
    image of its bit depth."""
    if degradation == CLEAN:
        return Image(image.rgb, image.alpha, image.bit_depth, False, image.path)
    clean = torch.from_numpy(np.ascontiguousarray(image.rgb.transpose(2, 0, 1)))[None]  # (1, 3, H, W)
    out = degrade(clean, [degradation], generator).clamp(0, 1)
    rgb = out[0].permute(1, 2, 0).numpy()  # (H, W, 3)
    return Image(rgb, image.alpha, image.bit_depth, False, image.path)


def plan_outputs(sources: Sequence[Path], degradations: Sequence[str], outdir: Path, overwrite: bool) -> dict[tuple[Path, str], Path]:
    """The output of every (source, degradation); one-line errors for clashes and existing files."""
    stems: dict[str, Path] = {}
    for src in sources:
        if src.stem in stems:
            raise UserError(f"{src} and {stems[src.stem]} would both be written as {src.stem}.png; rename one of them")
        stems[src.stem] = src
    jobs = {(src, d): outdir / d / f"{src.stem}.png" for src in sources for d in degradations}
    existing = [out for out in jobs.values() if out.exists()]
    if existing and not overwrite:
        others = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]} already exists{others}; pass --overwrite or choose another -o")
    return jobs


def make_pairs(sources: Sequence[Path], degradations: Sequence[str], outdir: Path, seed: int = 0, overwrite: bool = False,
               with_clean: bool = False) -> int:
    """Write every degraded copy (and with ``with_clean`` every photo as it is, under ``clean/``);
    returns how many files were written.

    Every clean image is read once before anything is written, so an unreadable one stops the
    run with nothing half done.
    """
    degradations = list(dict.fromkeys(degradations))  # each once, in the order given
    unknown = [d for d in degradations if d not in synthetic_names()]
    if unknown:
        raise UserError(f"unknown degradation {unknown[0]!r}; the synthetic ones are: {', '.join(synthetic_names())}")
    if with_clean:
        degradations.append(CLEAN)
    if not sources:
        raise UserError("no clean images given; pass image files or folders of them")
    jobs = plan_outputs(sources, degradations, outdir, overwrite)
    for src in sources:
        read_image(src)  # raises a one-line error naming the file
    for d in degradations:
        check_output_folder(outdir / d)
    with tqdm(total=len(jobs), desc="degrading", unit="image", file=sys.stderr, disable=None) as bar:
        for src in sources:
            image = read_image(src)
            for d in degradations:
                write_image(jobs[(src, d)], degrade_image(image, d, pair_generator(seed, src.stem, d)))
                bar.update(1)
    return len(jobs)
