"""dfpir.analysis: interference matrices, ablations, order and attention helpers, the CLI."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dfpir
from dfpir import DFPIR, analysis, get_config

PACKAGE = Path(analysis.__file__).parent

DEGRADATIONS = ["noise25", "rain", "haze"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_model():
    return analysis.build_model("tiny", seed=0, dim=8)


@pytest.fixture(scope="module")
def batches():
    return analysis.task_batches(DEGRADATIONS, batch=2, patch=32, seed=0)


@pytest.fixture(scope="module")
def result(small_model, batches):
    return analysis.measure_interference(small_model, batches)


def test_cosine_matrices_are_symmetric_with_unit_diagonal(result):
    for cos in [result.cosine] + [layer["cosine"] for layer in result.layers.values()]:
        assert cos.shape == (3, 3)
        assert np.array_equal(cos, cos.T)
        assert np.array_equal(np.diag(cos), np.ones(3))
        assert np.all((cos >= -1) & (cos <= 1))


def test_conflict_fraction_matches_the_matrix(result):
    for cos, frac in [(result.cosine, result.conflict_fraction)] + [
        (layer["cosine"], layer["conflict_fraction"]) for layer in result.layers.values()
    ]:
        pairs = [cos[0, 1], cos[0, 2], cos[1, 2]]
        assert frac == sum(c < 0 for c in pairs) / 3


def test_layers_cover_the_trainable_parameters_and_the_overall_matrix(small_model, result):
    trainable = {n.split(".")[0] for n, p in small_model.named_parameters() if p.requires_grad}
    assert set(result.layers) == trainable
    assert sum(v["parameters"] for v in result.layers.values()) == small_model.num_parameters(trainable_only=True)
    # the overall Gram matrix is the sum of the per-layer ones
    norms2 = sum(np.asarray(v["grad_norms"]) ** 2 for v in result.layers.values())
    np.testing.assert_allclose(np.asarray(result.grad_norms) ** 2, norms2, rtol=1e-10)


def test_cosine_matches_a_direct_computation(small_model, batches):
    grads, _ = analysis.task_gradients(small_model, batches)
    flat = [torch.cat(list(g.values())) for g in grads.values()]
    direct = torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0).item()
    res = analysis.interference_from_gradients(grads)
    assert res.cosine[0, 1] == pytest.approx(direct, abs=1e-9)
    np.testing.assert_allclose(analysis.cosine_matrix(flat), res.cosine, atol=1e-12)


def test_two_identical_tasks_have_cosine_one():
    # Without DGPBs the prompt plays no part: the same batch under two names is the same task.
    model = analysis.build_model("restormer", seed=0, dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
    x, y = analysis.task_batches(["noise25"], batch=2, patch=32)["noise25"]
    res = analysis.measure_interference(model, {"noise25": (x, y), "rain": (x, y)})
    assert res.cosine[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert res.conflict_fraction == 0.0


def test_no_shuffle_makes_the_model_prompt_free(small_model):
    ablated = analysis.ablate(small_model, "no_shuffle")
    orders = analysis.channel_orders(ablated, DEGRADATIONS)
    for level, o in orders.items():
        assert np.array_equal(o, np.broadcast_to(np.arange(o.shape[1]), o.shape)), level
    x, y = analysis.task_batches(["noise25"], batch=2, patch=32)["noise25"]
    res = analysis.measure_interference(ablated, {"noise25": (x, y), "rain": (x, y)})
    assert res.cosine[0, 1] == pytest.approx(1.0, abs=1e-12)
    # the original model is untouched
    assert not np.array_equal(analysis.channel_orders(small_model, ["rain"])[1], orders[1][1:])


def test_ablations_change_only_their_switch(small_model):
    base = small_model.state_dict()
    no_dgpb = analysis.ablate(small_model, "no_dgpb")
    assert not no_dgpb.config.use_dgpb and not any(k.startswith("dgpb") for k in no_dgpb.state_dict())
    assert all(torch.equal(v, base[k]) for k, v in no_dgpb.state_dict().items())
    no_mask = analysis.ablate(small_model, "no_mask")
    assert no_mask.dgpb1.attn.k == small_model.config.dim // small_model.config.heads[0]
    learnable = analysis.ablate(small_model, "learnable")
    assert learnable.dgpb1.perturb.dgm.linear1.weight.requires_grad
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(learnable.restore(x, "rain"), small_model.restore(x, "rain"))
    with pytest.raises(ValueError, match="unknown ablation"):
        analysis.ablate(small_model, "no_prompts")
    with pytest.raises(ValueError, match="needs a model with DGPBs"):
        analysis.ablate(no_dgpb, "no_mask")


def test_conflicts_and_nan_handling():
    cos = analysis.cosine_matrix([np.array([1.0, 0]), np.array([-1.0, 0.1]), np.zeros(2)])
    assert cos[0, 1] < 0 and np.isnan(cos[0, 2]) and np.isnan(cos[2, 2])
    assert analysis.conflict_fraction(cos) == 1.0  # the only finite pair conflicts
    assert np.isnan(analysis.conflict_fraction(np.ones((1, 1))))


def test_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.permutation(50)
    assert analysis.rank_correlation(a, a) == pytest.approx(1.0)
    assert analysis.rank_correlation(a, a[::-1]) == pytest.approx(-1.0)
    b = rng.permutation(50)
    ra, rb = np.argsort(a), np.argsort(b)  # position of each channel
    d = ra - rb
    assert analysis.rank_correlation(a, b) == pytest.approx(1 - 6 * (d * d).sum() / (50 * (50**2 - 1)))
    sim = analysis.order_similarity(np.stack([a, b, a]))
    assert np.array_equal(sim, sim.T) and sim[0, 2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="permutations"):
        analysis.rank_correlation(np.array([0, 0, 1]), np.array([0, 1, 2]))


def test_channel_orders_and_attention_map(small_model):
    orders = analysis.channel_orders(small_model, DEGRADATIONS)
    for level, o in orders.items():
        assert o.shape == (3, 2 * small_model.config.width(level))
        assert all(np.array_equal(np.sort(row), np.arange(o.shape[1])) for row in o)
    attn = analysis.attention_map(small_model, torch.rand(1, 3, 24, 24), "rain", level=2)
    c = small_model.config.width(2) // small_model.config.heads[1]
    assert attn.shape == (1, small_model.config.heads[1], c, c)
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    assert ((attn == 0).sum(-1) == c - small_model.dgpb2.attn.k).all()


def test_plots_have_titles_and_colour_bars(result, small_model):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [
        analysis.plot_interference(result),
        analysis.plot_layer_matrices(result),
        analysis.plot_channel_orders(analysis.channel_orders(small_model, DEGRADATIONS)[1], DEGRADATIONS),
        analysis.plot_attention_map(torch.eye(4) * 0.5 + 0.125),
    ]
    for fig in figs:
        titled = [ax for ax in fig.axes if ax.get_title()] or ([fig] if fig.get_suptitle() else [])
        assert titled
        assert any(ax.get_ylabel() for ax in fig.axes)  # a colour bar or an axis carries a label
        plt.close(fig)


def test_cli_writes_png_and_json(tmp_path, capsys):
    out = tmp_path / "interference"
    code = analysis.main([
        "interference", "--preset", "tiny", "--set", "dim=8", "--degradations", "noise25", "rain",
        "--batch", "1", "--patch", "32", "--threads", "1", "--out", str(out),
    ])
    assert code == 0
    assert (out / "interference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "interference_layers.png").stat().st_size > 0
    data = json.loads((out / "interference.json").read_text())
    assert data["degradations"] == ["noise25", "rain"]
    cos = np.array(data["overall"]["cosine"])
    assert cos.shape == (2, 2) and cos[0, 0] == 1.0 and cos[0, 1] == cos[1, 0]
    assert data["overall"]["conflict_fraction"] == float(cos[0, 1] < 0)
    assert "dgpb1" in data["layers"] and data["meta"]["config"]["dim"] == 8
    assert "overall" in capsys.readouterr().out


def test_cli_on_a_checkpoint_with_an_ablation(tmp_path, small_model):
    path = tmp_path / "m.safetensors"
    dfpir.save(small_model, path)
    code = analysis.main([
        "interference", "--weights", str(path), "--ablation", "no_dgpb", "--degradations", "noise25", "haze",
        "--batch", "1", "--patch", "32", "--threads", "1", "--out", str(tmp_path / "o"),
    ])
    assert code == 0
    data = json.loads((tmp_path / "o" / "interference.json").read_text())
    assert data["meta"]["ablation"] == "no_dgpb" and not any(k.startswith("dgpb") for k in data["layers"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert analysis.main(["interference", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert analysis.main(["interference", "--preset", "tiny", "--degradations", "fog", "rain", "--out", str(tmp_path)]) == 2
    assert "unknown degradation" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch must be >= 1"),
    (["--patch", "0"], "--patch must be >= 1"),
    (["--patch", "-8"], "--patch must be >= 1"),
    (["--patch", "4096"], "--patch 4096 is larger than an image"),
    (["--threads", "-1"], "--threads must be >= 0"),
    (["--degradations", "rain"], "at least two different names"),
    (["--degradations", "rain", "rain"], "at least two different names"),
])
def test_interference_refuses_what_it_cannot_measure(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert analysis.main(["interference", "--preset", "tiny", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (out / "interference.json").exists()


def test_interference_checks_its_output_folder_first(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert analysis.main(["interference", "--preset", "tiny", "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_cli_reads_a_folder_of_clean_images(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "clean"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        iio.imwrite(folder / f"{i}.png", (rng.random((40, 48, 3)) * 255).astype(np.uint8))
    code = analysis.main([
        "interference", "--preset", "tiny", "--set", "dim=8", "--data", str(folder), "--degradations", "noise50", "blur",
        "--batch", "1", "--patch", "32", "--threads", "1", "--out", str(tmp_path / "o"),
    ])
    assert code == 0
    assert json.loads((tmp_path / "o" / "interference.json").read_text())["meta"]["data"] == str(folder)


def test_wiener_deconvolution_undoes_a_known_blur():
    from dfpir.degradations.synthetic import blur_kernels, filter2d, wiener_deconvolve
    from dfpir.metrics import psnr

    clean = analysis.clean_crops(count=8, patch=96, seed=1).double()
    kernels = blur_kernels(8, torch.Generator().manual_seed(0)).double()
    blurred = filter2d(clean, kernels)
    # the crops' reflected borders fit no kernel, so some crops ring: only the mean gain is reliable
    gains = [psnr(r, c) - psnr(b, c) for r, b, c in zip(wiener_deconvolve(blurred, kernels, 3e-3), blurred, clean)]
    assert np.mean(gains) > 2
    delta = torch.zeros(8, 5, 5, dtype=torch.float64)
    delta[:, 2, 2] = 1
    torch.testing.assert_close(wiener_deconvolve(clean, delta, 1e-9), clean)
    with pytest.raises(ValueError, match="nsr must be > 0"):
        wiener_deconvolve(clean, delta, 0.0)


def test_ensemble_wiener_of_one_kernel_is_wiener_with_that_kernel():
    from dfpir.degradations.synthetic import blur_kernels, ensemble_wiener, filter2d, wiener_deconvolve

    clean = analysis.clean_crops(count=3, patch=64, seed=2).double()
    kernel = blur_kernels(1, torch.Generator().manual_seed(5)).double()  # a shake path: not symmetric
    assert not torch.allclose(kernel, kernel.flip(-1, -2))
    blurred = filter2d(clean, kernel.expand(3, -1, -1))
    for ensemble in (kernel, kernel.expand(5, -1, -1)):
        torch.testing.assert_close(ensemble_wiener(blurred, ensemble, 1e-3, chunk=2), wiener_deconvolve(blurred, kernel.expand(3, -1, -1), 1e-3))
    with pytest.raises(ValueError, match="nsr must be >= 0"):
        ensemble_wiener(blurred, kernel, -1.0)
    with pytest.raises(ValueError, match="K odd"):
        ensemble_wiener(blurred, torch.ones(2, 4, 4), 1e-3)


def test_blur_bound_command(capsys, tmp_path):
    from dfpir.model.prompts import PromptBank

    torch.manual_seed(0)
    dfpir.save(DFPIR(get_config("tiny")), tmp_path / "m.safetensors")
    args = ["blur-bound", "--count", "8", "--patch", "96", "--threads", "1", "--weights", str(tmp_path / "m.safetensors")]
    r = analysis.run_blur_bound(analysis.build_parser().parse_args(args))
    assert r["gain"] > 1
    # one filter for every kernel is far from knowing each crop's kernel (on few small crops,
    # whose reflected borders fit no kernel, it may even lose: only the bound is asserted)
    assert r["fixed_gain"] < r["gain"] / 2
    out = capsys.readouterr().out
    assert f"input {r['input_psnr']:.2f} dB, Wiener deconvolution with the true kernel {r['wiener_psnr']:.2f} dB" in out
    assert f"one fixed filter for all kernels {r['fixed_psnr']:.2f} dB ({r['fixed_gain']:+.2f} dB)" in out
    restored = r["models"][str(tmp_path / "m.safetensors")]
    assert f"m.safetensors: {restored:.2f} dB ({restored - r['input_psnr']:+.2f} dB)" in out
    # an untrained model's random residual makes the crops worse, so the number is the model's
    assert restored < r["input_psnr"]
    bank = PromptBank.default()
    dfpir.save(DFPIR(get_config("tiny"), prompts=PromptBank({"rain": bank.embeddings["rain"]})), tmp_path / "rain.safetensors")
    assert analysis.main(["blur-bound", "--weights", str(tmp_path / "rain.safetensors")]) == 2
    assert "no 'blur' prompt" in capsys.readouterr().err
    assert analysis.main(["blur-bound", "--threads", "-1"]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err
    assert analysis.main(["blur-bound", "--patch", "4000"]) == 2
    err = capsys.readouterr().err
    assert "larger than an image" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the package's shape


def public_names(module: str) -> set[str]:
    """Functions, classes and constants a module of dfpir.analysis defines without a leading underscore."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
              for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def test_the_package_exports_every_public_name_of_its_modules():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))
    assert {"ablations", "interference", "orders", "plots", "blur_bound", "cli"} <= set(modules)
    defined = {name: m for m in modules for name in public_names(m)}
    assert set(defined) - set(analysis.__all__) == set(), "public names missing from dfpir.analysis.__all__"
    for name in analysis.__all__:
        module = importlib.import_module(f"dfpir.analysis.{defined[name]}")
        assert getattr(analysis, name) is getattr(module, name), name


def test_matplotlib_is_imported_only_inside_the_functions_that_draw():
    """matplotlib is optional (the dev extra): importing dfpir.analysis must not need it."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] == "matplotlib"], path.name

