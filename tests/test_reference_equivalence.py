"""The generic equivalence tests over the registry (``reference_registry.REGISTRY``).

For every row and device:

* semantics: reference float64 == PyTorch float64 (exactly for exact rows, else the float64
  tolerance);
* numerics: PyTorch float32 and reference float32 against reference float64 at the float32
  tolerance, after setting aside (and counting) examples whose discrete decisions are near-ties;
* the loop twin against the vectorised reference;
* ``torch.autograd.gradcheck`` in float64 for differentiable rows.

A row with a fused twin (:mod:`dfpir.model.fused`) runs the semantics and numerics checks a second
time with the twin in place of the PyTorch function: same reference, same tolerances, same rules
for setting examples aside. A meta-test checks that every fused kernel the blocks use has a row
of its own.
"""

from __future__ import annotations

import ast
import inspect
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import Phase, assume, event, given, note, settings

import dfpir.model.fused as fused
import reference

from .reference_registry import (
    GRAD_NEAR_TIE,
    Margins,
    float32_sensitivity,
    NEAR_TIE,
    REGISTRY,
    Case,
    OpRow,
    run_reference,
    run_torch,
    to_torch,
    tolerance,
)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
NEAR_TIES: Counter = Counter()  # (row, precision) -> examples set aside
EXAMPLES: Counter = Counter()  # (row, precision) -> examples compared
ILL_CONDITIONED: Counter = Counter()  # row -> float32 examples set aside for conditioning

#: The PyTorch side of each row: its plain function, and its fused twin where it has one.
VARIANTS = [pytest.param(row, "torch", id=row.name) for row in REGISTRY] + [
    pytest.param(row, "fused", id=f"{row.name}-fused") for row in REGISTRY if row.fused is not None
]


def _examples(row: OpRow):
    """The profile's example count divided by the row's cost (at least 3)."""
    return settings(max_examples=max(3, settings.default.max_examples // row.cost))


def compare(actual, expected, *, exact: bool, tol, what: str, case: Case) -> None:
    """Shape, then dtype kind, then values; the message carries the case and the errors."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    head = f"{what}: case {case.config}"
    assert actual.shape == expected.shape, f"{head}: shape {actual.shape} != {expected.shape}"
    if exact:
        assert actual.dtype.kind == expected.dtype.kind or {actual.dtype.kind, expected.dtype.kind} <= {"i", "u"}, \
            f"{head}: dtype {actual.dtype} vs {expected.dtype}"
        diff = np.flatnonzero(~((actual == expected) | (np.isnan(actual) & np.isnan(expected))
                                if actual.dtype.kind == "f" else actual == expected))
        assert diff.size == 0, f"{head}: {diff.size} entries differ, first at flat index {diff[:5]}"
        return
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    assert np.array_equal(np.isfinite(a), np.isfinite(e)), f"{head}: finite pattern differs"
    err = np.abs(a - e)
    err[~np.isfinite(e)] = 0.0
    bound = tol.atol + tol.rtol * np.abs(np.where(np.isfinite(e), e, 0.0))
    max_abs = float(err.max(initial=0.0))
    max_rel = float((err / np.maximum(np.abs(e), 1e-300)).max(initial=0.0)) if err.size else 0.0
    assert (err <= bound).all(), (
        f"{head}: max abs err {max_abs:.3e}, max rel err {max_rel:.3e} exceed rtol={tol.rtol:g} "
        f"atol={tol.atol:g} ({tol.reason})"
    )


def _assume_no_near_tie(row: OpRow, label: str, case: Case, margins: Margins, precision: str) -> None:
    """Set aside (and count under ``label``) examples whose decisions sit within ``precision``'s resolution."""
    EXAMPLES[label, precision] += 1
    margin = margins.positive
    if case.exact_inputs or not row.decisions or margin >= NEAR_TIE[precision]:
        return
    NEAR_TIES[label, precision] += 1
    event(f"near-tie set aside ({precision})")
    note(f"decision margin {margin:.3e} < {NEAR_TIE[precision]:g}: set aside")
    assume(False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("row, variant", VARIANTS)
def test_reference_matches_torch(row: OpRow, variant: str, device: str) -> None:
    """Reference vs PyTorch (or its fused twin): semantics in float64, numerics in float32, and
    (once per row, with the plain function) loop vs vectorised and reference float32."""
    fn = row.fused if variant == "fused" else row.torch_fn
    label = row.name if variant == "torch" else f"{row.name} ({variant})"

    @given(case=row.strategy)
    @_examples(row)
    def check(case: Case) -> None:
        note(f"{label} case: {case.config}")
        ref64, margin = run_reference(row.ref, case, np.float64)
        _assume_no_near_tie(row, label, case, margin, "float64")
        # semantics: float64 on both sides
        compare(run_torch(fn, case, torch.float64, device), ref64, exact=row.exact,
                tol=tolerance("float64"), what=f"{row.name} {variant}-f64 vs ref-f64 on {device}", case=case)
        if row.loop is not None and variant == "torch":
            loop64 = row.loop(*case.args)
            compare(loop64, ref64, exact=row.exact, tol=tolerance("float64"),
                    what=f"{row.name} loop-f64 vs vectorised-f64", case=case)
        # numerics: float32 against the float64 reference
        _assume_no_near_tie(row, label, case, margin, "float32")
        tol32 = tolerance("float32", row.f32_factor)
        if row.conditioning and not row.exact:
            sensitivity = float32_sensitivity(row.ref, case, ref64)
            note(f"float32 sensitivity estimate {sensitivity:.3e}")
            if sensitivity > (tol32.atol + tol32.rtol * float(np.abs(ref64).max(initial=0.0))) / 4:
                ILL_CONDITIONED[label] += 1
                event("ill-conditioned example set aside (float32)")
                assume(False)
        compare(run_torch(fn, case, torch.float32, device), ref64, exact=row.exact, tol=tol32,
                what=f"{row.name} {variant}-f32 vs ref-f64 on {device}", case=case)
        if variant != "torch":
            return  # the reference's own float32 check needs no second run
        ref32, _ = run_reference(row.ref, case, np.float32)
        if isinstance(ref32, np.ndarray) and ref32.dtype.kind == "f":
            assert ref32.dtype == np.float32, f"{row.name}: float32 inputs gave {ref32.dtype}"
        compare(ref32, ref64, exact=row.exact, tol=tol32, what=f"{row.name} ref-f32 vs ref-f64", case=case)

    check()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("row", [r for r in REGISTRY if r.gradcheck], ids=lambda r: r.name)
def test_torch_gradients(row: OpRow, device: str) -> None:
    """``gradcheck`` (float64) of the PyTorch side with respect to its array inputs."""

    @given(case=row.strategy)
    @_examples(row)
    def check(case: Case) -> None:
        with_margin = row.grad_margin(case) if row.grad_margin else run_reference(row.ref, case, np.float64)[1].any
        assume(with_margin >= GRAD_NEAR_TIE)  # the top-k boundary must not move under perturbation
        assume(row.grad_ok is None or row.grad_ok(case))
        args = [to_torch(a, torch.float64, device) for a in case.args]
        grads = [i for i in row.grad_args if isinstance(args[i], torch.Tensor) and args[i].is_floating_point()]
        for i in grads:
            args[i] = args[i].clone().requires_grad_(True)

        def fn(*inputs):
            full = list(args)
            for i, t in zip(grads, inputs):
                full[i] = t
            return row.torch_fn(*full)

        # fast mode checks random projections of the Jacobian: a few evaluations, not one per input
        ok = torch.autograd.gradcheck(fn, [args[i] for i in grads], eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
        assert ok, \
            f"{row.name}: gradcheck failed for case {case.config}"

    check()


def test_every_public_reference_function_has_a_row() -> None:
    """Meta-test: each function in ``reference.__all__`` is a row's reference or loop twin."""
    covered = {r.ref for r in REGISTRY} | {r.loop for r in REGISTRY if r.loop is not None}
    missing = [name for name in reference.__all__ if getattr(reference, name) not in covered]
    assert not missing, f"public reference functions without a registry row: {missing}"


def block_kernels(block: str) -> set[str]:
    """The ``fused.<kernel>`` functions that ``dfpir/model/<block>.py`` calls (read from its source)."""
    tree = ast.parse(Path(fused.__file__).with_name(f"{block}.py").read_text(encoding="utf-8"))
    return {node.func.attr for node in ast.walk(tree) if node is not None
            and not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "wanted")  # the switch, not a kernel
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "fused"}


def kernels_run_by(row: OpRow, kernels: set[str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Which of ``kernels`` the row's fused twin calls on the row's first (simplest) case."""
    called = set()

    def spy(name, kernel):
        def recording(*args):
            called.add(name)
            return kernel(*args)
        return recording

    @given(case=row.strategy)
    @settings(max_examples=1, phases=[Phase.generate], derandomize=True, database=None)
    def first(case: Case) -> None:  # the first example drawn (Hypothesis's simplest), not shrunk
        run_torch(row.fused, case, torch.float64, "cpu")

    with monkeypatch.context() as patch:
        for name in kernels:
            patch.setattr(fused, name, spy(name, getattr(fused, name)))
        first()
    return called


def test_every_fused_kernel_of_the_blocks_has_a_row_of_its_own(monkeypatch) -> None:
    """Meta-test: each fused kernel that ``TransformerBlock`` and ``DGPB`` use is the one kernel
    some row's twin runs (so a wrong kernel fails a row of its own), and the blocks' own rows run
    their blocks' kernels (their twins really take the fused path)."""
    used = {"transformer_block": block_kernels("transformer"), "dgpb": block_kernels("dgpb")}
    kernels = set().union(*used.values())
    assert {"mdta", "gdfn_", "masked_cross_attention", "perturbation"} <= kernels
    runs = {row.name: kernels_run_by(row, kernels, monkeypatch) for row in REGISTRY if row.fused is not None}
    alone = {kernel for called in runs.values() if len(called) == 1 for kernel in called}
    assert kernels <= alone, f"fused kernels without a registry row of their own: {sorted(kernels - alone)}"
    for block, expected in used.items():
        assert runs.get(block) == expected, f"{block}: the fused twin runs {runs.get(block)}, the block uses {expected}"


def test_every_public_function_is_exported() -> None:
    """Every public function defined in a ``reference`` module is in ``__all__`` (or a utility)."""
    import pkgutil
    import importlib

    utilities = {"decision_margins", "record_order_gaps", "record_topk_gaps", "main"}
    stray = []
    for info in pkgutil.iter_modules(reference.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"reference.{info.name}")
        for name, obj in vars(module).items():
            if (inspect.isfunction(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
                    and name not in reference.__all__ and name not in utilities):
                stray.append(f"{module.__name__}.{name}")
    assert not stray, f"public functions missing from reference.__all__: {stray}"


def test_near_ties_are_rare() -> None:
    """Report the near-ties set aside above; they must stay a small minority of the examples."""
    for key, skipped in sorted(NEAR_TIES.items()):
        total = EXAMPLES[key]
        print(f"near-ties set aside: {key[0]} {key[1]}: {skipped} of {total}")
        assert skipped <= max(2, total // 4), f"{key}: {skipped} of {total} examples were near-ties"
    for name, skipped in sorted(ILL_CONDITIONED.items()):
        total = EXAMPLES[name, "float32"]
        print(f"ill-conditioned float32 examples set aside: {name}: {skipped} of {total}")
        assert skipped <= max(2, total // 4), f"{name}: {skipped} of {total} examples ill-conditioned"
