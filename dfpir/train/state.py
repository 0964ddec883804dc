"""Training state in and out of a checkpoint: nested state dicts as safetensors tensors plus JSON,
and the weights a run starts from (``train.init``)."""

from __future__ import annotations

from typing import Any

import torch

from ..checkpoint import load, load_classifier
from ..errors import UserError
from ..model.classifier import DegradationClassifier, with_pooling
from ..model.network import DFPIR


def flatten_state(prefix: str, state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a nested state dict into tensors (by dotted name) and the JSON-able rest."""
    tensors, rest = {}, {}
    for key, value in state.items():
        name = f"{prefix}.{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            t, r = flatten_state(name, value)
            tensors.update(t)
            rest[str(key)] = r
        else:
            rest[str(key)] = value
    return tensors, rest


def unflatten_state(prefix: str, tensors: dict[str, torch.Tensor], rest: dict, int_keys: bool = False) -> dict:
    """Rebuild a nested state dict from [`flatten_state`][dfpir.train.state.flatten_state]'s tensors and JSON rest."""
    out: dict = {}
    for key, value in rest.items():
        k = int(key) if int_keys and key.isdigit() else key
        out[k] = unflatten_state(f"{prefix}.{key}", tensors, value, int_keys) if isinstance(value, dict) else value
    for name, value in tensors.items():
        if name.startswith(prefix + ".") and "." not in name[len(prefix) + 1 :]:
            key = name[len(prefix) + 1 :]
            out[int(key) if int_keys and key.isdigit() else key] = value
    return out


def state_mismatch(own: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str:
    """Why ``saved`` cannot be loaded into a module with state ``own`` ("" if it can)."""
    missing, unexpected = own.keys() - saved.keys(), saved.keys() - own.keys()
    reshaped = [k for k in own.keys() & saved.keys() if own[k].shape != saved[k].shape]
    if not (missing or unexpected or reshaped):
        return ""
    return (f"its tensors do not match this model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(reshaped)} of another shape)")


def load_initial_weights(restorer: DFPIR, classifier: DegradationClassifier | None, path: str) -> None:
    """Start from the restorer (and, for the same degradations, the classifier) of a checkpoint.

    The architecture must match the ``model`` section; a classifier trained for other degradations
    is left at its fresh initialisation, since its output classes differ. A classifier with another
    pooling (one refitted by ``python -m dfpir.train.refit_classifier --pooling``) gives its
    features and the head's weights for the statistics both poolings use
    ([`with_pooling`][dfpir.model.classifier.with_pooling]).
    """
    saved = load(path)
    try:
        restorer.load_state_dict(saved.state_dict())
    except RuntimeError:
        raise UserError(
            f"train.init={path} holds a {saved.config.preset!r} model that does not fit this run's; "
            f"set model.preset (and the other model.* keys) to match it"
        ) from None
    saved_classifier = load_classifier(path) if classifier is not None else None
    if saved_classifier is not None and saved_classifier.classes == classifier.classes:
        if saved_classifier.pooling != classifier.pooling:  # the shipped weights' classifier was refitted wider
            saved_classifier = with_pooling(saved_classifier, classifier.pooling)
        classifier.load_state_dict(saved_classifier.state_dict())
