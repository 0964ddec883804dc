"""The results page's plots, drawn from numbers that the repository's own commands compute.

Each plot reads a JSON file in ``docs/figures/data/`` that ``measure`` writes by running the
command the results page quotes, through the same functions the command line calls:

- ``demo.json``: ``python -m dfpir.demo`` (the shipped weights on the built-in pictures' right-hand strips);
- ``blur_bound.json``: ``python -m dfpir.analysis blur-bound --data data/heldout/photos --weights
  dfpir/weights/demo.safetensors`` (crops of the held-out photos, which ``make corpus`` installs).

Each file records its command and the versions it ran with, so a plot never shows a number
that no command produced. Drawing needs only the JSON files (no model runs).
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

DEMO_COMMAND = "python -m dfpir.demo"
BLUR_WEIGHTS = "dfpir/weights/demo.safetensors"
BLUR_DATA = "data/heldout/photos"  # photos of another source than the training corpus
BLUR_COMMAND = f"python -m dfpir.analysis blur-bound --data {BLUR_DATA} --weights {BLUR_WEIGHTS}"
INPUT_COLOUR, RESTORED_COLOUR, BOUND_COLOUR = "#9e9e9e", "#3f51b5", "#e65100"


def _provenance(command: str) -> dict[str, Any]:
    # what a reader needs to rerun the numbers and to judge whether a rerun should match them
    return {"command": command, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": torch.get_num_threads()}


def measure(data: Path, root: Path) -> None:
    """Run the two commands and write ``demo.json`` and ``blur_bound.json`` into ``data``.

    ``root`` is the repository (the commands' paths are relative to it). It took 4 minutes
    with one thread on a shared 2-core VM, most of it in the blur bound's 2048 Wiener kernels.
    """
    # imported here, not above: they load scikit-image and the models (seconds), and drawing needs neither
    from dfpir.analysis.cli import build_parser, run_blur_bound
    from dfpir.demo import run_demo

    if not (root / BLUR_DATA).is_dir():
        raise SystemExit(f"{root / BLUR_DATA}: no held-out photos; make them with `make corpus` first")
    data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        demo = run_demo(None, Path(tmp) / "demo")
    _write(data / "demo.json", {**_provenance(DEMO_COMMAND), "results": demo})
    args = build_parser().parse_args(["blur-bound", "--data", str(root / BLUR_DATA), "--weights", str(root / BLUR_WEIGHTS)])
    bound = run_blur_bound(args)
    bound["models"] = {BLUR_WEIGHTS: value for value in bound["models"].values()}  # a relative, portable name
    _write(data / "blur_bound.json", {**_provenance(BLUR_COMMAND), "count": args.count, "patch": args.patch,
                                      "results": bound})


def _write(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def read(path: Path) -> dict[str, Any]:
    """A record written by ``measure``."""
    return json.loads(path.read_text(encoding="utf-8"))


def demo_figure(record: dict[str, Any]) -> Figure:
    """PSNR of the degraded input and of the restored image, per degradation (the demo's table)."""
    results = record["results"]
    names = list(results)
    before = np.array([results[n]["input_psnr"] for n in names])
    after = np.array([results[n]["psnr"] for n in names])
    fig, ax = plt.subplots(figsize=(8.0, 3.9))
    y = np.arange(len(names))[::-1]  # first degradation on top, as in the table
    ax.hlines(y, before, after, color="#c5cae9", linewidth=5, zorder=1)
    ax.scatter(before, y, s=60, color=INPUT_COLOUR, zorder=2, label="degraded input")
    ax.scatter(after, y, s=60, color=RESTORED_COLOUR, zorder=3, label="restored")
    for yi, b, a in zip(y, before, after):
        ax.annotate(f"{a - b:+.2f} dB", (max(a, b), yi), xytext=(8, 0), textcoords="offset points",
                    va="center", fontsize=11, color=RESTORED_COLOUR)
    ax.set_yticks(y, names, fontsize=11)
    ax.set_xlabel("PSNR (dB), mean over the demo's crops", fontsize=11)
    ax.set_xlim(min(before.min(), after.min()) - 1.5, max(before.max(), after.max()) + 4.5)
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=11, frameon=False)
    fig.tight_layout()
    return fig


def blur_bound_figure(record: dict[str, Any]) -> Figure:
    """The blur ladder: input, one fixed filter, the shipped weights, Wiener's filter with the true kernel."""
    r = record["results"]
    rows = [("blurred input", r["input_psnr"], INPUT_COLOUR),
            ("one fixed linear filter for all shakes", r["fixed_psnr"], BOUND_COLOUR),
            *((f"the shipped weights ({Path(name).name})", value, RESTORED_COLOUR) for name, value in r["models"].items()),
            ("Wiener's filter with each crop's true kernel", r["wiener_psnr"], BOUND_COLOUR)]
    fig, ax = plt.subplots(figsize=(8.0, 2.9))
    y = np.arange(len(rows))[::-1]
    base = r["input_psnr"]
    for yi, (label, value, colour) in zip(y, rows):
        ax.barh(yi, value - base, left=base, height=0.55, color=colour)
        text = f"{value:.2f} dB" if value == base else f"{value:.2f} dB ({value - base:+.2f})"
        ax.annotate(text, (max(value, base), yi), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=10.5)
    ax.set_yticks(y, [label for label, _, _ in rows], fontsize=11)
    ax.axvline(base, color="#616161", linewidth=1)
    ax.set_xlim(min(value for _, value, _ in rows) - 0.3, r["wiener_psnr"] + 4.0)  # a restorer below the input too
    ax.set_xlabel(f"PSNR (dB) on {record['count']} blurred crops of {record['patch']} px", fontsize=11)
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right", "left"]].set_visible(False)
    fig.tight_layout()
    return fig
