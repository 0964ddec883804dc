"""Benchmarks: ``python -m dfpir.bench [forward|train|compare|profile|restore|reference|heldout] [options]``.

- ``forward``: latency and throughput of one forward pass per preset, size and batch;
- ``train``: time of one training step (forward, L1 loss, backward, Adam) per preset, patch size
  and batch; ``--train-variants plain channels_last compile channels_last_compile`` puts ways of
  running it side by side;
- ``compare``: execution variants of [`dfpir.inference.speed`][dfpir.inference.speed], for one preset or several, side by side
  in one process, alternating pair by pair for several rounds (these machines are noisy), with
  medians and ratios to the first (``--presets restormer paper --variants fused`` gives the cost
  of the DGPBs);
- ``profile``: where one forward pass of a variant spends its time, per torch operator
  (``torch.profiler``), with each operator's share of the total;
- ``restore``: tiled restoration of 1, 4 and 16 megapixels (delegates to ``dfpir.bench.restore``);
- ``reference``: the NumPy reference's op timings (delegates to ``dfpir.bench.reference``);
- ``heldout``: restoration quality on the held-out photos, photo by photo, beside classical
  anchors (delegates to ``dfpir.bench.heldout``).

Every run of ``forward``, ``train``, ``compare`` or ``profile`` prints a text table and, with
``--json FILE``, writes the numbers with the machine's description. Nothing here is asserted by
a test: speed is reported, not checked.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..model.config import get_config
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..files import atomic_write, check_output_folder
from ..model.network import DFPIR
from ..inference.runner import resolve_device
from ..inference.speed import reuse_freed_memory
from .layouts import VARIANTS, prepare
from .machine import machine, machine_line


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (CUDA synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def inputs(model: DFPIR, batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random image batch and its ``noise25`` prompt embeddings on ``device``."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=g).to(device)
    return image, model.embed_prompts("noise25", batch).to(device)


def bench_forward(presets: list[str], sizes: list[int], batches: list[int], variant: str, repeats: int, device: torch.device) -> list[dict]:
    """Inference time and throughput of each preset, image size and batch size: one row each."""
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        model = DFPIR(get_config(preset)).to(device)
        run = prepare(model, variant)
        for size in sizes:
            for batch in batches:
                image, prompt = inputs(model, batch, size, device)
                timed(lambda: run(image, prompt), device)  # warm-up (and compilation)
                times = [timed(lambda: run(image, prompt), device) for _ in range(repeats)]
                med = statistics.median(times)
                rows.append(dict(preset=preset, size=size, batch=batch, variant=variant, median_s=med,
                                 images_per_s=batch / med, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
                print(f"{preset:<10}{size:>6}{batch:>6}  {variant:<9}{med * 1000:>11.1f} ms{batch / med:>10.2f} img/s", flush=True)
    return rows


TRAIN_VARIANTS = ("plain", "channels_last", "compile", "channels_last_compile")
"""Ways to run the training step that ``train --train-variants`` puts side by side: the plain
modules, the same in channels-last memory format, ``torch.compile`` of forward and backward, and
both together."""


def train_step(preset: str, variant: str, size: int, batch: int, device: torch.device, precision: str):
    """A fresh model (seed 0) and one training step of it (forward, L1 loss, backward, Adam) run
    as ``variant``; the step returns its loss."""
    from ..train.precision import autocast

    torch.manual_seed(0)
    model = DFPIR(get_config(preset)).to(device).train()
    image, prompt = inputs(model, batch, size, device)
    if variant.startswith("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def forward_backward() -> torch.Tensor:
        with autocast(device, precision):
            loss = torch.nn.functional.l1_loss(model(image, prompt).float(), image)
        scaler.scale(loss).backward()
        return loss.detach()

    run = torch.compile(forward_backward) if variant.endswith("compile") else forward_backward

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = run()
        scaler.step(opt)
        scaler.update()
        return float(loss)

    return model, step


def bench_train(presets: list[str], size: int, batch: int, repeats: int, device: torch.device, precision: str = "fp32",
                variants: Sequence[str] = ("plain",)) -> list[dict]:
    """Time of one training step (forward, L1 loss, backward, Adam) per preset and variant: one row each.

    ``precision`` is ``python -m dfpir.train``'s ``train.precision``: fp32, bf16 (autocast) or fp16
    (autocast with loss scaling, CUDA only). The ``variants`` of ``TRAIN_VARIANTS`` of one preset
    start from the same weights; their first steps are compared with the first variant's (the
    loss, and the largest difference of any gradient), then they are timed in
    alternating rounds, so that a slow spell of the machine hits them all.
    """
    from ..train.precision import check_precision

    check_precision(device, precision, "--precision")
    rows = []
    for preset in presets:
        runs = {v: train_step(preset, v, size, batch, device, precision) for v in variants}
        first = {}
        for v, (model, step) in runs.items():
            start = time.perf_counter()
            loss = step()  # warm-up (and compilation); the gradients stay until the next step zeroes them
            warm = time.perf_counter() - start
            first[v] = (loss, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}, warm)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(repeats):
            for v, (_, step) in runs.items():
                times[v].append(timed(step, device))
        base_loss, base_grads, _ = first[variants[0]]
        base_med = statistics.median(times[variants[0]])
        for v in variants:
            loss, grads, warm = first[v]
            med = statistics.median(times[v])
            diff = max(float((grads[n].float() - base_grads[n].float()).abs().max()) for n in grads)
            rows.append(dict(preset=preset, size=size, batch=batch, precision=precision, variant=v, step_s=med, steps_per_s=1 / med,
                             images_per_s=batch / med, speedup=base_med / med, first_step_s=warm,
                             loss_diff=abs(loss - base_loss), max_grad_diff=diff))
            print(f"{preset:<10} patch {size} batch {batch} {precision} {v:<13}: {med:.3f} s/step, {batch / med:.1f} img/s, "
                  f"x{base_med / med:.2f}; first step {warm:.1f} s; vs {variants[0]}: loss {abs(loss - base_loss):.1e}, "
                  f"gradients {diff:.1e}", flush=True)
    return rows


def bench_compare(presets: list[str], size: int, batch: int, variants: list[str], rounds: int, device: torch.device) -> list[dict]:
    """Alternate every (preset, variant) pair round by round, so a slow spell of the machine hits
    them all; ratios are to the first pair, differences to the first variant of the same preset."""
    pairs = [(p, v) for p in presets for v in variants]
    runs, inputs_of, times = {}, {}, {pair: [] for pair in pairs}
    for preset, v in pairs:
        torch.manual_seed(0)
        model = DFPIR(get_config(preset)).to(device)
        runs[preset, v] = prepare(model, v)
        inputs_of[preset] = inputs(model, batch, size, device)
        timed(lambda: runs[preset, v](*inputs_of[preset]), device)  # warm-up (and compilation)
    for _ in range(rounds):
        for pair in pairs:
            times[pair].append(timed(lambda: runs[pair](*inputs_of[pair[0]]), device))
    first_out, diffs = {}, {}
    for preset, v in pairs:
        out = runs[preset, v](*inputs_of[preset])
        first_out.setdefault(preset, (v, out))
        diffs[preset, v] = float((out - first_out[preset][1]).abs().max())
    base = statistics.median(times[pairs[0]])
    rows = []
    print(f"{size}x{size} batch {batch}, {rounds} alternating rounds, median:")
    for preset, v in pairs:
        med = statistics.median(times[preset, v])
        rows.append(dict(preset=preset, size=size, batch=batch, variant=v, median_s=med, speedup=base / med, max_abs_diff=diffs[preset, v]))
        print(f"  {preset:<10}{v:<9}{med:>9.3f} s   x{base / med:>5.2f}   max |diff| to {first_out[preset][0]}: {diffs[preset, v]:.2e}", flush=True)
    return rows


def bench_profile(preset: str, size: int, batch: int, variant: str, device: torch.device, top: int = 15) -> list[dict]:
    """Self time of each torch operator in one forward pass (after a warm-up), largest first."""
    from torch.profiler import profile

    torch.manual_seed(0)
    model = DFPIR(get_config(preset)).to(device)
    run = prepare(model, variant)
    image, prompt = inputs(model, batch, size, device)
    run(image, prompt)  # warm-up
    with profile() as prof:
        run(image, prompt)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = []
    print(f"{preset} {size}x{size} batch {batch}, variant {variant}: {total / 1e6:.3f} s of operator time")
    for e in events[:top]:
        share = e.self_cpu_time_total / total
        rows.append(dict(op=e.key, calls=e.count, self_s=e.self_cpu_time_total / 1e6, share=share))
        print(f"  {e.key:<34}{e.count:>7} calls{e.self_cpu_time_total / 1e6:>9.3f} s{share:>8.1%}", flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dfpir.bench`` argument parser (``restore`` and ``reference`` have their own)."""
    p = CommandParser(prog="python -m dfpir.bench", description=__doc__.split("\n\n")[0],
                      epilog="Every suite runs each preset at every size and batch given.")
    p.add_argument("suite", nargs="?", default="forward", choices=["forward", "train", "compare", "profile"],
                   help="what to time (default forward); restore, reference and heldout take their own options: "
                        "python -m dfpir.bench restore --help")
    p.add_argument("--presets", nargs="+", metavar="PRESET", help="model presets (default: tiny small paper; profile: paper)")
    p.add_argument("--sizes", type=int, nargs="+", metavar="PX",
                   help="square image (or training patch) sizes in pixels (default: forward 128 256 512, others 128)")
    p.add_argument("--batches", type=int, nargs="+", metavar="N", help="batch sizes (default: forward 1 8, train 8, others 1)")
    p.add_argument("--variant", default="fused", choices=VARIANTS,
                   help="execution variant of dfpir.inference.speed for forward and profile (default fused)")
    p.add_argument("--variants", nargs="+", default=["original", "plain", "fast", "fused"], choices=VARIANTS, metavar="VARIANT",
                   help="for compare: the variants side by side, ratios to the first (default: original plain fast fused)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up; the median is reported (compare: rounds)")
    p.add_argument("--train-variants", nargs="+", default=["plain"], choices=TRAIN_VARIANTS, metavar="VARIANT",
                   help=f"for train: the training steps side by side, ratios to the first ({', '.join(TRAIN_VARIANTS)}; default plain)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="for train: as train.precision (fp16: CUDA only)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--reuse-memory", action="store_true",
                   help="keep freed memory in the process (dfpir.inference.speed.reuse_freed_memory)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    return p


#: (presets, sizes, batches) of each suite when not given on the command line.
SUITE_DEFAULTS: dict[str, tuple[list[str], list[int], list[int]]] = {
    "forward": (["tiny", "small", "paper"], [128, 256, 512], [1, 8]),
    "train": (["tiny", "small", "paper"], [128], [8]),
    "compare": (["tiny", "small", "paper"], [128], [1]),
    "profile": (["paper"], [128], [1]),
}


def check_args(args: argparse.Namespace) -> None:
    """Fill in the suite's defaults and refuse values no benchmark can use, before any model is
    built (one-line errors)."""
    from ..model.config import PRESETS

    presets, sizes, batches = SUITE_DEFAULTS[args.suite]
    args.presets, args.sizes, args.batches = args.presets or presets, args.sizes or sizes, args.batches or batches
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        raise UserError(f"unknown preset {unknown[0]!r}; choose from: {', '.join(PRESETS)}")
    check_at_least("--sizes", min(args.sizes), 8, "pixels: the U-net halves the image three times")
    check_at_least("--batches", min(args.batches), 1)
    check_at_least("--repeats", args.repeats, 1)
    check_at_least("--threads", args.threads or 1, 1)  # not given: torch's default
    if args.json:
        if args.json.is_dir():
            raise UserError(f"--json {args.json} is a folder; give a file name")
        check_output_folder(args.json.parent)  # fail now, not after minutes of timing


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.bench [suite] [options]``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["restore"]:  # its own options: python -m dfpir.bench restore --help
        from .restore import main as restore_main

        return restore_main(argv[1:])
    if argv[:1] == ["reference"]:
        from .reference import main as reference_main

        return reference_main(argv[1:])
    if argv[:1] == ["heldout"]:  # imported here: scikit-image's restoration module is slow to load
        from .heldout import main as heldout_main

        return heldout_main(argv[1:])
    args = build_parser().parse_args(argv)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = "reuse freed memory" if args.reuse_memory and reuse_freed_memory() else "default"
    print(machine_line(machine()))
    print(f"malloc: {allocator}")
    device = resolve_device(args.device)
    grid = [(size, batch) for size in args.sizes for batch in args.batches]
    if args.suite == "forward":
        rows = bench_forward(args.presets, args.sizes, args.batches, args.variant, args.repeats, device)
    elif args.suite == "train":
        rows = [r for size, batch in grid for r in bench_train(args.presets, size, batch, args.repeats, device, args.precision,
                                                                        args.train_variants)]
    elif args.suite == "profile":
        rows = [r for preset in args.presets for size, batch in grid for r in bench_profile(preset, size, batch, args.variant, device)]
    else:
        rows = [r for size, batch in grid for r in bench_compare(args.presets, size, batch, args.variants, args.repeats, device)]
    if args.json:
        text = json.dumps({"suite": args.suite, "machine": machine(), "malloc": allocator, "rows": rows}, indent=2)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {args.json}")
    return 0

