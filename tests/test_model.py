"""Properties of the PyTorch model: size, gradients, shapes, batching, tie rules and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dfpir
from dfpir.errors import UserError
from dfpir.model.masked_attention import kept_per_row, masked_softmax, topk_mask
from dfpir.model.perturbation import channel_order, channel_perturbation, inverse_order


def tiny(**overrides) -> dfpir.DFPIR:
    torch.manual_seed(0)
    return dfpir.DFPIR(dfpir.get_config("tiny", **overrides)).eval()


def test_paper_preset_has_the_original_parameter_count():
    with torch.device("meta"):
        model = dfpir.DFPIR(dfpir.get_config("paper"))
    assert model.num_parameters() == 31_104_761
    dgm = sum(p.numel() for n, p in model.named_parameters() if ".dgm." in n)
    assert dgm == 1_789_344
    assert model.num_parameters(trainable_only=True) == 31_104_761 - dgm


def test_restormer_preset_has_no_dgpb_and_needs_no_prompt():
    model = dfpir.DFPIR(dfpir.get_config("restormer", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1))
    assert not any(n.startswith("dgpb") for n, _ in model.named_parameters())
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_gradients_reach_every_parameter_except_the_frozen_dgm():
    model = tiny().train()
    image, prompt = torch.rand(2, 3, 24, 24), torch.randn(2, 512)
    model(image, prompt).abs().mean().backward()
    for name, p in model.named_parameters():
        if ".dgm." in name:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_frozen_dgm_gets_no_gradient_even_if_unfrozen_by_hand():
    # Faithful mode runs the DGM without autograd, so even requires_grad=True gives no gradient.
    model = tiny().train()
    model.requires_grad_(True)
    model(torch.rand(1, 3, 16, 16), torch.randn(1, 512)).mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".dgm." in n)


def test_learnable_guidance_trains_the_dgm_and_keeps_the_forward():
    faithful = tiny()
    learnable = tiny(guidance="learnable")
    learnable.load_state_dict(faithful.state_dict())
    image, prompt = torch.rand(2, 3, 16, 16), torch.randn(2, 512)
    torch.testing.assert_close(learnable(image, prompt), faithful(image, prompt), rtol=0, atol=0)
    learnable.train()
    learnable(image, prompt).abs().mean().backward()
    for name, p in learnable.named_parameters():
        if ".dgm." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("h, w", [(16, 16), (17, 9), (5, 13), (1, 1), (3, 40), (33, 31)])
def test_any_size_comes_back_at_its_own_size(h, w):
    model = tiny()
    with torch.no_grad():
        out = model(torch.rand(1, 3, h, w), torch.randn(1, 512))
    assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()


def test_mixed_prompt_batch_equals_per_sample_runs():
    model = tiny()
    image = torch.rand(3, 3, 16, 24)
    prompt = model.embed_prompts(["noise25", "rain", "haze"])
    with torch.no_grad():
        batched = model(image, prompt)
        single = torch.cat([model(image[i : i + 1], prompt[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_different_degradations_give_different_channel_orders():
    model = tiny()
    orders = model.dgpb4.perturb.order(model.embed_prompts(["noise15", "rain", "haze", "blur"]))
    assert len({tuple(o.tolist()) for o in orders}) == 4


@pytest.mark.parametrize(
    "image, prompt, error, message",
    [
        (torch.rand(1, 1, 16, 16), torch.randn(1, 512), ValueError, r"shape \(B, 3, H, W\)"),
        (torch.rand(3, 16, 16), torch.randn(1, 512), ValueError, r"shape \(B, 3, H, W\)"),
        (torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8), torch.randn(1, 512), TypeError, "float tensor"),
        (torch.rand(1, 3, 16, 16), torch.randn(1, 256), ValueError, r"prompt must have shape \(1, 512\)"),
        (torch.rand(2, 3, 16, 16), torch.randn(1, 512), ValueError, r"prompt must have shape \(2, 512\)"),
        (torch.rand(1, 3, 16, 16), torch.full((1, 512), float("nan")), ValueError, "NaN"),
        (torch.rand(1, 3, 16, 16), None, ValueError, "needs a prompt"),
        (torch.rand(0, 3, 16, 16), torch.randn(0, 512), ValueError, "batch is empty"),
        (torch.rand(1, 3, 16, 16, dtype=torch.float64), torch.randn(1, 512), TypeError, "image is torch.float64 but the model's weights are torch.float32"),
    ],
)
def test_bad_inputs_raise_clear_errors(image, prompt, error, message):
    with pytest.raises(error, match=message):
        tiny()(image, prompt)


def test_restore_names_must_match_the_batch():
    with pytest.raises(ValueError, match="got 1 degradation names for a batch of 2"):
        tiny().restore(torch.rand(2, 3, 16, 16), ["rain"])
    with torch.no_grad():
        assert tiny().restore(torch.rand(2, 3, 16, 16), ["rain", "haze"]).shape == (2, 3, 16, 16)
        assert tiny().double().restore(torch.rand(1, 3, 16, 16, dtype=torch.float64), "rain").dtype == torch.float64


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dim=7), "even"),
        (dict(heads=(3, 2, 4, 8)), "cannot be split into 3 heads"),
        (dict(layernorm_type="Foo"), "layernorm_type"),
        (dict(guidance="soft"), "guidance"),
        (dict(keep_ratio=0.0), "keep_ratio"),
    ],
)
def test_invalid_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        dfpir.get_config("tiny", **overrides)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="paper, restormer, small, tiny"):
        dfpir.get_config("huge")


# --- tie rules -------------------------------------------------------------------------------


def test_channel_order_is_stable_descending():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 1.0]])
    assert channel_order(scores).tolist() == [[1, 2, 4, 0, 5, 3]]


def test_channel_perturbation_is_a_permutation_and_inverts():
    x = torch.randn(3, 10, 4, 5)
    order = torch.stack([torch.randperm(10) for _ in range(3)])
    y = channel_perturbation(x, order)
    for b in range(3):
        for i in range(10):
            assert torch.equal(y[b, i], x[b, order[b, i]])
    assert torch.equal(channel_perturbation(y, inverse_order(order)), x)


def test_topk_mask_keeps_exactly_k_lowest_index_first_among_ties():
    logits = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0, 1.0]])
    assert topk_mask(logits, 3).tolist() == [[True, True, True, False, False, False]]
    all_equal = torch.zeros(2, 5, 7)
    mask = topk_mask(all_equal, 4)
    assert (mask.sum(-1) == 4).all() and mask[..., :4].all()


def test_masked_softmax_rows_sum_to_one_with_masked_entries_exactly_zero():
    logits = torch.randn(2, 3, 9, 9)
    attn = masked_softmax(logits, kept_per_row(9))
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 9))
    assert ((attn == 0).sum(-1) == 9 - kept_per_row(9)).all()


@pytest.mark.parametrize("c, k", [(48, 43), (16, 14), (10, 9), (8, 7), (2, 1), (1, 1)])
def test_kept_per_row_matches_the_original_and_never_drops_everything(c, k):
    assert kept_per_row(c) == k


def test_one_channel_heads_do_not_produce_nan():
    model = dfpir.DFPIR(dfpir.get_config("tiny", dim=2, heads=(2, 4, 8, 16))).eval()
    out = model(torch.rand(1, 3, 8, 8), torch.randn(1, 512))
    assert torch.isfinite(out).all()


def test_summary_counts_the_padded_image_and_refuses_impossible_sizes(capsys):
    from dfpir import summary

    cfg = dfpir.get_config("tiny")
    f32, f64, f128 = (summary.count_flops(cfg, n) for n in (32, 64, 128))
    # every conv and matmul is linear in the pixel count; only the prompt's DGM is constant
    assert f128 - f64 == 4 * (f64 - f32) > 0
    assert summary.count_flops(cfg, 13) == summary.count_flops(cfg, 16)  # padded to a multiple of 8
    assert summary.main(["--size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --size must be >= 1 (pixels), got 0"


def test_non_finite_images_are_refused_where_images_enter():
    from dfpir.data import SyntheticDataset
    from dfpir.inference.runner import Restorer

    bad = np.full((16, 16, 3), 0.5, dtype=np.float32)
    bad[3, 4, 1] = np.nan
    restorer = Restorer()  # the shipped weights
    with pytest.raises(UserError, match="NaN or infinite"):
        restorer.restore(bad, restorer.prompt("rain"))
    with pytest.raises(UserError, match="'photo' contains NaN or infinite"):
        SyntheticDataset([("photo", bad)], ["rain"], 8, length=1)


def test_the_training_forward_compiles_as_one_graph():
    # A graph break (such as a data-dependent branch in the input checks) would cut
    # torch.compile's training step in pieces; fullgraph=True turns any break into an error.
    # The eager backend traces the graph without paying for code generation.
    model = tiny(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=0).train()
    image, prompt = torch.rand(2, 3, 16, 16), torch.randn(2, 512)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(image, prompt), model(image, prompt), rtol=0, atol=0)
