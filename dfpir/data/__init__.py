"""Data: clean photos, patches, datasets, the paper's folder layouts, and ``python -m dfpir.data``.

Every dataset yields dicts ``{"input", "target", "degradation", "label", "name"}`` with (3, P, P)
float32 images in [0, 1]; splits ``"train"`` (random crops and flips, fresh each epoch),
``"val"`` (fixed crops) and ``"test"`` (whole images). Which module holds what:

- :mod:`~dfpir.data.photos`: reading image files for training (:func:`read_image`,
  :class:`DataWarning`), listing folders (:func:`list_images`) and the built-in photos
  (:data:`BUILTIN_PHOTOS`, :func:`builtin_photos`, the spatial train/val split);
- :mod:`~dfpir.data.patches`: worker-safe random streams (:func:`item_rng`,
  :func:`torch_generator`), crops, the dihedral augmentation, :func:`to_tensor`;
- :mod:`~dfpir.data.datasets`: :class:`SyntheticDataset`, :class:`PairedDataset`,
  :class:`MixedDataset`, :func:`validation_set` and :func:`build_dataset` (a named layout's dataset);
- :mod:`~dfpir.data.layouts`: where each data set keeps its files (:data:`LAYOUTS`), found by
  :func:`scan` and paired by name (:class:`NameRule`, :func:`match_pairs`);
- :mod:`~dfpir.data.checker`: ``python -m dfpir.data check`` (:func:`check`, :func:`format_check`);
- :mod:`~dfpir.data.bench`: ``python -m dfpir.data bench``;
- :mod:`~dfpir.data.pairs`: ``python -m dfpir.data degrade``, test pairs from your own photos;
- :mod:`~dfpir.data.cli`: the command line, :func:`main`.
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
from .patches import crop, crop_box, dihedral, item_rng, to_tensor, torch_generator
from .photos import BUILTIN_PHOTOS, IMAGE_SUFFIXES, VAL_FRACTION, DataWarning, builtin_photos, list_images, read_image

__all__ = [
    "BUILTIN_PHOTOS",
    "IMAGE_SUFFIXES",
    "VAL_FRACTION",
    "DataWarning",
    "builtin_photos",
    "list_images",
    "read_image",
    "crop",
    "crop_box",
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
