"""The blur-recipe experiment: runs, result files, resuming and the report's verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfpir.errors import UserError
from dfpir.study import recipes
from dfpir.study.cli import BLUR_RESULTS, main
from dfpir.study.stats import Interval

from .test_study import photos

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.dim=8", "model.num_refinement_blocks=0", "train.steps=2", "train.val_every=2", "train.ckpt_every=1",
        "train.log_every=1", "optim.warmup_steps=0", "data.patch_size=16", "data.val_crop=16", "data.val_patches_per_image=1",
        "data.holdout=2"]
SMALL_EVAL = {"side": 0, "crop": 40, "count": 2, "patch": 8, "seed": 0}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipes")
    corpus = photos(tmp / "corpus", count=4)
    (corpus / "manifest.json").write_text("{}")
    return corpus, photos(tmp / "heldout", count=2)


def run(folders, tmp, names=("base", "fft"), seeds=(0, 1)):
    corpus, heldout = folders
    return recipes.run_all(str(corpus), str(heldout), tmp / "runs", tmp / "results", names, seeds, "cpu", 1, TINY, SMALL_EVAL)


def test_each_run_is_recorded_and_reported(folders, tmp_path, capsys):
    files = run(folders, tmp_path)
    assert [f.name for f in files] == ["base-s0.json", "fft-s0.json", "base-s1.json", "fft-s1.json"]
    fft = json.loads((tmp_path / "results" / "fft-s1.json").read_text())
    assert fft["config"]["optim"]["fft_weight"] == 0.1 and fft["config"]["train"]["seed"] == 1
    assert fft["config"]["data"]["degradations"] == ["blur"] and fft["config"]["data"]["layout"] == "clean"
    assert fft["wiener_psnr"] > fft["input_psnr"]
    text = recipes.report(tmp_path / "results")
    assert "| base | 0,1 |" in text and "| fft | 0,1 |" in text and "patch128 |" not in text
    assert main(["blur-report", "--results", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "report.md").read_text() == text
    # A second call trains nothing: every run is recorded.
    capsys.readouterr()
    run(folders, tmp_path)
    assert capsys.readouterr().out.count("done, skipped") == 4


def test_an_interrupted_run_continues_from_its_checkpoint(folders, tmp_path):
    corpus, heldout = folders
    base = recipes.variant("base")
    cfg = recipes.run_config(base, 0, str(corpus), tmp_path / "runs", "cpu", 1, TINY)
    from dfpir.train import run as train_run

    train_run(cfg, stop_at=1)  # killed after step 1
    run(folders, tmp_path, names=("base",), seeds=(0,))
    straight = tmp_path / "straight"
    run(folders, straight, names=("base",), seeds=(0,))
    a = json.loads((tmp_path / "results" / "base-s0.json").read_text())
    b = json.loads((straight / "results" / "base-s0.json").read_text())
    assert a["model_psnr"] == b["model_psnr"]


def test_a_result_made_with_another_recipe_is_refused(folders, tmp_path):
    run(folders, tmp_path, names=("base",), seeds=(0,))
    path = tmp_path / "results" / "base-s0.json"
    values = json.loads(path.read_text())
    values["config"]["optim"]["lr"] = 5.0
    path.write_text(json.dumps(values))
    with pytest.raises(UserError, match="another config"):
        run(folders, tmp_path, names=("base",), seeds=(0,))


def test_a_variant_on_a_part_trains_on_that_subfolder_only(folders, tmp_path):
    corpus, heldout = folders
    whole = tmp_path / "corpus"
    photos(whole / "photos", count=4)
    (whole / "deadleaves").mkdir()
    (whole / "deadleaves" / "broken.png").write_bytes(b"not a png")  # stops any run that reads it
    (whole / "manifest.json").write_text('{"files": 5}')
    part = recipes.variant("photos")
    cfg = recipes.run_config(part, 0, str(whole), tmp_path / "runs", "cpu", 1, TINY)
    assert Path(cfg.data.root) == whole / "photos"
    values = recipes.recorded(cfg, part.part)
    assert values["data"]["corpus_part"] == "photos"
    assert values["data"]["manifest_sha256"] == recipes.file_sha256(whole / "manifest.json")
    assert "corpus_part" not in recipes.recorded(recipes.run_config(recipes.variant("base"), 0, str(whole), tmp_path, "cpu", 1, TINY))
    [out] = recipes.run_all(str(whole), str(heldout), tmp_path / "runs", tmp_path / "results", ["photos"], [0], "cpu", 1,
                            TINY, SMALL_EVAL)
    assert json.loads(out.read_text())["config"] == values
    with pytest.raises(UserError, match="broken.png"):  # the whole corpus holds the broken file
        recipes.run_all(str(whole), str(heldout), tmp_path / "runs", tmp_path / "results", ["base"], [0], "cpu", 1,
                        TINY, SMALL_EVAL)


def test_verdicts_follow_the_paired_interval():
    assert recipes.verdict(Interval(0.3, 0.2, 3)) == "helps"
    assert recipes.verdict(Interval(-0.3, 0.2, 3)) == "hurts"
    assert recipes.verdict(Interval(0.3, 0.4, 3)) == "no difference beyond the seeds' spread"
    assert recipes.verdict(Interval(0.3, float("nan"), 1)) == "too few seeds"


def test_the_report_names_the_recipes_that_help_and_the_runs_beyond_the_fixed_filter(tmp_path):
    def result(name, seed, model):
        row = {"variant": name, "seed": seed, "eval": SMALL_EVAL, "heldout": {"digest": "d", "images": ["a.png"]},
               "input_psnr": 30.0, "fixed_psnr": 30.5, "wiener_psnr": 38.0, "model_psnr": model}
        (tmp_path / f"{name}-s{seed}.json").write_text(json.dumps(row))

    for seed, noise in enumerate((0.0, 0.1, -0.1)):
        result("base", seed, 30.2 + noise)
        result("fft", seed, 31.2 + noise)  # 1 dB above base on every seed, 0.7 dB beyond the fixed filter
        result("small", seed, 30.2 - noise)  # as base on average, not on each seed
    text = recipes.report(tmp_path)
    assert "| fft | 0,1,2 | +1.20 [" in text and "| +1.00 [+1.00, +1.00] | helps |" in text
    assert "Recipes that help: `fft`. Runs beyond the fixed filter: `fft`." in text
    result("fft", 1, 30.3)
    assert "Recipes that help: none. Runs beyond the fixed filter: none." in recipes.report(tmp_path)


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["blur-recipes", "--heldout", str(tmp_path), "--corpus", str(tmp_path / "none")]) != 0
    assert "python -m dfpir.data corpus" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown blur recipe"):
        recipes.variant("sharpen")
    assert main(["blur-report", "--results", str(tmp_path)]) != 0
    assert "no result files" in capsys.readouterr().err


def test_the_committed_report_is_what_the_committed_results_give():
    results = Path(__file__).resolve().parent.parent / BLUR_RESULTS
    if not list(results.glob("*-s*.json")):
        pytest.skip("no committed blur-recipe results")
    assert recipes.report(results) == (results / "report.md").read_text(), "run python -m dfpir.study blur-report"

