"""Measure the gain matrix that ``auto``'s ``gain`` rule decides with, and store it in the weights.

Every prompt the classifier can pick restores every validation crop of every class, clean crops
included (the ``clean`` layout's validation split: every ``--holdout``-th file, degraded then
cropped, ``--per-image`` fixed crops per file and degradation); the mean gain of each prompt on
each true class is the [`GainMatrix`][dfpir.inference.decision.GainMatrix] that
[`dfpir.inference.decision`][dfpir.inference.decision] explains. The command writes a copy of the
weights with the matrix in its metadata (``auto_gains``): with such weights, ``--degradation auto``
uses the ``gain`` rule unless told otherwise (``--auto-rule likely``). Only the validation split
is read, never a held-out photo.

    python -m dfpir.train.gain_matrix --weights dfpir/weights/demo.safetensors -o gains.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checkpoint import read, write_safetensors
from ..data.datasets import build_dataset
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..files import atomic_write, check_new_weights
from ..inference.decision import METADATA_KEY, GainMatrix, gain_db
from ..inference.runner import Restorer
from ..model.classifier import CLEAN
from ..progress import progress

DEFAULT_DATA = Path("data/corpus/photos")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of two (H, W, 3) images, in float64."""
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def measure(restorer: Restorer, data: Dataset, source: dict) -> GainMatrix:
    """Restore each item of ``data`` (a labelled validation dataset) and its clean target with every
    prompt the classifier can pick; the mean gain per prompt and true class.

    Parameters
    ----------
    restorer : Restorer
        The weights to measure, with their classifier.
    data : Dataset
        Items ``{"input", "target", "degradation"}`` ((3, P, P) tensors); the target is also
        measured, as a ``clean`` image.
    source : dict
        Recorded in the matrix (how it was measured).
    """
    classes = list(restorer.classifier.classes)
    prompts = [c for c in classes if c != CLEAN]
    unknown = [p for p in prompts if p not in restorer.names]
    if unknown:
        raise UserError(f"the classifier picks {unknown[0]!r}, which the restorer has no prompt for")
    sums = np.zeros((len(prompts), len(classes)))
    counts = np.zeros(len(classes), dtype=int)
    with progress(len(data) * 2 * len(prompts), "gain matrix", "restoration") as bar:
        for i in range(len(data)):
            item = data[i]
            clean = item["target"].permute(1, 2, 0).numpy()  # (P, P, 3)
            for truth, image in ((item["degradation"], item["input"]), (CLEAN, item["target"])):
                if truth not in classes:
                    continue
                rgb = image.permute(1, 2, 0).numpy()  # (P, P, 3)
                before = mse(rgb, clean)
                for j, name in enumerate(prompts):
                    out, _ = restorer.restore(rgb, restorer.prompt(name))
                    sums[j, classes.index(truth)] += gain_db(before, mse(out, clean))
                    bar.update(1)
                counts[classes.index(truth)] += 1
    missing = [c for c, n in zip(classes, counts) if n == 0]
    if missing:
        raise UserError(f"no validation image of class {missing[0]!r}; the data must hold every degradation the classifier knows")
    return GainMatrix(tuple(prompts), tuple(classes), sums / counts, tuple(int(n) for n in counts), source)


def write_with_gains(source: Path, out: Path, matrix: GainMatrix) -> None:
    """A copy of ``source`` with ``matrix`` in its metadata; every tensor and other entry unchanged."""
    tensors, metadata = read(source)
    atomic_write(out, lambda tmp: write_safetensors(tmp, tensors, {**metadata, METADATA_KEY: matrix.to_json()}))


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dfpir.train.gain_matrix`` command line."""
    p = CommandParser(prog="python -m dfpir.train.gain_matrix", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="a dfpir checkpoint with a degradation classifier")
    p.add_argument("-o", "--output", type=Path, required=True, help="the new weights file (never the input)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"a clean layout folder; only its validation split is read (default {DEFAULT_DATA}, from `make corpus`)")
    p.add_argument("--holdout", type=int, default=10, help="every N-th file is the validation split (default 10, as the weights preset)")
    p.add_argument("--patch", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--per-image", type=int, default=4, help="crops per validation file and degradation (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and degradations (default 0)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Measure, print and store the gain matrix; returns the exit code."""
    args = build_parser().parse_args(argv)
    check_at_least("--patch", args.patch, 16, "pixels")
    check_at_least("--per-image", args.per_image, 1)
    check_at_least("--holdout", args.holdout, 2, "the matrix is measured on the validation split")
    check_new_weights(args.output, args.weights, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    restorer = Restorer(args.weights, auto_rule="likely")
    if restorer.classifier is None:
        raise UserError(f"{args.weights} holds no degradation classifier; train one with python -m dfpir.train (train.classifier=true)")
    degradations = [c for c in restorer.classifier.classes if c != CLEAN]
    data = build_dataset("clean", args.data, "val", args.patch, degradations=degradations, labels=degradations,
                         seed=args.seed, holdout=args.holdout, per_image=args.per_image)
    source = {"data": str(args.data), "holdout": args.holdout, "patch": args.patch, "per_image": args.per_image,
              "seed": args.seed, "split": "val"}
    matrix = measure(restorer, data, source)
    print("\n".join(matrix.markdown()))
    write_with_gains(args.weights, args.output, matrix)
    print(f"wrote {args.output}: {args.weights} with its gain matrix (--degradation auto now uses the gain rule)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
