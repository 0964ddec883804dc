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
# We first run steps 1, 2, 4 and 5 on a toy case small enough to check with pencil and paper,
# then walk through all five on the features of a real photo, computing each step twice: with
# the PyTorch model (`dfpir`) and with the NumPy oracle (`reference`), side by side.
#
# **What the network and the prompts are here.** The network is **untrained**: the `tiny` preset
# with its random initialisation (`torch.manual_seed(0)`); nothing below needs training, because
# the shuffle is the same operation whatever the weights. The prompt embeddings are **not CLIP's**
# (the original encodes its prompt texts with CLIP ViT-B/32): they come from `dfpir`'s own
# `HashingTextEncoder` (`dfpir/model/prompts.py`), which lower-cases the registry's prompt text
# (e.g. "Rain degradation with rain lines"), gives every word a 512-d standard Gaussian vector
# seeded by the word's SHA-256 digest, and returns their sum divided by the square root of the
# number of words. Two texts are close exactly when they share words; the encoder knows nothing
# else about their meaning.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import dfpir
import reference
from dfpir import analysis
from dfpir.data import builtin_photos, to_tensor
from dfpir.model.perturbation import DGM, channel_order, channel_perturbation, inverse_order
from dfpir.model.prompts import HashingTextEncoder

torch.set_num_threads(1)
torch.manual_seed(0)
model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()  # untrained; dim 16: the level-1 DGPB has C = 16, 2C = 32
params = {k: v.numpy() for k, v in model.state_dict().items()}  # the reference reads torch's state dict
DEGRADATIONS = ["noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight"]
rain_text = model.prompts.texts["rain"]
print(f"'rain' prompt text: {rain_text!r}")
print("its embedding is HashingTextEncoder's:", np.array_equal(model.prompts["rain"], HashingTextEncoder(512)(rain_text)))

# %% [markdown]
# ## A toy case to check by hand
#
# Take 2C = 4 expanded channels of 3 x 3 pixels, with values that name their channel: channel `j`
# holds `10 j, 10 j + 1, ..., 10 j + 8`, so the tens digit of any value tells where it came from.
# Give the DGM a 3-d prompt, make its first layer the identity and its second layer
#
# ```
# W2 = [[ 1, 0, 0],      prompt A = (1, 0, 2)  ->  g = W2 A = (1, 4, -2, 3)
#       [ 0, 0, 2],      prompt B = (0, 1, 0)  ->  g = W2 B = (0, 0,  1, 0)
#       [-2, 1, 0],
#       [ 1, 0, 1]]      (both biases 0)
# ```
#
# By hand: for prompt A the scores sorted from the highest are 4, 3, 1, -2, at channels 1, 3, 0, 2,
# so `order = (1, 3, 0, 2)` and the gathered tensor is `X' = (X1, X3, X0, X2)`. Prompt B has a
# three-way tie at 0: the tie rule puts the lower index first, so `order = (2, 0, 1, 3)`. The
# inverse of (1, 3, 0, 2) says where each channel went: channel 0 to position 2, 1 to 0, 2 to 3,
# 3 to 1, i.e. `(2, 0, 3, 1)`. Finally a fixed reduce `W_r = [[1, -1, 0, 0], [0, 0, 1, 1]]` gives
# `Q0 = X'0 - X'1` and `Q1 = X'2 + X'3`: for prompt A, `Q0 = X1 - X3 = -20` at every pixel and
# `Q1 = X0 + X2 = 20, 22, ..., 36`; for prompt B, `Q0 = X2 - X0 = +20` and `Q1 = X1 + X3 = 40, ..., 56`.
# The same weights mix the channels differently for each prompt. The code below computes all of
# this with `dfpir` and with `reference`.

# %%
toy_x = (10 * np.arange(4)[:, None, None] + np.arange(9).reshape(3, 3))[None].astype(np.float32)  # (1, 4, 3, 3)
toy_prompts = np.array([[1, 0, 2], [0, 1, 0]], dtype=np.float32)  # (2, 3): prompts A and B
toy_dgm = DGM(prompt_dim=3, out_channels=4)
with torch.no_grad():
    toy_dgm.linear1.weight.copy_(torch.eye(3))
    toy_dgm.linear2.weight.copy_(torch.tensor([[1, 0, 0], [0, 0, 2], [-2, 1, 0], [1, 0, 1]]))
    toy_dgm.linear1.bias.zero_()
    toy_dgm.linear2.bias.zero_()
    toy_scores = toy_dgm(torch.from_numpy(toy_prompts))  # (2, 4)
toy_params = {k: v.numpy() for k, v in toy_dgm.state_dict().items()}
ref_toy_scores = reference.dgm(toy_prompts, toy_params)
toy_order = channel_order(toy_scores)  # (2, 4)
ref_toy_order = reference.channel_order(ref_toy_scores)
toy_xs = torch.from_numpy(toy_x).expand(2, -1, -1, -1)  # the same X under both prompts
toy_gathered = channel_perturbation(toy_xs, toy_order)  # (2, 4, 3, 3)
ref_toy_gathered = reference.channel_perturbation(toy_xs.numpy(), ref_toy_order)
w_r = np.array([[1, -1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)[:, :, None, None]  # (C, 2C, 1, 1)
toy_q = reference.conv2d(ref_toy_gathered, w_r)  # (2, 2, 3, 3)
for b, name in enumerate("AB"):
    print(f"prompt {name}: scores {toy_scores[b].tolist()} (reference {ref_toy_scores[b].tolist()})")
    print(f"          order {toy_order[b].tolist()} (reference {ref_toy_order[b].tolist()}), inverse {inverse_order(toy_order)[b].tolist()}")
    print(f"          Q0 =\n{toy_q[b, 0]}\n          Q1 =\n{toy_q[b, 1]}")


# %% [markdown]
# In the pictures, the bottom row is `X` in channel order; each gathered channel `X'[i]` is drawn
# directly above the channel it was copied from, and its title says which position `i` it takes.
# Reading the titles of the top row from 0 to 3 gives `X'` in order.


# %%
def draw_gather(x: np.ndarray, gathered: np.ndarray, order: list[int], title: str) -> None:
    """Top: X'[i] drawn above its source X[order[i]]; bottom: X in channel order; values in the cells."""
    fig, axes = plt.subplots(2, len(order), figsize=(2.2 * len(order), 4.6), layout="constrained")
    for position, channel in enumerate(order):
        for row, image, label in [(0, gathered[position], f"X'[{position}] (position {position})"), (1, x[channel], f"X[{channel}]")]:
            ax = axes[row, channel]
            ax.imshow(image, cmap="viridis", vmin=0, vmax=40)
            for (r, c), value in np.ndenumerate(image):
                ax.text(c, r, f"{value:.0f}", ha="center", va="center", color="white", fontsize=9)
            ax.set_title(label, fontsize=10, color="tab:red" if row == 0 else "black")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title)
    plt.show()


for b, name in enumerate("AB"):
    scores_text = ", ".join(f"{g:.0f}" for g in toy_scores[b].tolist())
    draw_gather(toy_x[0], toy_gathered[b].numpy(), toy_order[b].tolist(), f"prompt {name}: scores ({scores_text}), order = {tuple(toy_order[b].tolist())}")

# %% [markdown]
# ## The input: a photo's level-1 features
#
# A 64 x 64 crop of a held-out built-in photo goes through the (untrained) patch embedding and
# first encoder stage. `F` is what the level-1 DGPB receives. The reference computes the same features
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
for i in range(6):  # each gathered channel directly above the expanded channel it was copied from
    source = int(order[0, i])
    axes[0, i].imshow(shuffled[0, i], cmap="gray")
    axes[0, i].set_title(f"X' position {i}", fontsize=9, color="tab:red")
    axes[1, i].imshow(expanded[0, source], cmap="gray")
    axes[1, i].set_title(f"its source: X channel {source}", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("step 4: the gather copies whole feature maps (top: the first 6 positions of X', bottom: where each came from)")
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
# `dL/ds_i = <dL/dX'_i, X'_i>` to the DGM. That gradient is the one for *scaling* channel `i`;
# what a step actually does to the forward pass is *swap* channels whose scores cross, which the
# gradient does not foresee. So we check two separate things on a rain batch, with eight Adam
# steps on the DGM parameters only: does the order move, and does the loss on that same batch
# go down? The sentence printed at the end of the cell is chosen by the numbers.

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

STEPS = 8
dgm_params = [p for n, p in learnable.named_parameters() if ".dgm." in n]
optimizer = torch.optim.Adam(dgm_params, lr=1e-4)
before = analysis.channel_orders(learnable, ["rain"])
step_losses = []  # step_losses[t]: the loss on the batch after t steps
for step in range(STEPS + 1):
    optimizer.zero_grad()
    step_loss = torch.nn.functional.l1_loss(learnable.restore(rain_input, "rain", grad=True), rain_clean)
    step_losses.append(step_loss.item())
    if step < STEPS:
        step_loss.backward()
        optimizer.step()
after = analysis.channel_orders(learnable, ["rain"])
moved = {level: int((before[level] != after[level]).sum()) for level in before}
print(f"positions whose channel changed after {STEPS} steps, per DGPB level:", moved, "of", {level: before[level].size for level in before})
print("L1 loss on the batch after each step:", np.round(step_losses, 5).tolist())

fig, axes = plt.subplots(1, 2, figsize=(12, 2.8), layout="constrained", width_ratios=[1, 2.2])
axes[0].plot(range(STEPS + 1), step_losses, "o-")
axes[0].set_xlabel("Adam steps on the DGMs")
axes[0].set_ylabel("L1 loss on the rain batch")
axes[0].set_title("the loss")
analysis.plot_channel_orders(
    np.concatenate([before[1], after[1]]), ["before", f"after {STEPS} steps"], "level-1 order for 'rain' (learnable guidance)", ax=axes[1]
)
plt.show()

change = step_losses[-1] - step_losses[0]
direction = "fell" if change < 0 else "rose" if change > 0 else "did not change"
lowest = int(np.argmin(step_losses))
print(
    f"The gradient reached the DGMs and moved {sum(moved.values())} of {sum(before[level].size for level in before)} positions; "
    f"the loss on the same batch {direction} from {step_losses[0]:.5f} to {step_losses[-1]:.5f} ({change:+.5f}); "
    + (f"its lowest value came after {lowest} steps. " if lowest else "no step took it below its starting value. ")
    + (f"So these {STEPS} steps made the order trainable and improved the fit on this batch; that says nothing yet about a training run."
       if change < 0 else
       f"So the order is now something the gradient can change, but these {STEPS} steps did not improve the fit: movement, not learning.")
)

# %% [markdown]
# ## What this notebook showed (checked)

# %%
encoder = HashingTextEncoder(512)  # the prompts are the project's hashing encoder's, not CLIP's
assert all(np.array_equal(model.prompts[n], encoder(model.prompts.texts[n])) for n in DEGRADATIONS)
# the toy case, against the pencil-and-paper values derived above
assert toy_scores.tolist() == [[1, 4, -2, 3], [0, 0, 1, 0]] and np.array_equal(ref_toy_scores, toy_scores.numpy())
assert toy_order.tolist() == [[1, 3, 0, 2], [2, 0, 1, 3]] and np.array_equal(ref_toy_order, toy_order.numpy())  # B: ties, lower index first
assert inverse_order(toy_order)[0].tolist() == [2, 0, 3, 1]
assert toy_gathered[:, :, 0, 0].tolist() == [[10, 30, 0, 20], [20, 0, 10, 30]]  # each top-left value is 10 x its source channel
assert np.array_equal(toy_gathered.numpy(), ref_toy_gathered)
assert (toy_q[0, 0] == -20).all() and (toy_q[1, 0] == 20).all()  # Q0 = X1 - X3 (A), X2 - X0 (B)
assert np.array_equal(toy_q[:, 1], [20 + 2 * np.arange(9).reshape(3, 3), 40 + 2 * np.arange(9).reshape(3, 3)])  # Q1
# the photo
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
assert sum(moved.values()) > 0  # ... and the order can change (whether that lowers the loss: the sentence above)
assert len(step_losses) == STEPS + 1 and np.isfinite(step_losses).all()
print("all checks passed")
