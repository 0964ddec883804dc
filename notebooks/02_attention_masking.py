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
# *cross attention over channels* (CAAPM), and masks the lowest logits of every attention row:
#
# 1. `q = dwconv(conv1x1(LN(Q)))`, `k, v = split(dwconv(conv1x1(LN(F))))`, reshaped per head to
#    (c, H*W): **one row per channel**, the pixels are the feature axis;
# 2. `logits = normalise(q) @ normalise(k)^T * temperature`, a (c x c) matrix of scaled cosines;
# 3. **top-k mask**: in each row keep the `k = max(1, floor(0.9 c))` largest logits and set the
#    others to `-inf` *before* the softmax (so the softmax renormalises over the kept entries);
# 4. `A = softmax(masked logits) @ v`, times a learnable scalar (init 0.2), then a 1x1 conv.
#
# We start with a 4 x 4 attention map small enough to check by hand, then put PyTorch (`dfpir`)
# and the NumPy oracle (`reference`) side by side on a real photo, and end with one measurement
# on trained weights: how much the masked cells change with the degradation.
#
# **What the network and the prompts are here.** Until the last section the network is
# **untrained**: the `tiny` preset with its random initialisation (`torch.manual_seed(0)`), so
# every temperature is still 1. The prompt embeddings are **not CLIP's** (the original encodes
# its prompt texts with CLIP ViT-B/32): they come from `dfpir`'s own `HashingTextEncoder`
# (`dfpir/model/prompts.py`), which gives every lower-cased word of the registry's prompt text
# (e.g. "Gaussian noise with a standard deviation of 25") a 512-d standard Gaussian vector seeded
# by the word's SHA-256 digest and sums them, divided by the square root of the number of words.
# Two texts are close exactly when they share words.

# %%
import itertools

import matplotlib.pyplot as plt
import numpy as np
import torch

import dfpir
import reference
from dfpir import analysis
from dfpir.data import builtin_photos, degraded_patch, to_tensor
from dfpir.inference.runner import DEMO_WEIGHTS
from dfpir.model.attention import channel_logits, split_heads
from dfpir.model.masked_attention import kept_per_row, masked_softmax, topk_mask
from dfpir.model.prompts import HashingTextEncoder

torch.set_num_threads(1)
torch.manual_seed(0)
model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()  # untrained
params = {k: v.numpy() for k, v in model.state_dict().items()}
photo = dict(builtin_photos("val"))["chelsea"]
image = to_tensor(photo[100:164, 20:84])[None]  # (1, 3, 64, 64)
MASKED = "tab:red"  # masked cells get a colour of their own, outside the weights' colour map


def draw_attention(ax, weights, mask, title: str, annotate: bool = False) -> None:
    """One (c, c) map of attention weights; cells where ``mask`` is False (masked) are drawn red."""
    w = np.asarray(weights, dtype=float)
    cmap = plt.get_cmap("viridis").with_extremes(bad=MASKED)
    im = ax.imshow(np.ma.masked_array(w, ~np.asarray(mask)), cmap=cmap, vmin=0, interpolation="nearest")
    if annotate:
        for (i, j), value in np.ndenumerate(w):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < 0.5 * w.max() else "black", fontsize=9)
    masked = int((~np.asarray(mask)).sum())
    ticks = range(0, len(w), 1 if len(w) <= 8 else 4)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_title(f"{title}\n({'red: masked, ' if masked else ''}{masked} of {w.size} masked)", fontsize=10)
    ax.set_xlabel("key channel")
    ax.set_ylabel("query channel")
    ax.figure.colorbar(im, ax=ax, label="attention weight")


# %% [markdown]
# ## A 4 x 4 map by hand
#
# Four query channels and four key channels, each with only two pixels, so each channel is a
# 2-d vector. The keys point east, north, west and south; the queries point the same ways with
# other lengths (the cosine ignores length):
#
# ```
# k = (1, 0), (0, 2), (-3, 0), (0, -4)        q = (2, 0), (0, 0.5), (-1, 0), (0, -3)
# ```
#
# With temperature 1, `logits[i, j] = cos(q_i, k_j)`: 1 for the same direction, 0 at a right
# angle, -1 for opposite directions, so row 0 is `(1, 0, -1, 0)` and each next row is shifted by
# one. With c = 4 a row keeps `k = floor(0.9 x 4) = 3` entries and masks one: the `-1`, the key
# channel *most anti-correlated* with the query, while the two uncorrelated ones (cosine 0) stay.
# The masked row-0 weights are therefore `(e, 1, 0, 1) / (e + 2)` = (0.576, 0.212, 0, 0.212);
# without the mask they would be `(e, 1, 1/e, 1) / (e + 2 + 1/e)` = (0.534, 0.197, 0.072, 0.197).
# With values `v_j = (10^j, 10^j)` the first output channel is `(e + 10 + 1000) / (e + 2)` = 214.6
# at both pixels: the 100 of the masked channel 2 plays no part.

# %%
toy_k = np.array([[1, 0], [0, 2], [-3, 0], [0, -4]], dtype=np.float32)[None, None]  # (B=1, heads=1, c=4, HW=2)
toy_q = np.array([[2, 0], [0, 0.5], [-1, 0], [0, -3]], dtype=np.float32)[None, None]
toy_v = np.repeat(10.0 ** np.arange(4, dtype=np.float32)[:, None], 2, axis=1)[None, None]  # v_j = (10^j, 10^j)
toy_temperature = np.ones((1, 1, 1), dtype=np.float32)
toy_kept = kept_per_row(4)
toy_logits = channel_logits(*(torch.from_numpy(a) for a in (toy_q, toy_k, toy_temperature)))  # (1, 1, 4, 4)
ref_toy_logits = reference.channel_logits(toy_q, toy_k, toy_temperature)
toy_mask = topk_mask(toy_logits, toy_kept)
toy_weights = masked_softmax(toy_logits, toy_kept)
ref_toy_weights = reference.masked_softmax(ref_toy_logits, toy_kept)
toy_plain = toy_logits.softmax(dim=-1)
toy_out = reference.masked_attention(toy_q, toy_k, toy_v, toy_temperature, toy_kept)  # (1, 1, 4, 2)
print(f"k = {toy_kept} kept per row")
print("logits (dfpir):\n", toy_logits[0, 0].numpy(), "\nlogits (reference):\n", ref_toy_logits[0, 0])
print("masked weights, row 0:", np.round(toy_weights[0, 0, 0].numpy(), 3), " without the mask:", np.round(toy_plain[0, 0, 0].numpy(), 3))
print("output channel 0:", toy_out[0, 0, 0])

fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
im = axes[0].imshow(toy_logits[0, 0], cmap="RdBu_r", vmin=-1, vmax=1)
for (i, j), value in np.ndenumerate(toy_logits[0, 0].numpy()):
    axes[0].text(j, i, f"{value:+.0f}", ha="center", va="center", color="white" if abs(value) > 0.5 else "black")
axes[0].set_xticks(range(4))
axes[0].set_yticks(range(4))
axes[0].set_title("logits = cos(q_i, k_j)")
axes[0].set_xlabel("key channel")
axes[0].set_ylabel("query channel")
fig.colorbar(im, ax=axes[0], label="logit")
draw_attention(axes[1], toy_plain[0, 0], np.ones((4, 4), bool), "softmax without the mask", annotate=True)
draw_attention(axes[2], toy_weights[0, 0], toy_mask[0, 0], f"masked softmax, k = {toy_kept} of 4", annotate=True)
plt.show()

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
# Left: the logits (cosines between query channel i, from the perturbed features `Q`, and key
# channel j, from the block input `F`). Middle: the softmax of the *same cross-attention logits*
# without the mask (what `keep_ratio=1`, the `no_mask` ablation, computes; it is not Restormer's
# MDTA, which takes queries, keys and values all from one tensor). Right: the masked softmax; red
# cells are the two smallest logits of each row, whose weights are now exactly 0, and the 14 kept
# weights of the row are renormalised to sum to 1.

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
axes[0].set_xlabel("key channel")
axes[0].set_ylabel("query channel")
draw_attention(axes[1], plain[0, 0], torch.ones_like(mask[0, 0]), "softmax of the same logits, no mask")
draw_attention(axes[2], weights[0, 0], mask[0, 0], f"masked softmax, k = {kept} of {logits.shape[-1]}")
plt.show()

row_sums = weights.sum(dim=-1)
print("row sums:", np.round(row_sums[0, 0].numpy(), 6))
print("kept per row:", mask.sum(-1)[0, 0].tolist())

# %% [markdown]
# Masking before the softmax does not change the *ratios* between kept weights: the masked row is
# the unmasked softmax row restricted to the kept entries and divided by their total. What
# changes is that the mass the lowest-logit channels would have taken is given to the others.

# %%
restricted = plain * mask
renormalised = restricted / restricted.sum(-1, keepdim=True)
print("max |masked softmax - renormalised unmasked softmax| =", float((weights - renormalised).abs().max()))
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
    draw_attention(ax, maps[0, head], maps[0, head] > 0, f"level-2 DGPB, head {head}")
plt.show()

# %% [markdown]
# ## How the kept fraction changes the output
#
# We recompute the level-1 attention core for every k from 1 (each query channel copies a single
# value channel) to c = 16 (no mask: the unmasked cross attention), with the reference's
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
        variant = dfpir.DFPIR(model.config.replace(keep_ratio=r), prompts=model.prompts).eval()  # as `model`: same code path
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
print(
    f"Untrained, the temperature is {attn.temperature.item():.0f} and the logits are cosines in [-1, 1]: the unmasked rows' "
    f"mean entropy is {entropy[-1]:.3f} nats, {entropy[-1] / np.log(c):.1%} of a uniform row's log c = {np.log(c):.3f}. "
    f"The default k = {kept} changes this attention output by {change[kept - 1]:.1%} and the restored image by "
    f"{model_change[ratios.index(0.9)]:.1%}; k = 1 changes the attention output by {change[0]:.1%}."
)

# %% [markdown]
# ## Does the mask follow the degradation? One measurement on trained weights
#
# Now the weights shipped with the package (`dfpir/weights/demo.safetensors`: the `tiny` preset
# trained for 7000 steps on 38 freely licensed photos with all seven synthetic degradations; see
# the results page). They use the faithful guidance, so their DGMs kept their
# random initialisation (notebook 1): each prompt selects a fixed pseudo-random channel order, and everything else was
# trained. Every DGPB of `tiny` has c = 16 channels per head and masks 2 of each row's 16 cells.
#
# We take a 48 x 48 centre crop of the right-hand strip of each of the 8 built-in pictures,
# degrade it with each of the 7 degradations, and record which cells each DGPB's mask removes while the model restores it with
# the matching prompt. For two masks A and B the **mask change** is the fraction of A's masked
# cells that B keeps: 0 when the same cells are masked, 1 when none are in common, and
# 1 - 2/16 = 0.875 on average for two masks drawn at random. We compare it
#
# - **between degradations**: one photo, two degradations (the input and the prompt both change);
# - **between photos**: one degradation, two photos;
# - **prompt only**: one degraded input, two prompts (one input per photo, photo p degraded with
#   the (p mod 7)-th degradation, under every pair of prompts). The keys and values come from the
#   block's input, which the encoder computes without the prompt, so only the queries change.
#
# We also look at *which* entries the mask removes: the cosines of the masked entries against
# those of the kept ones. The verdicts printed below are chosen by the numbers of this run.

# %%
trained = dfpir.load(DEMO_WEIGHTS).eval()
names = trained.prompts.names  # the 7 degradations
val_photos = builtin_photos("val")
CROP = 48
crops = []  # photo-major, then degradation
for p, (_, clean) in enumerate(val_photos):
    top, left = (clean.shape[0] - CROP) // 2, (clean.shape[1] - CROP) // 2
    crops += [degraded_patch(clean, top, left, CROP, name, np.random.default_rng([7, p, d]))[0] for d, name in enumerate(names)]
inputs = torch.stack(crops)  # (8 * 7, 3, 48, 48)
with torch.no_grad():  # the four DGPB inputs: encoder features, which do not depend on the prompt
    f1 = trained.encoder1(trained.embed(inputs))
    f2 = trained.encoder2(trained.down1(f1))
    f3 = trained.encoder3(trained.down2(f2))
    features_by_level = {1: f1, 2: f2, 3: f3, 4: trained.latent(trained.down3(f3))}


def masks_and_cosines(features: dict[int, torch.Tensor], prompt_names: list[str]) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per DGPB level: which cells the mask removes, and the cosines, (N, heads, 16, 16) each."""
    masked, cosines = {}, {}
    prompts = trained.embed_prompts(prompt_names)
    with torch.no_grad():
        for level, f in features.items():
            block = getattr(trained, f"dgpb{level}")
            attn_ = block.attn
            q_ = split_heads(attn_.q_dwconv(attn_.q(block.norm_q(block.perturb(f, prompts)))), attn_.heads)  # (N, heads, c, HW)
            k_, _ = attn_.kv_dwconv(attn_.kv(block.norm_kv(f))).chunk(2, dim=1)
            logits_ = channel_logits(q_, split_heads(k_, attn_.heads), attn_.temperature)  # (N, heads, c, c)
            masked[level] = ~topk_mask(logits_, attn_.k)
            cosines[level] = logits_ / attn_.temperature  # a positive scale: the same cells are masked
    return masked, cosines


def mask_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fraction of a's masked cells that b keeps, per pair: (..., heads, c, c) -> (...)."""
    return (a & ~b).flatten(-3).sum(-1) / a.flatten(-3).sum(-1)


n_photos, n_names = len(val_photos), len(names)
own, own_cos = masks_and_cosines(features_by_level, [name for _ in val_photos for name in names])  # each input, its own prompt
one_each = [p * n_names + p % n_names for p in range(n_photos)]  # one input per photo: photo p under degradation p mod 7
subset = {level: f[one_each] for level, f in features_by_level.items()}
swapped = [masks_and_cosines(subset, [name] * len(one_each))[0] for name in names]  # those inputs with every prompt
deg_pairs = list(itertools.combinations(range(n_names), 2))
photo_pairs = list(itertools.combinations(range(n_photos), 2))
rows = {}
for level in features_by_level:
    m = own[level].reshape(n_photos, n_names, *own[level].shape[1:])  # (photo, degradation, heads, c, c)
    between_degradations = torch.stack([mask_change(m[:, d], m[:, e]) for d, e in deg_pairs]).mean()
    between_photos = torch.stack([mask_change(m[p], m[q]) for p, q in photo_pairs]).mean()
    prompt_only = torch.stack([mask_change(swapped[d][level], swapped[e][level]) for d, e in deg_pairs]).mean()
    rows[level] = (float(between_degradations), float(between_photos), float(prompt_only))
measure = np.array(list(rows.values()))  # (4 levels, 3 comparisons)

print(f"{'DGPB':>5} {'between degradations':>21} {'between photos':>15} {'prompt only':>12}   (random masks: 0.875)")
for level, (bd, bp, po) in rows.items():
    print(f"{level:>5} {bd:>21.3f} {bp:>15.3f} {po:>12.3f}")
mean_bd, mean_bp, mean_po = measure.mean(axis=0)
print(f"{'mean':>5} {mean_bd:>21.3f} {mean_bp:>15.3f} {mean_po:>12.3f}")

masked_cos = torch.cat([own_cos[level][own[level]] for level in features_by_level])
kept_cos = torch.cat([own_cos[level][~own[level]] for level in features_by_level])
negative = float((masked_cos < 0).float().mean())

fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), layout="constrained")
x = np.arange(4)
for i, (label, colour) in enumerate([("between degradations", "tab:purple"), ("between photos", "tab:blue"), ("prompt only", "tab:orange")]):
    axes[0].bar(x + (i - 1) * 0.27, measure[:, i], 0.27, label=label, color=colour)
axes[0].axhline(1 - 2 / 16, color="gray", linestyle=":", label="two random masks")
axes[0].set_xticks(x, [f"DGPB {level}" for level in features_by_level])
axes[0].set_ylabel("mask change (0: same cells)")
axes[0].set_title("how much the masked cells change (demo weights)")
axes[0].set_ylim(0, 1)
axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=4)
bins = np.linspace(-1, 1, 41)
axes[1].hist(kept_cos.numpy(), bins, density=True, alpha=0.6, label="kept entries")
axes[1].hist(masked_cos.numpy(), bins, density=True, alpha=0.6, color=MASKED, label="masked entries")
axes[1].set_xlabel("cos(q_i, k_j)")
axes[1].set_ylabel("density")
axes[1].set_title("which entries the mask removes (all four DGPBs)")
axes[1].legend()
plt.show()

order_word = "less" if mean_bp < mean_bd else "more"
print(
    f"On the same photo, changing the degradation changes {mean_bd:.0%} of the masked cells on average over the four DGPBs; "
    f"changing the photo under one degradation changes {mean_bp:.0%}, {order_word} than changing the degradation. "
    f"Changing only the prompt, on the same input, changes {mean_po:.0%} ({mean_po / mean_bd:.0%} of the change between degradations; "
    f"random masks: {1 - 2 / 16:.0%}), "
    + ("so most of that change comes with the prompt alone. These DGMs were never trained, so what a prompt brings is the "
       "pseudo-random channel order its embedding selects; the rest of the block was trained with those orders."
       if mean_po >= 0.5 * mean_bd else
       "so most of that change comes from the degraded input rather than from the prompt.")
)
print(
    f"The masked entries have a mean cosine of {masked_cos.mean():+.2f} against {kept_cos.mean():+.2f} for the kept ones; "
    f"{int((masked_cos < 0).sum())} of the {masked_cos.numel()} ({negative:.1%}) are negative: the mask removes each row's lowest logits, "
    + (f"which here are {'all' if negative == 1 else 'mostly'} anti-correlated channel pairs (negative cosines), "
       "not uncorrelated ones (cosines near 0)." if negative > 0.5 else "which here are mostly not anti-correlated pairs.")
)

# %% [markdown]
# ## What this notebook showed (checked)

# %%
encoder = HashingTextEncoder(512)  # both banks hold the project's hashing encoder's embeddings, not CLIP's
assert all(np.array_equal(bank[n], encoder(bank.texts[n])) for bank in (model.prompts, trained.prompts) for n in names)
# the 4 x 4 map, against the values derived by hand
e = np.e
assert toy_kept == 3
expected_logits = np.array([[1, 0, -1, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, -1, 0, 1]])
np.testing.assert_allclose(toy_logits[0, 0].numpy(), expected_logits, atol=1e-6)
np.testing.assert_allclose(ref_toy_logits[0, 0], expected_logits, atol=1e-6)
assert np.array_equal(toy_mask[0, 0].numpy(), expected_logits != -1)  # the masked cell is the -1: the most anti-correlated key
np.testing.assert_allclose(toy_weights[0, 0, 0].numpy(), np.array([e, 1, 0, 1]) / (e + 2), rtol=1e-6)
np.testing.assert_allclose(toy_plain[0, 0, 0].numpy(), np.array([e, 1, 1 / e, 1]) / (e + 2 + 1 / e), rtol=1e-6)
np.testing.assert_allclose(ref_toy_weights, toy_weights.numpy(), atol=1e-7)
np.testing.assert_allclose(toy_out[0, 0, 0], (e + 1010) / (e + 2), rtol=1e-6)  # the masked v_2 = 100 plays no part
# the photo, untrained
assert [kept_per_row(c) for c in widths] == [reference.kept_per_row(c) for c in widths] == [1, 1, 3, 7, 9, 14, 43, 86]
np.testing.assert_allclose(logits.numpy(), ref_logits, atol=1e-5)  # transposed attention logits
assert np.array_equal(mask.numpy(), ref_mask)  # same mask from the same logits
assert (mask.sum(-1) == kept).all()  # exactly k kept in every row
np.testing.assert_allclose(weights.numpy(), ref_weights, atol=1e-6)
torch.testing.assert_close(row_sums, torch.ones_like(row_sums))  # masked rows sum to 1
assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()  # masked entries exactly 0, kept ones positive
torch.testing.assert_close(weights, renormalised)  # = unmasked softmax restricted and renormalised
assert topk_mask(tied, 2)[0].tolist() == [False, True, True, False, False, False]  # ties: lower index first
assert np.array_equal(topk_mask(tied, 4).numpy(), reference.topk_mask(tied.numpy(), 4))
np.testing.assert_allclose(out_torch.numpy(), ref_out, atol=1e-5)  # the whole CAAPM
torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
assert ((maps == 0).sum(-1) == 16 - kept_per_row(16)).all()  # every head masks 2 of 16
assert change[-1] == 0.0 and change[0] > change[kept - 1] > 0  # k = c is no mask; fewer kept, bigger change
assert entropy[0] == 0.0 and entropy[-1] > entropy[kept - 1] > entropy[0]  # k = 1 is a one-hot row
assert model_change[-1] == 0.0 and model_change[0] > model_change[3] > 0
# the measurement on the demo weights
assert trained.config.guidance == "faithful"  # the prose above: these DGMs were never trained
assert all((m.sum(-1) == 2).all() for m in own.values())  # 2 masked per row of 16
assert all(torch.equal(swapped[p % n_names][level][p], own[level][i]) for p, i in enumerate(one_each) for level in own)  # same input, same prompt, same mask
assert ((measure >= 0) & (measure <= 1)).all() and (measure[:, 1] > 0).all()  # masks do differ between photos
assert (masked_cos.max() <= 1 + 1e-5) and masked_cos.mean() < kept_cos.mean()  # the mask removes the lowest logits
print("all checks passed")
