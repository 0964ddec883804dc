# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Task interference: does DFPIR reduce it?
#
# An all-in-one restorer trains one set of weights on several degradations. If the change that
# improves denoising undoes part of what improves dehazing, every step trades one task for the
# other: *task interference*. The DFPIR paper's central claim is that its Degradation-Guided
# Perturbation Blocks (DGPBs) reduce it.
#
# Interference has a direct measure: train a **specialist** on one degradation alone, and the
# all-in-one model on all of them, with the same number of steps; the specialist's PSNR minus the
# all-in-one model's is the *gap*. The claim is that the DGPBs shrink the gap. A second, indirect
# measure looks inside training: the cosine between two degradations' gradients on the shared
# weights (negative: a step that helps one hurts the other).
#
# This notebook has two parts:
#
# 1. **The study's results**, read from the result files committed under `results/study/default/`
#    (made by `python -m dfpir.study run`; the design, pre-registered before the runs, is on the
#    docs page "Does DFPIR reduce task interference?"). Nothing is trained here: every table and
#    conclusion below is computed from those files by `dfpir.study.report`, the code that writes
#    the study's report.
# 2. **A small live measurement** of gradient conflicts that you can change and rerun in about a
#    minute: it shows how the measuring tool works, not whether the claim holds.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from IPython.display import Markdown, display

import dfpir
from dfpir import analysis
from dfpir.data import SyntheticDataset, builtin_photos
from dfpir.study import report
from dfpir.study.stats import interval
from dfpir.train import collate

torch.set_num_threads(1)
started = time.perf_counter()
RESULTS = Path(dfpir.__file__).resolve().parents[1] / "results" / "study" / "default"

# %% [markdown]
# ## 1. The study's results
#
# Each JSON file is one finished training run: an arm (a network) at a seed. The arms: `dfpir`
# as published; `restormer`, the same backbone without DGPBs; `restormer_wide`, the backbone with
# blocks added until it has dfpir's trainable parameters; `shared_prompt`, `no_shuffle`,
# `no_mask` and `learnable`, which each change one part of the DGPBs; and a `specialist` per
# degradation. A study still running has only some of these files; the tables show what exists.

# %%
files = sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []
records = report.read_results(RESULTS) if files else []
table = report.Table.of(records) if records else None
print(f"{len(files)} result files in {RESULTS}")
if records:
    runs = sorted((r["arm"], r["seed"], r["degradations"][0] if r.get("specialist") else "all") for r in records)
    for arm in dict.fromkeys(a for a, _, _ in runs):
        print(f"  {arm:<15} seeds {sorted({s for a, s, _ in runs if a == arm})}")
    held = records[0]["heldout"]
    print(f"held-out set: {len(held['images'])} photos, {held['crop']} x {held['crop']} crops")
else:
    print("no results yet: run python -m dfpir.study run (see the docs page) to make them")

# %% [markdown]
# **Held-out PSNR** per arm and degradation (dB), the mean over seeds with its 95% Student-t
# interval (`±`); a single seed has no interval. The inputs' own PSNR is the last row, for
# scale.

# %%
def show(lines):
    """A table of the report, rendered as Markdown (plain text outside Jupyter)."""
    display(Markdown("\n".join(lines)))


if table:
    inputs = {d: np.mean([r["metrics"][d]["input_psnr"] for r in records if d in r["metrics"]]) for d in table.degradations}
    show(report.quality_section(table, "psnr", 2) + ["| input (degraded) | | " + " | ".join(f"{v:.2f}" for v in inputs.values()) + " | |"])

# %% [markdown]
# **Paired differences** against `dfpir`: for each seed, the arm's PSNR minus dfpir's on the same
# seed (same initial backbone, same data order), then the mean and interval over seeds. Negative:
# the arm is worse than dfpir.

# %%
if table:
    show(report.paired_section(table))

# %% [markdown]
# **Interference gaps**: the specialist's PSNR minus the arm's, paired by seed. A gap above 0 is
# interference: sharing the weights with the other degradations cost that much.

# %%
if table:
    show(report.gap_section(table))

# %% [markdown]
# **The conclusion**, by the rule fixed before the runs: the DGPBs reduce interference on a
# degradation when there is interference to reduce (the restormer's gap interval lies above 0)
# and both baselines' gaps exceed dfpir's (paired intervals above 0); they increase it when both
# lie below; otherwise there is no conclusion, and the line says which condition failed. Then
# each part of the DGPBs, judged by dfpir's mean PSNR minus that of the arm without the part.

# %%
verdicts, components = {}, {}
if table:
    for d in [*table.degradations, report.MEAN]:
        verdicts[d] = report.verdict(table, d)
        print(f"{d:>9}: {verdicts[d]}")
    print()
    for arm, what in report.COMPONENTS.items():
        components[arm] = report.component(table, arm)
        print(f"{what} ({arm}): {components[arm]}")

# %% [markdown]
# The PSNR of every run, arm by arm: each dot is one seed, the bar its mean. Where dots of two
# arms overlap, a difference between their means is not one the seeds can tell apart.

# %%
if table:
    arms = [a for a in table.arms if table.psnr[a]]
    fig, axes = plt.subplots(1, len(table.degradations), figsize=(3.0 * len(table.degradations), 3.6), layout="constrained", sharey=False)
    for ax, d in zip(np.atleast_1d(axes), table.degradations):
        for i, arm in enumerate(arms):
            values = list(table.psnr[arm].get(d, {}).values())
            ax.bar(i, np.mean(values) if values else np.nan, color="0.85")
            ax.scatter([i] * len(values), values, s=14, color="C0", zorder=3)
        if d in table.specialist:
            ax.axhline(np.mean(list(table.specialist[d].values())), color="C3", lw=1, ls="--", label="specialist")
            ax.legend(fontsize="small", loc="lower right")
        ax.set_xticks(range(len(arms)), arms, rotation=60, ha="right", fontsize="small")
        lows = [v for a in arms for v in table.psnr[a].get(d, {}).values()]
        if lows:
            ax.set_ylim(min(lows) - 0.5, max(lows + list(table.specialist.get(d, {}).values())) + 0.3)
        ax.set_title(d)
    np.atleast_1d(axes)[0].set_ylabel("held-out PSNR (dB)")
    plt.show()

# %% [markdown]
# **Gradient conflict during the runs**: the mean cosine between the degradations' gradients on
# the shared backbone (the DGPBs' own weights left out, so that arms with and without them are
# compared on the same parameters), averaged over 50 batches, at each measured checkpoint.

# %%
if table:
    show(report.conflict_section(table))
    show([""] + report.relation_section(table))

# %% [markdown]
# ## 2. A live measurement you can change
#
# `dfpir.analysis.measure_interference` computes, for each degradation, the gradient of the L1
# loss on a batch of that degradation (all degradations degrade the *same* clean crops), and the
# cosine between every two. Below: a very small DFPIR and the same backbone without DGPBs, from
# the same initial weights, trained for a few steps on identical batches, then measured on two
# independent measurement sets. Change `STEPS`, `SIZE` or the degradations and rerun: the point is
# to see how much the measurement moves between two sets of crops of the *same* model, which is
# why the study averages over 50 batches and several seeds.

# %%
DEGRADATIONS = ["noise25", "rain", "haze", "blur", "lowlight"]
SIZE = {"dim": 8}  # overrides of the tiny preset
PATCH, STEPS, BATCH, LR = 32, 30, 4, 2e-3
MEASURE_SEEDS = [101, 202]
measure_sets = {s: analysis.task_batches(DEGRADATIONS, batch=8, patch=PATCH, seed=s) for s in MEASURE_SEEDS}

# a sanity check of the tool: one batch given as two "tasks" to a model without prompts: cosine 1
x, y = measure_sets[101]["noise25"]
same = analysis.measure_interference(analysis.build_model("tiny", "no_dgpb", seed=0, **SIZE), {"noise25": (x, y), "rain": (x, y)})
print(f"cosine of a task with itself: {same.cosine[0, 1]:.12f}")


def train_briefly(model, steps=STEPS, seed=0):
    """A few Adam steps on the built-in photos, the degradations mixed in every batch."""
    data = SyntheticDataset(builtin_photos("train"), DEGRADATIONS, PATCH, length=steps * BATCH, seed=seed)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)
    model.train()
    for step in range(steps):
        batch = collate([data[int(i)] for i in order[step * BATCH : (step + 1) * BATCH]])
        prompt = model.embed_prompts(batch["degradation"]) if model.config.use_dgpb else None
        loss = F.l1_loss(model(batch["input"], prompt), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


measured = {}
for variant, label in [("none", "DFPIR"), ("no_dgpb", "Restormer")]:
    model = train_briefly(analysis.build_model("tiny", variant, seed=0, **SIZE))
    measured[label] = [analysis.measure_interference(model, measure_sets[s]) for s in MEASURE_SEEDS]
print(f"{'model':<11}{'mean cosine, set 1':>20}{'set 2':>8}{'conflicting pairs, set 1':>26}{'set 2':>8}")
for label, runs in measured.items():
    print(f"{label:<11}{runs[0].mean_cosine:>+20.3f}{runs[1].mean_cosine:>+8.3f}{runs[0].conflict_fraction:>26.0%}{runs[1].conflict_fraction:>8.0%}")

# %%
fig, axes = plt.subplots(2, 2, figsize=(9, 8), layout="constrained")
for col, (label, runs) in enumerate(measured.items()):
    for row, r in enumerate(runs):
        analysis.plot_matrix(r.cosine, DEGRADATIONS, ax=axes[row, col],
                             title=f"{label}, set {row + 1}: mean cos {r.mean_cosine:+.2f}")
fig.suptitle(f"gradient cosine between degradations after {STEPS} steps (red: agree, blue: conflict)")
plt.show()

# %% [markdown]
# What this run shows, computed from its numbers: whether the two models differ by more than two
# measurements of one model differ.

# %%
cos = {label: [r.mean_cosine for r in runs] for label, runs in measured.items()}
spread = max(abs(v[0] - v[1]) for v in cos.values())
diff = np.mean(cos["DFPIR"]) - np.mean(cos["Restormer"])
if abs(diff) <= spread:
    live = (f"the mean cosines differ by {diff:+.3f}, no more than two measurement sets of one model differ "
            f"({spread:.3f}): this measurement cannot tell the two models apart")
else:
    live = (f"the mean cosine is {'higher' if diff > 0 else 'lower'} with the DGPBs by {abs(diff):.3f}, more than two "
            f"measurement sets of one model differ ({spread:.3f}); one seed and {STEPS} steps, so a hint at most")
print(live)
print(f"notebook time: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## What this notebook checked

# %%
assert same.cosine[0, 1] > 1 - 1e-12  # a task against itself: cosine 1
for runs in measured.values():
    for r in runs:
        c = r.cosine
        assert np.array_equal(c, c.T) and np.array_equal(np.diag(c), np.ones(len(DEGRADATIONS)))
        assert r.conflict_fraction == np.mean(c[np.triu_indices(len(DEGRADATIONS), k=1)] < 0)
if table:  # every conclusion above is the report's, from the committed files
    assert all(v.startswith(("the DGPBs", "no conclusion", "not decided")) for v in verdicts.values())
    assert all(v.startswith(("helps", "hurts", "no conclusion", "not decided")) for v in components.values())
    for arm in table.arms:  # the tables' means are the files' numbers
        for d, by_seed in table.psnr[arm].items():
            expected = [r["metrics"][d]["psnr"] for r in records if r["arm"] == arm and not r.get("specialist")]
            assert abs(interval(list(by_seed.values())).mean - np.mean(expected)) < 1e-9
print("all checks passed")
