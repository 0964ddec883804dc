"""CLIP's byte-level BPE tokenizer, written from its specification for the prompt texts.

A text becomes CLIP's token ids in four steps, the same as OpenAI's ``clip.tokenize``:

1. clean: repair mojibake (``ftfy.fix_text``), unescape HTML entities twice, collapse runs of
   whitespace to one space, strip, lower-case;
2. split into words: the two special tokens, English contractions (``'s``, ``'ll``, ...), runs of
   letters, *single* digits (``"15"`` is two words) and runs of other non-space characters;
3. map each word's UTF-8 bytes to printable characters (GPT-2's reversible byte alphabet), mark
   its last character as the end of a word (``</w>``) and apply the byte-pair merges, lowest rank
   first, until none applies;
4. frame with ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407) and pad with zeros to the
   77-token context.

The merges are OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence, shipped beside this module
with its notice); its first 48,894 merges make the 49,408-token vocabulary. The cleaning step
needs ``ftfy`` and the word pattern needs ``regex`` (Unicode letter and number classes): both come
with the optional extra, ``pip install 'dfpir[clip]'``.
"""

from __future__ import annotations

import gzip
import html
from functools import cache
from pathlib import Path
from typing import Sequence

import torch

from ..errors import UserError

try:  # the optional extra, pip install 'dfpir[clip]'; the rest of dfpir works without it
    import ftfy
    import regex
except ImportError:  # pragma: no cover - exercised by installs without the extra
    ftfy = regex = None

VOCAB_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2
"""48,894: the vocabulary less the 256 bytes, the 256 bytes ending a word and the two special tokens."""
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"

# Special tokens, contractions, letter runs, single digits, runs of anything else but spaces.
WORD_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def extra_available() -> bool:
    """Whether the packages of the ``clip`` extra (``ftfy``, ``regex``) are installed."""
    return ftfy is not None and regex is not None


def require_extra() -> None:
    """Refuse in one line when the ``clip`` extra is missing."""
    if not extra_available():
        raise UserError("CLIP's tokenizer needs the packages of the clip extra (ftfy, regex): pip install 'dfpir[clip]'")


@cache
def byte_alphabet() -> dict[int, str]:
    """Byte -> a printable character standing for it (GPT-2's table, which CLIP's vocabulary uses).

    Bytes that print as themselves (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) keep their character;
    the other 68 (controls, space, soft hyphen, ...) get ``chr(256 + n)`` in byte order. The
    table's order is the order of the vocabulary's first 256 entries.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def clean(text: str) -> str:
    """Step 1: repair, unescape, collapse whitespace, strip and lower-case, as CLIP does."""
    require_extra()
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def read_merges(path: Path = VOCAB_FILE) -> list[tuple[str, str]]:
    """The first [`NUM_MERGES`][dfpir.clip.tokenizer.NUM_MERGES] merges of the vocabulary file (its first line is a version header)."""
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read CLIP's BPE vocabulary {path}: {exc}; reinstall dfpir") from None
    return [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # type: ignore[misc]


class ClipTokenizer:
    """Text -> CLIP token ids, and back (see the module docstring for the steps).

    Parameters
    ----------
    vocab_file : Path
        The gzipped BPE merges (default: the shipped OpenAI file).
    """

    def __init__(self, vocab_file: Path = VOCAB_FILE) -> None:
        require_extra()
        merges = read_merges(vocab_file)
        symbols = list(byte_alphabet().values())
        vocab = [*symbols, *(s + END_OF_WORD for s in symbols), *("".join(m) for m in merges), SOT, EOT]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.tokens = vocab
        self.ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.pattern = regex.compile(WORD_PATTERN, regex.IGNORECASE)
        self.bytes_of = {c: b for b, c in byte_alphabet().items()}
        self._words: dict[str, list[str]] = {SOT: [SOT], EOT: [EOT]}  # special tokens are never split

    @property
    def sot(self) -> int:
        """The id of ``<|startoftext|>`` (49406)."""
        return self.ids[SOT]

    @property
    def eot(self) -> int:
        """The id of ``<|endoftext|>`` (49407), the largest id: the encoder pools at its position."""
        return self.ids[EOT]

    def merge(self, word: str) -> list[str]:
        """Step 3's merges on one word (already in the byte alphabet): its BPE tokens."""
        if word in self._words:
            return self._words[word]
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            pairs = list(zip(parts, parts[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, NUM_MERGES))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):  # every occurrence of the pair, left to right, without overlap
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._words[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, without the start and end tokens."""
        alphabet = byte_alphabet()
        ids: list[int] = []
        for word in self.pattern.findall(clean(text)):
            symbols = "".join(alphabet[b] for b in word.encode("utf-8"))
            ids.extend(self.ids[token] for token in self.merge(symbols))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text from token ids (lower-cased and cleaned, as encoded; a word end becomes a space)."""
        out = bytearray()
        for i in ids:
            token = self.tokens[i]
            if token in (SOT, EOT):  # not made of bytes: written as they are
                out += token.encode()
                continue
            word_end = token.endswith(END_OF_WORD)
            out += bytes(self.bytes_of[c] for c in token.removesuffix(END_OF_WORD)) + (b" " if word_end else b"")
        return out.decode("utf-8", errors="replace")

    def __call__(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, truncate: bool = False) -> torch.Tensor:
        """(N, context_length) int64 token ids: start, the text's ids, end, zeros.

        Raises
        ------
        UserError
            For a text longer than the context, unless ``truncate`` (which keeps the first
            ``context_length - 1`` tokens and ends with ``<|endoftext|>``, as CLIP's ``truncate=True``).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), context_length, dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > context_length:
                if not truncate:
                    raise UserError(f"prompt text {text[:40]!r}... has {len(ids)} CLIP tokens, more than the context of {context_length}; shorten it")
                ids = [*ids[: context_length - 1], self.eot]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@cache
def default_tokenizer() -> ClipTokenizer:
    """The tokenizer on the shipped vocabulary, built once (reading the merges takes a fraction of a second)."""
    return ClipTokenizer()
