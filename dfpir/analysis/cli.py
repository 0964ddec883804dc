"""The command line, ``python -m dfpir.analysis``::

    python -m dfpir.analysis interference --preset tiny --out runs/interference
    python -m dfpir.analysis interference --weights best.safetensors --data builtin --out DIR
    python -m dfpir.analysis blur-bound

``interference`` writes ``DIR/interference.png`` (heatmaps), ``DIR/interference_layers.png``
(per-layer matrices) and ``DIR/interference.json`` (the numbers).

``blur-bound`` prints [`deblur_bound`][dfpir.analysis.blur_bound.deblur_bound]: what Wiener deconvolution
with the true kernel, and one fixed filter for every shake, gain on the synthetic motion blur;
``--weights`` places trained checkpoints between the two.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..checkpoint import load
from ..data import builtin_photos, list_images, read_image
from ..degradations import DEGRADATIONS, synthetic_names
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..files import atomic_write, check_output_folder
from ..model.network import DFPIR
from .ablations import ABLATIONS, ablate, build_model
from .blur_bound import deblur_bound
from .interference import Interference, measure_interference, task_batches
from .plots import plot_interference, plot_layer_matrices

def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r} must look like field=value (e.g. dim=8)")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


def _clean_images(data: str, patch: int) -> list[np.ndarray]:
    """The clean images ``--data`` names ('builtin': the built-in training parts, 'builtin-val':
    the held-out strips, or a folder), each at least ``patch`` pixels on its shorter side."""
    if data in ("builtin", "builtin-val"):
        images = [img for _, img in builtin_photos("train" if data == "builtin" else "val")]
    else:
        files = list_images(data)
        if not files:
            raise UserError(f"{data}: no images found (give a folder of clean images, 'builtin' or 'builtin-val')")
        images = [read_image(f) for f in files]
    small = [img.shape[:2] for img in images if min(img.shape[:2]) < patch]
    if small:
        raise UserError(f"--patch {patch} is larger than an image ({small[0][0]} x {small[0][1]}); choose a smaller --patch")
    return images


def run_interference(args: argparse.Namespace) -> Interference:
    """The ``interference`` command: build or load, ablate, measure, write PNGs and JSON."""
    import matplotlib  # optional (the dev extra): only this command draws

    matplotlib.use("Agg")  # no display needed: the figures go to PNG files
    import matplotlib.pyplot as plt

    check_at_least("--batch", args.batch, 1)
    check_at_least("--patch", args.patch, 1)
    check_at_least("--threads", args.threads, 0, "0: torch's default")
    if args.patch % 8:
        raise UserError(f"--patch must be a multiple of 8, got {args.patch}")
    if args.degradations is not None and len(set(args.degradations)) < 2:
        raise UserError("--degradations needs at least two different names: interference is between degradations")
    check_output_folder(Path(args.out))  # before minutes of gradients, not after
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = _parse_overrides(args.set)
    if args.weights:
        if overrides:
            raise UserError("--set changes a fresh model's config; it cannot be used with --weights")
        model = ablate(load(args.weights), args.ablation)
        source = str(args.weights)
    else:
        try:
            model = build_model(args.preset, args.ablation, args.seed, **overrides)
        except TypeError as exc:
            raise UserError(f"--set: {exc}") from None
        source = f"preset {args.preset} (fresh, seed {args.seed})"
    names = args.degradations or (model.prompts.names if args.weights else synthetic_names())
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown:
        raise UserError(f"unknown degradation {unknown[0]!r}; known: {', '.join(DEGRADATIONS)}")
    if model.config.use_dgpb:
        missing = [n for n in names if n not in model.prompts.names]
        if missing:
            raise UserError(f"the model's prompt bank has no {missing[0]!r}; it knows: {', '.join(model.prompts.names)}")
    batches = task_batches(names, _clean_images(args.data, args.patch), args.batch, args.patch, args.seed)
    meta = {"source": source, "ablation": args.ablation, "data": args.data, "batch": args.batch, "patch": args.patch, "seed": args.seed}
    result = measure_interference(model, batches, meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.to_dict(), indent=1) + "\n"
    atomic_write(out / "interference.json", lambda tmp: Path(tmp).write_text(text))
    fig = plot_interference(result, title=f"gradient cosine between degradations: {source}, ablation {args.ablation}")
    atomic_write(out / "interference.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    fig = plot_layer_matrices(result)
    atomic_write(out / "interference_layers.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    print(result.summary())
    print(f"wrote {out / 'interference.png'}, {out / 'interference_layers.png'}, {out / 'interference.json'}")
    return result


def run_blur_bound(args: argparse.Namespace) -> dict[str, float]:
    """The ``blur-bound`` command: print [`deblur_bound`][dfpir.analysis.blur_bound.deblur_bound] on the chosen clean images."""
    check_at_least("--count", args.count, 1)
    check_at_least("--patch", args.patch, 8)
    check_at_least("--threads", args.threads, 0, "0: torch's default")
    images = _clean_images(args.data, args.patch)
    models = {path: _blur_model(path) for path in args.weights}
    if args.threads:
        torch.set_num_threads(args.threads)
    r = deblur_bound(images, args.count, args.patch, args.seed, models=models)
    print(f"{args.count} crops of {args.patch} px, motion blur (no noise): input {r['input_psnr']:.2f} dB, "
          f"Wiener deconvolution with the true kernel {r['wiener_psnr']:.2f} dB ({r['gain']:+.2f} dB), "
          f"one fixed filter for all kernels {r['fixed_psnr']:.2f} dB ({r['fixed_gain']:+.2f} dB)")
    for path, value in r["models"].items():
        print(f"  {path}: {value:.2f} dB ({value - r['input_psnr']:+.2f} dB)")
    return r


def _blur_model(path: str) -> DFPIR:
    model = load(path)
    if "blur" not in model.prompts.names:
        raise UserError(f"{path}: this model has no 'blur' prompt (it knows: {', '.join(model.prompts.names)})")
    return model


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dfpir.analysis`` argument parser."""
    p = CommandParser(prog="python -m dfpir.analysis", description="Measuring tools for DFPIR models.")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("interference", help="gradient conflicts between degradations (heatmap PNG + JSON)")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a checkpoint written by dfpir (dfpir.load)")
    src.add_argument("--preset", help="a freshly initialised model of this preset (tiny, small, paper, restormer)")
    q.add_argument("--ablation", default="none", choices=ABLATIONS, help="switch one part of the model off (default none)")
    q.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config field of a fresh model, e.g. dim=8 (repeatable)")
    q.add_argument("--data", default="builtin",
                   help="'builtin' (the training parts of the built-in photos, default), 'builtin-val' (their held-out strips) or a folder of clean images")
    q.add_argument("--degradations", nargs="+", help="default: the checkpoint's prompt bank, or all seven")
    q.add_argument("--batch", type=int, default=4, help="crops per degradation (default 4)")
    q.add_argument("--patch", type=int, default=64, help="crop size, a multiple of 8 (default 64)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    q.add_argument("--out", required=True, help="output folder")
    b = sub.add_parser("blur-bound", help="what linear filters (knowing the kernel or not) and given models gain on the synthetic motion blur")
    b.add_argument("--data", default="builtin-val",
                   help="'builtin-val' (the held-out strips of the built-in photos, default), 'builtin' (their training parts) or a folder of clean images")
    b.add_argument("--count", type=int, default=64, help="crops (default 64)")
    b.add_argument("--patch", type=int, default=128, help="crop size (default 128, the validation crops')")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--weights", nargs="*", default=[], metavar="CKPT", help="dfpir checkpoints to run on the same blurred crops (blur prompt)")
    b.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dfpir.analysis``."""
    args = build_parser().parse_args(argv)
    if args.command == "interference":
        run_interference(args)
    elif args.command == "blur-bound":
        run_blur_bound(args)
    return 0
