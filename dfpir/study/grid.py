"""Named grids: arms x seeds x one training budget, and the training config of each run.

Every run of a grid trains with the same budget (steps, batch, patch, schedule: ``budget``, in
``python -m dfpir.train``'s ``section.key=value`` form); runs differ only in the network
(``[model]``), the seed, ``train.init`` ([`arms`][dfpir.study.arms]), where they write and, for specialists,
their one degradation. For one seed, the all-in-one arms see the same samples in the same order.

``default`` is the grid of the study's pre-registered design (``docs/study.md``); its pilot is
its first runs (``--arms dfpir,restormer --seeds 0,1``). ``micro`` is the tests'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..degradations import synthetic_names
from ..errors import UserError
from ..model.config import DFPIRConfig
from ..train import TrainConfig, resolve
from ..train.config import validate
from .arms import ARMS, Arm, arm_config, check_arm

MIN_CONFLICT_BATCHES = 50
"""Batches a real grid averages each gradient-conflict measurement over (the micro grid uses fewer)."""


@dataclass(frozen=True)
class Run:
    """One training run of a grid: an arm at a seed (a specialist: on one degradation)."""

    arm: str
    seed: int
    degradations: tuple[str, ...]

    @property
    def id(self) -> str:
        """The run's name: its folder under the runs folder and its result file's stem."""
        if ARMS[self.arm].specialist:
            return f"{self.arm}-{self.degradations[0]}-s{self.seed}"
        return f"{self.arm}-s{self.seed}"


@dataclass(frozen=True)
class Grid:
    """A declared study: which arms, seeds and degradations, the shared budget and the measurements.

    Attributes
    ----------
    name : str
        Its name (``--grid``).
    arms, seeds, degradations : tuples
        The all-in-one arms train on every degradation; a specialist arm makes one run per
        degradation.
    budget : tuple of str
        ``section.key=value`` overrides of the ``demo`` training preset shared by every run (the
        model preset, steps, batch, patch, schedule).
    measure_at : tuple of int
        The steps whose checkpoints get a gradient-conflict measurement; the last is
        ``train.steps``.
    conflict_batches, conflict_batch, conflict_patch : int
        Each measurement averages over this many batches of this many crops of this size.
    eval_side : int
        Held-out photos are first scaled (area averaging) so their shorter side is this long; 0
        keeps them as they are. A wallpaper's 256-pixel centre is a tenth of its width, often
        all out-of-focus background; scaled, the crop holds a scene.
    eval_crop : int
        Held-out photos are centre-cropped to this square.
    eval_images : int
        At most this many held-out photos (the first in name order); 0: all.
    """

    name: str
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    degradations: tuple[str, ...]
    budget: tuple[str, ...]
    measure_at: tuple[int, ...]
    conflict_batches: int = MIN_CONFLICT_BATCHES
    conflict_batch: int = 4
    conflict_patch: int = 64
    eval_side: int = 0
    eval_crop: int = 256
    eval_images: int = 0

    def base_config(self) -> TrainConfig:
        """The budget as a training config (the published model, every degradation)."""
        return resolve("demo", overrides=[*self.budget, f"data.degradations={json.dumps(list(self.degradations))}"])

    def model(self) -> DFPIRConfig:
        """The published network at this grid's scale."""
        return self.base_config().model.config()

    def runs(self, arms: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Run]:
        """Every run, seed by seed (a study stopped early has whole seeds done); ``arms`` and
        ``seeds`` select a part of the grid (a pilot), in the grid's order."""
        for name in arms or ():
            if name not in self.arms:
                raise UserError(f"grid {self.name} has no arm {name!r}; its arms: {', '.join(self.arms)}")
        for seed in seeds or ():
            if seed not in self.seeds:
                raise UserError(f"grid {self.name} has no seed {seed}; its seeds: {', '.join(map(str, self.seeds))}")
        out = []
        for seed in [s for s in self.seeds if seeds is None or s in seeds]:
            for name in [a for a in self.arms if arms is None or a in arms]:
                if ARMS[name].specialist:
                    out += [Run(name, seed, (d,)) for d in self.degradations]
                else:
                    out.append(Run(name, seed, self.degradations))
        return out

    def check(self) -> None:
        """Refuse a grid whose parts do not fit together, with a one-line reason."""
        for name in self.arms:
            check_arm(name)
        unknown = [d for d in self.degradations if d not in synthetic_names()]
        if unknown:
            raise UserError(f"grid {self.name}: {unknown[0]!r} has no synthetic model; known: {', '.join(synthetic_names())}")
        steps = self.base_config().train.steps
        if not self.measure_at or list(self.measure_at) != sorted(set(self.measure_at)) or self.measure_at[-1] != steps \
                or self.measure_at[0] < 1:
            raise UserError(f"grid {self.name}: measure_at must be increasing steps >= 1 ending at train.steps={steps}, "
                            f"got {list(self.measure_at)}")
        if self.name != "micro" and self.conflict_batches < MIN_CONFLICT_BATCHES:
            raise UserError(f"grid {self.name}: conflict_batches must be >= {MIN_CONFLICT_BATCHES}")


def train_config(grid: Grid, run: Run, runs_root: Path, device: str = "auto", threads: int = 0) -> TrainConfig:
    """The training config of ``run``: the budget, the arm's network, the run's seed, degradations and files."""
    arm: Arm = ARMS[run.arm]
    cfg = grid.base_config()
    published = cfg.model.config().to_dict()
    changed = {k: v for k, v in arm_config(arm, cfg.model.config()).to_dict().items() if v != published[k]}
    cfg.model.overrides.update(changed)  # only what the arm changes: [model] stays readable
    cfg.data.degradations = list(run.degradations)
    cfg.data.ratios = []  # equal shares: a specialist has one degradation
    cfg.train.seed = run.seed
    cfg.train.out_dir = str(runs_root / run.id)
    cfg.train.init = str(init_path(runs_root, run))
    cfg.train.device, cfg.train.threads = device, threads
    validate(cfg)
    return cfg


def init_path(runs_root: Path, run: Run) -> Path:
    """Where the initial weights of ``run`` are written ([`initial_model`][dfpir.study.arms.initial_model])."""
    return runs_root / "init" / f"{run.id}.safetensors"


MACHINE_KEYS = ("device", "threads")
"""``[train]`` keys that say where a run ran, not what it is: left out of the recorded config."""


def recorded_config(cfg: TrainConfig, run: Run) -> dict:
    """The config as a result file records it: paths relative to the runs folder, no machine keys."""
    values = cfg.to_dict()
    values["train"] = {k: v for k, v in values["train"].items() if k not in MACHINE_KEYS}
    values["train"]["out_dir"] = run.id
    values["train"]["init"] = f"init/{run.id}.safetensors"
    return values


# The budget every real grid shares, on top of the demo preset; the model preset and length vary.
_COMMON = ("train.ema_decay=0", "train.classifier=false", "optim.lr=1e-3", "optim.warmup_steps=100",
           "optim.min_lr=1e-5", "optim.grad_clip=1.0", "optim.batch_size=8", "data.patch_size=64")

GRIDS: dict[str, Grid] = {g.name: g for g in [
    # Tests only: two arms, one seed, four steps of a very small network.
    Grid("micro", arms=("dfpir", "restormer"), seeds=(0,), degradations=("noise25", "rain"),
         budget=("model.preset=tiny", "model.dim=8", "model.num_refinement_blocks=0", "train.ema_decay=0",
                 "train.classifier=false", "optim.batch_size=2", "optim.warmup_steps=0", "data.patch_size=16",
                 "data.val_crop=16", "data.val_patches_per_image=1", "train.steps=4", "train.val_every=4",
                 "train.ckpt_every=2", "train.log_every=1"),
         measure_at=(2, 4), conflict_batches=2, conflict_batch=2, conflict_patch=16, eval_crop=32),
    # The study (docs/study.md): five degradations, every arm, three seeds, 800 steps of the tiny
    # network; about 7 hours on 2 CPU cores, no run over 20 minutes.
    Grid("default", arms=tuple(ARMS), seeds=(0, 1, 2), degradations=("noise25", "rain", "haze", "blur", "lowlight"),
         budget=(*_COMMON, "model.preset=tiny", "train.steps=800", "train.val_every=400", "train.ckpt_every=100"),
         measure_at=(400, 800), conflict_batch=2, eval_side=512),
]}
"""The declared grids, by name."""


def get_grid(name: str) -> Grid:
    """The grid called ``name``, checked; a [`UserError`][dfpir.errors.UserError] naming the known ones otherwise."""
    if name not in GRIDS:
        raise UserError(f"unknown study grid {name!r}; known: {', '.join(GRIDS)}")
    grid = GRIDS[name]
    grid.check()
    return grid
