"""What the restore and evaluate tools share: loading weights, choosing prompts, restoring arrays.

[`Restorer`][dfpir.inference.runner.Restorer] holds a model (and its degradation classifier, when the weights carry one) on a
device in a precision, and turns a degradation *spec* into a prompt embedding:

- a registry name the weights know (``noise25``, ``rain``, ...): its stored embedding;
- ``auto``: the classifier guesses the degradation per image (blind restoration), and a rule of
  [`dfpir.inference.decision`][dfpir.inference.decision] turns its probabilities into an action:
  ``likely`` restores with the guess, ``gain`` with the prompt of the highest expected gain, which
  may be to leave the image as it is. Either way [`CLEAN`][dfpir.model.classifier.CLEAN] leaves the
  image as it is; when the guess's (calibrated) confidence is below ``min_confidence`` the prompt
  is marked ``low_confidence`` (see [`Prompt`][dfpir.inference.runner.Prompt]);
- free text (anything with a space in it): embedded with the hashing text encoder, and only when
  the weights' prompt bank was itself made by that encoder. The hashing encoder is **not
  semantic**: it matches words, not meaning, so "heavy rain streaks" lands near the ``rain``
  prompt only because it shares the word "rain". Use registry names for real work.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError, load, load_classifier, read
from ..errors import UserError
from ..model.classifier import CLEAN
from ..model.prompts import HashingTextEncoder
from .decision import AUTO_RULES, METADATA_KEY, GainMatrix
from .tiling import TilePlan, restore_image

DEMO_WEIGHTS = Path(__file__).parents[1] / "weights" / "demo.safetensors"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CLASSIFIER_CROP = 512  # the classifier sees a centre crop (resizing would change noise statistics)
CPUINFO = Path("/proc/cpuinfo")  # Linux's list of CPU features
MIN_CONFIDENCE = 0.6
"""Below this calibrated confidence an ``auto`` guess is reported as low. After temperature scaling a
confidence p is right about p of the time, so below 0.6 the guess is wrong at least 4 times in 10,
and below 0.5 the other classes together are more likely than it: 0.6 flags all of those, with a
margin, and leaves unmarked every guess that is right at least 3 times in 5."""


@dataclass
class Prompt:
    """A resolved prompt: the embedding, a label for reports, and the classifier's confidence.

    ``embedding`` is ``None`` when ``auto`` found the image clean: [`Restorer.restore`][dfpir.inference.runner.Restorer.restore]
    then returns it as it is. ``low_confidence`` marks an ``auto`` guess below the restorer's
    ``min_confidence``. Such an image is still restored with the best guess: the guess is more often
    right than any other class, the input file is never changed, and the report (log line, PNG text)
    tells the user to check it or name the degradation; leaving it as it is instead would look like
    a restoration that did nothing.
    """

    embedding: torch.Tensor | None
    label: str
    confidence: float | None = None
    low_confidence: bool = False
    guess: str | None = None  # auto: the classifier's most likely class (confidence is its probability)
    expected_gain: float | None = None  # auto, gain rule: the chosen action's expected gain (dB)

    @property
    def clean(self) -> bool:
        """Whether the image is left as it is (``auto`` found no degradation)."""
        return self.embedding is None

    def text(self) -> dict[str, str]:
        """PNG text chunks recording an ``auto`` choice (``dfpir:degradation``, ``dfpir:confidence``,
        ``dfpir:low-confidence``); empty for a prompt the user named."""
        if self.confidence is None:
            return {}
        text = {"dfpir:degradation": self.label, "dfpir:confidence": f"{self.confidence:.3f}",
                "dfpir:low-confidence": "yes" if self.low_confidence else "no"}
        if self.overruled:
            text["dfpir:guess"] = str(self.guess)
        if self.expected_gain is not None:
            text["dfpir:expected-gain"] = f"{self.expected_gain:+.2f}"
        return text

    @property
    def overruled(self) -> bool:
        """Whether the ``gain`` rule chose another action than the classifier's guess."""
        return self.guess is not None and self.guess != self.label

    def remarks(self, min_confidence: float) -> list[str]:
        """What a report must say about an ``auto`` choice: a low confidence, a photo left as it is."""
        out = []
        if self.low_confidence:
            out.append(f"low confidence (below {min_confidence:.2f}): check the photo, or name its degradation")
        if self.overruled:
            action = "leaving it as it is" if self.clean else f"restoring it as {self.label}"
            out.append(f"most likely {self.guess}, but {action} has the highest expected gain ({self.expected_gain:+.2f} dB)"
                       + ("" if self.guess == CLEAN else f"; name the degradation (--degradation {self.guess}) to restore it anyway"))
        elif self.clean:
            out.append("no degradation found: left as it is")
        return out

    def note(self, min_confidence: float) -> str:
        """An ``auto`` choice's confidence and [`remarks`][dfpir.inference.runner.Prompt.remarks], for a
        log line ("" for a prompt the user named)."""
        if self.confidence is None:
            return ""
        head = f"confidence {self.confidence:.2f}" if not self.overruled else f"{self.guess} at confidence {self.confidence:.2f}"
        return ", ".join([head, *self.remarks(min_confidence)])


def resolve_weights(path: str | Path | None) -> Path:
    """The weights file to use: ``path``, or the shipped demo weights (with a hint if missing).

    Parameters
    ----------
    path : str or Path, optional
        User-given weights; ``None`` for the default.
    """
    if path is not None:
        return Path(path)
    if not DEMO_WEIGHTS.is_file():
        raise UserError(
            f"default weights {DEMO_WEIGHTS} are missing; train them with `python -m dfpir.train` "
            "or pass --weights PATH"
        )
    return DEMO_WEIGHTS


def budget_bytes(memory_gb: float | None) -> int | None:
    """``--memory-gb`` in bytes; ``None`` (not given) keeps the device's default budget.

    Raises
    ------
    UserError
        For zero, negative, infinite or NaN values (argparse accepts all of them as floats).
    """
    if memory_gb is None:
        return None
    if not math.isfinite(memory_gb) or memory_gb <= 0:
        raise UserError(
            f"--memory-gb must be a positive number of GiB, got {memory_gb}; leave it out for the default "
            "(1 GiB on the CPU), or use --tile 0 to never tile"
        )
    return max(1, int(memory_gb * 2**30))


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or ``None`` where they cannot be read."""
    try:
        with open(CPUINFO) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86, ARM
                    return set(value.split())
    except OSError:
        pass
    return None


def cpu_has_native_bf16() -> bool | None:
    """Whether the CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16``, ARM ``bf16``);
    ``None`` where unknown.

    ``torch.backends.cpu.get_cpu_capability()`` says only "AVX512" or "AVX2", which does not
    tell: AVX-512 without its BF16 extension still converts every bfloat16 to float32 and back.
    """
    flags = cpu_flags()
    if flags is None:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def warn_slow_bf16(device: torch.device, precision: str) -> None:
    """One warning line when bf16 is asked for on a CPU that would emulate it (19x slower than
    fp32 in the report that asked for this warning, on a CPU without AVX512_BF16)."""
    if precision == "bf16" and device.type == "cpu" and cpu_has_native_bf16() is False:
        print("warning: this CPU has no native bf16 instructions (AVX512_BF16 or AMX), so --precision bf16 "
              "is emulated and much slower; --precision fp32 will be faster here", file=sys.stderr)


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda`` (one-line error when CUDA is asked for and absent)."""
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r}; use cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


class Restorer:
    """A loaded model, ready to restore float RGB arrays.

    Parameters
    ----------
    weights : str or Path, optional
        A dfpir checkpoint; the shipped demo weights when omitted.
    device : str
        ``cpu`` or ``cuda``.
    precision : {"fp32", "bf16", "fp16"}
        Compute precision (fp16 only on CUDA). bf16 and fp16 run under autocast: the weights, the
        normalisations and the residual sums stay float32 and only the convolutions and matrix
        products round to 16 bits (casting the whole network to bf16 cost 2.21 dB on the held-out
        noise25 photos, autocast 0.04 dB; docs/results.md, On a CPU with AMX).
    tile : int, optional
        Tile side; ``0`` never tiles; ``None`` chooses from ``budget``.
    budget : int, optional
        Activation memory budget in bytes (see [`dfpir.inference.tiling`][dfpir.inference.tiling]).
    min_confidence : float
        An ``auto`` guess below this confidence is marked ``low_confidence`` (see [`MIN_CONFIDENCE`][dfpir.inference.runner.MIN_CONFIDENCE]).
    auto_rule : str, optional
        ``auto``'s decision rule, one of [`AUTO_RULES`][dfpir.inference.decision.AUTO_RULES];
        default ``gain`` when the weights carry a gain matrix, else ``likely``.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        tile: int | None = None,
        budget: int | None = None,
        min_confidence: float = MIN_CONFIDENCE,
        auto_rule: str | None = None,
    ) -> None:
        if not 0 <= min_confidence <= 1:  # NaN fails too
            raise UserError(f"--min-confidence must be between 0 and 1 (a probability), got {min_confidence}")
        self.min_confidence = min_confidence
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise UserError("fp16 needs --device cuda; use bf16 or fp32 on the CPU")
        warn_slow_bf16(self.device, precision)
        self.weights = resolve_weights(weights)
        try:
            self.model = load(self.weights, self.device)
            if self.device.type == "cpu":
                # Channels-last and the fused strip kernels: the same numbers, faster on the CPU
                # (dfpir.inference.speed "fused"). On an H200 the strips halved the speed (docs/results.md),
                # so CUDA runs the model as written.
                self.model.to(memory_format=torch.channels_last)
                self.model.set_fused()
            self.classifier = load_classifier(self.weights, self.device)
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
        self.gains = self._gain_matrix()
        self.auto_rule = self._check_rule(auto_rule)
        if tile is not None and tile < 0:
            raise UserError(f"--tile must be >= 0 (0 means never tile), got {tile}")
        if budget is not None and budget <= 0:
            raise UserError(f"the memory budget must be positive, got {budget} bytes")
        self.tile, self.budget = tile, budget
        self.precision = precision

    def _gain_matrix(self) -> GainMatrix | None:
        """The weights' gain matrix (``auto_gains``), checked against their classifier, or ``None``."""
        text = read(self.weights)[1].get(METADATA_KEY)
        if text is None or self.classifier is None:
            return None
        try:
            matrix = GainMatrix.from_json(text)
        except ValueError as exc:
            raise UserError(f"{self.weights}: the stored gain matrix is unreadable: {exc}") from None
        if list(matrix.classes) != list(self.classifier.classes) or not set(matrix.prompts) <= set(self.names):
            raise UserError(f"{self.weights}: the stored gain matrix is for classes {', '.join(matrix.classes)}, not this "
                            "classifier's; measure it again with python -m dfpir.train.gain_matrix")
        return matrix

    def _check_rule(self, rule: str | None) -> str:
        """``rule``, or the default (``gain`` where the weights carry a gain matrix), checked."""
        if rule is None:
            return "gain" if self.gains is not None else "likely"
        if rule not in AUTO_RULES:
            raise UserError(f"unknown auto rule {rule!r}; use one of {', '.join(AUTO_RULES)}")
        if rule == "gain" and self.gains is None:
            raise UserError(f"{self.weights}: the gain rule needs a gain matrix, and these weights have none; "
                            "measure one with python -m dfpir.train.gain_matrix, or use --auto-rule likely")
        return rule

    @property
    def names(self) -> list[str]:
        """Degradation names the weights hold prompts for."""
        return self.model.prompts.names

    def check_spec(self, spec: str) -> None:
        """Raise [`UserError`][dfpir.errors.UserError] now if ``spec`` can never be resolved (before any image)."""
        if spec == "auto":
            if self.classifier is None:
                raise UserError(
                    f"{self.weights}: --degradation auto needs a degradation classifier, and these weights have none; "
                    f"name the degradation instead (one of: {', '.join(self.names)})"
                )
        elif spec not in self.model.prompts:
            self.text_embedding(spec)

    def text_embedding(self, spec: str) -> torch.Tensor:
        """Embed free text with the hashing encoder (one-line errors for names and foreign banks)."""
        known = f"these weights know: {', '.join(self.names)}, or auto, or free text (several words)"
        if not re.search(r"[a-z0-9]", spec.lower()):  # HashingTextEncoder's words: nothing to embed
            what = "is empty" if not spec.strip() else "has no letters or digits"
            raise UserError(f"--degradation {spec!r} {what}; {known}")
        if re.fullmatch(r"[A-Za-z0-9_]+", spec.strip()):
            raise UserError(f"unknown degradation {spec!r}; {known}")
        if not self._bank_is_hashing():
            raise UserError(
                f"{self.weights}: free-text prompts need the text encoder these weights' prompts were made with "
                "(not the built-in hashing encoder, e.g. CLIP); use a degradation name"
            )
        vec = HashingTextEncoder(self.model.config.prompt_dim)(spec)
        return torch.from_numpy(vec)[None]

    def _bank_is_hashing(self) -> bool:
        bank = self.model.prompts
        encoder = HashingTextEncoder(bank.dim)
        return bool(bank.texts) and all(
            name in bank.texts and np.allclose(encoder(bank.texts[name]), vec, atol=1e-5)
            for name, vec in bank.embeddings.items()
        )

    def nearest_name(self, embedding: torch.Tensor) -> tuple[str, float]:
        """The known prompt with the highest cosine similarity to ``embedding``, and that similarity."""
        bank = self.model.prompts.embed(self.names).double()
        vec = embedding.double().reshape(1, -1)
        cos = torch.nn.functional.cosine_similarity(bank, vec, dim=1)
        i = int(cos.argmax())
        return self.names[i], float(cos[i])

    def prompt(self, spec: str, rgb: np.ndarray | None = None) -> Prompt:
        """Resolve ``spec`` (name, ``auto`` or free text) to a [`Prompt`][dfpir.inference.runner.Prompt] for image ``rgb``.

        Parameters
        ----------
        spec : str
            Degradation name, ``auto`` or free text.
        rgb : np.ndarray, optional
            (H, W, 3) float image; needed for ``auto``.
        """
        if spec == "auto":
            self.check_spec(spec)
            prob = self.probabilities(rgb)
            guess, conf = self.classifier.classes[int(prob.argmax())], float(prob.max())
            action, expected = self.gains.choose(prob) if self.auto_rule == "gain" else (guess, None)
            embedding = None if action == CLEAN else self.model.prompts.embed([action])
            return Prompt(embedding, action, conf, conf < self.min_confidence, guess, expected)
        if spec in self.model.prompts:
            return Prompt(self.model.prompts.embed([spec]), spec)
        return Prompt(self.text_embedding(spec), f"text:{spec}")

    @torch.inference_mode()
    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """(classes,) the classifier's calibrated probabilities for an (H, W, 3) image (centre crop),
        in the order of its ``classes``."""
        h, w = rgb.shape[:2]
        top, left = max(0, (h - CLASSIFIER_CROP) // 2), max(0, (w - CLASSIFIER_CROP) // 2)
        crop = rgb[top : top + CLASSIFIER_CROP, left : left + CLASSIFIER_CROP]
        x = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)).permute(2, 0, 1)[None].to(self.device)
        return self.classifier.probabilities(x)[0].double().cpu().numpy()

    def classify(self, rgb: np.ndarray) -> tuple[str, float]:
        """The classifier's degradation name and confidence for an (H, W, 3) image (centre crop)."""
        prob = self.probabilities(rgb)
        return self.classifier.classes[int(prob.argmax())], float(prob.max())

    def restore(self, rgb: np.ndarray, prompt: Prompt, progress=None) -> tuple[np.ndarray, TilePlan | None]:
        """Restore an (H, W, 3) float image; returns the clipped (H, W, 3) float32 result and the tiles
        (the image itself, as float32, and no tiles for a [`clean`][dfpir.inference.runner.Prompt.clean] prompt).

        Parameters
        ----------
        rgb : np.ndarray
            (H, W, 3) float in [0, 1].
        prompt : Prompt
            From [`prompt`][dfpir.inference.runner.Restorer.prompt].
        progress : callable, optional
            ``progress(done, total)`` per tile.
        """
        if not np.isfinite(rgb).all():  # the input boundary: the network itself does not look
            raise UserError("the image contains NaN or infinite values")
        if prompt.clean:
            return np.clip(rgb, 0, 1).astype(np.float32), None  # a copy: the caller's array stays its own
        x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32"):
            out, plan = restore_image(self.model, x, prompt.embedding, self.tile, self.budget, progress=progress)
        with torch.inference_mode():  # the output is an inference tensor: clip it in place
            out.clamp_(0, 1)
        return out[0].permute(1, 2, 0).numpy(), plan
