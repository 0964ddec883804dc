"""``python -m dfpir.train.refit_classifier``: the classifier retrained alone, the restorer copied as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dfpir
from dfpir.checkpoint import load, load_classifier, read, save
from dfpir.images import write_image
from dfpir.model.classifier import CLEAN, DegradationClassifier
from dfpir.train import refit_classifier as refit

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
