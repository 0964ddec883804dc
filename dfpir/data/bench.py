"""The data benchmark behind ``python -m dfpir.data bench``: is the data or the model the bottleneck?

It times each synthetic degradation, the DataLoader with a few worker counts, and a training step
of a model preset, all in patches per second on the same clean patches.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import torch
from torch.utils.data import DataLoader

from ..degradations import DEGRADATIONS, synthesizer, synthetic_names
from ..model.config import get_config
from ..model.network import DFPIR
from .datasets import SyntheticDataset, validation_set
from .photos import builtin_photos, list_images


def bench(size: int = 128, batch: int = 16, repeats: int = 5, workers: Sequence[int] = (0, 2), model: str | None = "tiny",
          out: TextIO = sys.stdout, photos: Path | None = None) -> dict[str, float]:
    """Print and return patches/s of each degradation, of the DataLoader, of a model step and, with
    a folder of ``photos``, of items read from its files (see [`bench_files`][dfpir.data.bench.bench_files])."""
    results: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    clean = torch.stack([it["target"] for it in validation_set(builtin_photos("train")[:4], ["noise15"], size, per_image=4)])
    clean = clean.repeat(math.ceil(batch / len(clean)), 1, 1, 1)[:batch]
    print(f"{'what':<34} {'patches/s':>10}   ({size}x{size}, batch {batch}, {torch.get_num_threads()} threads)", file=out)
    for name in synthetic_names():
        fn = synthesizer(name)
        fn(clean, g)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            fn(clean, g)
        results[name] = batch * repeats / (time.perf_counter() - t)
        print(f"{'degrade ' + name:<34} {results[name]:>10.0f}", file=out)
    batches = 4 * repeats  # enough batches that worker prefetching does not flatter the numbers
    ds = SyntheticDataset(builtin_photos("train"), list(DEGRADATIONS), size, length=batch * (batches + 1), seed=0)
    for w in workers:
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=w)
        it = iter(loader)
        next(it)  # worker start-up is paid once per epoch, not per batch
        t = time.perf_counter()
        n = sum(len(b["input"]) for b in it)
        results[f"loader{w}"] = n / (time.perf_counter() - t)
        print(f"{f'DataLoader, {w} workers':<34} {results[f'loader{w}']:>10.0f}", file=out)
    if photos is not None:
        results.update(bench_files(photos, size, batch, repeats, out))
    if model:
        results["model"] = _bench_model(model, clean, repeats)
        print(f"{f'model {model!r} train step':<34} {results['model']:>10.1f}   ({batch / results['model']:.2f} s per step)", file=out)
    return results


def bench_files(folder: Path, size: int, batch: int, repeats: int, out: TextIO = sys.stdout) -> dict[str, float]:
    """Patches/s of items drawn from the files of ``folder`` (every degradation, in the training
    process): every file decoded afresh for each item, then kept in memory after one read of each
    (a run's steady state, [`DecodedPhotos`][dfpir.data.photos.DecodedPhotos])."""
    files = list_images(folder, recursive=True)
    n = batch * 4 * repeats
    results = {}
    for key, label, keep in (("files_afresh", "decoded afresh", False), ("files_kept", "decoded once, kept", True)):
        ds = SyntheticDataset(files, synthetic_names(), size, length=n, seed=0)
        if keep:
            for entry in ds.images:
                ds.load(entry)
        else:
            ds.decoded.budget = 0
        t = time.perf_counter()
        for i in range(n):
            ds[i]
        results[key] = n / (time.perf_counter() - t)
        print(f"{f'{len(files)} files, {label}':<34} {results[key]:>10.0f}", file=out)
    return results


def _bench_model(preset: str, clean: torch.Tensor, repeats: int) -> float:
    """Patches per second of ``preset``'s training step (Adam, L1) on ``clean``."""
    net = DFPIR(get_config(preset))
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    prompt = net.embed_prompts("noise25", len(clean))
    steps = max(1, repeats // 2)
    t = 0.0
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = (net(clean, prompt) - clean).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t += (time.perf_counter() - start) if i else 0.0  # first step warms up
    return len(clean) * steps / t
