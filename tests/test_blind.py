"""Blind mode that knows when it is unsure: the clean class, calibration, low-confidence reports.

Most tests use weights whose classifier gives fixed logits whatever the image (its head's weights
are zero, its bias the logits), so what ``auto`` chooses, and how sure it is, is known exactly.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

import dfpir
from dfpir import data, evaluate, restore
from dfpir.app.restoration import restore_photos
from dfpir.checkpoint import load_classifier, save
from dfpir.evaluate import Guess, Results
from dfpir.images import Image, read_image, write_image
from dfpir.inference.runner import Restorer
from dfpir.model.classifier import CLEAN, DegradationClassifier, expected_calibration_error, fit_temperature
from dfpir.train.classifier import calibrate, validation_logits

NAMES = ["noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight"]  # the tiny model's prompts
SURE = float(F.softmax(torch.tensor([0.0] * 7 + [9.0]), dim=0)[-1])  # the clean classifier's confidence, 0.99914


def fixed_weights(path: Path, logits: list[float], classes: list[str], temperature: float | None = None) -> Path:
    """A tiny random model whose classifier answers ``logits`` for every image (old checkpoints: no temperature)."""
    torch.manual_seed(0)
    model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()
    clf = DegradationClassifier(classes)
    with torch.no_grad():
        clf.head.weight.zero_()
        clf.head.bias.copy_(torch.tensor(logits))
    meta = {"classifier_classes": json.dumps(classes)}
    if temperature is not None:
        meta["classifier_temperature"] = json.dumps(temperature)
    save(model, path, extra_metadata=meta, extra_tensors={f"classifier.{k}": v for k, v in clf.state_dict().items()})
    return path


@pytest.fixture(scope="module")
def says_clean(tmp_path_factory) -> Path:
    """Weights whose classifier is sure (confidence ``SURE``) that every photo is clean."""
    return fixed_weights(tmp_path_factory.mktemp("w") / "clean.safetensors", [0.0] * 7 + [9.0], [*NAMES, CLEAN])


@pytest.fixture(scope="module")
def unsure(tmp_path_factory) -> Path:
    """Weights whose classifier hesitates: rain at confidence 0.45 after its temperature of 2."""
    logits = [0.0] * 8
    logits[3] = 2 * math.log(0.45 * 7 / 0.55)  # softmax(logits / 2) gives rain 0.45, each other class 0.55 / 7
    return fixed_weights(tmp_path_factory.mktemp("w") / "unsure.safetensors", logits, [*NAMES, CLEAN], temperature=2.0)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A 16-bit RGBA PNG: the clean output must keep every bit of it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "in" / "photo.png"
    write_image(path, Image(rng.random((20, 28, 3), dtype=np.float32), rng.random((20, 28), dtype=np.float32), 16))
    return path


def png_text(path: Path) -> dict[str, str]:
    with PILImage.open(path) as im:
        return dict(im.text)


# --------------------------------------------------------------------------- calibration maths


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at(true_t):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 5, generator=g) * 3
    labels = torch.multinomial(F.softmax(logits / true_t, dim=-1), 1, generator=g)[:, 0]
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_fit_temperature_is_the_minimum_of_the_likelihood_or_its_bound():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(500, 4, generator=g) * 2
    labels = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=g)[:, 0]
    t = fit_temperature(logits, labels)

    def nll(temp: float) -> float:
        return float(F.cross_entropy(logits.double() / temp, labels))

    assert nll(t) <= min(nll(t * 0.99), nll(t * 1.01))
    separated = torch.eye(3)[labels % 3] * 5  # every label the top logit by 5: the likelihood keeps rising as T falls
    assert fit_temperature(separated, labels % 3) == 0.05
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0


def test_expected_calibration_error_of_a_hand_computed_case():
    # bins (0.9, 1]: confidences 0.95, 0.95, right once: |0.5 - 0.95| x 2/5 = 0.18
    # bin (0.6, 0.7]: 0.65 right and 0.7 wrong (0.7 closes that bin): |0.5 - 0.675| x 2/5 = 0.07
    # bin (0.1, 0.2]: 0.15 wrong: |0 - 0.15| x 1/5 = 0.03
    assert expected_calibration_error([0.95, 0.95, 0.65, 0.7, 0.15], [True, False, True, False, False]) == pytest.approx(0.28)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0
    assert math.isnan(expected_calibration_error([], []))


class FixedClassifier(DegradationClassifier):
    """Logits from a lookup by the image's mean (each test image is a constant)."""

    def __init__(self, classes: list[str], table: dict[float, list[float]]) -> None:
        super().__init__(classes)
        self.table = table

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.table[round(float(x.mean()), 2)] for x in image])


def test_validation_adds_one_degradations_share_of_clean_targets_and_calibrates():
    classes = ["rain", "haze", "blur", CLEAN]
    samples = [dict(input=torch.full((3, 8, 8), 0.1 * (i % 3 + 1)), target=torch.full((3, 8, 8), 0.9),
                    degradation=classes[i % 3]) for i in range(6)]
    table = {0.1: [4.0, 0, 0, 0], 0.2: [0, 4.0, 0, 0], 0.3: [4.0, 0, 0, 0], 0.9: [0, 0, 0, 4.0]}  # blur is called rain
    clf = FixedClassifier(classes, table)
    logits, labels = validation_logits(clf, samples, torch.device("cpu"))
    assert labels.tolist() == [0, 3, 1, 2, 0, 3, 1, 2]  # the target of every 3rd sample, as clean: 2, like each degradation
    report = calibrate(clf, samples, torch.device("cpu"))
    assert (report.accuracy, report.clean_accuracy, report.crops) == (0.75, 1.0, 8)
    assert report.temperature == pytest.approx(fit_temperature(logits, labels))
    confidence = F.softmax(logits / report.temperature, dim=-1).amax(dim=-1)
    assert report.ece_after == pytest.approx(expected_calibration_error(confidence, logits.argmax(-1) == labels))
    assert clf.temperature == 1.0  # calibrate reports; the caller sets it


# --------------------------------------------------------------------------- checkpoints


def test_old_checkpoints_load_with_temperature_1_and_no_clean_class(tmp_path):
    logits = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0]
    old = load_classifier(fixed_weights(tmp_path / "old.safetensors", logits, NAMES))
    assert old.temperature == 1.0 and CLEAN not in old.classes
    names, conf = old.predict(torch.rand(1, 3, 16, 16))
    assert names == ["lowlight"] and float(conf) == pytest.approx(float(F.softmax(torch.tensor(logits), -1).max()))
    new = load_classifier(fixed_weights(tmp_path / "new.safetensors", logits, NAMES, temperature=4.0))
    assert new.predict(torch.rand(1, 3, 16, 16))[1].item() == pytest.approx(float(F.softmax(torch.tensor(logits) / 4, -1).max()))
    prompt = Restorer(tmp_path / "old.safetensors").prompt("auto", np.zeros((16, 16, 3), np.float32))
    assert (prompt.label, prompt.clean) == ("lowlight", False)  # auto still works with an old classifier


def test_a_bad_temperature_is_one_line(tmp_path):
    path = fixed_weights(tmp_path / "bad.safetensors", [0.0] * 7, NAMES, temperature=-1.0)
    with pytest.raises(dfpir.CheckpointError, match=r"the classifier's temperature must be a positive number, got '-1.0'"):
        load_classifier(path)


# --------------------------------------------------------------------------- restore and the app


def test_auto_leaves_a_photo_the_classifier_calls_clean_as_it_is(says_clean, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert restore.main([str(photo), "-o", str(out), "--degradation", "auto", "--weights", str(says_clean)]) == 0
    log = capsys.readouterr().out
    assert f"{photo} -> {out / 'photo.png'} (clean, confidence 1.00, no degradation found: left as it is)" in log
    assert "1 found clean and written as they were" in log
    before, after = read_image(photo), read_image(out / "photo.png")
    assert after.bit_depth == 16
    np.testing.assert_array_equal(after.rgb, before.rgb)
    np.testing.assert_array_equal(after.alpha, before.alpha)
    assert png_text(out / "photo.png") == {"dfpir:degradation": "clean", "dfpir:confidence": "0.999", "dfpir:low-confidence": "no"}


@pytest.mark.parametrize("depth", [8, 16])
def test_a_guess_of_low_confidence_is_in_the_log_line_and_the_png(unsure, tmp_path, capsys, depth):
    source = tmp_path / "in.png"
    write_image(source, Image(np.random.default_rng(1).random((16, 16, 3), dtype=np.float32), None, depth))
    out = tmp_path / "out"
    assert restore.main([str(source), "-o", str(out), "--degradation", "auto", "--weights", str(unsure)]) == 0
    log = capsys.readouterr().out
    assert ("(rain, confidence 0.45, low confidence (below 0.60): check the photo, or name its degradation)" in log
            and "1 by a guess of low confidence" in log)
    assert png_text(out / "in.png") == {"dfpir:degradation": "rain", "dfpir:confidence": "0.450", "dfpir:low-confidence": "yes"}
    restorer, top = Restorer(unsure), 2**depth - 1
    expected, _ = restorer.restore(read_image(source).rgb, restorer.prompt("rain"))  # restored with the best guess
    np.testing.assert_array_equal(np.round(read_image(out / "in.png").rgb * top), np.round(expected * top))

    assert restore.main([str(source), "-o", str(tmp_path / "sure"), "--degradation", "auto", "--weights", str(unsure),
                         "--min-confidence", "0.4"]) == 0
    assert "(rain, confidence 0.45)\n" in capsys.readouterr().out and png_text(tmp_path / "sure" / "in.png")["dfpir:low-confidence"] == "no"


def test_a_named_degradation_writes_no_text_chunk(unsure, photo, tmp_path):
    assert restore.main([str(photo), "-o", str(tmp_path / "out"), "--degradation", "rain", "--weights", str(unsure)]) == 0
    assert png_text(tmp_path / "out" / "photo.png") == {}


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_min_confidence_outside_0_to_1_is_one_line(unsure, photo, tmp_path, capsys, value):
    assert restore.main([str(photo), "-o", str(tmp_path), "--degradation", "auto", "--weights", str(unsure), "--min-confidence", value]) == 2
    assert capsys.readouterr().err == f"error: --min-confidence must be between 0 and 1 (a probability), got {float(value)}\n"


def test_the_app_says_clean_and_low_confidence_too(says_clean, unsure, photo, tmp_path):
    [kept] = restore_photos(Restorer(says_clean), [photo], "auto", tmp_path / "clean")
    assert (kept.degradation, kept.tiles, kept.note) == ("clean", "not restored", "no degradation found: left as it is")
    np.testing.assert_array_equal(read_image(kept.output).rgb, read_image(photo).rgb)
    [guess] = restore_photos(Restorer(unsure), [photo], "auto", tmp_path / "unsure")
    assert (guess.degradation, guess.note) == ("rain", "low confidence (below 0.60): check the photo, or name its degradation")
    assert png_text(guess.output)["dfpir:low-confidence"] == "yes"


# --------------------------------------------------------------------------- evaluate: the confusion matrix


def test_the_confusion_matrix_counts_each_true_class_against_the_choice():
    results = Results(classes=["rain", "haze", CLEAN])
    for true, chosen, conf in [("rain", "rain", 0.9), ("rain", "haze", 0.55), ("haze", "haze", 0.8), (CLEAN, "rain", 0.7),
                               (CLEAN, CLEAN, 0.95), (None, "haze", 0.3)]:  # the last: a folder of unknown truth
        results.guesses.append(Guess(true, chosen, conf, conf < 0.6))
    c = evaluate.confusion(results)
    assert (c.true, c.chosen, c.counts.tolist()) == (["rain", "haze", CLEAN], ["rain", "haze", CLEAN], [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert c.accuracy == 0.6 and c.ece == pytest.approx(expected_calibration_error([0.9, 0.55, 0.8, 0.7, 0.95], [1, 0, 1, 0, 1]))
    assert evaluate.blind_lines(results, "text") == [
        "blind prompt: confusion matrix (rows: true class, columns: the classifier's choice)",
        "true \\ chosen  rain  haze  clean",
        "rain              1     1      0",
        "haze              0     1      0",
        "clean             1     0      1",
        f"blind prompt over 5 images: accuracy 60.0%, expected calibration error {c.ece:.3f} (10 bins)",
        "blind guesses below confidence 0.60: 2 of 6",
    ]


def test_evaluate_scores_a_clean_folder_and_prints_the_confusion_matrix(says_clean, tmp_path, capsys):
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        write_image(tmp_path / "clean" / f"{name}.png", rng.random((16, 20, 3)))
    assert data.main(["degrade", str(tmp_path / "clean"), "-o", str(tmp_path / "deg"), "--degradations", "rain", "--with-clean"]) == 0
    for name in ("a", "b"):  # the clean class's inputs are the photos themselves
        np.testing.assert_array_equal(read_image(tmp_path / "deg" / "clean" / f"{name}.png").rgb, read_image(tmp_path / "clean" / f"{name}.png").rgb)
    capsys.readouterr()
    code = evaluate.main(["--input", str(tmp_path / "deg"), "--target", str(tmp_path / "clean"), "--prompt", "both",
                          "--weights", str(says_clean), "--format", "json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["columns"] == ["rain", "clean"]
    rows = record["rows"]
    assert rows["DFPIR (oracle)"]["clean"]["psnr"] == rows["DFPIR (blind)"]["clean"]["psnr"] == "inf"  # left as they are
    assert rows["DFPIR (blind)"]["rain"]["psnr"] == rows["input"]["rain"]["psnr"]  # rain called clean: not restored
    assert rows["input"]["average"]["psnr"] == rows["input"]["rain"]["psnr"]  # the clean column is not averaged
    blind = record["blind"]
    assert blind["confusion"] == {"rain": {**dict.fromkeys(NAMES, 0), CLEAN: 2}, CLEAN: {**dict.fromkeys(NAMES, 0), CLEAN: 2}}
    assert (blind["accuracy"], blind["images"], blind["low_confidence"]) == (0.5, 4, 0)
    assert blind["ece"] == pytest.approx(expected_calibration_error([SURE] * 4, [0, 0, 1, 1]))

    assert evaluate.main(["--input", str(tmp_path / "deg"), "--target", str(tmp_path / "clean"), "--prompt", "blind",
                          "--weights", str(says_clean)]) == 0
    text = capsys.readouterr().out
    assert "blind prompt over 4 images: accuracy 50.0%" in text
    assert re.search(r"^rain\s+(0\s+){7}2$", text, re.MULTILINE) and re.search(r"^clean\s+(0\s+){7}2$", text, re.MULTILINE)


def test_the_demo_shows_the_degradations_of_weights_with_a_clean_class(says_clean, tmp_path):
    """Weights whose classifier knows "clean" (the shipped ones): the demo's rows are the seven
    degradations, and auto's "clean" picks count as wrong and leave the degraded photo as it is."""
    from dfpir import demo

    results = demo.run_demo(says_clean, tmp_path / "out", photos=1)
    assert list(results) == NAMES
    for r in results.values():
        assert r["classified"] == 0.0 and r["auto_psnr"] == pytest.approx(r["input_psnr"])
