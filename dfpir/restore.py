"""Restore photographs: ``python -m dfpir.restore INPUT... -o OUTDIR --degradation NAME``.

Inputs are files, folders (their images, not recursive) and glob patterns. Each output is named
after its input (plus ``--suffix``) in OUTDIR and keeps the input's format, bit depth, alpha,
grey-ness, colour profile and EXIF (see [`dfpir.images`][dfpir.images]); an input named without an image
suffix this tool writes (``scan``, ``a.gif``) is written as PNG (``scan.png``, ``a.png``), which
holds every depth, alpha and grey-ness it reads.
Existing files are never replaced unless ``--overwrite`` is given, and every write is atomic, so
an interrupted run leaves no partial file (and a run that writes nothing leaves no new folder).
A bad input is reported on one line and skipped; the exit code is 1 when any input failed (even
all of them), 2 for a usage error or when no input names an image (nothing restored). Progress
is counted in images and, for a tiled image, in tiles ([`dfpir.progress`][dfpir.progress]).

``--degradation`` is a name the weights know (``noise15 noise25 noise50 rain haze blur
lowlight``), ``auto`` (the classifier stored in the weights picks per image, and the choice and
its confidence are printed), or free text. Free text is embedded with the built-in hashing
encoder, which matches words, not meaning (see [`dfpir.inference.runner`][dfpir.inference.runner]).
Under ``auto`` a photo the classifier finds clean is written as it was read (not restored), and a
guess below ``--min-confidence`` is marked low in its log line. ``--auto-rule`` says what ``auto``
does with the guess ([`dfpir.inference.decision`][dfpir.inference.decision]): ``likely`` restores
with it; ``gain`` (the default for weights that carry a gain matrix) takes the action of the
highest expected gain, which may be another prompt or leaving the photo as it is, and the log line
says so. A PNG output records the choice in text chunks (``dfpir:degradation``,
``dfpir:confidence``, ``dfpir:low-confidence``; ``dfpir:guess`` when the gain rule overruled the
guess, ``dfpir:expected-gain`` under the gain rule).

Large images are restored by overlapping tiles when the whole image would exceed the memory
budget (``--memory-gb``) or when ``--tile N`` is given; see [`dfpir.inference.tiling`][dfpir.inference.tiling] for how tiled
and whole-image results differ.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .errors import USAGE_ERROR, CommandParser, UserError, cli_main
from .files import check_output_folder
from .images import SUFFIXES, check_writable, is_image_path, read_image, write_image
from .inference.decision import AUTO_RULES
from .inference.runner import MIN_CONFIDENCE, PRECISIONS, Prompt, Restorer, budget_bytes
from .progress import TileProgress, progress


@dataclass
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


@dataclass
class Report:
    """What happened to every input: done, failed (with reasons)."""

    done: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unsure: list[Path] = field(default_factory=list)  # restored from an auto guess of low confidence
    kept: list[Path] = field(default_factory=list)  # found clean by auto: written as they were read

    def fail(self, what: str | Path, reason: str) -> None:
        """Record and print a one-line failure."""
        reason = (reason.strip().splitlines() or ["unknown error"])[0]
        self.failed.append((str(what), reason))
        tqdm.write(f"error: {reason}", file=sys.stderr)


def add_restorer_options(p: argparse.ArgumentParser) -> None:
    """The options of a [`Restorer`][dfpir.inference.runner.Restorer] (weights, device, precision,
    tiling, memory, the auto confidence threshold and rule), shared by ``restore`` and ``dfpir.app``."""
    p.add_argument("--weights", type=Path, help="dfpir checkpoint (default: the shipped demo weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    p.add_argument("--tile", type=int, help="tile side in pixels (0: never tile; default: from the memory budget)")
    p.add_argument("--memory-gb", type=float, help="activation memory budget in GiB (default 1 on CPU)")
    p.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE, metavar="P",
                   help=f"with auto: report a guess below this confidence as low (default {MIN_CONFIDENCE})")
    add_auto_rule_option(p)


def add_auto_rule_option(p: argparse.ArgumentParser) -> None:
    """``--auto-rule``: what ``auto`` does with the classifier's guess (restore, evaluate, the app, the held-out bench)."""
    p.add_argument("--auto-rule", choices=list(AUTO_RULES),
                   help="with auto: restore with the likeliest class (likely) or take the action of the highest expected "
                        "gain (gain); default gain when the weights carry a gain matrix, else likely")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = CommandParser(prog="python -m dfpir.restore", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--outdir", required=True, type=Path, help="folder for the restored images")
    p.add_argument("--degradation", required=True, help="degradation name, 'auto', or free text")
    add_restorer_options(p)
    p.add_argument("--suffix", default="", help="added to each output's file stem, e.g. _restored")
    p.add_argument("--overwrite", action="store_true", help="replace existing files, inputs included")
    return p


def expand_inputs(specs: list[str], report: Report) -> list[Path]:
    """Files named by ``specs`` (files, folders, globs), in order, without duplicates.

    Specs that name nothing usable are recorded in ``report`` as failures.
    """
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p))
            if not images:
                report.fail(spec, f"{spec}: no images in this folder ({', '.join(SUFFIXES)})")
            found += images
        elif path.exists():
            found.append(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec) if Path(m).is_file() and is_image_path(m))
            if not matches:
                report.fail(spec, f"{spec}: the pattern matches no image")
            found += matches
        else:
            report.fail(spec, f"{spec}: no such file or folder")
    unique = {p.resolve(): p for p in found}
    return list(unique.values())


def check_suffix(suffix: str) -> None:
    """Refuse a ``--suffix`` that could put an output outside OUTDIR (or in a new sub-folder)."""
    if any(bad in suffix for bad in ("/", "\\", "..", "\0")):
        raise UserError(f"--suffix {suffix!r} must not contain a path separator or '..' (it is added to file names); use e.g. _restored")


def check_outdir(outdir: Path) -> None:
    """Prove ``outdir`` writable (one-line error otherwise). It is created by the first write, so
    a run that writes nothing leaves no new folder."""
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"{outdir} is a file, not a folder; give -o a folder (it is created if missing)")
    check_output_folder(outdir)


def output_name(source: Path, suffix: str) -> str:
    """``source``'s name plus ``suffix``, keeping its format, or as PNG when we cannot write that."""
    ext = source.suffix if is_image_path(source) else ".png"
    return f"{source.stem}{suffix}{ext}"


def plan_jobs(sources: list[Path], outdir: Path, suffix: str, overwrite: bool, report: Report) -> list[Job]:
    """Pair each source with its output path; refuse clashes, folders and (without ``overwrite``) existing files."""
    jobs, taken = [], {}
    for src in sources:
        target = outdir / output_name(src, suffix)
        key = target.resolve()
        if target.is_dir():  # --overwrite cannot help: a file never replaces a folder
            report.fail(src, f"{src}: output {target} is a folder; remove it or choose another -o/--suffix")
        elif key in taken:
            report.fail(src, f"{src}: output {target} would also be written for {taken[key]}; rename one of them")
        elif target.exists() and not overwrite:
            what = "is the input itself" if key == src.resolve() else "already exists"
            report.fail(src, f"{src}: output {target} {what}; pass --overwrite or another -o/--suffix")
        else:
            taken[key] = src
            jobs.append(Job(src, target))
    return jobs


def restore_one(restorer: Restorer, job: Job, degradation: str) -> tuple[str, Prompt]:
    """Read, restore and write one image; returns a short note for the log and the prompt used."""
    image = read_image(job.source)
    try:
        check_writable(job.target, image)  # before the slow part: e.g. 16 bits in a file named .bmp
    except ValueError as exc:
        raise UserError(f"{job.source}: cannot write {_drop_prefix(str(exc), job.target)}") from None
    prompt = restorer.prompt(degradation, image.rgb)
    with TileProgress(job.source.name) as tiles:  # a tiled photo can take minutes: show its tiles
        restored, plan = restorer.restore(image.rgb, prompt, progress=tiles)
    try:
        write_image(job.target, image.with_rgb(restored), text=prompt.text())
    except UserError as exc:
        if job.target.is_dir():
            raise UserError(f"{job.source}: output {job.target} is a folder; remove it or choose another -o/--suffix") from None
        raise UserError(f"{job.source}: {exc}") from None
    notes = [prompt.label]
    if job.target.suffix != job.source.suffix:
        why = f"restore does not write {job.source.suffix}" if job.source.suffix else "the input has no suffix"
        notes.append(f"written as PNG: {why}")
    if prompt.label.startswith("text:"):
        name, cos = restorer.nearest_name(prompt.embedding)
        notes.append(f"hashing encoder, not semantic; nearest known prompt {name} at cosine {cos:.2f}")
    if prompt.confidence is not None:
        notes.append(prompt.note(restorer.min_confidence))
    if plan is not None:
        notes.append(f"{plan.count} tiles of {plan.tile}")
    return ", ".join(notes), prompt


def _drop_prefix(message: str, path: Path) -> str:
    """``"<path>: reason"`` -> ``"<path> (reason)"``, so a message naming the input does not chain paths."""
    head = f"{path}: "
    return f"{path} ({message[len(head):]})" if message.startswith(head) else f"{path} ({message})"


def is_input_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is about one input (bad file, full disk, out of memory), so the rest can go on.

    Anything else, such as a ``TypeError`` or a ``RuntimeError`` about shapes from our own code, is
    a bug: it must stop the run with its traceback, not become one "failed" line per image.
    """
    if isinstance(exc, (UserError, OSError, MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    message = str(exc).lower()  # the CPU allocator's failure is a plain RuntimeError
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def run_jobs(restorer: Restorer, jobs: list[Job], degradation: str, report: Report) -> None:
    """Restore every job under a progress bar, recording failures and moving on."""
    with progress(len(jobs), "restoring", "image", summary=False) as bar:
        for job in jobs:
            try:
                note, prompt = restore_one(restorer, job, degradation)
            except Exception as exc:  # noqa: BLE001 - sorted by is_input_failure; bugs are raised again
                if not is_input_failure(exc):
                    raise
                report.fail(job.source, str(exc) if str(exc).startswith(str(job.source)) else f"{job.source}: {exc}")
            else:
                report.done.append(job.target)
                if prompt.low_confidence:
                    report.unsure.append(job.target)
                if prompt.clean:
                    report.kept.append(job.target)
                tqdm.write(f"{job.source} -> {job.target} ({note})")
            bar.update(1)


def summary(report: Report, outdir: Path, seconds: float) -> str:
    """The closing line."""
    total = len(report.done) + len(report.failed)
    line = f"restored {len(report.done)} of {total} inputs into {outdir} in {seconds:.1f} s"
    if report.kept:
        line += f"; {len(report.kept)} found clean and written as they were"
    if report.unsure:
        line += (f"; {len(report.unsure)} by a guess of low confidence (check them, or name the degradation "
                 "with --degradation)")
    return line + (f"; {len(report.failed)} failed (see the errors above)" if report.failed else "")


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 when every input was restored, 1 when some failed, 2 on usage errors."""
    args = build_parser().parse_args(argv)
    check_suffix(args.suffix)
    restorer = Restorer(args.weights, args.device, args.precision, args.tile, budget_bytes(args.memory_gb), args.min_confidence,
                        args.auto_rule)
    restorer.check_spec(args.degradation)
    report = Report()
    sources = expand_inputs(args.inputs, report)
    if not sources:
        return USAGE_ERROR  # every input failed, each already reported on its own line
    check_outdir(args.outdir)
    jobs = plan_jobs(sources, args.outdir, args.suffix, args.overwrite, report)
    start = time.perf_counter()
    run_jobs(restorer, jobs, args.degradation, report)
    print(summary(report, args.outdir, time.perf_counter() - start))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
