"""``python -m dfpir.data``: check data folders, benchmark the data pipeline, write test pairs, build corpora.

Command line::

    python -m dfpir.data check ROOT --layout rain100l --split train
    python -m dfpir.data bench
    python -m dfpir.data degrade CLEAN -o OUT    # test pairs from your own photos (dfpir.data.pairs)
    python -m dfpir.data corpus -o data/corpus   # training photos from installed packages + dead leaves (dfpir.data.corpus)
    python -m dfpir.data heldout -o data/heldout # the held-out evaluation photos (mate-backgrounds)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..degradations import synthetic_names
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..model.config import PRESETS
from .bench import bench
from .checker import check, format_check
from .corpus import DEFAULT_MAX_SIDE, PHOTOS_FOLDER, BuildReport, build_corpus, build_heldout
from .layouts import LAYOUTS
from .pairs import make_pairs
from .photos import list_images


def _parser() -> CommandParser:
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
    b.add_argument("--photos", type=Path, metavar="DIR", help="also time items read from this folder's image files, decoded afresh and kept in memory")
    g = sub.add_parser("degrade", help="write degraded copies of your clean images, to evaluate on (OUT/<degradation>/<name>.png)")
    g.add_argument("inputs", nargs="+", metavar="CLEAN", help="clean image files or folders of them (not recursive)")
    g.add_argument("-o", "--outdir", type=Path, required=True, help="output folder; one sub-folder per degradation")
    g.add_argument("--degradations", nargs="+", default=synthetic_names(), help="default: every synthetic degradation (the seven)")
    g.add_argument("--seed", type=int, default=0, help="base seed (each photo and degradation has its own stream)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--with-clean", action="store_true", help="also write each photo as it is to OUT/clean/ (the blind mode's clean class)")
    k = sub.add_parser("corpus", help="a training corpus: the curated photos of installed Debian and PyPI packages, plus dead-leaves images")
    k.add_argument("-o", "--outdir", type=Path, required=True, help="output folder (photos/, deadleaves/, manifest.json, LICENSES.md)")
    k.add_argument("--dead-leaves", type=int, default=40, metavar="N", help="dead-leaves images to generate (default 40; 0: none)")
    k.add_argument("--dead-leaves-size", type=int, default=512, metavar="PX", help="their side in pixels (default 512, at most --max-side)")
    k.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX", help="longer side of every image after downscaling (default %(default)s)")
    k.add_argument("--seed", type=int, default=0, help="seed of the dead-leaves images")
    k.add_argument("--require-all", action="store_true", help="fail when a curated package is not installed, instead of building without it")
    h = sub.add_parser("heldout", help="the held-out evaluation photos: mate-backgrounds' nature photos, never trained on")
    h.add_argument("-o", "--outdir", type=Path, required=True, help="output folder (photos/, manifest.json, LICENSES.md)")
    h.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX", help="longer side of every image after downscaling (default %(default)s)")
    return parser


def _check(args: argparse.Namespace) -> int:
    if args.limit is not None:
        check_at_least("--limit", args.limit, 1, "files read per task")
    check_at_least("--patch-size", args.patch_size, 1)
    if args.root is not None and not Path(args.root).is_dir():
        raise UserError(f"{args.root}: {'is a file, not a folder' if Path(args.root).exists() else 'folder not found'}")
    rows = check(args.layout, args.root, args.split, args.patch_size, args.limit, degradation=args.degradation,
                 name_rule=args.name_rule, input_dir=args.input_dir, target_dir=args.target_dir)
    print(format_check(rows))
    return 0 if all(r.usable for r in rows) else 1


def _bench(args: argparse.Namespace) -> int:
    # Every value is checked before any timing runs: a typo must not cost a minute of benchmarking.
    for name, value in (("--size", args.size), ("--batch", args.batch), ("--repeats", args.repeats)):
        check_at_least(name, value, 1)
    if args.threads is not None:
        check_at_least("--threads", args.threads, 1)
    if args.workers:
        check_at_least("--workers", min(args.workers), 0)
    if args.model != "none" and args.model not in PRESETS:
        raise UserError(f"unknown --model {args.model!r}; choose one of: {', '.join(PRESETS)}, none")
    if args.photos is not None and (not args.photos.is_dir() or not list_images(args.photos, recursive=True)):
        raise UserError(f"{args.photos}: not a folder with image files; pass a folder of clean photos (as data.root of the clean layout)")
    if args.threads:
        torch.set_num_threads(args.threads)
    bench(args.size, args.batch, args.repeats, args.workers, None if args.model == "none" else args.model, photos=args.photos)
    return 0


def _degrade(args: argparse.Namespace) -> int:
    sources = [p for spec in args.inputs for p in (list_images(spec) if Path(spec).is_dir() else [Path(spec)])]
    missing = [p for p in sources if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no such image file or folder")
    count = make_pairs(sources, args.degradations, args.outdir, args.seed, args.overwrite, args.with_clean)
    clean = args.inputs[0] if len(args.inputs) == 1 and Path(args.inputs[0]).is_dir() else "CLEAN"
    print(f"wrote {count} images to {args.outdir}/<degradation>/; score a model on all of them with: "
          f"python -m dfpir.evaluate --input {args.outdir} --target {clean}")
    return 0


def _check_max_side(value: int) -> None:
    check_at_least("--max-side", value, 128, "the default training patch")


def _corpus(args: argparse.Namespace) -> int:
    _check_max_side(args.max_side)
    check_at_least("--dead-leaves", args.dead_leaves, 0)
    check_at_least("--dead-leaves-size", args.dead_leaves_size, 16)
    report = build_corpus(args.outdir, dead_leaves=args.dead_leaves, dead_leaves_size=args.dead_leaves_size,
                          max_side=args.max_side, seed=args.seed, require_all=args.require_all)
    print(format_report(report))
    print(f"train on it: python -m dfpir.train data.layout=clean data.root={args.outdir} data.holdout=10")
    return 0


def _heldout(args: argparse.Namespace) -> int:
    _check_max_side(args.max_side)
    report = build_heldout(args.outdir, max_side=args.max_side)
    print(format_report(report))
    photos = args.outdir / PHOTOS_FOLDER
    print(f"evaluate on it: python -m dfpir.data degrade {photos} -o {args.outdir / 'degraded'}, "
          f"then python -m dfpir.evaluate --input {args.outdir / 'degraded'} --target {photos}")
    return 0


def format_report(report: BuildReport) -> str:
    """The summary a corpus command prints: images per source, what was rewritten, what is missing."""
    counts = report.counts()
    photos = sum(n for source, n in counts.items() if source != "dead leaves")
    by_source = ", ".join(f"{source} {n}" for source, n in counts.items() if source != "dead leaves")
    leaves = f", {counts['dead leaves']} dead-leaves images" if "dead leaves" in counts else ""
    lines = [f"{report.out}: {photos} photos ({by_source or 'none'}){leaves}; "
             f"{report.written} written, {report.unchanged} unchanged, {report.removed} removed"]
    lines += [f"skipped {original}: {reason}" for original, reason in report.skipped]
    for m in report.missing:
        what = "not installed" if m.whole else f"{len(m.files)} files not found ({', '.join(m.files)}): another version?"
        lines.append(f"missing {m.package} ({len(m.files)} photos): {what}; install with: {m.install}")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.data {check,bench,degrade,corpus,heldout}``; returns the exit code (1: ``check`` found unusable data)."""
    args = _parser().parse_args(argv)
    commands = {"check": _check, "bench": _bench, "degrade": _degrade, "corpus": _corpus, "heldout": _heldout}
    return commands[args.command](args)
