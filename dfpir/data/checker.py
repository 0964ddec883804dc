"""The data checker behind ``python -m dfpir.data check``: read every file of a layout, report per task.

A task is unusable when its files are missing, unreadable or input and target differ in size:
training would stop there. Converted images (grey, palette, 16-bit or alpha, see
[`conversions`][dfpir.data.photos.conversions]) and training images smaller than the patch are reported
but usable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import images
from ..errors import UserError
from .layouts import scan
from .photos import BUILTIN_PHOTOS, conversions, pixels


@dataclass
class CheckRow:
    """What [`check`][dfpir.data.checker.check] found for one task."""

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
    """The file's training pixels, noting in ``row`` that it is unreadable or was converted."""
    try:
        image = images.read_image(path)
    except UserError as exc:
        row.unreadable.append(str(exc))
        return None
    changes = conversions(image)
    if changes:
        row.converted.append(f"{path}: {', '.join(changes)}")
    return pixels(image)


def _note_small(path: Path, img: np.ndarray, patch_size: int, row: CheckRow) -> None:
    if min(img.shape[:2]) < patch_size:
        row.small.append(f"{path}: {img.shape[1]}x{img.shape[0]} is smaller than the {patch_size} patch (mirror-padded)")


def check(layout: str, root: str | Path | None, split: str = "train", patch_size: int = 128, limit: int | None = None, **scan_options: Any) -> list[CheckRow]:
    """Read every file of a layout and report problems per task (see ``python -m dfpir.data check``).

    Parameters
    ----------
    split : {"train", "val", "test"}
        Images smaller than ``patch_size`` are noted for ``"train"`` and ``"val"`` only (they are
        mirror-padded to a patch); a test image is restored whole, at any size.
    limit : int, optional
        Read at most this many files (or pairs) per task; the file listing is always complete.
    scan_options
        Passed to [`scan`][dfpir.data.layouts.scan] (``degradation``, ``name_rule``, ...).
    """
    cropped = split != "test"
    rows = []
    for files in scan(layout, root, split, **scan_options):
        row = CheckRow(files.task, files.degradations, files.folder, files.count, files.unpaired_inputs, files.unpaired_targets, error=files.error)
        rows.append(row)
        if files.error or layout == "builtin":
            row.count = len(BUILTIN_PHOTOS) if layout == "builtin" else 0
            continue
        for path in files.clean[:limit]:
            img = _read_noting(path, row)
            if img is not None and cropped:
                _note_small(path, img, patch_size, row)
        for a_path, b_path in files.pairs[:limit]:
            a, b = _read_noting(a_path, row), _read_noting(b_path, row)
            if a is not None and b is not None and a.shape != b.shape:
                row.mismatched.append(f"{a_path}: {a.shape[1]}x{a.shape[0]} vs target {b_path.name} {b.shape[1]}x{b.shape[0]}")
            elif a is not None and cropped:
                _note_small(a_path, a, patch_size, row)
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
