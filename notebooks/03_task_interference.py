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
# # 3. Task interference: do the DGPBs reduce gradient conflicts?
#
# An all-in-one restorer trains one set of weights on several degradations. If the gradient that
# improves denoising points against the one that improves dehazing, every step trades one task
# for the other: *task interference*. The DFPIR paper argues that degradation-guided perturbation
# (the DGPBs) gives each task its own path through shared weights and so reduces this.
#
# We **measure** it. For each degradation `t` we compute the gradient `g_t` of the L1 loss on a
# batch of that degradation, over the shared (trainable) parameters, and compare tasks by cosine
# similarity; a negative cosine is a conflict. `dfpir.analysis` does this for any model, overall
# and per top-level module (the same is available on the command line:
# `python -m dfpir.analysis interference --weights W --out DIR`).
#
# Everything here is small enough for a laptop CPU and a CI run: a `tiny` network with `dim=8`
# (about 0.3 M parameters), 32 x 32 crops of the built-in photos, 40 training steps. Read the
# numbers with that in mind.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from dfpir import analysis
from dfpir.data import SyntheticDataset, builtin_photos
from dfpir.train import collate

torch.set_num_threads(1)
started = time.perf_counter()
DEGRADATIONS = ["noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight"]
SIZE = {"dim": 8}  # overrides of the tiny preset
PATCH, STEPS, BATCH, LR = 32, 40, 4, 2e-3
# Two independent measurement sets (the same 8 clean crops degraded 7 ways each); neither is
# used for training. Two of them show how much the estimate itself moves.
MEASURE_SEEDS = [101, 202]
measure_sets = {s: analysis.task_batches(DEGRADATIONS, batch=8, patch=PATCH, seed=s) for s in MEASURE_SEEDS}

# %% [markdown]
# ## The measuring tool on one model
#
# A freshly initialised DFPIR first. `measure_interference` returns the overall matrix, the
# fraction of conflicting pairs (21 pairs for 7 tasks), and the same per layer.

# %%
fresh = analysis.build_model("tiny", "none", seed=0, **SIZE)
result = analysis.measure_interference(fresh, measure_sets[101])
print(result.summary())
analysis.plot_interference(result, "freshly initialised DFPIR (tiny, dim 8)")
plt.show()

# %% [markdown]
# A sanity check of the tool: the same batch submitted as two "tasks" to a model whose output
# does not depend on the prompt (the baseline without DGPBs) must give a cosine of exactly 1.

# %%
x, y = measure_sets[101]["noise25"]
same = analysis.measure_interference(analysis.build_model("tiny", "no_dgpb", seed=0, **SIZE), {"noise25": (x, y), "rain": (x, y)})
print(f"cosine of a task with itself: {same.cosine[0, 1]:.12f}")

# %% [markdown]
# ## At initialisation: DFPIR, the Restormer baseline, and the ablations
#
# All variants start from the **same** backbone weights (`analysis.build_model` seeds the
# initialisation, `analysis.ablate` copies every weight the variant keeps):
#
# * `none`: DFPIR as published (faithful, frozen DGM);
# * `no_dgpb`: the Restormer backbone alone (the `restormer` architecture);
# * `no_shuffle`: DGPBs whose channel order is the identity for every prompt;
# * `no_mask`: DGPBs without the top-k attention mask;
# * `learnable`: the DGM receives gradients (our research extension).

# %%
VARIANTS = ["none", "no_dgpb", "no_shuffle", "no_mask", "learnable"]
at_init = {v: analysis.measure_interference(analysis.build_model("tiny", v, seed=0, **SIZE), measure_sets[101]) for v in VARIANTS}
print(f"{'variant':<12}{'conflicting pairs':>18}{'mean cosine':>13}")
for v, r in at_init.items():
    print(f"{v:<12}{r.conflict_fraction:>18.0%}{r.mean_cosine:>+13.3f}")

# %% [markdown]
# ## Brief training, with and without DGPBs
#
# Two models from the same initial backbone, trained identically: 40 Adam steps of 4 crops, each
# crop degraded by one of the seven degradations (the DFPIR gets each crop's prompt). Then the
# same measurement on both, with both measurement sets.

# %%
def train_briefly(model, steps=STEPS, seed=0):
    """A few Adam steps on the built-in photos, all degradations mixed in every batch."""
    data = SyntheticDataset(builtin_photos("train"), DEGRADATIONS, PATCH, length=steps * BATCH, seed=seed)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))  # mix the degradations
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


trained, measured = {}, {}
for variant, label in [("none", "DFPIR"), ("no_dgpb", "Restormer")]:
    t0 = time.perf_counter()
    trained[label] = train_briefly(analysis.build_model("tiny", variant, seed=0, **SIZE))
    measured[label] = [analysis.measure_interference(trained[label], measure_sets[s]) for s in MEASURE_SEEDS]
    print(f"{label}: trained and measured in {time.perf_counter() - t0:.0f} s")

init_loss = {"DFPIR": np.mean(list(at_init["none"].losses.values())), "Restormer": np.mean(list(at_init["no_dgpb"].losses.values()))}
print(f"\n{'model':<11}{'L1 before':>10}{'L1 after':>10}   conflicting pairs (set 1, set 2)   mean cosine (set 1, set 2)")
for label, runs in measured.items():
    after = np.mean(list(runs[0].losses.values()))
    fr = ", ".join(f"{r.conflict_fraction:.0%}" for r in runs)
    mc = ", ".join(f"{r.mean_cosine:+.2f}" for r in runs)
    print(f"{label:<11}{init_loss[label]:>10.4f}{after:>10.4f}   {fr:>33}   {mc:>26}")

# %% [markdown]
# ## The matrices
#
# Red: the two tasks' gradients agree; blue: they conflict. Top row: measurement set 1; bottom
# row: set 2 (same models, other crops and noise).

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 9), layout="constrained")
for col, (label, runs) in enumerate(measured.items()):
    for row, r in enumerate(runs):
        analysis.plot_matrix(
            r.cosine, DEGRADATIONS, ax=axes[row, col],
            title=f"{label} after {STEPS} steps, set {row + 1}\n{r.conflict_fraction:.0%} conflicting, mean cos {r.mean_cosine:+.2f}",
        )
fig.suptitle("gradient cosine between degradations, all shared parameters")
plt.show()

# %% [markdown]
# ## Per layer
#
# The fraction of conflicting pairs in every top-level module (averaged over the two measurement
# sets). The DGPB rows exist only in DFPIR.

# %%
layers = list(measured["DFPIR"][0].layers)
per_layer = {
    label: [np.mean([r.layers[k]["conflict_fraction"] for r in runs]) if k in runs[0].layers else np.nan for k in layers]
    for label, runs in measured.items()
}
xs = np.arange(len(layers))
fig, ax = plt.subplots(figsize=(12, 3.8), layout="constrained")
ax.bar(xs - 0.2, per_layer["DFPIR"], width=0.4, label="DFPIR")
ax.bar(xs + 0.2, per_layer["Restormer"], width=0.4, label="Restormer (no DGPB)")
ax.set_xticks(xs, layers, rotation=60, ha="right")
ax.set_ylabel("fraction of conflicting task pairs")
ax.set_xlabel("top-level module")
ax.set_title(f"gradient conflicts per layer after {STEPS} training steps")
ax.legend()
plt.show()

# %% [markdown]
# ## What the measurement shows
#
# The cell below states the result from the numbers of *this* run rather than from expectation.

# %%
frac = {label: np.mean([r.conflict_fraction for r in runs]) for label, runs in measured.items()}
mean_cos = {label: np.mean([r.mean_cosine for r in runs]) for label, runs in measured.items()}
spread = max(abs(runs[0].conflict_fraction - runs[1].conflict_fraction) for runs in measured.values())
diff = frac["Restormer"] - frac["DFPIR"]
if abs(diff) <= spread:
    verdict = "no difference larger than the disagreement between two measurements of the same model"
elif diff > 0:
    verdict = "fewer conflicting pairs with the DGPBs, by more than the measurement's own spread"
else:
    verdict = "MORE conflicting pairs with the DGPBs, by more than the measurement's own spread"
deepest = {label: [float(np.min(r.cosine)) for r in runs] for label, runs in measured.items()}
shallower = all(d > r for d, r in zip(deepest["DFPIR"], deepest["Restormer"]))


def most_conflicted(runs):
    """The degradation that takes part in the most conflicting pairs, over both measurement sets."""
    counts = sum((r.cosine < 0).sum(axis=0) for r in runs)
    return DEGRADATIONS[int(np.argmax(counts))]


print(f"conflicting pairs, mean of two measurement sets: DFPIR {frac['DFPIR']:.0%}, Restormer {frac['Restormer']:.0%}")
print(f"mean cosine: DFPIR {mean_cos['DFPIR']:+.2f}, Restormer {mean_cos['Restormer']:+.2f}")
print(f"two measurements of the same model differ by up to {spread:.0%} of the pairs")
print(f"=> counting pairs: {verdict}.")
for label in measured:
    print(f"deepest conflict ({label}): " + ", ".join(f"{d:+.2f}" for d in deepest[label])
          + f"; the task in most conflicting pairs: {most_conflicted(measured[label])}")
print("=> depth: the deepest conflict is " + ("shallower with the DGPBs in both measurement sets." if shallower
      else "not consistently shallower with the DGPBs."))
print(f"notebook time so far: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# **Plainly.** Counting conflicting pairs is coarse (a cosine of -0.05 counts as much as -0.95) and,
# at this scale, noisy: the two measurement sets of one model can disagree by several pairs, and
# the "counting pairs" line above says whether the difference between the models beats that.
# The depth of the conflicts is the more telling number, and the "depth" line says whether it
# separated the models in this run. In our runs the Restormer's conflicts concentrated on one
# task (haze, whose fix is a global darkening and contrast increase that the others do not want)
# with cosines near -0.9, while the DFPIR's were shallower; that is *consistent* with the paper's
# idea that the prompt-selected channel routing lets tasks pull in less opposed directions, but it
# is one seed, one initialisation and 40 steps.
#
# None of this tests the paper's claim, which concerns a 31 M-parameter network trained for about
# 80 epochs on real data: here a 0.3 M-parameter network has seen 160 crops, and each cosine is
# estimated from 8 crops per task. The tools and the protocol (same initial backbone, same data
# order, several measurement sets) are what a real test needs: run
# `python -m dfpir.analysis interference --weights best.safetensors --out DIR` on trained
# checkpoints, with `--ablation no_shuffle`, `no_mask` or `learnable`, to ask the question at a
# scale where the answer means something.
#
# ## What this notebook checked

# %%
for r in [result, *at_init.values(), *measured["DFPIR"], *measured["Restormer"]]:
    cos = r.cosine
    assert np.array_equal(cos, cos.T) and np.array_equal(np.diag(cos), np.ones(len(DEGRADATIONS)))  # symmetric, unit diagonal
    pairs = cos[np.triu_indices(len(DEGRADATIONS), k=1)]
    assert r.conflict_fraction == np.mean(pairs < 0)  # the conflict fraction is read off the matrix
    for layer in r.layers.values():
        assert layer["conflict_fraction"] == np.mean(layer["cosine"][np.triu_indices(len(DEGRADATIONS), k=1)] < 0)
assert same.cosine[0, 1] > 1 - 1e-12  # a task against itself: cosine 1
assert not any(k.startswith("dgpb") for k in measured["Restormer"][0].layers)  # the baseline has no DGPB
assert {f"dgpb{i}" for i in range(1, 5)} <= set(measured["DFPIR"][0].layers)
for label, runs in measured.items():  # brief training did reduce the loss on held-out measurement crops
    assert np.mean(list(runs[0].losses.values())) < init_loss[label], label
assert verdict and isinstance(shallower, bool)  # the conclusions above were computed from this run's numbers
print("all checks passed")
