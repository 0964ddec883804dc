"""Clean photos: image files read for training, folders listed, and the built-in photos.

The built-in default needs no download: the colour photographs that scikit-image installs in its
package folder ([`BUILTIN_PHOTOS`][dfpir.data.photos.BUILTIN_PHOTOS]), split spatially: the left 70% of every photo is for
training, the right 30% for validation ([`VAL_FRACTION`][dfpir.data.photos.VAL_FRACTION]).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .. import images
from ..errors import UserError

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

# Pillow modes that reading turns into RGB without a trace in images.Image (which keeps only what
# writing back needs: alpha, bit depth, grey-ness).
_COLOUR_MODES = {"P": "palette", "PA": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}


class DataWarning(UserWarning):
    """A data problem that was worked around (converted image, unpaired file, ...)."""


# --------------------------------------------------------------------------- reading images


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) float32 array in [0, 1] for training or evaluation.

    Decoding is [`dfpir.images.read_image`][dfpir.images.read_image] (EXIF orientation applied, 16-bit kept at full
    depth, grey and palette expanded to RGB). An alpha channel is dropped with a
    [`DataWarning`][dfpir.data.photos.DataWarning] when it is not fully opaque: restoration targets are opaque photos.

    Raises
    ------
    UserError
        ``"FILE: reason"`` for a missing, truncated, corrupt or unsupported file.
    """
    image = images.read_image(path)
    if image.alpha is not None and image.alpha.min() < 1:
        warnings.warn(f"{path}: alpha channel dropped (transparent pixels keep their colour)", DataWarning, stacklevel=2)
    return pixels(image)


DECODED_BUDGET = 1 << 30
"""Bytes of decoded photos [`DecodedPhotos`][dfpir.data.photos.DecodedPhotos] keeps per dataset (and
per DataLoader worker): 1 GiB holds about 28 megapixels of float32 RGB."""


class DecodedPhotos:
    """Decoded training photos kept in memory, up to ``budget`` bytes, least recently used out first.

    A training step draws its patches from a few dozen files over and over; decoding a PNG again
    for every patch took about a tenth of a ``tiny`` step. The arrays handed out are exactly what
    [`read_image`][dfpir.data.photos.read_image] returns, marked read-only, since every caller shares
    them. A file whose size or modification time changed is read again.

    Parameters
    ----------
    budget : int, optional
        Bytes to keep (default [`DECODED_BUDGET`][dfpir.data.photos.DECODED_BUDGET], read when the
        cache is made); 0 keeps nothing (every call decodes).
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = DECODED_BUDGET if budget is None else int(budget)
        self.used = 0
        self.arrays: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()

    def read(self, path: Path) -> np.ndarray:
        """``read_image(path)``, from memory when it is there."""
        try:
            st = path.stat()
        except OSError:
            return read_image(path)  # its one-line error names what is wrong with the path
        key = (str(path), st.st_mtime_ns, st.st_size)  # one stat per item: a dataset names each file one way
        if key in self.arrays:
            self.arrays.move_to_end(key)
            return self.arrays[key]
        array = read_image(path)
        array.setflags(write=False)
        self.arrays[key] = array
        self.used += array.nbytes
        while self.used > self.budget and self.arrays:
            self.used -= self.arrays.popitem(last=False)[1].nbytes
        return array

    def __getstate__(self) -> dict:
        """Pickled empty: a DataLoader worker started by ``spawn`` fills its own cache."""
        return {"budget": self.budget, "used": 0, "arrays": OrderedDict()}


def pixels(image: images.Image) -> np.ndarray:
    """The (H, W, 3) float32 pixels that training sees of a decoded file (alpha dropped)."""
    return np.ascontiguousarray(image.rgb, dtype=np.float32)


def conversions(image: images.Image) -> list[str]:
    """Every change between the file and [`pixels`][dfpir.data.photos.pixels]: grey -> RGB, palette -> RGB, 16-bit -> float, alpha dropped.

    None of them makes the data unusable; ``python -m dfpir.data check`` counts them so that a
    folder of unexpected files (grey scans, 16-bit exports, cut-outs) does not go unnoticed.
    """
    done = []
    if image.was_gray:
        done.append("grey -> RGB")
    mode = _pillow_mode(image.path) if image.path is not None else None
    if mode in _COLOUR_MODES:
        done.append(f"{_COLOUR_MODES[mode]} -> RGB")
    if image.bit_depth == 16:
        done.append("16-bit -> float")
    if image.alpha is not None:
        seen_through = int((image.alpha < 1).sum())
        done.append(f"alpha dropped ({seen_through} of {image.alpha.size} pixels not opaque)" if seen_through else "opaque alpha dropped")
    return done


def _pillow_mode(path: Path) -> str | None:
    """The colour mode Pillow reports for ``path`` (header only), ``None`` if Pillow cannot tell."""
    try:
        with PILImage.open(path) as im:
            return im.mode
    except Exception:  # noqa: BLE001 - the file was decoded already (e.g. by tifffile): not a Pillow colour mode
        return None


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Sorted image files (by suffix, hidden files skipped) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


# --------------------------------------------------------------------------- built-in photos


def builtin_folder() -> Path:
    """scikit-image's data folder, where the built-in photos are (a ``UserError`` without scikit-image)."""
    spec = importlib.util.find_spec("skimage")  # finds the folder without importing scikit-image
    if spec is None or spec.origin is None:
        raise UserError("the built-in photos need scikit-image (pip install scikit-image)")
    return Path(spec.origin).parent / "data"


@lru_cache(maxsize=None)
def _builtin_photo(filename: str) -> np.ndarray:
    path = builtin_folder() / filename
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
