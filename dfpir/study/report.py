"""The study's report, made from the result files alone: Markdown tables, PNG plots, the conclusion.

``report.md`` holds the results: held-out PSNR and SSIM per arm and degradation (mean and 95%
t-interval over seeds), paired differences against ``dfpir``, the interference gaps against the
specialists, the conclusion per degradation by [`verdict`][dfpir.study.report.verdict]'s stated rule, the gradient
conflicts per checkpoint, and their relation to the gaps. ``runs.md`` lists each run's wall time
and device (what differs between two machines making the same results). Every number comes from
the JSON files, and the same files give the same bytes: plots are written without the
matplotlib version or a date in their metadata. ``summary.md`` is the two lines the README
quotes ([`summary_text`][dfpir.study.report.summary_text]).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError
from ..files import atomic_write, check_output_folder
from .arms import ARMS
from .grid import GRIDS
from .stats import Interval, correlation, interval, paired

BASELINES = ("restormer", "restormer_wide")
"""The arms without DGPBs that [`verdict`][dfpir.study.report.verdict] compares ``dfpir``'s interference with."""

PLOTS = ("psnr.png", "conflict.png", "gap_vs_conflict.png")

# --------------------------------------------------------------------------------- reading


def read_results(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` result file in ``folder``, in name order; all from one held-out set.

    Raises
    ------
    UserError
        For no files, an unreadable one, or files scored on different held-out sets.
    """
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise UserError(f"{folder}: no result files (*.json); make them with python -m dfpir.study run")
    records = []
    for f in files:
        try:
            records.append(json.loads(f.read_text()))
        except (OSError, ValueError) as exc:
            raise UserError(f"{f}: not a readable result file ({exc})") from None
        if not {"arm", "seed", "metrics", "heldout"} <= records[-1].keys():
            raise UserError(f"{f}: not a study result file (no arm, seed, metrics or heldout)")
    digests = {r["heldout"]["digest"] for r in records}
    if len(digests) > 1:
        raise UserError(f"{folder}: the result files were scored on {len(digests)} different held-out sets; "
                        "report each set's files from a folder of their own")
    return records


@dataclass
class Table:
    """The results by arm, degradation and seed (all-in-one arms; specialists apart)."""

    arms: list[str]
    degradations: list[str]
    psnr: dict[str, dict[str, dict[int, float]]]  # arm -> degradation -> seed -> dB
    ssim: dict[str, dict[str, dict[int, float]]]
    specialist: dict[str, dict[int, float]]  # degradation -> seed -> dB of its specialist
    conflicts: dict[str, dict[int, dict[int, dict[str, Any]]]]  # arm -> step -> seed -> measurement

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> "Table":
        """Sort the records into a table."""
        allinone = [r for r in records if not r.get("specialist")]
        known = [a for a in ARMS if any(r["arm"] == a for r in allinone)]
        arms = known + sorted({r["arm"] for r in allinone} - set(known))
        degradations = list(allinone[0]["degradations"]) if allinone else sorted({d for r in records for d in r["degradations"]})
        t = cls(arms, degradations, {a: {} for a in arms}, {a: {} for a in arms}, {}, {a: {} for a in arms})
        for r in records:
            for d, m in r["metrics"].items():
                if r.get("specialist"):
                    _put(t.specialist, d, r["seed"], m["psnr"])
                    continue
                _put(t.psnr[r["arm"]], d, r["seed"], m["psnr"])
                _put(t.ssim[r["arm"]], d, r["seed"], m["ssim"])
            for c in r.get("conflicts", []):
                t.conflicts[r["arm"]].setdefault(c["step"], {})[r["seed"]] = c
        return t

    def mean_over_tasks(self, values: dict[str, dict[int, float]]) -> dict[int, float]:
        """Per seed, the mean over this table's degradations (seeds missing one are left out)."""
        seeds = set.intersection(*(set(values.get(d, {})) for d in self.degradations)) if self.degradations else set()
        return {s: math.fsum(values[d][s] for d in self.degradations) / len(self.degradations) for s in sorted(seeds)}

    def gaps(self, arm: str) -> dict[str, dict[int, float]]:
        """Interference of ``arm`` per degradation and seed: its specialist's PSNR minus its own."""
        return {d: {s: self.specialist[d][s] - v for s, v in self.psnr[arm].get(d, {}).items() if s in self.specialist.get(d, {})}
                for d in self.degradations}


def _put(table: dict, key: str, seed: int, value: float | None) -> None:
    if value is not None:
        table.setdefault(key, {})[seed] = value


# --------------------------------------------------------------------------------- formatting


def fmt(i: Interval, digits: int = 2) -> str:
    """``mean ± half (n)``; ``mean (n=1)`` without an interval."""
    if i.n == 0:
        return "–"
    if i.n < 2:
        return f"{i.mean:.{digits}f} (n=1)"
    return f"{i.mean:.{digits}f} ± {i.half:.{digits}f}"


def fmt_diff(i: Interval, digits: int = 2) -> str:
    """``+mean [low, high]``; ``+mean (n=1)`` without an interval."""
    if i.n == 0:
        return "–"
    if i.n < 2:
        return f"{i.mean:+.{digits}f} (n=1)"
    return f"{i.mean:+.{digits}f} [{i.low:+.{digits}f}, {i.high:+.{digits}f}]"


def markdown(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table (first column left-aligned, the others right-aligned)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def seeds_of(values: dict[str, dict[int, float]]) -> int:
    """How many seeds the fullest degradation has."""
    return max((len(v) for v in values.values()), default=0)


# --------------------------------------------------------------------------------- sections


def quality_section(t: Table, metric: str, digits: int) -> list[str]:
    """Mean ± interval of ``metric`` per arm and degradation, and over degradations."""
    values = t.psnr if metric == "psnr" else t.ssim
    rows = []
    for arm in t.arms:
        cells = [fmt(interval(list(values[arm].get(d, {}).values())), digits) for d in t.degradations]
        rows.append([arm, str(seeds_of(values[arm])), *cells, fmt(interval(list(t.mean_over_tasks(values[arm]).values())), digits)])
    return markdown(["arm", "seeds", *t.degradations, "mean"], rows)


def paired_section(t: Table) -> list[str]:
    """Each arm's PSNR minus ``dfpir``'s on the same seed."""
    if "dfpir" not in t.arms:
        return ["No `dfpir` runs: no paired differences."]
    rows = []
    for arm in t.arms:
        if arm == "dfpir":
            continue
        cells = [fmt_diff(paired(t.psnr[arm].get(d, {}), t.psnr["dfpir"].get(d, {}))) for d in t.degradations]
        rows.append([arm, *cells, fmt_diff(paired(t.mean_over_tasks(t.psnr[arm]), t.mean_over_tasks(t.psnr["dfpir"])))])
    return markdown(["arm − dfpir", *t.degradations, "mean"], rows)


def gap_section(t: Table) -> list[str]:
    """Interference per arm and degradation: specialist PSNR minus the arm's, paired by seed."""
    if not t.specialist:
        return ["No specialist runs: the interference gaps need them."]
    rows = []
    for arm in t.arms:
        gaps = t.gaps(arm)
        rows.append([arm, *[fmt_diff(interval(list(gaps[d].values()))) for d in t.degradations]])
    return markdown(["specialist − arm", *t.degradations], rows)


MEAN = "mean"
"""The pseudo-degradation [`verdict`][dfpir.study.report.verdict] takes for the mean over all degradations."""

COMPONENTS = {"no_shuffle": "the channel shuffle by degradation", "shared_prompt": "an order per degradation (vs one shared)",
              "no_mask": "the attention mask", "learnable": "the frozen DGM (vs a learnt one)"}
"""The arms that remove one part of the DGPBs, and the part [`component`][dfpir.study.report.component] judges through them."""


def gaps_on(t: Table, arm: str, degradation: str) -> dict[int, float]:
    """gap(arm, T) per seed; for [`MEAN`][dfpir.study.report.MEAN], the mean over degradations."""
    gaps = t.gaps(arm)
    return t.mean_over_tasks(gaps) if degradation == MEAN else gaps[degradation]


def verdict(t: Table, degradation: str) -> str:
    """The conclusion on one degradation (or [`MEAN`][dfpir.study.report.MEAN]), by this rule (stated in the report too):

    the DGPBs *reduce* interference on T when (1) there is interference to reduce: the interval
    of ``gap_restormer(T)`` lies above 0, and (2) for each baseline ``b`` of [`BASELINES`][dfpir.study.report.BASELINES],
    the paired interval of ``gap_b(T) - gap_dfpir(T)`` lies above 0. They *increase* it when (2)
    holds with every interval below 0. Otherwise no conclusion, saying which condition failed.
    """
    no_specialist = [d for d in (t.degradations if degradation == MEAN else [degradation]) if d not in t.specialist]
    missing = [a for a in ("dfpir", *BASELINES) if a not in t.arms] + \
        ([f"specialist on {', '.join(no_specialist)}"] if no_specialist else [])
    if missing:
        return f"not decided: no runs of {', '.join(missing)}"
    gaps = {a: gaps_on(t, a, degradation) for a in ("dfpir", *BASELINES)}
    diffs = {b: paired(gaps[b], gaps["dfpir"]) for b in BASELINES}
    shown = "; ".join(f"gap({b}) − gap(dfpir) = {fmt_diff(diffs[b])} dB" for b in BASELINES)
    if min(d.n for d in diffs.values()) < 2:
        return f"not decided: fewer than 2 paired seeds ({shown})"
    if all(d.below() for d in diffs.values()):
        return f"the DGPBs increase interference ({shown})"
    if not all(d.above() for d in diffs.values()):
        return f"no conclusion: an interval includes 0 ({shown})"
    if not interval(list(gaps["restormer"].values())).above():
        return f"no conclusion: no interference to reduce, gap(restormer) = {fmt_diff(interval(list(gaps['restormer'].values())))} dB ({shown})"
    return f"the DGPBs reduce interference ({shown})"


def component(t: Table, arm: str) -> str:
    """The conclusion on the part of the DGPBs that ``arm`` removes, from the paired interval of
    dfpir's mean PSNR over degradations minus ``arm``'s: it helps above 0, hurts below, else no
    conclusion."""
    if arm not in t.arms or "dfpir" not in t.arms:
        return f"not decided: no runs of {'dfpir' if arm in t.arms else arm}"
    d = paired(t.mean_over_tasks(t.psnr["dfpir"]), t.mean_over_tasks(t.psnr[arm]))
    shown = f"dfpir − {arm} = {fmt_diff(d)} dB"
    if d.n < 2:
        return f"not decided: fewer than 2 paired seeds ({shown})"
    if d.above():
        return f"helps ({shown})"
    if d.below():
        return f"hurts ({shown})"
    return f"no conclusion: the interval includes 0 ({shown})"


def conflict_section(t: Table) -> list[str]:
    """Mean gradient cosine and conflict fraction over the backbone, per arm and checkpoint."""
    rows = []
    for arm in t.arms:
        for step, by_seed in sorted(t.conflicts[arm].items()):
            cos = interval([m["mean_cosine"] for m in by_seed.values() if m["mean_cosine"] is not None])
            frac = interval([m["conflict_fraction"] for m in by_seed.values() if m["conflict_fraction"] is not None])
            batches = min(m["batches"] for m in by_seed.values())
            rows.append([arm, str(step), str(len(by_seed)), str(batches), fmt(cos, 3), fmt(frac, 3)])
    if not rows:
        return ["No gradient-conflict measurements."]
    return markdown(["arm", "step", "seeds", "batches", "mean cosine", "conflict fraction"], rows)


def relation_points(t: Table) -> list[tuple[str, int, float, float]]:
    """``(arm, seed, mean cosine at the last step, mean gap over degradations)`` of every run with both."""
    points = []
    for arm in t.arms:
        if not t.conflicts[arm] or not t.specialist:
            continue
        last = t.conflicts[arm][max(t.conflicts[arm])]
        gaps = t.mean_over_tasks(t.gaps(arm))
        points += [(arm, s, last[s]["mean_cosine"], gaps[s]) for s in sorted(last.keys() & gaps.keys())
                   if last[s]["mean_cosine"] is not None]
    return points


def relation_section(t: Table) -> list[str]:
    """Pearson's r between the last checkpoint's mean cosine and the mean gap, over runs."""
    points = relation_points(t)
    if len(points) < 3:
        return [f"Too few runs with both a conflict measurement and specialist gaps ({len(points)}; 3 needed)."]
    r, low, high = correlation([p[2] for p in points], [p[3] for p in points])
    shown = "undefined" if math.isnan(r) else f"{r:+.2f}" + ("" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]")
    return [f"Pearson's r between a run's mean gradient cosine at its last checkpoint and its mean interference gap, "
            f"over {len(points)} runs (all-in-one arms, all seeds; 95% interval by Fisher's z): {shown}. "
            "Descriptive only: runs of one arm are not independent of each other's design."]


def report_text(records: list[dict[str, Any]]) -> str:
    """``report.md``: every table and the conclusion."""
    t = Table.of(records)
    held = records[0]["heldout"]
    grids = sorted({r.get("grid", "?") for r in records})
    lines = [f"# Ablation study: {', '.join(grids)}", "",
             f"Made by `python -m dfpir.study report` from {len(records)} result files. Held-out set: "
             f"{len(held['images'])} photos, centre {held['crop']} x {held['crop']}, digest `{held['digest'][:12]}`.",
             "Intervals: 95% Student-t over seeds; differences are paired by seed.", "",
             "## Held-out PSNR (dB)", "", *quality_section(t, "psnr", 2), "",
             "## Held-out SSIM", "", *quality_section(t, "ssim", 4), "",
             "## Paired differences against dfpir (PSNR, dB)", "", *paired_section(t), "",
             "## Interference: specialist − all-in-one (PSNR, dB)", "", *gap_section(t), "",
             "## Conclusion", "",
             "Rule: the DGPBs reduce interference on a degradation T when the interval of gap(restormer, T) lies above 0 "
             "and, for both restormer and restormer_wide, the paired interval of gap(baseline, T) − gap(dfpir, T) lies "
             "above 0; they increase it when both paired intervals lie below 0; otherwise there is no conclusion. "
             "(The specialist cancels in gap(b) − gap(dfpir): it is dfpir's PSNR minus b's.)", "",
             *[f"- {d}: {verdict(t, d)}." for d in [*t.degradations, MEAN]], "",
             "The parts of the DGPBs, from the paired interval of dfpir's mean PSNR over degradations minus "
             "that of the arm without the part: it helps above 0, hurts below 0, otherwise no conclusion.", "",
             *[f"- {what} (`{arm}`): {component(t, arm)}." for arm, what in COMPONENTS.items()], "",
             "## Gradient conflict on the shared backbone", "",
             "Mean over task pairs of the cosine between degradations' gradients (DGPB weights left out), "
             "averaged over the batches; mean ± interval over seeds.", "", *conflict_section(t), "",
             "## Conflict and the PSNR gap", "", *relation_section(t), ""]
    return "\n".join(lines)


def summary_text(records: list[dict[str, Any]]) -> str:
    """``summary.md``: what the study found, in two lines, which the README quotes.

    The first line says how much of the grid is done and the conclusion on the mean over
    degradations ([`verdict`][dfpir.study.report.verdict]); the second, dfpir's mean held-out
    PSNR against each baseline without DGPBs, paired by seed.
    """
    t = Table.of(records)
    grids = sorted({r.get("grid", "?") for r in records})
    planned = sum(len(GRIDS[g].runs()) for g in grids if g in GRIDS)
    if planned and len(records) < planned:
        progress = f"{len(records)} of {planned} runs so far"
    else:
        progress = f"all {len(records)} runs"
    diffs = [f"{b} {fmt_diff(paired(t.mean_over_tasks(t.psnr['dfpir']), t.mean_over_tasks(t.psnr[b])))} dB"
             for b in BASELINES if b in t.arms and "dfpir" in t.arms]
    lines = [f"- **Interference** ({progress}): on the mean over the {len(t.degradations)} degradations, "
             f"{verdict(t, MEAN)}.",
             "- **Held-out PSNR**, dfpir minus each baseline without DGPBs (mean over degradations, paired by seed): "
             + ("; ".join(diffs) if diffs else "no runs of dfpir and a baseline yet") + "."]
    return "\n".join(lines) + "\n"


def runs_text(records: list[dict[str, Any]]) -> str:
    """``runs.md``: what each run cost, and where it ran."""
    rows = [[r["run"], r["arm"], str(r["seed"]), str(r["config"]["train"]["steps"]), f"{r['parameters']['trainable']:,}",
             f"{r['wall_s'] / 60:.1f}", r["device"]] for r in sorted(records, key=lambda r: r["run"])]
    return "\n".join(["# Runs", "", *markdown(["run", "arm", "seed", "steps", "trainable", "wall min", "device"], rows), ""])


# --------------------------------------------------------------------------------- plots


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG whose bytes depend on the drawing only (no version in its metadata)."""
    import matplotlib.pyplot as plt  # optional (the dev extra), imported by plot_all first

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None}))
    plt.close(fig)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty legend only warns
        ax.legend(fontsize="small")


def plot_all(t: Table, out: Path) -> None:
    """``psnr.png`` (bars with intervals), ``conflict.png`` (cosine by step), ``gap_vs_conflict.png``."""
    try:  # optional: the dev extra
        import matplotlib
    except ImportError:
        raise UserError("the study's plots need matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(t.degradations) * max(1, len(t.arms)) / 3), 4), layout="constrained")
    width = 0.8 / max(1, len(t.arms))
    for i, arm in enumerate(t.arms):
        cells = [interval(list(t.psnr[arm].get(d, {}).values())) for d in t.degradations]
        ax.bar([k + i * width for k in range(len(t.degradations))], [c.mean for c in cells], width,
               yerr=[0 if math.isnan(c.half) else c.half for c in cells], label=arm, capsize=2)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(t.degradations))], t.degradations)
    ax.set_ylabel("held-out PSNR (dB)")
    _legend(ax)
    save_figure(fig, out / "psnr.png")

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for arm in t.arms:
        steps = sorted(t.conflicts[arm])
        cells = [interval([m["mean_cosine"] for m in t.conflicts[arm][s].values() if m["mean_cosine"] is not None]) for s in steps]
        if steps:
            ax.errorbar(steps, [c.mean for c in cells], yerr=[0 if math.isnan(c.half) else c.half for c in cells],
                        marker="o", capsize=2, label=arm)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean gradient cosine (backbone)")
    _legend(ax)
    save_figure(fig, out / "conflict.png")

    fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    for arm in t.arms:
        points = [p for p in relation_points(t) if p[0] == arm]
        if points:
            ax.scatter([p[2] for p in points], [p[3] for p in points], label=arm)
    if not relation_points(t):  # an empty frame would look like a broken plot
        ax.text(0.5, 0.5, "no run has both a conflict\nmeasurement and a specialist yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("mean gradient cosine at the last checkpoint")
    ax.set_ylabel("mean interference gap (dB)")
    _legend(ax)
    save_figure(fig, out / "gap_vs_conflict.png")


def write_report(results: Path, out: Path) -> list[Path]:
    """Read ``results``, write ``report.md``, ``runs.md`` and the plots to ``out``; the files written."""
    records = read_results(results)
    t = Table.of(records)
    texts = {"report.md": report_text(records), "runs.md": runs_text(records), "summary.md": summary_text(records)}
    check_output_folder(out)
    for name, text in texts.items():
        atomic_write(out / name, lambda tmp, text=text: Path(tmp).write_text(text))
    plot_all(t, out)
    return [*(out / name for name in texts), *(out / p for p in PLOTS)]
