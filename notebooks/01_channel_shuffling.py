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
# # 1. Channel shuffling, step by step
#
# Every DGPB starts by *perturbing* its input features `F` (B, C, H, W) in a way chosen by the
# degradation prompt `e` (B, 512):
#
# 1. **DGM**: `g = W2 (W1 e + b1) + b2`, one score per expanded channel, (B, 2C);
# 2. **sort**: `order = argsort(g, descending)`, a permutation of the 2C channel indices;
# 3. **expand**: `X = conv1x1(F)`, C -> 2C channels;
# 4. **gather**: `X'[b, i] = X[b, order[b, i]]`;
# 5. **reduce**: `Q = conv1x1(X')`, 2C -> C channels.
#
# We walk through the five steps on the features of a real photo, computing each one twice: with
# the PyTorch model (`dfpir`) and with the NumPy oracle (`reference`), side by side.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import dfpir
import reference
from dfpir import analysis
from dfpir.data import builtin_photos, to_tensor
from dfpir.model.perturbation import channel_order, channel_perturbation, inverse_order

torch.set_num_threads(1)
torch.manual_seed(0)
model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()  # dim 16: the level-1 DGPB has C = 16, 2C = 32
params = {k: v.numpy() for k, v in model.state_dict().items()}  # the reference reads torch's state dict
DEGRADATIONS = ["noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight"]

# %% [markdown]
# ## The input: a photo's level-1 features
#
# A 64 x 64 crop of a held-out built-in photo goes through the patch embedding and the first
# encoder stage. `F` is what the level-1 DGPB receives. The reference computes the same features
# from the same weights.

# %%
photo = dict(builtin_photos("val"))["astronaut"]
image = to_tensor(photo[40:104, 10:74])[None]  # (1, 3, 64, 64)
with torch.no_grad():
    features = model.encoder1(model.embed(image))  # (1, 16, 64, 64)
ref_features = reference.transformer_block(
    reference.conv2d(image.numpy(), params["embed.weight"]), params, model.config.heads[0], "encoder1.0."
)
print("features", tuple(features.shape), "max |torch - reference| =", float(np.abs(features.numpy() - ref_features).max()))

fig, axes = plt.subplots(1, 5, figsize=(12, 2.8), layout="constrained")
axes[0].imshow(photo[40:104, 10:74])
axes[0].set_title("input crop")
for i, ax in enumerate(axes[1:]):
    im = ax.imshow(features[0, i], cmap="gray")
    ax.set_title(f"feature channel {i}")
    fig.colorbar(im, ax=ax, shrink=0.7)
for ax in axes:
    ax.axis("off")
fig.suptitle("F: what the level-1 DGPB sees")
plt.show()

# %% [markdown]
# ## Step 1: the DGM turns the prompt into channel scores
#
# Two linear layers, **no** nonlinearity between them, so the scores are an affine function of
# the prompt embedding.

# %%
prompt = model.embed_prompts("rain")  # (1, 512)
perturb = model.dgpb1.perturb
with torch.no_grad():
    scores = perturb.dgm(prompt)  # (1, 32)
ref_scores = reference.dgm(prompt.numpy(), params, "dgpb1.perturb.dgm.")
print("max |torch - reference| =", float(np.abs(scores.numpy() - ref_scores).max()))

fig, ax = plt.subplots(figsize=(8, 2.6), layout="constrained")
ax.bar(range(32), scores[0], color="tab:blue", label="torch")
ax.plot(range(32), ref_scores[0], "k.", label="reference")
ax.set_xlabel("expanded channel")
ax.set_ylabel("DGM score")
ax.set_title("step 1: DGM scores for the 'rain' prompt")
ax.legend()
plt.show()

# %% [markdown]
# ## Step 2: the sort
#
# A stable descending argsort: the channel with the highest score goes first; among equal scores
# the lower index comes first (a declared tie rule; `torch.topk` promises none). Only this integer
# order is used afterwards: the score *values* are thrown away.
#
# The order is a discrete function of the scores, so torch and the reference agree exactly as long
# as no two scores are closer than the float32 rounding between them; we print the smallest gap.

# %%
order = channel_order(scores)  # (1, 32) int64
ref_order = reference.channel_order(ref_scores)
gaps = -np.diff(np.sort(scores.numpy()[0])[::-1])
print("torch    :", order[0].tolist())
print("reference:", ref_order[0].tolist())
print(f"smallest gap between two sorted scores: {gaps.min():.2e} (float32 resolution here ~{np.spacing(np.abs(scores.numpy()).max()):.0e})")

# %% [markdown]
# ## Steps 3 and 4: expand, then gather
#
# The gather moves whole feature maps: position `i` of the shuffled tensor holds expanded channel
# `order[i]`. No value changes, so torch and the reference agree bit for bit, and the inverse
# permutation restores the input exactly.

# %%
with torch.no_grad():
    expanded = perturb.expand(features)  # (1, 32, 64, 64)
shuffled = channel_perturbation(expanded, order)  # (1, 32, 64, 64)
ref_shuffled = reference.channel_perturbation(expanded.numpy(), ref_order)
restored = channel_perturbation(shuffled, inverse_order(order))
print("gather equal to reference:", np.array_equal(shuffled.numpy(), ref_shuffled))
print("inverse order restores X exactly:", torch.equal(restored, expanded))

fig, axes = plt.subplots(2, 6, figsize=(12, 4.4), layout="constrained")
for i in range(6):
    axes[0, i].imshow(expanded[0, i], cmap="gray")
    axes[0, i].set_title(f"X channel {i}", fontsize=9)
    axes[1, i].imshow(shuffled[0, i], cmap="gray")
    axes[1, i].set_title(f"X' position {i} = X[{int(order[0, i])}]", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("step 4: the gather re-orders whole feature maps (top: expanded X, bottom: shuffled X')")
plt.show()

# %% [markdown]
# ## Step 5: reduce, and what the whole perturbation is
#
# `Q = reduce(gather(expand(F)))`. Both convolutions are 1x1, so for a fixed order the three steps
# are one C x C linear map `M_t = W_reduce @ W_expand[order_t]` (plus a bias). The shuffle decides
# which row of `W_expand` meets which column of `W_reduce`: **each degradation gets its own
# mixing matrix, built from weights that all degradations share.**

# %%
with torch.no_grad():
    q = perturb(features, prompt)  # (1, 16, 64, 64)
ref_q = reference.perturb(features.numpy(), prompt.numpy(), params, "dgpb1.perturb.")
print("Q: max |torch - reference| =", float(np.abs(q.numpy() - ref_q).max()))

w_expand = perturb.expand.weight.detach()[:, :, 0, 0]  # (32, 16)
w_reduce = perturb.reduce.weight.detach()[:, :, 0, 0]  # (16, 32)
orders = analysis.channel_orders(model, DEGRADATIONS)  # {level: (7, 2C)}
mixing = {name: (w_reduce @ w_expand[torch.as_tensor(orders[1][t])]).numpy() for t, name in enumerate(DEGRADATIONS)}

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
for ax, name in zip(axes, ["noise25", "noise50", "rain"]):
    im = ax.imshow(mixing[name], cmap="RdBu_r", vmin=-0.4, vmax=0.4)
    ax.set_title(f"M for '{name}'")
    ax.set_xlabel("input channel of F")
    ax.set_ylabel("output channel of Q")
fig.colorbar(im, ax=axes, label="weight")
fig.suptitle("reduce . shuffle . expand as one C x C matrix per degradation (level 1)")
plt.show()

# %% [markdown]
# ## The order for each degradation, and how similar prompts give similar orders
#
# Each row below is one degradation's order at a DGPB: colour is the channel index placed at each
# position. The prompts of the three noise levels share almost all their words ("Gaussian noise
# with a standard deviation of ..."), so their embeddings are close; the DGM is affine, so their
# scores are close too, and their orders are similar. We measure that with the Spearman rank
# correlation between two orders (the position each channel takes in each).

# %%
fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), layout="constrained")
analysis.plot_channel_orders(orders[1], DEGRADATIONS, "level-1 DGPB (2C = 32)", ax=axes[0])
analysis.plot_channel_orders(orders[4], DEGRADATIONS, "latent DGPB (2C = 256)", ax=axes[1])
plt.show()

embeddings = model.embed_prompts(DEGRADATIONS).numpy()
unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
similarity = analysis.order_similarity(orders[4])
fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
analysis.plot_matrix(unit @ unit.T, DEGRADATIONS, "prompt embeddings: cosine", ax=axes[0])
analysis.plot_matrix(similarity, DEGRADATIONS, "latent DGPB orders: Spearman", ax=axes[1], colorbar_label="rank correlation")
plt.show()
print(f"noise15 vs noise25: {similarity[0, 1]:+.2f}   noise15 vs rain: {similarity[0, 3]:+.2f}")

# %% [markdown]
# ## Why the original's guidance never learns
#
# The order is an integer tensor: `argsort` has no gradient. The gather uses it as an index, so
# the loss does not depend differentiably on the scores at all and no gradient can reach the
# DGM's two linear layers. In the original they keep their random initialisation for the whole
# training: each prompt selects a *fixed pseudo-random* channel pairing. Our faithful mode says so
# explicitly (the DGM is frozen) instead of carrying parameters that silently never change.

# %%
s = scores.clone().requires_grad_(True)
out = channel_perturbation(expanded, channel_order(s)).sum()
print("does the shuffled tensor depend differentiably on the scores?", out.requires_grad)
print("trainable DGM parameters in faithful mode:", sum(p.requires_grad for p in perturb.dgm.parameters()))

# %% [markdown]
# ## What `guidance="learnable"` changes
#
# Our named research extension multiplies each gathered channel by a straight-through gate
# `(s - s.detach()) + 1` built from its sorted score. The gate is exactly 1 in the forward pass,
# so the output is **bit-identical** to the faithful model's; but the backward pass now sends
# `dL/ds_i = <dL/dX'_i, X'_i>` to the DGM. A few optimiser steps on a rain batch (DGM parameters
# only) are enough to move channels: the order becomes something the task can learn. (Most
# positions move at once: the 2C scores of a random DGM are packed closely together, so small
# changes of the scores already reorder them.)

# %%
learnable = analysis.ablate(model, "learnable")  # same weights, guidance="learnable"
with torch.no_grad():
    same_output = torch.equal(learnable(image, prompt), model(image, prompt))
print("forward identical to faithful:", same_output)

rain_input, rain_clean = analysis.task_batches(["rain"], batch=2, patch=32)["rain"]
loss = torch.nn.functional.l1_loss(learnable.restore(rain_input, "rain", grad=True), rain_clean)
loss.backward()
dgm_grad = learnable.dgpb1.perturb.dgm.linear2.weight.grad
print(f"|dL/dW| of the level-1 DGM: {dgm_grad.norm():.2e}")

dgm_params = [p for n, p in learnable.named_parameters() if ".dgm." in n]
optimizer = torch.optim.Adam(dgm_params, lr=1e-4)
before = analysis.channel_orders(learnable, ["rain"])
for step in range(8):
    optimizer.zero_grad()
    torch.nn.functional.l1_loss(learnable.restore(rain_input, "rain", grad=True), rain_clean).backward()
    optimizer.step()
after = analysis.channel_orders(learnable, ["rain"])
moved = {level: int((before[level] != after[level]).sum()) for level in before}
print("positions whose channel changed after 8 steps, per DGPB level:", moved)

analysis.plot_channel_orders(
    np.concatenate([before[1], after[1]]), ["before", "after 8 steps"], "level-1 order for 'rain' (learnable guidance)"
)
plt.show()

# %% [markdown]
# ## What this notebook showed (checked)

# %%
np.testing.assert_allclose(features.numpy(), ref_features, atol=1e-4)  # same features as the reference
np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5, atol=1e-5)  # DGM
assert gaps.min() > 1e-5 and np.array_equal(order.numpy(), ref_order)  # sort: same order (no near-ties)
assert np.array_equal(np.sort(order[0].numpy()), np.arange(32))  # the order is a permutation
assert np.array_equal(shuffled.numpy(), ref_shuffled)  # gather: bit-identical
assert torch.equal(restored, expanded)  # the inverse order undoes the shuffle exactly
np.testing.assert_allclose(q.numpy(), ref_q, atol=1e-4)  # whole perturbation
for t, name in enumerate(DEGRADATIONS):  # the C x C view of reduce . shuffle . expand is exact
    bias = perturb.reduce.bias.detach() + w_reduce @ perturb.expand.bias.detach()[torch.as_tensor(orders[1][t])]
    with torch.no_grad():
        direct = perturb(features, model.embed_prompts(name))
    torch.testing.assert_close(torch.einsum("oc,bchw->bohw", torch.as_tensor(mixing[name]), features) + bias[:, None, None], direct, atol=1e-5, rtol=1e-5)
assert similarity[0, 1] > 0.7 and similarity[1, 2] > 0.7  # similar prompts, similar orders
assert similarity[0, 1] > similarity[0, 3] + 0.3  # noise15 is closer to noise25 than to rain
assert not out.requires_grad and not any(p.requires_grad for p in perturb.dgm.parameters())  # faithful: nothing to learn
assert same_output and dgm_grad.abs().sum() > 0  # learnable: same forward, a gradient reaches the DGM
assert sum(moved.values()) > 0  # ... and the order can change
print("all checks passed")
