"""The architecture diagrams: the whole network and one DGPB, drawn with matplotlib.

Every width, head count, block count and kept-per-row number in the pictures is read from the
code (the ``paper`` preset, ``kept_per_row``, ``hidden_width``), so a change to the model that the
pictures do not show makes ``tests/test_figures.py`` fail until they are redrawn.

Coordinates are inches on a figure whose axes fill it (``canvas``), so a font size in points
means the same on every figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from dfpir.model.config import DFPIRConfig, get_config
from dfpir.model.feedforward import hidden_width
from dfpir.model.masked_attention import kept_per_row

BODY, TITLE = 11, 12  # font sizes in points
INK = "#212121"
BACKBONE = ("#e8eaf6", "#3949ab")  # (fill, edge): Restormer's transformer stages
DGPB_COLOURS = ("#fff3e0", "#e65100")
PROMPT = ("#e8f5e9", "#2e7d32")
PLAIN = ("#fafafa", "#757575")
ATTENTION = ("#f3e5f5", "#6a1b9a")


# --------------------------------------------------------------------------- drawing primitives


def canvas(width: float, height: float, bottom: float = 0.0) -> tuple[Figure, Axes]:
    """A figure of ``width`` x ``height`` inches whose data coordinates are inches, y from ``bottom``."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(bottom, bottom + height)
    ax.set_axis_off()
    return fig, ax


@dataclass(frozen=True)
class Box:
    """A drawn box: centre, size; its sides are where arrows attach."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> tuple[float, float]:
        return self.x - self.w / 2, self.y

    @property
    def right(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y

    @property
    def top(self) -> tuple[float, float]:
        return self.x, self.y + self.h / 2

    @property
    def bottom(self) -> tuple[float, float]:
        return self.x, self.y - self.h / 2


def box(ax: Axes, x: float, y: float, w: float, h: float, lines: list[str], colours: tuple[str, str],
        dashed: bool = False, size: float = BODY) -> Box:
    """A rounded box centred at (x, y); its first line is bold, the others plain."""
    fill, edge = colours
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=fill, edgecolor=edge, linewidth=1.4, linestyle="--" if dashed else "-",
                                zorder=2))
    step = size * 1.45 / 72  # line height in inches
    top = y + step * (len(lines) - 1) / 2
    for i, line in enumerate(lines):
        ax.text(x, top - i * step, line, ha="center", va="center", fontsize=size, color=INK,
                fontweight="bold" if i == 0 else "normal", zorder=3)
    return Box(x, y, w, h)


def arrow(ax: Axes, *points: tuple[float, float], colour: str = INK, dashed: bool = False, width: float = 1.3) -> None:
    """An arrow along the polyline ``points`` (right angles are drawn as given); the head at the end."""
    style = "--" if dashed else "-"
    for a, b in zip(points[:-2], points[1:-1]):
        ax.plot([a[0], b[0]], [a[1], b[1]], color=colour, linewidth=width, linestyle=style, zorder=1,
                solid_capstyle="butt")
    ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>,head_length=5,head_width=3",
                                 mutation_scale=1.6, color=colour, linewidth=width, linestyle=style,
                                 shrinkA=0, shrinkB=1, zorder=1))


def note(ax: Axes, x: float, y: float, text: str, size: float = BODY - 1, colour: str = INK, **kw) -> None:
    """Free text (for arrow labels and shapes)."""
    ax.text(x, y, text, fontsize=size, color=colour, zorder=4, **kw)


# --------------------------------------------------------------------------- the whole network


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def network_figure(cfg: DFPIRConfig | None = None) -> Figure:
    """The U-net: encoder (left), the four DGPBs (middle), decoder (right), and what feeds the DGPBs."""
    cfg = cfg or get_config("paper")
    fig, ax = canvas(8.8, 8.0)
    widths = [cfg.width(level) for level in range(1, 5)]
    rows = [6.0, 4.68, 3.36, 2.04]  # y of levels 1-4
    enc_x, dgpb_x, dec_x = 1.3, 4.3, 7.3
    w_stage, h_stage = 2.45, 0.72

    image = box(ax, enc_x, 7.4, w_stage, 0.62, ["image x  (B, 3, H, W)", "padded to a multiple of 8"], PLAIN)
    encoders = []
    for level, (y, c, heads, blocks) in enumerate(zip(rows, widths, cfg.heads, cfg.num_blocks), start=1):
        name = f"Encoder L{level}" if level < 4 else "Latent L4"
        scale = "H x W" if level == 1 else f"H/{2 ** (level - 1)} x W/{2 ** (level - 1)}"
        encoders.append(box(ax, enc_x, y, w_stage, h_stage,
                            [f"{name}: {_plural(blocks, 'block')}", f"{c} ch, {_plural(heads, 'head')}, {scale}"],
                            BACKBONE))
    arrow(ax, image.bottom, encoders[0].top)
    note(ax, enc_x + 0.08, (image.bottom[1] + encoders[0].top[1]) / 2, f"conv 3x3, 3 -> {widths[0]}", va="center")
    for upper, lower, c in zip(encoders, encoders[1:], widths):
        arrow(ax, upper.bottom, lower.top)
        note(ax, enc_x + 0.08, (upper.bottom[1] + lower.top[1]) / 2, f"down: {c} -> {2 * c}", va="center")

    dgpbs = []
    for level, (y, c) in enumerate(zip(rows, widths), start=1):
        where = "latent" if level == 4 else f"skip {level}"
        dgpbs.append(box(ax, dgpb_x, y, 1.6, 0.62, [f"DGPB{level} ({where})", f"C = {c}"], DGPB_COLOURS))
        arrow(ax, encoders[level - 1].right, dgpbs[-1].left)

    decoders = []
    for level, (y, c, heads, blocks) in enumerate(zip(rows[:3], widths, cfg.heads, cfg.num_blocks), start=1):
        width = 2 * c if level == 1 else c  # level 1 keeps the concatenation's 2C channels
        heads = cfg.heads[0] if level == 1 else heads
        into = f"cat {c} + {c}, no 1x1" if level == 1 else f"cat {c} + {c}, 1x1 -> {c}"
        decoders.append(box(ax, dec_x, y, w_stage, h_stage + 0.2,
                            [f"Decoder L{level}: {_plural(blocks, 'block')}", f"{width} ch, {_plural(heads, 'head')}",
                             into], BACKBONE))
        arrow(ax, dgpbs[level - 1].right, decoders[-1].left)
    # DGPB4 replaces the latent: its output is what goes up to the decoder
    arrow(ax, dgpbs[3].right, (dec_x, rows[3]), decoders[2].bottom)
    note(ax, dec_x + 0.08, (rows[3] + decoders[2].bottom[1]) / 2, f"up: {widths[3]} -> {widths[2]}", va="center")
    for lower, upper, c in zip(decoders[:0:-1], decoders[-2::-1], widths[2:0:-1]):
        arrow(ax, lower.top, upper.bottom)
        note(ax, dec_x + 0.08, (lower.top[1] + upper.bottom[1]) / 2, f"up: {c} -> {c // 2}", va="center")

    refine = box(ax, dec_x, 7.4, w_stage, 0.62, [f"Refinement: {_plural(cfg.num_refinement_blocks, 'block')}",
                                                 f"{2 * widths[0]} ch, {_plural(cfg.heads[0], 'head')}"], BACKBONE)
    arrow(ax, decoders[0].top, refine.bottom)
    out = box(ax, dgpb_x, 7.4, 2.3, 0.62, ["restored  (B, 3, H, W)", f"conv 3x3 {2 * widths[0]} -> 3, + x"], PLAIN,
              size=BODY - 1)
    arrow(ax, refine.left, out.right)
    arrow(ax, image.right, out.left)
    note(ax, (image.right[0] + out.left[0]) / 2, 7.45, "x", ha="center", va="bottom")
    _prompt_path(ax, dgpbs, (enc_x, dgpb_x, dec_x), cfg)
    return fig


def _prompt_path(ax: Axes, dgpbs: list[Box], columns: tuple[float, float, float], cfg: DFPIRConfig) -> None:
    """Blind classifier -> degradation name -> text encoder -> e, into every DGPB."""
    green = PROMPT[1]
    left, middle, right = columns
    blind = box(ax, left, 0.45, 2.45, 0.68, ["or blind (optional):", "a classifier names it"], PLAIN, dashed=True)
    name = box(ax, middle, 0.45, 2.3, 0.68, ["degradation name", '"rain", "noise25", ...'], PROMPT)
    encoder = box(ax, right, 0.45, 2.45, 0.68, ["text encoder", "CLIP, or dfpir's hashing one"], PROMPT)
    arrow(ax, blind.right, name.left, colour=PLAIN[1], dashed=True)
    arrow(ax, name.right, encoder.left, colour=green)
    # one vector e feeds all four DGPBs: a bus left of the DGPB column
    bus_x, run_y = dgpbs[0].left[0] - 0.28, 1.28
    arrow(ax, encoder.top, (encoder.x, run_y), (bus_x, run_y), (bus_x, dgpbs[0].y - 0.15), colour=green, width=1.6)
    for d in dgpbs:
        arrow(ax, (bus_x, d.y - 0.15), (d.left[0], d.y - 0.15), colour=green, width=1.6)
    note(ax, bus_x + 0.12, run_y + 0.1, f"prompt embedding e  (B, {cfg.prompt_dim}): the same for all four DGPBs",
         colour=green, va="bottom")


# --------------------------------------------------------------------------- one DGPB


def dgpb_figure(cfg: DFPIRConfig | None = None) -> Figure:
    """One DGPB with the tensor shapes: perturbation, CAAPM (masked cross attention), FFN, and the
    preset's four DGPBs in numbers."""
    cfg = cfg or get_config("paper")
    fig, ax = canvas(8.8, 12.85, bottom=-0.25)
    mid, right, w = 3.55, 7.05, 3.4  # x of the feature column, of the prompt column; box width

    f_in = box(ax, mid, 12.2, 2.6, 0.5, ["features F  (B, C, H, W)"], PLAIN)
    e_in = box(ax, right, 12.2, 2.6, 0.5, [f"prompt e  (B, {cfg.prompt_dim})"], PROMPT)
    dgm = box(ax, right, 11.1, 3.0, 0.95, ["DGM: two linears", f"{cfg.prompt_dim} -> {cfg.prompt_dim} -> 2C, no activation,",
                                          "frozen (as in the original)"], PROMPT)
    arrow(ax, e_in.bottom, dgm.top, colour=PROMPT[1])
    order = box(ax, right, 9.7, 3.0, 0.95, ["channel order", r"$\pi$ = argsort(g), descending,", "stable: (B, 2C) integers"],
                PROMPT)
    arrow(ax, dgm.bottom, order.top, colour=PROMPT[1])
    note(ax, right + 0.1, (dgm.bottom[1] + order.top[1]) / 2, "scores g  (B, 2C)", va="center", colour=PROMPT[1])

    expand = box(ax, mid, 11.1, w, 0.62, ["expand: conv 1x1, C -> 2C", "X  (B, 2C, H, W)"], DGPB_COLOURS)
    arrow(ax, f_in.bottom, expand.top)
    shuffle = box(ax, mid, 9.7, w, 0.62, ["shuffle by the prompt's order", r"X'[b, i] = X[b, $\pi_b$(i)]  (B, 2C, H, W)"],
                  DGPB_COLOURS)
    arrow(ax, expand.bottom, shuffle.top)
    arrow(ax, order.left, shuffle.right, colour=PROMPT[1])
    reduce = box(ax, mid, 8.45, w, 0.62, ["reduce: conv 1x1, 2C -> C", "Q  (B, C, H, W)"], DGPB_COLOURS)
    arrow(ax, shuffle.bottom, reduce.top)
    ffn = _attention(ax, f_in, reduce, cfg)
    _shape_table(ax, cfg, top=ffn.bottom[1] - 0.45)
    return fig


def _attention(ax: Axes, f_in: Box, reduce: Box, cfg: DFPIRConfig) -> Box:
    """CAAPM (queries from Q; keys and values from F; the top-k mask), then the FFN; returns the FFN box."""
    purple = ATTENTION[1]
    kv_x, q_x, w, centre, wide = 2.2, 6.55, 3.4, 4.0, 4.95
    lane = 7.85  # y of the horizontal runs into the two projections
    ax.add_patch(FancyBboxPatch((0.15, 3.05), 8.5, 4.6, boxstyle="round,pad=0,rounding_size=0.12", facecolor="none",
                                edgecolor=purple, linewidth=1.2, linestyle=":", zorder=0))
    # F itself (not the perturbed Q) gives keys and values: it runs down the left edge
    arrow(ax, f_in.left, (0.32, f_in.y), (0.32, lane), (kv_x, lane), (kv_x, 7.12))
    note(ax, 0.42, 10.4, "F", colour=INK, size=BODY, fontweight="bold", va="center")
    arrow(ax, reduce.bottom, (reduce.x, lane), (q_x, lane), (q_x, 7.12))
    kv = box(ax, kv_x, 6.65, w, 0.95, ["k, v from F", r"LN$_2$, conv 1x1 C -> 2C, dw 3x3,", "split: k, v  (B, heads, c, HW)"],
             ATTENTION)
    q = box(ax, q_x, 6.65, w - 0.2, 0.95, ["q from Q", r"LN$_1$, conv 1x1 C -> C, dw 3x3", "q  (B, heads, c, HW)"],
            ATTENTION)
    logits = box(ax, centre, 5.4, wide, 0.8, ["logits  (B, heads, c, c)",
                                              r"L[i, j] = $\tau$ $\cdot$ cos(q$_i$, k$_j$) over the HW pixels"], ATTENTION)
    arrow(ax, q.bottom, (q.x, logits.top[1]))
    arrow(ax, (kv_x + 0.7, kv.bottom[1]), (kv_x + 0.7, logits.top[1]))
    c = cfg.dim // cfg.heads[0]  # channels per head (the same at every level of the presets)
    mask = box(ax, centre, 4.35, wide, 0.8, [f"top-k mask: each row keeps its k = {kept_per_row(c, cfg.keep_ratio)} "
                                             f"largest of c = {c}", r"the rest set to $-\infty$, then softmax over the row"],
               ATTENTION)
    arrow(ax, logits.bottom, mask.top)
    attend = box(ax, centre, 3.45, wide, 0.55, [r"A = conv 1x1 ($\alpha$ $\cdot$ attn @ v),  $\alpha$ = 0.2 at start"],
                 ATTENTION)
    arrow(ax, mask.bottom, attend.top)
    # v goes straight to the product, past the logits and the mask
    v_x = kv_x - 1.3
    arrow(ax, (v_x, kv.bottom[1]), (v_x, attend.y), attend.left)
    note(ax, v_x + 0.1, 4.9, "v", colour=purple, size=BODY, fontweight="bold", va="center")
    note(ax, 7.6, 4.85, "CAAPM", colour=purple, size=TITLE, fontweight="bold", ha="center", va="center")
    note(ax, 7.6, 4.25, "masked cross\nattention, per head\n(c = C / heads)", colour=purple, size=BODY, ha="center",
         va="center", linespacing=1.4)

    ffn = box(ax, centre - 0.6, 2.2, 5.1, 0.95, ["FFN: out = A + GDFN(LN$_3$(A))",
                                                 "GDFN: conv 1x1 C -> 2 hid, dw 3x3, split h$_1$, h$_2$;",
                                                 "conv 1x1 hid -> C of GELU(h$_1$) $\\cdot$ h$_2$"], DGPB_COLOURS)
    arrow(ax, attend.bottom, (attend.x, 2.95), (ffn.x, 2.95), ffn.top)
    out = box(ax, 7.55, 2.2, 1.8, 0.8, ["out  (B, C, H, W)", "no residual from F"], PLAIN, size=BODY - 1)
    arrow(ax, ffn.right, out.left)
    return ffn


def _shape_table(ax: Axes, cfg: DFPIRConfig, top: float) -> None:
    """The preset's four DGPBs: C, heads, c, 2C (the permutation's length), kept per row, GDFN hidden width."""
    header = ["", "C", "heads", "c = C/heads", "2C (order)", "kept per row", "GDFN hid"]
    xs = [0.9, 2.0, 2.8, 3.85, 5.05, 6.3, 7.5]
    step = 0.27
    note(ax, 0.3, top + 0.05, f"The {cfg.preset} preset's four DGPBs:", size=BODY, fontweight="bold", va="bottom")
    for x, label in zip(xs, header):
        note(ax, x, top - step, label, size=BODY - 0.5, ha="center", va="center", fontweight="bold")
    ax.plot([0.3, 8.2], [top - 1.55 * step, top - 1.55 * step], color=PLAIN[1], linewidth=0.8)
    for level in range(1, 5):
        width, heads = cfg.width(level), cfg.heads[level - 1]
        c = width // heads
        row = [f"DGPB{level}", width, heads, c, 2 * width, kept_per_row(c, cfg.keep_ratio),
               hidden_width(width, cfg.ffn_expansion_factor)]
        for x, value in zip(xs, row):
            note(ax, x, top - (level + 1.1) * step, str(value), size=BODY - 0.5, ha="center", va="center")
