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
# # 2. Attention masking
#
# After the channel shuffle, the DGPB mixes the perturbed features `Q` with its input `F` by
# *cross attention over channels* (CAAPM), and masks the weakest entries of every attention row:
#
# 1. `q = dwconv(conv1x1(LN(Q)))`, `k, v = split(dwconv(conv1x1(LN(F))))`, reshaped per head to
#    (c, H*W): **one row per channel**, the pixels are the feature axis;
# 2. `logits = normalise(q) @ normalise(k)^T * temperature`, a (c x c) matrix of scaled cosines;
# 3. **top-k mask**: in each row keep the `k = max(1, floor(0.9 c))` largest logits and set the
#    others to `-inf` *before* the softmax (so the softmax renormalises over the kept entries);
# 4. `A = softmax(masked logits) @ v`, times a learnable scalar (init 0.2), then a 1x1 conv.
#
# PyTorch (`dfpir`) and the NumPy oracle (`reference`) side by side, on a real photo.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import dfpir
import reference
from dfpir import analysis
from dfpir.model.attention import channel_logits, split_heads
from dfpir.data import builtin_photos, to_tensor
from dfpir.model.masked_attention import kept_per_row, masked_softmax, topk_mask

torch.set_num_threads(1)
torch.manual_seed(0)
model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()
params = {k: v.numpy() for k, v in model.state_dict().items()}
photo = dict(builtin_photos("val"))["chelsea"]
image = to_tensor(photo[100:164, 20:84])[None]  # (1, 3, 64, 64)

# %% [markdown]
# ## How many entries a row keeps
#
# `k = floor(0.9 c)` as in the original, read as an exact fraction (so `c * 9 // 10`), with one
# change: the original keeps 0 entries when `c = 1`, which masks the whole row and makes the
# softmax NaN; we keep at least 1. The paper preset has `c = 48` channels per head everywhere:
# 43 kept, 5 masked per row.

# %%
widths = [1, 2, 4, 8, 10, 16, 48, 96]
print(f"{'c':>4} {'k (torch)':>10} {'k (reference)':>14} {'original int(c*9/10)':>21}")
for c in widths:
    print(f"{c:>4} {kept_per_row(c):>10} {reference.kept_per_row(c):>14} {int(c * 9 / 10):>21}")

# %% [markdown]
# ## Transposed attention: a channel-by-channel matrix
#
# We take the level-1 DGPB (C = 16 channels, 1 head, so c = 16 and k = 14) while the model
# restores the photo as "noise25", and compute its queries and keys by hand.

# %%
block = model.dgpb1
prompt = model.embed_prompts("noise25")
with torch.no_grad():
    features = model.encoder1(model.embed(image))  # F: (1, 16, 64, 64)
    perturbed = block.perturb(features, prompt)  # Q: (1, 16, 64, 64)
    query, context = block.norm_q(perturbed), block.norm_kv(features)
    attn = block.attn
    q = split_heads(attn.q_dwconv(attn.q(query)), attn.heads)  # (1, 1, 16, 4096)
    k, v = (split_heads(t, attn.heads) for t in attn.kv_dwconv(attn.kv(context)).chunk(2, dim=1))
    logits = channel_logits(q, k, attn.temperature)  # (1, 1, 16, 16)
ref_logits = reference.channel_logits(q.numpy(), k.numpy(), attn.temperature.detach().numpy())
print("q, k:", tuple(q.shape), " logits:", tuple(logits.shape))
print("logits: max |torch - reference| =", float(np.abs(logits.numpy() - ref_logits).max()))

# %% [markdown]
# ## What the top-k mask removes
#
# Left: the logits (cosines between query channel i and key channel j). Middle: the plain
# softmax. Right: the masked softmax; black cells are the two smallest logits of each row, whose
# weights are now exactly 0, and the 14 kept weights of the row are renormalised to sum to 1.

# %%
kept = attn.k
mask = topk_mask(logits, kept)
weights = masked_softmax(logits, kept)
plain = logits.softmax(dim=-1)
ref_mask = reference.topk_mask(logits.numpy(), kept)  # the same float32 logits: the mask must match exactly
ref_weights = reference.masked_softmax(logits.numpy(), kept)

fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
im = axes[0].imshow(logits[0, 0], cmap="RdBu_r", vmin=-1, vmax=1)
axes[0].set_title("logits = cos(q_i, k_j) x temperature")
fig.colorbar(im, ax=axes[0], label="logit")
im = axes[1].imshow(plain[0, 0], cmap="magma")
axes[1].set_title("plain softmax (MDTA)")
fig.colorbar(im, ax=axes[1], label="attention weight")
analysis.plot_attention_map(weights[0, 0], f"masked softmax, k = {kept} of {logits.shape[-1]}", ax=axes[2])
for ax in axes[:2]:
    ax.set_xlabel("key channel")
    ax.set_ylabel("query channel")
plt.show()

row_sums = weights.sum(dim=-1)
print("row sums:", np.round(row_sums[0, 0].numpy(), 6))
print("kept per row:", mask.sum(-1)[0, 0].tolist())

# %% [markdown]
# Masking before the softmax does not change the *ratios* between kept weights: the masked row is
# the plain softmax row restricted to the kept entries and divided by their total. What changes
# is that the mass the weakest channels would have taken is given to the others.

# %%
restricted = plain * mask
renormalised = restricted / restricted.sum(-1, keepdim=True)
print("max |masked softmax - renormalised plain softmax| =", float((weights - renormalised).abs().max()))
print(f"mass the mask takes away from each row: {(plain * ~mask).sum(-1)[0, 0].mean():.3f} on average")

# %% [markdown]
# ## The tie rule
#
# `topk` over equal values has no unique answer. We keep every entry larger than the k-th largest
# value, then the entries *equal* to it from the lowest column index up until k are kept. The
# reference implements the same rule.

# %%
tied = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0]])
print("row        :", tied[0].tolist())
print("k=2  torch :", topk_mask(tied, 2)[0].int().tolist(), " reference:", reference.topk_mask(tied.numpy(), 2)[0].astype(int).tolist())
print("k=4  torch :", topk_mask(tied, 4)[0].int().tolist(), " reference:", reference.topk_mask(tied.numpy(), 4)[0].astype(int).tolist())

# %% [markdown]
# ## The whole CAAPM, and several heads
#
# The level-2 DGPB has C = 32 channels in 2 heads (c = 16 each): each head has its own masked
# matrix. `analysis.attention_map` records the DGPB's input while the model restores an image
# and returns these matrices.

# %%
with torch.no_grad():
    out_torch = attn(query, context)
ref_out = reference.masked_cross_attention(
    query.numpy(), context.numpy(), params, attn.heads, model.config.keep_ratio, "dgpb1.attn."
)
print("CAAPM output: max |torch - reference| =", float(np.abs(out_torch.numpy() - ref_out).max()))

maps = analysis.attention_map(model, image, "noise25", level=2)  # (1, 2, 16, 16)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
for head, ax in enumerate(axes):
    analysis.plot_attention_map(maps[0, head], f"level-2 DGPB, head {head}", ax=ax)
plt.show()

# %% [markdown]
# ## How the kept fraction changes the output
#
# We recompute the level-1 attention core for every k from 1 (each query channel copies a single
# value channel) to c = 16 (no mask, plain transposed attention), with the reference's
# `masked_attention`, and compare with the unmasked output. We also run the *whole* network with
# different `keep_ratio` settings and the same weights.

# %%
qn, kn, vn, temp = q.numpy(), k.numpy(), v.numpy(), attn.temperature.detach().numpy()
c = qn.shape[2]
unmasked = reference.masked_attention(qn, kn, vn, temp, c)
ks = list(range(1, c + 1))
change, entropy = [], []
for kk in ks:
    out_k = reference.masked_attention(qn, kn, vn, temp, kk)
    change.append(float(np.linalg.norm(out_k - unmasked) / np.linalg.norm(unmasked)))
    w = reference.masked_softmax(logits.numpy().astype(np.float64), kk)
    entropy.append(float(-(w * np.log(np.where(w > 0, w, 1))).sum(-1).mean()))

ratios = [0.25, 0.5, 0.75, 0.9, 1.0]
model_change = []
with torch.no_grad():
    full = analysis.ablate(model, "no_mask").restore(image, "noise25")
    for r in ratios:
        variant = dfpir.DFPIR(model.config.replace(keep_ratio=r), prompts=model.prompts)
        variant.load_state_dict(model.state_dict())
        model_change.append(float((variant.restore(image, "noise25") - full).norm() / full.norm()))

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), layout="constrained")
axes[0].plot(ks, change, "o-")
axes[0].axvline(kept, color="gray", linestyle="--", label=f"default k = {kept}")
axes[0].set_xlabel("entries kept per row (k)")
axes[0].set_ylabel("relative change of the attention output")
axes[0].set_title("level-1 attention vs. unmasked")
axes[0].legend()
axes[1].plot(ks, entropy, "o-", color="tab:green")
axes[1].axhline(np.log(c), color="gray", linestyle=":", label="uniform row (log c)")
axes[1].set_xlabel("entries kept per row (k)")
axes[1].set_ylabel("mean row entropy (nats)")
axes[1].set_title("how spread the attention is")
axes[1].legend()
axes[2].plot(ratios, model_change, "o-", color="tab:red")
axes[2].set_xlabel("keep_ratio (all four DGPBs)")
axes[2].set_ylabel("relative change of the restored image")
axes[2].set_title("whole network vs. keep_ratio = 1")
plt.show()
print({f"{r}": round(x, 4) for r, x in zip(ratios, model_change)})

# %% [markdown]
# With random weights the temperature is 1 and all logits are cosines in [-1, 1], so the plain
# softmax is nearly uniform (entropy close to log c) and masking 2 of 16 entries moves the output
# only a little; the smaller k, the larger the change. Training sharpens the rows (the temperature
# is learnt), and the mask then cuts the weakest channel correlations entirely.
#
# ## What this notebook showed (checked)

# %%
assert [kept_per_row(c) for c in widths] == [reference.kept_per_row(c) for c in widths] == [1, 1, 3, 7, 9, 14, 43, 86]
np.testing.assert_allclose(logits.numpy(), ref_logits, atol=1e-5)  # transposed attention logits
assert np.array_equal(mask.numpy(), ref_mask)  # same mask from the same logits
assert (mask.sum(-1) == kept).all()  # exactly k kept in every row
np.testing.assert_allclose(weights.numpy(), ref_weights, atol=1e-6)
torch.testing.assert_close(row_sums, torch.ones_like(row_sums))  # masked rows sum to 1
assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()  # masked entries exactly 0, kept ones positive
torch.testing.assert_close(weights, renormalised)  # = plain softmax restricted and renormalised
assert topk_mask(tied, 2)[0].tolist() == [False, True, True, False, False, False]  # ties: lower index first
assert np.array_equal(topk_mask(tied, 4).numpy(), reference.topk_mask(tied.numpy(), 4))
np.testing.assert_allclose(out_torch.numpy(), ref_out, atol=1e-5)  # the whole CAAPM
torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
assert ((maps == 0).sum(-1) == 16 - kept_per_row(16)).all()  # every head masks 2 of 16
assert change[-1] == 0.0 and change[0] > change[kept - 1] > 0  # k = c is no mask; fewer kept, bigger change
assert entropy[0] == 0.0 and entropy[-1] > entropy[kept - 1] > entropy[0]  # k = 1 is a one-hot row
assert model_change[-1] == 0.0 and model_change[0] > model_change[3] > 0
print("all checks passed")
