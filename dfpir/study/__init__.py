"""The ablation study of the issue "Does DFPIR reduce task interference?": its machinery.

- :mod:`.arms`: one row per arm (:data:`ARMS`), its network and initial weights
  (:func:`initial_model`: the same backbone for every arm of a seed);
- :mod:`.grid`: named grids (:data:`GRIDS`: arms x seeds x one budget) and each run's training config;
- :mod:`.measure`: the held-out set (:func:`heldout_set`), :func:`evaluate` and :func:`gradient_conflicts`;
- :mod:`.runner`: :func:`run_grid`, resumable, one JSON result file per run;
- :mod:`.stats`: intervals over seeds, paired differences;
- :mod:`.report`: tables, plots and the conclusion from the result files alone (:func:`write_report`);
- :mod:`.cli`: ``python -m dfpir.study run | report``.
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
