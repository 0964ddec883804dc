"""Training configuration: nested dataclasses, named presets, TOML files and dotted overrides.

Resolution order: preset -> ``--config FILE.toml`` -> ``key=value`` overrides on the command
line (e.g. ``optim.lr=2e-4 data.patch_size=96``). Unknown keys, values of the wrong type and
values out of range are rejected with a one-line message by [`resolve`][dfpir.train.config.resolve], before training
writes anything. The resolved config is written next to every checkpoint.

A resumed run is configured by its checkpoint instead ([`resume_config`][dfpir.train.config.resume_config]): the command line
may change only the settings in [`SAFE_ON_RESUME`][dfpir.train.config.SAFE_ON_RESUME].
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import LAYOUTS
from ..degradations import DEGRADATIONS, synthetic_names
from ..errors import UserError, check_at_least
from ..model.config import PRESETS as MODEL_PRESETS, DFPIRConfig, get_config

MODEL_KEYS: dict[str, Any] = typing.get_type_hints(DFPIRConfig)
"""The keys of ``[model]``: ``preset`` and every other field of [`DFPIRConfig`][dfpir.model.config.DFPIRConfig], with their types."""

# What the ``[model]`` section of configs written before it held only overrides used for "the
# preset's own value"; such configs are still read (a run resumed across the change).
_LEGACY_UNSET = {"dim": 0, "num_blocks": [], "num_refinement_blocks": -1, "heads": [], "ffn_expansion_factor": 0.0}


@dataclass
class ModelSection:
    """Which network to train: a preset of [`dfpir.model.config`][dfpir.model.config] and overrides of its fields.

    ``overrides`` holds only the fields that were set (``dim``, ``guidance``, ...); the network is
    the preset with them applied, and [`DFPIRConfig`][dfpir.model.config.DFPIRConfig] itself checks the values.
    """

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)

    def set(self, key: str, value: Any, source: str) -> None:
        """Set ``preset`` or override one [`DFPIRConfig`][dfpir.model.config.DFPIRConfig] field, checking the key and its type."""
        if key not in MODEL_KEYS:
            raise UserError(f"{source}: unknown config key model.{key}; known: {', '.join(sorted(MODEL_KEYS))}")
        value = _coerce(value, MODEL_KEYS[key], f"model.{key}")
        if key == "preset":
            self.preset = value
        else:
            self.overrides[key] = value

    def config(self) -> DFPIRConfig:
        """The network this section describes: the preset with the overrides applied.

        Raises
        ------
        UserError
            If the preset is unknown or the overrides do not make a valid network.
        """
        if self.preset not in MODEL_PRESETS:
            raise UserError(f"unknown model preset {self.preset!r}; choose one of: {', '.join(MODEL_PRESETS)}")
        try:
            return get_config(self.preset, **self.overrides)
        except (ValueError, TypeError) as exc:
            raise UserError(f"model section: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """``preset`` and the fields set, as written to ``[model]``."""
        return {"preset": self.preset, **self.overrides}


@dataclass
class DataSection:
    """Where samples come from (see [`dfpir.data`][dfpir.data])."""

    layout: str = "builtin"
    root: str = ""
    degradations: list[str] = field(default_factory=synthetic_names)
    patch_size: int = 64
    ratios: list[float] = field(default_factory=list)  # relative share of each degradation; []: equal
    workers: int = 0
    val_patches_per_image: int = 2
    val_crop: int = 128  # the narrowest held-out strip of the built-in photos is 136 px
    # Files under data.root: every holdout-th file of each task is validation, never trained on
    # (0: validate on the built-in photos, for the clean layout only).
    holdout: int = 0
    size_mismatch: str = "error"  # a pair whose input and target differ in size: "error" or "crop"
    blur_curriculum: int = 0  # steps from one blur kernel to the full distribution (dfpir.data.curriculum); 0: off


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
    # The classifier also learns "clean" from undegraded patches (auto then leaves a clean photo as
    # it is). Recorded only with a classifier; configs recorded before it existed read as false.
    clean_class: bool = True
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
        """The config as nested plain dicts, one per section (``[model]``: only what is set;
        ``train.clean_class`` only with a classifier and ``data.blur_curriculum`` only when on,
        where they mean something)."""
        values = {"model": self.model.to_dict(), **{s: dataclasses.asdict(getattr(self, s)) for s in ("data", "optim", "train")}}
        # Keys that mean nothing here are left out, so such a run records the same config as before they existed.
        if not self.train.classifier:
            del values["train"]["clean_class"]
        if not self.data.blur_curriculum:
            del values["data"]["blur_curriculum"]
        return values

    def to_toml(self) -> str:
        """The config as TOML (for ``config.toml`` next to checkpoints)."""
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> "TrainConfig":
        """The config recorded as [`to_dict`][dfpir.train.config.ModelSection.to_dict] (in a checkpoint), checked like a config file."""
        model = dict(values.get("model", {}))
        for key, unset in _LEGACY_UNSET.items():
            if model.get(key) == unset:
                del model[key]
        train = dict(values.get("train", {}))
        train.setdefault("clean_class", False)  # recorded before the clean class existed: trained without it
        cfg = cls()
        apply(cfg, {**values, "model": model, "train": train}, source)
        validate(cfg)
        return cfg


PRESETS: dict[str, dict[str, Any]] = {
    # CPU, built-in photos, all seven degradations, about ten minutes on 2 cores.
    "demo": {
        "optim": {"lr": 1e-3, "warmup_steps": 100, "min_lr": 1e-5, "grad_clip": 1.0},
        "train": {"steps": 600, "ema_decay": 0.995, "val_every": 300, "ckpt_every": 100},
    },
    # The recipe of the shipped weights (dfpir/weights/demo.safetensors): the tiny model on the
    # clean corpus's photos (`make corpus`; without its dead-leaves images, which did not help blur),
    # degraded then cropped, every 10th file held out; motion blur drawn 4x as often as each other
    # degradation and a spectral L1 term (0.1), which helped blur in the pre-registered recipes
    # experiment (docs/results.md).
    "weights": {
        "data": {"layout": "clean", "root": "data/corpus/photos", "holdout": 10, "ratios": [1, 1, 1, 1, 1, 4, 1]},
        "optim": {"lr": 1e-3, "warmup_steps": 100, "min_lr": 1e-5, "grad_clip": 1.0, "fft_weight": 0.1},
        "train": {"steps": 7000, "ema_decay": 0.995, "val_every": 1000, "ckpt_every": 250, "out_dir": "runs/weights"},
    },
    # The paper's recipe (spec: L1, Adam 1e-4, batch 5, patch 128, ~80 epochs on one GPU).
    # Deviations: a validation split (every 50th training file of each task) instead of test-set
    # selection; steps instead of epochs.
    "3task": {
        "model": {"preset": "paper"},
        "data": {"layout": "3task", "degradations": ["noise15", "noise25", "noise50", "rain", "haze"], "patch_size": 128, "holdout": 50},
        "optim": {"lr": 1e-4, "batch_size": 5, "cosine_steps": 500 * 142_431 // 5},
        "train": {"steps": 80 * 142_431 // 5, "val_every": 5000, "ckpt_every": 5000, "out_dir": "runs/3task", "classifier": False},
    },
    # The 5task layout's denoising folder is degraded at all three sigmas (dfpir.data.layouts.scan),
    # so those are the run's degradations (and prompts) too.
    "5task": {
        "model": {"preset": "paper"},
        "data": {"layout": "5task", "degradations": ["noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight"],
                 "patch_size": 128, "holdout": 50},
        "optim": {"lr": 1e-4, "batch_size": 5, "cosine_steps": 500 * 226_621 // 5},
        "train": {"steps": 80 * 226_621 // 5, "val_every": 5000, "ckpt_every": 5000, "out_dir": "runs/5task", "classifier": False},
    },
}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting int -> float where harmless."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):  # tuples (DFPIRConfig's) are written as TOML lists
        item = typing.get_args(annotation)[0]
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
        if isinstance(target, ModelSection):
            for key, value in entries.items():
                target.set(key, value, source)
            continue
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


def layers(preset: str | None, config_file: str | None, overrides: list[str]) -> list[tuple[dict[str, Any], str]]:
    """What a command line sets, in resolution order: ``(values, where they come from)`` each."""
    out = []
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown training preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        out.append((PRESETS[preset], f"preset {preset}"))
    if config_file:
        out.append((read_config_file(Path(config_file)), config_file))
    return out + [(parse_override(text), "command line") for text in overrides]


def resolve(preset: str | None = "demo", config_file: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Build the config from a preset (``None``: demo), an optional TOML file and dotted overrides."""
    cfg = TrainConfig()
    for values, source in layers(preset or "demo", config_file, overrides):
        apply(cfg, values, source)
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- resuming a run

SAFE_ON_RESUME = ("train.steps", "train.val_every", "train.ckpt_every", "train.log_every", "train.out_dir",
                  "train.device", "train.threads", "data.workers")
"""The settings a resumed run may change: how long it runs, how often it reports and saves, where
it writes and what it runs on. Everything else would make it another run than the one stored."""


def resume_config(stored: TrainConfig, checkpoint: Path, preset: str | None, config_file: str | None,
                  overrides: list[str]) -> TrainConfig:
    """The config of a resumed run: the one ``checkpoint`` was made with (``stored``), with what
    the command line sets on top (checked by [`resume_changes`][dfpir.train.config.resume_changes] when the run starts).

    ``train.out_dir`` is the checkpoint's folder unless the command line names another.
    """
    cfg = copy.deepcopy(stored)
    given = layers(preset, config_file, overrides)
    for values, source in given:
        apply(cfg, values, source)
    if not any("out_dir" in values.get("train", {}) for values, _ in given):
        cfg.train.out_dir = str(checkpoint.parent)
    validate(cfg)
    return cfg


def settings(cfg: TrainConfig) -> dict[str, Any]:
    """Every setting as ``section.key -> value``; the model as the fields of the network it makes
    (two ``[model]`` sections that name the same network are the same setting)."""
    flat = {f"model.{k}": v for k, v in cfg.model.config().to_dict().items()}
    for section, values in cfg.to_dict().items():
        if section != "model":
            flat.update({f"{section}.{k}": v for k, v in values.items()})
    return flat


def resume_changes(stored: TrainConfig, cfg: TrainConfig, checkpoint: Path) -> dict[str, list[Any]]:
    """The settings in which ``cfg`` differs from the run ``checkpoint`` was made with, as
    ``{key: [stored value, new value]}``; all of them must be in [`SAFE_ON_RESUME`][dfpir.train.config.SAFE_ON_RESUME].

    Raises
    ------
    UserError
        Naming every other difference.
    """
    before, after = settings(stored), settings(cfg)
    changed = {k: [before.get(k), after.get(k)] for k in {**before, **after} if before.get(k) != after.get(k)}
    if "train.classifier" in changed:  # the clean class comes and goes with the classifier: one change
        changed.pop("train.clean_class", None)
    unsafe = [f"{k}={json.dumps(old)} (now {json.dumps(new)})" for k, (old, new) in changed.items() if k not in SAFE_ON_RESUME]
    if unsafe:
        raise UserError(
            f"{checkpoint} was made with {'; '.join(unsafe)}; --resume continues a run as it was configured "
            f"and may change only {', '.join(SAFE_ON_RESUME)}; for other settings start a new train.out_dir "
            f"(train.init={checkpoint} starts from its weights)"
        )
    return changed


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
    _validate_files(cfg.data)


def _validate_files(d: DataSection) -> None:
    """How files under ``data.root`` are split and paired."""
    if d.size_mismatch not in ("error", "crop"):
        raise UserError(f"data.size_mismatch must be \"error\" or \"crop\" (both cropped to their common part), got {d.size_mismatch!r}")
    check_at_least("data.holdout", d.holdout, 0, "0: no files held out")
    if d.holdout == 1:
        raise UserError("data.holdout=1 would hold every file out of training; use N >= 2 (every N-th file of each task validates)")
    check_at_least("data.blur_curriculum", d.blur_curriculum, 0, "0: off")
    if d.blur_curriculum and (d.layout not in ("builtin", "clean") or "blur" not in d.degradations):
        raise UserError("data.blur_curriculum needs synthetic motion blur: data.layout builtin or clean, with \"blur\" "
                        f"in data.degradations (got layout {d.layout}, degradations {json.dumps(d.degradations)})")
    if d.holdout and d.layout == "builtin":
        raise UserError("data.holdout is for files under data.root; the builtin layout validates on the right 30% of its photos")
    if not d.holdout and d.layout not in ("builtin", "clean"):
        raise UserError(f"data.layout={d.layout} validates on files held out of its training files: set data.holdout=N "
                        "(every N-th file of each task, e.g. 50)")


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
