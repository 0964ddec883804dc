"""Training recipes for motion blur: which change makes the tiny network deblur.

The shipped weights gain about what one fixed sharpening filter gains on motion blur. This
experiment trains the ``tiny`` network on blur alone from the clean corpus (``python -m dfpir.data
corpus``, degraded then cropped), once per recipe ``Variant`` and seed, and scores every run with
[`deblur_bound`][dfpir.analysis.blur_bound.deblur_bound] on crops of held-out photos: the input,
the true-kernel Wiener bound, the fixed filter and the model, all on the same crops. A change
helps when its paired difference against ``base`` over seeds has an interval above zero.

Each finished run writes ``RESULTS/VARIANT-sSEED.json`` and rewrites ``RESULTS/report.md``; an
interrupted run continues from its checkpoint (``--resume`` is exact); the report reads only the
result files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..analysis.blur_bound import deblur_bound
from ..checkpoint import load
from ..errors import UserError
from ..files import atomic_write, file_sha256
from ..train import TrainConfig, pick_device, resolve
from ..train import run as train_run
from .measure import heldout_set
from .runner import device_name, write_json
from .stats import Interval, interval, paired


@dataclass(frozen=True)
class Variant:
    """One recipe: ``overrides`` (``section.key=value``) of the shared budget ``BLUR_BUDGET``, and
    ``part``: a subfolder of the corpus to train on instead of all of it ("": all)."""

    name: str
    what: str
    overrides: tuple[str, ...] = ()
    part: str = ""


BLUR_BUDGET = ("model.preset=tiny", "data.layout=clean", "data.holdout=10", 'data.degradations=["blur"]',
               "train.classifier=false", "train.ema_decay=0", "optim.lr=1e-3", "optim.warmup_steps=50",
               "optim.min_lr=1e-5", "optim.grad_clip=1.0", "optim.batch_size=8", "data.patch_size=64",
               "train.steps=500", "train.val_every=500", "train.ckpt_every=100", "train.log_every=25")
"""What every variant shares unless it says otherwise: the tiny network, blur only, 500 steps of
8 crops of 64 px (the study's schedule), no EMA, no classifier."""

VARIANTS: tuple[Variant, ...] = (
    Variant("base", "the shared budget: L1, 8 crops of 64 px"),
    Variant("fft", "L1 plus 0.1 x L1 of the spectrum (optim.fft_weight=0.1)", ("optim.fft_weight=0.1",)),
    Variant("patch128", "2 crops of 128 px: the same pixels per step, 4x the area around each kernel",
            ("data.patch_size=128", "optim.batch_size=2")),
    Variant("steps4x", "2000 steps instead of 500: four times the budget, the cosine decay spread over them",
            ("train.steps=2000",)),
    Variant("small", "the small preset: 24 channels at full resolution, two blocks per level", ("model.preset=small",)),
    Variant("curriculum", "one fixed kernel at first: the share of kernels from the full distribution grows "
            "from 0 to 1 over the first 250 steps", ("data.blur_curriculum=250",)),
    Variant("photos", "the corpus's photos only, without its dead-leaves images", part="photos"),
    Variant("photos4x", "the corpus's photos only, 2000 steps (photos and steps4x together)", ("train.steps=2000",),
            part="photos"),
)
"""The variants, pre-registered in docs/results.md before their runs."""

SEEDS = (0, 1, 2)
EVAL = {"side": 512, "crop": 256, "count": 64, "patch": 128, "seed": 0}
"""Held-out photos scaled to a 512-px shorter side, centre 256 px; 64 crops of 128 px scored."""


def variant(name: str) -> Variant:
    """The variant called ``name``."""
    for v in VARIANTS:
        if v.name == name:
            return v
    raise UserError(f"unknown blur recipe {name!r}; known: {', '.join(v.name for v in VARIANTS)}")


def run_config(v: Variant, seed: int, corpus: str, runs: Path, device: str = "auto", threads: int = 0,
               extra: Sequence[str] = ()) -> TrainConfig:
    """The training config of ``v`` at ``seed`` (``extra``: overrides after the variant's, for tests)."""
    root = str(Path(corpus) / v.part) if v.part else corpus
    return resolve("demo", overrides=[*BLUR_BUDGET, *v.overrides, *extra, f"data.root={json.dumps(root)}",
                                      f"train.seed={seed}", f"train.out_dir={json.dumps(str(runs / f'{v.name}-s{seed}'))}",
                                      f"train.device={device}", f"train.threads={threads}"])


def recorded(cfg: TrainConfig, part: str = "") -> dict[str, Any]:
    """The config as a result records it: no paths or machine keys, which do not change a run,
    but the SHA-256 of the corpus's ``manifest.json`` (which lists every file's hash) and, for a
    variant that trains on a ``part`` of the corpus (``data.root`` is then that subfolder), the part."""
    values = cfg.to_dict()
    for key in ("out_dir", "device", "threads"):
        values["train"].pop(key)
    root = Path(values["data"].pop("root"))
    manifest = (root.parent if part else root) / "manifest.json"
    values["data"]["manifest_sha256"] = file_sha256(manifest) if manifest.is_file() else None
    if part:
        values["data"]["corpus_part"] = part
    return values


def run_one(v: Variant, seed: int, cfg: TrainConfig, photos: Sequence[np.ndarray], ev: dict[str, int]) -> dict[str, Any]:
    """Train (or continue) one run and score it on crops of ``photos`` ((H, W, 3) each)."""
    last = Path(cfg.train.out_dir) / "last.safetensors"
    start = time.perf_counter()
    train_run(cfg, resume="auto" if last.is_file() else None, overwrite=not last.is_file())
    trained = time.perf_counter() - start
    r = deblur_bound(photos, ev["count"], ev["patch"], ev["seed"], models={"model": load(last).eval()})
    return {"variant": v.name, "seed": seed, "config": recorded(cfg, v.part), "eval": ev,
            "input_psnr": r["input_psnr"], "wiener_psnr": r["wiener_psnr"], "fixed_psnr": r["fixed_psnr"],
            "model_psnr": r["models"]["model"], "train_s_since_resume": round(trained, 1),
            "device": device_name(pick_device(cfg.train.device)), "torch": torch.__version__}


def run_all(corpus: str, heldout: str, runs: Path, results: Path, names: Sequence[str] | None = None,
            seeds: Sequence[int] = SEEDS, device: str = "auto", threads: int = 0, extra: Sequence[str] = (),
            evaluation: dict[str, int] | None = None) -> list[Path]:
    """Every run of ``names`` (default: all variants) x ``seeds`` without a result file yet
    (``extra`` overrides and a smaller ``evaluation`` than ``EVAL``: for tests)."""
    ev = evaluation or EVAL
    chosen = [variant(n) for n in (names or [v.name for v in VARIANTS])]
    ho = heldout_set(heldout, ev["crop"], 0, ev["side"])
    photos = [image.permute(1, 2, 0).numpy() for image in ho.images]  # (S, S, 3) each
    files = []
    for seed in seeds:
        for v in chosen:
            out = results / f"{v.name}-s{seed}.json"
            cfg = run_config(v, seed, corpus, runs, device, threads, extra)
            if out.is_file():
                if json.loads(out.read_text()).get("config") != recorded(cfg, v.part):
                    raise UserError(f"{out} was made with another config than {v.name} has now; delete it and "
                                    f"{cfg.train.out_dir} to redo the run")
                print(f"{out.stem}: done, skipped")
            else:
                write_json(out, {**run_one(v, seed, cfg, photos, ev), "heldout": ho.record()})
                print(f"{out.stem}: recorded in {out}; report: {write_report(results)}")
            files.append(out)
    return files


def _gains(rows: list[dict[str, Any]], key: str) -> dict[int, float]:
    return {r["seed"]: r[key] - r["input_psnr"] for r in rows}


def _fmt(i: Interval) -> str:
    if math.isnan(i.half):
        return f"{i.mean:+.2f} (n={i.n})"
    return f"{i.mean:+.2f} [{i.low:+.2f}, {i.high:+.2f}]"


def verdict(diff: Interval) -> str:
    """What a paired difference against ``base`` says, from its interval alone."""
    if diff.n < 2:
        return "too few seeds"
    if diff.above():
        return "helps"
    if diff.below():
        return "hurts"
    return "no difference beyond the seeds' spread"


def report(results: Path) -> str:
    """The Markdown report of the result files under ``results``.

    Raises
    ------
    UserError
        If there are none, or they were scored on different crops (which are never pooled).
    """
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("*-s*.json"))]
    if not rows:
        raise UserError(f"{results}: no result files; run `python -m dfpir.study blur-recipes` first")
    first = rows[0]
    for r in rows:
        if (r["eval"], r["heldout"]["digest"], r["input_psnr"]) != (first["eval"], first["heldout"]["digest"], first["input_psnr"]):
            raise UserError(f"{results}: the result files were scored on different held-out crops; keep one set")
    ev = first["eval"]
    base = _gains([r for r in rows if r["variant"] == "base"], "model_psnr")
    lines = [f"Motion blur only, tiny network; {ev['count']} crops of {ev['patch']} px from "
             f"{len(first['heldout']['images'])} held-out photos, blurred input {first['input_psnr']:.2f} dB. On the same "
             f"crops one fixed filter for every kernel gains {first['fixed_psnr'] - first['input_psnr']:+.2f} dB and Wiener "
             f"deconvolution with the true kernel {first['wiener_psnr'] - first['input_psnr']:+.2f} dB. Model gains over "
             "the input in dB, mean and 95% interval over seeds.", "",
             "| variant | seeds | gain | minus base (paired) | verdict | minus the fixed filter | beyond it |",
             "|---|---|---|---|---|---|---|"]
    helps, beyond = [], []
    for v in VARIANTS:
        model = _gains([r for r in rows if r["variant"] == v.name], "model_psnr")
        if not model:
            continue
        diff = paired(model, base) if v.name != "base" else None
        over_fixed = interval([g - (first["fixed_psnr"] - first["input_psnr"]) for g in model.values()])
        lines.append(f"| {v.name} | {','.join(map(str, sorted(model)))} | {_fmt(interval(list(model.values())))} | "
                     f"{_fmt(diff) if diff else '-'} | {verdict(diff) if diff else '-'} | {_fmt(over_fixed)} | "
                     f"{'yes' if over_fixed.above() else 'no'} |")
        helps += [v.name] if diff and verdict(diff) == "helps" else []
        beyond += [v.name] if over_fixed.above() else []
    lines += ["", f"Recipes that help: {_names(helps)}. Runs beyond the fixed filter: {_names(beyond)}."]
    lines += ["", "Variants:", ""] + [f"- `{v.name}`: {v.what}" for v in VARIANTS]
    return "\n".join(lines) + "\n"


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def write_report(results: Path) -> Path:
    """``results/report.md`` from the result files."""
    text = report(results)
    out = results / "report.md"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return out
