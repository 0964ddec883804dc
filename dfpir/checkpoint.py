"""Our checkpoint format: one safetensors file with the weights, the config and the prompt bank.

Layout: tensors ``model.<name>`` (the state dict) and ``prompt.<degradation>`` (the bank), and
string metadata ``format=dfpir``, ``format_version``, ``config`` (JSON) and ``prompt_texts``
(JSON). No pickle anywhere, so loading a checkpoint can never run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from .errors import UserError
from .files import atomic_write
from .model.config import DFPIRConfig
from .model.network import DFPIR
from .model.prompts import PromptBank

FORMAT = "dfpir"
FORMAT_VERSION = "1"


class CheckpointError(UserError):
    """A file that is not a usable dfpir checkpoint (the message says why and what to do)."""


def save(model: DFPIR, path: str | Path, extra_metadata: Mapping[str, str] | None = None, extra_tensors: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` to ``path`` (atomically).

    ``extra_tensors`` (e.g. a degradation classifier) are stored under their own names, which must
    not start with ``model.`` or ``prompt.``.
    """
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"prompt.{n}": torch.from_numpy(v.copy()) for n, v in model.prompts.embeddings.items()})
    for k, v in (extra_tensors or {}).items():
        if k.startswith(("model.", "prompt.")):
            raise UserError(f"extra tensor name {k!r} collides with the checkpoint's own names")
        tensors[k] = v.detach().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "prompt_texts": json.dumps(model.prompts.texts),
        "prompt_order": json.dumps(model.prompts.names),  # safetensors sorts its keys
        **(extra_metadata or {}),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a dfpir checkpoint, with one-line errors for anything else."""
    from safetensors import safe_open

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
    """Load a checkpoint written by :func:`save` and return the model in eval mode on ``device``."""
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
    for name, value in state.items():
        if name not in expected:
            raise CheckpointError(f"{path}: unexpected weight {name!r} for the {config.preset} architecture")
        if value.shape != expected[name].shape:
            raise CheckpointError(f"{path}: weight {name!r} has shape {tuple(value.shape)}, the config needs {tuple(expected[name].shape)}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing weight {missing[0]!r} ({len(missing)} in all)")
    model.load_state_dict(state)
    return model.to(device).eval()


def load_classifier(path: str | Path, device: str | torch.device = "cpu"):
    """The degradation classifier stored beside the model by ``dfpir.train``, or ``None``."""
    from .model.classifier import DegradationClassifier

    tensors, metadata = read(path)
    if "classifier_classes" not in metadata:
        return None
    clf = DegradationClassifier(json.loads(metadata["classifier_classes"]))
    state = {k[len("classifier."):]: v for k, v in tensors.items() if k.startswith("classifier.")}
    try:
        clf.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the stored classifier does not fit its classes: {state_dict_problem(exc)}") from None
    return clf.to(device).eval()
