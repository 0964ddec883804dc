"""Measuring tools: task interference, channel orders and masked attention maps.

Task interference
-----------------
An all-in-one restorer shares its weights between degradations. For each degradation ``t`` we
compute the gradient ``g_t`` of the L1 restoration loss on a batch of that degradation with
respect to the shared (trainable) parameters, and compare degradations pairwise by cosine
similarity ``cos(g_s, g_t)``. A negative cosine is a *conflict*: a step that helps one task hurts
the other to first order. The cosines are given for all shared parameters together ("overall")
and per top-level module (``encoder1``, ``dgpb2``, ``decoder1``, ...).

All degradations see the *same* clean crops, so the gradients differ only through the
degradation (and its prompt).

Ablations (:data:`ABLATIONS`) are applied to a built or loaded model by :func:`ablate`:

* ``"no_dgpb"``: the same backbone weights without the DGPBs (the ``restormer`` architecture);
* ``"no_shuffle"``: every prompt gives the identity channel order (the DGM's last layer is set to
  a constant descending score), so ``reduce . expand`` is one map shared by all tasks;
* ``"no_mask"``: the top-k attention mask keeps every entry (``keep_ratio = 1``);
* ``"learnable"``: ``guidance="learnable"``, the DGM receives gradients (and counts as shared).

Command line::

    python -m dfpir.analysis interference --preset tiny --out runs/interference
    python -m dfpir.analysis interference --weights best.safetensors --data builtin --out DIR
    python -m dfpir.analysis blur-bound

``interference`` writes ``DIR/interference.png`` (heatmaps), ``DIR/interference_layers.png``
(per-layer matrices) and ``DIR/interference.json`` (the numbers).

``blur-bound`` prints what Wiener deconvolution *with the true kernel* gains on the synthetic
motion blur (:func:`deblur_bound`), an upper reference for what a blind restorer can learn, and
what one fixed filter for every shake gains, the generic sharpening a restorer gets without
estimating the kernel; ``--weights`` places trained checkpoints between the two.

matplotlib is only needed by the ``plot_*`` functions and the command line.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model.config import get_config
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..files import check_output_folder
from ..model.network import DFPIR

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ABLATIONS = ("none", "no_dgpb", "no_shuffle", "no_mask", "learnable")
"""Names accepted by :func:`ablate` and the command line's ``--ablation``."""

Batches = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
"""Degradation name -> (degraded input, clean target), each (B, 3, P, P)."""

# --------------------------------------------------------------------------------- models


def ablate(model: DFPIR, ablation: str = "none") -> DFPIR:
    """A copy of ``model`` with one architectural switch turned off (see :data:`ABLATIONS`).

    Parameters
    ----------
    model : DFPIR
        A freshly initialised or loaded model; it is not modified.
    ablation : str
        One of :data:`ABLATIONS`. ``"none"`` returns an unmodified copy.

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
    """A freshly initialised model of a preset (with field overrides), then :func:`ablate`-d.

    Parameters
    ----------
    preset : str
        A preset of :mod:`dfpir.model.config` (``"restormer"`` is the baseline without DGPBs).
    ablation : str
        One of :data:`ABLATIONS`.
    seed : int
        ``torch.manual_seed`` before initialisation: the same seed gives the same backbone weights
        whatever the ablation.
    **overrides
        :class:`~dfpir.model.config.DFPIRConfig` fields, e.g. ``dim=8``.

    Returns
    -------
    DFPIR
    """
    torch.manual_seed(seed)
    return ablate(DFPIR(get_config(preset, **overrides)), ablation)


# --------------------------------------------------------------------------------- data


def clean_crops(images: Sequence[np.ndarray] | None = None, count: int = 4, patch: int = 32, seed: int = 0) -> torch.Tensor:
    """``count`` random ``patch`` x ``patch`` crops of clean images, as a (count, 3, P, P) tensor.

    Parameters
    ----------
    images : sequence of (H, W, 3) float arrays, optional
        Clean images in [0, 1]; default the built-in training photos
        (:func:`dfpir.data.builtin_photos`).
    count, patch : int
        Number and size of the crops.
    seed : int
        Chooses images and crop positions.
    """
    from ..data.datasets import builtin_photos, crop, crop_box, to_tensor

    if images is None:
        images = [img for _, img in builtin_photos("train")]
    if not images:
        raise UserError("no clean images to crop")
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        img = images[(i + int(rng.integers(len(images)))) % len(images)]
        crops.append(to_tensor(crop(img, *crop_box(*img.shape[:2], patch, rng), patch)))
    return torch.stack(crops)


def task_batches(
    degradations: Sequence[str],
    images: Sequence[np.ndarray] | None = None,
    batch: int = 4,
    patch: int = 32,
    seed: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One batch per degradation, all degrading the *same* clean crops.

    Parameters
    ----------
    degradations : sequence of str
        Registered degradations with a synthetic model (:func:`dfpir.degradations.synthetic_names`).
    images : sequence of arrays, optional
        Clean images (default: the built-in training photos).
    batch, patch : int
        Crops per batch and their size.
    seed : int
        Chooses the crops and the degradation noise (each degradation its own stream).

    Returns
    -------
    dict
        ``{name: (degraded, clean)}``, tensors (batch, 3, patch, patch).
    """
    from ..degradations import synthetic_names, synthesizer

    clean = clean_crops(images, batch, patch, seed)
    out = {}
    for i, name in enumerate(degradations):
        if name not in synthetic_names():
            raise UserError(f"no synthetic model for degradation {name!r}; known: {', '.join(synthetic_names())}")
        g = torch.Generator().manual_seed(seed * 1009 + i + 1)
        out[name] = (synthesizer(name)(clean, g).float(), clean)
    return out


# --------------------------------------------------------------------------------- interference


def layer_of(parameter_name: str) -> str:
    """The top-level module a parameter belongs to: ``"dgpb2.attn.q.weight"`` -> ``"dgpb2"``."""
    return parameter_name.split(".", 1)[0]


def task_gradients(
    model: DFPIR, batches: Batches, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.l1_loss
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """Per-degradation gradients of the restoration loss on the shared (trainable) parameters.

    Parameters
    ----------
    model : DFPIR
        The network; its parameters with ``requires_grad`` are the shared ones (the frozen DGM of
        faithful guidance is left out: no gradient can reach it).
    batches : mapping
        ``{name: (degraded, clean)}``, e.g. from :func:`task_batches`; each batch is restored with
        its own degradation's prompt.
    loss : callable
        ``loss(restored, clean) -> scalar``; default the L1 loss the model is trained with.

    Returns
    -------
    grads : dict
        ``{degradation: {parameter name: flattened float64 gradient}}``; a parameter the loss does
        not reach has a zero gradient.
    losses : dict
        ``{degradation: loss value}``.
    """
    device = next(model.parameters()).device
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads: dict[str, dict[str, torch.Tensor]] = {}
    losses: dict[str, float] = {}
    for name, (degraded, clean) in batches.items():
        model.zero_grad(set_to_none=True)
        degraded, clean = degraded.to(device), clean.to(device)
        prompt = model.embed_prompts(name, degraded.shape[0]) if model.config.use_dgpb else None
        value = loss(model(degraded, prompt), clean)
        value.backward()
        losses[name] = float(value.detach())
        grads[name] = {
            n: (p.grad.detach().flatten().double().cpu() if p.grad is not None else torch.zeros(p.numel(), dtype=torch.float64))
            for n, p in named
        }
    model.zero_grad(set_to_none=True)
    return grads, losses


def cosine_from_gram(gram: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix from a Gram matrix of dot products ``G[s, t] = <g_s, g_t>``.

    Pairs involving a zero vector get NaN; the diagonal of non-zero vectors is exactly 1.
    """
    gram = np.asarray(gram, dtype=np.float64)
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = gram / np.outer(norms, norms)
    cos[np.outer(norms, norms) == 0] = np.nan
    cos = np.clip((cos + cos.T) / 2, -1.0, 1.0)  # exactly symmetric despite rounding
    np.fill_diagonal(cos, np.where(norms > 0, 1.0, np.nan))
    return cos


def cosine_matrix(vectors: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
    """Pairwise cosine similarities (T, T) of T flattened vectors, computed in float64.

    Parameters
    ----------
    vectors : sequence
        T vectors of the same length (any shape; they are flattened).

    Returns
    -------
    ndarray
        Symmetric, unit diagonal (NaN rows and columns for zero vectors), entries in [-1, 1].
    """
    m = np.stack([np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).ravel() for v in vectors])
    return cosine_from_gram(m @ m.T)


def conflict_fraction(cosine: np.ndarray) -> float:
    """Fraction of distinct pairs ``s < t`` with a negative cosine (NaN pairs are left out).

    Returns NaN when there is no pair to count (fewer than two tasks, or all pairs NaN).
    """
    cosine = np.asarray(cosine)
    iu = np.triu_indices(cosine.shape[0], k=1)
    pairs = cosine[iu]
    pairs = pairs[np.isfinite(pairs)]
    return float((pairs < 0).mean()) if pairs.size else float("nan")


def mean_offdiagonal(cosine: np.ndarray) -> float:
    """Mean cosine over the distinct pairs ``s < t`` (NaN pairs left out)."""
    cosine = np.asarray(cosine)
    pairs = cosine[np.triu_indices(cosine.shape[0], k=1)]
    pairs = pairs[np.isfinite(pairs)]
    return float(pairs.mean()) if pairs.size else float("nan")


@dataclass
class Interference:
    """Gradient-conflict measurement of one model (see :func:`measure_interference`).

    Attributes
    ----------
    degradations : list of str
        Task order of every matrix.
    cosine : ndarray
        (T, T) cosine similarities of the gradients on all shared parameters.
    conflict_fraction : float
        Fraction of task pairs with a negative overall cosine.
    mean_cosine : float
        Mean overall cosine over task pairs.
    grad_norms : ndarray
        (T,) norm of each task's gradient.
    losses : dict
        Loss value per degradation.
    layers : dict
        Per top-level module: ``{"cosine": (T, T), "conflict_fraction", "mean_cosine",
        "grad_norms": (T,), "parameters": int}``, in the model's module order.
    meta : dict
        Free-form description (model config, ablation, data).
    """

    degradations: list[str]
    cosine: np.ndarray
    conflict_fraction: float
    mean_cosine: float
    grad_norms: np.ndarray
    losses: dict[str, float]
    layers: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (arrays become nested lists, NaN becomes ``None``)."""

        def clean(x: Any) -> Any:
            if isinstance(x, np.ndarray):
                return clean(x.tolist())
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, (float, np.floating)):
                return None if not math.isfinite(float(x)) else float(x)
            if isinstance(x, np.integer):
                return int(x)
            return x

        return clean(
            {
                "degradations": self.degradations,
                "overall": {
                    "cosine": self.cosine,
                    "conflict_fraction": self.conflict_fraction,
                    "mean_cosine": self.mean_cosine,
                    "grad_norms": self.grad_norms,
                },
                "losses": self.losses,
                "layers": self.layers,
                "meta": self.meta,
            }
        )

    def summary(self) -> str:
        """A short text table: overall, then one line per layer."""
        lines = [f"{'layer':<12}{'params':>10}{'conflicts':>11}{'mean cos':>10}"]
        rows = [("overall", sum(v["parameters"] for v in self.layers.values()), self.conflict_fraction, self.mean_cosine)]
        rows += [(k, v["parameters"], v["conflict_fraction"], v["mean_cosine"]) for k, v in self.layers.items()]
        for name, n, frac, mean in rows:
            lines.append(f"{name:<12}{n:>10,}{frac:>11.1%}{mean:>+10.3f}")
        return "\n".join(lines)


def interference_from_gradients(
    grads: Mapping[str, Mapping[str, torch.Tensor]], losses: Mapping[str, float] | None = None, meta: dict[str, Any] | None = None
) -> Interference:
    """Cosine matrices and conflict fractions, overall and per top-level module, from gradients.

    Parameters
    ----------
    grads : mapping
        ``{degradation: {parameter name: flattened gradient}}`` as from :func:`task_gradients`;
        every degradation must list the same parameters.
    losses : mapping, optional
        Loss per degradation (recorded only).
    meta : dict, optional
        Recorded as is.

    Returns
    -------
    Interference
    """
    names = list(grads)
    if not names:
        raise UserError("no task gradients given")
    params = list(grads[names[0]])
    layer_params: dict[str, list[str]] = {}
    for p in params:
        layer_params.setdefault(layer_of(p), []).append(p)
    total = np.zeros((len(names), len(names)))
    layers: dict[str, dict[str, Any]] = {}
    for layer, members in layer_params.items():
        stacked = torch.stack([torch.cat([grads[t][p].flatten().double() for p in members]) for t in names])  # (T, n)
        gram = (stacked @ stacked.T).numpy()
        total += gram
        cos = cosine_from_gram(gram)
        layers[layer] = {
            "cosine": cos,
            "conflict_fraction": conflict_fraction(cos),
            "mean_cosine": mean_offdiagonal(cos),
            "grad_norms": np.sqrt(np.diag(gram)),
            "parameters": int(stacked.shape[1]),
        }
    cos = cosine_from_gram(total)
    return Interference(
        degradations=names,
        cosine=cos,
        conflict_fraction=conflict_fraction(cos),
        mean_cosine=mean_offdiagonal(cos),
        grad_norms=np.sqrt(np.diag(total)),
        losses=dict(losses or {}),
        layers=layers,
        meta=dict(meta or {}),
    )


def measure_interference(model: DFPIR, batches: Batches, meta: dict[str, Any] | None = None) -> Interference:
    """Task interference of ``model`` on ``batches``: :func:`task_gradients` then the matrices.

    Parameters
    ----------
    model : DFPIR
        Any model (fresh, trained, ablated); its weights are not changed.
    batches : mapping
        ``{degradation: (degraded, clean)}``, e.g. :func:`task_batches`.
    meta : dict, optional
        Extra description to record; the model's config is always added.

    Returns
    -------
    Interference

    Examples
    --------
    >>> model = build_model("tiny", dim=8)                                  # doctest: +SKIP
    >>> result = measure_interference(model, task_batches(["noise25", "rain"]))  # doctest: +SKIP
    >>> result.cosine.shape                                                 # doctest: +SKIP
    (2, 2)
    """
    grads, losses = task_gradients(model, batches)
    info = {"config": model.config.to_dict(), **(meta or {})}
    return interference_from_gradients(grads, losses, info)


# --------------------------------------------------------------------------------- channel orders


@torch.no_grad()
def channel_orders(model: DFPIR, degradations: Sequence[str]) -> dict[int, np.ndarray]:
    """The channel order of every DGPB for each degradation's prompt.

    Parameters
    ----------
    model : DFPIR
        A model with DGPBs.
    degradations : sequence of str
        Names in the model's prompt bank.

    Returns
    -------
    dict
        ``{level (1-4): (T, 2C) int64 array}``; row t is the order for ``degradations[t]``.
    """
    if not model.config.use_dgpb:
        raise UserError("this model has no DGPBs, hence no channel orders")
    prompts = model.embed_prompts(list(degradations))
    return {level: getattr(model, f"dgpb{level}").perturb.order(prompts).cpu().numpy() for level in range(1, 5)}


def rank_correlation(order_a: np.ndarray | torch.Tensor, order_b: np.ndarray | torch.Tensor) -> float:
    """Spearman rank correlation between two channel orders of the same length.

    Each order lists channels from highest to lowest score; the correlation compares the
    position every channel takes in the two orders (1: same order, -1: reversed, about 0:
    unrelated). Uses :func:`scipy.stats.spearmanr` when SciPy is installed, otherwise the exact
    formula for untied ranks ``1 - 6 sum d^2 / (n (n^2 - 1))``.

    Parameters
    ----------
    order_a, order_b : array
        (N,) permutations of ``range(N)``.
    """
    a = np.asarray(order_a.cpu() if isinstance(order_a, torch.Tensor) else order_a).ravel()
    b = np.asarray(order_b.cpu() if isinstance(order_b, torch.Tensor) else order_b).ravel()
    n = a.size
    if b.size != n or n < 2:
        raise UserError(f"need two orders of the same length >= 2, got {a.size} and {b.size}")
    if not (np.array_equal(np.sort(a), np.arange(n)) and np.array_equal(np.sort(b), np.arange(n))):
        raise UserError("orders must be permutations of range(N)")
    rank_a, rank_b = np.empty(n), np.empty(n)
    rank_a[a], rank_b[b] = np.arange(n), np.arange(n)  # position of channel j in each order
    try:
        from scipy.stats import spearmanr
    except ImportError:  # pragma: no cover - SciPy comes with scikit-image
        d = rank_a - rank_b
        return float(1 - 6 * (d * d).sum() / (n * (n * n - 1)))
    return float(spearmanr(rank_a, rank_b).statistic)


def order_similarity(orders: np.ndarray) -> np.ndarray:
    """(T, T) pairwise :func:`rank_correlation` of T orders given as a (T, N) array."""
    orders = np.asarray(orders)
    t = orders.shape[0]
    out = np.ones((t, t))
    for i in range(t):
        for j in range(i + 1, t):
            out[i, j] = out[j, i] = rank_correlation(orders[i], orders[j])
    return out


# --------------------------------------------------------------------------------- attention


@torch.no_grad()
def attention_map(model: DFPIR, image: torch.Tensor, degradation: str, level: int = 1) -> torch.Tensor:
    """The masked cross-attention matrix of one DGPB while the model restores ``image``.

    Parameters
    ----------
    model : DFPIR
        A model with DGPBs.
    image : Tensor
        (B, 3, H, W) in [0, 1].
    degradation : str
        The prompt's degradation name.
    level : int
        Which DGPB (1-4).

    Returns
    -------
    Tensor
        (B, heads, c, c) attention weights; rows sum to 1, masked entries are exactly 0.
    """
    if not model.config.use_dgpb:
        raise UserError("this model has no DGPBs, hence no masked attention")
    block = getattr(model, f"dgpb{level}")
    seen: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
        seen["x"], seen["prompt"] = args[0], args[1]

    handle = block.register_forward_hook(hook)
    try:
        model.restore(image, degradation)
    finally:
        handle.remove()
    x, prompt = seen["x"], seen["prompt"]
    q = block.perturb(x, prompt)
    return block.attn.attention_map(block.norm_q(q), block.norm_kv(x))


# --------------------------------------------------------------------------------- plots


def _axes(ax: "Axes | None", figsize: tuple[float, float]) -> tuple["Figure", "Axes"]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def plot_matrix(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str = "",
    ax: "Axes | None" = None,
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "RdBu_r",
    colorbar_label: str = "cosine similarity",
    annotate: bool = True,
) -> "Figure":
    """Heatmap of a square task x task matrix with labels, values and a colour bar.

    Parameters
    ----------
    matrix : ndarray
        (T, T) values; NaN cells are drawn grey.
    labels : sequence of str
        T task names (rows and columns).
    title : str
        Axes title.
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure).
    vmin, vmax, cmap : colour scale (a diverging map centred on 0 by default).
    colorbar_label : str
        Label of the colour bar.
    annotate : bool
        Write each value in its cell.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib

    fig, ax = _axes(ax, (1.0 + 0.55 * len(labels), 0.6 + 0.55 * len(labels)))
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="0.8")
    data = np.ma.masked_invalid(np.asarray(matrix, dtype=float))
    im = ax.imshow(data, cmap=colormap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title(title)
    if annotate:
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if not np.ma.is_masked(data[i, j]):
                    v = float(data[i, j])
                    dark = abs(v - (vmin + vmax) / 2) > 0.6 * (vmax - vmin) / 2
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=colorbar_label, shrink=0.8)
    return fig


def plot_interference(result: Interference, title: str = "") -> "Figure":
    """Overall cosine heatmap beside per-layer conflict fractions and mean cosines.

    Parameters
    ----------
    result : Interference
        From :func:`measure_interference`.
    title : str
        Figure title (default: describes the model).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    t = len(result.degradations)
    widths = [1.5 + 0.55 * t, 1.0 + 0.35 * len(result.layers)]
    fig, (ax0, ax1) = plt.subplots(
        1, 2, figsize=(sum(widths) + 1.0, 2.2 + 0.55 * t), width_ratios=widths, layout="constrained"
    )
    plot_matrix(
        result.cosine, result.degradations, ax=ax0,
        title=f"all shared parameters\nconflicting pairs {result.conflict_fraction:.0%}, mean cos {result.mean_cosine:+.2f}",
    )
    names = list(result.layers)
    frac = [result.layers[k]["conflict_fraction"] for k in names]
    mean = [result.layers[k]["mean_cosine"] for k in names]
    x = np.arange(len(names))
    ax1.bar(x - 0.2, frac, width=0.4, color="tab:red", label="fraction of conflicting pairs")
    ax1.bar(x + 0.2, mean, width=0.4, color="tab:blue", label="mean cosine")
    ax1.axhline(0, color="black", linewidth=0.8)
    ax1.set_xticks(x, names, rotation=60, ha="right")
    ax1.set_ylim(min(-0.1, np.nanmin(mean + [0]) - 0.05), 1.05)
    ax1.set_xlabel("top-level module")
    ax1.set_ylabel("fraction / cosine")
    ax1.set_title("per layer")
    ax1.legend(fontsize=8, loc="upper right")
    cfg = result.meta.get("config", {})
    default = f"gradient cosine between degradations ({cfg.get('preset', 'model')}, ablation {result.meta.get('ablation', 'none')})"
    fig.suptitle(title or default)
    return fig


def plot_layer_matrices(result: Interference, columns: int = 5) -> "Figure":
    """One small cosine heatmap per top-level module, with a shared colour bar.

    Parameters
    ----------
    result : Interference
        From :func:`measure_interference`.
    columns : int
        Heatmaps per row.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    names = list(result.layers)
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns + 1, 2.5 * rows), layout="constrained", squeeze=False)
    im = None
    for ax, name in zip(axes.flat, names):
        layer = result.layers[name]
        im = ax.imshow(np.ma.masked_invalid(layer["cosine"]), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"{name}\n{layer['conflict_fraction']:.0%} conflicts", fontsize=9)
        ax.set_xticks(range(len(result.degradations)), result.degradations, rotation=90, fontsize=6)
        ax.set_yticks(range(len(result.degradations)), result.degradations, fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes, label="cosine similarity", shrink=0.6)
    fig.suptitle("gradient cosine per top-level module")
    return fig


def plot_channel_orders(orders: np.ndarray, degradations: Sequence[str], title: str = "channel order", ax: "Axes | None" = None) -> "Figure":
    """Channel orders as an image: one row per degradation, colour = channel index at each position.

    Parameters
    ----------
    orders : ndarray
        (T, N) orders, e.g. one level of :func:`channel_orders`.
    degradations : sequence of str
        T row labels.
    title : str
        Axes title.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Figure
    """
    orders = np.asarray(orders)
    fig, ax = _axes(ax, (8, 0.8 + 0.35 * len(degradations)))
    im = ax.imshow(orders, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(degradations)), degradations)
    ax.set_xlabel("position in the shuffled tensor (0 = highest DGM score)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="channel index")
    return fig


def plot_attention_map(attention: torch.Tensor | np.ndarray, title: str = "masked attention", ax: "Axes | None" = None) -> "Figure":
    """One (c, c) attention matrix; entries removed by the top-k mask (exactly 0) are drawn black.

    Parameters
    ----------
    attention : Tensor or ndarray
        (c, c) weights, e.g. ``attention_map(...)[0, head]``.
    title : str
        Axes title.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib

    a = np.asarray(attention.detach().cpu() if isinstance(attention, torch.Tensor) else attention, dtype=float)
    fig, ax = _axes(ax, (4.2, 3.6))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="black")
    im = ax.imshow(np.ma.masked_equal(a, 0.0), cmap=cmap, interpolation="nearest")
    ax.set_xlabel("key channel")
    ax.set_ylabel("query channel")
    ax.set_title(f"{title}\n(black: masked, {int((a == 0).sum())} of {a.size})", fontsize=10)
    fig.colorbar(im, ax=ax, label="attention weight")
    return fig


# --------------------------------------------------------------------------- the deblurring bound

#: Noise-to-signal ratios tried per crop by :func:`deblur_bound` (the best one counts).
WIENER_NSRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def deblur_bound(images: Sequence[np.ndarray] | None = None, count: int = 64, patch: int = 128, seed: int = 0,
                 ensemble: int = 2048, models: Mapping[str, DFPIR] | None = None) -> dict[str, Any]:
    """How much of the synthetic motion blur linear filters undo, knowing the kernel or not.

    ``count`` clean crops are blurred by :func:`dfpir.degradations.motion_blur`'s kernels (in
    float64, no noise), then restored two ways:

    - *non-blind*: Wiener's filter with each crop's true kernel
      (:func:`~dfpir.degradations.wiener_deconvolve`), at the best of :data:`WIENER_NSRS` for each
      crop. A blind restorer (such as DFPIR) must estimate the kernel first, so its gain is below
      this one.
    - *fixed*: one linear filter for every crop, the best for the kernel distribution
      (:func:`~dfpir.degradations.ensemble_wiener` over ``ensemble`` other kernels of the
      generator), at the one of :data:`WIENER_NSRS` best on average. It needs no kernel: a
      restorer that gains no more than this has learnt a generic sharpening, not to deblur each
      image by its own shake.

    ``models`` (name -> DFPIR) are run on the same blurred crops with the ``blur`` prompt, so that
    trained restorers can be placed between the two.

    Returns
    -------
    dict
        ``input_psnr``, ``wiener_psnr``, ``fixed_psnr`` (means over the crops, dB), the gains
        ``gain`` (Wiener) and ``fixed_gain`` over the input, and ``models``: name -> mean PSNR.
    """
    from ..degradations.synthetic import blur_kernels, ensemble_wiener, filter2d, wiener_deconvolve
    from ..metrics import psnr

    def crop_psnr(restored: torch.Tensor) -> torch.Tensor:  # (count,) PSNR of each crop
        return torch.tensor([psnr(x, c) for x, c in zip(restored, clean)])

    clean = clean_crops(images, count, patch, seed).double()
    kernels = blur_kernels(count, torch.Generator().manual_seed(seed)).double()
    blurred = filter2d(clean, kernels).clamp(0, 1)
    best = torch.stack([crop_psnr(wiener_deconvolve(blurred, kernels, nsr)) for nsr in WIENER_NSRS]).amax(dim=0)
    others = blur_kernels(ensemble, torch.Generator().manual_seed(seed + 1)).double()
    fixed = max(float(crop_psnr(ensemble_wiener(blurred, others, nsr)).mean()) for nsr in WIENER_NSRS)
    before = float(crop_psnr(blurred).mean())
    after = float(best.mean())
    restored = {name: float(crop_psnr(_restore_blur(model, blurred)).mean()) for name, model in (models or {}).items()}
    return {"input_psnr": before, "wiener_psnr": after, "gain": after - before, "fixed_psnr": fixed, "fixed_gain": fixed - before,
            "models": restored}


def _restore_blur(model: DFPIR, blurred: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """``model``'s restorations of (B, 3, H, W) float64 ``blurred`` with the ``blur`` prompt."""
    with torch.no_grad():
        parts = [model.restore(x.float(), "blur").clamp(0, 1) for x in blurred.split(batch)]
    return torch.cat(parts).double()


# --------------------------------------------------------------------------------- command line


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r} must look like field=value (e.g. dim=8)")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


def _clean_images(data: str, patch: int) -> list[np.ndarray]:
    """The clean images ``--data`` names ('builtin': the built-in training parts, 'builtin-val':
    the held-out strips, or a folder), each at least ``patch`` pixels on its shorter side."""
    from ..data.datasets import builtin_photos, list_images, read_image

    if data in ("builtin", "builtin-val"):
        images = [img for _, img in builtin_photos("train" if data == "builtin" else "val")]
    else:
        files = list_images(data)
        if not files:
            raise UserError(f"{data}: no images found (give a folder of clean images, 'builtin' or 'builtin-val')")
        images = [read_image(f) for f in files]
    small = [img.shape[:2] for img in images if min(img.shape[:2]) < patch]
    if small:
        raise UserError(f"--patch {patch} is larger than an image ({small[0][0]} x {small[0][1]}); choose a smaller --patch")
    return images


def run_interference(args: argparse.Namespace) -> Interference:
    """The ``interference`` command: build or load, ablate, measure, write PNGs and JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import load

    from ..files import atomic_write
    from ..degradations import DEGRADATIONS

    check_at_least("--batch", args.batch, 1)
    check_at_least("--patch", args.patch, 1)
    check_at_least("--threads", args.threads, 0, "0: torch's default")
    if args.patch % 8:
        raise UserError(f"--patch must be a multiple of 8, got {args.patch}")
    if args.degradations is not None and len(set(args.degradations)) < 2:
        raise UserError("--degradations needs at least two different names: interference is between degradations")
    check_output_folder(Path(args.out))  # before minutes of gradients, not after
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = _parse_overrides(args.set)
    if args.weights:
        if overrides:
            raise UserError("--set changes a fresh model's config; it cannot be used with --weights")
        model = ablate(load(args.weights), args.ablation)
        source = str(args.weights)
    else:
        try:
            model = build_model(args.preset, args.ablation, args.seed, **overrides)
        except TypeError as exc:
            raise UserError(f"--set: {exc}") from None
        source = f"preset {args.preset} (fresh, seed {args.seed})"
    names = args.degradations or (model.prompts.names if args.weights else ["noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight"])
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown:
        raise UserError(f"unknown degradation {unknown[0]!r}; known: {', '.join(DEGRADATIONS)}")
    if model.config.use_dgpb:
        missing = [n for n in names if n not in model.prompts.names]
        if missing:
            raise UserError(f"the model's prompt bank has no {missing[0]!r}; it knows: {', '.join(model.prompts.names)}")
    batches = task_batches(names, _clean_images(args.data, args.patch), args.batch, args.patch, args.seed)
    meta = {"source": source, "ablation": args.ablation, "data": args.data, "batch": args.batch, "patch": args.patch, "seed": args.seed}
    result = measure_interference(model, batches, meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.to_dict(), indent=1) + "\n"
    atomic_write(out / "interference.json", lambda tmp: Path(tmp).write_text(text))
    fig = plot_interference(result, title=f"gradient cosine between degradations: {source}, ablation {args.ablation}")
    atomic_write(out / "interference.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    fig = plot_layer_matrices(result)
    atomic_write(out / "interference_layers.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    print(result.summary())
    print(f"wrote {out / 'interference.png'}, {out / 'interference_layers.png'}, {out / 'interference.json'}")
    return result


def run_blur_bound(args: argparse.Namespace) -> dict[str, float]:
    """The ``blur-bound`` command: print :func:`deblur_bound` on the chosen clean images."""
    check_at_least("--count", args.count, 1)
    check_at_least("--patch", args.patch, 8)
    check_at_least("--threads", args.threads, 0, "0: torch's default")
    images = _clean_images(args.data, args.patch)
    models = {path: _blur_model(path) for path in args.weights}
    if args.threads:
        torch.set_num_threads(args.threads)
    r = deblur_bound(images, args.count, args.patch, args.seed, models=models)
    print(f"{args.count} crops of {args.patch} px, motion blur (no noise): input {r['input_psnr']:.2f} dB, "
          f"Wiener deconvolution with the true kernel {r['wiener_psnr']:.2f} dB ({r['gain']:+.2f} dB), "
          f"one fixed filter for all kernels {r['fixed_psnr']:.2f} dB ({r['fixed_gain']:+.2f} dB)")
    for path, value in r["models"].items():
        print(f"  {path}: {value:.2f} dB ({value - r['input_psnr']:+.2f} dB)")
    return r


def _blur_model(path: str) -> DFPIR:
    from ..checkpoint import load

    model = load(path)
    if "blur" not in model.prompts.names:
        raise UserError(f"{path}: this model has no 'blur' prompt (it knows: {', '.join(model.prompts.names)})")
    return model


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dfpir.analysis`` argument parser."""
    p = CommandParser(prog="python -m dfpir.analysis", description="Measuring tools for DFPIR models.")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("interference", help="gradient conflicts between degradations (heatmap PNG + JSON)")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a checkpoint written by dfpir (dfpir.load)")
    src.add_argument("--preset", help="a freshly initialised model of this preset (tiny, small, paper, restormer)")
    q.add_argument("--ablation", default="none", choices=ABLATIONS, help="switch one part of the model off (default none)")
    q.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config field of a fresh model, e.g. dim=8 (repeatable)")
    q.add_argument("--data", default="builtin",
                   help="'builtin' (the training parts of the built-in photos, default), 'builtin-val' (their held-out strips) or a folder of clean images")
    q.add_argument("--degradations", nargs="+", help="default: the checkpoint's prompt bank, or all seven")
    q.add_argument("--batch", type=int, default=4, help="crops per degradation (default 4)")
    q.add_argument("--patch", type=int, default=64, help="crop size, a multiple of 8 (default 64)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    q.add_argument("--out", required=True, help="output folder")
    b = sub.add_parser("blur-bound", help="what linear filters (knowing the kernel or not) and given models gain on the synthetic motion blur")
    b.add_argument("--data", default="builtin-val",
                   help="'builtin-val' (the held-out strips of the built-in photos, default), 'builtin' (their training parts) or a folder of clean images")
    b.add_argument("--count", type=int, default=64, help="crops (default 64)")
    b.add_argument("--patch", type=int, default=128, help="crop size (default 128, the validation crops')")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--weights", nargs="*", default=[], metavar="CKPT", help="dfpir checkpoints to run on the same blurred crops (blur prompt)")
    b.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dfpir.analysis``."""
    args = build_parser().parse_args(argv)
    if args.command == "interference":
        run_interference(args)
    elif args.command == "blur-bound":
        run_blur_bound(args)
    return 0

