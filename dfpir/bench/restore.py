"""Peak memory and time of restoring large images on the CPU: ``python -m dfpir.bench restore``.

Each size runs in a fresh Python process, so its peak resident set size (``getrusage`` max RSS,
which counts torch's allocations, unlike ``tracemalloc``) belongs to that size alone. The child
does what ``dfpir.restore`` does for one file, minus reading it: a random 8-bit RGB image of
SIZE x SIZE is converted to float, restored with automatic tiling (random ``paper`` weights),
clipped, quantised and written as PNG to a temporary folder.

``--max-tiles K`` stops each run after K tiles and extrapolates the network time linearly to
all tiles (printed as ``~``; the rest of the pipeline, conversions and PNG encoding, is timed
in full). Peak memory is still representative: every full-size buffer (input, blend
accumulators, output, the encoded file) is allocated whether 1 or all tiles run, and every tile
has the same size. ``--fit`` instead measures whole-image activation bytes per pixel, the
constant behind ``dfpir.inference.tiling.BYTES_PER_PIXEL_PER_DIM``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import CommandParser, UserError, check_at_least, cli_main
from .machine import machine, machine_line


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(size: int, preset: str, max_tiles: int | None, budget_gb: float | None) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    from .. import DFPIR, get_config
    from ..images import Image, write_image
    from ..inference.tiling import DEFAULT_CPU_BUDGET, auto_tile, plan_tiles, restore_tiled, restore_whole

    torch.manual_seed(0)
    model = DFPIR(get_config(preset)).eval()
    budget = int(budget_gb * 2**30) if budget_gb is not None else DEFAULT_CPU_BUDGET
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    start_rss = _rss_now()
    start = time.perf_counter()
    rgb = pixels.astype(np.float32) / 255
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    prompt = model.embed_prompts("noise25")
    tile = auto_tile(size, size, model.config, budget)
    network_start = time.perf_counter()
    if tile is None:
        out, count, done = restore_whole(model, x, prompt), 1, 1
    else:
        plan = plan_tiles(size, size, tile)
        out, count = restore_tiled(model, x, prompt, plan, max_tiles=max_tiles), plan.count
        done = min(count, max_tiles or count)
    network = time.perf_counter() - network_start
    with torch.inference_mode():
        out.clamp_(0, 1)
    restored = out[0].permute(1, 2, 0).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        write_image(Path(tmp) / "out.png", Image(restored))
    seconds = time.perf_counter() - start
    return {"size": size, "megapixels": size * size / 1e6, "tile": tile or size, "tiles": count, "tiles_run": done,
            "seconds": seconds, "seconds_all_tiles": seconds - network + network * count / done,
            "network_seconds_per_tile": network / done, "start_rss_mb": start_rss / 2**20,
            "peak_rss_mb": _peak_rss() / 2**20}


def child_fit(size: int, preset: str) -> dict:
    """Whole-image activation bytes per pixel at ``size`` (peak RSS minus RSS before the pass)."""
    from .. import DFPIR, get_config

    model = DFPIR(get_config(preset)).eval()
    with torch.inference_mode():
        model.restore(torch.rand(1, 3, 16, 16), "noise25")  # warm-up allocations
        before = _rss_now()
        model.restore(torch.rand(1, 3, size, size), "noise25")
    per_pixel = (_peak_rss() - before) / size**2
    return {"size": size, "bytes_per_pixel": per_pixel, "per_dim": per_pixel / model.config.dim}


def run_child(args: list[str]) -> dict:
    """Run this module in a fresh process with ``args`` and parse its JSON line."""
    proc = subprocess.run([sys.executable, "-m", "dfpir.bench.restore", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1].removeprefix("error: ")
        raise UserError(f"the benchmark of {' '.join(args[1:])} failed in its child process: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for values no run can use, before any child process starts."""
    from ..model.config import PRESETS
    from ..inference.runner import budget_bytes

    if args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    check_at_least("--sizes", min(args.sizes), 8, "pixels")
    if args.max_tiles is not None:
        check_at_least("--max-tiles", args.max_tiles, 1)
    budget_bytes(args.memory_gb)  # refuses zero, negative and non-finite budgets


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Print one line per size: tiles, time and peak RSS."""
    p = CommandParser(prog="python -m dfpir.bench restore", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="image sides in pixels (default 1024 2048 4096: 1, 4, 16 MP)")
    p.add_argument("--preset", default="paper", help="model preset, random weights (default paper)")
    p.add_argument("--max-tiles", type=int, help="run only this many tiles per size, extrapolate the time")
    p.add_argument("--memory-gb", type=float, help="activation budget (default: dfpir.inference.tiling's CPU default)")
    p.add_argument("--fit", action="store_true", help="measure whole-image activation bytes per pixel instead")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_args(args)
    if args.child:
        result = child_fit(args.sizes[0], args.preset) if args.fit else child(args.sizes[0], args.preset, args.max_tiles, args.memory_gb)
        print(json.dumps(result))
        return 0
    print(machine_line(machine()))
    print(f"preset {args.preset}, CPU, {torch.get_num_threads()} threads, random weights")
    for size in args.sizes:
        extra = ["--fit"] if args.fit else (["--max-tiles", str(args.max_tiles)] if args.max_tiles is not None else [])
        extra += ["--memory-gb", str(args.memory_gb)] if args.memory_gb is not None else []
        r = run_child(["--child", "--sizes", str(size), "--preset", args.preset, *extra])
        if args.fit:
            print(f"{size}x{size}: {r['bytes_per_pixel']:.0f} B/pixel ({r['per_dim']:.0f} per unit of dim)")
            continue
        approx = "~" if r["tiles_run"] < r["tiles"] else ""
        print(f"{size}x{size} ({r['megapixels']:.1f} MP): {r['tiles']} tiles of {r['tile']} ({r['tiles_run']} run), "
              f"time {approx}{r['seconds_all_tiles']:.0f} s ({r['network_seconds_per_tile']:.1f} s per tile), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
