"""``python -m dfpir.data degrade``: degraded copies of clean photos, then evaluated per degradation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dfpir
from dfpir import evaluate
from dfpir import data
from dfpir.degradations import degrade
from dfpir.images import read_image, write_image
from dfpir.data.pairs import pair_generator


@pytest.fixture
def clean(tmp_path):
    """Two small clean photos: a colour one and a grey one."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "clean"
    write_image(folder / "colour.png", rng.random((24, 40, 3)))
    write_image(folder / "grey.png", rng.random((32, 24)))
    return folder


def test_every_photo_and_degradation_is_written_as_the_generator_makes_it(clean, tmp_path, capsys):
    out = tmp_path / "deg"
    assert data.main(["degrade", str(clean), "-o", str(out), "--degradations", "noise25", "rain", "--seed", "3"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "noise25/colour.png", "noise25/grey.png", "rain/colour.png", "rain/grey.png"]
    for name in ("colour", "grey"):
        src = read_image(clean / f"{name}.png")
        x = torch.from_numpy(src.rgb.transpose(2, 0, 1).copy())[None]
        want = degrade(x, ["rain"], pair_generator(3, name, "rain")).clamp(0, 1)[0]
        got = read_image(out / "rain" / f"{name}.png")
        assert not got.was_gray  # per-channel rain and noise are kept, not averaged back to grey
        np.testing.assert_allclose(got.rgb, want.permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)  # 8-bit quantisation
    assert "python -m dfpir.evaluate --input" in capsys.readouterr().out


def test_outputs_are_reproducible_and_independent_of_the_other_photos(clean, tmp_path):
    assert data.main(["degrade", str(clean), "-o", str(tmp_path / "a"), "--degradations", "noise50"]) == 0
    assert data.main(["degrade", str(clean / "grey.png"), "-o", str(tmp_path / "b"), "--degradations", "noise50", "blur"]) == 0
    assert (tmp_path / "a/noise50/grey.png").read_bytes() == (tmp_path / "b/noise50/grey.png").read_bytes()
    assert data.main(["degrade", str(clean), "-o", str(tmp_path / "c"), "--degradations", "noise50", "--seed", "1"]) == 0
    assert (tmp_path / "a/noise50/grey.png").read_bytes() != (tmp_path / "c/noise50/grey.png").read_bytes()


@pytest.mark.parametrize("case, message", [
    ("exists", "colour.png already exists; pass --overwrite"),
    ("unknown", "unknown degradation 'fog'"),
    ("corrupt", "bad.png"),
    ("clash", "would both be written as colour.png"),
    ("missing", "no such image file or folder"),
])
def test_bad_requests_are_one_line_and_write_nothing_new(clean, tmp_path, capsys, case, message):
    out = tmp_path / "deg"
    args = ["degrade", str(clean / "colour.png"), "-o", str(out), "--degradations", "haze"]
    if case == "exists":
        (out / "haze").mkdir(parents=True)
        (out / "haze" / "colour.png").write_bytes(b"mine")
    elif case == "unknown":
        args[-1] = "fog"
    elif case == "corrupt":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
        args.insert(1, str(tmp_path / "bad.png"))
    elif case == "clash":
        write_image(tmp_path / "colour.jpg", np.zeros((8, 8, 3)))
        args.insert(1, str(tmp_path / "colour.jpg"))
    else:
        args.insert(1, str(tmp_path / "nope.png"))
    assert data.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    written = sorted(p.name for p in out.rglob("*.png")) if out.exists() else []
    assert written == (["colour.png"] if case == "exists" else [])
    if case == "exists":
        assert (out / "haze" / "colour.png").read_bytes() == b"mine"


def test_evaluate_scores_each_degradation_folder_in_one_table(clean, tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    dfpir.save(dfpir.DFPIR(dfpir.get_config("tiny")), weights)
    out = tmp_path / "deg"
    assert data.main(["degrade", str(clean), "-o", str(out), "--degradations", "haze", "noise15"]) == 0
    (out / "not-a-degradation").mkdir()
    capsys.readouterr()
    code = evaluate.main(["--input", str(out), "--target", str(clean), "--weights", str(weights), "--format", "markdown"])
    text = capsys.readouterr().out
    assert code == 0
    assert "| method | noise15 | haze | average |" in text  # the registry's order, other folders ignored
    assert "np.random.seed(0)" not in text  # the benchmark's noise note does not apply to paired folders
