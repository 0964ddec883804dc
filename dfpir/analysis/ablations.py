"""Ablations: the same weights with one architectural switch turned off.

[`ablate`][dfpir.analysis.ablations.ablate] applies one of [`ABLATIONS`][dfpir.analysis.ablations.ABLATIONS] to a built or loaded model:

* ``"no_dgpb"``: the same backbone weights without the DGPBs (the ``restormer`` architecture);
* ``"no_shuffle"``: every prompt gives the identity channel order (the DGM's last layer is set to
  a constant descending score), so ``reduce . expand`` is one map shared by all tasks;
* ``"no_mask"``: the top-k attention mask keeps every entry (``keep_ratio = 1``);
* ``"learnable"``: ``guidance="learnable"``, the DGM receives gradients (and counts as shared).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from ..model.config import get_config
from ..model.network import DFPIR

ABLATIONS = ("none", "no_dgpb", "no_shuffle", "no_mask", "learnable")
"""Names accepted by [`ablate`][dfpir.analysis.ablations.ablate] and the command line's ``--ablation``."""


def ablate(model: DFPIR, ablation: str = "none") -> DFPIR:
    """A copy of ``model`` with one architectural switch turned off (see [`ABLATIONS`][dfpir.analysis.ablations.ABLATIONS]).

    Parameters
    ----------
    model : DFPIR
        A freshly initialised or loaded model; it is not modified.
    ablation : str
        One of [`ABLATIONS`][dfpir.analysis.ablations.ABLATIONS]. ``"none"`` returns an unmodified copy.

    Returns
    -------
    DFPIR
        A new model sharing no storage with ``model``. Every weight the ablated architecture still
        has is copied from ``model``, so ablations of one initialisation are directly comparable.

    Raises
    ------
    ValueError
        For an unknown ablation, or one that does not apply (e.g. ``"no_mask"`` without DGPBs).
    """
    if ablation not in ABLATIONS:
        raise UserError(f"unknown ablation {ablation!r}; choose one of: {', '.join(ABLATIONS)}")
    cfg = model.config
    if ablation != "none" and not cfg.use_dgpb:
        raise UserError(f"ablation {ablation!r} needs a model with DGPBs (this one has none)")
    changes: dict[str, Any] = {
        "none": {},
        "no_shuffle": {},
        "no_dgpb": {"use_dgpb": False},
        "no_mask": {"keep_ratio": 1.0},
        "learnable": {"guidance": "learnable"},
    }[ablation]
    new = DFPIR(cfg.replace(**changes), prompts=model.prompts)
    state = {k: v for k, v in model.state_dict().items() if k in new.state_dict()}
    new.load_state_dict(state, strict=True)
    new.train(model.training)
    if ablation == "no_shuffle":
        identity_orders_(new)
    return new.to(next(model.parameters()).device)


@torch.no_grad()
def identity_orders_(model: DFPIR) -> DFPIR:
    """Make every DGPB's channel order the identity for every prompt, in place.

    The DGM's second linear layer gets zero weights and the bias ``2C, 2C-1, ..., 1``, so the
    scores no longer depend on the prompt and their stable descending sort is ``0, 1, ..., 2C-1``.

    Parameters
    ----------
    model : DFPIR
        A model with DGPBs.

    Returns
    -------
    DFPIR
        ``model`` itself.
    """
    for level in range(1, 5):
        dgm = getattr(model, f"dgpb{level}").perturb.dgm
        n = dgm.linear2.out_features
        dgm.linear2.weight.zero_()
        dgm.linear2.bias.copy_(torch.arange(n, 0, -1, dtype=dgm.linear2.bias.dtype))
    return model


def build_model(preset: str = "tiny", ablation: str = "none", seed: int = 0, **overrides: Any) -> DFPIR:
    """A freshly initialised model of a preset (with field overrides), then [`ablate`][dfpir.analysis.ablations.ablate]-d.

    Parameters
    ----------
    preset : str
        A preset of [`dfpir.model.config`][dfpir.model.config] (``"restormer"`` is the baseline without DGPBs).
    ablation : str
        One of [`ABLATIONS`][dfpir.analysis.ablations.ABLATIONS].
    seed : int
        ``torch.manual_seed`` before initialisation: the same seed gives the same backbone weights
        whatever the ablation.
    **overrides
        [`DFPIRConfig`][dfpir.model.config.DFPIRConfig] fields, e.g. ``dim=8``.

    Returns
    -------
    DFPIR
    """
    torch.manual_seed(seed)
    return ablate(DFPIR(get_config(preset, **overrides)), ablation)
