"""Speed of the NumPy/Numba reference against the PyTorch model (a benchmark, not a test).

Run ``python -m dfpir.bench reference [--size PX] [--threads N]``. It prints the ``tiny`` preset's
full reference forward at ``--size`` x ``--size`` (default 64) after compilation, then each
operation's time beside its PyTorch twin (CPU, float32, median of a few runs). It lives in ``dfpir`` because it imports torch, which ``reference`` never
does.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import reference

from ..model import attention, masked_attention, perturbation
from ..model.config import get_config
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..model.network import DFPIR


def _time(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()  # warm-up (and Numba compilation)
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def run(size: int = 64) -> None:
    """Print the benchmark table for ``size`` x ``size`` images."""
    torch.manual_seed(0)
    model = DFPIR(get_config("tiny")).eval()
    params = {k: v.numpy() for k, v in model.state_dict().items()}
    config = dataclasses.asdict(model.config)
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, size, size), dtype=np.float32)
    prompt = rng.standard_normal((1, config["prompt_dim"])).astype(np.float32)
    ti, tp = torch.from_numpy(image), torch.from_numpy(prompt)

    with torch.no_grad():
        t_ref = _time(lambda: reference.dfpir_forward(params, image, prompt, config))
        t_torch = _time(lambda: model(ti, tp))
    print(f"tiny preset forward at {size}x{size} (float32, after compile): "
          f"reference {t_ref * 1e3:.1f} ms, PyTorch {t_torch * 1e3:.1f} ms "
          f"({torch.get_num_threads()} torch threads)")

    c, heads, hw = 32, 2, size
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    w1 = rng.standard_normal((2 * c, c, 1, 1)).astype(np.float32)
    wd = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    w3 = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    q, k, v = (rng.standard_normal((1, heads, c // heads, hw * hw)).astype(np.float32) for _ in range(3))
    temp = np.ones((heads, 1, 1), np.float32)
    logits = rng.standard_normal((1, heads, c // heads, c // heads)).astype(np.float32)
    scores = rng.standard_normal((1, 2 * c)).astype(np.float32)
    kept = masked_attention.kept_per_row(c // heads)
    T = torch.from_numpy
    ops = [
        ("layer_norm", lambda: reference.layer_norm(x, x[0, :, 0, 0], x[0, :, 0, 1]),
         lambda: reference.layer_norm_loop(x, x[0, :, 0, 0], x[0, :, 0, 1]),
         lambda: __import__("dfpir.model.layernorm", fromlist=["x"]).layer_norm(T(x), T(x[0, :, 0, 0]), T(x[0, :, 0, 1]))),
        ("conv2d 1x1", lambda: reference.conv2d(x, w1), lambda: reference.conv2d_loop(x, w1),
         lambda: F.conv2d(T(x), T(w1))),
        ("conv2d depthwise 3x3", lambda: reference.conv2d(x, wd, groups=c), lambda: reference.conv2d_loop(x, wd, groups=c),
         lambda: F.conv2d(T(x), T(wd), padding=1, groups=c)),
        ("conv2d dense 3x3", lambda: reference.conv2d(x, w3), lambda: reference.conv2d_loop(x, w3),
         lambda: F.conv2d(T(x), T(w3), padding=1)),
        ("gelu", lambda: reference.gelu(x), None, lambda: F.gelu(T(x))),
        ("transposed_attention", lambda: reference.transposed_attention(q, k, v, temp),
         lambda: reference.transposed_attention_loop(q, k, v, temp),
         lambda: attention.transposed_attention(T(q), T(k), T(v), T(temp))),
        ("masked_attention", lambda: reference.masked_attention(q, k, v, temp, kept),
         lambda: reference.masked_attention_loop(q, k, v, temp, kept),
         lambda: masked_attention.masked_softmax(attention.channel_logits(T(q), T(k), T(temp)), kept) @ T(v)),
        ("topk_mask", lambda: reference.topk_mask(logits, kept), lambda: reference.topk_mask_loop(logits, kept),
         lambda: masked_attention.topk_mask(T(logits), kept)),
        ("channel_order", lambda: reference.channel_order(scores), lambda: reference.channel_order_loop(scores),
         lambda: perturbation.channel_order(T(scores))),
        ("pixel_unshuffle", lambda: reference.pixel_unshuffle(x), None, lambda: F.pixel_unshuffle(T(x), 2)),
    ]
    print(f"\nper-op times, C={c}, {hw}x{hw}, float32 (ms): vectorised | loop (Numba) | PyTorch")
    with torch.no_grad():
        for name, vec, loop, tfn in ops:
            tv, tt = _time(vec) * 1e3, _time(tfn) * 1e3
            tl = f"{_time(loop) * 1e3:10.3f}" if loop is not None else f"{'-':>10}"
            print(f"  {name:<22} {tv:10.3f} | {tl} | {tt:10.3f}")


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.bench reference [--size PX] [--threads N]`` (also ``python -m dfpir.bench reference``)."""
    p = CommandParser(prog="python -m dfpir.bench reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="image side in pixels for the forward pass and the ops (default 64)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.size < 8 or args.size % 2:
        raise UserError(f"--size must be an even number >= 8 (the per-op table includes a pixel unshuffle), got {args.size}")
    if args.threads is not None:
        check_at_least("--threads", args.threads, 1)
        torch.set_num_threads(args.threads)
    run(args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
