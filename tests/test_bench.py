"""The benchmark command runs each suite and writes what it printed (speed is never asserted)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch

import dfpir.bench.suites as bench

SMALL = ["--presets", "tiny", "--sizes", "32", "--batches", "1", "--repeats", "1", "--threads", "1"]


def test_compare_reports_every_variant_against_the_first(tmp_path, capsys):
    out = tmp_path / "compare.json"
    assert bench.main(["compare", *SMALL, "--variants", "plain", "fast", "fused", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["plain", "fast", "fused"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["max_abs_diff"] == 0.0
    assert all(r["median_s"] > 0 and r["max_abs_diff"] < 1e-4 for r in rows)
    machine = json.loads(out.read_text())["machine"]
    assert machine["threads"] == 1 and machine["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert f"{machine['logical_cores']} logical cores, torch using 1 threads" in capsys.readouterr().out


def test_compare_alternates_presets_too(tmp_path, capsys):
    out = tmp_path / "presets.json"
    args = ["compare", *SMALL, "--presets", "tiny", "small", "--variants", "plain", "fused", "--json", str(out)]
    assert bench.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["preset"], r["variant"]) for r in rows] == [("tiny", "plain"), ("tiny", "fused"), ("small", "plain"), ("small", "fused")]
    assert rows[0]["speedup"] == 1.0 and rows[2]["max_abs_diff"] == 0.0  # differences within a preset
    assert all(r["max_abs_diff"] < 1e-4 for r in rows)
    assert "max |diff| to plain" in capsys.readouterr().out


def test_profile_lists_operators_by_their_share(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert bench.main(["profile", *SMALL, "--variant", "fused", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    shares = [r["share"] for r in rows]
    assert rows and shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert any("conv" in r["op"] for r in rows)
    assert "variant fused" in capsys.readouterr().out


@pytest.mark.parametrize("suite", ["forward", "train"])
def test_forward_and_train_suites_write_json(tmp_path, suite):
    out = tmp_path / f"{suite}.json"
    assert bench.main([suite, *SMALL, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["suite"] == suite and data["rows"] and data["machine"]["threads"] == 1
    assert data["malloc"] == "default"


def test_train_variants_start_alike_and_are_timed_side_by_side(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert bench.main(["train", *SMALL, "--train-variants", "plain", "channels_last", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["plain", "channels_last"] and rows[0]["speedup"] == 1.0
    assert rows[0]["loss_diff"] == 0.0 and rows[0]["max_grad_diff"] == 0.0
    # the same first step in another memory format: the same loss and gradients but for float rounding
    assert rows[1]["loss_diff"] < 1e-5 and rows[1]["max_grad_diff"] < 1e-4 and rows[1]["step_s"] > 0
    assert "channels_last" in capsys.readouterr().out


def test_train_suite_runs_in_bf16_and_refuses_fp16_on_the_cpu(tmp_path, capsys, monkeypatch):
    from dfpir.train import precision

    dtypes = []

    def recording(device, precision):  # the training loop's own autocast, watched
        ctx = train_autocast(device, precision)
        dtypes.append(ctx.fast_dtype if isinstance(ctx, torch.autocast) else None)
        return ctx

    train_autocast = precision.autocast
    monkeypatch.setattr(precision, "autocast", recording)
    out = tmp_path / "train.json"
    assert bench.main(["train", *SMALL, "--precision", "bf16", "--device", "cpu", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["precision"] == "bf16" and row["step_s"] > 0
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert bench.main(["train", *SMALL, "--precision", "fp16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--precision=fp16 needs a CUDA device" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_reuse_memory_sets_the_allocator_and_is_recorded(tmp_path):
    """In a child process: the setting is process-wide, and must not leak into the other tests."""
    out = tmp_path / "compare.json"
    cmd = [sys.executable, "-m", "dfpir.bench", "compare", *SMALL, "--variants", "plain", "fused", "--reuse-memory", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "malloc: reuse freed memory" in done.stdout
    data = json.loads(out.read_text())
    assert data["malloc"] == "reuse freed memory" and len(data["rows"]) == 2


def test_every_suite_covers_each_size_and_batch(tmp_path):
    out = tmp_path / "grid.json"
    args = ["train", "--presets", "tiny", "--sizes", "16", "24", "--batches", "1", "2", "--repeats", "1", "--threads", "1"]
    assert bench.main([*args, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["size"], r["batch"]) for r in rows] == [(16, 1), (16, 2), (24, 1), (24, 2)]


def test_each_suite_has_its_own_defaults():
    parsed = {suite: bench.build_parser().parse_args([suite]) for suite in bench.SUITE_DEFAULTS}
    for suite, args in parsed.items():
        bench.check_args(args)
        assert (args.presets, args.sizes, args.batches) == bench.SUITE_DEFAULTS[suite]
    # the documented comparisons (``compare --sizes 256``) time batch 1 only, train times batch 8
    assert parsed["compare"].batches == [1] and parsed["train"].batches == [8]


@pytest.mark.parametrize("bad, message", [
    (["--presets", "bogus"], "unknown preset 'bogus'"),
    (["--sizes", "0"], "--sizes must be >= 8 (pixels: the U-net halves the image three times), got 0"),
    (["--sizes", "4"], "--sizes must be >= 8 (pixels: the U-net halves the image three times), got 4"),
    (["--batches", "-1"], "--batches must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--threads", "-2"], "--threads must be >= 1"),
    (["--device", "foo"], "unknown device 'foo'"),
])
def test_bad_arguments_are_one_line_errors_before_any_timing(bad, message, capsys):
    assert bench.main(["forward", *bad]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "ms" not in captured.out  # nothing was timed


def test_an_unwritable_json_path_is_refused_before_timing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert bench.main(["forward", *SMALL, "--json", str(blocker / "x.json")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
    assert bench.main(["forward", *SMALL, "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["restore", "--sizes", "0"], "--sizes must be >= 8 (pixels), got 0"),
    (["restore", "--preset", "huge"], "unknown preset 'huge'"),
    (["restore", "--memory-gb", "-1"], "--memory-gb must be a positive number"),
    (["restore", "--memory-gb", "inf"], "--memory-gb must be a positive number"),
    (["restore", "--max-tiles", "0"], "--max-tiles must be >= 1"),
    (["reference", "--size", "13"], "--size must be an even number >= 8"),
    (["reference", "--threads", "0"], "--threads must be >= 1"),
])
def test_restore_and_reference_suites_refuse_impossible_values(args, message, capsys):
    assert bench.main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""


def test_a_failing_restore_child_is_a_one_line_error(monkeypatch, capsys):
    import dfpir.bench.restore as bench_restore

    def failing(cmd, **kwargs):  # what a child that ran out of memory returns
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Traceback...\nMemoryError: out of memory")

    monkeypatch.setattr(bench_restore.subprocess, "run", failing)
    assert bench.main(["restore", "--sizes", "64", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: the benchmark of --sizes 64 --preset tiny failed in its child process: MemoryError: out of memory"
