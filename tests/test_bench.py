"""The benchmark command runs each suite and writes what it printed (speed is never asserted)."""

from __future__ import annotations

import json

import pytest

from dfpir import bench

SMALL = ["--presets", "tiny", "--sizes", "32", "--batches", "1", "--repeats", "1", "--threads", "1"]


def test_compare_reports_every_variant_against_the_first(tmp_path, capsys):
    out = tmp_path / "compare.json"
    assert bench.main(["compare", *SMALL, "--variants", "plain", "fast", "fused", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["plain", "fast", "fused"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["max_abs_diff"] == 0.0
    assert all(r["median_s"] > 0 and r["max_abs_diff"] < 1e-4 for r in rows)


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
