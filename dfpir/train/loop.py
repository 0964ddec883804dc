"""Train DFPIR: ``python -m dfpir.train [--preset demo|weights|3task|5task] [--config F.toml] [key=value ...]``.

With no arguments it trains the ``tiny`` network on the photographs that ship with scikit-image,
degraded on the fly by all seven synthetic degradations, on the CPU, and prints a validation
table at the end. ``torchrun --nproc_per_node N -m dfpir.train ...`` trains on N processes
(DistributedDataParallel; gloo on CPU, nccl on GPU).

Reads top to bottom: configuration, distributed set-up, data, model, optimisation, the loop,
validation, checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm import tqdm

from ..checkpoint import read

from ..checkpoint import save as save_checkpoint
from ..model.classifier import DegradationClassifier
from ..errors import CommandParser, UserError, cli_main
from ..files import atomic_write, check_output_folder
from ..metrics import psnr, ssim
from ..model.network import DFPIR
from .config import ModelSection, TrainConfig, resolve

# -------------------------------------------------------------------------------------------------
# distributed set-up


@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process is rank 0 (the one that logs and saves)."""
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    return Dist(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, dist_local_rank: int = 0) -> torch.device:
    """The torch device for ``train.device`` (``auto``, ``cpu``, ``cuda``), one GPU per local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("train.device is cuda but no CUDA device is available; use train.device=cpu")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', dist_local_rank))}"
    return torch.device(name)


# -------------------------------------------------------------------------------------------------
# data


def build_data(cfg: TrainConfig, length: int):
    """The training dataset (item i deterministic in (seed, i)) and the fixed validation samples."""
    from ..data import datasets as data

    d = cfg.data
    if d.layout == "builtin":
        train_set = data.SyntheticDataset(
            data.builtin_photos("train"), d.degradations, d.patch_size, length, cfg.train.seed, d.ratios or None
        )
        val_images = data.builtin_photos("val")
    else:
        if not d.root:
            raise UserError(f"data.layout={d.layout} needs data.root=FOLDER")
        train_set = data.build_dataset(d.layout, d.root, "train", d.patch_size, degradations=d.degradations, seed=cfg.train.seed, ratios=d.ratios or None)
        # A held-out split, never the test sets: the built-in photos give a small, fixed one.
        val_images = data.builtin_photos("val")
    val = data.validation_set(val_images, d.degradations, d.val_crop, d.val_patches_per_image, cfg.train.seed + 1)
    return train_set, val


def restoration_loss(restored: torch.Tensor, target: torch.Tensor, fft_weight: float = 0.0) -> torch.Tensor:
    """Pixel L1 (the paper's loss), plus ``fft_weight`` times an L1 on the spectrum.

    The spectral term compares the real and imaginary parts of the orthonormal 2-D FFT, so every
    frequency counts alike: the pixel L1 alone is dominated by the large, low-frequency errors of
    noise and haze, and barely rewards the fine detail that deblurring must bring back.
    """
    loss = F.l1_loss(restored, target)
    if fft_weight:
        # (B, C, H, W//2+1) complex -> (B, C, H, W//2+1, 2) real
        spectrum = torch.view_as_real(torch.fft.rfft2(restored - target, norm="ortho"))
        loss = loss + fft_weight * spectrum.abs().mean()
    return loss


def batch_indices(step: int, micro: int, accum: int, dist: Dist) -> list[list[int]]:
    """Dataset indices of every micro-batch of ``step``; a function of the step only, so a resumed
    run sees exactly the samples an uninterrupted one would, for any number of processes."""
    per_step = micro * accum * dist.world
    start = step * per_step
    out = []
    for a in range(accum):
        base = start + a * micro * dist.world + dist.rank * micro
        out.append(list(range(base, base + micro)))
    return out


class SampleOrder:
    """Global sample number -> (epoch, dataset index): a seeded permutation of the dataset per epoch.

    Datasets here lay their degradations out in contiguous index ranges, so reading them in order
    would train on one degradation at a time; the permutation mixes them in every batch.
    """

    def __init__(self, dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed
        self.epoch, self.perm = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, number: int) -> tuple[int, int]:
        epoch, i = divmod(number, len(self.dataset))
        if epoch != self.epoch:
            self.epoch = epoch
            self.perm = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        return epoch, int(self.perm[i])


WORKER_ERROR = "worker_error"  # the key of an item that stands for a user error in a worker


class EpochItems(Dataset):
    """``items[(epoch, index)]`` is the dataset's item ``index`` drawn in ``epoch``, whichever process
    asks: DataLoader workers hold copies of the dataset that never see the main process's epoch.

    In a worker process, a user error (an unreadable image, say) becomes the item
    ``{WORKER_ERROR: message}``, which :func:`micro_batches` raises again in the training process:
    torch would re-raise it there with the worker's whole traceback in its message.
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        try:
            return self.dataset[index]
        except (UserError, ValueError, OSError) as exc:  # what cli_main reports in one line
            if get_worker_info() is None:
                raise
            return {WORKER_ERROR: str(exc)}


def micro_batches(dataset, order: SampleOrder, steps: range, micro: int, accum: int, dist: Dist,
                  workers: int = 0, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """The collated micro-batches of ``steps``, in order; with ``workers`` processes preparing them
    ahead. Every item depends only on its (epoch, index), so the batches are the same for any
    number of workers, and a resumed run that starts later sees the same ones."""
    keys = ([order(i) for i in indices] for step in steps for indices in batch_indices(step, micro, accum, dist))
    items = EpochItems(dataset)
    if workers == 0:
        return (collate([items[k] for k in batch]) for batch in keys)
    loader = DataLoader(items, batch_sampler=keys, num_workers=workers, collate_fn=collate, pin_memory=pin_memory)
    return raise_worker_errors(loader)


def raise_worker_errors(batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The batches, raising a worker's user error (see :class:`EpochItems`) as a one-line ``UserError``."""
    for batch in batches:
        if WORKER_ERROR in batch:
            raise UserError(batch[WORKER_ERROR])
        yield batch


def collate(items: list[dict]) -> dict[str, Any]:
    """Stack dataset items into a batch: input, target, label tensors and the degradation names
    (or, if a worker failed on an item, its error alone)."""
    errors = [it[WORKER_ERROR] for it in items if WORKER_ERROR in it]
    if errors:
        return {WORKER_ERROR: errors[0]}
    return {
        "input": torch.stack([it["input"] for it in items]),
        "target": torch.stack([it["target"] for it in items]),
        "degradation": [it["degradation"] for it in items],
        "label": torch.tensor([it["label"] for it in items]),
    }


# -------------------------------------------------------------------------------------------------
# model and optimisation


class Joint(nn.Module):
    """The restorer and the degradation classifier, wrapped together so DDP sees one module."""

    def __init__(self, restorer: DFPIR, classifier: DegradationClassifier | None) -> None:
        super().__init__()
        self.restorer = restorer
        self.classifier = classifier

    def forward(self, image: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Restored images and, when a classifier is trained, its degradation logits."""
        logits = self.classifier(image) if self.classifier is not None else None
        return self.restorer(image, prompt), logits


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine from 1 to ``min_lr / lr`` over ``cosine_steps`` (or the run)."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    span = o.cosine_steps or cfg.train.steps
    t = min(1.0, (step - o.warmup_steps) / max(1, span - o.warmup_steps))
    floor = o.min_lr / o.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def check_precision(device: torch.device, precision: str, option: str = "train.precision") -> None:
    """Refuse fp16 off CUDA: its loss scaling is a GPU recipe, and CPUs have bf16 for this."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"{option}=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` (``fp32``: none; ``bf16`` or ``fp16``)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# -------------------------------------------------------------------------------------------------
# checkpoints: our model format plus the training state, in one safetensors file


def flatten_state(prefix: str, state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a nested state dict into tensors (by dotted name) and the JSON-able rest."""
    tensors, rest = {}, {}
    for key, value in state.items():
        name = f"{prefix}.{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            t, r = flatten_state(name, value)
            tensors.update(t)
            rest[str(key)] = r
        else:
            rest[str(key)] = value
    return tensors, rest


def unflatten_state(prefix: str, tensors: dict[str, torch.Tensor], rest: dict, int_keys: bool = False) -> dict:
    """Rebuild a nested state dict from :func:`flatten_state`'s tensors and JSON rest."""
    out: dict = {}
    for key, value in rest.items():
        k = int(key) if int_keys and key.isdigit() else key
        out[k] = unflatten_state(f"{prefix}.{key}", tensors, value, int_keys) if isinstance(value, dict) else value
    for name, value in tensors.items():
        if name.startswith(prefix + ".") and "." not in name[len(prefix) + 1 :]:
            key = name[len(prefix) + 1 :]
            out[int(key) if int_keys and key.isdigit() else key] = value
    return out


def load_initial_weights(joint: Joint, path: str) -> None:
    """Start from the restorer (and, for the same degradations, the classifier) of a checkpoint.

    The architecture must match the ``model`` section; a classifier trained for other degradations
    is left at its fresh initialisation, since its output classes differ.
    """
    from ..checkpoint import load, load_classifier

    restorer = load(path)
    try:
        joint.restorer.load_state_dict(restorer.state_dict())
    except RuntimeError:
        raise UserError(
            f"train.init={path} holds a {restorer.config.preset!r} model that does not fit this run's; "
            f"set model.preset (and the other model.* keys) to match it"
        ) from None
    classifier = load_classifier(path) if joint.classifier is not None else None
    if classifier is not None and classifier.classes == joint.classifier.classes:
        joint.classifier.load_state_dict(classifier.state_dict())


def resume_mismatch(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The settings that shape the training state where a checkpoint's recorded config ``saved``
    differs from ``cfg``, as ``key=saved (this run: current)``: the model, the degradations (the
    classifier's classes), the classifier, and whether EMA weights are kept."""
    now = cfg.to_dict()
    keys = [("data", "degradations"), ("train", "classifier")]
    if not same_network(saved.get("model", {}), cfg):  # other keys can name the same network
        keys = [("model", k) for k in now["model"]] + keys
    diffs = [
        f"{section}.{key}={json.dumps(saved[section][key])} (this run: {json.dumps(now[section][key])})"
        for section, key in keys
        if key in saved.get(section, {}) and saved[section][key] != now[section][key]
    ]
    ema = saved.get("train", {}).get("ema_decay", cfg.train.ema_decay)
    if bool(ema) != bool(cfg.train.ema_decay):  # the saved tensors are laid out by this
        diffs.append(f"train.ema_decay={ema} (this run: {cfg.train.ema_decay})")
    return diffs


def same_network(saved_model: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a recorded ``[model]`` section describes the network of ``cfg``."""
    try:
        return ModelSection(**saved_model).config() == cfg.model.config()
    except (TypeError, UserError):  # keys of another dfpir version, or no network at all
        return False


def state_mismatch(own: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str:
    """Why ``saved`` cannot be loaded into a module with state ``own`` ("" if it can)."""
    missing, unexpected = own.keys() - saved.keys(), saved.keys() - own.keys()
    reshaped = [k for k in own.keys() & saved.keys() if own[k].shape != saved[k].shape]
    if not (missing or unexpected or reshaped):
        return ""
    return (f"its tensors do not match this model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(reshaped)} of another shape)")


class Trainer:
    """Owns the model, optimiser, schedule, scaler, EMA and the loop."""

    def __init__(self, cfg: TrainConfig, dist: Dist, device: torch.device) -> None:
        self.cfg, self.dist, self.device = cfg, dist, device
        self.out = Path(cfg.train.out_dir)
        torch.manual_seed(cfg.train.seed)
        model_cfg = cfg.model.config()
        classes = list(cfg.data.degradations)
        classifier = DegradationClassifier(classes) if cfg.train.classifier else None
        self.joint = Joint(DFPIR(model_cfg), classifier).to(device)
        if cfg.train.init:
            load_initial_weights(self.joint, cfg.train.init)
        if cfg.train.channels_last:
            self.joint.to(memory_format=torch.channels_last)
        self.labels = {name: i for i, name in enumerate(classes)}
        params = [p for p in self.joint.parameters() if p.requires_grad]
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay, fused=fused
        ) if cfg.optim.weight_decay else torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
        self.ema = None
        if cfg.train.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.joint, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay))
        self.module = self.joint
        if dist.world > 1:
            self.module = nn.parallel.DistributedDataParallel(self.joint, device_ids=[device.index] if device.type == "cuda" else None)
        self.step = 0
        self.best = -math.inf

    @property
    def restorer(self) -> DFPIR:
        """The DFPIR network being trained (without DDP or the classifier)."""
        return self.joint.restorer

    # --- checkpoints -----------------------------------------------------------------------------

    def eval_joint(self) -> Joint:
        """The weights to validate and ship: the EMA average when enabled."""
        return self.ema.module if self.ema is not None else self.joint

    def save(self, path: Path, with_training_state: bool) -> None:
        """Our model checkpoint (loadable by :func:`dfpir.load`) plus the classifier and, for
        ``last.safetensors``, everything needed to resume exactly."""
        joint = self.eval_joint()
        tensors: dict[str, torch.Tensor] = {}
        meta = {"train_config": json.dumps(self.cfg.to_dict()), "step": str(self.step)}
        if joint.classifier is not None:
            tensors.update({f"classifier.{k}": v for k, v in joint.classifier.state_dict().items()})
            meta["classifier_classes"] = json.dumps(joint.classifier.classes)
        if with_training_state:
            if self.ema is not None:  # otherwise the live weights are the model./classifier. ones
                tensors.update({f"train.{k}": v for k, v in self.joint.state_dict().items()})
            opt_tensors, opt_rest = flatten_state("optim", self.optimizer.state_dict())
            tensors.update(opt_tensors)
            tensors["rng.torch"] = torch.get_rng_state()
            if self.ema is not None:  # its weights are the model./classifier. ones
                tensors["ema.n_averaged"] = self.ema.n_averaged
            sched = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
            meta["training_state"] = json.dumps(
                {"optim": opt_rest, "scheduler": sched, "scaler": self.scaler.state_dict(), "best": self.best}
            )
        save_checkpoint(joint.restorer, path, extra_metadata=meta, extra_tensors=tensors)

    def resume(self, path: Path) -> None:
        """Continue from a ``last.safetensors``: weights, optimiser, schedule, EMA, step and random state."""
        tensors, meta = read(path)
        if "training_state" not in meta:
            raise UserError(f"{path} holds no training state (only 'last.safetensors' checkpoints can be resumed)")
        state = json.loads(meta["training_state"])
        if self.ema is not None:
            joint_state = {k[len("train."):]: v for k, v in tensors.items() if k.startswith("train.")}
        else:
            joint_state = {f"restorer.{k[len('model.'):]}": v for k, v in tensors.items() if k.startswith("model.")}
            joint_state.update({k: v for k, v in tensors.items() if k.startswith("classifier.")})
        made_with = resume_mismatch(json.loads(meta.get("train_config", "{}")), self.cfg)
        unfit = state_mismatch(self.joint.state_dict(), joint_state)
        if made_with or unfit:
            recorded = path.parent / "config.toml"
            raise UserError(
                f"{path} does not fit this run's config: {'it was made with ' + '; '.join(made_with) if made_with else unfit}; "
                f"resume with the config it was made with{f' (--config {recorded})' if recorded.is_file() else ''}, "
                "or start a new train.out_dir"
            )
        self.joint.load_state_dict(joint_state)
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        self.optimizer.load_state_dict(unflatten_state("optim", optim_tensors, state["optim"], int_keys=True))
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **state["scheduler"]})
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            ema_state = {f"module.restorer.{k[len('model.'):]}": v for k, v in tensors.items() if k.startswith("model.")}
            ema_state.update({f"module.{k}": v for k, v in tensors.items() if k.startswith("classifier.")})
            self.ema.load_state_dict({**ema_state, "n_averaged": tensors["ema.n_averaged"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])
        self.best = state["best"]

    # --- the loop --------------------------------------------------------------------------------

    def batches(self, dataset, end: int) -> Iterator[dict[str, Any]]:
        """The micro-batches of steps ``self.step`` .. ``end - 1`` (see :func:`micro_batches`)."""
        cfg = self.cfg
        micro = cfg.optim.batch_size // (cfg.optim.accum_steps * self.dist.world)
        return micro_batches(dataset, SampleOrder(dataset, cfg.train.seed), range(self.step, end), micro,
                             cfg.optim.accum_steps, self.dist, cfg.data.workers, self.device.type == "cuda")

    def train_step(self, batches: Iterator[dict[str, Any]]) -> float:
        """One optimisation step over the global batch (with gradient accumulation); returns the loss."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.optim.accum_steps):
            batch = next(batches)
            image = batch["input"].to(self.device)
            target = batch["target"].to(self.device)
            if cfg.train.channels_last:
                image, target = image.contiguous(memory_format=torch.channels_last), target.contiguous(memory_format=torch.channels_last)
            prompt = self.restorer.embed_prompts(batch["degradation"])
            with autocast(self.device, cfg.train.precision):
                restored, logits = self.module(image, prompt)
                loss = restoration_loss(restored.float(), target, cfg.optim.fft_weight)
                if logits is not None:
                    loss = loss + 0.1 * F.cross_entropy(logits.float(), batch["label"].to(self.device))
            self.scaler.scale(loss / cfg.optim.accum_steps).backward()
            total += loss.item() / cfg.optim.accum_steps
        if not math.isfinite(total):
            raise UserError(
                f"loss became non-finite at step {self.step}; the last good checkpoint is kept in {self.out}. "
                "Lower optim.lr or set optim.grad_clip"
            )
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            # Clipped separately: with one joint norm, the classifier's (large) gradients would
            # shrink the restorer's steps.
            for part in (self.joint.restorer, self.joint.classifier):
                if part is not None:
                    nn.utils.clip_grad_norm_(part.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.joint)
        self.step += 1
        return total

    @torch.no_grad()
    def validate(self, samples: list[dict]) -> dict[str, dict[str, float]]:
        """Per degradation: PSNR/SSIM of the input and of the restored image, classifier accuracy."""
        joint = self.eval_joint().eval()
        rows: dict[str, dict[str, list[float]]] = {}
        for s in samples:
            image = s["input"][None].to(self.device)
            restored = joint.restorer(image, joint.restorer.embed_prompts(s["degradation"]))[0]
            r = rows.setdefault(s["degradation"], {k: [] for k in ("input_psnr", "psnr", "input_ssim", "ssim", "accuracy")})
            r["input_psnr"].append(psnr(s["input"], s["target"]))
            r["psnr"].append(psnr(restored, s["target"]))
            r["input_ssim"].append(ssim(s["input"], s["target"]))
            r["ssim"].append(ssim(restored, s["target"]))
            if joint.classifier is not None:
                names, _ = joint.classifier.predict(image)
                r["accuracy"].append(float(names[0] == s["degradation"]))
        joint.train()
        return {d: {k: sum(v) / len(v) if v else float("nan") for k, v in r.items()} for d, r in rows.items()}


def format_table(table: dict[str, dict[str, float]]) -> str:
    """The validation table as aligned text (one row per degradation, then the mean)."""
    keys = ["input_psnr", "psnr", "input_ssim", "ssim", "accuracy"]
    lines = [f"{'degradation':<12}" + "".join(f"{k:>12}" for k in ["input PSNR", "PSNR", "gain dB", "input SSIM", "SSIM", "cls acc"])]
    for name, r in list(table.items()) + [("mean", {k: sum(t[k] for t in table.values()) / len(table) for k in keys})]:
        gain = r["psnr"] - r["input_psnr"]
        accuracy = "-" if math.isnan(r["accuracy"]) else f"{r['accuracy']:.1%}"  # "-": no classifier
        lines.append(
            f"{name:<12}{r['input_psnr']:>12.2f}{r['psnr']:>12.2f}{gain:>+12.2f}{r['input_ssim']:>12.3f}{r['ssim']:>12.3f}{accuracy:>12}"
        )
    return "\n".join(lines)


def log_jsonl(path: Path, record: dict) -> None:
    """Append one JSON record as a line to ``path``."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def run(cfg: TrainConfig, resume: str | None = None, stop_at: int | None = None) -> dict[str, dict[str, float]]:
    """Train according to ``cfg``; returns the last validation table.

    ``stop_at`` saves and stops after that step while the schedule still spans ``train.steps``
    (for time-sliced jobs); ``--resume`` continues exactly where it stopped.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    check_precision(device, cfg.train.precision)
    dist = setup_distributed(device)
    if cfg.optim.batch_size % (cfg.optim.accum_steps * dist.world):
        raise UserError(f"optim.batch_size={cfg.optim.batch_size} must divide by accum_steps x processes = {cfg.optim.accum_steps * dist.world}")
    if stop_at is not None and stop_at < 1:
        raise UserError(f"--stop-at must be a step >= 1 (save and stop after it), got {stop_at}")
    out = Path(cfg.train.out_dir)
    # Everything that can refuse the run comes before the first write, so a refused run leaves
    # neither a config.toml nor an empty out_dir behind.
    trainer = Trainer(cfg, dist, device)
    if resume:
        path = out / "last.safetensors" if resume == "auto" else Path(resume)
        trainer.resume(path)
        if stop_at is not None and stop_at <= trainer.step:
            raise UserError(f"--stop-at {stop_at} is not after step {trainer.step}, where {path} stopped; give a later step")
    dataset, val = build_data(cfg, cfg.train.steps * cfg.optim.batch_size)
    if dist.main:
        check_output_folder(out)
        text = cfg.to_toml()
        atomic_write(out / "config.toml", lambda tmp: Path(tmp).write_text(text))
    writer = None
    if dist.main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    bar = tqdm(total=cfg.train.steps, initial=trainer.step, disable=not dist.main, desc="train", dynamic_ncols=True)
    t0, seen = time.perf_counter(), 0
    table: dict = {}
    try:
        end = min(cfg.train.steps, stop_at if stop_at is not None else cfg.train.steps)
        batches = trainer.batches(dataset, end)
        while trainer.step < end:
            loss = trainer.train_step(batches)
            seen += cfg.optim.batch_size
            lr = trainer.optimizer.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
            if dist.main and trainer.step % cfg.train.log_every == 0:
                log_jsonl(out / "metrics.jsonl", {"step": trainer.step, "loss": loss, "lr": lr})
                if writer:
                    writer.add_scalar("train/loss", loss, trainer.step)
            if trainer.step % cfg.train.val_every == 0 or trainer.step == cfg.train.steps:
                table = trainer.validate(val)
                mean_psnr = sum(r["psnr"] for r in table.values()) / len(table)
                if dist.main:
                    log_jsonl(out / "metrics.jsonl", {"step": trainer.step, "val": table, "val_mean_psnr": mean_psnr})
                    if mean_psnr > trainer.best:
                        trainer.best = mean_psnr
                        trainer.save(out / "best.safetensors", with_training_state=False)
            if dist.main and (trainer.step % cfg.train.ckpt_every == 0 or trainer.step == end):
                trainer.save(out / "last.safetensors", with_training_state=True)
    except KeyboardInterrupt:
        bar.close()
        if dist.main:
            trainer.save(out / "last.safetensors", with_training_state=True)
            print(f"\ninterrupted at step {trainer.step}; saved {out / 'last.safetensors'}; continue with --resume auto", file=sys.stderr)
        raise
    finally:
        bar.close()
        if writer:
            writer.close()
        if dist.world > 1:
            torch.distributed.destroy_process_group()
    if dist.main and table:
        print(format_table(table))
        print(f"results in {out}: best.safetensors (mean validation PSNR {trainer.best:.2f} dB), last.safetensors, metrics.jsonl, config.toml")
    return table


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m dfpir.train``."""
    p = CommandParser(prog="python -m dfpir.train", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. optim.lr=2e-4 train.steps=500")
    p.add_argument("--preset", default="demo", help="demo (default), weights (the shipped weights' recipe), 3task or 5task")
    p.add_argument("--config", help="a TOML file with [model], [data], [optim], [train] tables")
    p.add_argument("--resume", nargs="?", const="auto", help="continue from OUT_DIR/last.safetensors, or from the given file")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="save and stop after STEP (the schedule still spans train.steps)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.train [--preset P] [--config F] [key=value ...]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    cfg = resolve(args.preset, args.config, args.overrides)
    if args.print_config:
        print(cfg.to_toml())
        return 0
    run(cfg, args.resume, args.stop_at)
    return 0

