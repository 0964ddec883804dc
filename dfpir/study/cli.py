"""The command line, ``python -m dfpir.study``::

    python -m dfpir.study run --heldout /usr/share/backgrounds/mate/nature [--device cuda]
    python -m dfpir.study run --heldout /usr/share/backgrounds/mate/nature --arms dfpir,restormer --seeds 0,1
    python -m dfpir.study run --heldout /usr/share/backgrounds/mate/nature --device cuda --shard 2/8
    python -m dfpir.study report
    python -m dfpir.study blur-recipes --heldout /usr/share/backgrounds/mate/nature [--corpus data/corpus]
    python -m dfpir.study blur-report

``run`` trains, measures and records every run of the grid (``--grid``, default ``default``; or
only those of ``--arms`` and ``--seeds``: the pilot) not yet recorded (a stopped study
continues where it stopped; see [`runner`][dfpir.study.runner]); checkpoints go under
``runs/study/GRID`` (git-ignored), one JSON file per run under ``results/study/GRID``.
``report`` turns those JSON files alone into ``results/study/GRID/report/`` ([`report`][dfpir.study.report]);
``run`` rewrites that report after each run it records (not with ``--shard K/N``, which makes
this process run every N-th run of the grid from the K-th, so that N processes share a GPU; then
``report`` makes the report once they are all done).
``blur-recipes`` trains and scores the motion-blur recipes of [`recipes`][dfpir.study.recipes] not yet
recorded under ``results/recipes/blur`` (checkpoints under ``runs/recipes/blur``); ``blur-report``
writes their ``report.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..train.config import validate
from ..train.loop import pick_device, plain_warnings
from . import recipes
from .grid import GRIDS, get_grid
from .measure import heldout_set
from .report import write_report
from .runner import run_grid


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be whole numbers separated by commas, got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        shard = (0, 0)
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"takes K/N with 1 <= K <= N (this process's share of N), got {text!r}")
    return shard


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m dfpir.study``."""
    p = CommandParser(prog="python -m dfpir.study", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    grids = ", ".join(GRIDS)
    r = sub.add_parser("run", help="train, measure and record every run of a grid not yet recorded")
    r.add_argument("--grid", default="default", help=f"the declared grid: {grids} (default: default)")
    r.add_argument("--heldout", required=True, metavar="DIR",
                   help="clean photos no arm trains on (e.g. /usr/share/backgrounds/mate/nature from mate-backgrounds)")
    r.add_argument("--arms", type=_names, metavar="A,B", help="only these arms of the grid (e.g. the pilot's dfpir,restormer)")
    r.add_argument("--seeds", type=_seeds, metavar="S,T", help="only these seeds of the grid")
    r.add_argument("--device", default="auto", help="auto (the default), cpu, cuda or cuda:N")
    r.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    r.add_argument("--runs", metavar="DIR", help="checkpoints' folder (default runs/study/GRID)")
    r.add_argument("--results", metavar="DIR", help="result files' folder (default results/study/GRID)")
    r.add_argument("--shard", type=_shard, default=(1, 1), metavar="K/N",
                   help="only every N-th run, from the K-th: N processes with K = 1..N share the grid "
                        "(then run `report` when all are done)")
    g = sub.add_parser("report", help="tables and plots from the result files alone")
    g.add_argument("--grid", default="default", help=f"whose results: {grids} (default: default)")
    g.add_argument("--results", metavar="DIR", help="result files' folder (default results/study/GRID)")
    g.add_argument("--out", metavar="DIR", help="the report's folder (default RESULTS/report)")
    b = sub.add_parser("blur-recipes", help="train and score the motion-blur recipes not yet recorded")
    b.add_argument("--heldout", required=True, metavar="DIR", help="clean photos nothing trains on (as for run)")
    b.add_argument("--corpus", default="data/corpus", metavar="DIR",
                   help="the training photos (default data/corpus, from `python -m dfpir.data corpus -o data/corpus`)")
    b.add_argument("--variants", type=_names, metavar="A,B",
                   help=f"only these recipes: {', '.join(v.name for v in recipes.VARIANTS)} (default: all)")
    b.add_argument("--seeds", type=_seeds, default=list(recipes.SEEDS), metavar="S,T", help="default 0,1,2")
    b.add_argument("--device", default="auto", help="auto (the default), cpu, cuda or cuda:N")
    b.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    b.add_argument("--runs", default="runs/recipes/blur", metavar="DIR", help="checkpoints' folder (default runs/recipes/blur)")
    b.add_argument("--results", default=BLUR_RESULTS, metavar="DIR", help=f"result files' folder (default {BLUR_RESULTS})")
    br = sub.add_parser("blur-report", help="the blur recipes' report.md from their result files")
    br.add_argument("--results", default=BLUR_RESULTS, metavar="DIR", help=f"result files' folder (default {BLUR_RESULTS})")
    return p


BLUR_RESULTS = "results/recipes/blur"


def blur_recipes(args: argparse.Namespace) -> int:
    """The ``blur-recipes`` command."""
    check_at_least("--threads", args.threads, 0, "0: torch's default")
    if not (Path(args.corpus) / "manifest.json").is_file():
        raise UserError(f"--corpus {args.corpus}: no corpus there; make it with `python -m dfpir.data corpus -o {args.corpus}`")
    for name in args.variants or ():
        recipes.variant(name)
    pick_device(args.device)
    with plain_warnings():
        files = recipes.run_all(args.corpus, args.heldout, Path(args.runs), Path(args.results), args.variants,
                                args.seeds, args.device, args.threads)
    print(f"{len(files)} result files in {args.results}; the report: python -m dfpir.study blur-report")
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.study run|report ...``; returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "blur-recipes":
        return blur_recipes(args)
    if args.command == "blur-report":
        print(recipes.write_report(Path(args.results)))
        return 0
    results = Path(args.results or f"results/study/{args.grid}")
    if args.command == "report":
        for path in write_report(results, Path(args.out) if args.out else results / "report"):
            print(path)
        return 0
    grid = get_grid(args.grid)
    check_at_least("--threads", args.threads, 0, "0: torch's default")
    cfg = grid.base_config()
    cfg.train.device = args.device
    validate(cfg)
    pick_device(args.device)  # a bad or missing --device fails before the held-out photos are read
    grid.runs(args.arms, args.seeds)  # unknown arms or seeds fail before any work
    heldout = heldout_set(args.heldout, grid.eval_crop, grid.eval_images, grid.eval_side)
    # Shards would rewrite one report from different sets of files, the last writer winning: the
    # report is made once all are done instead.
    on_recorded = (lambda: write_report(results, results / "report")) if args.shard == (1, 1) else None
    with plain_warnings():
        files = run_grid(grid, heldout, Path(args.runs or f"runs/study/{args.grid}"), results, args.device, args.threads,
                         args.arms, args.seeds, on_recorded=on_recorded, shard=args.shard)
    print(f"{len(files)} result files in {results}; the report: python -m dfpir.study report --grid {args.grid}"
          + (f" --results {results}" if args.results else ""))
    return 0
