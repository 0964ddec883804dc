"""The ablation study's machinery: arms, resumable runs, result files and the report, on a micro-grid."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dfpir import study
from dfpir.errors import UserError
from dfpir.model.config import get_config
from dfpir.study import arms, report, runner, stats
from dfpir.study.grid import GRIDS, train_config
from dfpir.train import Trainer

MICRO = GRIDS["micro"]


pytestmark = pytest.mark.usefixtures("one_thread")


def photos(folder, count: int = 2, size: tuple[int, int] = (40, 48)):
    """Smooth synthetic photos (the held-out set of the tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    for i in range(count):
        image = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1) * 0.4 + 0.5
        image = np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"photo{i}.png")
    return folder


def run_micro(tmp, heldout):
    """The micro-grid into ``tmp/runs`` and ``tmp/results``, then its report into ``tmp/report``."""
    runner.run_grid(MICRO, heldout, tmp / "runs", tmp / "results", device="cpu", threads=1)
    return report.write_report(tmp / "results", tmp / "report")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return study.heldout_set(str(photos(tmp_path_factory.mktemp("heldout"))), MICRO.eval_crop)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, heldout):
    """The micro-grid run without interruption: what an interrupted and resumed study must end as."""
    tmp = tmp_path_factory.mktemp("straight")
    run_micro(tmp, heldout)
    return tmp


# --------------------------------------------------------------------------------- arms


def test_each_arm_is_its_training_config(tmp_path):
    grid = GRIDS["default"]
    configs = {name: train_config(grid, study.Run(name, 0, grid.degradations if name != "specialist" else ("rain",)), tmp_path)
               for name in study.ARMS}
    nets = {name: cfg.model.config() for name, cfg in configs.items()}
    assert nets["dfpir"] == grid.model() and nets["dfpir"].use_dgpb and nets["dfpir"].guidance == "faithful"
    assert not nets["restormer"].use_dgpb and not nets["restormer_wide"].use_dgpb and not nets["specialist"].use_dgpb
    assert nets["no_mask"].keep_ratio == 1.0 and nets["dfpir"].keep_ratio == 0.9
    assert nets["learnable"].guidance == "learnable"
    assert configs["specialist"].data.degradations == ["rain"]
    # the parameter-matched baseline: within 5% of dfpir's trainable parameters at the default scale
    wide, published = arms.trainable(nets["restormer_wide"]), arms.trainable(nets["dfpir"])
    assert abs(wide - published) <= 0.05 * published and arms.trainable(nets["restormer"]) < 0.8 * published
    # the same budget and data order: all-in-one runs differ only in the network and their files
    base = configs["dfpir"].to_dict()
    for name, cfg in configs.items():
        values = cfg.to_dict()
        for section in ("data", "optim", "train"):
            changed = {k for k in values[section] if values[section][k] != base[section][k]}
            assert changed <= {"out_dir", "init"} | ({"degradations"} if name == "specialist" else set()), (name, changed)


def test_the_arms_of_a_seed_start_from_the_same_backbone():
    model = MICRO.model()
    start = {name: arms.initial_model(study.ARMS[name], model, 0, MICRO.degradations)
             for name in ("dfpir", "restormer", "restormer_wide", "no_mask")}
    dfpir = start["dfpir"].state_dict()
    for name, net in start.items():
        state = net.state_dict()
        shared = [k for k in state if k in dfpir and state[k].shape == dfpir[k].shape]
        assert len(shared) > 10
        assert all(torch.equal(state[k], dfpir[k]) for k in shared), name
    assert set(start["restormer"].state_dict()) <= set(dfpir)  # every restormer tensor is dfpir's
    extra = set(start["restormer_wide"].state_dict()) - set(dfpir)
    assert extra and not any(k.startswith("dgpb") for k in extra)
    other_seed = arms.initial_model(study.ARMS["restormer"], model, 1, MICRO.degradations).state_dict()
    assert not torch.equal(other_seed["embed.weight"], dfpir["embed.weight"])


def test_surgeries_fix_the_channel_order_for_every_prompt():
    model = MICRO.model()
    names = list(MICRO.degradations) + ["haze"]
    orders = {}
    for arm in ("dfpir", "no_shuffle", "shared_prompt"):
        net = arms.initial_model(study.ARMS[arm], model, 0, names)
        orders[arm] = net.dgpb2.perturb.order(net.embed_prompts(names))  # (3, 2C)
        assert not any(p.requires_grad for p in net.dgpb2.perturb.dgm.parameters())  # frozen: training keeps it
    identity = torch.arange(orders["dfpir"].shape[1])
    assert not torch.equal(orders["dfpir"][0], orders["dfpir"][1])
    assert all(torch.equal(o, identity) for o in orders["no_shuffle"])
    assert all(torch.equal(o, orders["shared_prompt"][0]) for o in orders["shared_prompt"])
    assert not torch.equal(orders["shared_prompt"][0], identity)


def test_matched_blocks_add_blocks_and_refuse_what_cannot_match():
    tiny = get_config("tiny")
    added = arms.matched_blocks(tiny)
    assert all(a >= b for a, b in zip(added["num_blocks"], tiny.num_blocks))
    wide = arms.trainable(tiny.replace(use_dgpb=False, **added))
    assert abs(wide - arms.trainable(tiny)) <= arms.WIDE_CLOSE * arms.trainable(tiny)
    with pytest.raises(UserError, match="within 5% of dfpir's"):
        arms.matched_blocks(tiny, most=0)


# --------------------------------------------------------------------------------- runs


def test_a_run_records_its_config_metrics_and_conflicts(straight, heldout):
    record = json.loads((straight / "results" / "dfpir-s0.json").read_text())
    assert record["heldout"] == heldout.record() and record["arm"] == "dfpir" and record["seed"] == 0
    assert record["config"]["train"]["out_dir"] == "dfpir-s0" and "device" not in record["config"]["train"]
    assert set(record["metrics"]) == set(MICRO.degradations)
    assert all(len(m["per_image"]["psnr"]) == 2 and 0 < m["psnr"] < 60 for m in record["metrics"].values())
    assert [c["step"] for c in record["conflicts"]] == list(MICRO.measure_at)
    restormer = json.loads((straight / "results" / "restormer-s0.json").read_text())
    # conflicts are over the backbone only: the same parameters with and without DGPBs
    assert record["conflicts"][0]["parameters"] == restormer["conflicts"][0]["parameters"] == record["parameters"]["backbone"]
    assert record["parameters"]["trainable"] > restormer["parameters"]["trainable"]


def test_killed_and_resumed_study_reports_the_same_bytes(straight, heldout, tmp_path, monkeypatch, capsys):
    real, calls = Trainer.train_step, []

    def train_step(self, batches):
        calls.append(self.cfg.train.out_dir)
        if len(calls) == 6:  # in the second run (restormer), before its second step
            raise KeyboardInterrupt
        return real(self, batches)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", train_step)
        with pytest.raises(KeyboardInterrupt):
            run_micro(tmp_path, heldout)
    assert runner.checkpoint_step(tmp_path / "runs" / "restormer-s0" / "last.safetensors") == 1
    assert not (tmp_path / "results" / "restormer-s0.json").exists()
    run_micro(tmp_path, heldout)
    assert "dfpir-s0: done" in capsys.readouterr().out
    log = (tmp_path / "runs" / "restormer-s0" / "metrics.jsonl").read_text().splitlines()
    assert [r["resumed_at"] for r in map(json.loads, log) if "resumed_at" in r] == [1, 2]  # continued, not redone
    for name in ("dfpir-s0.json", "restormer-s0.json"):
        a, b = (json.loads((folder / "results" / name).read_text()) for folder in (straight, tmp_path))
        for record in (a, b):
            del record["wall_s"]
        assert a == b, name
    for name in ["report.md", *report.PLOTS]:
        assert (tmp_path / "report" / name).read_bytes() == (straight / "report" / name).read_bytes(), name


def test_finished_runs_are_skipped_without_training(straight, heldout, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "train_run", refuse)
    monkeypatch.setattr(runner, "initial_model", refuse)
    runner.run_grid(MICRO, heldout, straight / "runs", straight / "results", device="cpu", threads=1)
    out = capsys.readouterr().out
    assert "dfpir-s0: done" in out and "restormer-s0: done" in out


def test_a_result_made_otherwise_is_refused(straight, heldout, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    record = json.loads((straight / "results" / "dfpir-s0.json").read_text())
    record["config"]["optim"]["lr"] = 0.5
    (results / "dfpir-s0.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="was made with another config"):
        runner.run_grid(MICRO, heldout, tmp_path / "runs", results)


def test_a_finished_checkpoint_made_otherwise_is_refused(straight, heldout, tmp_path):
    changed = dataclasses.replace(MICRO, budget=(*MICRO.budget, "optim.lr=2e-3"))
    with pytest.raises(UserError, match=r"was made with optim.lr=0.001 \(now 0.002\)"):
        runner.run_grid(changed, heldout, straight / "runs", tmp_path / "results", device="cpu", threads=1)
    assert not (tmp_path / "results" / "dfpir-s0.json").exists()


def test_the_report_regenerates_byte_for_byte_from_the_json_alone(straight, tmp_path):
    files = report.write_report(straight / "results", tmp_path / "again")
    assert [f.name for f in files] == ["report.md", "runs.md", "summary.md", *report.PLOTS]
    for f in files:
        assert f.read_bytes() == (straight / "report" / f.name).read_bytes(), f.name
    assert b"matplotlib" not in (tmp_path / "again" / "psnr.png").read_bytes()  # no version in the metadata


# --------------------------------------------------------------------------------- held-out set


def test_the_committed_report_is_what_the_committed_results_give(tmp_path):
    """The report's tables in the repository are regenerated from the result files beside it, byte
    for byte (so they are never stale, and never edited by hand). The plots are compared by name
    only: their pixels depend on the installed matplotlib and FreeType, which may differ from the
    machine that committed them (two runs on one machine give the same bytes: the test above)."""
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "results" / "study" / "default"
    if not list(results.glob("*.json")):
        pytest.skip("no committed results of the default grid")
    written = report.write_report(results, tmp_path)
    for path in written:
        committed = results / "report" / path.name
        assert committed.is_file(), f"{path.name}: run python -m dfpir.study report"
        if path.suffix == ".md":
            assert path.read_bytes() == committed.read_bytes(), f"{path.name}: run python -m dfpir.study report"


def test_heldout_photos_are_degraded_the_same_way_every_time(heldout):
    a, b = study.degraded(heldout, "noise25"), study.degraded(heldout, "noise25")
    assert torch.equal(a, b) and a.shape == (2, 3, MICRO.eval_crop, MICRO.eval_crop)
    assert not torch.equal(a[0] - heldout.images[0], a[1] - heldout.images[1])  # each photo its own noise


def test_the_command_rewrites_the_report_after_each_run(straight, tmp_path, monkeypatch):
    """Stopped after its first run, a study already has the report of that run."""
    held = photos(tmp_path / "held")
    written = []
    real = report.write_report

    def counting(results, out):
        written.append(sorted(p.name for p in results.glob("*.json")))
        return real(results, out)

    monkeypatch.setattr("dfpir.study.cli.write_report", counting)
    args = ["run", "--grid", "micro", "--heldout", str(held), "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--device", "cpu", "--threads", "1"]
    assert study.main(args) == 0
    assert written == [["dfpir-s0.json"], ["dfpir-s0.json", "restormer-s0.json"]]
    assert (tmp_path / "results" / "report" / "report.md").read_bytes() == (straight / "report" / "report.md").read_bytes()


def test_shards_share_the_grid_and_report_as_one_run(straight, tmp_path, capsys):
    """Two processes with --shard 1/2 and 2/2 run one run each, write no report of their own, and
    their result files give the report of the whole grid run in one process."""
    held = photos(tmp_path / "held")
    args = ["run", "--grid", "micro", "--heldout", str(held), "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--device", "cpu", "--threads", "1"]
    assert study.main([*args, "--shard", "2/2"]) == 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["restormer-s0.json"]
    assert study.main([*args, "--shard", "1/2"]) == 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["dfpir-s0.json", "restormer-s0.json"]
    assert study.main(["report", "--results", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "report" / "report.md").read_bytes() == (straight / "report" / "report.md").read_bytes()
    capsys.readouterr()
    for bad in ("3/2", "0/2", "two", "1/"):
        with pytest.raises(SystemExit) as exit_:
            study.main([*args, "--shard", bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --shard: takes K/N with 1 <= K <= N" in err and err.count("\n") == 1


@pytest.mark.parametrize("case, message", [("empty", "no images found"), ("small", "is smaller than the grid's 32x32")])
def test_heldout_problems_are_one_line(case, message, tmp_path, capsys):
    folder = tmp_path / "held"
    folder.mkdir()
    if case == "small":
        photos(folder, 1, (20, 20))
    assert study.main(["run", "--grid", "micro", "--heldout", str(folder), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# --------------------------------------------------------------------------------- statistics and the conclusion


def test_t_table_matches_scipy():
    t = pytest.importorskip("scipy.stats").t
    assert all(abs(q - t.ppf(0.975, df)) < 1e-6 for df, q in enumerate(stats.T_975, start=1))


def test_interval_is_the_t_interval():
    i = stats.interval([0.9, 1.0, 1.1])
    assert i.mean == pytest.approx(1.0) and i.half == pytest.approx(4.302653 * 0.1 / math.sqrt(3))
    assert stats.interval([2.0]).n == 1 and math.isnan(stats.interval([2.0]).half) and not stats.interval([2.0]).above()


def fabricated(gaps: dict[str, list[float]]) -> list[dict]:
    """Result records of 3 seeds on one degradation: the specialist at 30 dB, each arm 30 - gap[seed]."""
    records = [{"arm": "specialist", "seed": s, "specialist": True, "degradations": ["rain"], "metrics": {"rain": {"psnr": 30.0, "ssim": 0.9}}}
               for s in range(3)]
    for arm, values in gaps.items():
        records += [{"arm": arm, "seed": s, "degradations": ["rain"], "metrics": {"rain": {"psnr": 30.0 - g, "ssim": 0.8}}}
                    for s, g in enumerate(values)]
    return records


def test_the_conclusion_follows_the_stated_rule():
    table = report.Table.of(fabricated({"dfpir": [1.0, 1.0, 1.0], "restormer": [1.9, 2.0, 2.1], "restormer_wide": [1.8, 2.0, 2.2]}))
    assert report.verdict(table, "rain").startswith("the DGPBs reduce interference (gap(restormer) − gap(dfpir) = +1.00 [+0.75, +1.25] dB")
    table = report.Table.of(fabricated({"dfpir": [1.0, 1.0, 1.0], "restormer": [1.9, 2.0, 2.1], "restormer_wide": [0.0, 1.0, 2.0]}))
    assert report.verdict(table, "rain").startswith("no conclusion: an interval includes 0")
    table = report.Table.of(fabricated({"dfpir": [2.0, 2.0, 2.0], "restormer": [0.9, 1.0, 1.1], "restormer_wide": [0.9, 1.0, 1.1]}))
    assert report.verdict(table, "rain").startswith("the DGPBs increase interference")
    table = report.Table.of(fabricated({"dfpir": [1.0, 1.0, 1.0], "restormer": [1.9, 2.0, 2.1]}))
    assert report.verdict(table, "rain") == "not decided: no runs of restormer_wide"
    no_specialist = [r for r in fabricated({"dfpir": [1.0] * 3, "restormer": [2.0] * 3, "restormer_wide": [2.0] * 3}) if not r.get("specialist")]
    assert report.verdict(report.Table.of(no_specialist), "rain") == "not decided: no runs of specialist on rain"
    assert report.gap_section(table)[2] == "| dfpir | +1.00 [+1.00, +1.00] |"


def test_the_summary_says_how_much_of_the_grid_it_rests_on():
    records = fabricated_two({"dfpir": [(29.0, 29.0), (29.2, 29.0), (29.1, 29.1)],
                              "restormer": [(28.0, 28.5), (28.1, 28.4), (27.9, 28.6)]})
    for r in records:
        r["grid"] = "default"
    first, second = report.summary_text(records).splitlines()
    assert f"{len(records)} of {len(GRIDS['default'].runs())} runs so far" in first
    assert first.endswith(f"{report.verdict(report.Table.of(records), report.MEAN)}.")
    assert "not decided: no runs of restormer_wide" in first
    # dfpir - restormer on the mean of rain and haze, per seed: 0.75, 0.85, 0.85; t(2) = 4.303
    assert second.endswith("restormer +0.82 [+0.67, +0.96] dB.")


def test_the_readme_quotes_the_committed_summary():
    """The README's two lines on the study are the committed ``summary.md``, never written by hand."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    summary = root / "results" / "study" / "default" / "report" / "summary.md"
    if not summary.is_file():
        pytest.skip("no committed report of the default grid")
    readme = (root / "README.md").read_text()
    start, end = "<!-- study-summary: results/study/default/report/summary.md -->\n", "<!-- /study-summary -->"
    assert start in readme and end in readme, "README.md has no study-summary block"
    quoted = readme.split(start, 1)[1].split(end, 1)[0]
    assert quoted == summary.read_text(), "README.md: paste results/study/default/report/summary.md into its block"


def fabricated_two(psnr: dict[str, list[tuple[float, float]]]) -> list[dict]:
    """3 seeds on rain and haze: specialists at 30 dB on both; each arm's (rain, haze) PSNR per seed."""
    records = [{"arm": "specialist", "seed": s, "specialist": True, "degradations": [d], "metrics": {d: {"psnr": 30.0, "ssim": 0.9}}}
               for s in range(3) for d in ("rain", "haze")]
    for arm, values in psnr.items():
        records += [{"arm": arm, "seed": s, "degradations": ["rain", "haze"],
                     "metrics": {"rain": {"psnr": r, "ssim": 0.8}, "haze": {"psnr": h, "ssim": 0.8}}} for s, (r, h) in enumerate(values)]
    return records


def test_the_mean_over_degradations_gets_its_own_verdict():
    # dfpir is 1 dB better on rain and 0.2 dB worse on haze than both baselines: +0.4 dB on the mean.
    dfpir = [(29.0, 29.0), (29.1, 28.9), (28.9, 29.1)]
    base = [(28.0, 29.2), (28.1, 29.1), (27.9, 29.3)]
    table = report.Table.of(fabricated_two({"dfpir": dfpir, "restormer": base, "restormer_wide": base}))
    assert report.verdict(table, "rain").startswith("the DGPBs reduce interference")
    assert report.verdict(table, "haze").startswith("the DGPBs increase interference")
    assert report.verdict(table, report.MEAN).startswith("the DGPBs reduce interference (gap(restormer) − gap(dfpir) = +0.40")


def test_components_are_judged_by_the_paired_mean():
    dfpir = [(29.0, 29.0), (29.2, 29.0), (29.1, 29.1)]
    table = report.Table.of(fabricated_two({
        "dfpir": dfpir,
        "no_mask": [(r - 0.5, h - 0.3) for r, h in dfpir],          # dfpir better on every seed
        "no_shuffle": [(r + 0.4, h + 0.2) for r, h in dfpir],       # dfpir worse on every seed
        "learnable": [(29.5, 28.5), (28.7, 29.5), (29.3, 29.0)],     # mixed
    }))
    assert report.component(table, "no_mask").startswith("helps (dfpir − no_mask = +0.40")
    assert report.component(table, "no_shuffle").startswith("hurts (dfpir − no_shuffle = -0.30")
    assert report.component(table, "learnable").startswith("no conclusion: the interval includes 0")
    assert report.component(table, "shared_prompt") == "not decided: no runs of shared_prompt"
