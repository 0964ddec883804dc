"""``python -m dfpir.bench heldout`` and the classical anchors of ``dfpir.analysis.anchors``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dfpir.analysis import anchors
from dfpir.analysis.anchors import (
    FixedWiener,
    box_mean,
    dark_channel,
    dark_channel_prior,
    guided_filter,
    min_filter,
)
from dfpir.bench import heldout
from dfpir.bench import suites as bench
from dfpir.bench.heldout import PhotoRow, Score
from dfpir.data.pairs import degrade_image, pair_generator
from dfpir.degradations import synthetic_names
from dfpir.degradations.synthetic import blur_kernels, ensemble_wiener, filter2d
from dfpir.images import Image, write_image
from dfpir.model.classifier import expected_calibration_error

SIZES = {"leaf": (80, 96), "stone": (72, 90)}  # (H, W) before --max-side 64


def smooth_photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colour picture with some texture, so every degradation changes it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x + c + seed) * np.cos(4 * y) for c in range(3)], axis=-1)
    return np.clip(rgb + 0.05 * rng.random((h, w, 3)), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("heldout") / "photos"
    for seed, (name, (h, w)) in enumerate(SIZES.items()):
        write_image(folder / f"{name}.png", smooth_photo(h, w, seed))
    return folder


@pytest.fixture(scope="module")
def report(photos, tmp_path_factory) -> dict:
    """The whole command once: every degradation, both prompts, the shipped (tiny) weights; no
    BM3D, which takes seconds even on a tiny photo (its own test and the --bm3d-limit test below)."""
    out = tmp_path_factory.mktemp("out") / "heldout.json"
    argv = ["--photos", str(photos), "--max-side", "64", "--prompt", "both", "--bm3d-limit", "0", "--format", "json", "-o", str(out)]
    assert heldout.main(argv) == 0
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- the command


def test_the_report_has_every_photo_and_degradation(report):
    assert list(report["degradations"]) == synthetic_names()
    for rep in report["degradations"].values():
        assert [p["photo"] for p in rep["photos"]] == ["leaf", "stone"]
        assert all(max(p["size"]) == 64 for p in rep["photos"])  # --max-side shrank them
        for p in rep["photos"]:
            assert p["oracle"]["gain"] == pytest.approx(p["oracle"]["psnr"] - p["input"]["psnr"])
            assert p["auto"]["pick"] in synthetic_names() and 0 <= p["auto"]["confidence"] <= 1
        mean = rep["mean"]["oracle"]["gain"]
        assert mean == pytest.approx(np.mean([p["oracle"]["gain"] for p in rep["photos"]]))
        assert set(rep["worse"]) == {"oracle", "auto"}
    assert [line["degradation"] for line in report["summary"]] == synthetic_names()


def test_auto_is_scored_on_clean_photos_too_with_a_confusion_matrix(report):
    clean = report["clean"]
    assert [p["photo"] for p in clean["photos"]] == ["leaf", "stone"]
    assert clean["right"] == sum(p["pick"] == "clean" for p in clean["photos"])
    for p in clean["photos"]:  # a photo called clean is left exactly as it is
        assert (p["psnr_to_photo"] == "inf") == (p["pick"] == "clean")
    c = report["confusion"]
    assert list(c["matrix"]) == [*synthetic_names(), "clean"] and c["images"] == 2 * (len(synthetic_names()) + 1)
    picks = {d: [p["auto"]["pick"] for p in rep["photos"]] for d, rep in report["degradations"].items()}
    picks["clean"] = [p["pick"] for p in clean["photos"]]
    for truth, row in c["matrix"].items():
        assert row == {pick: picks[truth].count(pick) for pick in set(picks[truth])}
    assert c["right"] == sum(picks[t].count(t) for t in picks) and c["met"] == (c["right"] / c["images"] >= 0.95)
    confidences = [p["auto"]["confidence"] for rep in report["degradations"].values() for p in rep["photos"]]
    confidences += [p["confidence"] for p in clean["photos"]]
    hits = [p["auto"]["pick"] == d for d, rep in report["degradations"].items() for p in rep["photos"]]
    hits += [p["pick"] == "clean" for p in clean["photos"]]
    assert c["ece"] == pytest.approx(expected_calibration_error(confidences, hits)) and 0 <= c["ece"] <= 1
    assert c["mean_confidence"] == pytest.approx(np.mean(confidences))
    text = heldout.to_markdown(report)
    assert "## auto: confusion matrix" in text and f"right on {c['right']} of {c['images']} images" in text
    assert f"expected calibration error {c['ece']:.3f} (10 bins)" in text


def test_oracle_alone_classifies_nothing(photos, tmp_path):
    out = tmp_path / "oracle.json"
    argv = ["--photos", str(photos), "--max-side", "32", "--degradations", "rain", "--format", "json", "-o", str(out)]
    assert heldout.main(argv) == 0
    assert "confusion" not in json.loads(out.read_text())


def test_bf16_is_recorded_and_rounds_the_restorations(photos, tmp_path, monkeypatch):
    monkeypatch.setattr("dfpir.inference.runner.cpu_has_native_bf16", lambda: True)
    reports = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.json"
        argv = ["--photos", str(photos), "--max-side", "32", "--degradations", "rain", "--precision", precision, "--format", "json", "-o", str(out)]
        assert heldout.main(argv) == 0
        reports[precision] = json.loads(out.read_text())
    assert "precision" not in reports["fp32"]["settings"] and reports["bf16"]["settings"]["precision"] == "bf16 (autocast)"
    gains = {k: [r["oracle"]["psnr"] for r in rep["degradations"]["rain"]["photos"]] for k, rep in reports.items()}
    assert gains["fp32"] != gains["bf16"]


def test_each_degradation_has_its_anchors(report):
    got = {d: set(rep["mean"]["anchors"]) for d, rep in report["degradations"].items()}
    assert got == {"noise15": {heldout.NLM}, "noise25": {heldout.NLM}, "noise50": {heldout.NLM}, "rain": set(), "haze": {heldout.DCP},
                   "blur": {heldout.WIENER_TRUE, heldout.WIENER_FIXED}, "lowlight": set()}
    summary = {line["degradation"]: line for line in report["summary"]}
    assert summary["noise25"]["target"] == 8.0 and summary["noise15"]["target"] is None
    assert summary["blur"]["oracle"]["met"] == (summary["blur"]["oracle"]["gain"] >= 1.5)


def test_fixed_seeds_make_two_runs_byte_identical(photos, tmp_path):
    outs = [tmp_path / "one.json", tmp_path / "two.json"]
    for out in outs:
        argv = ["--photos", str(photos), "--max-side", "64", "--degradations", "rain", "blur", "--format", "json", "-o", str(out)]
        assert heldout.main(argv) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


@pytest.mark.parametrize("degradation", synthetic_names())
def test_inputs_are_those_of_data_degrade_and_keyed_by_the_photo_name(degradation):
    clean = smooth_photo(40, 48, 0)
    case = heldout.degrade_photo("leaf", clean, degradation)
    made = degrade_image(Image(clean), degradation, pair_generator(heldout.SEED, "leaf", degradation)).rgb
    np.testing.assert_array_equal(case.degraded, (np.round(made * 255) / 255).astype(np.float32))
    assert not np.array_equal(case.degraded, heldout.degrade_photo("stone", clean, degradation).degraded)
    if degradation == "blur":  # the kernel kept is the one that made the blur
        x = torch.from_numpy(clean).permute(2, 0, 1)[None]
        again = filter2d(x, torch.from_numpy(case.kernel)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(again, made)


def test_a_missing_or_empty_folder_is_a_one_line_error(tmp_path, capsys):
    assert bench.main(["heldout", "--photos", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "python -m dfpir.data heldout -o data/heldout" in err
    assert bench.main(["heldout", "--photos", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--degradations", "snow"], "unknown degradation 'snow'"),
    (["--max-side", "8"], "--max-side must be >= 16"),
])
def test_bad_options_are_one_line_errors(photos, capsys, argv, expected):
    assert heldout.main(["--photos", str(photos), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_bm3d_limit_runs_it_on_the_first_photos_and_says_so(photos, monkeypatch, capsys):
    calls = []

    def fake_bm3d(noisy, sigma):  # the real one takes minutes per photo and is optional
        calls.append(sigma)
        return noisy

    monkeypatch.setattr(heldout, "bm3d_available", lambda: True)
    monkeypatch.setattr(heldout, "denoise_bm3d", fake_bm3d)
    argv = ["--photos", str(photos), "--max-side", "64", "--degradations", "noise50", "--bm3d-limit", "1"]
    assert heldout.main(argv) == 0
    out = capsys.readouterr().out
    assert calls == [50.0]
    assert "BM3D ran on 1 of 2 photos; on those, oracle gains" in out and "BM3D +0.00 (1 photos)" in out


# --------------------------------------------------------------------------- the tables


def row(name: str, before: float, after: float, anchor: float | None = None) -> PhotoRow:
    r = PhotoRow(name, (64, 48), Score(before, 0.5), {"oracle": Score(after, 0.6)})
    if anchor is not None:
        r.anchors[heldout.DCP] = Score(anchor, 0.7)
    return r


def test_worse_photos_are_listed_and_means_compared_with_the_target():
    rows = {"haze": [row("up", 20.0, 26.0, 24.0), row("down", 30.0, 29.0, 31.0)]}
    rep = heldout.build_report(rows, ["oracle"], heldout.Anchors(False), {})
    haze = rep["degradations"]["haze"]
    assert haze["worse"] == {"oracle": ["down"]}
    assert haze["mean"]["oracle"]["gain"] == pytest.approx(2.5) and haze["mean"]["anchors"][heldout.DCP]["gain"] == pytest.approx(2.5)
    (line,) = rep["summary"]
    assert line["oracle"] == {"gain": pytest.approx(2.5), "met": False, "worse": 1}  # haze's target is +4 dB
    text = heldout.to_markdown(rep)
    assert "- worse than the input (oracle): 1 of 2: down" in text
    assert "| haze | >= +4.0 | +2.50 | missed | 1/2 | DCP +2.50 |" in text


def test_infinite_psnr_is_written_as_a_string_in_json():
    rep = heldout.build_report({"rain": [row("same", float("inf"), float("inf"))]}, ["oracle"], heldout.Anchors(False), {})
    assert json.loads(json.dumps(heldout.json_safe(rep), allow_nan=False))["degradations"]["rain"]["photos"][0]["input"]["psnr"] == "inf"


def test_the_fixed_wiener_filter_keeps_one_nsr_for_every_photo():
    rows = [row("a", 20.0, 21.0), row("b", 30.0, 31.0)]
    for r, best in zip(rows, (1e-3, 1e-2)):
        r.fixed = {n: Score(25.0 + (1.0 if n == best else 0.0) + (0.5 if n == 1e-2 else 0.0), 0.5) for n in heldout.PHOTO_NSRS}
    assert heldout.keep_one_fixed_nsr(rows) == 1e-2  # best on average, though not for photo a
    assert [r.anchors[heldout.WIENER_FIXED].psnr for r in rows] == [25.5, 26.5]


# --------------------------------------------------------------------------- the anchors


def test_dark_channel_prior_finds_the_airlight_within_the_derived_tolerance():
    # A scene whose dark channel is 0 (one colour off per pixel) under grey airlight a: where the
    # transmission is t, I = J t + a (1 - t), so the haziest pixels (the dense band, t = t_min) have
    # I_c = a + t_min (J_c - a), and any of them misses a by at most t_min * a below, t_min * (1 - a) above.
    rng = np.random.default_rng(0)
    h, w, a, t_min = 96, 96, 0.8, 0.05
    scene = rng.random((h, w, 3))
    scene[np.arange(h)[:, None], np.arange(w)[None, :], rng.integers(0, 3, (h, w))] = 0
    t = np.where(np.arange(h) < 32, t_min, np.linspace(0.3, 0.9, h))[:, None] * np.ones((1, w))
    hazy = scene * t[..., None] + a * (1 - t[..., None])
    airlight = dark_channel_prior(hazy).airlight
    assert np.all(airlight - a >= -t_min * a - 1e-12) and np.all(airlight - a <= t_min * (1 - a) + 1e-12)


def test_the_airlight_takes_every_pixel_tied_on_the_boundary_and_the_first_brightest():
    # 100 pixels, top share 0.02 -> 2 of them; the dark channel has one clear top pixel and five
    # tied on the boundary value, and the brightest colour is among the tied ones (twice: the first wins).
    dark = np.zeros((10, 10))
    dark.flat[[7]] = 0.9
    dark.flat[[3, 20, 41, 66, 90]] = 0.5
    image = np.full((10, 10, 3), 0.2)
    image.reshape(-1, 3)[7] = 0.6
    image.reshape(-1, 3)[[41, 90]] = [[0.5, 0.75, 1.0], [1.0, 0.75, 0.5]]  # the same brightness, exactly
    np.testing.assert_array_equal(anchors.estimate_airlight(image, dark, top=0.02), [0.5, 0.75, 1.0])
    shuffled = np.random.default_rng(0).permutation(100)  # the answer names a pixel, not a sort order
    inverse = np.argsort(shuffled)
    moved = anchors.estimate_airlight(image.reshape(-1, 3)[shuffled].reshape(10, 10, 3), dark.reshape(-1)[shuffled].reshape(10, 10), top=0.02)
    first = [41, 90][int(inverse[90] < inverse[41])]
    np.testing.assert_array_equal(moved, image.reshape(-1, 3)[first])


def test_dark_channel_prior_with_a_known_airlight_and_constant_transmission_is_exact():
    # With A known and t constant: dark(I / A) = 1 - t, so t_hat = 1 - omega (1 - t) everywhere (the guided
    # filter keeps a constant), and J_hat = (I - A) / t_hat + A = A + (J - A) t / t_hat: the haze omega leaves.
    rng = np.random.default_rng(1)
    scene = rng.random((40, 48, 3))
    scene[..., 1] = 0  # dark channel 0
    a, t, omega = 0.9, 0.4, anchors.DCP_OMEGA
    hazy = scene * t + a * (1 - t)
    result = dark_channel_prior(hazy, airlight=np.full(3, a))
    t_hat = 1 - omega * (1 - t)
    np.testing.assert_allclose(dark_channel(hazy / a), 1 - t, atol=1e-12)
    np.testing.assert_allclose(result.transmission, t_hat, atol=1e-9)
    np.testing.assert_allclose(result.image, np.clip(a + (scene - a) * t / t_hat, 0, 1), atol=1e-6)


def test_min_filter_box_mean_and_guided_filter_against_their_definitions():
    rng = np.random.default_rng(2)
    image = rng.random((17, 23))
    windows = [[image[max(0, i - 3):i + 4, max(0, j - 3):j + 4] for j in range(23)] for i in range(17)]
    np.testing.assert_array_equal(min_filter(image, 7), [[win.min() for win in line] for line in windows])
    np.testing.assert_allclose(box_mean(image, 3), [[win.mean() for win in line] for line in windows], atol=1e-12)
    np.testing.assert_allclose(guided_filter(image, np.full_like(image, 0.3), 4, 1e-3), 0.3, atol=1e-12)
    np.testing.assert_allclose(guided_filter(image, image, 4, 1e-9), image, atol=1e-5)  # its own guide: edges kept


@pytest.mark.parametrize("h, w", [(64, 80), (10, 12)])  # the second: autocorrelation wider than the canvas
def test_fixed_wiener_is_ensemble_wieners_filter(h, w):
    ensemble = blur_kernels(32, torch.Generator().manual_seed(1)).double()
    blurred = torch.rand(1, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fixed = FixedWiener.from_ensemble(ensemble)
    for nsr in (0.0, 1e-3):
        want = ensemble_wiener(blurred, ensemble, nsr)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(fixed(blurred[0].permute(1, 2, 0).numpy(), nsr), want, atol=1e-7)  # float32 output


def flat_and_noisy(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    flat = np.full((48, 48, 3), 0.5, np.float32)
    noise = np.random.default_rng(0).standard_normal(flat.shape).astype(np.float32) * sigma / 255
    return flat, flat + noise


def test_non_local_means_removes_most_noise_from_a_flat_image():
    # Averaging the 169 pixels of its 13 x 13 search window would leave sigma / 13; its weights are
    # not uniform, so ask for a quarter: an anchor that did nothing would keep all of sigma.
    flat, noisy = flat_and_noisy(25.0)
    assert np.sqrt(np.mean((anchors.denoise_nlm(noisy, 25.0) - flat) ** 2)) * 255 < 25.0 / 4


def test_bm3d_removes_most_noise_from_a_flat_image():
    pytest.importorskip("bm3d")
    flat, noisy = flat_and_noisy(25.0)
    assert np.sqrt(np.mean((anchors.denoise_bm3d(noisy, 25.0) - flat) ** 2)) * 255 < 25.0 / 4
