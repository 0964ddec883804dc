"""The ablation study of the issue "Does DFPIR reduce task interference?": its machinery.

- [`arms`][dfpir.study.arms]: one row per arm ([`ARMS`][dfpir.study.ARMS]), its network and initial weights
  ([`initial_model`][dfpir.study.arms.initial_model]: the same backbone for every arm of a seed);
- [`grid`][dfpir.study.grid]: named grids ([`GRIDS`][dfpir.study.GRIDS]: arms x seeds x one budget) and each run's training config;
- [`measure`][dfpir.study.measure]: the held-out set ([`heldout_set`][dfpir.study.measure.heldout_set]), [`evaluate`][dfpir.study.measure.evaluate] and [`gradient_conflicts`][dfpir.study.measure.gradient_conflicts];
- [`runner`][dfpir.study.runner]: [`run_grid`][dfpir.study.runner.run_grid], resumable, one JSON result file per run;
- [`stats`][dfpir.study.stats]: intervals over seeds, paired differences;
- [`report`][dfpir.study.report]: tables, plots and the conclusion from the result files alone ([`write_report`][dfpir.study.report.write_report]);
- [`recipes`][dfpir.study.recipes]: the motion-blur training recipes, seeds x variants, scored against the linear-filter bounds;
- [`cli`][dfpir.study.cli]: ``python -m dfpir.study run | report | blur-recipes | blur-report``.
"""

from .arms import ARMS, Arm, arm_config, initial_model, matched_blocks, shared_orders_
from .cli import build_parser, main
from .grid import GRIDS, Grid, Run, get_grid, recorded_config, train_config
from .measure import HeldOut, degraded, evaluate, gradient_conflicts, heldout_set
from .report import read_results, verdict, write_report
from .runner import run_grid
from .stats import interval, paired

__all__ = [
    "ARMS", "Arm", "arm_config", "initial_model", "matched_blocks", "shared_orders_",
    "build_parser", "main",
    "GRIDS", "Grid", "Run", "get_grid", "recorded_config", "train_config",
    "HeldOut", "degraded", "evaluate", "gradient_conflicts", "heldout_set",
    "read_results", "verdict", "write_report",
    "run_grid",
    "interval", "paired",
]
