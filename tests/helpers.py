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


# Our names -> the original's, the inverse of dfpir.official's rules, written out independently
# so that a test can make "official" state dicts of any configuration (the fixture has one).
_TO_OFFICIAL = [
    (r"^(\w+)\.(\d+)\.(norm\d)\.(weight|bias)$", r"\1.\2.\3.body.\4"),
    (r"^(dgpb\d)\.norm_q\.(weight|bias)$", r"\1.norm1.body.\2"),
    (r"^(dgpb\d)\.norm_kv\.(weight|bias)$", r"\1.norm2.body.\2"),
    (r"^(dgpb\d)\.norm_ffn\.(weight|bias)$", r"\1.norm3.body.\2"),
    (r"^(dgpb\d)\.perturb\.dgm\.linear1\.", r"\1.linear_layer1."),
    (r"^(dgpb\d)\.perturb\.dgm\.linear2\.", r"\1.linear_layer3."),
    (r"^(dgpb\d)\.perturb\.expand\.", r"\1.conv1x1."),
    (r"^(dgpb\d)\.perturb\.reduce\.", r"\1.conv_out."),
    (r"^(dgpb\d)\.attn\.scale$", r"\1.select_attn.attn4"),
    (r"^(dgpb\d)\.attn\.", r"\1.select_attn."),
    (r"^dgpb4\.", "latent_shuffle_channel."),
    (r"^dgpb(\d)\.", r"encoder_shuffle_channel\1."),
    (r"^embed\.", "patch_embed.proj."),
    (r"^encoder(\d)\.", r"encoder_level\1."),
    (r"^decoder(\d)\.", r"decoder_level\1."),
    (r"^down1\.conv\.", "down1_2.body.0."),
    (r"^down2\.conv\.", "down2_3.body.0."),
    (r"^down3\.conv\.", "down3_4.body.0."),
    (r"^up3\.conv\.", "up4_3.body.0."),
    (r"^up2\.conv\.", "up3_2.body.0."),
    (r"^up1\.conv\.", "up2_1.body.0."),
    (r"^fuse(\d)\.", r"reduce_chan_level\1."),
]


def to_official_names(state_dict: dict) -> dict:
    """``state_dict`` of a :class:`dfpir.DFPIR` under the original code's parameter names."""
    import re

    out = {}
    for name, value in state_dict.items():
        for pattern, repl in _TO_OFFICIAL:
            name = re.sub(pattern, repl, name)
        out[name] = value
    return out
