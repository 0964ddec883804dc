"""``python -m dfpir.train.refit_classifier``: the classifier retrained alone, the restorer copied as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import dfpir
from dfpir.checkpoint import load, load_classifier, read, save, write_safetensors
from dfpir.images import write_image
from dfpir.model.classifier import CLEAN, STATISTICS, DegradationClassifier, top_share_mean, with_pooling
from dfpir.train import refit_classifier as refit
from dfpir.train.classifier import SHARP_SHARE, depth_of_field, disc_kernel

NAMES = ["noise25", "rain", "blur"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six small textured photos: a clean layout folder (every 3rd file is the validation split)."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:72, 0:80] / 80
    for i in range(6):
        rgb = np.stack([0.5 + 0.4 * np.sin((5 + i) * x + c) * np.cos((3 + i) * y) for c in range(3)], axis=-1)
        write_image(folder / f"photo-{i}.png", np.clip(rgb + 0.1 * rng.random(rgb.shape), 0, 1).astype(np.float32))
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()
    clf = DegradationClassifier([*NAMES, CLEAN])
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    meta = {"classifier_classes": json.dumps(clf.classes), "classifier_temperature": "1.5", "note": "kept"}
    save(model, path, extra_metadata=meta, extra_tensors={f"classifier.{k}": v for k, v in clf.state_dict().items()})
    return path


def argv(weights: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--weights", str(weights), "--data", str(corpus), "--holdout", "3", "--patch", "32", "--steps", "4",
            "--batch", "4", "--workers", "0", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def refitted(weights, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "refit.safetensors"
    assert refit.main(argv(weights, corpus, out)) == 0
    return out


def test_the_restorer_and_other_entries_are_copied_unchanged(weights, refitted):
    (old, old_meta), (new, new_meta) = read(weights), read(refitted)
    assert set(old) == set(new)
    for name in old:
        if not name.startswith("classifier."):
            assert torch.equal(old[name], new[name]), name
    assert any(not torch.equal(old[n], new[n]) for n in old if n.startswith("classifier."))  # it did train
    assert new_meta["note"] == "kept" and new_meta["config"] == old_meta["config"]
    torch.testing.assert_close(load(refitted).state_dict(), load(weights).state_dict(), rtol=0, atol=0)


def test_the_new_classifier_is_calibrated_and_its_settings_recorded(refitted):
    clf = load_classifier(refitted)
    settings = json.loads(read(refitted)[1]["classifier_refit"])
    assert clf.classes == [*NAMES, CLEAN] and clf.temperature == settings["calibration"]["temperature"] != 1.5
    assert settings["patch"] == 32 and settings["steps"] == 4 and settings["seed"] == 0


def test_two_runs_write_the_same_bytes(weights, corpus, refitted, tmp_path):
    again = tmp_path / "again.safetensors"
    assert refit.main(argv(weights, corpus, again)) == 0
    assert again.read_bytes() == refitted.read_bytes()


def test_clean_targets_are_learnt_as_clean(corpus, monkeypatch):
    """With a seeded share of clean targets in each batch, the labels include the clean class."""
    clf = DegradationClassifier([*NAMES, CLEAN])
    data = refit.crops(corpus, "train", 32, NAMES, 0, 3, length=40)
    seen: list[int] = []
    original = torch.nn.functional.cross_entropy

    def spy(logits, labels):
        seen.extend(labels.tolist())
        return original(logits, labels)

    monkeypatch.setattr(refit.F, "cross_entropy", spy)
    losses = refit.refit(clf, data, steps=10, batch=4, lr=1e-3, seed=0, workers=0)
    assert len(losses) == 10 and all(np.isfinite(losses))
    assert set(seen) == {0, 1, 2, 3}  # every degradation and clean (share 1/3 over 40 seeded draws)


def test_the_learning_rate_decays_from_lr_to_a_hundredth():
    assert refit.lr_at(0, 100, 1e-3) == pytest.approx(1e-3)
    assert refit.lr_at(100, 100, 1e-3) == pytest.approx(1e-5)
    assert refit.lr_at(50, 100, 1e-3) == pytest.approx((1e-3 + 1e-5) / 2)


@pytest.mark.parametrize("extra, message", [
    (["--patch", "8"], "--patch must be >= 16"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--holdout", "1"], "--holdout must be >= 2"),
    (["--lr", "-1"], "--lr must be a positive number"),
])
def test_bad_options_are_one_line_errors(weights, corpus, tmp_path, capsys, extra, message):
    out = tmp_path / "out.safetensors"
    assert refit.main(argv(weights, corpus, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_the_input_an_existing_output_and_weights_without_a_classifier_are_refused(weights, corpus, tmp_path, capsys):
    assert refit.main(argv(weights, corpus, weights)) == 2
    assert "is the input weights file" in capsys.readouterr().err
    existing = tmp_path / "there.safetensors"
    existing.write_bytes(b"x")
    assert refit.main(argv(weights, corpus, existing)) == 2
    assert "pass --overwrite" in capsys.readouterr().err and existing.read_bytes() == b"x"
    bare = tmp_path / "bare.safetensors"
    save(dfpir.DFPIR(dfpir.get_config("tiny")), bare)
    assert refit.main(argv(bare, corpus, tmp_path / "new.safetensors")) == 2
    err = capsys.readouterr().err
    assert "holds no degradation classifier" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- pooling the strongest responses


def test_top_share_mean_is_the_mean_of_the_largest_share_of_positions():
    f = torch.randn(2, 5, 7, 9, generator=torch.Generator().manual_seed(0))
    k = math.ceil(0.1 * 63)
    expected = f.flatten(2).sort(dim=-1, descending=True).values[..., :k].mean(dim=-1)
    torch.testing.assert_close(top_share_mean(f, 0.1), expected, rtol=0, atol=1e-6)
    assert torch.equal(top_share_mean(f, 0.001), f.flatten(2).amax(dim=-1))  # at least one position
    constant = torch.full((1, 2, 32, 32), 0.25)
    assert torch.equal(top_share_mean(constant), torch.full((1, 2), 0.25))


def test_the_top_statistic_sees_a_small_sharp_region_that_the_mean_hides():
    flat = torch.zeros(1, 1, 40, 40)
    spot = flat.clone()
    spot[..., :4, :4] = 1.0  # 1% of the positions
    assert STATISTICS["mean"](spot) < 0.02 and top_share_mean(spot, 0.01).item() == 1.0 and top_share_mean(flat).item() == 0.0


def test_widening_the_pooling_keeps_the_predictions_until_trained():
    torch.manual_seed(0)
    old = DegradationClassifier([*NAMES, CLEAN], width=8, temperature=1.7).eval()
    torch.nn.init.normal_(old.head.bias)
    new = with_pooling(old, "meanstdtop")
    x = torch.rand(3, 3, 40, 56)
    assert new.pooling == "meanstdtop" and new.head.in_features == 3 * 4 * 8 and new.temperature == 1.7
    torch.testing.assert_close(new(x), old(x), rtol=0, atol=1e-6)
    assert not new.training
    back = with_pooling(new, "meanstd")
    assert back.head.in_features == 2 * 4 * 8 and torch.equal(back.head.weight, old.head.weight)


def test_an_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of meanstd, meanstdtop"):
        DegradationClassifier(NAMES, pooling="max")


def test_the_pooling_is_stored_and_loaded_and_an_unknown_one_is_one_line(weights, corpus, tmp_path):
    out = tmp_path / "top.safetensors"
    assert refit.main(argv(weights, corpus, out, "--pooling", "meanstdtop")) == 0
    clf = load_classifier(out)
    assert clf.pooling == "meanstdtop" and read(out)[1]["classifier_pooling"] == "meanstdtop"
    assert json.loads(read(out)[1]["classifier_refit"])["pooling"] == "meanstdtop"
    assert load_classifier(weights).pooling == "meanstd"  # no metadata: what dfpir.train writes
    tensors, meta = read(out)
    bad = tmp_path / "bad.safetensors"
    write_safetensors(bad, tensors, {**meta, "classifier_pooling": "median"})
    with pytest.raises(dfpir.CheckpointError, match="unknown classifier pooling 'median'"):
        load_classifier(bad)


# --------------------------------------------------------------------------- clean crops out of focus


def test_a_disc_kernel_sums_to_one_and_grows_with_its_radius():
    small, large = disc_kernel(2.0, 17), disc_kernel(6.0, 17)
    assert small.sum().item() == pytest.approx(1.0) and large.sum().item() == pytest.approx(1.0)
    assert torch.equal(small, small.flip(0)) and torch.equal(small, small.T)
    assert (small > 0).sum() < (large > 0).sum() and small[8, 8] > large[8, 8]
    assert small[8, 8 + 4] == 0 and large[8, 8 + 6] > 0


def test_depth_of_field_blurs_one_side_and_keeps_the_other_sharp():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(4, 3, 64, 64, generator=g)  # texture: any blur changes it
    out = depth_of_field(images, torch.Generator().manual_seed(1))
    again = depth_of_field(images, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.shape == images.shape
    changed = (out - images).abs().amax(dim=1) > 0.02  # (4, 64, 64)
    share_sharp = 1 - changed.flatten(1).double().mean(dim=1)
    lo, hi = SHARP_SHARE
    assert ((share_sharp > lo - 0.15) & (share_sharp < hi + 0.15)).all(), share_sharp
    flat = torch.full((2, 3, 32, 32), 0.4)
    torch.testing.assert_close(depth_of_field(flat, torch.Generator().manual_seed(0)), flat)  # a blur of a flat image is flat


def test_defocus_some_is_seeded_by_step_and_a_zero_share_changes_nothing():
    clean = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert refit.defocus_some(clean, 0, 5, 0.0) is clean
    a, b, c = (refit.defocus_some(clean, 0, step, 0.5) for step in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    touched = [(a[i] != clean[i]).any().item() for i in range(8)]
    assert 0 < sum(touched) < 8
    assert all((refit.defocus_some(clean, 0, 5, 1.0)[i] != clean[i]).any() for i in range(8))


def test_clean_defocus_runs_and_is_recorded(weights, corpus, tmp_path):
    out = tmp_path / "dof.safetensors"
    assert refit.main(argv(weights, corpus, out, "--clean-defocus", "0.5")) == 0
    assert json.loads(read(out)[1]["classifier_refit"])["clean_defocus"] == 0.5


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_a_defocus_share_outside_0_to_1_is_one_line(weights, corpus, tmp_path, capsys, value):
    out = tmp_path / "out.safetensors"
    assert refit.main(argv(weights, corpus, out, "--clean-defocus", value)) == 2
    err = capsys.readouterr().err
    assert "--clean-defocus is a share of the clean crops" in err and err.count("\n") == 1 and not out.exists()


def test_clean_defocus_without_a_clean_class_is_one_line(corpus, tmp_path, capsys):
    path = tmp_path / "noclean.safetensors"
    clf = DegradationClassifier(NAMES)
    save(dfpir.DFPIR(dfpir.get_config("tiny")), path, extra_metadata={"classifier_classes": json.dumps(NAMES)},
         extra_tensors={f"classifier.{k}": v for k, v in clf.state_dict().items()})
    assert refit.main(argv(path, corpus, tmp_path / "out.safetensors", "--clean-defocus", "0.5")) == 2
    err = capsys.readouterr().err
    assert "--clean-defocus needs a classifier with a clean class" in err and err.count("\n") == 1
