"""The work behind the app's button, without any web library: uploads in, restored PNGs out.

Each photo goes through the same steps as ``python -m dfpir.restore``: [`read_image`][dfpir.images.read_image],
[`Restorer.prompt`][dfpir.inference.runner.Restorer.prompt] (the classifier's choice for ``auto``),
[`Restorer.restore`][dfpir.inference.runner.Restorer.restore] (whole, or in tiles under the memory budget)
and [`write_image`][dfpir.images.write_image]. The result is always a PNG, which holds every bit
depth, alpha and grey-ness the reader returns, and keeps the colour profile and EXIF; under ``auto``
it also records the classifier's choice in text chunks, as ``restore`` does. A photo ``auto`` finds
clean comes back as it was read, and a guess of low confidence says so in its ``note``. A photo that
fails (unreadable, too large for the memory) becomes a [`PhotoResult`][dfpir.app.restoration.PhotoResult]
with a one-line ``error``; the other photos go on, as in ``restore``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..images import read_image, write_image
from ..inference.runner import Restorer
from ..restore import is_input_failure

#: ``progress(fraction, text)``: how far the whole batch is, in [0, 1], and what runs now.
Progress = Callable[[float, str], None]


@dataclass
class PhotoResult:
    """One uploaded photo after the button: what it was restored as, or why it was not.

    Parameters
    ----------
    name : str
        The upload's file name.
    output : Path or None
        The restored PNG (to download), named ``<stem>_restored.png``.
    before : Path or None
        An 8-bit PNG of the input as read (upright, without alpha), for the before/after view:
        the upload itself may be a format or depth a browser does not show (16-bit TIFF).
    degradation : str
        The prompt used: a degradation name (the classifier's choice under ``auto``).
    confidence : float or None
        The classifier's confidence in ``degradation`` under ``auto``; ``None`` otherwise.
    tiles : str
        ``"whole image"`` or e.g. ``"12 tiles of 256"`` (``"not restored"`` for a clean photo).
    note : str
        Under ``auto``: a guess of low confidence, or a photo found clean and left as it is
        ([`Prompt.remarks`][dfpir.inference.runner.Prompt.remarks]); else empty.
    error : str
        Why the photo failed (one line); empty when it was restored.
    """

    name: str
    output: Path | None = None
    before: Path | None = None
    degradation: str = ""
    confidence: float | None = None
    tiles: str = ""
    note: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the photo was restored."""
        return not self.error


def unique_stems(uploads: list[Path]) -> list[str]:
    """Each upload's file stem, numbered (``_2``, ``_3``...) where two would clash (``a.jpg`` and
    ``a.png``, or one name from two folders), so that every photo's files have names of their own."""
    stems, taken = [], set()
    for path in uploads:
        stem, n = path.stem, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{path.stem}_{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def restore_photo(restorer: Restorer, upload: Path, spec: str, outdir: Path, stem: str,
                  tiles: Callable[[int, int], None] | None = None) -> PhotoResult:
    """Read, restore and write one photo (raises on failure; see [`restore_photos`][dfpir.app.restoration.restore_photos]).

    Parameters
    ----------
    restorer : Restorer
        The loaded model.
    upload : Path
        The uploaded file.
    spec : str
        A degradation name or ``auto``.
    outdir : Path
        Where ``<stem>_restored.png`` and the before view ``<stem>_before.png`` go.
    stem : str
        The files' name stem.
    tiles : callable, optional
        ``tiles(done, total)`` after each tile of a tiled photo.
    """
    image = read_image(upload)
    prompt = restorer.prompt(spec, image.rgb)
    restored, plan = restorer.restore(image.rgb, prompt, progress=tiles)
    target, before = outdir / f"{stem}_restored.png", outdir / f"{stem}_before.png"
    write_image(target, image.with_rgb(restored), text=prompt.text())
    write_image(before, image.rgb)  # an array is written as 8-bit RGB: what a browser shows
    tiling = "not restored" if prompt.clean else "whole image" if plan is None else f"{plan.count} tiles of {plan.tile}"
    note = "; ".join(prompt.remarks(restorer.min_confidence))
    return PhotoResult(upload.name, target, before, prompt.label, prompt.confidence, tiling, note)


def restore_photos(restorer: Restorer, uploads: list[Path], spec: str, outdir: Path,
                   progress: Progress | None = None) -> list[PhotoResult]:
    """Restore every upload into ``outdir``, one [`PhotoResult`][dfpir.app.restoration.PhotoResult] each, in order.

    Parameters
    ----------
    restorer : Restorer
        The loaded model (its tile size and memory budget decide the tiling, as in ``restore``).
    uploads : list of Path
        The uploaded files.
    spec : str
        A degradation name or ``auto``.
    outdir : Path
        A folder of this batch's own (created if missing).
    progress : callable, optional
        ``progress(fraction, text)`` before each photo and after each tile.

    Raises
    ------
    UserError
        When ``spec`` can never be used with these weights (before any photo is read). A failure of
        one photo is not raised: it is that photo's ``error``. Anything else is a bug and is raised.
    """
    restorer.check_spec(spec)
    report = progress or (lambda fraction, text: None)
    results = []
    for i, (upload, stem) in enumerate(zip(uploads, unique_stems(uploads))):
        report(i / len(uploads), upload.name)

        def tiles(done: int, total: int, i: int = i, upload: Path = upload) -> None:
            report((i + done / total) / len(uploads), f"{upload.name}: tile {done} of {total}")

        try:
            results.append(restore_photo(restorer, upload, spec, outdir, stem, tiles))
        except Exception as exc:  # noqa: BLE001 - sorted by is_input_failure, as restore does; bugs are raised again
            if not is_input_failure(exc):
                raise
            results.append(PhotoResult(upload.name, error=one_line(exc, upload)))
    return results


def one_line(exc: BaseException, upload: Path) -> str:
    """``exc``'s first line, naming the upload by its file name rather than its temporary path."""
    text = (str(exc).strip().splitlines() or [""])[0].replace(str(upload), upload.name)
    if isinstance(exc, MemoryError) or (not isinstance(exc, UserError) and "memory" in text.lower()):
        text = "out of memory; start the app with a smaller --tile or --memory-gb"
    return text if text.startswith(upload.name) else f"{upload.name}: {text}"


def summary(results: list[PhotoResult], seconds: float) -> str:
    """One line: how many photos were restored, in what time, and each failure."""
    done = sum(r.ok for r in results)
    line = f"Restored {done} of {len(results)} photos in {seconds:.1f} s."
    errors = [r.error for r in results if not r.ok]
    return " ".join([line, *(f"Error: {e}" for e in errors)])

