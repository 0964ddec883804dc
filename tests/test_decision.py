"""``auto``'s decision rules: the gain matrix, the expected-gain choice, the command that measures the
matrix, and what the restorer, the log lines and the held-out bench make of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import dfpir
from dfpir.bench.heldout import confusion, confusion_markdown, pick_text
from dfpir.checkpoint import read, save
from dfpir.errors import UserError
from dfpir.images import write_image
from dfpir.inference.decision import METADATA_KEY, ROUNDING_MSE, GainMatrix, gain_db
from dfpir.inference.runner import Restorer
from dfpir.model.classifier import CLEAN, DegradationClassifier
from dfpir.train import gain_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["noise25", "haze", "blur"]
CLASSES = (*NAMES, CLEAN)


def matrix(gains, prompts=tuple(NAMES), classes=CLASSES) -> GainMatrix:
    return GainMatrix(tuple(prompts), tuple(classes), np.asarray(gains, dtype=np.float64), tuple(1 for _ in classes), {})


# Rows noise25, haze, blur; columns noise25, haze, blur, clean: haze ruins a blurred photo, blur
# does nearly nothing to anything, every prompt harms a clean photo (the shape measured on photos).
ASYMMETRIC = [[9.0, -0.5, -0.4, -25.0],
              [-3.0, 5.0, -12.0, -40.0],
              [0.4, 0.0, 0.3, -19.0]]


# --------------------------------------------------------------------------- the gain


def test_gain_db_is_zero_for_an_unchanged_image_and_finite_for_a_clean_one():
    assert gain_db(0.01, 0.01) == 0.0
    assert gain_db(0.0, 0.0) == 0.0
    # a clean photo moved by its own rounding error loses half its floor: 3 dB
    assert gain_db(0.0, ROUNDING_MSE) == pytest.approx(-10 * math.log10(2))
    assert math.isfinite(gain_db(0.0, 0.5))


def test_gain_db_matches_the_psnr_difference_far_above_the_floor():
    mse_in, mse_out = 1e-2, 1e-3  # 20 and 30 dB
    assert gain_db(mse_in, mse_out) == pytest.approx(10.0, abs=0.01)
    assert gain_db(mse_out, mse_in) == pytest.approx(-10.0, abs=0.01)


def test_rounding_mse_is_the_variance_of_an_8_bit_rounding():
    rng = np.random.default_rng(0)
    x = rng.random(1_000_000)
    measured = np.mean((np.round(x * 255) / 255 - x) ** 2)
    assert measured == pytest.approx(ROUNDING_MSE, rel=0.01)


# --------------------------------------------------------------------------- the choice


def test_expected_gain_is_the_probability_weighted_row_and_leaving_is_zero():
    m = matrix(ASYMMETRIC)
    p = [0.1, 0.2, 0.3, 0.4]
    e = m.expected(p)
    assert list(e) == [CLEAN, *NAMES]
    assert e[CLEAN] == 0.0
    for name, row in zip(NAMES, ASYMMETRIC):
        assert e[name] == pytest.approx(sum(pi * g for pi, g in zip(p, row)))


def test_a_close_call_between_haze_and_blur_is_restored_as_the_harmless_one():
    m = matrix(ASYMMETRIC)
    p = [0.0, 0.53, 0.47, 0.0]  # the likeliest class is haze
    assert m.choose(p)[0] == "blur"


def test_a_confident_guess_is_acted_on():
    m = matrix(ASYMMETRIC)
    assert m.choose([0.97, 0.01, 0.01, 0.01])[0] == "noise25"
    assert m.choose([0.0, 0.99, 0.01, 0.0])[0] == "haze"


def test_when_every_prompt_is_expected_to_lose_the_image_is_left_as_it_is():
    m = matrix(ASYMMETRIC)
    action, gain = m.choose([0.0, 0.0, 0.9, 0.1])  # blur +0.27, clean -1.9: blur's expected gain is negative
    assert (action, gain) == (CLEAN, 0.0)
    assert m.choose([0.0, 0.0, 0.0, 1.0])[0] == CLEAN


def test_a_tie_leaves_the_image_as_it_is():
    assert matrix(np.zeros((3, 4))).choose([0.25, 0.25, 0.25, 0.25]) == (CLEAN, 0.0)


LIKELIEST = np.hstack([np.eye(3), -np.ones((3, 1))])
"""E[prompt i] = p_i - p_clean: positive when i is more likely than clean, and largest for the likeliest prompt."""


def test_a_matrix_that_rewards_only_the_truth_acts_as_the_likeliest_class():
    m = matrix(LIKELIEST)
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.dirichlet(np.ones(4))
        best = int(np.argmax(p))
        expected = CLASSES[best] if best < 3 else CLEAN
        assert m.choose(p)[0] == expected


def test_bad_matrices_and_probabilities_are_refused():
    with pytest.raises(ValueError, match="needs"):
        matrix(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        matrix([[float("nan"), 0, 0, 0], [0] * 4, [0] * 4])
    with pytest.raises(ValueError, match="not a prompt"):
        matrix(np.zeros((3, 4)), prompts=("noise25", "haze", CLEAN))
    with pytest.raises(ValueError, match="3 probabilities for 4"):
        matrix(ASYMMETRIC).expected([0.5, 0.25, 0.25])


def test_json_round_trip_and_unreadable_text():
    m = matrix(ASYMMETRIC)
    back = GainMatrix.from_json(m.to_json())
    assert back.prompts == m.prompts and back.classes == m.classes and back.counts == m.counts
    np.testing.assert_allclose(back.gains, m.gains)
    for text in ("not json", json.dumps({"prompts": ["a"]}), json.dumps([1, 2])):
        with pytest.raises(ValueError, match="not a gain matrix"):
            GainMatrix.from_json(text)


def test_markdown_has_a_row_per_prompt_and_one_for_leaving():
    lines = matrix(ASYMMETRIC).markdown()
    assert len(lines) == 2 + 3 + 1
    assert lines[-1].startswith("| left as it is |")
    assert "-12.00" in lines[3]


# --------------------------------------------------------------------------- weights with a matrix


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()
    clf = DegradationClassifier(list(CLASSES))
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    meta = {"classifier_classes": json.dumps(clf.classes), "note": "kept"}
    save(model, path, extra_metadata=meta, extra_tensors={f"classifier.{k}": v for k, v in clf.state_dict().items()})
    return path


def with_matrix(weights: Path, m: GainMatrix, folder: Path) -> Path:
    out = folder / "gains.safetensors"
    gain_matrix.write_with_gains(weights, out, m)
    return out


def photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((48, 40, 3)).astype(np.float32)


def test_the_default_rule_is_gain_only_for_weights_with_a_matrix(weights, tmp_path):
    assert Restorer(weights).auto_rule == "likely"
    assert Restorer(with_matrix(weights, matrix(ASYMMETRIC), tmp_path)).auto_rule == "gain"
    assert Restorer(with_matrix(weights, matrix(ASYMMETRIC), tmp_path), auto_rule="likely").auto_rule == "likely"


def test_the_gain_rule_without_a_matrix_is_a_one_line_error(weights):
    with pytest.raises(UserError, match="needs a gain matrix.*gain_matrix"):
        Restorer(weights, auto_rule="gain")
    with pytest.raises(UserError, match="unknown auto rule"):
        Restorer(weights, auto_rule="bold")


def test_a_matrix_for_other_classes_is_refused(weights, tmp_path):
    other = matrix(np.zeros((2, 3)), prompts=("noise25", "rain"), classes=("noise25", "rain", CLEAN))
    with pytest.raises(UserError, match="not this classifier's"):
        Restorer(with_matrix(weights, other, tmp_path))


def test_an_always_losing_matrix_leaves_every_image_and_says_why(weights, tmp_path):
    losing = matrix(-np.ones((3, 4)))
    restorer = Restorer(with_matrix(weights, losing, tmp_path))
    rgb = photo()
    prompt = restorer.prompt("auto", rgb)
    guess, conf = restorer.classify(rgb)
    assert prompt.label == CLEAN and prompt.clean
    assert (prompt.guess, prompt.confidence) == (guess, pytest.approx(conf))
    assert prompt.expected_gain == 0.0
    out, plan = restorer.restore(rgb, prompt)
    np.testing.assert_array_equal(out, rgb)
    if guess != CLEAN:
        assert prompt.overruled
        assert prompt.text()["dfpir:guess"] == guess
        assert any(f"most likely {guess}, but leaving it as it is" in r for r in prompt.remarks(0.6))
        assert f"--degradation {guess}" in prompt.note(0.6)


def test_the_gain_rule_agrees_with_the_likely_rule_on_a_matrix_that_rewards_only_the_truth(weights, tmp_path):
    diagonal = matrix(LIKELIEST)
    gain, likely = Restorer(with_matrix(weights, diagonal, tmp_path)), Restorer(weights)
    rgb = photo()
    a, b = gain.prompt("auto", rgb), likely.prompt("auto", rgb)
    assert a.label == b.label and not a.overruled
    assert b.guess == b.label and b.expected_gain is None
    assert "dfpir:guess" not in a.text() and "dfpir:expected-gain" in a.text() and "dfpir:expected-gain" not in b.text()


# --------------------------------------------------------------------------- the command


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


def command(weights: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--weights", str(weights), "--data", str(corpus), "--holdout", "3", "--patch", "32", "--per-image", "1",
            "-o", str(out), *extra]


def test_the_command_stores_a_matrix_and_copies_everything_else(weights, corpus, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    assert gain_matrix.main(command(weights, corpus, out)) == 0
    (old, old_meta), (new, new_meta) = read(weights), read(out)
    assert set(old) == set(new) and all(torch.equal(old[k], new[k]) for k in old)
    assert {k: v for k, v in new_meta.items() if k != METADATA_KEY} == old_meta
    m = GainMatrix.from_json(new_meta[METADATA_KEY])
    assert m.classes == CLASSES and m.prompts == tuple(NAMES)
    assert m.counts == (2, 2, 2, 6)  # 2 validation photos, 1 crop each per degradation; every crop's clean twin
    assert m.source["split"] == "val"
    # an untrained restorer moves a clean crop away from itself with every prompt
    assert (m.gains[:, CLASSES.index(CLEAN)] < 0).all()
    assert "left as it is" in capsys.readouterr().out
    assert Restorer(out).auto_rule == "gain"


def test_the_command_measures_what_it_stores(weights, corpus, tmp_path):
    """One entry recomputed by hand: the blur prompt on the validation split's hazy crops."""
    out = tmp_path / "g.safetensors"
    gain_matrix.main(command(weights, corpus, out))
    m = GainMatrix.from_json(read(out)[1][METADATA_KEY])
    restorer = Restorer(weights)
    data = dfpir.data.datasets.build_dataset("clean", corpus, "val", 32, degradations=NAMES, labels=NAMES, seed=0,
                                             holdout=3, per_image=1)
    gains = []
    for i in range(len(data)):
        item = data[i]
        if item["degradation"] != "haze":
            continue
        clean, rgb = (item[k].permute(1, 2, 0).numpy() for k in ("target", "input"))
        out_rgb, _ = restorer.restore(rgb, restorer.prompt("blur"))
        gains.append(10 * math.log10((np.mean((rgb - clean) ** 2) + ROUNDING_MSE) / (np.mean((out_rgb - clean) ** 2) + ROUNDING_MSE)))
    assert m.gains[NAMES.index("blur"), CLASSES.index("haze")] == pytest.approx(np.mean(gains), abs=1e-3)


def test_the_command_refuses_bad_outputs_and_weights_without_a_classifier(weights, corpus, tmp_path, capsys):
    assert gain_matrix.main(command(weights, corpus, weights)) == 2
    assert "is the input weights file" in capsys.readouterr().err
    plain = tmp_path / "plain.safetensors"
    save(dfpir.DFPIR(dfpir.get_config("tiny")), plain)
    assert gain_matrix.main(command(plain, corpus, tmp_path / "x.safetensors")) == 2
    assert "no degradation classifier" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


# --------------------------------------------------------------------------- the held-out bench


def test_pick_text_shows_the_guess_only_when_the_rule_overruled_it():
    assert pick_text({"pick": "blur", "confidence": 0.853, "guess": "blur"}) == "blur (0.85)"
    assert pick_text({"pick": "blur", "confidence": 0.853}) == "blur (0.85)"  # reports from before the rule
    assert pick_text({"pick": CLEAN, "confidence": 0.853, "guess": "blur"}) == "clean (blur 0.85)"


def test_the_confusion_counts_actions_and_calibration_reads_the_guesses():
    from dfpir.bench.heldout import PhotoRow, Score

    def row(pick, conf, guess):
        r = PhotoRow("p", (8, 8), Score(20.0, 0.5))
        r.picks["auto"] = (pick, conf, guess)
        return r

    rows = {"blur": [row(CLEAN, 0.9, "blur"), row("blur", 0.8, "blur")], CLEAN: [row(CLEAN, 0.6, "haze")]}
    c = confusion(rows)
    assert (c["right"], c["named_right"], c["images"]) == (2, 2, 3)
    assert c["matrix"] == {"blur": {CLEAN: 1, "blur": 1}, CLEAN: {CLEAN: 1}}
    text = "\n".join(confusion_markdown(c))
    assert "right on 2 of 3" in text and "guess is right" not in text
    rows[CLEAN] = [row(CLEAN, 0.6, CLEAN)]
    c = confusion(rows)
    assert (c["right"], c["named_right"]) == (2, 3)
    assert "the classifier's guess is right on 3 of 3" in "\n".join(confusion_markdown(c))
