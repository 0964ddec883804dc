"""Before the first step: the training files under ``data.root`` found and their headers read.

A missing folder, a file that is not an image or a pair whose input and target differ in size
would otherwise stop the run when first sampled, possibly hours in and after ``config.toml`` is
written. Only headers are read (sizes, not pixels), a small fraction of what decoding costs; a
file damaged behind a good header is still found only when sampled (the run then stops and keeps
its last checkpoint).

[`dfpir.data.check`][dfpir.data.checker.check] (``python -m dfpir.data check``) reads every pixel instead: the thorough
check to run once on new data.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image as PILImage

from .. import images
from ..data import scan
from ..degradations import DEGRADATIONS
from ..errors import UserError
from ..progress import progress

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as training reads it (EXIF rotation applied), from its header.

    Raises
    ------
    UserError
        ``"FILE: reason"`` for a file that is not a readable image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as im:
                width, height = im.size
                if im.format == "PNG":  # getexif() would decode a PNG's pixels to look past them
                    exif = PILImage.Exif()
                    if "exif" in im.info:
                        exif.load(im.info["exif"])
                else:
                    exif = im.getexif()
    except Exception:  # noqa: BLE001 - Pillow cannot tell from the header: our reader decides, in full
        height, width = images.read_image(path).shape
        return width, height
    return (height, width) if exif.get(EXIF_ORIENTATION, 1) in TRANSPOSING_ORIENTATIONS else (width, height)


def check_training_files(layout: str, root: str | Path, degradations: list[str], size_mismatch: str = "error",
                         quiet: bool = False) -> list[str]:
    """The degradations the training files of ``layout`` under ``root`` hold, in registry order,
    once every file's header reads and (``size_mismatch="error"``) every pair agrees in size.

    The files are those of the ``"train"`` split before any is held out for validation, so the
    validation files are checked too.

    Raises
    ------
    UserError
        Naming the first missing folder, unreadable file or pair of two sizes.
    """
    found = scan(layout, root, "train", degradations=degradations)
    for files in found:
        if files.error:
            raise UserError(files.error)
    with progress(sum(len(f.clean) + len(f.pairs) for f in found), desc="checking files", unit="file", disable=quiet) as bar:
        for files in found:
            for path in files.clean:
                image_size(path)
                bar.update(1)
            for a, b in files.pairs:
                a_size, b_size = image_size(a), image_size(b)
                if a_size != b_size and size_mismatch == "error":
                    raise UserError(
                        f"{a}: size {a_size[0]}x{a_size[1]} differs from its target {b} ({b_size[0]}x{b_size[1]}); "
                        'fix the files, or set data.size_mismatch="crop" to train on their common part'
                    )
                bar.update(1)
    return [name for name in DEGRADATIONS if any(name in f.degradations for f in found)]
