"""Run a grid: each run trained, measured and recorded in one JSON file; a stopped study resumes.

A run is trained in segments that end at the grid's ``measure_at`` steps (``stop_at``; the
schedule still spans the whole run), and its last checkpoint gets a gradient-conflict measurement
after each. What is measured so far, and the wall time spent, is kept in ``study.json`` in the
run's folder; the run's result file is written (atomically) only when everything is done. So:

* a run whose result file exists is skipped (after checking it was made as the grid now says);
* an interrupted run continues from its ``last.safetensors`` exactly (``python -m dfpir.train
  --resume``), with its measurements so far kept;
* a run folder without a checkpoint starts over.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import safe_open

from ..checkpoint import load, save
from ..errors import UserError
from ..files import atomic_write
from ..train import TrainConfig, pick_device
from ..train import run as train_run
from ..train.config import resume_changes
from ..train.loop import read_resumable
from .arms import ARMS, backbone, initial_model
from .grid import Grid, Run, init_path, recorded_config, train_config
from .measure import HeldOut, evaluate, gradient_conflicts

SCHEMA = 1
"""Version of the result files' layout."""


def write_json(path: Path, values: dict[str, Any]) -> None:
    """``values`` as sorted, indented JSON (no NaN), written atomically."""
    text = json.dumps(values, sort_keys=True, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def checkpoint_step(path: Path) -> int:
    """The step ``path`` (a ``last.safetensors``) was saved at; 0 when there is none."""
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("step", 0))


def device_name(device: torch.device) -> str:
    """The device in words, for the record: ``cpu (x86_64)`` or ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.machine()})"


class Progress:
    """A run's ``study.json``: the measurements done so far and the wall time they took."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"conflicts": {}, "wall_s": 0.0}
        self.since = time.perf_counter()

    def save(self) -> None:
        """Add the time since the last save and write the file."""
        now = time.perf_counter()
        self.values["wall_s"] += now - self.since
        self.since = now
        write_json(self.path, self.values)


def run_grid(grid: Grid, heldout: HeldOut, runs_root: Path, results: Path, device: str = "auto", threads: int = 0,
             arms: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
             on_recorded: Callable[[], object] | None = None, shard: tuple[int, int] = (1, 1)) -> list[Path]:
    """Every run of ``grid`` (or of its ``arms`` and ``seeds`` only) not yet recorded under
    ``results``; returns the result files, all of them. ``on_recorded`` is called after each new
    result file (the command rewrites the report there, so a study stopped at any time has one).

    ``shard = (k, n)`` takes only every n-th of those runs, starting at the k-th (1-based): n
    processes with k = 1 ... n share a grid between them (on one GPU, say) without two of them
    ever touching the same run's files.
    """
    grid.check()
    k, n = shard
    files = []
    for r in grid.runs(arms, seeds)[k - 1 :: n]:
        cfg = train_config(grid, r, runs_root, device, threads)
        record_of = {"config": recorded_config(cfg, r), "heldout": heldout.record()}
        out = results / f"{r.id}.json"
        if out.is_file():
            check_recorded(out, record_of, runs_root / r.id)
            print(f"{r.id}: done ({out}), skipped")
        else:
            write_json(out, {**record_of, **run_one(grid, r, cfg, heldout, runs_root)})
            print(f"{r.id}: recorded in {out}")
            if on_recorded is not None:
                on_recorded()
        files.append(out)
    return files


def check_recorded(path: Path, expected: dict[str, Any], folder: Path) -> None:
    """Refuse a result file made with another config or held-out set than the grid's now."""
    redo = f"to redo the run delete it and {folder}, or give another --results folder"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable result file ({exc}); {redo}") from None
    for key, value in expected.items():
        if found.get(key) != value:
            raise UserError(f"{path} was made with another {key} than the grid's now; {redo}")


def check_checkpoint(last: Path, cfg: TrainConfig) -> None:
    """Refuse to continue a run whose checkpoint was made otherwise than ``cfg`` says: only where
    it runs and how often it reports may differ (its length fixes the schedule)."""
    _, _, stored = read_resumable(last)
    if "train.steps" in resume_changes(stored, cfg, last):
        raise UserError(f"{last} belongs to a run of {stored.train.steps} steps, the grid's have {cfg.train.steps}; "
                        f"delete {last.parent} to redo the run")


def run_one(grid: Grid, r: Run, cfg: TrainConfig, heldout: HeldOut, runs_root: Path) -> dict[str, Any]:
    """Train, measure and evaluate one run (continuing where it stopped); its record."""
    folder = Path(cfg.train.out_dir)
    last = folder / "last.safetensors"
    progress = Progress(folder / "study.json")
    if last.is_file():
        check_checkpoint(last, cfg)  # also when nothing is left to train: the record must describe it
    else:  # nothing to continue: measurements of an earlier start do not count
        progress.values = {"conflicts": {}, "wall_s": 0.0}
    device = pick_device(cfg.train.device)
    model_cfg = cfg.model.config()
    save(initial_model(ARMS[r.arm], grid.model(), r.seed, cfg.data.degradations), init_path(runs_root, r))
    specialist = ARMS[r.arm].specialist
    for step in (grid.measure_at[-1:] if specialist else grid.measure_at):
        if str(step) in progress.values["conflicts"]:
            continue
        if checkpoint_step(last) < step:
            try:
                train_run(cfg, resume="auto" if last.is_file() else None, stop_at=step, overwrite=not last.is_file())
            finally:
                progress.save()
        progress.values["conflicts"][str(step)] = None if specialist else gradient_conflicts(
            load(last), cfg.data.degradations, grid.conflict_batches, grid.conflict_batch, grid.conflict_patch, device)
        progress.save()
    model = load(last)
    if model.config != model_cfg:
        raise UserError(f"{last} holds another network than the run's config; delete {folder} to redo the run")
    metrics = evaluate(model, heldout, cfg.data.degradations, device)
    progress.save()
    return {
        "schema": SCHEMA,
        "grid": grid.name,
        "run": r.id,
        "arm": r.arm,
        "seed": r.seed,
        "specialist": specialist,
        "degradations": list(cfg.data.degradations),
        "parameters": {"total": model.num_parameters(), "trainable": model.num_parameters(trainable_only=True),
                       "backbone": sum(p.numel() for n, p in model.named_parameters() if backbone(n))},
        "metrics": metrics,
        "conflicts": [] if specialist else [{"step": int(s), **m} for s, m in sorted(progress.values["conflicts"].items(), key=lambda kv: int(kv[0]))],
        "wall_s": round(progress.values["wall_s"], 3),
        "device": device_name(device),
        "torch": torch.__version__,
    }
