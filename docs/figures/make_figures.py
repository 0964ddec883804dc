"""Draw the site's figures into ``docs/figures/``: ``python docs/figures/make_figures.py [--measure]``.

- ``network.svg``: the whole network, where the four DGPBs sit and what feeds them;
- ``dgpb.svg``: one DGPB with its tensor shapes;
- ``demo_psnr.svg`` and ``blur_bound.svg``: the results page's plots, from ``data/*.json``.

``--measure`` first reruns the commands behind ``data/*.json`` (see ``results_plots.py``; 4 minutes
with one thread on a 2-core VM); without it nothing but drawing happens (a few seconds, no model runs).
The output is deterministic (no dates, fixed ids, text drawn as paths), so
``tests/test_figures.py`` can check that the committed files are what this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # dfpir and the sibling modules, however the script is started

import architecture  # noqa: E402
import results_plots  # noqa: E402

DATA = HERE / "data"


def save(fig: Figure, path: Path) -> None:
    """Write an SVG that is byte-identical on every run: no date, fixed ids, text as paths."""
    with matplotlib.rc_context({"svg.hashsalt": "dfpir", "svg.fonttype": "path"}):
        fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def make_figures(out: Path = HERE, data: Path = DATA) -> list[Path]:
    """Draw every figure into ``out`` (results plots from ``data``); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "network.svg": architecture.network_figure(),
        "dgpb.svg": architecture.dgpb_figure(),
        "demo_psnr.svg": results_plots.demo_figure(results_plots.read(data / "demo.json")),
        "blur_bound.svg": results_plots.blur_bound_figure(results_plots.read(data / "blur_bound.json")),
    }
    for name, fig in figures.items():
        save(fig, out / name)
    return [out / name for name in figures]


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code."""
    p = argparse.ArgumentParser(prog="python docs/figures/make_figures.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--measure", action="store_true", help="rerun the commands behind data/*.json first (minutes)")
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: docs/figures)")
    args = p.parse_args(argv)
    if args.measure:
        results_plots.measure(DATA, ROOT)
    for path in make_figures(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
