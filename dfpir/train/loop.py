"""Train DFPIR: ``python -m dfpir.train [--preset demo|weights|3task|5task] [--config F.toml] [key=value ...]``.

With no arguments it trains the ``tiny`` network on the photographs that ship with scikit-image,
degraded on the fly by all seven synthetic degradations, on the CPU, and prints a validation
table at the end. ``torchrun --nproc_per_node N -m dfpir.train ...`` trains on N processes
(DistributedDataParallel; gloo on CPU, nccl on GPU).

The story of a run, top to bottom: the configuration ([`config`][dfpir.train.config]), the
processes, the data, the model, the optimiser and its schedule, the loop, validation, and the
command line that starts it all. Which samples a step sees is [`sampling`][dfpir.train.sampling];
how the training state goes into a checkpoint is [`state`][dfpir.train.state].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..checkpoint import read
from ..checkpoint import save as save_checkpoint
from ..data import SyntheticDataset, build_dataset, builtin_photos, validation_set
from ..errors import CommandParser, UserError, cli_main
from ..files import atomic_write, check_output_folder
from ..metrics import psnr, ssim
from ..model.classifier import DegradationClassifier
from ..model.network import DFPIR
from ..model.prompts import PromptBank
from ..progress import progress
from .classifier import Calibration, calibrate, classifier_classes, clean_mask, clean_share, with_clean_labels
from .config import TrainConfig, resolve, resume_changes, resume_config
from .interrupts import StepBoundary
from .precision import autocast, check_precision
from .preflight import check_training_files
from .sampling import SampleOrder, batch_indices, micro_batches
from .state import flatten_state, load_initial_weights, state_mismatch, unflatten_state

# -------------------------------------------------------------------------------------------------
# processes


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


def build_data(cfg: TrainConfig, length: int, quiet: bool = False):
    """The training dataset (item i deterministic in (seed, i)) and the fixed validation samples.

    The built-in photos validate on the held-out right strip of each photo. Files under
    ``data.root`` are checked first ([`check_training_files`][dfpir.train.preflight.check_training_files]), then
    every ``data.holdout``-th file of each task is validation and never trained on (the ``clean``
    layout without a holdout validates on the built-in photos' strips).
    """
    d, seed = cfg.data, cfg.train.seed
    if d.layout == "builtin":
        train_set = SyntheticDataset(builtin_photos("train"), d.degradations, d.patch_size, length, seed, d.ratios or None,
                                     blur_curriculum=d.blur_curriculum)
        return train_set, validation_set(builtin_photos("val"), d.degradations, d.val_crop, d.val_patches_per_image, seed + 1)
    if not d.root:
        raise UserError(f"data.layout={d.layout} needs data.root=FOLDER")
    found = check_training_files(d.layout, d.root, d.degradations, d.size_mismatch, quiet)
    if set(found) != set(d.degradations):
        raise UserError(f"data.degradations={json.dumps(d.degradations)}, but data.layout={d.layout} under {d.root} "
                        f"holds {json.dumps(found)}; set data.degradations to those")
    # labels: the classifier's classes, in the config's order
    files = dict(degradations=d.degradations, labels=d.degradations, holdout=d.holdout, size_mismatch=d.size_mismatch)
    train_set = build_dataset(d.layout, d.root, "train", d.patch_size, seed=seed, ratios=d.ratios or None,
                              blur_curriculum=d.blur_curriculum, **files)
    if not d.holdout:
        return train_set, validation_set(builtin_photos("val"), d.degradations, d.val_crop, d.val_patches_per_image, seed + 1)
    return train_set, build_dataset(d.layout, d.root, "val", d.val_crop, seed=seed + 1, per_image=d.val_patches_per_image, **files)


# -------------------------------------------------------------------------------------------------
# model


class Joint(nn.Module):
    """The restorer and the degradation classifier, wrapped together so DDP sees one module."""

    def __init__(self, restorer: DFPIR, classifier: DegradationClassifier | None) -> None:
        super().__init__()
        self.restorer = restorer
        self.classifier = classifier

    def forward(self, image: torch.Tensor, prompt: torch.Tensor,
                clean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Restored images and, when a classifier is trained, its logits for ``image`` followed by
        ``clean`` (undegraded images for its clean class; inside this forward, so DDP sees them)."""
        logits = None
        if self.classifier is not None:
            logits = self.classifier(image if clean is None else torch.cat([image, clean]))
        return self.restorer(image, prompt), logits


def prompt_bank(names: Sequence[str], dim: int) -> PromptBank:
    """The default prompts of the degradations a run trains on, and of no other: a checkpoint
    offers only prompts its model learnt to follow."""
    every = PromptBank.default(dim)
    return PromptBank({n: every[n] for n in names}, {n: every.texts[n] for n in names})


# -------------------------------------------------------------------------------------------------
# optimisation: the loss, the schedule, and the trainer that owns the state


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


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine from 1 to ``min_lr / lr`` over ``cosine_steps`` (or the run)."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    span = o.cosine_steps or cfg.train.steps
    t = min(1.0, (step - o.warmup_steps) / max(1, span - o.warmup_steps))
    return cosine_decay(t, o.min_lr / o.lr)


def cosine_decay(t: float, floor: float) -> float:
    """The cosine schedule's factor at the fraction ``t`` in [0, 1] of its span: 1 at 0, ``floor`` at 1."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


class Trainer:
    """Owns the model, optimiser, schedule, scaler, EMA and the loop's position in the run."""

    def __init__(self, cfg: TrainConfig, dist: Dist, device: torch.device) -> None:
        self.cfg, self.dist, self.device = cfg, dist, device
        self.out = Path(cfg.train.out_dir)
        torch.manual_seed(cfg.train.seed)
        model_cfg = cfg.model.config()
        classes = list(cfg.data.degradations)
        with_clean = cfg.train.classifier and cfg.train.clean_class
        classifier = DegradationClassifier(classifier_classes(classes, with_clean)) if cfg.train.classifier else None
        self.clean_share = clean_share(classes) if with_clean else 0.0  # of the samples, shown as "clean" too
        self.joint = Joint(DFPIR(model_cfg, prompts=prompt_bank(classes, model_cfg.prompt_dim)), classifier).to(device)
        if cfg.train.init:
            load_initial_weights(self.joint.restorer, self.joint.classifier, cfg.train.init)
        if cfg.train.channels_last:
            self.joint.to(memory_format=torch.channels_last)
        params = [p for p in self.joint.parameters() if p.requires_grad]
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay, fused=fused
        ) if cfg.optim.weight_decay else torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
        self.ema = AveragedModel(self.joint, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay)) if cfg.train.ema_decay else None
        self.module = self.joint
        if dist.world > 1:
            self.module = nn.parallel.DistributedDataParallel(self.joint, device_ids=[device.index] if device.type == "cuda" else None)
        self.step = 0  # optimisation steps done
        self.best = -math.inf  # best mean validation PSNR so far
        self.validated = 0  # the last step whose validation is recorded
        self.saved_step: int | None = None  # the step of last.safetensors on disk
        self.calibration: Calibration | None = None  # the classifier's, at the last validation

    @property
    def restorer(self) -> DFPIR:
        """The DFPIR network being trained (without DDP or the classifier)."""
        return self.joint.restorer

    def eval_joint(self) -> Joint:
        """The weights to validate and ship: the EMA average when enabled."""
        return self.ema.module if self.ema is not None else self.joint

    # --- one step --------------------------------------------------------------------------------

    def batches(self, dataset, end: int) -> Iterator[dict[str, Any]]:
        """The micro-batches of steps ``self.step`` .. ``end - 1`` (see [`micro_batches`][dfpir.train.sampling.micro_batches])."""
        cfg = self.cfg
        micro = cfg.optim.batch_size // (cfg.optim.accum_steps * self.dist.world)
        return micro_batches(dataset, SampleOrder(dataset, cfg.train.seed), range(self.step, end), micro, cfg.optim.accum_steps,
                             self.dist.rank, self.dist.world, cfg.data.workers, self.device.type == "cuda")

    def next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next micro-batch; a data error says what the run keeps and how to go on."""
        try:
            return next(batches)
        except UserError as exc:
            kept = (f"{self.out / 'last.safetensors'} (step {self.saved_step}) is kept: fix it, then continue with --resume"
                    if self.saved_step is not None else "no checkpoint was saved yet: fix it, then start again with --overwrite")
            raise UserError(f"{exc}; training stopped before step {self.step + 1}, {kept}") from None

    def train_step(self, batches: Iterator[dict[str, Any]]) -> float:
        """One optimisation step over the global batch (with gradient accumulation); returns the loss."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for a in range(cfg.optim.accum_steps):
            batch = self.next_batch(batches)
            image = batch["input"].to(self.device)
            target = batch["target"].to(self.device)
            if cfg.train.channels_last:
                image, target = image.contiguous(memory_format=torch.channels_last), target.contiguous(memory_format=torch.channels_last)
            prompt = self.restorer.embed_prompts(batch["degradation"])
            clean = self.clean_targets(target, a)
            with autocast(self.device, cfg.train.precision):
                restored, logits = self.module(image, prompt, clean)
                loss = restoration_loss(restored.float(), target, cfg.optim.fft_weight)
                if logits is not None:
                    labels = with_clean_labels(batch["label"], clean, self.joint.classifier.classes)
                    loss = loss + 0.1 * F.cross_entropy(logits.float(), labels.to(self.device))
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

    def clean_targets(self, target: torch.Tensor, accum_index: int) -> torch.Tensor | None:
        """The clean targets of micro-batch ``accum_index`` of this step that the classifier also
        sees as ``clean`` (see [`clean_mask`][dfpir.train.classifier.clean_mask]); ``None`` without a clean class."""
        if not self.clean_share:
            return None
        cfg = self.cfg
        micro = cfg.optim.batch_size // (cfg.optim.accum_steps * self.dist.world)
        numbers = batch_indices(self.step, micro, cfg.optim.accum_steps, self.dist.rank, self.dist.world)[accum_index]
        return target[clean_mask(cfg.train.seed, numbers, self.clean_share).to(target.device)]

    # --- validation ------------------------------------------------------------------------------

    def validation_due(self) -> bool:
        """Whether the current step is one to validate at and its validation is not yet recorded
        (a resumed run redoes one that was interrupted)."""
        t = self.cfg.train
        return self.step > self.validated and (self.step % t.val_every == 0 or self.step == t.steps)

    def validate(self, samples) -> dict[str, dict[str, float]]:
        """The validation table of the weights to ship (see [`validate`][dfpir.train.loop.validate]); their
        classifier's temperature is fitted on the same samples ([`calibrate`][dfpir.train.classifier.calibrate])."""
        joint = self.eval_joint()
        table = validate(joint, samples, self.device)
        if joint.classifier is not None:
            self.calibration = calibrate(joint.classifier, samples, self.device)
            joint.classifier.temperature = self.calibration.temperature
        return table

    # --- checkpoints: our model format plus the training state, in one safetensors file ------------

    def save(self, path: Path, with_training_state: bool) -> None:
        """Our model checkpoint (loadable by [`dfpir.load`][dfpir.checkpoint.load]) plus the classifier and, for
        ``last.safetensors``, everything needed to resume exactly."""
        joint = self.eval_joint()
        tensors: dict[str, torch.Tensor] = {}
        meta = {"train_config": json.dumps(self.cfg.to_dict()), "step": str(self.step)}
        if joint.classifier is not None:
            tensors.update({f"classifier.{k}": v for k, v in joint.classifier.state_dict().items()})
            meta["classifier_classes"] = json.dumps(joint.classifier.classes)
            meta["classifier_temperature"] = json.dumps(joint.classifier.temperature)
        if with_training_state:
            if self.ema is not None:  # otherwise the live weights are the model./classifier. ones
                tensors.update({f"train.{k}": v for k, v in self.joint.state_dict().items()})
            opt_tensors, opt_rest = flatten_state("optim", self.optimizer.state_dict())
            tensors.update(opt_tensors)
            tensors["rng.torch"] = torch.get_rng_state()
            if self.ema is not None:  # its weights are the model./classifier. ones
                tensors["ema.n_averaged"] = self.ema.n_averaged
            sched = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
            meta["training_state"] = json.dumps({"optim": opt_rest, "scheduler": sched, "scaler": self.scaler.state_dict(),
                                                 "best": self.best, "validated": self.validated})
        save_checkpoint(joint.restorer, path, extra_metadata=meta, extra_tensors=tensors)
        if with_training_state:
            self.saved_step = self.step

    def resume(self, tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
        """Continue from a ``last.safetensors`` (read by [`read_resumable`][dfpir.train.loop.read_resumable]): weights, optimiser,
        schedule, EMA, step, validation record and random state."""
        state = json.loads(meta["training_state"])
        if self.ema is not None:
            joint_state = {k[len("train."):]: v for k, v in tensors.items() if k.startswith("train.")}
        else:
            joint_state = {f"restorer.{k[len('model.'):]}": v for k, v in tensors.items() if k.startswith("model.")}
            joint_state.update({k: v for k, v in tensors.items() if k.startswith("classifier.")})
        unfit = state_mismatch(self.joint.state_dict(), joint_state)
        if unfit:
            raise UserError(f"{path} does not fit the config it records: {unfit}; start a new train.out_dir")
        self.joint.load_state_dict(joint_state)
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        self.optimizer.load_state_dict(unflatten_state("optim", optim_tensors, state["optim"], int_keys=True))
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **state["scheduler"]})
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            ema_state = {f"module.restorer.{k[len('model.'):]}": v for k, v in tensors.items() if k.startswith("model.")}
            ema_state.update({f"module.{k}": v for k, v in tensors.items() if k.startswith("classifier.")})
            self.ema.load_state_dict({**ema_state, "n_averaged": tensors["ema.n_averaged"]})
        if self.joint.classifier is not None:  # fitted at the last validation (none yet: 1)
            self.eval_joint().classifier.temperature = float(meta.get("classifier_temperature", 1))
        torch.set_rng_state(tensors["rng.torch"])
        self.step = self.saved_step = int(meta["step"])
        self.best = state["best"]
        self.validated = state.get("validated", self.step)  # older checkpoints: saved after validating


def read_resumable(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], TrainConfig]:
    """The tensors, metadata and recorded config of a checkpoint a run can continue from."""
    tensors, meta = read(path)
    if "training_state" not in meta or "train_config" not in meta:
        raise UserError(f"{path} holds no training state (only 'last.safetensors' checkpoints can be resumed)")
    return tensors, meta, TrainConfig.from_dict(json.loads(meta["train_config"]), f"the config recorded in {path}")


# -------------------------------------------------------------------------------------------------
# the run: its folder, then the loop

RUN_FILES = ("best.safetensors", "last.safetensors", "config.toml", "metrics.jsonl")
"""What a run writes to ``train.out_dir`` (and a ``tensorboard/`` folder when TensorBoard is installed)."""


def check_run_folder(out: Path, checkpoint: Path | None, overwrite: bool) -> None:
    """Refuse a folder that holds another run: it is continued (``--resume``) or deliberately
    replaced (``--overwrite``), never mixed with a new one."""
    continued = checkpoint is not None and out.resolve() == checkpoint.parent.resolve()
    if continued and overwrite:
        raise UserError(f"--overwrite would delete the run in {out} that --resume continues; give only one of them")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not continued and not overwrite:
        raise UserError(f"train.out_dir {out} already holds a run ({', '.join(held)}); continue it with --resume, "
                        "or start over with --overwrite (deletes those files)")


def clear_run(out: Path) -> None:
    """Delete the files of the run in ``out`` (``--overwrite``), leaving anything else there."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)


def log_jsonl(path: Path, record: dict) -> None:
    """Append one JSON record as a line to ``path``."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def tensorboard_writer(out: Path):
    """A TensorBoard writer into ``out/tensorboard``, or ``None`` without TensorBoard."""
    try:  # an optional dependency, imported only when a run starts
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def run(cfg: TrainConfig, resume: str | Path | None = None, stop_at: int | None = None, overwrite: bool = False) -> dict[str, dict[str, float]]:
    """Train according to ``cfg``; returns the last validation table.

    ``resume`` (``"auto"``: ``train.out_dir/last.safetensors``, or a checkpoint) continues the run
    it holds, which ``cfg`` must describe but for [`SAFE_ON_RESUME`][dfpir.train.config.SAFE_ON_RESUME];
    the changes are recorded in ``metrics.jsonl``. ``stop_at`` saves and stops after that step
    while the schedule still spans ``train.steps`` (for time-sliced jobs). ``overwrite`` deletes
    the run already in ``train.out_dir``, which is refused otherwise.
    """
    # processes
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    check_precision(device, cfg.train.precision)
    if stop_at is not None and stop_at < 1:
        raise UserError(f"--stop-at must be a step >= 1 (save and stop after it), got {stop_at}")
    out = Path(cfg.train.out_dir)
    checkpoint = (out / "last.safetensors" if resume == "auto" else Path(resume)) if resume else None
    saved, changed = None, {}
    if checkpoint is not None:
        tensors, meta, stored = read_resumable(checkpoint)
        saved, changed = (tensors, meta), resume_changes(stored, cfg, checkpoint)
    # Every process checks the folder before any joins the group: rank 0 writes only after that.
    check_run_folder(out, checkpoint, overwrite)
    dist = setup_distributed(device)
    if cfg.optim.batch_size % (cfg.optim.accum_steps * dist.world):
        raise UserError(f"optim.batch_size={cfg.optim.batch_size} must divide by accum_steps x processes = {cfg.optim.accum_steps * dist.world}")

    dataset, val = build_data(cfg, cfg.train.steps * cfg.optim.batch_size, quiet=not dist.main)
    trainer = Trainer(cfg, dist, device)
    if saved is not None:
        trainer.resume(*saved, checkpoint)
        if stop_at is not None and stop_at <= trainer.step:
            raise UserError(f"--stop-at {stop_at} is not after step {trainer.step}, where {checkpoint} stopped; give a later step")

    # Everything that can refuse the run came before this first write.
    writer = None
    if dist.main:
        if overwrite:
            clear_run(out)
        check_output_folder(out)
        text = cfg.to_toml()
        atomic_write(out / "config.toml", lambda tmp: Path(tmp).write_text(text))
        if checkpoint is not None:
            log_jsonl(out / "metrics.jsonl", {"resumed_at": trainer.step, "changed": changed})
        writer = tensorboard_writer(out)
    end = min(cfg.train.steps, stop_at if stop_at is not None else cfg.train.steps)
    try:
        table = loop(trainer, dataset, val, end, writer)
    finally:
        if writer:
            writer.close()
        if dist.world > 1:
            torch.distributed.destroy_process_group()
    if dist.main and end < cfg.train.steps:
        print(f"stopped after step {end} of {cfg.train.steps} (--stop-at); {out / 'last.safetensors'} saved; "
              f"continue with: python -m dfpir.train train.out_dir={out} --resume")
    if dist.main and table:
        print(format_table(table, trainer.calibration))
        print(f"results in {out}: best.safetensors (mean validation PSNR {trainer.best:.2f} dB), last.safetensors, metrics.jsonl, config.toml")
    return table


def loop(trainer: Trainer, dataset, val, end: int, writer) -> dict[str, dict[str, float]]:
    """Steps ``trainer.step`` .. ``end - 1``, each followed by the validation and checkpoint due;
    returns the last validation table. Ctrl-C saves ``last.safetensors`` and stops at a step
    boundary (see [`interrupts`][dfpir.train.interrupts])."""
    cfg, main, out = trainer.cfg, trainer.dist.main, trainer.out
    bar = progress(total=cfg.train.steps, desc="train", unit="step", initial=trainer.step, disable=not main)
    boundary = StepBoundary()
    t0, seen = time.perf_counter(), 0
    table: dict = {}
    try:
        if trainer.validation_due():  # a resumed run whose validation was interrupted
            table = after_step(trainer, val, end, writer, boundary)
        batches = trainer.batches(dataset, end)
        while trainer.step < end:
            with boundary.hold():  # the update and its log line, whole or not at all
                loss = trainer.train_step(batches)
                lr = trainer.optimizer.param_groups[0]["lr"]
                if main and trainer.step % cfg.train.log_every == 0:
                    log_jsonl(out / "metrics.jsonl", {"step": trainer.step, "loss": loss, "lr": lr})
                    if writer:
                        writer.add_scalar("train/loss", loss, trainer.step)
            seen += cfg.optim.batch_size
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
            table = after_step(trainer, val, end, writer, boundary) or table
    except KeyboardInterrupt:
        bar.close()
        if main and boundary.torn:
            print(f"\ninterrupted twice, inside step {trainer.step + 1}; kept {out / 'last.safetensors'} "
                  f"(step {trainer.saved_step}); continue with --resume", file=sys.stderr)
        elif main:
            trainer.save(out / "last.safetensors", with_training_state=True)
            print(f"\ninterrupted at step {trainer.step}; saved {out / 'last.safetensors'}; continue with --resume", file=sys.stderr)
        raise
    finally:
        bar.close()
    return table


def after_step(trainer: Trainer, val, end: int, writer, boundary: StepBoundary) -> dict[str, dict[str, float]]:
    """The validation and the checkpoint due after ``trainer.step``; the table, if it validated.

    Validation may be interrupted (a resumed run redoes it); recording it is not: its metrics
    line, ``best.safetensors`` and the step it marks validated go together.
    """
    cfg, main, out = trainer.cfg, trainer.dist.main, trainer.out
    table: dict = {}
    if trainer.validation_due():
        table = trainer.validate(val)
        mean_psnr = sum(r["psnr"] for r in table.values()) / len(table)
        with boundary.hold():
            if main:
                record = {"step": trainer.step, "val": table, "val_mean_psnr": mean_psnr}
                if trainer.calibration is not None:
                    record["classifier"] = trainer.calibration.to_dict()
                log_jsonl(out / "metrics.jsonl", record)
                if writer:
                    writer.add_scalar("val/mean_psnr", mean_psnr, trainer.step)
                    if trainer.calibration is not None:
                        writer.add_scalar("val/classifier_ece", trainer.calibration.ece_after, trainer.step)
            if mean_psnr > trainer.best:
                trainer.best = mean_psnr
                if main:
                    trainer.save(out / "best.safetensors", with_training_state=False)
            trainer.validated = trainer.step
    if main and (trainer.step % cfg.train.ckpt_every == 0 or trainer.step == end):
        trainer.save(out / "last.safetensors", with_training_state=True)
    return table


# -------------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def validate(joint: Joint, samples, device: torch.device) -> dict[str, dict[str, float]]:
    """Per degradation: PSNR/SSIM of the input and of the restored image, classifier accuracy.

    ``samples`` is a list or dataset of items in the data format (fixed crops).
    """
    joint.eval()
    rows: dict[str, dict[str, list[float]]] = {}
    try:
        for i in range(len(samples)):
            s = samples[i]
            image = s["input"][None].to(device)
            restored = joint.restorer(image, joint.restorer.embed_prompts(s["degradation"]))[0]
            r = rows.setdefault(s["degradation"], {k: [] for k in ("input_psnr", "psnr", "input_ssim", "ssim", "accuracy")})
            r["input_psnr"].append(psnr(s["input"], s["target"]))
            r["psnr"].append(psnr(restored, s["target"]))
            r["input_ssim"].append(ssim(s["input"], s["target"]))
            r["ssim"].append(ssim(restored, s["target"]))
            if joint.classifier is not None:
                names, _ = joint.classifier.predict(image)
                r["accuracy"].append(float(names[0] == s["degradation"]))
    finally:
        joint.train()
    return {d: {k: sum(v) / len(v) if v else float("nan") for k, v in r.items()} for d, r in rows.items()}


def format_table(table: dict[str, dict[str, float]], calibration: Calibration | None = None) -> str:
    """The validation table as aligned text (one row per degradation, then the mean), and the
    classifier's accuracy and calibration under it when given."""
    keys = ["input_psnr", "psnr", "input_ssim", "ssim", "accuracy"]
    lines = [f"{'degradation':<12}" + "".join(f"{k:>12}" for k in ["input PSNR", "PSNR", "gain dB", "input SSIM", "SSIM", "cls acc"])]
    for name, r in list(table.items()) + [("mean", {k: sum(t[k] for t in table.values()) / len(table) for k in keys})]:
        gain = r["psnr"] - r["input_psnr"]
        accuracy = "-" if math.isnan(r["accuracy"]) else f"{r['accuracy']:.1%}"  # "-": no classifier
        lines.append(
            f"{name:<12}{r['input_psnr']:>12.2f}{r['psnr']:>12.2f}{gain:>+12.2f}{r['input_ssim']:>12.3f}{r['ssim']:>12.3f}{accuracy:>12}"
        )
    if calibration is not None:
        lines.append(calibration.line())
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------
# the command line


@contextmanager
def plain_warnings() -> Iterator[None]:
    """Warnings as one ``warning: message`` line each, without the source line that raised them."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m dfpir.train``."""
    p = CommandParser(prog="python -m dfpir.train", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. optim.lr=2e-4 train.steps=500")
    p.add_argument("--preset", help="demo (the default), weights (the shipped weights' recipe), 3task or 5task")
    p.add_argument("--config", help="a TOML file with [model], [data], [optim], [train] tables")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue the run in train.out_dir (or of the given last.safetensors) as it was configured")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in train.out_dir and start a new one")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="save and stop after STEP (the schedule still spans train.steps)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    return p


def overrides_first(argv: list[str]) -> list[str]:
    """``argv`` with the ``section.key=value`` overrides moved before the options.

    argparse takes positional arguments in one run only, so ``a.b=1 --resume c.d=2`` would fail;
    and ``--resume`` takes an optional checkpoint, which an override right after it is not.
    """
    takes_value = {"--preset", "--config", "--stop-at"}
    overrides, options, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token in takes_value:
            options += argv[i : i + 2]  # the option and its value
            i += 2
            continue
        if token.startswith("-") or (options[-1:] == ["--resume"] and ("=" not in token or Path(token).exists())):
            options.append(token)  # an option, or the checkpoint of --resume
        else:
            overrides.append(token)
        i += 1
    return overrides + options


def config_of(args: argparse.Namespace) -> tuple[TrainConfig, Path | None]:
    """The run's config and the checkpoint it continues: for ``--resume``, the config recorded in
    the checkpoint with the command line's settings on top; else the preset, file and overrides."""
    if not args.resume:
        return resolve(args.preset, args.config, args.overrides), None
    if args.resume == "auto":
        checkpoint = Path(resolve(args.preset, args.config, args.overrides).train.out_dir) / "last.safetensors"
    else:
        checkpoint = Path(args.resume)
    *_, stored = read_resumable(checkpoint)
    return resume_config(stored, checkpoint, args.preset, args.config, args.overrides), checkpoint


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.train [--preset P] [--config F] [key=value ...]``; returns the exit code."""
    args = build_parser().parse_args(overrides_first(sys.argv[1:] if argv is None else argv))
    cfg, checkpoint = config_of(args)
    if args.print_config:
        print(cfg.to_toml())
        return 0
    with plain_warnings():
        run(cfg, checkpoint, args.stop_at, args.overwrite)
    return 0
