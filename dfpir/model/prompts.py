"""The prompt bank: degradation name -> the prompt embedding that steers the DGPBs.

The original encodes each degradation's text prompt with the frozen OpenAI CLIP ViT-B/32 text
encoder (512-d). CLIP is not required here: the default bank embeds the same texts with
[`HashingTextEncoder`][dfpir.model.prompts.HashingTextEncoder], a deterministic local bag-of-words encoder, so similar prompts
("... deviation of 15" / "... of 25") get similar embeddings. The CLIP embeddings of the original
prompts come from [`dfpir.clip`][dfpir.clip] (``python -m dfpir.clip prompts``, the ``clip`` extra) and load
with [`PromptBank.from_file`][dfpir.model.prompts.PromptBank.from_file].
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from ..degradations.registry import DEGRADATIONS
from ..errors import UserError


class HashingTextEncoder:
    """Deterministic local text encoder: the scaled sum of per-word pseudo-random vectors.

    Each lower-cased word seeds a Gaussian vector from its SHA-256 digest, so the embedding of a
    text is reproducible on any machine and texts sharing words are close. It is *not* CLIP and
    carries no semantics beyond shared words; it exists so that the model works offline.

    Parameters
    ----------
    dim : int
        Embedding width.
    """

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim

    def word_vector(self, word: str) -> np.ndarray:
        """A deterministic pseudo-random vector for one word (seeded by its SHA-256)."""
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim)

    def __call__(self, text: str) -> np.ndarray:
        words = re.findall(r"[a-z0-9]+", text.lower())
        if not words:
            raise UserError("cannot embed an empty prompt text")
        return (sum(self.word_vector(w) for w in words) / np.sqrt(len(words))).astype(np.float32)


def embedding_problems(arrays: Mapping[str, np.ndarray], dim: int | None = None) -> list[str]:
    """``"name (what is wrong)"`` for every entry that is not a finite, non-zero vector of numbers
    of width ``dim`` (default: the width most entries have)."""
    vectors = {n: a for n, a in arrays.items() if a.ndim == 1 and (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer))}
    widths = [len(a) for a in vectors.values()]
    width = dim if dim is not None else max(set(widths), key=widths.count, default=0)
    problems = []
    for name, a in arrays.items():
        if name not in vectors:
            problems.append(f"{name} (shape {a.shape}, dtype {a.dtype}: not a vector of numbers)")
        elif len(a) != width:
            problems.append(f"{name} (width {len(a)}, {'the model needs' if dim is not None else 'the others have'} {width})")
        elif not np.isfinite(a).all():
            problems.append(f"{name} (NaN or infinite values)")
        elif not a.any():
            problems.append(f"{name} (all zeros: no channel order can be read from it)")
    return problems


class PromptBank:
    """Degradation name -> prompt embedding, carried inside every checkpoint.

    Parameters
    ----------
    embeddings : mapping of str to array
        One (dim,) vector per degradation name.
    texts : mapping of str to str, optional
        The prompt text each embedding was computed from (for the record).
    """

    def __init__(self, embeddings: Mapping[str, np.ndarray], texts: Mapping[str, str] | None = None) -> None:
        self.embeddings: dict[str, np.ndarray] = {}
        self.texts: dict[str, str] = dict(texts or {})
        for name, vec in embeddings.items():
            self.add(name, vec)

    @property
    def dim(self) -> int:
        """Width of the embeddings (0 for an empty bank)."""
        return len(next(iter(self.embeddings.values()))) if self.embeddings else 0

    @property
    def names(self) -> list[str]:
        """Degradation names in the bank, in insertion order."""
        return list(self.embeddings)

    def add(self, name: str, vector: np.ndarray | torch.Tensor, text: str | None = None) -> None:
        """Add or replace one embedding."""
        vec = np.asarray(vector.detach().cpu() if isinstance(vector, torch.Tensor) else vector, dtype=np.float32)
        if vec.ndim != 1:
            raise UserError(f"prompt embedding {name!r} must be a vector, got shape {vec.shape}")
        if self.embeddings and len(vec) != self.dim:
            raise UserError(f"prompt embedding {name!r} has width {len(vec)}, the bank has {self.dim}")
        if not np.isfinite(vec).all():
            raise UserError(f"prompt embedding {name!r} contains NaN or infinite values")
        self.embeddings[name] = vec
        if text is not None:
            self.texts[name] = text

    def __contains__(self, name: str) -> bool:
        return name in self.embeddings

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.embeddings:
            raise UserError(f"no prompt embedding for {name!r}; this model knows: {', '.join(self.embeddings)}")
        return self.embeddings[name]

    def embed(self, names: Iterable[str]) -> torch.Tensor:
        """(B, dim) float32 tensor of the embeddings of ``names``."""
        return torch.from_numpy(np.stack([self[n] for n in names]))

    @classmethod
    def default(cls, dim: int = 512, style: str = "detailed") -> "PromptBank":
        """Every registered degradation embedded by [`HashingTextEncoder`][dfpir.model.prompts.HashingTextEncoder] from its text."""
        return cls.from_texts({n: getattr(d, style) for n, d in DEGRADATIONS.items()}, HashingTextEncoder(dim))

    @classmethod
    def from_texts(cls, texts: Mapping[str, str], encoder) -> "PromptBank":
        """Embed ``name -> text`` with any callable ``encoder(text) -> vector``."""
        return cls({n: encoder(t) for n, t in texts.items()}, texts)

    @classmethod
    def from_file(cls, path: str | Path, dim: int | None = None) -> "PromptBank":
        """Load ``name -> vector`` from ``.npz`` or ``.safetensors`` (e.g. CLIP text features).

        Every entry must be a finite, non-zero vector of numbers, all of one width (``dim`` when
        given): a zero vector has no channel order (its argsort is arbitrary). The names keep the
        file's order, and a ``.safetensors`` file's ``texts`` metadata (written by
        [`to_file`][dfpir.model.prompts.PromptBank.to_file]) is kept too.

        Raises
        ------
        UserError
            One line naming the file and every unusable entry with its problem.
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"prompt embedding {'path is a folder' if path.is_dir() else 'file not found'}: {path}")
        if path.suffix not in (".npz", ".safetensors"):
            raise UserError(f"{path}: prompt embeddings must be an .npz or .safetensors file of name -> vector")
        if path.suffix == ".npz" and not zipfile.is_zipfile(path):
            raise UserError(f"cannot read prompt embeddings from {path}: not an .npz archive (numpy.savez writes one)")
        texts: object = {}
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="np") as f:
                    metadata = f.metadata() or {}
                    names = json.loads(metadata.get("names", "[]"))
                    texts = json.loads(metadata.get("texts", "{}"))
                    keys = [n for n in names if n in f.keys()] + sorted(k for k in f.keys() if k not in names)
                    arrays = {k: f.get_tensor(k) for k in keys}
            else:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
            raise UserError(f"cannot read prompt embeddings from {path}: {exc}") from None
        if not arrays:
            raise UserError(f"{path} holds no prompt embeddings")
        if not (isinstance(texts, dict) and all(isinstance(t, str) for t in texts.values())):
            raise UserError(f"{path}: its 'texts' metadata must map names to prompt texts")
        problems = embedding_problems(arrays, dim)
        if problems:
            raise UserError(f"{path}: unusable prompt embeddings: {'; '.join(problems)}")
        return cls(arrays, {n: t for n, t in texts.items() if n in arrays})

    def to_file(self, path: str | Path) -> None:
        """Write the bank as ``.npz`` or ``.safetensors`` (by suffix)."""
        path = Path(path)
        if path.suffix == ".safetensors":
            metadata = {"texts": json.dumps(self.texts), "names": json.dumps(self.names)}  # keeps the order
            save_file(dict(self.embeddings), str(path), metadata=metadata)
        else:
            np.savez(path, **self.embeddings)

    def __repr__(self) -> str:
        return f"PromptBank({len(self.embeddings)} prompts, dim={self.dim}: {', '.join(self.embeddings)})"
