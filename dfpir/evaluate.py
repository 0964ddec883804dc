"""Evaluate on paired folders or the paper's test sets: ``python -m dfpir.evaluate``.

Three ways to name the data:

- ``--input DIR --target DIR --degradation NAME`` (or ``auto``): inputs matched to targets by file
  stem (``--name-rule 'PATTERN=>REPLACEMENT'`` for names that differ, e.g. ``'^rain-=>norain-'``);
- ``--input DIR --target DIR`` without ``--degradation``, where DIR holds one sub-folder per
  degradation named after it (as ``python -m dfpir.data degrade`` writes): one column per
  sub-folder, each against the same targets;
- ``--benchmark 3task|5task --root DIR``: the test layouts of [`dfpir.data.scan`][dfpir.data.layouts.scan] under
  ``ROOT/denoise`` (CBSD68 clean images), ``ROOT/derain`` (Rain100L ``input/rain-N`` with
  ``target/norain-N``), ``ROOT/dehaze`` (SOTS-outdoor ``input/XXXX_*.jpg`` with
  ``target/XXXX.png``), and for 5-task ``ROOT/deblur`` (GoPro ``blur``/``sharp``) and
  ``ROOT/lowlight`` (LOL ``low``/``high``); each may sit in a ``test`` sub-folder.

Noise for CBSD68 is synthesised as the original does: one ``np.random.seed(0)`` stream, drawn for
every image (sorted by name) at sigma 15, then 25, then 50, on the 0-255 scale, clipped and
truncated to uint8. The 5-task benchmark evaluates sigma 25 only but still draws the sigma-15
noise first, so its sigma-25 images are the same as the 3-task ones.

Protocols (``--protocol``):

- ``official`` reproduces the original metric exactly: input and target centre-cropped to a
  multiple of 16 *before* restoring (for CBSD68, before the noise is drawn, so the realisation
  matches the original's), RGB, output clipped to [0, 1] as floats (not rounded), scikit-image
  PSNR and SSIM (``data_range=1``, ``channel_axis=-1``, 7 x 7 window), mean over images;
- ``full`` (default) restores and scores the whole image (padded to the network's multiple and
  cropped back). Under ``full`` the CBSD68 noise is drawn on the uncropped image, so it is a
  different (equally seeded) realisation.

A file that cannot be scored (unreadable, a size that differs from its target's, too small for
SSIM) is reported on one line on standard error and skipped; the table of the rest is printed,
followed by the list of skipped files, and the exit code is 1 (2 for a usage error).

Rows: ``input`` (the degraded input itself), ``DFPIR (oracle)`` (true degradation prompt, as the
paper reports DFPIR), ``DFPIR (blind)`` (``--prompt blind|both``: the classifier stored in the
weights picks the prompt, as ``restore --degradation auto`` does; its accuracy is printed, and
under the table its confusion matrix, accuracy and expected calibration error), and with
``--baseline`` a classical method for context where one exists (noise only: BM3D when the
``bm3d`` package is installed, otherwise scikit-image non-local means, both given the true sigma).

An input sub-folder named ``clean`` (``python -m dfpir.data degrade --with-clean``) holds undegraded
copies of the targets: its true class is ``clean``, its oracle output is the input itself, and
it is left out of the average column (its input scores an infinite PSNR), but not out of the
confusion matrix.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from .degradations import DEGRADATIONS, get_degradation
from .errors import CommandParser, UserError, cli_main
from .files import atomic_write, check_output_folder
from .images import read_image
from .metrics import SSIM_WINDOW, centre_crop_multiple, psnr, ssim
from .inference.runner import MIN_CONFIDENCE, PRECISIONS, Prompt, Restorer, budget_bytes
from .model.classifier import CLEAN, expected_calibration_error
from .progress import TileProgress, progress
from .restore import add_auto_rule_option

COLUMNS = {  # benchmark -> (column label, task folder, degradation), in the paper's order
    "3task": [("SOTS", "dehaze", "haze"), ("Rain100L", "derain", "rain"), ("sigma 15", "denoise", "noise15"),
              ("sigma 25", "denoise", "noise25"), ("sigma 50", "denoise", "noise50")],
    "5task": [("SOTS", "dehaze", "haze"), ("Rain100L", "derain", "rain"), ("CBSD68", "denoise", "noise25"),
              ("GoPro", "deblur", "blur"), ("LOL", "lowlight", "lowlight")],
}
ORACLE, BLIND, INPUT = "DFPIR (oracle)", "DFPIR (blind)", "input"
SKIPPED_EXIT = 1  # the table was printed, but some files could not be scored


@dataclass
class Sample:
    """One test image: degraded input, clean target (H, W, 3 float) and the true degradation."""

    name: str
    input: np.ndarray
    target: np.ndarray
    degradation: str | None


@dataclass
class Skipped:
    """A test file that could not be scored: the file and the one-line reason (which names it)."""

    file: str
    reason: str


@dataclass
class Column:
    """One table column: a label, its true degradation, a way to produce its samples and their number."""

    label: str
    degradation: str | None
    samples: Callable[[], Iterator[Sample | Skipped]]
    count: int | None = None


@dataclass
class Guess:
    """One blind prompt: the true degradation (``None`` when unknown), the classifier's choice and confidence."""

    true: str | None
    chosen: str
    confidence: float
    low: bool


@dataclass
class Results:
    """Per row and column, the per-image PSNR and SSIM; plus blind-prompt hits per column and every guess."""

    scores: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    blind_hits: dict[str, list[bool]] = field(default_factory=dict)
    guesses: list[Guess] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # the classifier's, for the confusion matrix
    min_confidence: float = MIN_CONFIDENCE
    clean_columns: set[str] = field(default_factory=set)  # left out of the average: nothing to restore
    tiled: int = 0  # restorations done by tiles (they differ from whole-image ones, see dfpir.inference.tiling)
    skipped: list[tuple[str, Skipped]] = field(default_factory=list)  # (column, file and reason)

    def add(self, row: str, column: str, pair: tuple[float, float]) -> None:
        """Record one image's (PSNR, SSIM)."""
        self.scores.setdefault(row, {}).setdefault(column, []).append(pair)

    def mean(self, row: str, column: str) -> tuple[float, float, int] | None:
        """Mean PSNR, mean SSIM and count, or ``None`` if the row has no such column."""
        values = self.scores.get(row, {}).get(column)
        if not values:
            return None
        arr = np.asarray(values, dtype=np.float64)
        return float(arr[:, 0].mean()), float(arr[:, 1].mean()), len(values)


# --------------------------------------------------------------------------- samples


def _as_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb * 255).astype(np.uint8)


def _crop(image: np.ndarray, protocol: str, path: Path) -> np.ndarray:
    """The image as scored, refused (one line, naming ``path``) when SSIM's window does not fit it."""
    scored = centre_crop_multiple(image, 16) if protocol == "official" else image
    if min(scored.shape[:2]) < SSIM_WINDOW:
        (h, w), (sh, sw) = image.shape[:2], scored.shape[:2]
        if protocol == "official":
            raise UserError(f"{path}: {w}x{h} is cropped to {sw}x{sh} by --protocol official (a multiple of 16); "
                            "it needs at least 16x16 pixels (or use --protocol full)")
        raise UserError(f"{path}: {w}x{h} is smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window; "
                        f"evaluate images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    return scored


def paired_samples(pairs: list[tuple[Path, Path]], degradation: str | None, protocol: str) -> Iterator[Sample | Skipped]:
    """Samples from (input file, target file) pairs; a pair that cannot be scored (unreadable,
    sizes that disagree, too small) comes as [`Skipped`][dfpir.evaluate.Skipped].

    Parameters
    ----------
    pairs : list of (Path, Path)
        Input and target files.
    degradation : str or None
        The true degradation (``None`` when unknown).
    protocol : {"official", "full"}
        ``official`` centre-crops both to a multiple of 16.
    """
    for src, tgt in pairs:
        try:
            sample = _pair(src, tgt, degradation, protocol)
        except UserError as exc:
            yield Skipped(str(src), str(exc))
            continue
        yield sample


def _pair(src: Path, tgt: Path, degradation: str | None, protocol: str) -> Sample:
    x, y = read_image(src).rgb, read_image(tgt).rgb
    if x.shape != y.shape:
        raise UserError(f"{src}: size {x.shape[:2]} differs from its target {tgt} {y.shape[:2]}")
    return Sample(src.name, _crop(x, protocol, src), _crop(y, protocol, tgt), degradation)


class NoiseStream:
    """The original's CBSD68 noise: one seeded stream, sigma 15, 25, 50 over all images in turn.

    Parameters
    ----------
    clean : list of Path
        Clean images (sorted).
    protocol : {"official", "full"}
        ``official`` crops each clean image to a multiple of 16 before the noise is drawn.
    seed : int
        The original's ``np.random.seed(0)``.

    Notes
    -----
    A clean image that cannot be used (unreadable, too small) draws no noise and comes out as
    [`Skipped`][dfpir.evaluate.Skipped] at every sigma; the images after it then get a different realisation than
    the original's (which would have stopped).
    """

    def __init__(self, clean: list[Path], protocol: str, seed: int = 0) -> None:
        self.clean, self.protocol = clean, protocol
        self.rng = np.random.RandomState(seed)
        self.drawn: dict[int, list[np.ndarray | None]] = {}
        self.errors: dict[Path, str] = {}

    def noisy(self, sigma: int) -> list[np.ndarray | None]:
        """All noisy uint8 images at ``sigma`` (``None`` for a skipped image), drawing the earlier sigmas first if needed."""
        from .degradations.synthetic import gaussian_noise_uint8

        for s in (15, 25, 50):
            if s in self.drawn:
                continue
            self.drawn[s] = []
            for path in self.clean:
                clean = self._clean_u8(path)
                self.drawn[s].append(None if clean is None else gaussian_noise_uint8(clean, s, self.rng))
            if s == sigma:
                break
        return self.drawn[sigma]

    def _clean_u8(self, path: Path) -> np.ndarray | None:
        """The clean image as uint8, or ``None`` (the reason kept in ``errors``) when it cannot be used."""
        try:
            return _as_uint8(_crop(read_image(path).rgb, self.protocol, path))
        except UserError as exc:
            self.errors[path] = str(exc)
            return None

    def samples(self, degradation: str) -> Iterator[Sample | Skipped]:
        """Noisy/clean samples at the degradation's sigma."""
        for path, noisy in zip(self.clean, self.noisy(get_degradation(degradation).sigma)):
            clean = None if noisy is None else self._clean_u8(path)
            if clean is None:
                yield Skipped(str(path), self.errors[path])
                continue
            yield Sample(path.name, noisy.astype(np.float32) / 255, clean.astype(np.float32) / 255, degradation)


def benchmark_columns(benchmark: str, root: Path, protocol: str, limit: int | None) -> list[Column]:
    """The columns of a paper benchmark, with one-line errors for missing folders."""
    from .data import scan

    files = {f.task: f for f in scan(benchmark, root, split="test")}
    for f in files.values():
        if f.error:
            raise UserError(f.error)
    clean = files["denoise"].clean[:limit]
    stream = NoiseStream(clean, protocol)
    columns = []
    for label, task, deg in COLUMNS[benchmark]:
        if task == "denoise":
            columns.append(Column(label, deg, lambda d=deg: stream.samples(d), len(clean)))
        else:
            pairs = files[task].pairs[:limit]
            columns.append(Column(label, deg, lambda p=pairs, d=deg: paired_samples(p, d, protocol), len(pairs)))
    return columns


def paired_column(input_dir: Path, target_dir: Path, degradation: str, rule: str | None, protocol: str, limit: int | None) -> Column:
    """The single column of a paired-folder evaluation."""
    from .data import NameRule, match_pairs

    pairs, unpaired, _ = match_pairs(input_dir, target_dir, NameRule.parse(rule))
    if not pairs:
        raise UserError(f"{input_dir}: no input images match a target in {target_dir} (see --name-rule)")
    if unpaired:  # worded as `data check` words it: a warning, the pairs are still scored
        examples = ", ".join(p.name for p in unpaired[:3])
        print(f"warning: {input_dir}: {len(unpaired)} of {len(pairs) + len(unpaired)} input files have no target in "
              f"{target_dir} (e.g. {examples}); they are skipped (see --name-rule)", file=sys.stderr)
    oracle = None if degradation == "auto" else degradation
    label = degradation if oracle else f"auto ({input_dir.name})"  # blind: the reader must see the prompt was guessed
    return Column(label, oracle, lambda: paired_samples(pairs[:limit], oracle, protocol), len(pairs[:limit]))


# --------------------------------------------------------------------------- scoring


def score(output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of a clipped float output against its target (the original's metric)."""
    return psnr(output, target), ssim(output, target)


def classical_baseline(sample: Sample) -> tuple[str, np.ndarray] | None:
    """A classical restoration for context (noise only), or ``None`` where we have none."""
    if sample.degradation == CLEAN:
        return None
    sigma = get_degradation(sample.degradation).sigma
    if sigma is None:
        return None
    sigma /= 255
    try:
        import bm3d  # type: ignore[import-not-found]

        return "baseline: BM3D", np.clip(bm3d.bm3d(sample.input, sigma_psd=sigma), 0, 1)
    except ImportError:
        from skimage.restoration import denoise_nl_means

        out = denoise_nl_means(sample.input, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1)
        return "baseline: non-local means", np.clip(out, 0, 1)


def evaluate_column(restorer: Restorer, column: Column, prompts: list[str], baseline: bool, results: Results) -> None:
    """Score every sample of ``column`` for the input row and each prompt kind; record (and
    report on one line) the files that cannot be scored, and go on."""
    with progress(column.count, column.label, "image", summary=False) as bar:
        for sample in column.samples():
            if isinstance(sample, Skipped):
                results.skipped.append((column.label, sample))
                tqdm.write(f"error: {sample.reason}; skipped", file=sys.stderr)
            else:
                evaluate_sample(restorer, column.label, sample, prompts, baseline, results)
            bar.update(1)


def evaluate_sample(restorer: Restorer, label: str, sample: Sample, prompts: list[str], baseline: bool, results: Results) -> None:
    """Score one sample of column ``label``: the input, each prompt kind, the baseline."""
    results.add(INPUT, label, score(sample.input, sample.target))
    for kind in prompts:
        spec = sample.degradation if kind == "oracle" else "auto"
        prompt = Prompt(None, CLEAN) if spec == CLEAN else restorer.prompt(spec, sample.input)  # the oracle of clean: as it is
        if kind == "blind":
            results.guesses.append(Guess(sample.degradation, prompt.label, prompt.confidence, prompt.low_confidence))
        if kind == "blind" and sample.degradation is not None:
            results.blind_hits.setdefault(label, []).append(prompt.label == sample.degradation)
        with TileProgress(f"{label} {sample.name}") as tiles:
            out, plan = restorer.restore(sample.input, prompt, progress=tiles)
        results.tiled += plan is not None
        results.add(ORACLE if kind == "oracle" else BLIND, label, score(out, sample.target))
    if baseline and (base := classical_baseline(sample)) is not None:
        results.add(base[0], label, score(base[1], sample.target))


# --------------------------------------------------------------------------- tables


def table_rows(results: Results, labels: list[str]) -> list[tuple[str, list[tuple[float, float, int] | None], tuple[float, float] | None]]:
    """(row, per-column means, average) for every row; no average for a row missing a column.
    The average leaves out the clean column (an image with nothing to restore)."""
    rows = []
    for row in results.scores:
        cells = [results.mean(row, c) for c in labels]
        averaged = [c for c, lab in zip(cells, labels) if lab not in results.clean_columns]
        have = [c for c in averaged if c is not None]
        full = have and len(have) == len(averaged)
        avg = (float(np.mean([c[0] for c in have])), float(np.mean([c[1] for c in have]))) if full else None
        rows.append((row, cells, avg))
    return rows


def _cell(value: tuple[float, ...] | None) -> str:
    return "-" if value is None else f"{value[0]:.2f}/{value[1]:.4f}"


def _number(value: float) -> float | str:
    """A JSON-safe number: ``"inf"`` for infinite PSNR (``json`` would write ``Infinity``, not JSON)."""
    return value if math.isfinite(value) else str(value)


def _infinite_note(results: Results) -> list[str]:
    """Why a cell reads inf: PSNR of an image equal to its target (zero error) is infinite."""
    count = sum(math.isinf(p) for columns in results.scores.values() for values in columns.values() for p, _ in values)
    if not count:
        return []
    return [f"PSNR inf: {count} score(s) of an image exactly equal to its target; every mean including one is inf"]


def skipped_lines(results: Results) -> list[str]:
    """The files left out of the table, one line each (empty when none was)."""
    if not results.skipped:
        return []
    head = f"skipped {len(results.skipped)} file(s), not in the table:"
    return [head, *(f"  {column}: {item.reason}" for column, item in results.skipped)]


def format_table(results: Results, labels: list[str], fmt: str, header: dict[str, str]) -> str:
    """The paper-style table as ``text``, ``markdown``, ``csv`` or ``json``, with the skipped files
    under it (CSV has no place for them: [`main`][dfpir.evaluate.main] prints them on standard error)."""
    rows = table_rows(results, labels)
    if fmt == "json":
        skipped = [{"column": column, "file": item.file, "reason": item.reason} for column, item in results.skipped]
        data = {"settings": header, "columns": labels, "blind_accuracy": _accuracy(results), "notes": _infinite_note(results), "skipped": skipped, "rows": {
            row: {**{lab: None if c is None else {"psnr": _number(c[0]), "ssim": _number(c[1]), "images": c[2]} for lab, c in zip(labels, cells)},
                  "average": None if avg is None else {"psnr": _number(avg[0]), "ssim": _number(avg[1])}} for row, cells, avg in rows}}
        if results.guesses:
            data["blind"] = blind_record(results)
        return json.dumps(data, indent=2, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["method", "task", "psnr", "ssim", "images"])
        for row, cells, avg in rows:
            for lab, c in zip(labels, cells):
                if c is not None:
                    writer.writerow([row, lab, f"{c[0]:.4f}", f"{c[1]:.5f}", c[2]])
            if avg is not None:
                writer.writerow([row, "average", f"{avg[0]:.4f}", f"{avg[1]:.5f}", ""])
        return buf.getvalue().rstrip("\n")
    grid = [["method", *labels, "average"]] + [[row, *map(_cell, cells), _cell(avg)] for row, cells, avg in rows]
    notes = [f"{k}: {v}" for k, v in header.items()] + [f"blind prompt accuracy {k}: {v:.1%}" for k, v in _accuracy(results).items()]
    notes += _infinite_note(results)
    skipped = skipped_lines(results)
    if fmt == "markdown":
        lines = ["| " + " | ".join(r) + " |" for r in grid]
        lines.insert(1, "|" + "---|" * len(grid[0]))
        tail = ["", skipped[0], "", *(f"- {line.strip()}" for line in skipped[1:])] if skipped else []
        blind = blind_lines(results, "markdown")
        return "\n".join([*(f"- {n}" for n in notes), "", *lines, *(["", *blind] if blind else []), *tail])
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in grid]
    return "\n".join([*notes, "PSNR (dB) / SSIM, RGB", *lines, *blind_lines(results, "text"), *skipped])


# --------------------------------------------------------------------------- the blind prompt's choices


@dataclass
class Confusion:
    """The blind prompt's choices against the true classes (rows), with their accuracy and calibration."""

    true: list[str]
    chosen: list[str]
    counts: np.ndarray  # (true, chosen) image counts
    accuracy: float
    ece: float  # expected calibration error, 10 bins

    @property
    def images(self) -> int:
        """How many guesses the matrix counts."""
        return int(self.counts.sum())


def confusion(results: Results) -> Confusion | None:
    """The confusion matrix of the guesses whose true class is known (``None`` when none is).

    Rows are the true classes in the order the columns came, columns the classifier's classes
    (and any other choice, which a classifier never makes).
    """
    known = [g for g in results.guesses if g.true is not None]
    if not known:
        return None
    true = list(dict.fromkeys(g.true for g in known))
    chosen = [*results.classes, *(c for c in dict.fromkeys(g.chosen for g in known) if c not in results.classes)]
    counts = np.zeros((len(true), len(chosen)), dtype=np.int64)
    for g in known:
        counts[true.index(g.true), chosen.index(g.chosen)] += 1
    hits = [g.chosen == g.true for g in known]
    return Confusion(true, chosen, counts, float(np.mean(hits)), expected_calibration_error([g.confidence for g in known], hits))


def blind_lines(results: Results, fmt: str) -> list[str]:
    """The confusion matrix (``text`` or ``markdown``), its accuracy and ECE, and the count of guesses
    of low confidence; empty without blind guesses."""
    if not results.guesses:
        return []
    lines = []
    c = confusion(results)
    if c is not None:
        grid = [["true \\ chosen", *c.chosen], *([t, *map(str, row)] for t, row in zip(c.true, c.counts.tolist()))]
        lines.append("blind prompt: confusion matrix (rows: true class, columns: the classifier's choice)")
        if fmt == "markdown":
            lines += ["", "| " + " | ".join(grid[0]) + " |", "|---|" + "---:|" * len(c.chosen), *("| " + " | ".join(r) + " |" for r in grid[1:]), ""]
        else:
            widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
            lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in grid]
        lines.append(f"blind prompt over {c.images} images: accuracy {c.accuracy:.1%}, expected calibration error {c.ece:.3f} (10 bins)")
    low = sum(g.low for g in results.guesses)
    lines.append(f"blind guesses below confidence {results.min_confidence:.2f}: {low} of {len(results.guesses)}")
    return lines


def blind_record(results: Results) -> dict:
    """The blind prompt's confusion matrix, accuracy, ECE and low-confidence count, for JSON."""
    c = confusion(results)
    record: dict = {"min_confidence": results.min_confidence, "low_confidence": sum(g.low for g in results.guesses),
                    "guesses": len(results.guesses)}
    if c is not None:
        record.update(classes=c.chosen, accuracy=c.accuracy, ece=c.ece, images=c.images,
                      confusion={t: dict(zip(c.chosen, row)) for t, row in zip(c.true, c.counts.tolist())})
    return record


def _accuracy(results: Results) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in results.blind_hits.items() if v}


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = CommandParser(prog="python -m dfpir.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, help="folder of degraded images (paired mode)")
    p.add_argument("--target", type=Path, help="folder of clean targets (paired mode)")
    p.add_argument("--degradation", help="true degradation of the paired folder, or auto; omit it for an --input of per-degradation sub-folders")
    p.add_argument("--name-rule", help="input stem -> target stem, 'PATTERN=>REPLACEMENT'")
    p.add_argument("--benchmark", choices=list(COLUMNS), help="a paper test set layout under --root")
    p.add_argument("--root", type=Path, help="folder holding denoise/, derain/, dehaze/ (deblur/, lowlight/)")
    p.add_argument("--protocol", choices=["full", "official"], default="full")
    p.add_argument("--prompt", choices=["oracle", "blind", "both"], default="oracle", help="true prompts, the classifier's, or both")
    p.add_argument("--baseline", action="store_true", help="add a classical baseline row (noise: BM3D or non-local means)")
    p.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE, metavar="P",
                   help=f"blind: count the guesses below this confidence (default {MIN_CONFIDENCE})")
    add_auto_rule_option(p)
    p.add_argument("--weights", type=Path, help="dfpir checkpoint (default: the shipped demo weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    p.add_argument("--tile", type=int, help="tile side (0: never tile; default: from the memory budget)")
    p.add_argument("--memory-gb", type=float, help="activation memory budget in GiB")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of each set")
    p.add_argument("--format", choices=["text", "markdown", "csv", "json"], default="text")
    p.add_argument("-o", "--output", type=Path, help="also write the table to this file")
    return p


def check_output_file(path: Path) -> None:
    """Refuse an ``-o`` that can never be written now, not after the (slow) evaluation."""
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give a file name, e.g. -o {path / 'table.txt'}")
    folder = next((p for p in path.parents if p.exists()), Path("."))  # missing folders are created
    if not folder.is_dir():
        raise UserError(f"-o {path}: {folder} is a file, not a folder; choose another -o")
    check_output_folder(path.parent)


def write_output(path: Path, text: str) -> None:
    """Write the table atomically; a late failure (disk full) still gets one line, not errno text."""
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))
    except UserError as exc:
        raise UserError(f"-o {path}: {exc}; the table is printed above") from None


def columns_from_args(args: argparse.Namespace) -> list[Column]:
    """Paired or benchmark columns, with one-line errors for incomplete arguments."""
    for option, path in (("--input", args.input), ("--target", args.target), ("--root", args.root)):
        if path is not None and path.is_file():  # data.list_images would say "folder not found"
            raise UserError(f"{path}: is a file, not a folder; {option} takes a folder of images")
    if args.benchmark:
        if args.input or args.target:
            raise UserError("use either --benchmark with --root, or --input/--target, not both")
        if args.root is None:
            raise UserError(f"--benchmark {args.benchmark} needs --root DIR")
        return benchmark_columns(args.benchmark, args.root, args.protocol, args.limit)
    if args.input and args.target and not args.degradation:
        folders = degradation_folders(args.input)
        if folders:  # as written by python -m dfpir.data degrade: one column per degradation
            return [paired_column(f, args.target, f.name, args.name_rule, args.protocol, args.limit) for f in folders]
    if not (args.input and args.target and args.degradation):
        raise UserError("paired mode needs --input DIR --target DIR --degradation NAME (or an --input holding one "
                        "sub-folder per degradation, from python -m dfpir.data degrade; or --benchmark ... --root DIR)")
    return [paired_column(args.input, args.target, args.degradation, args.name_rule, args.protocol, args.limit)]


def degradation_folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` named after a registered degradation, in the registry's order,
    then ``clean`` (undegraded copies, from ``python -m dfpir.data degrade --with-clean``)."""
    return [folder / name for name in [*DEGRADATIONS, CLEAN] if (folder / name).is_dir()]


def prompt_kinds(args: argparse.Namespace, restorer: Restorer) -> list[str]:
    """Which prompt rows to compute, checked against the weights."""
    kinds = {"oracle": ["oracle"], "blind": ["blind"], "both": ["oracle", "blind"]}[args.prompt]
    if args.degradation == "auto":
        kinds = ["blind"]
    if "blind" in kinds and args.degradation != "auto" and restorer.classifier is None:
        raise UserError(f"{restorer.weights}: --prompt {args.prompt} needs a degradation classifier, and these weights have none; "
                        "use --prompt oracle (each folder's own degradation)")
    if "blind" in kinds:
        restorer.check_spec("auto")
    if "oracle" in kinds and args.degradation and args.degradation != CLEAN:
        restorer.check_spec(args.degradation)
    return kinds


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the table; 0 on success, 1 when files were skipped, 2 on a usage error."""
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    if args.output:
        check_output_file(args.output)
    restorer = Restorer(args.weights, args.device, args.precision, args.tile, budget_bytes(args.memory_gb), args.min_confidence,
                        args.auto_rule)
    kinds = prompt_kinds(args, restorer)
    columns = columns_from_args(args)
    if "oracle" in kinds:
        for column in columns:
            if column.degradation and column.degradation != CLEAN:
                restorer.check_spec(column.degradation)  # a sub-folder's name must be a prompt of the weights
    results = Results(min_confidence=args.min_confidence,
                      classes=list(restorer.classifier.classes) if "blind" in kinds else [],
                      clean_columns={c.label for c in columns if c.degradation == CLEAN})
    for column in columns:
        evaluate_column(restorer, column, kinds, args.baseline, results)
    header = {"weights": str(restorer.weights), "protocol": args.protocol}
    if args.benchmark:  # only the benchmarks synthesise noise; paired folders hold their own inputs
        header["noise"] = "np.random.seed(0), sigma 15/25/50 in turn"
    header["tiled restorations"] = f"{results.tiled} (0 means every image was restored whole)"
    text = format_table(results, [c.label for c in columns], args.format, header)
    print(text)
    if args.format == "csv" and (results.skipped or results.guesses):  # CSV has no place for them
        print("\n".join([*blind_lines(results, "text"), *skipped_lines(results)]), file=sys.stderr)
    if args.output:
        write_output(args.output, text)
    return SKIPPED_EXIT if results.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
