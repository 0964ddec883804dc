"""The benchmark command runs each suite and writes what it printed (speed is never asserted)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch

from dfpir import bench

SMALL = ["--presets", "tiny", "--sizes", "32", "--batches", "1", "--repeats", "1", "--threads", "1"]


def test_compare_reports_every_variant_against_the_first(tmp_path, capsys):
    out = tmp_path / "compare.json"
    assert bench.main(["compare", *SMALL, "--variants", "plain", "fast", "fused", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["plain", "fast", "fused"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["max_abs_diff"] == 0.0
    assert all(r["median_s"] > 0 and r["max_abs_diff"] < 1e-4 for r in rows)


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


def test_train_suite_runs_in_bf16_and_refuses_fp16_on_the_cpu(tmp_path, capsys, monkeypatch):
    from dfpir import train

    dtypes = []

    def recording(device, precision):  # the training loop's own autocast, watched
        ctx = train_autocast(device, precision)
        dtypes.append(ctx.fast_dtype if isinstance(ctx, torch.autocast) else None)
        return ctx

    train_autocast = train.autocast
    monkeypatch.setattr(train, "autocast", recording)
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
