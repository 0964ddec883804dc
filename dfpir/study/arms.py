"""The arms of the ablation study: one declarative row each, and the initial weights of every run.

An arm is a network (overrides of the grid's [`DFPIRConfig`][dfpir.model.config.DFPIRConfig]) plus, where
the training config has no switch for it, a *surgery* on the initial weights that training
preserves. Both surgeries act on the DGM, which faithful guidance freezes (no gradient reaches
it and the optimiser never sees it), so what [`initial_model`][dfpir.study.arms.initial_model] sets stays set for the whole
run; no field of the model and nothing in [`dfpir.model`][dfpir.model] knows about the study:

* ``identity_order`` (``no_shuffle``): every prompt gives the identity channel order
  ([`dfpir.analysis.identity_orders_`][dfpir.analysis.ablations.identity_orders_]);
* ``shared_order`` (``shared_prompt``): every prompt gives the order of one prompt, the mean of
  the run's prompt embeddings ([`shared_orders_`][dfpir.study.arms.shared_orders_]).

With ``expand`` and ``reduce`` both trained, one fixed permutation between them can be folded into
``reduce``'s columns, so ``shared_prompt`` and ``no_shuffle`` train the same family of functions;
they differ only in which (equally distributed) initial weights meet. Both are kept because the
issue names both.

Same start per seed: every run of seed ``s`` copies its initial tensors from one draw of the
grid's published model at ``s`` ([`seed_model`][dfpir.study.arms.seed_model]); tensors the published model lacks (the
extra blocks of ``restormer_wide``) are drawn from a stream of their own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..analysis.ablations import identity_orders_
from ..errors import UserError
from ..model.config import DFPIRConfig
from ..model.network import DFPIR
from ..train import prompt_bank

SURGERIES = ("", "identity_order", "shared_order")
"""What [`initial_model`][dfpir.study.arms.initial_model] may do to an arm's initial weights ("": nothing)."""

WIDE_TOLERANCE = 0.05
"""``restormer_wide`` has the trainable parameters of ``dfpir`` within this fraction."""

WIDE_CLOSE = 0.01
"""... and with as few added blocks as come within this fraction (see [`matched_blocks`][dfpir.study.arms.matched_blocks])."""

EXTRA_SEED = 1_000_003  # the stream of tensors the seed's published model does not have


@dataclass(frozen=True)
class Arm:
    """One arm: how its network differs from the published one, and how it trains.

    Attributes
    ----------
    name : str
        Its name in grids, run ids and tables.
    summary : str
        One line for the report.
    model : dict
        [`DFPIRConfig`][dfpir.model.config.DFPIRConfig] field overrides on top of the grid's model.
    surgery : str
        One of [`SURGERIES`][dfpir.study.arms.SURGERIES], applied to the initial weights (needs frozen DGMs).
    widen : bool
        Add transformer blocks until the trainable parameters match ``dfpir``'s
        ([`matched_blocks`][dfpir.study.arms.matched_blocks]).
    specialist : bool
        One run per degradation, trained on it alone (the interference baseline).
    """

    name: str
    summary: str
    model: dict[str, Any] = field(default_factory=dict)
    surgery: str = ""
    widen: bool = False
    specialist: bool = False


ARMS: dict[str, Arm] = {a.name: a for a in [
    Arm("dfpir", "DFPIR as published (frozen DGM)"),
    Arm("restormer", "the same backbone without DGPBs", {"use_dgpb": False}),
    Arm("restormer_wide", "the backbone without DGPBs, with blocks added to match dfpir's trainable parameters",
        {"use_dgpb": False}, widen=True),
    Arm("shared_prompt", "DGPBs with one channel order for every degradation", surgery="shared_order"),
    Arm("no_shuffle", "DGPBs with the identity channel order for every degradation", surgery="identity_order"),
    Arm("no_mask", "DGPBs whose attention keeps every entry (keep_ratio 1)", {"keep_ratio": 1.0}),
    Arm("learnable", "DGPBs with a DGM that learns (straight-through gate)", {"guidance": "learnable"}),
    Arm("specialist", "the backbone without DGPBs, trained on one degradation alone", {"use_dgpb": False}, specialist=True),
]}
"""Every arm, in the order the report lists them."""


def check_arm(name: str) -> Arm:
    """The arm called ``name``; a [`UserError`][dfpir.errors.UserError] naming the known ones otherwise."""
    if name not in ARMS:
        raise UserError(f"unknown study arm {name!r}; known: {', '.join(ARMS)}")
    return ARMS[name]


def arm_config(arm: Arm, model: DFPIRConfig) -> DFPIRConfig:
    """The network of ``arm`` when the grid's published network is ``model``."""
    if not model.use_dgpb or model.guidance != "faithful":
        raise UserError("a study grid's model must be the published one (use_dgpb true, guidance faithful); arms change it")
    cfg = model.replace(**arm.model)
    if arm.surgery and (not cfg.use_dgpb or cfg.guidance != "faithful"):
        raise UserError(f"arm {arm.name}: surgery {arm.surgery} needs frozen DGMs (faithful guidance), or training would undo it")
    return cfg.replace(**matched_blocks(model)) if arm.widen else cfg


def trainable(cfg: DFPIRConfig) -> int:
    """Trainable parameters of a network of ``cfg`` (counted on the meta device: no memory)."""
    with torch.device("meta"):
        return DFPIR(cfg).num_parameters(trainable_only=True)


def matched_blocks(model: DFPIRConfig, most: int = 4) -> dict[str, Any]:
    """Block counts that give the backbone without DGPBs ``model``'s trainable parameters.

    Blocks are added (never removed) at encoder levels 1-3, the latent and the refinement, up to
    ``most`` per place, so every tensor of the plain backbone keeps its name and shape (and its
    initial value, see [`initial_model`][dfpir.study.arms.initial_model]). Parameters are additive in blocks, so one model per
    place prices them. The choice: the fewest added blocks within [`WIDE_CLOSE`][dfpir.study.arms.WIDE_CLOSE] of the
    target (else within [`WIDE_TOLERANCE`][dfpir.study.arms.WIDE_TOLERANCE]), then the closest count, then the first in
    ``itertools.product`` order. For the tiny, small and paper presets that is 3-4 blocks
    within 1%.

    Returns
    -------
    dict
        ``{"num_blocks": [...], "num_refinement_blocks": n}``.

    Raises
    ------
    UserError
        If no choice comes within [`WIDE_TOLERANCE`][dfpir.study.arms.WIDE_TOLERANCE].
    """
    target = trainable(model)
    plain = model.replace(use_dgpb=False)
    base = trainable(plain)
    places = [plain.replace(num_blocks=tuple(n + (i == level) for i, n in enumerate(plain.num_blocks))) for level in range(4)]
    places.append(plain.replace(num_refinement_blocks=plain.num_refinement_blocks + 1))
    price = [trainable(p) - base for p in places]
    off = {extra: abs(base + sum(e * p for e, p in zip(extra, price)) - target) / target
           for extra in itertools.product(range(most + 1), repeat=5)}
    for tolerance in (WIDE_CLOSE, WIDE_TOLERANCE):
        within = [extra for extra, o in off.items() if o <= tolerance]
        if within:
            best = min(within, key=lambda extra: (sum(extra), off[extra]))
            return {"num_blocks": [n + e for n, e in zip(plain.num_blocks, best[:4])],
                    "num_refinement_blocks": plain.num_refinement_blocks + best[4]}
    raise UserError(f"no block counts bring the plain backbone ({base:,} trainable parameters) within "
                    f"{WIDE_TOLERANCE:.0%} of dfpir's {target:,}; closest: {min(off.values()):.1%} off")


def seed_model(model: DFPIRConfig, seed: int, degradations: Sequence[str]) -> DFPIR:
    """The published network as initialised by ``torch.manual_seed(seed)``: the source of every
    run's initial weights at that seed (the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DFPIR(model, prompts=prompt_bank(degradations, model.prompt_dim))


def initial_model(arm: Arm, model: DFPIRConfig, seed: int, degradations: Sequence[str]) -> DFPIR:
    """The weights a run of ``arm`` starts from (given to training as ``train.init``).

    Every tensor whose name and shape the seed's published model ([`seed_model`][dfpir.study.arms.seed_model]) also has
    is copied from it, so all arms of one seed start from the same backbone and the DGPB arms
    from the same DGPBs; the rest is drawn from its own stream; then the arm's surgery.
    """
    source = seed_model(model, seed, degradations)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + EXTRA_SEED)
        new = DFPIR(arm_config(arm, model), prompts=source.prompts)
    own = new.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    new.load_state_dict({**own, **shared})
    if arm.surgery == "identity_order":
        identity_orders_(new)
    elif arm.surgery == "shared_order":
        shared_orders_(new, new.embed_prompts(list(degradations)).mean(0))
    return new


@torch.no_grad()
def shared_orders_(model: DFPIR, prompt: torch.Tensor) -> DFPIR:
    """Give every prompt the channel order of ``prompt`` (prompt_dim,) in every DGPB, in place.

    The DGM's second linear layer gets zero weights and, as its bias, the scores ``prompt``
    had: the scores no longer depend on the prompt.
    """
    for level in range(1, 5):
        dgm = getattr(model, f"dgpb{level}").perturb.dgm
        scores = dgm(prompt[None].to(dgm.linear1.weight.dtype))[0]  # (2C,)
        dgm.linear2.weight.zero_()
        dgm.linear2.bias.copy_(scores)
    return model


def backbone(name: str) -> bool:
    """Whether the parameter ``name`` belongs to the shared backbone (not to a DGPB)."""
    return not name.startswith("dgpb")
