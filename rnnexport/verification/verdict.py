"""Judging, once: tolerances per runner, a policy, and the verdict every renderer and the exit code read.

    verdict = report.judge(Policy(strict_placement=True))
    verdict.passed, verdict.exit_code, verdict.problems
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from rnnexport.config import Tolerance

# GPU kernels (cuDNN, cuBLAS) sum in other orders than CPU ones; TF32 stays off on both sides.
CUDA_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)


def _at_least(a: Tolerance, b: Tolerance) -> Tolerance:
    return Tolerance(max(a.atol, b.atol), max(a.rtol, b.rtol))


@dataclass(frozen=True, init=False)
class Tolerances:
    """Pass when, per output, max|actual - oracle| <= atol + rtol * max|oracle| and no NaN/Inf appears
    where the oracle has none.

    ``cpu`` (default ``Tolerance()``) judges float32 runners on CPU; ``cuda`` (default: ``cpu``, but at
    least ``CUDA_TOLERANCE``) judges CUDA and GPU runners. ``atol``/``rtol`` set both at once:
    ``Tolerances(atol=1e-4)``. Reduced-precision runners are judged at least at ``for_precision``'s table
    (``precision_floors``), unless the caller set ``atol``/``rtol``: an explicit tolerance judges every runner,
    and ``precision_floors=True`` asks for the floors as well.
    """

    cpu: Tolerance
    cuda: Tolerance
    precision_floors: bool

    def __init__(self, cpu: Tolerance | None = None, cuda: Tolerance | None = None, *,
                 atol: float | None = None, rtol: float | None = None, precision_floors: bool | None = None):
        base = cpu or Tolerance()
        overridden = atol is not None or rtol is not None
        if overridden:
            base = Tolerance(base.atol if atol is None else atol, base.rtol if rtol is None else rtol)
        for value in (base.atol, base.rtol):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"a tolerance must be a finite, non-negative number, not {value!r}")
        object.__setattr__(self, "cpu", base)
        object.__setattr__(self, "cuda", cuda or (base if overridden else _at_least(base, CUDA_TOLERANCE)))
        object.__setattr__(self, "precision_floors", not overridden if precision_floors is None else precision_floors)

    def for_runner(self, device: str, precision: str = "float32") -> Tolerance:
        """The tolerance a runner on ``device`` computing in ``precision`` is judged at."""
        tol = self.cpu if device == "cpu" else self.cuda
        floored = self.precision_floors and precision not in ("float32", "float64")
        return _at_least(tol, for_precision(precision)) if floored else tol

    def for_own_oracle(self, device: str, precision: str) -> Tolerance:
        """The tolerance a runner computing in ``precision`` is judged at against its own precision's oracle
        (``precision_oracle.py``): the float32 one, at least ``OWN_ORACLE_TOLERANCE`` where the precision keeps an
        error of its own (int8's activations), unless an explicit tolerance judges every runner."""
        tol = self.cpu if device == "cpu" else self.cuda
        floor = OWN_ORACLE_TOLERANCE.get(precision)
        return _at_least(tol, floor) if floor and self.precision_floors else tol

    def rule(self, device: str, precision: str = "float32") -> str:
        """Which rule ``for_runner`` applied, in words: the given tolerance, or the precision's floor."""
        tol = self.cpu if device == "cpu" else self.cuda
        if self.for_runner(device, precision) != tol:
            return f"the {precision} floor (PRECISION_TOLERANCE)"
        return "the given tolerance" if device == "cpu" else "the given tolerance, CUDA"

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": vars_of(self.cpu), "cuda": vars_of(self.cuda), "precision_floors": self.precision_floors}


def vars_of(tol: Tolerance) -> dict[str, float]:
    return {"atol": tol.atol, "rtol": tol.rtol}


# Reduced precision: the error that rounding to the format's mantissa can cause in a recurrent model's
# outputs. bf16 keeps 8 significant bits: OpenVINO's bf16 CPU default was measured at up to 2.2% of
# max|oracle| on the shipped configs (lstm_large, saturating inputs); f16 keeps 11 bits, 8× finer. A swapped
# gate block moves outputs by tens of percent, so both still fail it (tests/test_openvino.py).
# Deployment variants (variants.py), measured against the float64 oracle on every shipped config, every case
# including 1,024 steps: fp16-weights (float16 storage, float32 compute) up to 0.14% of max|oracle|
# (2.7e-3 absolute, lstm_large); int8 (ONNX Runtime's DynamicQuantizeLSTM) up to 3.1% (lstm_3layer_bidir,
# saturating c_n). A gate swap in layer 0 still fails both (tests/test_variants.py); in deeper layers it may
# not, and fails against the variant's own oracle (OWN_ORACLE_TOLERANCE, tests/test_precision_oracle.py).
PRECISION_TOLERANCE = {
    "bf16": Tolerance(atol=3e-2, rtol=3e-2),
    "f16": Tolerance(atol=5e-3, rtol=5e-3),
    "fp16-weights": Tolerance(atol=5e-3, rtol=5e-3),
    "int8": Tolerance(atol=6e-2, rtol=6e-2),
}


# Against the oracle of their own precision (precision_oracle.py) the variants keep only what their weights do not
# explain: nothing for fp16-weights (float32 compute: the float32 tolerance); for int8 (DynamicQuantizeLSTM) the
# per-call uint8 quantization of X and h. Measured against the int8 oracle on every shipped LSTM config over every
# case (1,024 steps, seed 0), as max |Δ| / (1 + max|oracle|): lstm_large 0.046, lstm_dropout_ragged 0.029,
# lstm_3layer_bidir 0.028, each at the saturating case's h_n; seeds 1–4 gave 0.014–0.051 (lstm_large, seed 3), so
# 7e-2 keeps a margin of 1.4×. Activations dominate (the float oracle's drift is about the same size), so this
# judges outputs no tighter than the int8 floor below: what verifies an int8 export is the weight check against
# ONNX Runtime's rule (precision_oracle.int8_weight_problems), which a scale ×1.1, a zero point +1 or a gate swap
# fails exactly. tests/test_precision_oracle.py re-measures it on every shipped LSTM config.
OWN_ORACLE_TOLERANCE = {
    "int8": Tolerance(atol=7e-2, rtol=7e-2),
}


def for_precision(precision: str) -> Tolerance:
    """The tolerance floor for ``precision`` (``PRECISION_TOLERANCE``); unknown names get bf16's, the loosest
    floating-point one, rather than a float32 gate that every reduced-precision run would fail."""
    return PRECISION_TOLERANCE.get(precision, PRECISION_TOLERANCE["bf16"])


class Problem(NamedTuple):
    """One failed check: the runner, the case (None for the runner as a whole), one sentence, and
    whether it is a runtime failure (exit 3) rather than drift (exit 1)."""

    runner: str
    case: str | None
    text: str
    runtime: bool = False


@dataclass(frozen=True)
class Policy:
    """How to judge: ``tolerances`` (None: the report's own), ``strict_placement`` (a recurrent node on
    another provider fails), ``require`` (runners or providers that must have run)."""

    tolerances: Tolerances | None = None
    strict_placement: bool = False
    require: tuple[str, ...] = ()

    def requires(self, runner: Any) -> bool:
        return runner.name in self.require or runner.settings.get("provider") in self.require


@dataclass(frozen=True)
class Verdict:
    """A report judged under one policy: what failed, and the exit code that follows."""

    policy: Policy
    tolerances: Tolerances
    problems: tuple[Problem, ...]
    checked: tuple[str, ...]  # runners that ran
    unchecked: tuple[str, ...]  # runners that could not run here

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 pass, 1 drift over tolerance, 3 a runner failed or a required one is missing."""
        return 3 if any(p.runtime for p in self.problems) else 1 if self.problems else 0

    def failures(self) -> list[str]:
        return [p.text for p in self.problems]

    def failed_runners(self) -> set[str]:
        return {p.runner for p in self.problems}

    def failing_cells(self) -> set[tuple[str, str | None]]:
        return {(p.runner, p.case) for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "exit_code": self.exit_code, "failures": self.failures(),
                "checked": list(self.checked), "not_checked": list(self.unchecked)}


GRAPH = "graph"  # the Problem.runner of a failure of the model file itself (its inputs and outputs)


def judge(runners: list[Any], tolerances: Tolerances, policy: Policy, contract: tuple[str, ...] = ()) -> Verdict:
    """Every failed check of ``runners`` (``RunnerResult``s) under ``policy``, after the graph's own
    ``contract`` problems (outputs out of order, a fixed dynamic axis: whatever every runtime would get)."""
    tol = policy.tolerances or tolerances
    found: list[Problem] = [Problem(GRAPH, None, f"{GRAPH}: {text}") for text in contract]
    for r in runners:
        if r.status == "failed" or (r.status in ("not available", "not applicable") and policy.requires(r)):
            found.append(Problem(r.name, None, f"{r.name}: {r.status}: {r.reason}", runtime=True))
        for case, error in r.case_errors.items():
            found.append(Problem(r.name, case, f"{r.name}: {case}: failed to run: {error}", runtime=True))
        if policy.strict_placement and r.fallbacks:
            nodes = ", ".join(f"{n} on {p}" for n, p in r.fallbacks.items())
            found.append(Problem(r.name, None, f"{r.name}: recurrent nodes fell back to another provider: {nodes}"))
        found += _drift_problems(r, tol.for_runner(r.device, r.precision))
        found += [Problem(r.name, None, f"{r.name}: {text}") for text in r.weight_problems]
        if r.precision_oracle:
            found += _drift_problems(r, tol.for_own_oracle(r.device, r.precision), own=True)
    for name in policy.require:  # a required name no runner answers to (a runner outside --runtimes, say)
        if not any(r.name == name or r.settings.get("provider") == name for r in runners):
            found.append(Problem(name, None, f"{name}: required, and no runner of that name ran", runtime=True))
    ran = tuple(r.name for r in runners if r.status == "ok")
    if not any(r.kind != "torch" for r in runners if r.status == "ok"):
        found.append(Problem(GRAPH, None, "no ONNX runtime ran: nothing checked the model file (see --runtimes)",
                             runtime=True))
    elif not any(r.drift for r in runners):
        found.append(Problem(GRAPH, None, "no case ran: nothing was compared (see --cases)", runtime=True))
    unchecked = tuple(r.name for r in runners if r.status not in ("ok", "not applicable"))
    return Verdict(policy, tol, tuple(found), ran, unchecked)


def _drift_problems(r: Any, tol: Tolerance, own: bool = False) -> list[Problem]:
    """The drift over ``tol``: against the oracle, or with ``own`` against the runner's own precision's oracle
    (where a shape or NaN/Inf mismatch has already been said against the oracle)."""
    found = []
    for case, outputs in (r.vs_precision if own else r.drift).items():
        for output, d in outputs.items():
            if own and (d.shape_mismatch or d.nonfinite_mismatches):
                continue
            if d.shape_mismatch:
                found.append(Problem(r.name, case, f"{r.name}: {case}/{output}: {d.shape_mismatch}"))
            elif d.nonfinite_mismatches:
                found.append(Problem(r.name, case, f"{r.name}: {case}/{output}: {nonfinite_words(d)}"))
            elif not tol.allows(d.max_abs, d.expected_max_abs):
                limit = f"atol {tol.atol:g} + rtol {tol.rtol:g} × {d.expected_max_abs:.3g}"
                against = f" against {r.precision_oracle}" if own else ""
                text = f"{r.name}: {case}/{output}{against}: max |Δ| {d.max_abs:.3g} > {limit}"
                hint = None if own else getattr(r, "hints", {}).get(case, {}).get(output)
                found.append(Problem(r.name, case, f"{text}; {hint}" if hint else text))
    return found


def nonfinite_words(d: Any) -> str:
    """What happened to NaN/Inf, in words."""
    parts = []
    if d.nonfinite_introduced:
        parts.append(f"{d.nonfinite_introduced} NaN/Inf where the oracle is finite")
    hidden = d.nonfinite_mismatches - d.nonfinite_introduced
    if hidden:
        parts.append(f"{hidden} finite or different values where the oracle is NaN/Inf (the runtime did not "
                     "propagate a NaN/Inf of the inputs as PyTorch does)")
    return ", ".join(parts)
