"""Which samples each step trains on, and how they reach the training process.

A sample is named by its global number: step ``s`` of a run with global batch ``B`` takes samples
``s * B`` to ``(s + 1) * B - 1``, split among processes and accumulation micro-batches
([`batch_indices`][dfpir.train.sampling.batch_indices]); [`SampleOrder`][dfpir.train.sampling.SampleOrder] maps each number to an (epoch, dataset index). So
the batches are a function of the step alone: a resumed run sees exactly the samples an
uninterrupted one would, for any number of processes or DataLoader workers.
"""

from __future__ import annotations

import signal
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..errors import UserError

WORKER_ERROR = "worker_error"  # the key of an item that stands for a user error in a worker


def batch_indices(step: int, micro: int, accum: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Global sample numbers of every micro-batch of ``step`` on process ``rank`` of ``world``."""
    start = step * micro * accum * world
    out = []
    for a in range(accum):
        base = start + a * micro * world + rank * micro
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


class EpochItems(Dataset):
    """``items[(epoch, index, step)]`` is the dataset's item ``index`` drawn in ``epoch`` for training
    step ``step`` (which only a curriculum reads; ``step`` may be left out: 0), whichever process
    asks: DataLoader workers hold copies of the dataset that never see the main process's epoch.

    In a worker process, a user error (an unreadable image, say) becomes the item
    ``{WORKER_ERROR: message}``, which [`micro_batches`][dfpir.train.sampling.micro_batches] raises again in the training process:
    torch would re-raise it there with the worker's whole traceback in its message.
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, ...]) -> dict[str, Any]:
        epoch, index, *step = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        if hasattr(self.dataset, "set_step"):
            self.dataset.set_step(step[0] if step else 0)
        try:
            return self.dataset[index]
        except (UserError, ValueError, OSError) as exc:  # what cli_main reports in one line
            if get_worker_info() is None:
                raise
            return {WORKER_ERROR: str(exc)}


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the training process, which finishes its step first
    (a worker that died of it would fail the step instead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def micro_batches(dataset, order: SampleOrder, steps: range, micro: int, accum: int, rank: int = 0, world: int = 1,
                  workers: int = 0, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """The collated micro-batches of ``steps``, in order; with ``workers`` processes preparing them
    ahead. Every item depends only on its (epoch, index, step), so the batches are the same for any
    number of workers, and a resumed run that starts later sees the same ones."""
    keys = ([(*order(i), step) for i in indices] for step in steps for indices in batch_indices(step, micro, accum, rank, world))
    items = EpochItems(dataset)
    if workers == 0:
        return (collate([items[k] for k in batch]) for batch in keys)
    loader = DataLoader(items, batch_sampler=keys, num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
                        worker_init_fn=ignore_interrupts)
    return raise_worker_errors(loader)


def raise_worker_errors(batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The batches, raising a worker's user error (see [`EpochItems`][dfpir.train.sampling.EpochItems]) as a one-line ``UserError``."""
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
