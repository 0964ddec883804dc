"""Datasets: clean photos plus synthetic degradations, paired files, mixtures, and a layout's dataset.

Every dataset yields dicts ``{"input": (3, P, P) float32, "target": (3, P, P) float32,
"degradation": name, "label": index into the dataset's ``degradations`` list, "name": file or
photo name}``, with values in [0, 1].

Three splits, the same meaning in every layout:

* ``"train"``: random crops with a random dihedral augmentation (the same for input and target),
  drawn afresh each epoch (call ``set_epoch``; ``set_step`` tells a curriculum the training step);
* ``"val"``: fixed crops, no augmentation, identical every epoch;
* ``"test"``: whole images, no augmentation.

Item ``i`` of epoch ``e`` draws from [`item_rng`][dfpir.data.patches.item_rng] seeded by
``(seed, e, i)``, so the data do not depend on the number of DataLoader workers. ``set_epoch``
must be called before the loader's iterator is created (``persistent_workers=False``, the
default, re-creates the workers each epoch).

[`build_dataset`][dfpir.data.datasets.build_dataset] makes the dataset of a named layout ([`LAYOUTS`][dfpir.data.layouts.LAYOUTS]).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from torch.utils.data import Dataset

from ..degradations import DEGRADATIONS, DegradeFn, noise_names
from ..errors import UserError
from .curriculum import one_kernel_blur, uses_one_kernel
from .layouts import TaskFiles, check_degradations, check_split, scan
from .patches import apply_degradation, crop, crop_box, degraded_patch, dihedral, item_rng, to_tensor
from .photos import DataWarning, DecodedPhotos, builtin_photos

REPEATS_3TASK: dict[str, int] = {"denoise": 1, "derain": 120, "dehaze": 1}
"""The original's per-epoch repeats for 3-task training (denoising already holds every clean image
three times, once per sigma)."""

REPEATS_5TASK: dict[str, int] = {"denoise": 1, "derain": 80, "dehaze": 1, "deblur": 30, "lowlight": 60}
"""The original's per-epoch repeats for 5-task training."""

Image = Union[np.ndarray, str, Path, tuple[str, np.ndarray]]
"""One clean image of [`SyntheticDataset`][dfpir.data.datasets.SyntheticDataset]: an (H, W, 3) float array, a ``(name, array)``
pair, or a file path (read when an item needs it)."""


# --------------------------------------------------------------------------- datasets


class _Base(Dataset):
    """Shared epoch handling, labels and the ``get(index, key)`` protocol of all datasets here.

    ``get(index, key)`` returns item ``index`` with randomness seeded by ``(seed, epoch, *key)``:
    a mixture that repeats a dataset passes a distinct key per repeat so repeats get new crops.
    """

    def __init__(self, degradations: Sequence[str], seed: int, fixed: bool) -> None:
        self.degradations = check_degradations(degradations)
        self.seed = int(seed)
        self.epoch = 0
        self.step = 0
        self.fixed = fixed  # validation/test: the same data every epoch
        self.decoded = DecodedPhotos()

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (no effect on fixed validation/test sets)."""
        self.epoch = int(epoch)

    def set_step(self, step: int) -> None:
        """The training step the next items are drawn for (read by a curriculum only)."""
        self.step = int(step)

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


class SyntheticDataset(_Base):
    """Clean images degraded on the fly by the synthetic models of [`dfpir.degradations`][dfpir.degradations].

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
        [`dfpir.degradations.gaussian_noise`][dfpir.degradations.synthetic.gaussian_noise]).
    blur_curriculum : int
        Steps over which motion blur moves from one kernel to the full distribution
        ([`dfpir.data.curriculum`][dfpir.data.curriculum]; the step comes from ``set_step``); 0: off.
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
        blur_curriculum: int = 0,
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
        self.blur_curriculum = int(blur_curriculum)

    def __len__(self) -> int:
        return self.length

    def load(self, entry: tuple[str, np.ndarray | Path]) -> tuple[str, np.ndarray]:
        """``(name, (H, W, 3) float32 pixels)`` of an entry of ``images`` (files decoded once, then kept)."""
        name, img = entry
        return name, (self.decoded.read(img) if isinstance(img, Path) else img)

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
        name, clean = self.load(self.images[img_idx])
        deg = self.degradations[deg_idx]
        if self.augment:  # turn the photo, not the patch: the degradation's direction stays the generator's
            clean = dihedral(clean, int(rng.integers(8)), copy=False)
        synth = self._curriculum(deg, key)
        if self.patch_size is None:
            x, y = apply_degradation(deg, clean, rng, self.original_noise, synth), to_tensor(clean)
        else:
            x, y = degraded_patch(clean, *crop_box(*clean.shape[:2], self.patch_size, rng), self.patch_size, deg, rng,
                                  self.original_noise, synth)
        return dict(input=x, target=y, degradation=deg, label=deg_idx, name=name)

    def _curriculum(self, deg: str, key: tuple[int, ...]) -> DegradeFn | None:
        """The blur curriculum's one-kernel generator for this item, or ``None`` (the registry's)."""
        if deg != "blur" or not self.blur_curriculum:
            return None
        epoch = 0 if self.fixed else self.epoch
        return one_kernel_blur if uses_one_kernel(self.seed, epoch, key, self.step, self.blur_curriculum) else None


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
        name, clean = ds.load(ds.images[i])
        for d, deg in enumerate(ds.degradations):
            for k in range(per_image):
                rng = item_rng(seed, 0x5EED, i, d, k)  # a stream no training item uses
                x, y = degraded_patch(clean, *crop_box(*clean.shape[:2], patch_size, rng), patch_size, deg, rng)
                items.append(dict(input=x, target=y, degradation=deg, label=d, name=f"{name}/{deg}/{k}"))
    return items


class ListDataset(Dataset):
    """A fixed list of items (e.g. [`validation_set`][dfpir.data.datasets.validation_set]) as a Dataset."""

    def __init__(self, items: list[dict[str, Any]], degradations: Sequence[str]) -> None:
        self.items = items
        self.degradations = list(degradations)

    def set_epoch(self, epoch: int) -> None:
        """Fixed data: nothing to do."""

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def get(self, index: int, key: tuple[int, ...]) -> dict[str, Any]:
        """Item ``index`` (fixed: the random key changes nothing), as a part of a [`MixedDataset`][dfpir.data.datasets.MixedDataset]
        (a paper layout's validation split)."""
        return dict(self.items[index])


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
        a, b = self.decoded.read(a_path), self.decoded.read(b_path)
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
        self.degradations = check_degradations(degradations)
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


# --------------------------------------------------------------------------- building datasets


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
    blur_curriculum: int = 0,
) -> Dataset:
    """A dataset of the dict format for a named layout (see [`LAYOUTS`][dfpir.data.layouts.LAYOUTS]).

    Parameters
    ----------
    layout : str
        One of [`LAYOUTS`][dfpir.data.layouts.LAYOUTS].
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
        ``3task``/``5task``: repeats per task per epoch (default [`REPEATS_3TASK`][dfpir.data.datasets.REPEATS_3TASK] /
        [`REPEATS_5TASK`][dfpir.data.datasets.REPEATS_5TASK], the original's).
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
        Paired layouts: input/target size disagreement policy (see [`PairedDataset`][dfpir.data.datasets.PairedDataset]).
    blur_curriculum : int
        ``builtin``/``clean`` training: steps of the blur curriculum ([`dfpir.data.curriculum`][dfpir.data.curriculum]); 0: off.

    Raises
    ------
    UserError
        Missing folders, no usable files, a validation split without ``holdout``.
    """
    check_split(split)
    crop_size = None if split == "test" else patch_size
    if layout == "builtin":
        return _builtin_dataset(split, crop_size, degradations, labels, seed, length, ratios, per_image, blur_curriculum)
    found = scan(layout, root, split, degradations=degradations, degradation=degradation, name_rule=name_rule, input_dir=input_dir, target_dir=target_dir)
    for files in found:
        if files.error:
            raise UserError(files.error)
        _warn_unpaired(files)
    names = [n for n in DEGRADATIONS if any(n in f.degradations for f in found)]
    label_space = check_degradations(labels) if labels is not None else names
    parts = [_task_dataset(f, split, crop_size, seed, label_space, holdout, per_image, size_mismatch, length, ratios, layout,
                           blur_curriculum) for f in found]
    if len(parts) == 1:
        return parts[0]
    default = REPEATS_5TASK if layout == "5task" else REPEATS_3TASK
    reps = dict(default if split == "train" else {t: 1 for t in default}, **(repeats or {}))
    return MixedDataset([(ds, reps.get(f.task, 1)) for ds, f in zip(parts, found)], label_space)


def _builtin_dataset(
    split: str, crop_size: int | None, degradations: Sequence[str] | None, labels: Sequence[str] | None,
    seed: int, length: int | None, ratios: Sequence[float] | None, per_image: int, blur_curriculum: int = 0,
) -> Dataset:
    names = check_degradations(degradations or list(DEGRADATIONS))
    if labels is not None and list(labels) != names:
        raise UserError("for synthetic layouts the label list is the degradations list; pass degradations=")
    if split == "train":
        photos = builtin_photos("train")
        return SyntheticDataset(photos, names, crop_size, length or 64 * len(photos) * len(names), seed, ratios,
                                blur_curriculum=blur_curriculum)
    photos = builtin_photos("val")
    if split == "val":
        return ListDataset(validation_set(photos, names, crop_size, per_image, seed), names)
    return SyntheticDataset(photos, names, None, seed=seed, augment=False, fixed=True)


def _task_dataset(
    files: TaskFiles, split: str, crop_size: int | None, seed: int, label_space: list[str], holdout: int, per_image: int,
    size_mismatch: str, length: int | None, ratios: Sequence[float] | None, layout: str, blur_curriculum: int = 0,
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
                              augment=train, fixed=not train, original_noise=noise_only and layout != "clean",
                              blur_curriculum=blur_curriculum if train else 0)
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

    def set_step(self, step: int) -> None:
        self.inner.set_step(step)

    def __len__(self) -> int:
        return len(self.inner)

    def get(self, index: int, key: tuple[int, ...]) -> dict[str, Any]:
        item = self.inner.get(index, key)
        item["label"] = self.label(item["degradation"])
        return item

