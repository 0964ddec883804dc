"""Refit the degradation classifier of a weights file on larger crops; the restorer is left as it is.

``python -m dfpir.train`` trains the classifier beside the restorer, on the restorer's patches
(64 pixels for the shipped weights), but ``--degradation auto`` shows it a 512-pixel centre crop
of a photo (`dfpir.inference.runner.CLASSIFIER_CROP`). A 64-pixel patch of a
smooth sky or of a background out of focus looks blurred or hazy although the photo is clean;
a larger crop holds the sharp subject too. This command trains the classifier alone, starting
from the stored one, on crops of ``--patch`` pixels of a ``clean`` layout folder (every
``--holdout``-th file kept out, as ``data.holdout``), with its clean class, fits its temperature
on the held-out files' crops and writes a copy of the weights with the new classifier: the
restorer's tensors and every other entry are copied unchanged, and the settings are recorded
in the metadata (``classifier_refit``). ``--pooling meanstdtop`` first widens the stored
classifier's pooling (`dfpir.model.classifier.with_pooling`), and ``--clean-defocus`` shows a share
of the clean crops with a background out of focus (`dfpir.train.classifier.depth_of_field`).

    python -m dfpir.train.refit_classifier --weights dfpir/weights/demo.safetensors -o refit.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..checkpoint import CheckpointError, load_classifier, read, write_safetensors
from ..data.datasets import build_dataset
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..files import atomic_write, check_new_weights
from ..data import item_rng, torch_generator
from ..model.classifier import CLEAN, POOLINGS, DegradationClassifier, with_pooling
from ..progress import progress
from .classifier import calibrate, clean_mask, clean_share, depth_of_field, with_clean_labels
from .loop import cosine_decay


def crops(root: Path, split: str, patch: int, degradations: list[str], seed: int, holdout: int,
          length: int | None = None) -> Dataset:
    """Degraded crops of the ``clean`` layout folder ``root`` (degraded, then cropped), labelled
    in the order of ``degradations``: ``length`` training items, or 2 validation crops per
    held-out file and degradation."""
    return build_dataset("clean", root, split, patch, degradations=degradations, labels=degradations, seed=seed,
                         length=length, holdout=holdout, per_image=2)


def lr_at(step: int, steps: int, lr: float) -> float:
    """Cosine decay from ``lr`` to ``lr / 100`` over the run (the classifier starts trained: no warm-up)."""
    return lr * cosine_decay(step / max(1, steps), 0.01)


DEFOCUS_STREAM = 0xD0F
"""The key of the random stream of [`defocus_some`][dfpir.train.refit_classifier.defocus_some], apart
from the crops' and the clean picks' streams (so a run with ``--clean-defocus`` sees the same crops)."""


def defocus_some(clean: torch.Tensor, seed: int, step: int, share: float) -> torch.Tensor:
    """``clean`` with a seeded ``share`` of its images given a shallow depth of field
    ([`depth_of_field`][dfpir.train.classifier.depth_of_field]); the draws depend on the seed and the step alone."""
    if share <= 0 or len(clean) == 0:
        return clean
    rng = item_rng(seed, DEFOCUS_STREAM, step)
    pick = torch.tensor([rng.random() < share for _ in range(len(clean))], dtype=torch.bool)
    if not pick.any():
        return clean
    out = clean.clone()
    out[pick] = depth_of_field(clean[pick], torch_generator(rng))
    return out


def refit(classifier: DegradationClassifier, data: Dataset, steps: int, batch: int, lr: float, seed: int,
          workers: int = 1, defocus: float = 0.0) -> list[float]:
    """Train ``classifier`` in place for ``steps`` steps of ``batch`` degraded crops, plus the clean
    targets of a seeded share of them labelled ``clean`` (as ``python -m dfpir.train`` does), a
    ``defocus`` share of those with a background out of focus.

    Returns
    -------
    list of float
        The cross-entropy of every step.
    """
    degradations = [c for c in classifier.classes if c != CLEAN]
    share = clean_share(degradations)
    sampler = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(data, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        persistent_workers=False)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=1e-4)
    classifier.train()
    losses: list[float] = []
    with progress(steps, "refit", "step") as bar:
        for step, items in enumerate(loader):
            if step == steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr)
            numbers = range(step * batch, (step + 1) * batch)
            clean = items["target"][clean_mask(seed, numbers, share)] if CLEAN in classifier.classes else None
            if clean is not None:
                clean = defocus_some(clean, seed, step, defocus)
            labels = with_clean_labels(items["label"], clean, classifier.classes)
            images = items["input"] if clean is None else torch.cat([items["input"], clean])
            loss = F.cross_entropy(classifier(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(classifier.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
    classifier.eval()
    return losses


def write_refit(source: Path, out: Path, classifier: DegradationClassifier, settings: dict) -> None:
    """A copy of ``source`` with ``classifier``'s weights and temperature, and ``settings`` recorded."""
    tensors, metadata = read(source)
    tensors = {k: v for k, v in tensors.items() if not k.startswith("classifier.")}
    tensors.update({f"classifier.{k}": v.detach().contiguous() for k, v in classifier.state_dict().items()})
    metadata = {**metadata, "classifier_classes": json.dumps(classifier.classes),
                "classifier_temperature": json.dumps(classifier.temperature),
                "classifier_pooling": classifier.pooling,
                "classifier_refit": json.dumps(settings, sort_keys=True)}
    atomic_write(out, lambda tmp: write_safetensors(tmp, tensors, metadata))


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dfpir.train.refit_classifier`` command line."""
    p = CommandParser(prog="python -m dfpir.train.refit_classifier", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="a dfpir checkpoint with a degradation classifier")
    p.add_argument("-o", "--output", type=Path, required=True, help="the new weights file (never the input)")
    p.add_argument("--data", type=Path, default=Path("data/corpus"), help="a clean layout folder (default data/corpus, from `make corpus`)")
    p.add_argument("--holdout", type=int, default=10, help="every N-th file is kept out for calibration (default 10, as the weights preset)")
    p.add_argument("--patch", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--steps", type=int, default=1200, help="training steps (default 1200)")
    p.add_argument("--batch", type=int, default=16, help="degraded crops per step, clean ones added (default 16)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate, cosine-decayed to 1/100 (default 3e-4)")
    p.add_argument("--pooling", choices=POOLINGS, help="the refitted classifier's pooling (default: the stored one's); "
                   "meanstdtop also pools each feature's strongest responses")
    p.add_argument("--clean-defocus", type=float, default=0.0, metavar="SHARE",
                   help="share of the clean crops shown with a background out of focus, still labelled clean (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="data loader processes (default 1; 0: in this process)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for options no run can use, before any work."""
    check_at_least("--patch", args.patch, 16, "pixels")
    check_at_least("--steps", args.steps, 1)
    check_at_least("--batch", args.batch, 1)
    check_at_least("--holdout", args.holdout, 2, "a validation split is needed for the temperature")
    check_at_least("--workers", args.workers, 0)
    if not 0 <= args.clean_defocus <= 1:
        raise UserError(f"--clean-defocus is a share of the clean crops, between 0 and 1; got {args.clean_defocus}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    check_new_weights(args.output, args.weights, args.overwrite)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Refit, calibrate, print the calibration before and after, write the weights; returns the exit code."""
    args = build_parser().parse_args(argv)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = load_classifier(args.weights)
    if classifier is None:
        raise CheckpointError(f"{args.weights} holds no degradation classifier; train one with python -m dfpir.train (train.classifier=true)")
    if args.clean_defocus > 0 and CLEAN not in classifier.classes:
        raise UserError(f"--clean-defocus needs a classifier with a clean class; {args.weights} has none (train with train.clean_class=true)")
    if args.pooling and args.pooling != classifier.pooling:
        classifier = with_pooling(classifier, args.pooling)
    degradations = [c for c in classifier.classes if c != CLEAN]
    train = crops(args.data, "train", args.patch, degradations, args.seed, args.holdout, length=args.steps * args.batch)
    val = crops(args.data, "val", args.patch, degradations, args.seed, args.holdout)
    before = calibrate(classifier, val, torch.device("cpu"))
    print(f"stored classifier on {args.patch}-px validation crops: {before.line()}")
    torch.manual_seed(args.seed)  # the DataLoader seeds its workers from the global generator
    losses = refit(classifier, train, args.steps, args.batch, args.lr, args.seed, args.workers, args.clean_defocus)
    after = calibrate(classifier, val, torch.device("cpu"))
    classifier.temperature = after.temperature
    print(f"refitted classifier (last 100 steps' mean loss {sum(losses[-100:]) / len(losses[-100:]):.3f}): {after.line()}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("output", "overwrite", "threads", "workers")}
    settings["pooling"] = classifier.pooling
    write_refit(args.weights, args.output, classifier, {**settings, "calibration": after.to_dict()})
    print(f"wrote {args.output}: the restorer of {args.weights} with the refitted classifier")
    return 0


if __name__ == "__main__":
    sys.exit(main())
