"""Datasets: the paper's layouts, generic paired folders, clean photos plus synthetic degradations.

Every dataset yields dicts ``{"input": (3, P, P) float32, "target": (3, P, P) float32,
"degradation": name, "label": index into the dataset's ``degradations`` list, "name": file or
photo name}``, with values in [0, 1].

Three splits, the same meaning in every layout:

* ``"train"``: random crops with a random dihedral augmentation (the same for input and target),
  drawn afresh each epoch (call ``set_epoch``);
* ``"val"``: fixed crops, no augmentation, identical every epoch;
* ``"test"``: whole images, no augmentation.

Randomness is worker-safe: item ``i`` of epoch ``e`` draws from a NumPy generator seeded by
``(seed, e, i)``, so the data do not depend on the number of DataLoader workers nor on which
worker serves an item. ``set_epoch`` must be called before the loader's iterator is created
(``persistent_workers=False``, the default, re-creates the workers each epoch).

The built-in default needs no download: the colour photographs that scikit-image installs in its
package folder (:data:`BUILTIN_PHOTOS`), split spatially: the left 70% of every photo is for
training, the right 30% for validation (:data:`VAL_FRACTION`).

Command line::

    python -m dfpir.data check ROOT --layout rain100l --split train
    python -m dfpir.data bench
    python -m dfpir.data degrade CLEAN -o OUT    # test pairs from your own photos (dfpir.pairs)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..degradations import DEGRADATIONS, get_degradation, noise_names, synthesizer, synthetic_names
from ..degradations.synthetic import gaussian_noise
from ..errors import CommandParser, UserError, check_at_least, cli_main

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

BUILTIN_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)
"""The colour photographs of ``skimage/data`` used as the built-in data set. Left out: the
grey-level images, drawings and charts (``color.png``, ``logo.png``, ``horse.png``,
``chessboard_RGB.png``, ``phantom.png``) and ``motorcycle_right.png`` (the stereo twin of the left
view: it would leak validation content into training)."""

VAL_FRACTION = 0.3
"""Right-most fraction of each built-in photo's width held out for validation (at least 135
columns on the narrowest photo, so a 128 x 128 validation crop fits everywhere)."""

REPEATS_3TASK: dict[str, int] = {"denoise": 1, "derain": 120, "dehaze": 1}
"""The original's per-epoch repeats for 3-task training (denoising already holds every clean image
three times, once per sigma)."""

REPEATS_5TASK: dict[str, int] = {"denoise": 1, "derain": 80, "dehaze": 1, "deblur": 30, "lowlight": 60}
"""The original's per-epoch repeats for 5-task training."""

Image = Union[np.ndarray, str, Path, tuple[str, np.ndarray]]


class DataWarning(UserWarning):
    """A data problem that was worked around (converted image, unpaired file, ...)."""


# --------------------------------------------------------------------------- reading images


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) float32 array in [0, 1] for training or evaluation.

    Decoding is :func:`dfpir.images.read_image` (EXIF orientation applied, 16-bit kept at full
    depth, grey and palette expanded to RGB). An alpha channel is dropped with a
    :class:`DataWarning` when it is not fully opaque: restoration targets are opaque photos.

    Raises
    ------
    UserError
        ``"FILE: reason"`` for a missing, truncated, corrupt or unsupported file.
    """
    from ..images import read_image as read_full

    image = read_full(path)
    if image.alpha is not None and image.alpha.min() < 1:
        warnings.warn(f"{path}: alpha channel dropped (transparent pixels keep their colour)", DataWarning, stacklevel=2)
    return np.ascontiguousarray(image.rgb, dtype=np.float32)


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Sorted image files (by suffix, hidden files skipped) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


# --------------------------------------------------------------------------- crops and augmentation


def item_rng(seed: int, *key: int) -> np.random.Generator:
    """NumPy generator for one item, from its seed and key (e.g. epoch, index): worker-safe."""
    return np.random.default_rng([int(seed), *(int(k) for k in key)])


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch generator seeded from ``rng`` (for the degradation functions)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def crop_box(height: int, width: int, patch: int, rng: np.random.Generator) -> tuple[int, int]:
    """Uniformly random top-left corner of a ``patch`` square inside ``height`` x ``width``."""
    return int(rng.integers(0, max(height - patch, 0) + 1)), int(rng.integers(0, max(width - patch, 0) + 1))


def crop(image: np.ndarray, top: int, left: int, patch: int) -> np.ndarray:
    """A ``patch`` x ``patch`` crop; an image smaller than the patch is mirror-padded first."""
    h, w = image.shape[:2]
    if h < patch or w < patch:
        image = np.pad(image, ((0, max(patch - h, 0)), (0, max(patch - w, 0)), (0, 0)), mode="symmetric")
    return image[top : top + patch, left : left + patch]


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the square: ``k % 4`` quarter turns, transposed if ``k >= 4``.

    The original draws only the 7 non-identity ones; we use all 8 (no reason to never show the
    photo as it is).
    """
    out = np.rot90(image, k % 4, axes=(0, 1))
    if k >= 4:
        out = out.transpose(1, 0, 2)
    return np.ascontiguousarray(out)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) array -> (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def _check_names(names: Sequence[str], what: str = "degradation") -> list[str]:
    names = list(names)
    if not names:
        raise UserError(f"need at least one {what}")
    for n in names:
        if n not in DEGRADATIONS:
            raise UserError(f"unknown degradation {n!r}; known: {', '.join(DEGRADATIONS)}")
    return names


# --------------------------------------------------------------------------- built-in photos


def _skimage_data_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise UserError("the built-in photos need scikit-image (pip install scikit-image)")
    return Path(spec.origin).parent / "data"


@lru_cache(maxsize=None)
def _builtin_photo(filename: str) -> np.ndarray:
    path = _skimage_data_dir() / filename
    if not path.is_file():
        raise UserError(f"{path}: built-in photo missing from the scikit-image installation (reinstall scikit-image)")
    img = read_image(path)
    img.setflags(write=False)  # cached and shared: nobody may edit it in place
    return img


def builtin_photos(split: str = "train") -> list[tuple[str, np.ndarray]]:
    """The built-in photos as ``(name, (H, W, 3) float32 in [0, 1])``, read from scikit-image's folder.

    Parameters
    ----------
    split : {"train", "val", "all"}
        ``"train"``: the left ``1 - VAL_FRACTION`` of every photo's width; ``"val"``: the right
        ``VAL_FRACTION``; ``"all"``: whole photos. The two parts never share a pixel.
    """
    if split not in ("train", "val", "all"):
        raise UserError(f"builtin_photos split must be 'train', 'val' or 'all', got {split!r}")
    out = []
    for filename in BUILTIN_PHOTOS:
        img = _builtin_photo(filename)
        cut = img.shape[1] - math.ceil(VAL_FRACTION * img.shape[1])
        part = {"train": img[:, :cut], "val": img[:, cut:], "all": img}[split]
        out.append((Path(filename).stem, part))
    return out


# --------------------------------------------------------------------------- datasets


class _Base(Dataset):
    """Shared epoch handling, labels and the ``get(index, key)`` protocol of all datasets here.

    ``get(index, key)`` returns item ``index`` with randomness seeded by ``(seed, epoch, *key)``:
    a mixture that repeats a dataset passes a distinct key per repeat so repeats get new crops.
    """

    def __init__(self, degradations: Sequence[str], seed: int, fixed: bool) -> None:
        self.degradations = _check_names(degradations)
        self.seed = int(seed)
        self.epoch = 0
        self.fixed = fixed  # validation/test: the same data every epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (no effect on fixed validation/test sets)."""
        self.epoch = int(epoch)

    def rng(self, key: tuple[int, ...]) -> np.random.Generator:
        return item_rng(self.seed, 0 if self.fixed else self.epoch, *key)

    def label(self, name: str) -> int:
        return self.degradations.index(name)

    def get(self, index: int, key: tuple[int, ...]) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        return self.get(index, (index,))


def _apply(name: str, clean: np.ndarray, rng: np.random.Generator, original_noise: bool) -> torch.Tensor:
    """Degrade one (H, W, 3) image with the registry function ``name``; (3, H, W) result."""
    x = to_tensor(clean)[None]
    g = torch_generator(rng)
    sigma = get_degradation(name).sigma
    if original_noise and sigma is not None:
        y = gaussian_noise(x, g, sigma=sigma, quantize=True)
    else:
        y = synthesizer(name)(x, g)
    return y[0].float()


class SyntheticDataset(_Base):
    """Clean images degraded on the fly by the synthetic models of :mod:`dfpir.degradations`.

    Parameters
    ----------
    images : sequence
        Clean images: ``(name, (H, W, 3) float array)`` pairs, arrays, or file paths (read lazily,
        so a large folder does not fill memory).
    degradations : list of str
        Registry names to apply; ``label`` indexes this list.
    patch_size : int or None
        Crop size; ``None`` keeps whole images (test sets).
    length : int or None
        Items per epoch. ``None``: every (image, degradation) combination once, image-major per
        degradation (as the original's denoising set). Otherwise items draw a random image, and
        degradations are assigned in proportion to ``ratios`` over the index range.
    seed : int
        Base seed.
    ratios : sequence of float, optional
        Relative frequency of each degradation when ``length`` is given (default equal).
    augment : bool
        Random dihedral augmentation (training).
    fixed : bool
        Same data every epoch (validation/test sets).
    original_noise : bool
        Noise as the original: 0-255 scale, truncated to uint8 (see
        :func:`dfpir.degradations.gaussian_noise`).
    """

    def __init__(
        self,
        images: Sequence[Image],
        degradations: Sequence[str],
        patch_size: int | None,
        length: int | None = None,
        seed: int = 0,
        ratios: Sequence[float] | None = None,
        augment: bool = True,
        fixed: bool = False,
        original_noise: bool = False,
    ) -> None:
        super().__init__(degradations, seed, fixed)
        self.images = [_image_entry(i, img) for i, img in enumerate(images)]
        if not self.images:
            raise UserError("no clean images to degrade")
        if patch_size is not None and patch_size < 1:
            raise UserError(f"patch_size must be positive, got {patch_size}")
        self.patch_size = patch_size
        self.length = len(self.images) * len(self.degradations) if length is None else int(length)
        self.random_images = length is not None
        weights = np.ones(len(self.degradations)) if ratios is None else np.asarray(ratios, dtype=float)
        if weights.shape != (len(self.degradations),) or (weights < 0).any() or weights.sum() <= 0:
            raise UserError(f"ratios must be {len(self.degradations)} non-negative numbers, not all 0; got {ratios}")
        self.cumulative = np.cumsum(weights / weights.sum())
        self.augment = augment
        self.original_noise = original_noise

    def __len__(self) -> int:
        return self.length

    def _choose(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        """(image index, degradation index) of item ``index``."""
        if not self.random_images:
            return index % len(self.images), index // len(self.images)
        # Stratified over the index range: exact proportions per epoch whatever the length.
        deg = int(np.searchsorted(self.cumulative, (index + 0.5) / self.length, side="right"))
        return int(rng.integers(len(self.images))), min(deg, len(self.degradations) - 1)

    def get(self, index: int, key: tuple[int, ...]) -> dict[str, Any]:
        """Item ``index`` drawn with the generator of ``key`` (seed, epoch, index): a degraded patch and its clean target."""
        rng = self.rng(key)
        img_idx, deg_idx = self._choose(index, rng)
        name, clean = _load(self.images[img_idx])
        if self.patch_size is not None:
            clean = crop(clean, *crop_box(*clean.shape[:2], self.patch_size, rng), self.patch_size)
        if self.augment:
            clean = dihedral(clean, int(rng.integers(8)))
        deg = self.degradations[deg_idx]
        return dict(input=_apply(deg, clean, rng, self.original_noise), target=to_tensor(clean), degradation=deg, label=deg_idx, name=name)


def _image_entry(i: int, img: Image) -> tuple[str, np.ndarray | Path]:
    """Normalise one ``images`` element to ``(name, array or path)``, checking arrays now."""
    if isinstance(img, (str, Path)):
        return Path(img).stem, Path(img)
    name, arr = img if isinstance(img, tuple) else (f"image{i}", img)
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype.kind != "f":
        raise UserError(f"image {name!r} must be an (H, W, 3) float array in [0, 1], got {arr.shape} {arr.dtype}")
    if not np.isfinite(arr).all():  # the training data's input boundary: the network does not look
        raise UserError(f"image {name!r} contains NaN or infinite values")
    return name, arr


def _load(entry: tuple[str, np.ndarray | Path]) -> tuple[str, np.ndarray]:
    name, img = entry
    return name, (read_image(img) if isinstance(img, Path) else img)


def validation_set(
    images: Sequence[Image], degradations: Sequence[str], patch_size: int, per_image: int = 1, seed: int = 0
) -> list[dict[str, Any]]:
    """Fixed degraded crops for validation: ``per_image`` crops of every image for every degradation.

    Deterministic in ``seed`` (and independent of any training stream); no augmentation.

    Returns
    -------
    list of dict
        ``len(images) * len(degradations) * per_image`` items in the dataset dict format, ordered
        image-major, then degradation, then crop.
    """
    ds = SyntheticDataset(images, degradations, patch_size, seed=seed, augment=False, fixed=True)
    items = []
    for i in range(len(ds.images)):
        name, clean = _load(ds.images[i])
        for d, deg in enumerate(ds.degradations):
            for k in range(per_image):
                rng = item_rng(seed, 0x5EED, i, d, k)  # a stream no training item uses
                patch = crop(clean, *crop_box(*clean.shape[:2], patch_size, rng), patch_size)
                items.append(dict(input=_apply(deg, patch, rng, False), target=to_tensor(patch), degradation=deg, label=d, name=f"{name}/{deg}/{k}"))
    return items


class ListDataset(Dataset):
    """A fixed list of items (e.g. :func:`validation_set`) as a Dataset."""

    def __init__(self, items: list[dict[str, Any]], degradations: Sequence[str]) -> None:
        self.items = items
        self.degradations = list(degradations)

    def set_epoch(self, epoch: int) -> None:
        """Fixed data: nothing to do."""

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class PairedDataset(_Base):
    """Degraded/clean image pairs read from files.

    Parameters
    ----------
    pairs : list of (Path, Path)
        (input, target) files.
    degradation : str
        Registry name of the pairs' degradation.
    patch_size : int or None
        Crop size; ``None`` keeps whole images (test sets).
    seed : int
        Base seed.
    degradations : list of str, optional
        Label space (default ``[degradation]``).
    augment : bool
        Random dihedral augmentation (training).
    fixed : bool
        Same crops every epoch (validation).
    size_mismatch : {"error", "crop"}
        What to do when input and target differ in size: raise a ``UserError`` naming both files,
        or crop both to their common top-left region.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        degradation: str,
        patch_size: int | None,
        seed: int = 0,
        degradations: Sequence[str] | None = None,
        augment: bool = True,
        fixed: bool = False,
        size_mismatch: str = "error",
    ) -> None:
        super().__init__(degradations or [degradation], seed, fixed)
        if degradation not in self.degradations:
            raise UserError(f"degradation {degradation!r} is not in the label list {self.degradations}")
        if size_mismatch not in ("error", "crop"):
            raise UserError(f"size_mismatch must be 'error' or 'crop', got {size_mismatch!r}")
        if not pairs:
            raise UserError(f"no {degradation} image pairs")
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.degradation = degradation
        self.patch_size = patch_size
        self.augment = augment
        self.size_mismatch = size_mismatch

    def __len__(self) -> int:
        return len(self.pairs)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair's two images, made the same size (or a ``UserError``)."""
        a_path, b_path = self.pairs[index]
        a, b = read_image(a_path), read_image(b_path)
        if a.shape != b.shape:
            if self.size_mismatch == "error":
                raise UserError(
                    f"{a_path}: size {a.shape[1]}x{a.shape[0]} differs from its target {b_path} "
                    f"({b.shape[1]}x{b.shape[0]}); fix the files or use size_mismatch='crop'"
                )
            h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
            a, b = a[:h, :w], b[:h, :w]
        return a, b

    def get(self, index: int, key: tuple[int, ...]) -> dict[str, Any]:
        """Item ``index`` drawn with the generator of ``key``: the same crop and flip of input and target."""
        rng = self.rng(key)
        a, b = self.read_pair(index)
        if self.patch_size is not None:
            top, left = crop_box(*a.shape[:2], self.patch_size, rng)
            a, b = crop(a, top, left, self.patch_size), crop(b, top, left, self.patch_size)
        if self.augment:
            k = int(rng.integers(8))
            a, b = dihedral(a, k), dihedral(b, k)
        d = self.degradation
        return dict(input=to_tensor(a), target=to_tensor(b), degradation=d, label=self.label(d), name=self.pairs[index][0].stem)


class MixedDataset(Dataset):
    """Several task datasets concatenated, each repeated a number of times per epoch.

    Repeats of one dataset draw new crops (each repeat has its own random key). Labels are
    re-indexed into ``degradations``.

    Parameters
    ----------
    parts : list of (Dataset, int)
        Datasets (with ``get`` and ``set_epoch``, as in this module) and their repeats per epoch.
    degradations : list of str
        Label space covering every part's degradations.
    """

    def __init__(self, parts: Sequence[tuple[_Base, int]], degradations: Sequence[str]) -> None:
        self.parts = [(ds, int(r)) for ds, r in parts if int(r) > 0]
        if not self.parts:
            raise UserError("a mixture needs at least one dataset with a positive repeat count")
        self.degradations = _check_names(degradations)
        for ds, _ in self.parts:
            missing = set(ds.degradations) - set(self.degradations)
            if missing:
                raise UserError(f"label list {self.degradations} lacks {sorted(missing)}")
        self.offsets = np.cumsum([0] + [len(ds) * r for ds, r in self.parts])

    def set_epoch(self, epoch: int) -> None:
        """Propagate the epoch to every part."""
        for ds, _ in self.parts:
            ds.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        p = int(np.searchsorted(self.offsets, index, side="right")) - 1
        ds, _ = self.parts[p]
        j = index - int(self.offsets[p])
        item = ds.get(j % len(ds), (p, j))
        item["label"] = self.degradations.index(item["degradation"])
        return item


# --------------------------------------------------------------------------- finding files


@dataclass(frozen=True)
class NameRule:
    """How an input file's stem maps to its target's stem: ``re.sub(pattern, replacement, stem)``.

    Matching tries the rule first, then the identical stem, so one rule serves folders with either
    naming. Parse ``"PATTERN=>REPLACEMENT"`` with :meth:`parse` (e.g. ``"^rain-=>norain-"``).
    """

    pattern: str = ""
    replacement: str = ""

    @classmethod
    def parse(cls, text: str | "NameRule" | None) -> "NameRule":
        """``"PATTERN=>REPLACEMENT"`` (or an existing rule, or ``None`` for identity)."""
        if text is None or isinstance(text, NameRule):
            return text or cls()
        if "=>" not in text:
            raise UserError(f"name rule must look like 'PATTERN=>REPLACEMENT', got {text!r}")
        pattern, replacement = text.split("=>", 1)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserError(f"name rule pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return cls(pattern, replacement)

    def __call__(self, stem: str) -> str:
        return re.sub(self.pattern, self.replacement, stem) if self.pattern else stem


@dataclass
class TaskFiles:
    """The files found for one task of a layout (or why none could be found)."""

    task: str
    degradations: list[str]
    folder: Path
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    clean: list[Path] = field(default_factory=list)
    unpaired_inputs: list[Path] = field(default_factory=list)
    unpaired_targets: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def count(self) -> int:
        """Number of clean images, or of input/target pairs, found for the task."""
        return len(self.clean) if self.clean else len(self.pairs)


def match_pairs(input_dir: Path, target_dir: Path, rule: NameRule, recursive: bool = False) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Pair input and target images by stem: ``(pairs, unpaired inputs, unused targets)``.

    Raises ``UserError`` if a folder is missing or two targets share a stem (ambiguous).
    """
    inputs = list_images(input_dir, recursive)
    targets: dict[str, Path] = {}
    for t in list_images(target_dir, recursive):
        if t.stem in targets:
            raise UserError(f"{t}: two targets share the name {t.stem!r} ({targets[t.stem].name}); the pairing is ambiguous")
        targets[t.stem] = t
    pairs, unpaired, used = [], [], set()
    for p in inputs:
        key = rule(p.stem)
        key = key if key in targets else p.stem
        if key in targets:
            pairs.append((p, targets[key]))
            used.add(key)
        else:
            unpaired.append(p)
    return pairs, unpaired, [t for s, t in targets.items() if s not in used]


def _subfolder(root: Path, split: str, aliases: dict[str, tuple[str, ...]]) -> Path:
    """``root/<split folder>`` if the dataset's split folder exists inside ``root``, else ``root``."""
    for name in aliases.get(split, ()):
        if (root / name).is_dir():
            return root / name
    return root


_SPLIT_DIRS = {"train": ("train", "Train", "training"), "val": ("train", "Train", "training"), "test": ("test", "Test", "testing")}


@dataclass(frozen=True)
class PairedLayout:
    """Where a paired data set keeps its files: candidate (input, target) folders and a name rule."""

    task: str
    degradation: str
    folders: tuple[tuple[str, str], ...]
    rule: str | None = None
    recursive: bool = False
    split_dirs: tuple[tuple[str, tuple[str, ...]], ...] = ()


PAIRED_LAYOUTS: dict[str, PairedLayout] = {
    "rain100l": PairedLayout("derain", "rain", (("rainy", "gt"), ("input", "target")), r"^rain-=>norain-"),
    "reside_ots": PairedLayout("dehaze", "haze", (("synthetic", "original"), ("hazy", "clear"), ("input", "target")), r"_.*$=>", recursive=True),
    "sots_outdoor": PairedLayout("dehaze", "haze", (("input", "target"), ("hazy", "gt"), ("hazy", "clear")), r"_.*$=>"),
    "gopro": PairedLayout("deblur", "blur", (("blur", "sharp"), ("input", "target"))),
    "lol": PairedLayout("lowlight", "lowlight", (("low", "high"), ("input", "target")), split_dirs=(("train", ("our485",)), ("val", ("our485",)), ("test", ("eval15",))))
}

LAYOUTS: dict[str, str] = {
    "builtin": "scikit-image's colour photos + synthetic degradations (no ROOT needed)",
    "clean": "ROOT: a folder of clean images + synthetic degradations",
    "paired": "ROOT/input, ROOT/target matched by name (--degradation, --name-rule)",
    "bsd400_wed": "ROOT: BSD400 + WED clean images (any sub-folders), noise 15/25/50 on the fly",
    "cbsd68": "ROOT: CBSD68 clean images, noise 15/25/50 synthesised with a fixed seed",
    "rain100l": "ROOT/rainy/rain-N.png + ROOT/gt/norain-N.png (train) or ROOT/input + ROOT/target (test)",
    "reside_ots": "ROOT/synthetic/**/XXXX_A_beta.jpg + ROOT/original/XXXX.jpg",
    "sots_outdoor": "ROOT/input/XXXX_*.jpg + ROOT/target/XXXX.png",
    "gopro": "ROOT/blur/NAME + ROOT/sharp/NAME, or ROOT/SEQUENCE/blur + ROOT/SEQUENCE/sharp",
    "lol": "ROOT/low/NAME + ROOT/high/NAME (or ROOT/our485, ROOT/eval15)",
    "3task": "ROOT/denoise, ROOT/derain, ROOT/dehaze, each in its task's layout; the original's repeats",
    "5task": "3task + ROOT/deblur (gopro), ROOT/lowlight (lol)",
}
"""Layout name -> where its files live under ROOT."""

# Which layout each task folder of a multi-task ROOT uses, per split.
_TASK_LAYOUTS = {
    "train": {"denoise": "bsd400_wed", "derain": "rain100l", "dehaze": "reside_ots", "deblur": "gopro", "lowlight": "lol"},
    "test": {"denoise": "cbsd68", "derain": "rain100l", "dehaze": "sots_outdoor", "deblur": "gopro", "lowlight": "lol"},
}
_TASK_LAYOUTS["val"] = _TASK_LAYOUTS["train"]


def _scan_paired(layout: PairedLayout, root: Path, split: str, rule: str | None) -> TaskFiles:
    folder = _subfolder(_subfolder(root, split, _SPLIT_DIRS), split, dict(layout.split_dirs))
    files = TaskFiles(layout.task, [layout.degradation], folder)
    name_rule = NameRule.parse(rule if rule is not None else layout.rule)
    try:
        for a, b in layout.folders:
            if (folder / a).is_dir() or (folder / b).is_dir():
                files.pairs, files.unpaired_inputs, files.unpaired_targets = match_pairs(folder / a, folder / b, name_rule, layout.recursive)
                break
        else:
            sequences = [d for d in sorted(folder.iterdir()) if (d / layout.folders[0][0]).is_dir()] if folder.is_dir() else []
            if not sequences:  # e.g. GoPro's ROOT/SEQUENCE/blur, else nothing we know
                wanted = " or ".join(f"{a}/ + {b}/" for a, b in layout.folders)
                raise UserError(f"{folder}: expected sub-folders {wanted}" if folder.is_dir() else f"{folder}: folder not found")
            for seq in sequences:
                p, ui, ut = match_pairs(seq / layout.folders[0][0], seq / layout.folders[0][1], name_rule, layout.recursive)
                files.pairs += p
                files.unpaired_inputs += ui
                files.unpaired_targets += ut
        if not files.pairs:
            raise UserError(f"{folder}: no input/target image pairs found")
    except UserError as exc:
        files.error = str(exc)
    return files


def _scan_clean(task: str, degradations: list[str], root: Path) -> TaskFiles:
    files = TaskFiles(task, degradations, root)
    try:
        files.clean = list_images(root, recursive=True)
        if not files.clean:
            raise UserError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    except UserError as exc:
        files.error = str(exc)
    return files


def scan(layout: str, root: str | Path | None, split: str = "train", *, degradations: Sequence[str] | None = None, degradation: str | None = None,
         name_rule: str | None = None, input_dir: str = "input", target_dir: str = "target") -> list[TaskFiles]:
    """Find a layout's files under ``root`` without reading them: one :class:`TaskFiles` per task.

    Problems (missing folders, no pairs) are recorded in ``TaskFiles.error`` rather than raised,
    so :func:`check` can report every task; :func:`build_dataset` raises the first one.
    """
    _check_split(split)
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if layout == "builtin":
        return [TaskFiles("builtin", _check_names(degradations or list(DEGRADATIONS)), _skimage_data_dir())]
    if root is None:
        raise UserError(f"layout {layout!r} needs a ROOT folder")
    root = Path(root)
    if layout in ("3task", "5task"):
        tasks = ["denoise", "derain", "dehaze"] + (["deblur", "lowlight"] if layout == "5task" else [])
        out = []
        for task in tasks:
            sub = _TASK_LAYOUTS[split][task]
            denoise = ["noise25"] if (layout == "5task" and split == "test") else None
            out += scan(sub, root / task, split, degradations=denoise)
        return out
    if layout == "paired":
        if degradation is None:
            raise UserError(f"the paired layout needs the degradation of its pairs; one of: {', '.join(DEGRADATIONS)}")
        _check_names([degradation])
        spec = PairedLayout(degradation, degradation, ((input_dir, target_dir),), name_rule)
        return [_scan_paired(spec, root, split, None)]
    if layout in PAIRED_LAYOUTS:
        return [_scan_paired(PAIRED_LAYOUTS[layout], root, split, name_rule)]
    if layout in ("bsd400_wed", "cbsd68"):
        return [_scan_clean("denoise", _check_names(degradations or noise_names()), root)]
    return [_scan_clean("clean", _check_names(degradations or list(DEGRADATIONS)), root)]  # "clean"


def _check_split(split: str) -> None:
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be 'train', 'val' or 'test', got {split!r}")


def _warn_unpaired(files: TaskFiles) -> None:
    for what, paths in (("input files have no target", files.unpaired_inputs), ("target files have no input", files.unpaired_targets)):
        if paths:
            examples = ", ".join(p.name for p in paths[:3])
            warnings.warn(f"{files.folder}: {len(paths)} {what} (e.g. {examples}); they are skipped", DataWarning, stacklevel=3)


def _holdout(items: list, split: str, every: int) -> list:
    """Every ``every``-th item (sorted order) is validation; the rest is training."""
    if every <= 0:
        return items
    return [x for i, x in enumerate(items) if (i % every == 0) == (split == "val")]


# --------------------------------------------------------------------------- building datasets


def build_dataset(
    layout: str,
    root: str | Path | None = None,
    split: str = "train",
    patch_size: int | None = 128,
    *,
    degradations: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    length: int | None = None,
    ratios: Sequence[float] | None = None,
    repeats: dict[str, int] | None = None,
    degradation: str | None = None,
    name_rule: str | None = None,
    input_dir: str = "input",
    target_dir: str = "target",
    holdout: int = 0,
    per_image: int = 1,
    size_mismatch: str = "error",
) -> Dataset:
    """A dataset of the dict format for a named layout (see :data:`LAYOUTS`).

    Parameters
    ----------
    layout : str
        One of :data:`LAYOUTS`.
    root : path, optional
        The data set's folder (not needed for ``"builtin"``).
    split : {"train", "val", "test"}
        See the module docstring. ``"test"`` ignores ``patch_size`` (whole images).
    patch_size : int or None
        Crop size for train and val.
    degradations : list of str, optional
        Synthetic layouts: the degradations to apply (default: all registered for ``builtin`` and
        ``clean``, noise 15/25/50 for ``bsd400_wed``/``cbsd68``).
    labels : list of str, optional
        Label space (``label`` indexes it); default: the layout's degradations in registry order.
    seed : int
        Base seed of every random stream.
    length : int, optional
        ``builtin``/``clean`` training items per epoch (default 64 per photo per degradation for
        ``builtin``, one per image per degradation for ``clean``).
    ratios : list of float, optional
        ``builtin``/``clean``: relative frequency of each degradation (with ``length``).
    repeats : dict, optional
        ``3task``/``5task``: repeats per task per epoch (default :data:`REPEATS_3TASK` /
        :data:`REPEATS_5TASK`, the original's).
    degradation, name_rule, input_dir, target_dir : str, optional
        ``paired``: the pairs' degradation, the input-to-target name rule ``"PATTERN=>REPL"``, and
        the folder names. ``name_rule`` also overrides a paper layout's rule.
    holdout : int
        Paper and ``clean`` layouts: every ``holdout``-th file (sorted) is kept out of ``"train"``
        and forms ``"val"``. 0 (default, the original's setting) trains on everything and has no
        validation split.
    per_image : int
        Validation crops per image per degradation (synthetic layouts).
    size_mismatch : {"error", "crop"}
        Paired layouts: input/target size disagreement policy (see :class:`PairedDataset`).

    Raises
    ------
    UserError
        Missing folders, no usable files, a validation split without ``holdout``.
    """
    _check_split(split)
    crop_size = None if split == "test" else patch_size
    if layout == "builtin":
        return _builtin_dataset(split, crop_size, degradations, labels, seed, length, ratios, per_image)
    found = scan(layout, root, split, degradations=degradations, degradation=degradation, name_rule=name_rule, input_dir=input_dir, target_dir=target_dir)
    for files in found:
        if files.error:
            raise UserError(files.error)
        _warn_unpaired(files)
    names = [n for n in DEGRADATIONS if any(n in f.degradations for f in found)]
    label_space = _check_names(labels) if labels is not None else names
    parts = [_task_dataset(f, split, crop_size, seed, label_space, holdout, per_image, size_mismatch, length, ratios, layout) for f in found]
    if len(parts) == 1:
        return parts[0]
    default = REPEATS_5TASK if layout == "5task" else REPEATS_3TASK
    reps = dict(default if split == "train" else {t: 1 for t in default}, **(repeats or {}))
    return MixedDataset([(ds, reps.get(f.task, 1)) for ds, f in zip(parts, found)], label_space)


def _builtin_dataset(
    split: str, crop_size: int | None, degradations: Sequence[str] | None, labels: Sequence[str] | None,
    seed: int, length: int | None, ratios: Sequence[float] | None, per_image: int,
) -> Dataset:
    names = _check_names(degradations or list(DEGRADATIONS))
    if labels is not None and list(labels) != names:
        raise UserError("for synthetic layouts the label list is the degradations list; pass degradations=")
    if split == "train":
        photos = builtin_photos("train")
        return SyntheticDataset(photos, names, crop_size, length or 64 * len(photos) * len(names), seed, ratios)
    photos = builtin_photos("val")
    if split == "val":
        return ListDataset(validation_set(photos, names, crop_size, per_image, seed), names)
    return SyntheticDataset(photos, names, None, seed=seed, augment=False, fixed=True)


def _task_dataset(
    files: TaskFiles, split: str, crop_size: int | None, seed: int, label_space: list[str], holdout: int, per_image: int,
    size_mismatch: str, length: int | None, ratios: Sequence[float] | None, layout: str,
) -> Dataset:
    """The dataset of one task of a layout (synthetic from clean images, or paired files)."""
    if split == "val" and holdout <= 0:
        raise UserError(f"layout {layout!r} has no validation split by default; pass holdout=N to hold out every N-th training file")
    train = split == "train"
    if files.clean:
        images = _holdout(files.clean, split, holdout if split != "test" else 0)
        if split == "val":
            items = validation_set(images, files.degradations, crop_size, per_image, seed)
            for it in items:
                it["label"] = label_space.index(it["degradation"])
            return ListDataset(items, label_space)
        noise_only = all(d in noise_names() for d in files.degradations)
        ds = SyntheticDataset(images, files.degradations, crop_size, length if layout == "clean" and train else None, seed, ratios if layout == "clean" else None,
                              augment=train, fixed=not train, original_noise=noise_only and layout != "clean")
        return _Relabelled(ds, label_space)
    pairs = _holdout(files.pairs, split, holdout if split != "test" else 0)
    return PairedDataset(pairs, files.degradations[0], crop_size, seed, label_space, augment=train, fixed=not train, size_mismatch=size_mismatch)


class _Relabelled(_Base):
    """A dataset whose labels index a wider label list."""

    def __init__(self, inner: _Base, degradations: Sequence[str]) -> None:
        super().__init__(degradations, inner.seed, inner.fixed)
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def get(self, index: int, key: tuple[int, ...]) -> dict[str, Any]:
        item = self.inner.get(index, key)
        item["label"] = self.label(item["degradation"])
        return item


# --------------------------------------------------------------------------- check


@dataclass
class CheckRow:
    """What :func:`check` found for one task."""

    task: str
    degradations: list[str]
    folder: Path
    count: int = 0
    unpaired_inputs: list[Path] = field(default_factory=list)
    unpaired_targets: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    small: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def usable(self) -> bool:
        """Training would run through: files exist and every one reads and matches."""
        return self.error is None and self.count > 0 and not self.unreadable and not self.mismatched


def _read_noting(path: Path, row: CheckRow) -> np.ndarray | None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = read_image(path)
        except UserError as exc:
            row.unreadable.append(str(exc))
            return None
    row.converted += [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    return img


def check(layout: str, root: str | Path | None, split: str = "train", patch_size: int = 128, limit: int | None = None, **scan_options: Any) -> list[CheckRow]:
    """Read every file of a layout and report problems per task (see ``python -m dfpir.data check``).

    Parameters
    ----------
    limit : int, optional
        Read at most this many files (or pairs) per task; the file listing is always complete.
    """
    rows = []
    for files in scan(layout, root, split, **scan_options):
        row = CheckRow(files.task, files.degradations, files.folder, files.count, files.unpaired_inputs, files.unpaired_targets, error=files.error)
        rows.append(row)
        if files.error or layout == "builtin":
            row.count = len(BUILTIN_PHOTOS) if layout == "builtin" else 0
            continue
        if files.clean:
            for p in files.clean[:limit]:
                img = _read_noting(p, row)
                if img is not None and min(img.shape[:2]) < patch_size:
                    row.small.append(f"{p}: {img.shape[1]}x{img.shape[0]} is smaller than the {patch_size} patch (mirror-padded)")
            continue
        for a_path, b_path in files.pairs[:limit]:
            a, b = _read_noting(a_path, row), _read_noting(b_path, row)
            if a is not None and b is not None and a.shape != b.shape:
                row.mismatched.append(f"{a_path}: {a.shape[1]}x{a.shape[0]} vs target {b_path.name} {b.shape[1]}x{b.shape[0]}")
            elif a is not None and min(a.shape[:2]) < patch_size:
                row.small.append(f"{a_path}: {a.shape[1]}x{a.shape[0]} is smaller than the {patch_size} patch (mirror-padded)")
    return rows


def format_check(rows: list[CheckRow], details: int = 10) -> str:
    """The table printed by ``check``, then the first ``details`` problems of each kind."""
    dw = max([len("degradations")] + [len(",".join(r.degradations)) for r in rows])
    head = f"{'task':<10} {'degradations':<{dw}} {'items':>7} {'unpaired':>9} {'unreadable':>10} {'mismatch':>8} {'converted':>9} {'small':>6}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        status = "ok" if r.usable else "UNUSABLE"
        unpaired = len(r.unpaired_inputs) + len(r.unpaired_targets)
        lines.append(f"{r.task:<10} {','.join(r.degradations):<{dw}} {r.count:>7} {unpaired:>9} {len(r.unreadable):>10} "
                     f"{len(r.mismatched):>8} {len(r.converted):>9} {len(r.small):>6}  {status}")
    for r in rows:
        problems = [("error", [r.error] if r.error else []), ("unreadable", r.unreadable), ("size mismatch", r.mismatched),
                    ("no target", [str(p) for p in r.unpaired_inputs]), ("no input", [str(p) for p in r.unpaired_targets]),
                    ("converted", r.converted), ("small", r.small)]
        for kind, msgs in problems:
            for m in msgs[:details]:
                lines.append(f"{r.task}: {kind}: {m}")
            if len(msgs) > details:
                lines.append(f"{r.task}: {kind}: ... and {len(msgs) - details} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- bench


def bench(size: int = 128, batch: int = 16, repeats: int = 5, workers: Sequence[int] = (0, 2), model: str | None = "tiny", out=sys.stdout) -> dict[str, float]:
    """Print and return patches/s of each degradation, of the DataLoader, and of a model step."""
    from torch.utils.data import DataLoader

    results: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    clean = torch.stack([it["target"] for it in validation_set(builtin_photos("train")[:4], ["noise15"], size, per_image=4)])
    clean = clean.repeat(math.ceil(batch / len(clean)), 1, 1, 1)[:batch]
    print(f"{'what':<34} {'patches/s':>10}   ({size}x{size}, batch {batch}, {torch.get_num_threads()} threads)", file=out)
    for name in synthetic_names():
        fn = synthesizer(name)
        fn(clean, g)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            fn(clean, g)
        results[name] = batch * repeats / (time.perf_counter() - t)
        print(f"{'degrade ' + name:<34} {results[name]:>10.0f}", file=out)
    batches = 4 * repeats  # enough batches that worker prefetching does not flatter the numbers
    ds = SyntheticDataset(builtin_photos("train"), list(DEGRADATIONS), size, length=batch * (batches + 1), seed=0)
    for w in workers:
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=w)
        it = iter(loader)
        next(it)  # worker start-up is paid once per epoch, not per batch
        t = time.perf_counter()
        n = sum(len(b["input"]) for b in it)
        results[f"loader{w}"] = n / (time.perf_counter() - t)
        print(f"{f'DataLoader, {w} workers':<34} {results[f'loader{w}']:>10.0f}", file=out)
    if model:
        results["model"] = _bench_model(model, clean, repeats)
        print(f"{f'model {model!r} train step':<34} {results['model']:>10.1f}   ({batch / results['model']:.2f} s per step)", file=out)
    return results


def _bench_model(preset: str, clean: torch.Tensor, repeats: int) -> float:
    from ..model.config import get_config
    from ..model.network import DFPIR

    net = DFPIR(get_config(preset))
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    prompt = net.embed_prompts("noise25", len(clean))
    steps = max(1, repeats // 2)
    t = 0.0
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = (net(clean, prompt) - clean).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t += (time.perf_counter() - start) if i else 0.0  # first step warms up
    return len(clean) * steps / t


# --------------------------------------------------------------------------- command line


def _check_bench_args(args: argparse.Namespace) -> None:
    """One-line errors for ``data bench`` values that cannot be timed, before any timing runs."""
    from ..model.config import PRESETS

    for name, value in (("--size", args.size), ("--batch", args.batch), ("--repeats", args.repeats)):
        check_at_least(name, value, 1)
    if args.threads is not None:
        check_at_least("--threads", args.threads, 1)
    if args.workers:
        check_at_least("--workers", min(args.workers), 0)
    if args.model != "none" and args.model not in PRESETS:
        raise UserError(f"unknown --model {args.model!r}; choose one of: {', '.join(PRESETS)}, none")


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.data {check,bench,degrade}``."""
    parser = CommandParser(prog="python -m dfpir.data", description="Check data folders, benchmark the data pipeline, or write degraded copies of clean photos.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="count, pair and read every file of a layout; exit 1 if unusable")
    c.add_argument("root", nargs="?", help="the data set's folder (not for --layout builtin)")
    c.add_argument("--layout", required=True, choices=list(LAYOUTS))
    c.add_argument("--split", default="train", choices=["train", "val", "test"])
    c.add_argument("--patch-size", type=int, default=128)
    c.add_argument("--degradation", help="paired layout: the pairs' degradation")
    c.add_argument("--name-rule", help="input-to-target stem rule 'PATTERN=>REPLACEMENT'")
    c.add_argument("--input-dir", default="input")
    c.add_argument("--target-dir", default="target")
    c.add_argument("--limit", type=int, help="read at most N files per task")
    b = sub.add_parser("bench", help="patches per second of each degradation, the loader and a model step")
    b.add_argument("--size", type=int, default=128)
    b.add_argument("--batch", type=int, default=16)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    b.add_argument("--model", default="tiny", help="config preset whose train step to time, or 'none'")
    b.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    g = sub.add_parser("degrade", help="write degraded copies of your clean images, to evaluate on (OUT/<degradation>/<name>.png)")
    g.add_argument("inputs", nargs="+", metavar="CLEAN", help="clean image files or folders of them (not recursive)")
    g.add_argument("-o", "--outdir", type=Path, required=True, help="output folder; one sub-folder per degradation")
    g.add_argument("--degradations", nargs="+", default=synthetic_names(), help="default: every synthetic degradation (the seven)")
    g.add_argument("--seed", type=int, default=0, help="base seed (each photo and degradation has its own stream)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    if args.command == "degrade":
        from .pairs import make_pairs

        sources = [p for spec in args.inputs for p in (list_images(spec) if Path(spec).is_dir() else [Path(spec)])]
        missing = [p for p in sources if not p.is_file()]
        if missing:
            raise UserError(f"{missing[0]}: no such image file or folder")
        count = make_pairs(sources, args.degradations, args.outdir, args.seed, args.overwrite)
        clean = args.inputs[0] if len(args.inputs) == 1 and Path(args.inputs[0]).is_dir() else "CLEAN"
        print(f"wrote {count} images to {args.outdir}/<degradation>/; score a model on all of them with: "
              f"python -m dfpir.evaluate --input {args.outdir} --target {clean}")
        return 0
    if args.command == "bench":
        _check_bench_args(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        bench(args.size, args.batch, args.repeats, args.workers, None if args.model == "none" else args.model)
        return 0
    if args.limit is not None:
        check_at_least("--limit", args.limit, 1, "files read per task")
    check_at_least("--patch-size", args.patch_size, 1)
    if args.root is not None and not Path(args.root).is_dir():
        raise UserError(f"{args.root}: {'is a file, not a folder' if Path(args.root).exists() else 'folder not found'}")
    rows = check(args.layout, args.root, args.split, args.patch_size, args.limit, degradation=args.degradation,
                 name_rule=args.name_rule, input_dir=args.input_dir, target_dir=args.target_dir)
    print(format_check(rows))
    return 0 if all(r.usable for r in rows) else 1

