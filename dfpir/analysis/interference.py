"""Task interference: do the degradations' gradients on the shared weights agree or conflict?

An all-in-one restorer shares its weights between degradations. For each degradation ``t`` we
compute the gradient ``g_t`` of the L1 restoration loss on a batch of that degradation with
respect to the shared (trainable) parameters, and compare degradations pairwise by cosine
similarity ``cos(g_s, g_t)``. A negative cosine is a *conflict*: a step that helps one task hurts
the other to first order. The cosines are given for all shared parameters together ("overall")
and per top-level module (``encoder1``, ``dgpb2``, ``decoder1``, ...).

All degradations see the *same* clean crops ([`task_batches`][dfpir.analysis.interference.task_batches]), so the gradients differ only
through the degradation (and its prompt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import builtin_photos, crop, crop_box, degraded_patch, item_rng, to_tensor
from ..degradations import synthetic_names
from ..errors import UserError
from ..model.network import DFPIR

Batches = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
"""Degradation name -> (degraded input, clean target), each (B, 3, P, P)."""

# --------------------------------------------------------------------------------- data


def crop_boxes(
    images: Sequence[np.ndarray] | None = None, count: int = 4, patch: int = 32, seed: int = 0
) -> list[tuple[np.ndarray, int, int]]:
    """``count`` random ``patch`` x ``patch`` crop positions: ``(image, top, left)`` each.

    Parameters
    ----------
    images : sequence of (H, W, 3) float arrays, optional
        Clean images in [0, 1]; default the built-in training photos
        ([`dfpir.data.builtin_photos`][dfpir.data.photos.builtin_photos]).
    count, patch : int
        Number and size of the crops.
    seed : int
        Chooses images and crop positions.
    """
    if images is None:
        images = [img for _, img in builtin_photos("train")]
    if not images:
        raise UserError("no clean images to crop")
    rng = np.random.default_rng(seed)
    boxes = []
    for i in range(count):
        img = images[(i + int(rng.integers(len(images)))) % len(images)]
        boxes.append((img, *crop_box(*img.shape[:2], patch, rng)))
    return boxes


def clean_crops(images: Sequence[np.ndarray] | None = None, count: int = 4, patch: int = 32, seed: int = 0) -> torch.Tensor:
    """The crops of [`crop_boxes`][dfpir.analysis.interference.crop_boxes] (same arguments) as a (count, 3, P, P) tensor."""
    return torch.stack([to_tensor(crop(img, top, left, patch)) for img, top, left in crop_boxes(images, count, patch, seed)])


def task_batches(
    degradations: Sequence[str],
    images: Sequence[np.ndarray] | None = None,
    batch: int = 4,
    patch: int = 32,
    seed: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One batch per degradation, all degrading the *same* clean crops.

    Each crop is degraded with its surroundings and then cut
    ([`dfpir.data.degraded_patch`][dfpir.data.patches.degraded_patch]), as in training.

    Parameters
    ----------
    degradations : sequence of str
        Registered degradations with a synthetic model ([`dfpir.degradations.synthetic_names`][dfpir.degradations.registry.synthetic_names]).
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
    boxes = crop_boxes(images, batch, patch, seed)
    out = {}
    for i, name in enumerate(degradations):
        if name not in synthetic_names():
            raise UserError(f"no synthetic model for degradation {name!r}; known: {', '.join(synthetic_names())}")
        pairs = [degraded_patch(img, top, left, patch, name, item_rng(seed, i, j)) for j, (img, top, left) in enumerate(boxes)]
        out[name] = tuple(torch.stack(t) for t in zip(*pairs))
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
        ``{name: (degraded, clean)}``, e.g. from [`task_batches`][dfpir.analysis.interference.task_batches]; each batch is restored with
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
    """Gradient-conflict measurement of one model (see [`measure_interference`][dfpir.analysis.interference.measure_interference]).

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
        ``{degradation: {parameter name: flattened gradient}}`` as from [`task_gradients`][dfpir.analysis.interference.task_gradients];
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
    """Task interference of ``model`` on ``batches``: [`task_gradients`][dfpir.analysis.interference.task_gradients] then the matrices.

    Parameters
    ----------
    model : DFPIR
        Any model (fresh, trained, ablated); its weights are not changed.
    batches : mapping
        ``{degradation: (degraded, clean)}``, e.g. [`task_batches`][dfpir.analysis.interference.task_batches].
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
