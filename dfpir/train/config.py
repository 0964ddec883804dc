"""Training configuration: nested dataclasses, named presets, TOML files and dotted overrides.

Resolution order: preset -> ``--config FILE.toml`` -> ``key=value`` overrides on the command
line (e.g. ``optim.lr=2e-4 data.patch_size=96``). Unknown keys, values of the wrong type and
values out of range are rejected with a one-line message by :func:`resolve`, before training
writes anything. The resolved config is written next to every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..degradations import DEGRADATIONS, synthetic_names
from ..errors import UserError, check_at_least

if typing.TYPE_CHECKING:
    from ..model.config import DFPIRConfig



@dataclass
class ModelSection:
    """Which network to train: a preset of :mod:`dfpir.model.config` plus field overrides."""

    preset: str = "tiny"
    guidance: str = "faithful"
    # Architecture overrides of the preset (0 or []: the preset's own value), see DFPIRConfig.
    dim: int = 0
    num_blocks: list[int] = field(default_factory=list)
    num_refinement_blocks: int = -1  # -1: the preset's
    heads: list[int] = field(default_factory=list)
    ffn_expansion_factor: float = 0.0

    def config(self) -> "DFPIRConfig":
        """The network this section describes: the preset with the overrides applied.

        Raises
        ------
        UserError
            If the preset is unknown or the overrides do not make a valid network.
        """
        from ..model.config import PRESETS as MODEL_PRESETS, get_config

        if self.preset not in MODEL_PRESETS:
            raise UserError(f"unknown model preset {self.preset!r}; choose one of: {', '.join(MODEL_PRESETS)}")
        changes: dict[str, Any] = {"guidance": self.guidance}
        if self.dim:
            changes["dim"] = self.dim
        if self.num_blocks:
            changes["num_blocks"] = tuple(self.num_blocks)
        if self.num_refinement_blocks >= 0:
            changes["num_refinement_blocks"] = self.num_refinement_blocks
        if self.heads:
            changes["heads"] = tuple(self.heads)
        if self.ffn_expansion_factor:
            changes["ffn_expansion_factor"] = self.ffn_expansion_factor
        try:
            return get_config(self.preset, **changes)
        except (ValueError, TypeError) as exc:
            raise UserError(f"model section: {exc}") from None


@dataclass
class DataSection:
    """Where samples come from (see :mod:`dfpir.data`)."""

    layout: str = "builtin"
    root: str = ""
    degradations: list[str] = field(default_factory=synthetic_names)
    patch_size: int = 64
    ratios: list[float] = field(default_factory=list)  # relative share of each degradation; []: equal
    workers: int = 0
    val_patches_per_image: int = 2
    val_crop: int = 128  # the narrowest held-out strip of the built-in photos is 136 px


@dataclass
class OptimSection:
    """Optimiser and schedule: Adam(W), linear warm-up, cosine decay to ``min_lr``."""

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 0
    cosine_steps: int = 0  # 0: decay over the whole run
    min_lr: float = 0.0
    grad_clip: float = 0.0  # 0: off
    fft_weight: float = 0.0  # weight of an L1 loss on the 2-D spectrum, added to the pixel L1
    batch_size: int = 8  # global, summed over processes
    accum_steps: int = 1


@dataclass
class TrainSection:
    """Run length, precision, checkpointing and logging."""

    steps: int = 1000
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only, with loss scaling)
    channels_last: bool = False
    ema_decay: float = 0.0  # 0: no EMA weights
    val_every: int = 250
    ckpt_every: int = 250
    log_every: int = 10
    out_dir: str = "runs/demo"
    device: str = "auto"
    classifier: bool = True
    threads: int = 0  # 0: torch's default
    init: str = ""  # start from these weights (a dfpir checkpoint): fine-tuning; "": from scratch


@dataclass
class TrainConfig:
    """Everything ``python -m dfpir.train`` needs."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts, one per section."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML (for ``config.toml`` next to checkpoints)."""
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)


PRESETS: dict[str, dict[str, Any]] = {
    # CPU, built-in photos, all seven degradations, about ten minutes on 2 cores.
    "demo": {
        "optim": {"lr": 1e-3, "warmup_steps": 100, "min_lr": 1e-5, "grad_clip": 1.0},
        "train": {"steps": 600, "ema_decay": 0.995, "val_every": 300, "ckpt_every": 100},
    },
    # The recipe of the shipped weights (dfpir/weights/demo.safetensors): the demo, trained longer,
    # with motion blur drawn 4x as often as each other degradation (40% of samples): with equal
    # shares the tiny model learns nothing for blur in this budget (docs/results.md).
    "weights": {
        "data": {"ratios": [1, 1, 1, 1, 1, 4, 1]},
        "optim": {"lr": 1e-3, "warmup_steps": 100, "min_lr": 1e-5, "grad_clip": 1.0},
        "train": {"steps": 4500, "ema_decay": 0.995, "val_every": 500, "ckpt_every": 250, "out_dir": "runs/weights"},
    },
    # The paper's recipe (spec: L1, Adam 1e-4, batch 5, patch 128, ~80 epochs on one GPU).
    # Deviations: a validation split instead of test-set selection; steps instead of epochs.
    "3task": {
        "model": {"preset": "paper"},
        "data": {"layout": "3task", "degradations": ["noise15", "noise25", "noise50", "rain", "haze"], "patch_size": 128},
        "optim": {"lr": 1e-4, "batch_size": 5, "cosine_steps": 500 * 142_431 // 5},
        "train": {"steps": 80 * 142_431 // 5, "val_every": 5000, "ckpt_every": 5000, "out_dir": "runs/3task", "classifier": False},
    },
    "5task": {
        "model": {"preset": "paper"},
        "data": {"layout": "5task", "degradations": ["noise25", "rain", "haze", "blur", "lowlight"], "patch_size": 128},
        "optim": {"lr": 1e-4, "batch_size": 5, "cosine_steps": 500 * 226_621 // 5},
        "train": {"steps": 80 * 226_621 // 5, "val_every": 5000, "ckpt_every": 5000, "out_dir": "runs/5task", "classifier": False},
    },
}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting int -> float where harmless."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise UserError(f"config key {key} must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[]") for v in value]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise UserError(f"config key {key} must be true or false, got {value!r}")
    if annotation in (int, float, str) and (not isinstance(value, annotation) or isinstance(value, bool)):
        raise UserError(f"config key {key} must be {annotation.__name__}, got {value!r}")
    return value


def apply(cfg: TrainConfig, values: dict[str, Any], source: str) -> None:
    """Merge ``{section: {key: value}}`` into ``cfg``, rejecting unknown keys and wrong types."""
    sections = {f.name for f in dataclasses.fields(cfg)}
    for section, entries in values.items():
        if section not in sections:
            raise UserError(f"{source}: unknown config section [{section}]; known: {', '.join(sorted(sections))}")
        if not isinstance(entries, dict):
            raise UserError(f"{source}: [{section}] must be a table of keys")
        target = getattr(cfg, section)
        hints = typing.get_type_hints(type(target))
        for key, value in entries.items():
            if key not in hints:
                raise UserError(f"{source}: unknown config key {section}.{key}; known: {', '.join(sorted(hints))}")
            setattr(target, key, _coerce(value, hints[key], f"{section}.{key}"))


def parse_override(text: str) -> dict[str, Any]:
    """``"optim.lr=2e-4"`` -> ``{"optim": {"lr": 2e-4}}`` (values parsed as TOML, bare words as strings)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"override {text!r} must look like section.key=value (e.g. optim.lr=2e-4)")
    key, raw = text.split("=", 1)
    section, name = key.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as bf16 or runs/x
    return {section: {name: value}}


def resolve(preset: str = "demo", config_file: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Build the config from a preset, an optional TOML file and dotted overrides."""
    if preset not in PRESETS:
        raise UserError(f"unknown training preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = TrainConfig()
    apply(cfg, PRESETS[preset], f"preset {preset}")
    if config_file:
        apply(cfg, read_config_file(Path(config_file)), config_file)
    for text in overrides:
        apply(cfg, parse_override(text), "command line")
    validate(cfg)
    return cfg


def read_config_file(path: Path) -> dict[str, Any]:
    """The tables of a TOML config file, with one-line errors that name the file.

    Raises
    ------
    UserError
        If ``path`` is missing, a folder, not UTF-8 text or not valid TOML.
    """
    if path.is_dir():
        raise UserError(f"config file {path} is a folder; give a TOML file (--config FILE.toml)")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a TOML text file (not UTF-8 text); give a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from None


def validate(cfg: TrainConfig) -> None:
    """Range and cross-field checks with one-line messages, before anything is written.

    Raises
    ------
    UserError
        Naming the first bad key and the values it accepts.
    """
    from ..data.datasets import LAYOUTS

    cfg.model.config()  # raises on an unknown preset or an invalid architecture
    if not cfg.data.degradations:
        raise UserError(f"data.degradations must name at least one degradation; known: {', '.join(DEGRADATIONS)}")
    unknown = [d for d in cfg.data.degradations if d not in DEGRADATIONS]
    if unknown:
        raise UserError(f"unknown degradation {unknown[0]!r}; known: {', '.join(DEGRADATIONS)}")
    if cfg.data.layout not in LAYOUTS:
        raise UserError(f"unknown data.layout {cfg.data.layout!r}; known: {', '.join(LAYOUTS)}")
    # a missing data.root is refused when the data is built (before anything is written), not
    # here: --print-config must still show what a preset such as 3task sets
    if cfg.train.precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"train.precision must be fp32, bf16 or fp16, got {cfg.train.precision!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.train.device):
        raise UserError(f"train.device must be auto, cpu, cuda or cuda:N (N: a GPU number), got {cfg.train.device!r}")
    check_at_least("data.workers", cfg.data.workers, 0, "0: prepare batches in the training process")
    check_at_least("train.threads", cfg.train.threads, 0, "0: torch's default")
    for key, value in [("train.steps", cfg.train.steps), ("optim.batch_size", cfg.optim.batch_size),
                       ("optim.accum_steps", cfg.optim.accum_steps), ("data.val_patches_per_image", cfg.data.val_patches_per_image),
                       ("train.val_every", cfg.train.val_every), ("train.ckpt_every", cfg.train.ckpt_every),
                       ("train.log_every", cfg.train.log_every)]:
        check_at_least(key, value, 1)
    _validate_optim(cfg.optim)
    ratios = cfg.data.ratios
    if ratios and (len(ratios) != len(cfg.data.degradations) or min(ratios) < 0 or not sum(ratios)):
        raise UserError(
            f"data.ratios must be {len(cfg.data.degradations)} non-negative numbers (one per data.degradations entry, "
            f"not all 0), got {ratios}"
        )
    if ratios and cfg.data.layout not in ("builtin", "clean"):
        raise UserError(
            f"data.ratios needs synthetic degradations (data.layout builtin or clean); layout {cfg.data.layout} "
            "fixes each degradation's share by its dataset"
        )
    # Training patches and validation crops alike: the network pads other sizes to a multiple of
    # 8 (three 2x downsamplings), so it would be trained or scored on mirrored borders; 8 also
    # covers SSIM's 7 x 7 window.
    for key, value in [("data.patch_size", cfg.data.patch_size), ("data.val_crop", cfg.data.val_crop)]:
        if value < 8 or value % 8:
            raise UserError(f"{key} must be a multiple of 8 (8, 16, 24, ...), got {value}")
    if not 0 <= cfg.train.ema_decay < 1:
        raise UserError(f"train.ema_decay must be in [0, 1), got {cfg.train.ema_decay}")


def _validate_optim(o: OptimSection) -> None:
    """The optimiser's and schedule's ranges (NaN and infinities refused too)."""
    if not (math.isfinite(o.lr) and o.lr > 0):
        raise UserError(f"optim.lr must be a finite number > 0, got {o.lr}")
    if not 0 <= o.min_lr <= o.lr:
        raise UserError(f"optim.min_lr must be in [0, optim.lr = {o.lr}] (the floor of the cosine decay), got {o.min_lr}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise UserError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {o.betas}")
    check_at_least("optim.warmup_steps", o.warmup_steps, 0, "0: no warm-up")
    check_at_least("optim.cosine_steps", o.cosine_steps, 0, "0: decay over the whole run")
    check_at_least("optim.weight_decay", o.weight_decay, 0, "0: Adam, > 0: AdamW")
    check_at_least("optim.grad_clip", o.grad_clip, 0, "0: off")
    check_at_least("optim.fft_weight", o.fft_weight, 0)
