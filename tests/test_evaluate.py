"""``python -m dfpir.evaluate``: the original's noise and metric, layouts, tables, errors."""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import dfpir
from dfpir import evaluate
from dfpir.checkpoint import save
from dfpir.model.classifier import DegradationClassifier
from dfpir.evaluate import NoiseStream, Results, format_table
from dfpir.images import read_image, write_image
from dfpir.metrics import psnr, ssim
from dfpir.progress import progress


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Tiny random model with a random degradation classifier (so blind rows can run)."""
    torch.manual_seed(0)
    model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()
    clf = DegradationClassifier(model.prompts.names)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    tensors = {f"classifier.{k}": v for k, v in clf.state_dict().items()}
    save(model, path, extra_metadata={"classifier_classes": json.dumps(clf.classes)}, extra_tensors=tensors)
    return path


def make_3task(root: Path, h: int = 20, w: int = 36) -> None:
    """Two images per task in the paper's test layouts (odd sizes, so the 16-crop matters)."""
    rng = np.random.default_rng(0)

    def put(rel: str) -> None:
        write_image(root / rel, rng.random((h, w, 3)))

    for i in (1, 2):
        put(f"denoise/img{i}.png")
        put(f"derain/input/rain-{i}.png")
        put(f"derain/target/norain-{i}.png")
        put(f"dehaze/input/000{i}_0.8_0.2.jpg")
        put(f"dehaze/target/000{i}.png")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = evaluate.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_noise_is_the_originals_seeded_stream(tmp_path):
    make_3task(tmp_path)
    clean = sorted((tmp_path / "denoise").iterdir())
    state = np.random.get_state()
    try:
        np.random.seed(0)  # the original: one global stream, sigma 15 then 25 then 50
        expected = {}
        for sigma in (15, 25, 50):
            images = [np.round(read_image(p).rgb * 255).astype(np.uint8) for p in clean]
            expected[sigma] = [np.clip(x + np.random.randn(*x.shape) * sigma, 0, 255).astype(np.uint8) for x in images]
    finally:
        np.random.set_state(state)
    stream = NoiseStream(clean, "full")
    for sigma in (25, 15, 50):  # asking out of order still draws 15, 25, 50 in turn
        for got, want in zip(stream.noisy(sigma), expected[sigma]):
            np.testing.assert_array_equal(got, want)


def test_official_protocol_crops_to_16_before_the_noise(tmp_path):
    make_3task(tmp_path)
    stream = NoiseStream(sorted((tmp_path / "denoise").iterdir()), "official")
    assert all(x.shape == (16, 32, 3) for x in stream.noisy(15))


def test_3task_official_json_matches_skimage_directly(tmp_path, capsys, weights):
    make_3task(tmp_path / "root")
    code, out, err = run(capsys, "--benchmark", "3task", "--root", tmp_path / "root", "--weights", weights, "--protocol", "official",
                         "--prompt", "both", "--limit", "1", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["columns"] == ["SOTS", "Rain100L", "sigma 15", "sigma 25", "sigma 50"]
    assert set(data["rows"]) == {"input", "DFPIR (oracle)", "DFPIR (blind)"}
    assert set(data["blind_accuracy"]) == set(data["columns"])
    # The 'input' row recomputed here straight from the files with scikit-image, as the original does.
    x = read_image(tmp_path / "root/derain/input/rain-1.png").rgb.astype(np.float64)[2:18, 2:34]
    y = read_image(tmp_path / "root/derain/target/norain-1.png").rgb.astype(np.float64)[2:18, 2:34]
    cell = data["rows"]["input"]["Rain100L"]
    assert cell["images"] == 1
    assert cell["psnr"] == pytest.approx(peak_signal_noise_ratio(y, x, data_range=1), abs=1e-9)
    assert cell["ssim"] == pytest.approx(structural_similarity(y, x, data_range=1, channel_axis=-1), abs=1e-9)


def test_paired_folders_markdown_with_baseline(tmp_path, capsys, weights, monkeypatch):
    make_3task(tmp_path)
    monkeypatch.setattr(evaluate, "progress", partial(progress, every=0))  # a log line per image
    code, out, err = run(capsys, "--input", tmp_path / "derain/input", "--target", tmp_path / "derain/target", "--name-rule",
                         "^rain-=>norain-", "--degradation", "noise25", "--weights", weights, "--format", "markdown", "--baseline",
                         "--limit", "1", "-o", tmp_path / "table.md")
    assert code == 0, err
    assert "| method | noise25 | average |" in out and "| DFPIR (oracle) |" in out and "baseline:" in out
    assert (tmp_path / "table.md").read_text().strip() == out.strip()
    assert err.startswith("noise25: 1/1 images, ")


def test_formats_text_and_csv():
    results = Results()
    for row, p in (("input", 20.0), ("DFPIR (oracle)", 30.0)):
        results.add(row, "Rain100L", (p, 0.5))
        results.add(row, "SOTS", (p + 2, 0.7))
    text = format_table(results, ["SOTS", "Rain100L"], "text", {"protocol": "full"})
    assert "DFPIR (oracle)  32.00/0.7000  30.00/0.5000  31.00/0.6000" in text
    rows = format_table(results, ["SOTS", "Rain100L"], "csv", {}).splitlines()
    assert rows[0] == "method,task,psnr,ssim,images" and "DFPIR (oracle),average,31.0000,0.60000," in rows


PAIRED = ["--input", "{tmp}/derain/input", "--target", "{tmp}/derain/target", "--name-rule", "^rain-=>norain-", "--degradation", "rain"]


@pytest.mark.parametrize("argv, expected", [
    (["--benchmark", "5task", "--root", "{tmp}/nowhere"], "nowhere"),
    (["--input", "{tmp}"], "paired mode needs"),
    (["--benchmark", "3task"], "needs --root"),
    (["--input", "{tmp}/a", "--target", "{tmp}/b", "--degradation", "fog"], "unknown degradation 'fog'"),
    ([*PAIRED, "--memory-gb", "inf"], "--memory-gb must be a positive number of GiB, got inf"),
    ([*PAIRED, "--memory-gb", "nan"], "--memory-gb must be a positive number of GiB, got nan"),
    ([*PAIRED, "--memory-gb", "0"], "--memory-gb must be a positive number of GiB, got 0.0"),
    (["--input", "{tmp}/denoise/img1.png", "--target", "{tmp}/denoise", "--degradation", "rain"],
     "{tmp}/denoise/img1.png: is a file, not a folder; --input takes a folder of images"),
    (["--benchmark", "3task", "--root", "{tmp}/denoise/img1.png"], "is a file, not a folder; --root takes a folder"),
    ([*PAIRED, "-o", "{tmp}/derain"], "-o {tmp}/derain is a folder; give a file name"),
    ([*PAIRED, "-o", "{tmp}/denoise/img1.png/res.txt"], "-o {tmp}/denoise/img1.png/res.txt: {tmp}/denoise/img1.png is a file, not a folder"),
    pytest.param([*PAIRED, "-o", "/proc/res.txt"], "cannot write to output folder /proc:",  # even root cannot
                 marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")),
])
def test_bad_arguments_one_line(tmp_path, capsys, weights, argv, expected):
    make_3task(tmp_path)
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv], "--weights", weights)
    assert code == 2 and err.count("\n") == 1 and expected.format(tmp=tmp_path) in err, err
    assert out == ""  # refused before evaluating anything
    assert "Errno" not in err


def test_blind_rows_without_a_classifier_name_the_prompt_option(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "plain.safetensors"
    dfpir.save(dfpir.DFPIR(dfpir.get_config("tiny")), path)
    make_3task(tmp_path)
    for prompt in ("both", "blind"):
        code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in PAIRED], "--prompt", prompt, "--weights", path)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert f"--prompt {prompt} needs a degradation classifier" in err and "use --prompt oracle" in err
        assert "--degradation auto" not in err


def test_inputs_without_a_target_are_counted_in_a_warning(tmp_path, capsys, weights):
    make_3task(tmp_path)
    for i in (3, 4):
        write_image(tmp_path / f"derain/input/rain-{i}.png", np.random.default_rng(i).random((20, 36, 3)))
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in PAIRED], "--weights", weights, "--format", "json")
    assert code == 0, err
    assert err.strip() == (f"warning: {tmp_path}/derain/input: 2 of 4 input files have no target in {tmp_path}/derain/target "
                           "(e.g. rain-3.png, rain-4.png); they are skipped (see --name-rule)")
    assert json.loads(out)["rows"]["input"]["rain"]["images"] == 2


def test_identical_input_and_target_score_inf_without_warnings(tmp_path, capsys, weights):
    make_3task(tmp_path)
    folder = str(tmp_path / "derain/target")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero RuntimeWarning would now raise
        code, out, err = run(capsys, "--input", folder, "--target", folder, "--degradation", "rain", "--weights", weights, "--format", "json")
        assert code == 0 and err == "", err
        data = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))  # no bare Infinity
        assert data["rows"]["input"]["rain"] == {"psnr": "inf", "ssim": 1.0, "images": 2}
        assert data["rows"]["input"]["average"]["psnr"] == "inf"
        assert data["notes"] == ["PSNR inf: 2 score(s) of an image exactly equal to its target; every mean including one is inf"]
        code, out, err = run(capsys, "--input", folder, "--target", folder, "--degradation", "rain", "--weights", weights)
    assert code == 0 and err == ""
    assert "input           inf/1.0000    inf/1.0000" in out and "PSNR inf: 2 score(s)" in out


@pytest.mark.parametrize("size, protocol, expected", [
    ((5, 6), "full", "s-1.png: 6x5 is smaller than SSIM's 7x7 window; evaluate images of at least 7x7 pixels"),
    ((5, 6), "official", "s-1.png: 6x5 is cropped to 0x0 by --protocol official (a multiple of 16); it needs at least 16x16 pixels"),
    ((20, 12), "official", "s-1.png: 12x20 is cropped to 0x16 by --protocol official"),
])
def test_images_too_small_for_ssim_one_line(tmp_path, capsys, weights, size, protocol, expected):
    for folder in ("in", "tgt"):
        write_image(tmp_path / folder / "s-1.png", np.random.default_rng(0).random((*size, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run(capsys, "--input", tmp_path / "in", "--target", tmp_path / "tgt", "--degradation", "rain",
                             "--weights", weights, "--protocol", protocol)
    assert code == evaluate.SKIPPED_EXIT and err.count("\n") == 1 and expected in err, err
    assert err.startswith(f"error: {tmp_path / 'in' / 's-1.png'}: ")
    assert "skipped 1 file(s), not in the table:" in out and expected in out  # the (empty) table, then why


def test_metrics_identical_and_tiny_images():
    image = np.random.default_rng(0).random((8, 8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert psnr(image, image) == float("inf")  # as scikit-image says, minus its warning
    with pytest.raises(ValueError, match=r"^SSIM needs images of at least 7x7 pixels, got 8x6$"):
        ssim(image[:6], image[:6])


def test_bad_pairs_are_skipped_and_named_under_the_table(tmp_path, capsys, weights):
    make_3task(tmp_path)
    inputs, targets = tmp_path / "derain/input", tmp_path / "derain/target"
    (inputs / "rain-3.png").write_bytes((inputs / "rain-1.png").read_bytes()[:60])  # truncated
    write_image(targets / "norain-3.png", np.zeros((20, 36, 3)))
    write_image(inputs / "rain-4.png", np.zeros((20, 30, 3)))  # not its target's size
    write_image(targets / "norain-4.png", np.zeros((20, 36, 3)))
    argv = [*[a.format(tmp=tmp_path) for a in PAIRED], "--weights", weights]
    code, out, err = run(capsys, *argv)
    assert code == evaluate.SKIPPED_EXIT
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") and line.endswith("; skipped") for line in errors), err
    assert f"{inputs / 'rain-3.png'}: cannot read image" in errors[0] and f"{inputs / 'rain-4.png'}: size" in errors[1]
    table, _, under = out.partition("skipped 2 file(s), not in the table:")
    assert "DFPIR (oracle)" in table and "rain-3.png" in under and "rain-4.png" in under
    code, out, _ = run(capsys, *argv, "--format", "json")
    data = json.loads(out)
    assert code == evaluate.SKIPPED_EXIT and data["rows"]["input"]["rain"]["images"] == 2  # the good pairs, scored
    assert [(s["column"], Path(s["file"]).name) for s in data["skipped"]] == [("rain", "rain-3.png"), ("rain", "rain-4.png")]


def test_an_unreadable_clean_image_is_skipped_at_every_sigma(tmp_path):
    make_3task(tmp_path)
    clean = sorted((tmp_path / "denoise").iterdir())
    clean[0].write_bytes(b"not an image")
    stream = NoiseStream(clean, "full")
    for degradation in ("noise15", "noise25"):
        first, second = stream.samples(degradation)
        assert isinstance(first, evaluate.Skipped) and first.file == str(clean[0]) and "cannot read image" in first.reason
        assert isinstance(second, evaluate.Sample) and second.name == clean[1].name


def test_blind_column_is_labelled_auto(tmp_path):
    make_3task(tmp_path)
    column = evaluate.paired_column(tmp_path / "derain/input", tmp_path / "derain/target", "auto", "^rain-=>norain-", "full", None)
    assert column.label == "auto (input)" and column.degradation is None and column.count == 2
