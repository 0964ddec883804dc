"""Benchmarks (``python -m dfpir.bench``): [`suites`][dfpir.bench.suites] times forward passes,
training steps and execution variants; [`layouts`][dfpir.bench.layouts] holds the original code's
layout they compare with; [`restore`][dfpir.bench.restore] measures tiled restoration's memory and
[`reference`][dfpir.bench.reference] the NumPy oracle's operations; [`heldout`][dfpir.bench.heldout] scores the shipped
weights on the held-out photos beside classical anchors; [`machine`][dfpir.bench.machine] describes
the machine every timing was made on."""

from .suites import main

__all__ = ["main"]
