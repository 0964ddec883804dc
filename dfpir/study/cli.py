"""The command line, ``python -m dfpir.study``::

    python -m dfpir.study run --heldout /usr/share/backgrounds/mate/nature [--device cuda]
    python -m dfpir.study run --heldout /usr/share/backgrounds/mate/nature --arms dfpir,restormer --seeds 0,1
    python -m dfpir.study report

``run`` trains, measures and records every run of the grid (``--grid``, default ``default``; or
only those of ``--arms`` and ``--seeds``: the pilot) not yet recorded (a stopped study
continues where it stopped; see [`runner`][dfpir.study.runner]); checkpoints go under
``runs/study/GRID`` (git-ignored), one JSON file per run under ``results/study/GRID``.
``report`` turns those JSON files alone into ``results/study/GRID/report/`` ([`report`][dfpir.study.report]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CommandParser, check_at_least, cli_main
from ..train.config import validate
from ..train.loop import pick_device, plain_warnings
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
    g = sub.add_parser("report", help="tables and plots from the result files alone")
    g.add_argument("--grid", default="default", help=f"whose results: {grids} (default: default)")
    g.add_argument("--results", metavar="DIR", help="result files' folder (default results/study/GRID)")
    g.add_argument("--out", metavar="DIR", help="the report's folder (default RESULTS/report)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.study run|report ...``; returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
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
    with plain_warnings():
        files = run_grid(grid, heldout, Path(args.runs or f"runs/study/{args.grid}"), results, args.device, args.threads,
                         args.arms, args.seeds)
    print(f"{len(files)} result files in {results}; the report: python -m dfpir.study report --grid {args.grid}"
          + (f" --results {results}" if args.results else ""))
    return 0
