"""python -m dfpir.convert: the DGM initialisation check, and --clip (CLIP prompts computed in the same run).

The conversion itself (names, shapes, safety, prompt files) is tested in tests/test_checkpoint.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dfpir
from dfpir import convert
from dfpir.clip.prompts import clip_prompt_bank
from dfpir.clip.tokenizer import extra_available
from dfpir.model.perturbation import DGM

from .helpers import FIXTURE, load_fixture, to_official_names
from .test_clip import FILE_SIZED, openai_state_dict, small_encoder

pytestmark = pytest.mark.usefixtures("one_thread")

needs_extra = pytest.mark.skipif(not extra_available(), reason="the clip extra is not installed (pip install 'dfpir[clip]': ftfy, regex)")


def tiny(seed: int = 0) -> dfpir.DFPIR:
    torch.manual_seed(seed)
    return dfpir.DFPIR(dfpir.get_config("tiny")).eval()


# --- the DGM check --------------------------------------------------------------------------------


def test_uniform_ks_measures_the_distance_to_the_uniform():
    n = 1000
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1  # the uniform's quantiles on [-1, 1]
    assert convert.uniform_ks(grid, 1.0) == pytest.approx(0.5 / n)
    assert convert.uniform_ks(torch.zeros(n), 1.0) == pytest.approx(0.5)  # everything at the median
    assert convert.uniform_ks(grid * 0.5, 1.0) == pytest.approx(0.25, abs=1e-3)  # half as wide


def test_a_fresh_models_dgms_look_initial():
    model = tiny()
    fits = convert.dgm_init_fits(model)
    dgms = [m for m in model.modules() if isinstance(m, DGM)]
    assert len(dgms) == 4 and len(fits) == 16  # four DGPBs, two linears each, weight and bias
    assert all(f.initial for f in fits), [f for f in fits if not f.initial]
    weight = next(f for f in fits if f.name == "dgpb1.perturb.dgm.linear1.weight")
    assert weight.bound == pytest.approx(1 / math.sqrt(512)) and weight.size == 512 * 512
    assert weight.max_ratio <= 1 and abs(weight.std_ratio - 1) < 0.01
    line = convert.dgm_diagnostic(fits)
    assert line.startswith("DGM check: all 16 DGM tensors look like PyTorch's default initialisation") and "\n" not in line
    assert "never trained" in line and "detailed" in line and "simple" in line


@pytest.mark.parametrize("change, expect", [
    (lambda w: w.mul_(1.5), "max |w| 1.5"),  # the learnable guidance's gradients, or any training, grow some weights
    (lambda w: w.copy_(torch.randn_like(w) * w.std()), "KS"),  # as wide as the initialisation, but not uniform
])
def test_trained_dgms_are_told_apart(change, expect):
    model = tiny()
    with torch.no_grad():
        change(model.dgpb3.perturb.dgm.linear2.weight)
    fits = convert.dgm_init_fits(model)
    off = [f.name for f in fits if not f.initial]
    assert off == ["dgpb3.perturb.dgm.linear2.weight"]
    line = convert.dgm_diagnostic(fits)
    assert line.startswith("DGM check: 1 of 16 DGM tensors do not look like their initialisation (e.g. dgpb3.perturb.dgm.linear2.weight")
    assert expect in line and "the original code never does" in line and "\n" not in line


def test_the_fixture_of_the_original_code_is_called_trained():
    # Its README: every parameter was perturbed away from its initial value (so that wiring errors show).
    fx = load_fixture(FIXTURE)  # skips without the shared fixture recorded from the original code
    model = dfpir.from_official(fx["state_dict"], **fx["kwargs"])
    fits = convert.dgm_init_fits(model)
    assert len(fits) == 16 and not any(f.initial for f in fits)


def test_convert_prints_the_dgm_check(tmp_path, capsys):
    path = tmp_path / "made.pth.tar"
    torch.save({"state_dict": to_official_names(tiny().state_dict())}, path)
    assert convert.main([str(path), "-o", str(tmp_path / "out.safetensors")]) == 0
    assert "DGM check: all 16 DGM tensors look like" in capsys.readouterr().out


# --- convert --clip -------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    """An original-format checkpoint of a tiny model and a small CLIP weights file."""
    model = tiny()
    checkpoint = tmp_path / "made.pth.tar"
    torch.save({"state_dict": to_official_names(model.state_dict())}, checkpoint)
    encoder = small_encoder(config=FILE_SIZED)
    weights = tmp_path / "clip.pt"
    torch.save(openai_state_dict(encoder), weights)
    return checkpoint, weights, encoder, model


@needs_extra
def test_convert_clip_stores_the_clip_embeddings_and_says_what_precision_changes(files, tmp_path, capsys):
    checkpoint, weights, encoder, model = files
    out = tmp_path / "out.safetensors"
    names = "noise15,noise25,noise50,rain,haze"
    argv = [str(checkpoint), "-o", str(out), "--clip-weights", str(weights), "--prompt-set", "simple", "--degradations", names]
    assert convert.main(argv) == 0
    converted = dfpir.load(out)
    expected = clip_prompt_bank(encoder.set_precision("fp16"), "simple", names.split(","))
    assert converted.prompts.names == names.split(",") and converted.prompts.texts["rain"] == "Rain"
    for name in expected.names:
        np.testing.assert_array_equal(converted.prompts[name], expected[name])
    printed = capsys.readouterr().out
    assert "CLIP ViT-B/32, simple prompts, fp16" in printed
    line = next(l for l in printed.splitlines() if l.startswith("channel orders with fp32 embeddings instead"))
    changes, positions = convert.order_changes(converted, expected, clip_prompt_bank(encoder.set_precision("fp32"), "simple", names.split(",")))
    assert positions == 2 * (16 + 32 + 64 + 128) and f"(of {positions})" in line
    assert all((f"{n} {c}" in line) for n, c in changes.items() if c), (changes, line)
    assert "DGM check: all 16" in printed


def test_order_changes_counts_moved_channel_positions():
    model = tiny()
    bank = model.prompts
    same, positions = convert.order_changes(model, bank, bank)
    assert set(same.values()) == {0} and positions == 480
    other = dfpir.PromptBank({"rain": -bank["rain"]})  # the negated embedding reverses every DGM score
    moved, _ = convert.order_changes(model, bank, other)
    assert list(moved) == ["rain"] and moved["rain"] > 0.9 * positions


@pytest.mark.parametrize("extra, message", [
    (["--clip", "--prompts", "p.npz"], "--prompts and --clip both give the prompt embeddings; use one"),
    (["--precision", "fp32"], "--precision choose how --clip computes the prompts; add --clip"),
    (["--prompt-set", "simple", "--precision", "fp32"], "--prompt-set and --precision choose how --clip"),
])
def test_convert_refuses_clip_options_that_contradict(files, tmp_path, capsys, extra, message):
    checkpoint, *_ = files
    out = tmp_path / "out.safetensors"
    assert convert.main([str(checkpoint), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


@needs_extra
def test_convert_clip_without_weights_fails_before_reading_the_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    missing_checkpoint = tmp_path / "not-there.pth.tar"
    assert convert.main([str(missing_checkpoint), "-o", str(tmp_path / "o.safetensors"), "--clip"]) == 2
    err = capsys.readouterr().err
    assert "no CLIP weights: pass --clip-weights PATH" in err and "not-there" not in err
