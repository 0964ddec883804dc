"""Load the original DFPIR code's state dicts (its parameter names) into [`DFPIR`][dfpir.model.network.DFPIR]."""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .checkpoint import name_some
from .errors import UserError
from .model.config import DFPIRConfig
from .model.network import DFPIR
from .model.prompts import PromptBank

# (pattern, replacement) applied in order to every official name.
_RULES: list[tuple[str, str]] = [
    (r"^patch_embed\.proj\.", "embed."),
    (r"^encoder_level(\d)\.", r"encoder\1."),
    (r"^decoder_level(\d)\.", r"decoder\1."),
    (r"^down1_2\.body\.0\.", "down1.conv."),
    (r"^down2_3\.body\.0\.", "down2.conv."),
    (r"^down3_4\.body\.0\.", "down3.conv."),
    (r"^up4_3\.body\.0\.", "up3.conv."),
    (r"^up3_2\.body\.0\.", "up2.conv."),
    (r"^up2_1\.body\.0\.", "up1.conv."),
    (r"^reduce_chan_level(\d)\.", r"fuse\1."),
    (r"^latent_shuffle_channel\.", "dgpb4."),
    (r"^encoder_shuffle_channel(\d)\.", r"dgpb\1."),
    (r"^(dgpb\d)\.linear_layer1\.", r"\1.perturb.dgm.linear1."),
    (r"^(dgpb\d)\.linear_layer3\.", r"\1.perturb.dgm.linear2."),
    (r"^(dgpb\d)\.conv1x1\.", r"\1.perturb.expand."),
    (r"^(dgpb\d)\.conv_out\.", r"\1.perturb.reduce."),
    (r"^(dgpb\d)\.norm1\.", r"\1.norm_q."),
    (r"^(dgpb\d)\.norm2\.", r"\1.norm_kv."),
    (r"^(dgpb\d)\.norm3\.", r"\1.norm_ffn."),
    (r"^(dgpb\d)\.select_attn\.attn4$", r"\1.attn.scale"),
    (r"^(dgpb\d)\.select_attn\.", r"\1.attn."),
    (r"\.body\.(weight|bias)$", r".\1"),  # Restormer's LayerNorm wrapper
]
_WRAPPER_PREFIXES = ("module.", "net.", "model.")

OFFICIAL_DEFAULTS: dict[str, Any] = dict(
    dim=48,
    num_blocks=[4, 6, 6, 8],
    num_refinement_blocks=4,
    heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66,
    bias=False,
    LayerNorm_type="WithBias",
)


class OfficialCheckpointError(UserError):
    """An official state dict that does not fit the requested architecture (names the key)."""


def official_to_ours(name: str) -> str:
    """Map one parameter name of the original code to ours."""
    for pattern, repl in _RULES:
        name = re.sub(pattern, repl, name)
    return name


def strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``module.`` / ``net.`` prefixes that DataParallel or Lightning wrappers add."""
    out = dict(state_dict)
    for prefix in _WRAPPER_PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def official_config(
    dim: int = 48,
    num_blocks: Sequence[int] = (4, 6, 6, 8),
    num_refinement_blocks: int = 4,
    heads: Sequence[int] = (1, 2, 4, 8),
    ffn_expansion_factor: float = 2.66,
    bias: bool = False,
    LayerNorm_type: str = "WithBias",  # noqa: N803 - the original's spelling
    **ours: Any,
) -> DFPIRConfig:
    """Our config from the original constructor's keyword arguments (plus any of our own fields).

    Raises
    ------
    OfficialCheckpointError
        For an argument that neither the original nor [`DFPIRConfig`][dfpir.model.config.DFPIRConfig] knows, or a value of
        the wrong kind; a ``UserError`` from [`DFPIRConfig`][dfpir.model.config.DFPIRConfig] for values it cannot build.
    """
    unknown = sorted(set(ours) - {f.name for f in dataclasses.fields(DFPIRConfig)})
    if unknown:
        known = ", ".join([*OFFICIAL_DEFAULTS, "guidance", "keep_ratio", "prompt_dim"])
        raise OfficialCheckpointError(f"unknown constructor argument(s) {name_some(unknown)}; known: {known}")
    try:
        return DFPIRConfig(
            dim=dim,
            num_blocks=tuple(num_blocks),
            num_refinement_blocks=num_refinement_blocks,
            heads=tuple(heads),
            ffn_expansion_factor=ffn_expansion_factor,
            bias=bias,
            layernorm_type=LayerNorm_type,
            **ours,
        )
    except UserError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. heads=["a"]: DFPIRConfig's int() refuses it
        raise OfficialCheckpointError(f"invalid constructor arguments: {exc}") from None


def as_tensors(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict with NumPy arrays made tensors; anything that is not an array is refused by name."""
    tensors: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    for name, value in state_dict.items():
        try:
            tensors[name] = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):  # a string, an object array, ...
            bad.append(name)
    if bad:
        raise OfficialCheckpointError(f"the state dict holds values that are not arrays: {name_some(bad)}")
    return tensors


def infer_official_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Recover the original constructor's arguments from the shapes in an official state dict."""
    sd = strip_wrappers(as_tensors(state_dict))
    embed = sd.get("patch_embed.proj.weight")
    if embed is None or embed.ndim != 4 or embed.shape[0] == 0:
        problem = "missing key" if embed is None else f"key of shape {tuple(embed.shape)}, not a convolution's,"
        raise OfficialCheckpointError(f"{problem} 'patch_embed.proj.weight': not a DFPIR/Restormer state dict")
    dim = int(embed.shape[0])

    def count(prefix: str) -> int:
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"^{prefix}\.(\d+)\.", k))}
        return max(idx) + 1 if idx else 0

    def heads(prefix: str) -> int:
        key = f"{prefix}.0.attn.temperature"
        return int(sd[key].shape[0]) if key in sd and sd[key].ndim else 1

    widths = [(int(v.shape[0]), int(v.shape[1])) for k, v in sd.items() if k.endswith("ffn.project_out.weight") and v.ndim == 4 and v.shape[0]]
    return dict(
        dim=dim,
        num_blocks=[count("encoder_level1"), count("encoder_level2"), count("encoder_level3"), count("latent")],
        num_refinement_blocks=count("refinement"),
        heads=[heads("encoder_level1"), heads("encoder_level2"), heads("encoder_level3"), heads("latent")],
        ffn_expansion_factor=expansion_factor(widths),
        bias="patch_embed.proj.bias" in sd,
        LayerNorm_type="WithBias" if "encoder_level1.0.norm1.body.bias" in sd else "BiasFree",
    )


def expansion_factor(widths: Sequence[tuple[int, int]], default: float = 2.66) -> float:
    """The FFN expansion factor that gives every (channels, hidden) pair: ``int(C * f) == hidden``.

    Every GDFN of the network truncates ``C * f`` at its own width ``C``, so each pair bounds
    ``f`` to ``[hidden / C, (hidden + 1) / C)``. Returns ``default`` when it fits (or there are
    no pairs), else the value with the fewest decimals in the intersection (the one a person
    would have written, e.g. 2.7 rather than 2.6875, which fits level 1 but not level 2).

    Raises
    ------
    OfficialCheckpointError
        If no single factor fits every pair.
    """

    def fits(f: float) -> bool:
        return all(int(c * f) == h for c, h in widths)

    if not widths or fits(default):
        return default
    lo = max(h / c for c, h in widths)
    hi = min((h + 1) / c for c, h in widths)
    for decimals in range(1, 10):
        scale = 10**decimals
        f = math.ceil(lo * scale) / scale
        while f < hi:
            if fits(f):
                return f
            f = round(f + 1 / scale, decimals)
    raise OfficialCheckpointError(
        f"the FFN widths (channels, hidden) {sorted(set(widths))} fit no single ffn_expansion_factor: "
        "not a state dict of the original DFPIR"
    )


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], model: DFPIR) -> dict[str, torch.Tensor]:
    """Rename an official state dict to ``model``'s names, checking every key and shape.

    Raises
    ------
    OfficialCheckpointError
        Naming every unexpected key, wrong shape and missing key (the first few of each and a
        count), in one line.
    """
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unexpected, reshaped, present = [], [], set()
    for name, value in strip_wrappers(as_tensors(state_dict)).items():
        new = official_to_ours(name)
        present.add(new)
        if new not in ours:
            unexpected.append(name)
        elif tuple(value.shape) != tuple(ours[new].shape):
            reshaped.append(f"key {name!r} has shape {tuple(value.shape)}, this architecture needs {tuple(ours[new].shape)}")
        else:
            converted[new] = value
    missing = [k for k in ours if k not in present]
    problems = []
    if unexpected:
        problems.append(f"unexpected key(s) with no place in this architecture: {name_some(unexpected)}")
    if reshaped:
        problems.append(", ".join(reshaped[:3]) + (f" and {len(reshaped) - 3} more of the wrong shape" if len(reshaped) > 3 else ""))
    if missing:
        problems.append(f"{len(missing)} missing key(s) (our names): {name_some(missing)}")
    if problems:
        raise OfficialCheckpointError("; ".join(problems) + " (check the config)")
    return converted


def from_official(
    state_dict: Mapping[str, Any],
    *,
    prompts: PromptBank | None = None,
    guidance: str = "faithful",
    **kwargs: Any,
) -> DFPIR:
    """Build our model, in eval mode, from a state dict in the original code's naming.

    Parameters
    ----------
    state_dict : mapping
        Parameters under the original names (``numpy`` arrays or tensors); wrapper prefixes such as
        ``net.`` are removed.
    prompts : PromptBank, optional
        Embeddings to carry (default: the local hashing bank; released weights expect CLIP's).
    guidance : str
        Our guidance mode (``"faithful"`` reproduces the original).
    **kwargs
        The original constructor's arguments: ``dim``, ``num_blocks``, ``num_refinement_blocks``,
        ``heads``, ``ffn_expansion_factor``, ``bias``, ``LayerNorm_type`` (paper values by default).

    Returns
    -------
    DFPIR
        ``model(image, prompt)`` reproduces the original's output.
    """
    config = official_config(**{**OFFICIAL_DEFAULTS, **kwargs}, guidance=guidance)
    if prompts is not None and prompts.names and prompts.dim != config.prompt_dim:
        raise OfficialCheckpointError(f"the prompt embeddings have width {prompts.dim}, the model needs {config.prompt_dim}")
    model = DFPIR(config, prompts=prompts)
    model.load_state_dict(convert_state_dict(state_dict, model))
    return model.eval()


def looks_like(head: bytes) -> str | None:
    """What a file that is not a PyTorch checkpoint seems to be, from its first bytes; ``None``
    for the containers ``torch.save`` writes (a zip archive, or a pickle before PyTorch 1.6)."""
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return None
    if head[257:262] == b"ustar":  # the tar container of the oldest torch.save
        return None
    signatures = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"II*\x00": "a TIFF image",
                  b"MM\x00*": "a TIFF image", b"\x93NUMPY": "a NumPy .npy array", b"\x1f\x8b": "a gzip file"}
    for magic, kind in signatures.items():
        if head.startswith(magic):
            return kind
    if len(head) > 9 and head[8:10] == b'{"':  # 8-byte header length, then JSON
        return "a safetensors file (if it is a dfpir checkpoint, use it directly)"
    return "empty" if not head else "neither the zip archive nor the pickle that torch.save writes"


def load_official_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a released ``.pth``/``.pth.tar``/``.ckpt`` safely (``weights_only=True``: no code runs).

    Raises
    ------
    OfficialCheckpointError
        In one line, for a file that is not a PyTorch checkpoint (saying what it looks like), one
        that asks to run code or build objects on loading (naming them), and one that holds
        anything but a state dict of tensors (at the top or under ``"state_dict"``).
    """
    path = Path(path)
    if path.is_dir():
        raise OfficialCheckpointError(f"{path} is a folder; give the checkpoint file (.pth, .pth.tar or .ckpt)")
    if not path.is_file():
        raise OfficialCheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise OfficialCheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    kind = looks_like(head)
    if kind is not None:
        raise OfficialCheckpointError(f"{path} is not a PyTorch checkpoint: it is {kind}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises loading with weights_only=False, i.e. running the file's code:
        # we never do, and never repeat that advice; only what it refused is worth passing on.
        refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        if refused:
            what = f"code or objects ({refused.group(1)})"
        elif detail and "weights_only" not in detail.group(1):
            what = f"a pickle ({detail.group(1).strip().rstrip('.')})"
        else:
            what = "a pickle"
        raise OfficialCheckpointError(
            f"{path} holds {what} that a safe load refuses; dfpir never unpickles code, "
            "so the checkpoint must hold only tensors (a state dict)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive or pickle fails in many types
        reason = next((line for line in str(exc).strip().splitlines() if "weights_only" not in line), "") or type(exc).__name__
        raise OfficialCheckpointError(f"{path} is not a readable PyTorch checkpoint: {reason}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise OfficialCheckpointError(f"{path} does not hold a state dict of tensors: it holds a {type(obj).__name__}")
    others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise OfficialCheckpointError(f"{path} does not hold a state dict of tensors (not tensors: {name_some(others)})")
    return obj
