"""Shared test helpers: the official fixture and small models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_tiny.npz"


def load_fixture(path: Path = FIXTURE) -> dict:
    """The official fixture split into state dict, constructor kwargs and arrays.

    Skips the calling test when the project's ``shared/`` folder is not beside the checkout.
    """
    if not path.exists():
        import pytest

        pytest.skip(f"official fixture not found at {path} (shared/ must sit beside the checkout)")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    return {
        "state_dict": {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")},
        "kwargs": {k[len("config/"):]: v.tolist() for k, v in data.items() if k.startswith("config/")},
        "input": data["input"],
        "text_code": data["text_code"],
        "output": data["output"],
        "order": {k[len("order/"):]: v for k, v in data.items() if k.startswith("order/")},
        "activation": {k[len("activation/"):]: v for k, v in data.items() if k.startswith("activation/")},
    }
