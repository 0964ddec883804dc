"""The single most convincing test: the original's output, reproduced from its own state dict."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import dfpir
from dfpir.errors import UserError
from dfpir.official import OfficialCheckpointError, infer_official_kwargs, official_config, official_to_ours

from .helpers import FIXTURE, load_fixture, to_official_names

needs_fixture = pytest.mark.skipif(not FIXTURE.exists(), reason="shared fixture not present")

# The DGPB sub-modules whose outputs the fixture records, under both names.
HOOKS = {
    "latent_shuffle_channel.conv1x1": "dgpb4.perturb.expand",
    "latent_shuffle_channel.conv_out": "dgpb4.perturb.reduce",
    "latent_shuffle_channel.select_attn": "dgpb4.attn",
    "encoder_shuffle_channel1.select_attn": "dgpb1.attn",
    "latent_shuffle_channel": "dgpb4",
    "encoder_shuffle_channel1": "dgpb1",
    "patch_embed": "embed",
    "latent": "latent",
    "decoder_level1": "decoder1",
    "refinement": "refinement",
    "output": "output",
}


@pytest.fixture(scope="module")
def fixture():
    return load_fixture()


@pytest.fixture(scope="module")
def model(fixture):
    return dfpir.from_official(fixture["state_dict"], **fixture["kwargs"])


@needs_fixture
def test_output_matches_original(fixture, model):
    with torch.no_grad():
        out = model(torch.from_numpy(fixture["input"]), torch.from_numpy(fixture["text_code"]))
    err = np.abs(out.numpy() - fixture["output"]).max()
    assert err < 1e-5, f"max abs difference to the original: {err:.3g}"


@needs_fixture
def test_intermediate_activations_match(fixture, model):
    captured = {}
    modules = dict(model.named_modules())
    handles = [
        modules[ours].register_forward_hook(lambda m, i, o, name=theirs: captured.__setitem__(name, o.detach()))
        for theirs, ours in HOOKS.items()
    ]
    model.set_fused(False)  # the hooks sit on the plain modules, which the strip kernels bypass
    try:
        with torch.no_grad():
            model(torch.from_numpy(fixture["input"]), torch.from_numpy(fixture["text_code"]))
    finally:
        model.set_fused(None)
        for h in handles:
            h.remove()
    for name in HOOKS:
        err = np.abs(captured[name].numpy() - fixture["activation"][name]).max()
        assert err < 1e-5, f"{name}: max abs difference {err:.3g}"


@needs_fixture
def test_channel_orders_match(fixture, model):
    prompt = torch.from_numpy(fixture["text_code"])
    for theirs, ours in {
        "encoder_shuffle_channel1": "dgpb1",
        "encoder_shuffle_channel2": "dgpb2",
        "encoder_shuffle_channel3": "dgpb3",
        "latent_shuffle_channel": "dgpb4",
    }.items():
        order = getattr(model, ours).perturb.order(prompt)
        np.testing.assert_array_equal(order.numpy(), fixture["order"][theirs], err_msg=theirs)


@needs_fixture
def test_shape_inference_recovers_the_constructor_arguments(fixture):
    kwargs = infer_official_kwargs({k: torch.from_numpy(v) for k, v in fixture["state_dict"].items()})
    for key, value in fixture["kwargs"].items():
        assert kwargs[key] == value
    assert kwargs["LayerNorm_type"] == "WithBias" and kwargs["bias"] is False


@needs_fixture
def test_every_official_name_of_the_paper_model_maps_to_ours():
    tsv = FIXTURE.parents[1] / "spec" / "official_state_dict_full.tsv"
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    ours = {k: tuple(v.shape) for k, v in dfpir.DFPIR(dfpir.get_config("paper")).state_dict().items()}
    mapped = {official_to_ours(name): tuple(int(s) for s in shape.strip("[]").split(", ")) for name, shape in rows}
    assert mapped == ours


@needs_fixture
def test_wrapper_prefixes_are_stripped(fixture):
    sd = {f"net.{k}": v for k, v in fixture["state_dict"].items()}
    dfpir.from_official(sd, **fixture["kwargs"])


@needs_fixture
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sd: sd.pop("output.weight"), "1 missing key.* 'output.weight'"),
        (lambda sd: sd.__setitem__("bogus.weight", np.zeros(3, np.float32)), "unexpected key.*: 'bogus.weight'"),
        (lambda sd: sd.__setitem__("output.weight", np.zeros((3, 4, 3, 3), np.float32)), "key 'output.weight' has shape"),
        (lambda sd: sd.__setitem__("output.weight", "weights"), "not arrays: 'output.weight'"),
    ],
)
def test_bad_state_dicts_name_the_key(fixture, mutate, message):
    sd = dict(fixture["state_dict"])
    mutate(sd)
    with pytest.raises(OfficialCheckpointError, match=message):
        dfpir.from_official(sd, **fixture["kwargs"])


@needs_fixture
def test_wrong_constructor_arguments_are_reported(fixture):
    with pytest.raises(OfficialCheckpointError):
        dfpir.from_official(fixture["state_dict"], **{**fixture["kwargs"], "dim": 16})


OTHER_CONFIGS = [
    dict(dim=24, num_blocks=[2, 3, 3, 4], num_refinement_blocks=2, heads=[1, 2, 4, 8], ffn_expansion_factor=2.0, bias=True, LayerNorm_type="BiasFree"),
    dict(dim=48, num_blocks=[1, 2, 2, 3], num_refinement_blocks=0, heads=[1, 2, 4, 8], ffn_expansion_factor=2.7, bias=False, LayerNorm_type="WithBias"),
    dict(dim=32, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[2, 2, 4, 4], ffn_expansion_factor=1.5, bias=False, LayerNorm_type="BiasFree"),
    dict(dim=48, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8], ffn_expansion_factor=2.3, bias=True, LayerNorm_type="WithBias"),
]


@pytest.mark.parametrize("kwargs", OTHER_CONFIGS, ids=lambda kw: f"dim{kw['dim']}-ffn{kw['ffn_expansion_factor']}")
def test_other_configurations_of_the_original_are_inferred_and_load(kwargs):
    """Widths, depths, heads, biases, norms and expansion factors other than the paper's; 2.7 and 2.3
    are truncated differently at each level, so no single level's width gives the factor."""
    torch.manual_seed(0)
    ours = dfpir.DFPIR(official_config(**kwargs)).eval()
    official = to_official_names(ours.state_dict())
    assert infer_official_kwargs(official) == kwargs
    again = dfpir.from_official(official, **infer_official_kwargs(official))
    image = torch.rand(1, 3, 20, 28)
    prompt = ours.embed_prompts("rain", 1)
    torch.testing.assert_close(again(image, prompt), ours(image, prompt), rtol=0, atol=0)


def test_expansion_factor_prefers_the_default_then_the_shortest_decimal():
    from dfpir.official import expansion_factor

    assert expansion_factor([(48, 127), (96, 255)]) == 2.66  # also fits 2.65..., the default wins
    assert expansion_factor([(48, 129), (96, 259)]) == 2.7  # 129 / 48 = 2.6875 would give 258 at 96
    assert expansion_factor([]) == 2.66
    with pytest.raises(OfficialCheckpointError, match="fit no single ffn_expansion_factor"):
        expansion_factor([(48, 129), (96, 200)])


TINY = dict(dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8])


def tiny_official() -> dict:
    torch.manual_seed(0)
    return to_official_names(dfpir.DFPIR(official_config(**TINY)).state_dict())


def test_every_problem_of_a_state_dict_is_named_in_one_line():
    sd = tiny_official()
    removed = [k for k in sd if k.startswith("refinement.")]
    for key in removed:
        del sd[key]
    sd["bogus.weight"] = torch.zeros(3)
    sd["output.weight"] = torch.zeros(3, 4, 3, 3)
    with pytest.raises(OfficialCheckpointError) as info:
        dfpir.from_official(sd, **TINY)
    message = str(info.value)
    assert "\n" not in message
    assert "unexpected key(s) with no place in this architecture: 'bogus.weight'" in message
    assert "key 'output.weight' has shape (3, 4, 3, 3), this architecture needs (3, 32, 3, 3)" in message
    assert f"{len(removed)} missing key(s)" in message and f"and {len(removed) - 5} more" in message
    assert all(repr(official_to_ours(k)) in message for k in removed[:5])  # the first five, by our names


@pytest.mark.parametrize("kwargs, message", [
    ({"dims": 48}, "unknown constructor argument(s) 'dims'"),
    ({"heads": ["a", 2, 4, 8]}, "invalid constructor arguments"),
    ({"dim": 15}, "dim must be a positive even number"),
])
def test_bad_constructor_arguments_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=re.escape(message)):
        dfpir.from_official(tiny_official(), **{**TINY, **kwargs})


def test_a_state_dict_whose_embedding_is_not_a_convolution_is_refused():
    sd = tiny_official()
    sd["patch_embed.proj.weight"] = torch.tensor(1.0)
    with pytest.raises(OfficialCheckpointError, match="not a convolution's"):
        infer_official_kwargs(sd)


def test_prompts_of_the_wrong_width_are_refused():
    bank = dfpir.PromptBank({"rain": np.ones(8, np.float32)})
    with pytest.raises(OfficialCheckpointError, match="width 8, the model needs 512"):
        dfpir.from_official(tiny_official(), prompts=bank, **TINY)
