"""Pretrained CLIP weights: OpenAI's published ViT-B/32 file (downloaded only when asked) or a local file.

Two formats are read, and only their text tower is kept:

- OpenAI's ``ViT-B-32.pt``, the file ``clip.load("ViT-B/32")`` downloads: a TorchScript archive
  holding float16 weights (its SHA-256 is part of its URL and is checked);
- a state dict under OpenAI's names (``token_embedding.weight``, ``transformer.resblocks.0...``)
  or Hugging Face's (``text_model.embeddings...``, e.g. ``openai/clip-vit-base-patch32``'s
  ``model.safetensors`` or ``pytorch_model.bin``), as safetensors or a PyTorch file.

Nothing is downloaded unless [`download`][dfpir.clip.weights.download] is called (``--download`` on the command line).
"""

from __future__ import annotations

import os
import pickle
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file

from ..errors import UserError
from ..files import atomic_write
from ..progress import progress
from .text_encoder import VIT_B_32, ClipTextConfig, ClipTextEncoder
from ..files import file_sha256

VIT_B_32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
VIT_B_32_URL = f"https://openaipublic.azureedge.net/clip/models/{VIT_B_32_SHA256}/ViT-B-32.pt"

# OpenAI's names -> ours, per block and for the rest (Hugging Face's are mapped in hf_to_openai).
_BLOCK_NAMES = {
    "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias",
    "attn.in_proj_weight": "attention.qkv.weight", "attn.in_proj_bias": "attention.qkv.bias",
    "attn.out_proj.weight": "attention.out.weight", "attn.out_proj.bias": "attention.out.bias",
    "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.0.weight", "mlp.c_fc.bias": "mlp.0.bias",
    "mlp.c_proj.weight": "mlp.2.weight", "mlp.c_proj.bias": "mlp.2.bias",
}
_TOP_NAMES = {
    "token_embedding.weight": "token_embedding",
    "positional_embedding": "position_embedding",
    "ln_final.weight": "final_norm.weight",
    "ln_final.bias": "final_norm.bias",
    "text_projection": "projection",
}
_HF_BLOCK_NAMES = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
}


def default_weights_path() -> Path:
    """Where ``--download`` puts the file: ``$XDG_CACHE_HOME/dfpir/clip/ViT-B-32.pt`` (``~/.cache`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dfpir" / "clip" / "ViT-B-32.pt"


def download(path: Path | None = None, url: str = VIT_B_32_URL, sha256: str = VIT_B_32_SHA256,
             opener: Callable[[str], Any] = urllib.request.urlopen) -> Path:
    """Download OpenAI's ViT-B/32 file to ``path`` (default [`default_weights_path`][dfpir.clip.weights.default_weights_path]) and check its SHA-256.

    A file already there with the right hash is kept. The download goes to a temporary file that
    replaces ``path`` only once its hash is right. ``opener`` is ``urllib.request.urlopen`` (a test
    passes a fake one). Returns the path.

    Raises
    ------
    UserError
        When the server cannot be reached (naming the URL, so the file can be fetched by hand and
        given with ``--clip-weights``), or the hash differs.
    """
    path = Path(path or default_weights_path())
    if path.is_file() and file_sha256(path) == sha256:
        return path

    def fetch(tmp: str) -> None:
        try:
            response = opener(url)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"cannot download {url}: {reason}; fetch it by other means and pass it with --clip-weights PATH") from None
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = progress(total, desc=f"downloading {url.rsplit('/', 1)[-1]}", unit="B")
        try:
            with response, open(tmp, "wb") as out:
                for piece in iter(lambda: response.read(1 << 20), b""):
                    out.write(piece)
                    bar.update(len(piece))
        finally:
            bar.close()
        got = file_sha256(Path(tmp))
        if got != sha256:
            raise UserError(f"the file downloaded from {url} has SHA-256 {got}, expected {sha256}; nothing was kept")

    atomic_write(path, fetch)
    return path


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in z.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a CLIP weights file (see the module docstring for the formats).

    A TorchScript archive is read with ``torch.jit.load`` (its code is TorchScript, run by
    PyTorch's interpreter, never Python; only its parameters are taken); any other PyTorch file
    with ``torch.load(weights_only=True)``, so a pickle cannot run code.

    Raises
    ------
    UserError
        For a missing file or one that none of the readers accepts.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CLIP weights {'path is a folder' if path.is_dir() else 'not found'}: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        if is_torchscript(path):
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format OpenAI published
                warnings.simplefilter("ignore", DeprecationWarning)
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if refused is None:  # a damaged or foreign pickle
            raise UserError(f"cannot read CLIP weights from {path}: not a PyTorch file of tensors") from None
        raise UserError(f"{path} holds a pickle that asks to build objects or run code ({refused.group(1)}); dfpir never "
                        "unpickles code, so CLIP weights must be tensors only (OpenAI's ViT-B-32.pt, safetensors or a state dict)") from None
    except Exception as exc:  # noqa: BLE001 - each reader fails in its own types; all mean "not readable"
        # torch's refusal advises loading without weights_only, i.e. running the file's code: never repeated
        lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "weights" not in line.lower()]
        raise UserError(f"cannot read CLIP weights from {path}: {lines[0] if lines else type(exc).__name__}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors, so it cannot be CLIP's weights")
    return obj


def hf_to_openai(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face's text-tower names -> OpenAI's (the separate q, k, v projections packed into one)."""
    out: dict[str, torch.Tensor] = {}
    prefix = "text_model."
    for name, value in state_dict.items():
        if name == "text_projection.weight":
            out["text_projection"] = value.T  # a bias-free Linear's weight is the matrix transposed
        elif name == f"{prefix}embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif name == f"{prefix}embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif name.startswith(f"{prefix}final_layer_norm."):
            out["ln_final." + name.rsplit(".", 1)[1]] = value
        elif m := re.fullmatch(rf"{prefix}encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", name):
            block, module, kind = m.groups()
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                continue  # packed below
            out[f"transformer.resblocks.{block}.{_HF_BLOCK_NAMES.get(module, module)}.{kind}"] = value
    blocks = {int(m.group(1)) for n in state_dict if (m := re.match(rf"{prefix}encoder\.layers\.(\d+)\.self_attn\.q_proj", n))}
    for b in sorted(blocks):
        layer = f"{prefix}encoder.layers.{b}.self_attn"
        for kind, packed in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            parts = [state_dict.get(f"{layer}.{p}_proj.{kind}") for p in "qkv"]
            if all(p is not None for p in parts):
                out[f"transformer.resblocks.{b}.attn.{packed}"] = torch.cat(parts)  # type: ignore[arg-type]
    return out


def text_config(state_dict: Mapping[str, torch.Tensor]) -> ClipTextConfig:
    """The text tower's sizes, read off OpenAI-named shapes (heads = width / 64, CLIP's rule)."""
    try:
        vocab, width = state_dict["token_embedding.weight"].shape
        context = state_dict["positional_embedding"].shape[0]
        embed = state_dict["text_projection"].shape[1]
    except (KeyError, ValueError, IndexError) as exc:
        raise UserError(f"not CLIP's text weights: no usable {exc}") from None
    layers = len({m.group(1) for n in state_dict if (m := re.match(r"transformer\.resblocks\.(\d+)\.", n))})
    return ClipTextConfig(vocab_size=int(vocab), context_length=int(context), width=int(width), heads=max(int(width) // 64, 1),
                          layers=layers, embed_dim=int(embed))


def text_weights(state_dict: Mapping[str, torch.Tensor]) -> tuple[ClipTextConfig, dict[str, torch.Tensor]]:
    """The text tower of a CLIP state dict (OpenAI's or Hugging Face's names) under our names, as float32.

    Raises
    ------
    UserError
        Naming what is missing or of the wrong shape when it is not a CLIP text tower.
    """
    sd = hf_to_openai(state_dict) if any(k.startswith("text_model.") for k in state_dict) else dict(state_dict)
    config = text_config(sd)
    ours: dict[str, torch.Tensor] = {}
    for name, value in sd.items():
        if name in _TOP_NAMES:
            ours[_TOP_NAMES[name]] = value
        elif (m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", name)) and m.group(2) in _BLOCK_NAMES:
            ours[f"blocks.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"] = value
    shapes = {k: tuple(v) for k, v in _shapes(config).items()}
    missing = [k for k in shapes if k not in ours]
    wrong = [f"{k} {tuple(ours[k].shape)} (expected {shapes[k]})" for k in shapes if k in ours and tuple(ours[k].shape) != shapes[k]]
    if missing or wrong:
        problems = ([f"missing {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")] if missing else []) + wrong[:3]
        raise UserError(f"not a CLIP text tower: {'; '.join(problems)}")
    return config, {k: v.float() for k, v in ours.items()}


def _shapes(config: ClipTextConfig) -> dict[str, torch.Size]:
    """Our parameter names and shapes for ``config``, from a model on the meta device (no memory, no random draws)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in ClipTextEncoder(config, random_init=False).state_dict().items()}


def load_text_encoder(path: str | Path, precision: str = "fp16") -> ClipTextEncoder:
    """The text encoder with the weights of ``path``, cast as ``clip.load`` leaves it for ``precision``
    (see [`ClipTextEncoder.set_precision`][dfpir.clip.text_encoder.ClipTextEncoder.set_precision]), in eval mode on the CPU."""
    config, weights = text_weights(read_state_dict(path))
    with torch.device("meta"):  # no memory and no random draws for weights about to be replaced
        encoder = ClipTextEncoder(config, random_init=False)
    encoder.load_state_dict(weights, assign=True)
    return encoder.set_precision(precision).eval()


def describe(path: str | Path) -> str:
    """``"OpenAI's ViT-B-32.pt"`` when the file's SHA-256 is that of the published file, else what it is not."""
    digest = file_sha256(Path(path))
    if digest == VIT_B_32_SHA256:
        return "OpenAI's ViT-B-32.pt (SHA-256 verified)"
    return f"not OpenAI's published ViT-B-32.pt (SHA-256 {digest[:12]}...): make sure it holds ViT-B/32's weights"


def is_vit_b_32(config: ClipTextConfig) -> bool:
    """Whether the sizes are those of ViT-B/32's text tower (ViT-B/16's has the same sizes, other weights)."""
    return config == VIT_B_32
