"""What one verification measured: a ``RunnerResult`` per runner, gathered into a ``VerifyReport``. Numbers only;
``VerifyReport.judge`` turns them into the one ``Verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from rnnexport.errors import NotApplicable, ProviderUnavailable, RunnerFailed
from rnnexport.report.text import render_text
from rnnexport.verification.cases import Case
from rnnexport.verification.drift import HISTOGRAM_EDGES, OutputDrift
from rnnexport.verification.runners import TORCH_CPU, Runner, RunnerSpec
from rnnexport.verification.verdict import Policy, Tolerances, Verdict, judge

SCHEMA_VERSION = 1


class MinPassing(TypedDict):
    """The smallest ``atol`` that passes at the configured ``rtol``, and the smallest ``rtol`` at the configured
    ``atol`` (None where no rtol can)."""

    atol: float
    rtol: float | None


@dataclass
class RunnerResult:
    """One runner's outcome. ``status``: "ok", "not available" (here), "not applicable" (to this model: a variant
    its build could not make) or "failed" (``reason`` says why).

    ``drift[case][output]``: against the float64 oracle; ``vs_float32[case][output]``: a runtime's
    runner against PyTorch float32 on CPU, for comparison. ``precision``: what it computed in.
    ``hints[case][output]``: a sentence on what a failure there likely means (set by the runner's family).
    ``vs_precision[case][output]``: against the oracle of the runner's own precision (``precision_oracle``, named
    by ``precision_oracle``: whether the export is right, where ``drift`` says what the user deploys);
    ``weight_problems``: what the file's quantized weights get wrong against the quantization rule.
    """

    name: str
    kind: str  # "torch", "onnxruntime", "openvino", "tract" or "iree"
    device: str  # "cpu", "cuda" or "gpu"
    status: str = "ok"
    reason: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)
    drift: dict[str, dict[str, OutputDrift]] = field(default_factory=dict)
    vs_float32: dict[str, dict[str, OutputDrift]] = field(default_factory=dict)
    case_errors: dict[str, str] = field(default_factory=dict)  # case → why the runner could not run it
    run_seconds: float = 0.0
    precision: str = "float32"
    model_bytes: int | None = None  # the size of the model file a runtime runner ran
    localisation: Any = None  # diagnosis.Localisation: per-layer errors and the likely bug, when it failed
    hints: dict[str, dict[str, str]] = field(default_factory=dict)
    vs_precision: dict[str, dict[str, OutputDrift]] = field(default_factory=dict)
    precision_oracle: str | None = None
    precision_oracle_seconds: float = 0.0  # that oracle's float64 passes (counted on the first runner held to it)
    weight_problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, runner: Runner) -> RunnerResult:
        return cls(runner.name, runner.kind, runner.device, settings=runner.settings, precision=runner.precision)

    @classmethod
    def unavailable(cls, spec: RunnerSpec, exc: ProviderUnavailable) -> RunnerResult:
        """A runner that could not run here ("not available"), that does not exist for this model ("not
        applicable") or whose model would not load ("failed")."""
        status = ("failed" if isinstance(exc, RunnerFailed) else "not applicable" if isinstance(exc, NotApplicable)
                  else "not available")
        return cls(spec.name, spec.kind, spec.device, status=status, reason=exc.reason, precision=spec.precision)

    def worst(self) -> tuple[str, str, OutputDrift] | None:
        """(case, output, drift) with the largest max abs error against the oracle."""
        items = [(c, o, d) for c, outs in self.drift.items() for o, d in outs.items()]
        key = lambda t: (t[2].shape_mismatch is not None, t[2].nonfinite_mismatches, t[2].max_abs)  # noqa: E731
        return max(items, key=key) if items else None

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("name", "kind", "device", "precision", "status", "reason", "settings",
                                              "placement", "fallbacks", "case_errors", "run_seconds", "model_bytes")}
        data["localisation"] = self.localisation.to_dict() if self.localisation else None
        data["diagnosis"] = self.localisation.diagnosis if self.localisation else None
        worst = self.worst()
        data["worst"] = None if worst is None else {
            "case": worst[0], "output": worst[1], "max_abs": worst[2].max_abs,
            "index": list(worst[2].worst_index), "nonfinite_mismatches": worst[2].nonfinite_mismatches}
        if self.precision_oracle:
            data["precision_oracle"], data["weight_problems"] = self.precision_oracle, self.weight_problems
            data["precision_oracle_seconds"] = self.precision_oracle_seconds
        for key in ("drift", "vs_float32") + (("vs_precision",) if self.precision_oracle else ()):
            data[key] = {c: {o: d.to_dict() for o, d in outs.items()} for c, outs in getattr(self, key).items()}
        return data


@dataclass
class VerifyReport:
    """What one verification measured. ``judge(policy)`` turns it into a ``Verdict``."""

    name: str
    model_sha256: str
    config: dict[str, Any]
    tolerances: Tolerances
    cases: list[dict[str, Any]]
    skipped_cases: dict[str, str]
    runners: list[RunnerResult]
    oracle: dict[str, Any]
    seconds: float = 0.0
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # runner → shape class → ratio (bench)
    latency_noisy: dict[str, list[str]] = field(default_factory=dict)  # runner → shapes whose ratio is noisy
    contract: list[str] = field(default_factory=list)  # the graph's inputs and outputs against the README's contract
    inputs: list[Case] = field(default_factory=list, repr=False)  # the feeds, saved as inputs.npz
    what_if: list[str] = field(default_factory=list)  # the narrowing options of a what-if run recorded with --record

    def judge(self, policy: Policy | Tolerances | None = None) -> Verdict:
        """The verdict under ``policy`` (default: the report's tolerances, nothing strict, nothing required);
        ``Tolerances`` alone stand for a policy with those tolerances."""
        if isinstance(policy, Tolerances):
            policy = Policy(tolerances=policy)
        return judge(self.runners, self.tolerances, policy or Policy(), tuple(self.contract))

    def failures(self, policy: Policy | Tolerances | None = None) -> list[str]:
        """Every reason this report fails, one sentence each; empty when it passes."""
        return self.judge(policy).failures()

    def passed(self, policy: Policy | Tolerances | None = None) -> bool:
        return self.judge(policy).passed

    def __str__(self) -> str:
        return render_text(self, self.judge())

    def error_ratios(self) -> dict[str, float]:
        """Each runtime runner's worst error over PyTorch float32's own error at the same case and
        output: about 1 means the runtime is as close to the oracle as PyTorch itself. A runner whose
        worst error is zero has ratio 0; one where PyTorch's own error is zero has none."""
        reference = next((r for r in self.runners if r.name == TORCH_CPU and r.status == "ok"), None)
        ratios = {}
        for r in self.runners:
            worst = r.worst()
            if reference is None or worst is None:
                continue
            own = reference.drift.get(worst[0], {}).get(worst[1])
            if r.kind != "torch" and own and (own.max_abs > 0 or worst[2].max_abs == 0):
                ratios[r.name] = worst[2].max_abs / own.max_abs if worst[2].max_abs else 0.0
        return ratios

    def cell_error_ratios(self) -> dict[str, dict[str, Any]]:
        """Per runtime runner, the largest error ratio to PyTorch float32 over every (case, output) cell, with its
        cell: the headline ratio compares worst with worst and can hide a cell where the runtime is far worse."""
        reference = next((r for r in self.runners if r.name == TORCH_CPU and r.status == "ok"), None)
        found: dict[str, dict[str, Any]] = {}
        if reference is None:
            return found
        for r in self.runners:
            if r.kind == "torch":
                continue
            cells = [(d.max_abs / own.max_abs, case, output) for case, outs in r.drift.items()
                     for output, d in outs.items()
                     if (own := reference.drift.get(case, {}).get(output)) and own.max_abs > 0 and not d.shape_mismatch]
            if cells:
                ratio, case, output = max(cells)
                found[r.name] = {"ratio": ratio, "case": case, "output": output}
        return found

    @staticmethod
    def _judged_at(runner: RunnerResult, tolerances: Tolerances) -> dict[str, Any]:
        tol = tolerances.for_runner(runner.device, runner.precision)
        found: dict[str, Any] = {"atol": tol.atol, "rtol": tol.rtol,
                                 "rule": tolerances.rule(runner.device, runner.precision)}
        if runner.precision_oracle:
            own = tolerances.for_own_oracle(runner.device, runner.precision)
            found["precision_oracle"] = {"atol": own.atol, "rtol": own.rtol}
        return found

    def min_passing(self, tolerances: Tolerances) -> dict[str, dict[str, MinPassing]]:
        """Per runner and output, the smallest ``atol`` that would pass at the configured ``rtol``, and the
        smallest ``rtol`` at the configured ``atol`` (None where no rtol can: an output whose oracle is 0)."""
        found: dict[str, dict[str, MinPassing]] = {}
        for r in self.runners:
            tol = tolerances.for_runner(r.device, r.precision)
            outputs: dict[str, MinPassing] = {}
            for outs in r.drift.values():
                for output, d in outs.items():
                    if d.shape_mismatch:
                        continue
                    atol = max(0.0, d.max_abs - tol.rtol * d.expected_max_abs)
                    rtol = max(0.0, (d.max_abs - tol.atol) / d.expected_max_abs) if d.expected_max_abs else (
                        0.0 if d.max_abs <= tol.atol else None)
                    entry = outputs.setdefault(output, {"atol": 0.0, "rtol": 0.0})
                    entry["atol"] = max(entry["atol"], atol)
                    entry["rtol"] = None if rtol is None or entry["rtol"] is None else max(entry["rtol"], rtol)
            if outputs:
                found[r.name] = outputs
        return found

    def to_dict(self, verdict: Verdict | None = None) -> dict[str, Any]:
        verdict = verdict or self.judge()
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "passed": verdict.passed,
            "failures": verdict.failures(),
            "contract": self.contract,
            "model_sha256": self.model_sha256,
            "config": self.config,
            "tolerances": verdict.tolerances.to_dict(),
            "oracle": self.oracle,
            "cases": self.cases,
            "skipped_cases": self.skipped_cases,
            "runners": [r.to_dict() | {"judged_at": self._judged_at(r, verdict.tolerances)} for r in self.runners],
            "error_ratio_to_torch_float32": self.error_ratios(),
            "largest_cell_error_ratio_to_torch_float32": self.cell_error_ratios(),
            "min_passing_tolerance": self.min_passing(verdict.tolerances),
            "latency_ratio_to_ort_float32": self.latency,
            **({"latency_noisy": self.latency_noisy} if self.latency_noisy else {}),
            "histogram_edges": list(HISTOGRAM_EDGES),
            "seconds": self.seconds,
        } | ({"what_if": self.what_if} if self.what_if else {})
