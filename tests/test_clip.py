"""dfpir.clip: CLIP's tokenizer, its text encoder with the original's precision semantics, the weights
readers and ``python -m dfpir.clip prompts``. Offline: random weights of the real architecture, no download."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

from dfpir.clip import cli as clip_cli
from dfpir.clip import weights as clip_weights
from dfpir.clip.prompts import clip_prompt_bank, encode_texts, prompt_texts
from dfpir.clip.text_encoder import VIT_B_32, ClipTextConfig, ClipTextEncoder, causal_mask
from dfpir.clip.tokenizer import (
    CONTEXT_LENGTH,
    VOCAB_FILE,
    VOCAB_SHA256,
    VOCAB_SIZE,
    clean,
    default_tokenizer,
    extra_available,
)
from dfpir.degradations import DEGRADATIONS
from dfpir.errors import UserError
from dfpir.files import file_sha256
from dfpir.model.prompts import PromptBank

pytestmark = pytest.mark.usefixtures("one_thread")

needs_extra = pytest.mark.skipif(not extra_available(), reason="the clip extra is not installed (pip install 'dfpir[clip]': ftfy, regex)")

#: A small text tower (the real vocabulary and context, so real token ids fit; 512-value features as DFPIR's prompts).
SMALL = ClipTextConfig(width=64, heads=2, layers=2)
#: One whose head count follows CLIP's rule (width / 64), as a weights file is read.
FILE_SIZED = ClipTextConfig(width=128, heads=2, layers=1)


def small_encoder(seed: int = 0, config: ClipTextConfig = SMALL) -> ClipTextEncoder:
    """Random weights, rounded to float16 values as OpenAI's published file holds them."""
    torch.manual_seed(seed)
    encoder = ClipTextEncoder(config).eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(p.half().float())
    return encoder


def openai_state_dict(encoder: ClipTextEncoder, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """``encoder``'s weights under OpenAI's names, in ``dtype`` (the published file is float16), plus a vision key."""
    top = {ours: theirs for theirs, ours in clip_weights._TOP_NAMES.items()}
    block = {ours: theirs for theirs, ours in clip_weights._BLOCK_NAMES.items()}
    out = {}
    for name, value in encoder.state_dict().items():
        if name in top:
            out[top[name]] = value.to(dtype)
        else:
            _, index, rest = name.split(".", 2)
            out[f"transformer.resblocks.{index}.{block[rest]}"] = value.to(dtype)
    out["visual.proj"] = torch.zeros(4, 4, dtype=dtype)  # ignored: only the text tower is read
    return out


def hf_state_dict(encoder: ClipTextEncoder) -> dict[str, torch.Tensor]:
    """``encoder``'s weights under Hugging Face's names (q, k, v separate; the projection a Linear's weight)."""
    sd = openai_state_dict(encoder, torch.float32)
    out = {"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
           "text_model.final_layer_norm.weight": sd["ln_final.weight"], "text_model.final_layer_norm.bias": sd["ln_final.bias"],
           "text_projection.weight": sd["text_projection"].T.contiguous(),
           "text_model.embeddings.position_ids": torch.arange(77)[None]}
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(encoder.config.layers):
        prefix, hf = f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}"
        for theirs, ours in names.items():
            for kind in ("weight", "bias"):
                out[f"{hf}.{ours}.{kind}"] = sd[f"{prefix}.{theirs}.{kind}"]
        for kind, packed in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            for part, value in zip("qkv", sd[f"{prefix}.attn.{packed}"].chunk(3)):
                out[f"{hf}.self_attn.{part}_proj.{kind}"] = value.contiguous()
    return out


def tokens_with_eot(rows: list[list[int]], eot: int) -> torch.Tensor:
    """(N, 77) token ids: each row's ids, then ``eot``, then zeros."""
    out = torch.zeros(len(rows), CONTEXT_LENGTH, dtype=torch.int64)
    for r, ids in enumerate(rows):
        out[r, : len(ids) + 1] = torch.tensor([*ids, eot])
    return out


# --- the tokenizer --------------------------------------------------------------------------------


def test_the_shipped_vocabulary_is_openais_file():
    assert file_sha256(VOCAB_FILE) == VOCAB_SHA256
    assert VOCAB_FILE.with_name("LICENSE-bpe_simple_vocab_16e6.txt").read_text().count("Copyright (c) 2021 OpenAI") == 1


@needs_extra
def test_the_vocabulary_has_clips_size_and_special_ids():
    tok = default_tokenizer()
    assert len(tok.tokens) == VOCAB_SIZE and (tok.sot, tok.eot) == (49406, 49407)
    assert tok.eot == max(tok.ids.values()), "the encoder pools at the argmax: <|endoftext|> must be the largest id"


# Computed with OpenAI's clip.simple_tokenizer (clip-anytorch 2.6.0) on the shipped vocabulary;
# "a photo of a cat" is also the example of Hugging Face's CLIP documentation.
OPENAI_IDS = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "Gaussian noise with a standard deviation of 15": [5919, 31218, 9307, 593, 320, 5807, 12926, 656, 539, 272, 276],
    "Gaussian noise with a standard deviation of 50": [5919, 31218, 9307, 593, 320, 5807, 12926, 656, 539, 276, 271],
    "Rain degradation with rain lines": [2443, 44468, 593, 2443, 3418],
    "Hazy degradation with normal haze": [32655, 44468, 593, 5967, 22785],
    "Blur degradation with motion blur": [27976, 44468, 593, 7860, 27976],
    "Lowlight degradation": [1049, 1395, 44468],
    "Noise": [9307],
    "Rain": [2443],
    "Haze": [22785],
}


@needs_extra
@pytest.mark.parametrize("text", OPENAI_IDS)
def test_texts_tokenize_to_the_ids_openais_tokenizer_gives(text):
    tok = default_tokenizer()
    assert tok.encode(text) == OPENAI_IDS[text]
    row = tok(text)[0]
    n = len(OPENAI_IDS[text])
    assert row[: n + 2].tolist() == [49406, *OPENAI_IDS[text], 49407] and not row[n + 2 :].any()


@needs_extra
def test_every_registered_prompt_text_tokenizes_within_the_context():
    tok = default_tokenizer()
    for row in DEGRADATIONS.values():
        for text in (row.detailed, row.simple):
            ids = tok(text)[0]
            assert ids[0] == tok.sot and tok.eot in ids.tolist()


@needs_extra
def test_cleaning_lowercases_unescapes_and_collapses_whitespace():
    tok = default_tokenizer()
    assert clean("  RAIN\t\n lines &amp;amp; ") == "rain lines &"
    assert tok.encode("  RAIN\t\n Lines ") == tok.encode("rain lines")
    assert tok.encode("a &lt; b") == tok.encode("a < b")
    assert tok.encode("15") == [272, 276], "digits are words of their own"
    assert tok.encode("<|endoftext|>") == [tok.eot], "as CLIP, the special tokens' text is the special token"


@needs_extra
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<>"), max_size=30))
def test_decoding_gives_back_the_cleaned_words(text):
    tok = default_tokenizer()
    assert tok.decode(tok.encode(text)).split() == tok.pattern.findall(clean(text))


@needs_extra
def test_a_text_longer_than_the_context_is_refused_or_truncated():
    tok = default_tokenizer()
    long = "rain " * 100
    with pytest.raises(UserError, match="more than the context of 77; shorten it"):
        tok(long)
    row = tok(long, truncate=True)[0]
    assert row.shape == (77,) and row[-1] == tok.eot and row[0] == tok.sot and (row[1:-1] == tok.encode("rain")[0]).all()


@needs_extra
def test_a_batch_is_int64_padded_with_zeros():
    tokens = default_tokenizer()(["Rain", "Hazy degradation with normal haze"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.int64
    assert tokens[0, :3].tolist() == [49406, 2443, 49407] and not tokens[0, 3:].any()


# --- the text encoder -----------------------------------------------------------------------------


def test_the_default_architecture_is_vit_b_32s_text_tower():
    with torch.device("meta"):  # shapes only
        encoder = ClipTextEncoder(random_init=False)
    w, blocks = 512, 12
    per_block = (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w) + 2 * 2 * w  # qkv, out, mlp, two norms
    assert encoder.config == VIT_B_32
    assert encoder.num_parameters() == 49408 * w + 77 * w + blocks * per_block + 2 * w + w * 512 == 63_428_096
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes["token_embedding"] == (49408, 512) and shapes["position_embedding"] == (77, 512)
    assert shapes["blocks.11.attention.qkv.weight"] == (1536, 512) and shapes["blocks.11.mlp.0.weight"] == (2048, 512)
    assert shapes["projection"] == (512, 512) and "blocks.12.norm1.weight" not in shapes


def test_the_encoder_gives_one_float_vector_per_text_deterministically():
    encoder = small_encoder()
    tokens = tokens_with_eot([[320, 1125], [2443], [5919, 31218, 9307]], 49407)
    with torch.no_grad():
        out = encoder(tokens)
        again = small_encoder()(tokens)
    assert out.shape == (3, 512) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, again), "same seed, same weights, same features"
    assert not torch.equal(out[0], out[1])


def test_features_are_pooled_at_the_end_of_text_token():
    encoder = small_encoder()
    tokens = tokens_with_eot([[320, 1125, 539]], 49407)  # <|endoftext|> (the largest id) at position 3
    seen = {}
    hook = encoder.final_norm.register_forward_hook(lambda module, args, out: seen.update(x=out))  # returns None: output kept
    with torch.no_grad():
        out = encoder(tokens)
    hook.remove()
    assert torch.equal(out, seen["x"][:, 3] @ encoder.projection)
    # The causal mask hides what follows the end token; what precedes it matters.
    after, before = tokens.clone(), tokens.clone()
    after[0, 10] = 999
    before[0, 1] = 999
    with torch.no_grad():
        assert torch.equal(encoder(after), out)
        assert not torch.allclose(encoder(before), out)


def test_the_mask_is_causal_and_the_batch_does_not_mix_rows():
    mask = causal_mask(4, torch.float16, torch.device("cpu"))
    assert mask.dtype == torch.float16 and (mask.tril() == 0).all() and torch.isinf(mask.triu(1)[0, 1:]).all()
    encoder = small_encoder()
    tokens = tokens_with_eot([[320, 1125], [2443, 2443, 3418]], 49407)
    with torch.no_grad():
        together = encoder(tokens)
        alone = torch.cat([encoder(tokens[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def numpy_forward(encoder: ClipTextEncoder, tokens: np.ndarray) -> np.ndarray:
    """An independent float64 NumPy twin of the fp32 forward (the oracle for the module's wiring)."""
    sd = {k: v.double().numpy() for k, v in encoder.state_dict().items()}
    cfg = encoder.config
    d = cfg.width // cfg.heads

    def norm(x, prefix):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"]

    def linear(x, prefix):
        return x @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]

    length = tokens.shape[1]
    x = sd["token_embedding"][tokens] + sd["position_embedding"][:length]  # (N, L, width)
    hidden = np.triu(np.full((length, length), -np.inf), 1)
    for i in range(cfg.layers):
        b = f"blocks.{i}"
        q, k, v = np.split(linear(norm(x, f"{b}.norm1"), f"{b}.attention.qkv"), 3, axis=-1)
        heads = []
        for h in range(cfg.heads):
            qh, kh, vh = (t[..., h * d : (h + 1) * d] for t in (q, k, v))
            logits = qh @ kh.transpose(0, 2, 1) / np.sqrt(d) + hidden
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            heads.append(weights / weights.sum(-1, keepdims=True) @ vh)
        x = x + linear(np.concatenate(heads, -1), f"{b}.attention.out")
        hid = linear(norm(x, f"{b}.norm2"), f"{b}.mlp.0")
        x = x + linear(hid / (1 + np.exp(-1.702 * hid)), f"{b}.mlp.2")
    x = norm(x, "final_norm")
    return x[np.arange(len(tokens)), tokens.argmax(-1)] @ sd["projection"]


def test_the_fp32_forward_matches_a_numpy_twin():
    encoder = small_encoder(3)
    tokens = tokens_with_eot([[320, 1125, 539, 320, 2368], [9307]], 49407)
    with torch.no_grad():
        out = encoder(tokens).double().numpy()
    np.testing.assert_allclose(out, numpy_forward(encoder, tokens.numpy()), rtol=1e-5, atol=1e-5)


# OpenAI's clip/model.py (clip-anytorch 2.6.0), run on the CPU with the weights of small_encoder(0)
# under its names: CLIP(...).encode_text in float32, and after clip's convert_weights (float16), one
# text per call. First six values and the norm of each row; ours matched them bit for bit there.
OPENAI_FEATURES = {
    "fp32": [([-0.410882, 0.217497, -0.650811, 0.843331, 1.020759, -1.488955], 22.90905),
             ([-1.949339, -0.501478, -0.074621, -0.021303, -1.703597, -0.353177], 22.54371)],
    "fp16": [([-0.412109, 0.215454, -0.650879, 0.845215, 1.020508, -1.490234], 22.90917),
             ([-1.948242, -0.500488, -0.075745, -0.020981, -1.703125, -0.352295], 22.54611)],
}


# The reference values were recorded where oneDNN multiplies float16 with AVX-512 or AVX2 kernels. On
# a CPU with AVX512-FP16 or AMX its native float16 kernels round some products differently (one
# float16 step, 1.2e-4 at 0.2), so the fp16 case runs in a process whose oneDNN is capped below them:
# the same arithmetic as where the values were recorded, on any x86 CPU.
ONEDNN_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
TEXTS = ("a photo of a cat", "Gaussian noise with a standard deviation of 15")


def features_in_a_capped_process(precision: str) -> list[list[float]]:
    """Our small encoder's features of ``TEXTS``, computed in a fresh process under ``ONEDNN_CAP``."""
    code = (f"import json, sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_clip as t; "
            f"enc = t.small_encoder(0).set_precision({precision!r}); tok = t.default_tokenizer(); "
            "torch.set_grad_enabled(False); "
            "print(json.dumps([enc(tok(x)).float()[0].tolist() for x in t.TEXTS]))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **ONEDNN_CAP}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@needs_extra
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_features_are_those_openais_clip_code_computes(precision):
    if precision == "fp16":
        rows = [torch.tensor(r) for r in features_in_a_capped_process(precision)]
    else:
        encoder = small_encoder(0).set_precision(precision)
        tok = default_tokenizer()
        with torch.no_grad():
            rows = [encoder(tok(text)).float()[0] for text in TEXTS]
    for row, (head, norm) in zip(rows, OPENAI_FEATURES[precision]):
        np.testing.assert_allclose(row[:6].numpy(), head, rtol=0, atol=2e-6)
        assert abs(float(row.norm()) - norm) < 2e-5


def test_fp16_runs_in_float16_as_clip_load_leaves_it_on_a_gpu():
    encoder = small_encoder().set_precision("fp16")
    assert encoder.blocks[0].attention.qkv.weight.dtype == torch.float16 and encoder.projection.dtype == torch.float16
    assert encoder.token_embedding.dtype == torch.float32, "clip keeps the embeddings float32"
    assert encoder.final_norm.weight.dtype == torch.float32 and encoder.blocks[0].norm1.weight.dtype == torch.float32
    dtypes = []
    for block in encoder.blocks:
        block.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    encoder.blocks[0].norm1.register_forward_hook(lambda module, args, out: dtypes.append(("norm", out.dtype)))
    tokens = tokens_with_eot([[320, 1125, 539]], 49407)
    with torch.no_grad():
        half = encoder(tokens)
        full = small_encoder().set_precision("fp32")(tokens)
    assert half.dtype == torch.float16 and dtypes == [("norm", torch.float16), torch.float16, torch.float16]
    difference = float((half.float() - full).norm() / full.norm())
    assert 0 < difference < 5e-3, f"float16 should round, slightly: relative difference {difference}"


def test_precision_switches_both_ways_and_refuses_others():
    encoder = small_encoder()
    tokens = tokens_with_eot([[2443]], 49407)
    with torch.no_grad():
        before = encoder(tokens)
        encoder.set_precision("fp16")
        assert encoder.precision == "fp16"
        after = encoder.set_precision("fp32")(tokens)
    assert torch.equal(before, after), "the weights are float16 values, so the round trip is exact"
    with pytest.raises(UserError, match="precision must be one of fp16, fp32, got 'bf16'"):
        encoder.set_precision("bf16")


# --- the prompt embeddings ------------------------------------------------------------------------


def test_prompt_sets_read_the_registry():
    assert prompt_texts("detailed", ["noise15"]) == {"noise15": "Gaussian noise with a standard deviation of 15"}
    assert prompt_texts("simple", ["noise15", "noise50", "rain", "haze"]) == {"noise15": "Noise", "noise50": "Noise", "rain": "Rain", "haze": "Haze"}
    assert list(prompt_texts()) == list(DEGRADATIONS)
    with pytest.raises(UserError, match="prompt set must be one of detailed, simple"):
        prompt_texts("short")


@needs_extra
def test_each_prompt_is_encoded_alone_and_not_normalised():
    encoder = small_encoder()
    bank = clip_prompt_bank(encoder, "simple", ["noise15", "noise25", "rain"])
    assert bank.names == ["noise15", "noise25", "rain"] and bank.texts["rain"] == "Rain"
    np.testing.assert_array_equal(bank["noise15"], bank["noise25"])  # the simple prompts share "Noise"
    with torch.no_grad():
        alone = encoder(default_tokenizer()("Rain"))[0].numpy()
    np.testing.assert_array_equal(bank["rain"], alone)
    assert abs(float(np.linalg.norm(bank["rain"])) - 1) > 0.1, "CLIP features as they come, not unit vectors"
    assert encode_texts(encoder, {"x": "Rain"})["x"].dtype == np.float32


# --- weights files --------------------------------------------------------------------------------


def test_openai_and_hugging_face_files_load_the_same_encoder(tmp_path):
    encoder = small_encoder(config=FILE_SIZED)
    torch.save(openai_state_dict(encoder), tmp_path / "openai.pt")
    from safetensors.torch import save_file

    save_file(hf_state_dict(encoder), str(tmp_path / "model.safetensors"))
    tokens = tokens_with_eot([[320, 1125, 539]], 49407)
    with torch.no_grad():
        expected = encoder(tokens)
        for name in ("openai.pt", "model.safetensors"):
            loaded = clip_weights.load_text_encoder(tmp_path / name, "fp32")
            assert loaded.config == FILE_SIZED
            torch.testing.assert_close(loaded(tokens), expected, rtol=1e-6, atol=1e-6)
        assert clip_weights.load_text_encoder(tmp_path / "openai.pt", "fp16").dtype == torch.float16


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, 1)
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Transformer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(_Block(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class _OpenAIClip(nn.Module):
    """A module under OpenAI's names, to be saved as a TorchScript archive like ViT-B-32.pt."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(49408, width)
        self.positional_embedding = nn.Parameter(torch.randn(77, width))
        self.transformer = _Transformer(width)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(x) @ self.text_projection


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_a_torchscript_archive_like_openais_is_read(tmp_path):
    torch.manual_seed(0)
    scripted = torch.jit.script(_OpenAIClip())
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(scripted, str(path))
    assert clip_weights.is_torchscript(path)
    encoder = clip_weights.load_text_encoder(path, "fp32")
    assert encoder.config == ClipTextConfig(width=32, heads=1, layers=1)
    torch.testing.assert_close(encoder.blocks[0].attention.qkv.weight, scripted.transformer.resblocks[0].attn.in_proj_weight)
    torch.testing.assert_close(encoder.projection, scripted.text_projection)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "CLIP weights not found"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "cannot read CLIP weights from"),
    (lambda p: p.write_bytes(b"\x80\x02garbage"), "cannot read CLIP weights from .*: not a PyTorch file of tensors"),
    (lambda p: torch.save({"conv.weight": torch.zeros(3, 3)}, p), "not a CLIP text tower|not CLIP's text weights"),
    (lambda p: torch.save({"state_dict": {"token_embedding.weight": torch.zeros(10, 8), "positional_embedding": torch.zeros(77, 8),
                                          "text_projection": torch.zeros(8, 512)}}, p), "not a CLIP text tower: missing"),
    (lambda p: torch.save([1, 2], p), "does not hold a state dict"),
    (lambda p: torch.save({"a": _Evil()}, p), r"holds a pickle that asks to build objects or run code \(print\); dfpir never"),
])
def test_unusable_weights_files_are_refused_in_one_line(tmp_path, make, message, capsys):
    path = tmp_path / "weights.pt"
    make(path)
    with pytest.raises(UserError, match=message) as info:
        clip_weights.load_text_encoder(path)
    assert "\n" not in str(info.value)
    assert "pwned" not in capsys.readouterr().out, "a pickle ran code"


class _Response(io.BytesIO):
    headers = {"Content-Length": "12"}


def test_download_checks_the_hash_and_keeps_nothing_wrong(tmp_path):
    content = b"clip weights"
    good = hashlib.sha256(content).hexdigest()
    target = tmp_path / "cache" / "ViT-B-32.pt"
    assert clip_weights.download(target, "https://example.invalid/ViT-B-32.pt", good, opener=lambda url: _Response(content)) == target
    assert target.read_bytes() == content
    calls = []
    assert clip_weights.download(target, "https://x.invalid/a", good, opener=calls.append) == target and not calls, "kept, not fetched again"
    other = tmp_path / "other.pt"
    with pytest.raises(UserError, match="has SHA-256 .* expected 0+; nothing was kept"):
        clip_weights.download(other, "https://example.invalid/ViT-B-32.pt", "0" * 64, opener=lambda url: _Response(content))
    assert not other.exists() and not list(tmp_path.glob(".*tmp"))

    def offline(url):
        raise urllib.error.URLError("no network")

    with pytest.raises(UserError, match="cannot download https://example.invalid/x.pt: no network; .* --clip-weights PATH"):
        clip_weights.download(other, "https://example.invalid/x.pt", good, opener=offline)


def test_the_published_files_url_carries_its_hash():
    assert clip_weights.VIT_B_32_URL.endswith(f"/{clip_weights.VIT_B_32_SHA256}/ViT-B-32.pt")


# --- python -m dfpir.clip prompts -----------------------------------------------------------------


@pytest.fixture
def weights_file(tmp_path):
    encoder = small_encoder(config=FILE_SIZED)
    path = tmp_path / "small_clip.pt"
    torch.save(openai_state_dict(encoder), path)
    return path, encoder


@needs_extra
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_the_command_writes_a_prompt_file_convert_reads(weights_file, tmp_path, capsys, suffix):
    path, encoder = weights_file
    out = tmp_path / f"prompts{suffix}"
    argv = ["prompts", "-o", str(out), "--clip-weights", str(path), "--precision", "fp32", "--degradations", "noise25,rain"]
    assert clip_cli.main(argv) == 0
    bank = PromptBank.from_file(out, dim=512)
    assert bank.names == ["noise25", "rain"]
    expected = clip_prompt_bank(encoder.set_precision("fp32"), "detailed", ["noise25", "rain"])
    np.testing.assert_array_equal(bank["rain"], expected["rain"])
    if suffix == ".safetensors":
        assert bank.texts == {"noise25": "Gaussian noise with a standard deviation of 25", "rain": "Rain degradation with rain lines"}
    printed = capsys.readouterr().out
    assert "2 CLIP ViT-B/32 text embeddings of the detailed prompts, fp32" in printed and "not OpenAI's published ViT-B-32.pt" in printed
    assert not list(tmp_path.glob(".*tmp*"))


@needs_extra
def test_the_command_finds_an_earlier_download_and_never_downloads_unasked(weights_file, tmp_path, monkeypatch, capsys):
    path, _ = weights_file
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(clip_weights.urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded without --download"))
    out = tmp_path / "p.safetensors"
    assert clip_cli.main(["prompts", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CLIP weights: pass --clip-weights PATH") and "--download" in err and "\n" not in err
    cached = clip_weights.default_weights_path()
    assert cached == tmp_path / "cache" / "dfpir" / "clip" / "ViT-B-32.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    assert clip_cli.main(["prompts", "-o", str(out), "--precision", "fp32", "--degradations", "haze"]) == 0
    assert PromptBank.from_file(out).names == ["haze"]


@needs_extra
@pytest.mark.parametrize("argv, message", [
    (["prompts", "-o", "p.txt", "--clip-weights", "w.pt"], "prompt files are .safetensors or .npz"),
    (["prompts", "-o", "p.npz", "--clip-weights", "missing.pt"], "CLIP weights not found: missing.pt"),
    (["prompts", "-o", "p.npz", "--clip-weights", "w.pt", "--degradations", "rain,snow"], "--degradations: unknown degradation 'snow'"),
])
def test_the_command_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert clip_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("p.*"))


@pytest.mark.parametrize("argv, message", [
    (["prompts", "-o", "p.npz", "--clip-weights", "w.pt", "--download"], "not allowed with argument"),
    (["prompts", "-o", "p.npz", "--precision", "bf16"], "invalid choice: 'bf16'"),
    (["--no-such-option"], "error: python -m dfpir.clip: "),
])
def test_the_command_refuses_bad_options_in_one_line(capsys, argv, message):
    import dfpir.clip

    with pytest.raises(SystemExit) as info:
        dfpir.clip.main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and message in err and len(err.splitlines()) == 1
