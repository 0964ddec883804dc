"""Our checkpoint format: one safetensors file with the weights, the config and the prompt bank.

Layout: tensors ``model.<name>`` (the state dict) and ``prompt.<degradation>`` (the bank), and
string metadata ``format=dfpir``, ``format_version``, ``config`` (JSON), ``prompt_texts`` (JSON)
and ``prompt_order`` (JSON: the bank's order). ``dfpir.train`` adds its degradation classifier:
tensors ``classifier.<name>``, metadata ``classifier_classes`` (JSON) and ``classifier_temperature``
(its calibration; see [`load_classifier`][dfpir.checkpoint.load_classifier]). No pickle anywhere, so loading a checkpoint can
never run code. Saving is deterministic: the same model gives the same bytes in any process.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from .errors import UserError
from .files import atomic_write
from .model.classifier import POOLINGS, DegradationClassifier
from .model.config import DFPIRConfig
from .model.network import DFPIR
from .model.prompts import PromptBank

FORMAT = "dfpir"
FORMAT_VERSION = "1"


class CheckpointError(UserError):
    """A file that is not a usable dfpir checkpoint (the message says why and what to do)."""


def name_some(names: Iterable[str], shown: int = 5) -> str:
    """``'a', 'b', 'c' and 4 more``: every name when there are few, else the first ``shown`` and a count."""
    names = list(names)
    listed = ", ".join(repr(n) for n in names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file whose bytes depend only on ``tensors`` and ``metadata``.

    safetensors writes its metadata from a Rust ``HashMap``, whose order changes from call to
    call, so two saves of one model would differ. The header is rewritten here with sorted keys
    (its offsets are relative to the data, which stays as safetensors laid it out) and padded
    with spaces to a multiple of 8 bytes, as safetensors pads it.
    """
    raw = safetensors_save(dict(tensors), metadata=dict(metadata))
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    sorted_header = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    sorted_header += b" " * (-len(sorted_header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(sorted_header)))
        f.write(sorted_header)
        f.write(memoryview(raw)[8 + length :])


def save(model: DFPIR, path: str | Path, extra_metadata: Mapping[str, str] | None = None, extra_tensors: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` to ``path`` (atomically).

    ``extra_tensors`` (e.g. a degradation classifier) are stored under their own names, which must
    not start with ``model.`` or ``prompt.``.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"prompt.{n}": torch.from_numpy(v.copy()) for n, v in model.prompts.embeddings.items()})
    for k, v in (extra_tensors or {}).items():
        if k.startswith(("model.", "prompt.")):
            raise UserError(f"extra tensor name {k!r} collides with the checkpoint's own names")
        tensors[k] = v.detach().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "prompt_texts": json.dumps(model.prompts.texts, sort_keys=True),
        "prompt_order": json.dumps(model.prompts.names),  # the bank's order: safetensors sorts tensor names
        **(extra_metadata or {}),
    }
    atomic_write(path, lambda tmp: write_safetensors(tmp, tensors, metadata))


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a dfpir checkpoint, with one-line errors for anything else."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the weights file (.safetensors) inside it")
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same to the user
        hint = " (an original .pth.tar? convert it with python -m dfpir.convert)" if path.suffix in {".pth", ".tar", ".ckpt", ".pt"} else ""
        raise CheckpointError(f"{path} is not a safetensors checkpoint{hint}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a dfpir checkpoint (no 'format=dfpir' metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {metadata.get('format_version')!r}; this dfpir reads {FORMAT_VERSION}")
    return tensors, metadata


def state_dict_problem(exc: RuntimeError) -> str:
    """The first concrete problem in torch's multi-line ``load_state_dict`` error (its first line
    only says that there are errors)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
    return detail.rstrip(".")


def load(path: str | Path, device: str | torch.device = "cpu") -> DFPIR:
    """Load a checkpoint written by [`save`][dfpir.checkpoint.save] and return the model in eval mode on ``device``."""
    tensors, metadata = read(path)
    try:
        config = DFPIRConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config in the checkpoint ({exc})") from None
    try:
        texts = json.loads(metadata.get("prompt_texts", "{}"))
        order = json.loads(metadata.get("prompt_order", "[]"))
        vectors = {k[len("prompt."):]: v.numpy() for k, v in tensors.items() if k.startswith("prompt.")}
        names = [n for n in order if n in vectors] + sorted(n for n in vectors if n not in order)
        bank = PromptBank({n: vectors[n] for n in names}, texts)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid prompt bank in the checkpoint ({exc})") from None
    if bank.names and bank.dim != config.prompt_dim:
        raise CheckpointError(f"{path}: its prompt embeddings have width {bank.dim}, its model needs {config.prompt_dim}")
    model = DFPIR(config, prompts=bank)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        raise CheckpointError(f"{path}: unexpected weights for the {config.preset} architecture: {name_some(unexpected)}")
    for name, value in state.items():
        if value.shape != expected[name].shape:
            raise CheckpointError(f"{path}: weight {name!r} has shape {tuple(value.shape)}, the config needs {tuple(expected[name].shape)}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} missing weight(s): {name_some(missing)}")
    model.load_state_dict(state)
    return model.to(device).eval()


def load_classifier(path: str | Path, device: str | torch.device = "cpu"):
    """The degradation classifier stored beside the model by ``dfpir.train``, or ``None``.

    Its classes are the metadata ``classifier_classes`` (JSON), its temperature
    ``classifier_temperature`` (a number; 1 in checkpoints written before calibration), its
    pooling ``classifier_pooling`` (``meanstd`` when absent, as ``python -m dfpir.train`` writes).
    """
    tensors, metadata = read(path)
    if "classifier_classes" not in metadata:
        return None
    try:
        classes = json.loads(metadata["classifier_classes"])
    except ValueError:
        raise CheckpointError(f"{path}: the classifier's classes are not valid JSON") from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: the classifier's classes must be a list of degradation names")
    pooling = metadata.get("classifier_pooling", "meanstd")
    if pooling not in POOLINGS:
        raise CheckpointError(f"{path}: unknown classifier pooling {pooling!r} (this dfpir knows {', '.join(POOLINGS)}); upgrade dfpir")
    clf = DegradationClassifier(classes, temperature=classifier_temperature(path, metadata), pooling=pooling)
    state = {k[len("classifier."):]: v for k, v in tensors.items() if k.startswith("classifier.")}
    try:
        clf.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the stored classifier does not fit its classes: {state_dict_problem(exc)}") from None
    return clf.to(device).eval()


def classifier_temperature(path: str | Path, metadata: Mapping[str, str]) -> float:
    """The calibration temperature in ``metadata`` (1 when absent: checkpoints older than it)."""
    text = metadata.get("classifier_temperature", "1")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise CheckpointError(f"{path}: the classifier's temperature must be a positive number, got {text!r}")
    return value
