"""Print every preset's parameter count and FLOPs: ``python -m dfpir.summary [--size 256]``."""

from __future__ import annotations

import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from .model.config import PRESETS, DFPIRConfig
from .errors import CommandParser, UserError, check_at_least, cli_main
from .model.network import DFPIR


def count_flops(config: DFPIRConfig, size: int = 256) -> int:
    """FLOPs of one forward pass on a ``size`` x ``size`` image (torch's counter: convs and matmuls).

    The network runs on the image reflect-padded to a multiple of 8, so that is what is counted.
    """
    if size < 1:
        raise UserError(f"size must be >= 1, got {size}")
    padded = -(-size // 8) * 8
    with torch.device("meta"):
        model = DFPIR(config)
        image = torch.zeros(1, 3, padded, padded)
        prompt = torch.zeros(1, config.prompt_dim)
        with FlopCounterMode(display=False) as counter:
            model.forward_padded(image, prompt)
    return counter.get_total_flops()


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.summary [--size N]``: print every preset's size and cost; returns 0."""
    p = CommandParser(prog="python -m dfpir.summary", description=__doc__)
    p.add_argument("--size", type=int, default=256, help="image side in pixels for the FLOPs (default 256; counted padded to a multiple of 8)")
    args = p.parse_args(argv)
    check_at_least("--size", args.size, 1, "pixels")
    print(f"{'preset':<10} {'parameters':>12} {'trainable':>12} {f'GFLOPs@{args.size}':>13}")
    for name, cfg in PRESETS.items():
        model = DFPIR(cfg)
        flops = count_flops(cfg, args.size)
        print(f"{name:<10} {model.num_parameters():>12,} {model.num_parameters(True):>12,} {flops / 1e9:>13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
