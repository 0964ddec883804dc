"""Figures of the measurements: task x task heatmaps, channel orders, attention maps.

matplotlib is an optional dependency (the ``dev`` extra): each function imports it when called,
so ``import dfpir.analysis`` works without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .interference import Interference

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
        From [`measure_interference`][dfpir.analysis.interference.measure_interference].
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
        From [`measure_interference`][dfpir.analysis.interference.measure_interference].
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
        (T, N) orders, e.g. one level of [`channel_orders`][dfpir.analysis.orders.channel_orders].
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
