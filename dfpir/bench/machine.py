"""What a benchmark ran on: the processor, its cores, the instruction sets torch's kernels use, versions.

Every benchmark prints [`machine_line`][dfpir.bench.machine.machine_line] above its numbers and
stores [`machine`][dfpir.bench.machine.machine] with them, so that timings from different
machines are never compared unawares.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The processor's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set extensions that decide the CPU kernels (AVX2, AVX-512, bf16, AMX) the CPU reports."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in wanted if f in flags]


def machine() -> dict[str, str | int | list[str]]:
    """What the numbers were measured on: processor, cores, the ISA torch's kernels use, versions."""
    info: dict[str, str | int | list[str]] = {
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count() or 0,
        "threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def machine_line(info: dict[str, str | int | list[str]]) -> str:
    """``machine()`` in one line, printed above every table."""
    line = (f"machine: {info['cpu']}, {info['logical_cores']} logical cores, torch using {info['threads']} threads, "
            f"kernels {info['torch_cpu_capability']} ({' '.join(info['cpu_flags']) or 'flags unknown'}), torch {info['torch']}")
    return line + (f", {info['cuda_device']}" if "cuda_device" in info else "")
