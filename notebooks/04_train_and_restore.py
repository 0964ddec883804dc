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
# # 4. Train and restore, end to end
#
# A complete, very short run of `dfpir.train` on the photographs that ship with scikit-image,
# degraded on the fly: configuration, training, the loss curve, the validation table, then the
# saved checkpoint loaded back to restore held-out images, and the blind classifier that guesses
# the degradation. Everything is written to a temporary folder.
#
# The run is deliberately tiny (the `tiny` preset, 32 x 32 crops, 60 steps of 4 crops, four
# degradations) so that it trains in well under a minute on one CPU thread (the time is printed
# below). It shows the machinery, not DFPIR's quality: the weights shipped in the package
# (`dfpir/weights/demo.safetensors`, used by `make demo`) were trained by the same code for 7000
# steps on all seven degradations and 38 freely licensed photos from `make corpus`
# (`python -m dfpir.train --preset weights`; the results page says how well they do).

# %%
import json
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import dfpir
from dfpir import analysis, train
from dfpir.checkpoint import load_classifier
from dfpir.data import builtin_photos, degraded_patch, validation_set
from dfpir.metrics import psnr
from dfpir.train import resolve

torch.set_num_threads(1)
out_dir = Path(tempfile.mkdtemp(prefix="dfpir_tutorial_"))
DEGRADATIONS = ["noise50", "rain", "haze", "lowlight"]
STEPS = 60

# %% [markdown]
# ## The configuration
#
# `resolve(preset, config_file, overrides)` is what `python -m dfpir.train` calls: the `demo`
# preset plus `section.key=value` overrides. The same run from a shell:
# `python -m dfpir.train model.preset=tiny data.patch_size=32 ... train.out_dir=DIR`.

# %%
overrides = [
    "model.preset=tiny",
    "data.patch_size=32",
    f"data.degradations={json.dumps(DEGRADATIONS)}",
    "data.val_crop=48",
    "data.val_patches_per_image=1",
    "optim.batch_size=4",
    "optim.lr=3e-3",
    "optim.warmup_steps=5",  # the demo preset warms up over 100 steps: longer than this whole run
    "train.ema_decay=0",  # no weight averaging over so few steps
    f"train.steps={STEPS}",
    f"train.val_every={STEPS}",
    f"train.ckpt_every={STEPS}",
    "train.log_every=1",
    "train.threads=1",
    f"train.out_dir={out_dir}",
]
cfg = resolve("demo", overrides=overrides)
print(cfg.to_toml())

# %% [markdown]
# ## Training
#
# `train.run` trains, validates on fixed crops of the *held-out* strip of each photo, writes
# `metrics.jsonl`, `best.safetensors`, `last.safetensors` and `config.toml`, and returns the
# validation table.

# %%
t0 = time.perf_counter()
table = train.run(cfg)
print(f"trained {STEPS} steps in {time.perf_counter() - t0:.0f} s; files: {sorted(p.name for p in out_dir.iterdir())}")

# %% [markdown]
# ## The loss curve
#
# One record per step in `metrics.jsonl`. Each batch holds 4 crops of random degradations, so the
# loss jumps from step to step; the moving average shows the trend.

# %%
records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
steps = np.array([r["step"] for r in records if "loss" in r])
losses = np.array([r["loss"] for r in records if "loss" in r])
window = 10
smooth = np.convolve(losses, np.ones(window) / window, mode="valid")

fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
ax.plot(steps, losses, ".", alpha=0.5, label="per step")
ax.plot(steps[window - 1 :], smooth, "-", linewidth=2, label=f"moving average ({window} steps)")
ax.set_xlabel("step")
ax.set_ylabel("training loss (L1 + 0.1 x classifier CE)")
ax.set_title("training loss")
ax.legend()
plt.show()

# %% [markdown]
# ## The validation table
#
# PSNR and SSIM of the degraded input and of the restored image against the clean crop, per
# degradation, and the classifier's accuracy. For comparison we also evaluate an *untrained*
# network of the same architecture, seeded with `train.seed`. It is not the run's exact starting
# point (the run draws its classifier's weights first), only a network of the same kind before
# any training.

# %%
print(train.format_table(table))

torch.manual_seed(cfg.train.seed)
untrained = dfpir.DFPIR(dfpir.get_config(cfg.model.preset)).eval()
val = validation_set(builtin_photos("val"), DEGRADATIONS, cfg.data.val_crop, cfg.data.val_patches_per_image, cfg.train.seed + 1)
model = dfpir.load(out_dir / "best.safetensors")
classifier = load_classifier(out_dir / "best.safetensors")


def mean_psnr(net, degradation):
    with torch.no_grad():
        return float(np.mean([psnr(net.restore(s["input"][None], degradation)[0], s["target"]) for s in val if s["degradation"] == degradation]))


before = {d: mean_psnr(untrained, d) for d in DEGRADATIONS}
after = {d: mean_psnr(model, d) for d in DEGRADATIONS}
xs = np.arange(len(DEGRADATIONS))
fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
ax.bar(xs - 0.27, [table[d]["input_psnr"] for d in DEGRADATIONS], 0.27, label="degraded input", color="0.6")
ax.bar(xs, [before[d] for d in DEGRADATIONS], 0.27, label="untrained network", color="tab:orange")
ax.bar(xs + 0.27, [after[d] for d in DEGRADATIONS], 0.27, label=f"after {STEPS} steps", color="tab:blue")
ax.set_xticks(xs, DEGRADATIONS)
ax.set_ylabel("PSNR (dB)")
ax.set_title("validation PSNR per degradation (held-out crops)")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ## Before and after, for every degradation
#
# One held-out 96 x 96 crop, degraded four ways (the same clean crop in every column; each
# degradation is drawn over the crop plus its context, then cut, as in training). The restored
# image is computed by the checkpoint loaded back from disk with `dfpir.load`. The classifier's
# guess (it never sees the prompt) is in the bottom row's titles. The sentences under the figure
# compare the trained network with its input, from the validation table and from this crop.

# %%
clean_photo = builtin_photos("val")[0][1]
box = ((clean_photo.shape[0] - 96) // 2, (clean_photo.shape[1] - 96) // 2)  # the centre of the held-out strip
demo = []
for d, name in enumerate(DEGRADATIONS):
    x, y = degraded_patch(clean_photo, *box, 96, name, np.random.default_rng([7, d]))
    demo.append(dict(input=x, target=y, degradation=name))
fig, axes = plt.subplots(3, len(demo), figsize=(3 * len(demo), 9.3), layout="constrained")
choices, restored_crops = {}, {}
for col, s in enumerate(demo):
    x = s["input"][None]
    with torch.no_grad():
        restored = model.restore(x, s["degradation"])[0].clamp(0, 1)
    restored_crops[s["degradation"]] = restored
    guess, confidence = classifier.predict(x)
    choices[s["degradation"]] = (guess[0], float(confidence[0]))
    for row, (img, title) in enumerate([
        (s["target"], "clean"),
        (s["input"], f"{s['degradation']}: {psnr(s['input'], s['target']):.1f} dB"),
        (restored, f"restored: {psnr(restored, s['target']):.1f} dB\nclassifier: {guess[0]} ({confidence[0]:.0%})"),
    ]):
        axes[row, col].imshow(img.permute(1, 2, 0).numpy())
        axes[row, col].set_title(title, fontsize=10)
        axes[row, col].axis("off")
fig.suptitle(f"one held-out crop: clean, degraded four ways, restored by the {STEPS}-step model")
plt.show()


def verdict(gain: float, tolerance: float) -> str:
    """'better', 'worse' or 'about the same' for a PSNR gain (dB) or an SSIM change."""
    return "better" if gain > tolerance else "worse" if gain < -tolerance else "about the same"


crop_gain = {s["degradation"]: psnr(restored_crops[s["degradation"]], s["target"]) - psnr(s["input"], s["target"]) for s in demo}
for d in DEGRADATIONS:
    row = table[d]
    print(
        f"{d:>9}: validation PSNR {row['input_psnr']:.2f} -> {row['psnr']:.2f} dB ({row['psnr'] - row['input_psnr']:+.2f}, "
        f"{verdict(row['psnr'] - row['input_psnr'], 0.1)}), SSIM {row['input_ssim']:.3f} -> {row['ssim']:.3f} "
        f"({verdict(row['ssim'] - row['input_ssim'], 0.005)}); this crop {crop_gain[d]:+.2f} dB"
    )
gains = {d: table[d]["psnr"] - table[d]["input_psnr"] for d in DEGRADATIONS}
worse_psnr = [d for d in DEGRADATIONS if gains[d] < -0.1]
worse_ssim = [d for d in DEGRADATIONS if table[d]["ssim"] < table[d]["input_ssim"] - 0.005]
best = max(gains, key=gains.get)
print(
    f"After {STEPS} steps the largest PSNR gain is on {best} ({gains[best]:+.2f} dB). "
    + (f"PSNR fell on {', '.join(worse_psnr)} ({', '.join(f'{gains[d]:+.2f} dB' for d in worse_psnr)}). " if worse_psnr else "PSNR fell on no degradation. ")
    + (f"SSIM fell on {', '.join(worse_ssim)}. " if worse_ssim else "SSIM fell on no degradation. ")
    + f"On this one crop the restored image is worse than its input for {sum(g < 0 for g in crop_gain.values())} of {len(crop_gain)} degradations."
)

# %% [markdown]
# ## The blind classifier
#
# DFPIR itself is non-blind: it needs the true degradation's prompt. The classifier trained
# alongside it (`python -m dfpir.restore --degradation auto`) guesses it from the image; it also
# has a `clean` class, learnt from undegraded crops, so that a photo with nothing to fix can be
# left as it is. Its confusion matrix on the validation crops (the clean row: one undegraded
# crop per degraded one of a degradation), and how many of the degraded ones it got right, after
# only 60 steps:

# %%
CLASSES = classifier.classes  # the degradations, then "clean"
shown = [(s["input"], s["degradation"]) for s in val]
if "clean" in CLASSES:
    shown += [(s["target"], "clean") for s in val if s["degradation"] == DEGRADATIONS[0]]
confusion = np.zeros((len(CLASSES), len(CLASSES)))
with torch.no_grad():
    names, _ = classifier.predict(torch.stack([x for x, _ in shown]))
for (_, true), name in zip(shown, names):
    confusion[CLASSES.index(true), CLASSES.index(name)] += 1
confusion /= confusion.sum(axis=1, keepdims=True)
fig = analysis.plot_matrix(confusion, CLASSES, "classifier: true (rows) vs chosen (columns)", vmin=0, vmax=1, cmap="Blues", colorbar_label="fraction of crops")
fig.axes[0].set_xlabel("chosen")
fig.axes[0].set_ylabel("true degradation")
plt.show()
correct = sum(s["degradation"] == name for s, name in zip(val, names))  # the degraded crops come first
per_class = len(val) // len(DEGRADATIONS)
print(f"right on {correct} of {len(val)} validation crops ({correct / len(val):.0%}; {per_class} crops per degradation, so each row's fractions move in steps of {1 / per_class:.1%})")
for d, (guess, conf) in choices.items():
    print(f"{d:>9}: on the crop above the classifier chose {guess} ({conf:.0%})")

# %% [markdown]
# ## Any size
#
# The network pads to a multiple of 8 and crops back, so any H x W comes out at its own size.

# %%
odd = demo[0]["input"][None, :, :50, :70]
with torch.no_grad():
    odd_restored = model.restore(odd, "noise50")
print("input", tuple(odd.shape), "-> restored", tuple(odd_restored.shape))

# %% [markdown]
# ## What this notebook showed (checked)

# %%
assert {"best.safetensors", "last.safetensors", "metrics.jsonl", "config.toml"} <= {p.name for p in out_dir.iterdir()}
assert len(losses) == STEPS and np.isfinite(losses).all()  # one loss per step
assert set(table) == set(DEGRADATIONS)
for d in DEGRADATIONS:  # the checkpoint on disk reproduces the table the run printed
    assert abs(after[d] - table[d]["psnr"]) < 1e-3, d
mean_input = np.mean([table[d]["input_psnr"] for d in DEGRADATIONS])
mean_after = np.mean(list(after.values()))
assert mean_after > np.mean(list(before.values()))  # training helped
assert mean_after > mean_input  # on average the trained model beats its input
assert all(torch.equal(s["target"], demo[0]["target"]) for s in demo)  # one clean crop, degraded four ways
assert [s["degradation"] for s in demo] == DEGRADATIONS
assert all(g in CLASSES and 0 < c <= 1 for g, c in choices.values())
assert correct == round(sum(table[d]["accuracy"] for d in DEGRADATIONS) * per_class)  # the classifier on disk matches the table
assert np.allclose(confusion.sum(axis=1), 1)
assert odd_restored.shape == odd.shape
print(f"mean PSNR: input {mean_input:.2f} dB, untrained {np.mean(list(before.values())):.2f} dB, trained {mean_after:.2f} dB")
print("all checks passed")
