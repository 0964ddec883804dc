"""Data: clean photos, patches, datasets, the paper's folder layouts, and ``python -m dfpir.data``.

Every dataset yields dicts ``{"input", "target", "degradation", "label", "name"}`` with (3, P, P)
float32 images in [0, 1]; splits ``"train"`` (random crops and flips, fresh each epoch),
``"val"`` (fixed crops) and ``"test"`` (whole images). Which module holds what:

- [`photos`][dfpir.data.photos]: reading image files for training ([`read_image`][dfpir.data.photos.read_image],
  [`DataWarning`][dfpir.data.photos.DataWarning]), listing folders ([`list_images`][dfpir.data.photos.list_images]) and the built-in photos
  ([`BUILTIN_PHOTOS`][dfpir.data.BUILTIN_PHOTOS], [`builtin_photos`][dfpir.data.photos.builtin_photos], the spatial train/val split);
- [`patches`][dfpir.data.patches]: worker-safe random streams ([`item_rng`][dfpir.data.patches.item_rng],
  [`torch_generator`][dfpir.data.patches.torch_generator]), crops, the dihedral augmentation, degrade-then-crop ([`degraded_patch`][dfpir.data.patches.degraded_patch]), [`to_tensor`][dfpir.data.patches.to_tensor];
- [`datasets`][dfpir.data.datasets]: [`SyntheticDataset`][dfpir.data.datasets.SyntheticDataset], [`PairedDataset`][dfpir.data.datasets.PairedDataset],
  [`MixedDataset`][dfpir.data.datasets.MixedDataset], [`validation_set`][dfpir.data.datasets.validation_set] and [`build_dataset`][dfpir.data.datasets.build_dataset] (a named layout's dataset);
- [`layouts`][dfpir.data.layouts]: where each data set keeps its files ([`LAYOUTS`][dfpir.data.LAYOUTS]), found by
  [`scan`][dfpir.data.layouts.scan] and paired by name ([`NameRule`][dfpir.data.layouts.NameRule], [`match_pairs`][dfpir.data.layouts.match_pairs]);
- [`checker`][dfpir.data.checker]: ``python -m dfpir.data check`` ([`check`][dfpir.data.checker.check], [`format_check`][dfpir.data.checker.format_check]);
- [`bench`][dfpir.data.bench]: ``python -m dfpir.data bench``;
- [`pairs`][dfpir.data.pairs]: ``python -m dfpir.data degrade``, test pairs from your own photos;
- [`corpus`][dfpir.data.corpus]: ``python -m dfpir.data corpus`` and ``heldout``, a training corpus from the package
  registries, dead-leaves images, and the held-out photos;
- [`cli`][dfpir.data.cli]: the command line, [`main`][dfpir.data.cli.main].
"""

from .checker import CheckRow, check, format_check
from .cli import main
from .datasets import (
    REPEATS_3TASK,
    REPEATS_5TASK,
    ListDataset,
    MixedDataset,
    PairedDataset,
    SyntheticDataset,
    build_dataset,
    validation_set,
)
from .layouts import LAYOUTS, PAIRED_LAYOUTS, NameRule, PairedLayout, TaskFiles, match_pairs, scan
from .pairs import make_pairs
from .patches import apply_degradation, crop, crop_box, degraded_patch, dihedral, item_rng, to_tensor, torch_generator
from .photos import BUILTIN_PHOTOS, IMAGE_SUFFIXES, VAL_FRACTION, DataWarning, builtin_photos, list_images, read_image

__all__ = [
    "BUILTIN_PHOTOS",
    "IMAGE_SUFFIXES",
    "VAL_FRACTION",
    "DataWarning",
    "builtin_photos",
    "list_images",
    "read_image",
    "apply_degradation",
    "crop",
    "crop_box",
    "degraded_patch",
    "dihedral",
    "item_rng",
    "to_tensor",
    "torch_generator",
    "REPEATS_3TASK",
    "REPEATS_5TASK",
    "ListDataset",
    "MixedDataset",
    "PairedDataset",
    "SyntheticDataset",
    "build_dataset",
    "validation_set",
    "LAYOUTS",
    "PAIRED_LAYOUTS",
    "NameRule",
    "PairedLayout",
    "TaskFiles",
    "match_pairs",
    "scan",
    "CheckRow",
    "check",
    "format_check",
    "make_pairs",
    "main",
]
