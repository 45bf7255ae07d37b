"""Cases × runners vs the float64 oracle → ``VerifyReport`` (data only; ``judge`` makes the verdict).

    report = rnnexport.verify(my_model.rnn, "model.onnx")
    assert report.passed(), report.failures()
"""

from __future__ import annotations

# torch is imported where PyTorch runs, not here: report rendering and golden comparisons need none of it.
import hashlib
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import onnx

from rnnexport.config import ModelConfig, Tolerance, parse_config
from rnnexport.contract import OUTPUT
from rnnexport.errors import ProviderUnavailable, RunnerFailed
from rnnexport.graph.reader import check_model_matches, contract_problems, model_from_source
from rnnexport.report.text import render_text
from rnnexport.verification.cases import LONG_SEQ, Case, make_cases, nonfinite_count, skipped_cases
from rnnexport.verification.drift import HISTOGRAM_EDGES, OutputDrift
from rnnexport.verification.ragged import ragged_hints
from rnnexport.verification.runners import FAMILIES, TORCH_CPU, TORCH_CUDA, Runner
from rnnexport.verification.runners.ort_runner import CPU, CUDA, TENSORRT, OrtRunner, ort_name, provider_status
from rnnexport.verification.verdict import Policy, Tolerances, Verdict, judge

if TYPE_CHECKING:
    import torch

    from rnnexport.verification.runners.torch_runner import TorchRunner

SCHEMA_VERSION = 1
DEFAULT_PROVIDERS = (CPU, CUDA)


@dataclass
class RunnerResult:
    """One runner's outcome. ``status``: "ok", "not available" or "failed" (``reason`` says why).

    ``drift[case][output]``: against the float64 oracle; ``vs_float32[case][output]``: a runtime's
    runner against PyTorch float32 on CPU, for comparison. ``precision``: what it computed in.
    ``hints[case][output]``: a sentence on what a failure there likely means (set by the runner's family).
    """

    name: str
    kind: str  # "torch", "onnxruntime" or "openvino"
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

    @classmethod
    def of(cls, runner: Runner) -> RunnerResult:
        return cls(runner.name, runner.kind, runner.device, settings=runner.settings, precision=runner.precision)

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
        for key in ("drift", "vs_float32"):
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
    contract: list[str] = field(default_factory=list)  # the graph's inputs and outputs against the README's contract
    inputs: list[Case] = field(default_factory=list, repr=False)  # the feeds, saved as inputs.npz

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
            own = reference and worst and reference.drift.get(worst[0], {}).get(worst[1])
            if r.kind != "torch" and own and (own.max_abs > 0 or worst[2].max_abs == 0):
                ratios[r.name] = worst[2].max_abs / own.max_abs if worst[2].max_abs else 0.0
        return ratios

    def cell_error_ratios(self) -> dict[str, dict[str, Any]]:
        """Per runtime runner, the largest error ratio to PyTorch float32 over every (case, output) cell, with its
        cell: the headline ratio compares worst with worst and can hide a cell where the runtime is far worse."""
        reference = next((r for r in self.runners if r.name == TORCH_CPU and r.status == "ok"), None)
        found: dict[str, dict[str, Any]] = {}
        for r in self.runners if reference else []:
            if r.kind == "torch":
                continue
            cells = [(d.max_abs / own.max_abs, case, output) for case, outs in r.drift.items()
                     for output, d in outs.items()
                     if (own := reference.drift.get(case, {}).get(output)) and own.max_abs > 0 and not d.shape_mismatch]
            if cells:
                ratio, case, output = max(cells)
                found[r.name] = {"ratio": ratio, "case": case, "output": output}
        return found

    def min_passing(self, tolerances: Tolerances) -> dict[str, dict[str, dict[str, float | None]]]:
        """Per runner and output, the smallest ``atol`` that would pass at the configured ``rtol``, and the
        smallest ``rtol`` at the configured ``atol`` (None where no rtol can: an output whose oracle is 0)."""
        found: dict[str, dict[str, dict[str, float | None]]] = {}
        for r in self.runners:
            tol = tolerances.for_runner(r.device, r.precision)
            outputs: dict[str, dict[str, float | None]] = {}
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
            "runners": [r.to_dict() for r in self.runners],
            "error_ratio_to_torch_float32": self.error_ratios(),
            "largest_cell_error_ratio_to_torch_float32": self.cell_error_ratios(),
            "min_passing_tolerance": self.min_passing(verdict.tolerances),
            "latency_ratio_to_ort_float32": self.latency,
            "histogram_edges": list(HISTOGRAM_EDGES),
            "seconds": self.seconds,
        }


def tolerances_for(cfg: ModelConfig, atol: float | None = None, rtol: float | None = None) -> Tolerances:
    """The config's tolerance on CPU, at least ``CUDA_TOLERANCE`` on CUDA; ``atol``/``rtol`` override both."""
    return Tolerances(cfg.tolerance, atol=atol, rtol=rtol)


def default_providers() -> tuple[str, ...]:
    return DEFAULT_PROVIDERS + ((TENSORRT,) if provider_status(TENSORRT) is None else ())


def config_for_onnx(module: torch.nn.Module, model: onnx.ModelProto, name: str = "model") -> ModelConfig:
    """A config describing ``module`` with the optional inputs that ``model`` declares."""
    inputs = {i.name for i in model.graph.input}
    from rnnexport.export.builders import config_for_module

    raw = config_for_module(module, name)
    raw["inputs"] = {"initial_state": "h0" in inputs, "variable_lengths": "sequence_lens" in inputs}
    return parse_config(raw, f"module {name}")


def verify(
    module: torch.nn.Module,
    model: onnx.ModelProto | str | bytes,
    *,
    cfg: ModelConfig | None = None,
    providers: tuple[str, ...] | None = None,
    runtimes: tuple[str, ...] = FAMILIES,
    case_names: tuple[str, ...] | None = None,
    tolerances: Tolerances | Tolerance | None = None,
    seed: int = 0,
    long_seq: int = LONG_SEQ,
    cases: list[Case] | None = None,
    threads: int = 0,
    variants: dict[str, bytes | str] | None = None,
    per_layer: bool = False,
    shapes: tuple[tuple[int, int], ...] = (),
) -> VerifyReport:
    """Run ``cases`` (default: ``make_cases(cfg, seed)``) through the float64 oracle and every runner of
    the ``runtimes`` families: PyTorch float32 (CPU, and CUDA when torch sees a GPU), ONNX Runtime on each
    of ``providers`` (default: CPU and CUDA, and TensorRT where this onnxruntime has it) and OpenVINO
    (where it is installed). A runner that cannot run here is reported as not available.

    ``cfg`` defaults to one derived from ``module`` and the model's inputs. ``tolerances`` default to
    the config's for CPU and ``CUDA_TOLERANCE`` (or the config's, if larger) for CUDA; a single
    ``Tolerance`` applies to both. ``threads``: intra-op threads of every runtime (0: all cores).
    ``variants`` (variant name → serialized model, see ``variants.py``) run on ONNX Runtime as runners of
    their own, judged at their precision's tolerance; ``shapes`` add a case per (seq, batch). A variant given as a sentence is reported as not
    available with that reason. A runtime runner that fails its tolerance (every one, with ``per_layer``) gets
    a ``localisation``: each layer's error up to the first failing one, and a diagnosis of the likely bug.
    """
    start = time.perf_counter()
    proto, data = model_from_source(model)
    cfg = cfg or config_for_onnx(module, proto)
    check_model_matches(proto, cfg, cfg.name, need_recurrent=False)
    replayed = cases is not None
    cases = cases if replayed else make_cases(cfg, seed, case_names, long_seq, shapes)
    if isinstance(tolerances, Tolerance):
        tolerances = Tolerances(tolerances, atol=tolerances.atol, rtol=tolerances.rtol)
    from rnnexport.verification.runners.torch_runner import Float64Oracle

    oracle = Float64Oracle(module)
    oracle_seconds = 0.0
    with ExitStack() as stack:
        runners, results = _open_runners(stack, module, data, providers or default_providers(), runtimes, threads,
                                         variants or {})
        for case in cases:
            oracle_seconds += _run_case(case, lambda c: oracle.infer(c.feeds), runners, results)
        for runner in runners:
            if isinstance(runner, OrtRunner):
                results[runner.name].placement, results[runner.name].fallbacks = runner.placement, runner.fallbacks()
    from rnnexport.verification.diagnosis import diagnose_results

    diagnose_results(module, data, variants or {}, cfg, cases, results, tolerances or tolerances_for(cfg), per_layer)
    return VerifyReport(
        name=cfg.name,
        model_sha256=hashlib.sha256(data).hexdigest(),
        config=cfg.to_dict(),
        tolerances=tolerances or tolerances_for(cfg),
        cases=[_case_summary(c) for c in cases],
        skipped_cases={} if replayed else {k: v for k, v in skipped_cases(cfg).items()
                                           if case_names is None or k in case_names},
        runners=list(results.values()),
        oracle={"name": oracle.name, **oracle.settings, "run_seconds": oracle_seconds},
        seconds=time.perf_counter() - start,
        inputs=cases,
        contract=contract_problems(proto, cfg),
    )


def _open_runners(stack: ExitStack, module: torch.nn.Module, data: bytes, providers: tuple[str, ...],
                  runtimes: tuple[str, ...], threads: int, variants: dict[str, bytes | str]
                  ) -> tuple[list[Runner], dict[str, RunnerResult]]:
    """The runners that opened (entered on ``stack``) and a result for every runner, in report order;
    one that cannot run here has a result with status "not available" (or "failed", if it would not load)."""
    runners: list[Runner] = []
    results: dict[str, RunnerResult] = {}
    for name, kind, device, opener in _candidates(module, data, providers, runtimes, threads, variants):
        try:
            runner = stack.enter_context(opener())
        except ProviderUnavailable as exc:
            status = "failed" if isinstance(exc, RunnerFailed) else "not available"
            results[name] = RunnerResult(name, kind, device, status=status, reason=exc.reason)
            continue
        runners.append(runner)
        results[runner.name] = RunnerResult.of(runner)
        if kind != "torch":  # the size of the file this runner deploys
            sizes = [len(v) for k, v in variants.items() if name.endswith(f"-{k}") and isinstance(v, bytes)]
            results[runner.name].model_bytes = sizes[0] if sizes else len(data)
    return runners, results


def _candidates(module: torch.nn.Module, data: bytes, providers: tuple[str, ...], runtimes: tuple[str, ...],
                threads: int, variants: dict[str, bytes | str]) -> list[tuple[str, str, str, Any]]:
    """(name, kind, device, opener) of every runner the chosen families have; variants after float32."""
    found: list[tuple[str, str, str, Any]] = []
    if "torch" in runtimes:
        from rnnexport.verification.runners.torch_runner import TorchRunner

        found.append((TORCH_CPU, "torch", "cpu", lambda: TorchRunner(module, "cpu")))
        found.append((TORCH_CUDA, "torch", "cuda", lambda: _torch_cuda(module)))
    if "ort" in runtimes:
        for provider in providers:
            device = "cpu" if provider == CPU else "cuda"
            found.append((ort_name(provider), "onnxruntime", device,
                          lambda p=provider: OrtRunner(data, p, threads=threads)))
    if "openvino" in runtimes:
        from rnnexport.verification.runners.openvino_runner import openvino_candidates

        found += openvino_candidates(data, threads)
    if "ort" in runtimes:
        from rnnexport.verification.runners.ort_runner import variant_candidates

        found += variant_candidates(variants, providers, threads)
        if CUDA in providers:  # half precision where it is deployed: on the GPU
            found.append((FLOAT16_CUDA, "onnxruntime", "cuda", lambda: _float16_cuda(data, threads)))
    return found


FLOAT16_CUDA = "ort-cuda-float16"


def _float16_cuda(data: bytes, threads: int) -> OrtRunner:
    """The model computing in float16 on ONNX Runtime's CUDA provider (judged at the f16 tolerance)."""
    from rnnexport.export.variants import float16_compute
    from rnnexport.verification.runners.ort_runner import RunnerUnavailable

    reason = provider_status(CUDA)
    if reason:
        raise RunnerUnavailable(FLOAT16_CUDA, reason)
    model = float16_compute(onnx.load_model_from_string(data)).SerializeToString()
    return OrtRunner(model, CUDA, threads=threads, name=FLOAT16_CUDA, precision="f16")


def _torch_cuda(module: torch.nn.Module) -> TorchRunner:
    import torch

    from rnnexport.errors import RunnerUnavailable
    from rnnexport.verification.runners.torch_runner import TorchRunner

    if not torch.cuda.is_available():
        raise RunnerUnavailable(TORCH_CUDA, f"torch {torch.__version__} sees no CUDA device")
    return TorchRunner(module, "cuda")


def _run_case(case: Case, oracle: Callable[[Case], dict[str, np.ndarray]], runners: list[Runner],
              results: dict[str, RunnerResult]) -> float:
    """Run one case everywhere and record the drift against ``oracle(case)``; returns the oracle's run time."""
    t0 = time.perf_counter()
    expected = oracle(case)
    oracle_seconds = time.perf_counter() - t0
    reference = None
    for runner in runners:
        result = results[runner.name]
        t0 = time.perf_counter()
        try:
            actual = _infer(runner, case)
        except RunnerFailed as exc:  # this case would not run (a shape the graph cannot take, say)
            result.case_errors[case.name] = exc.reason
            continue
        result.run_seconds += time.perf_counter() - t0
        if runner.name == TORCH_CPU:
            reference = actual
        result.drift[case.name] = _compare(expected, actual, case)
        if result.kind != "torch" and (hints := ragged_hints(case, actual)):
            result.hints[case.name] = hints
        if result.kind != "torch" and reference is not None:
            result.vs_float32[case.name] = _compare(reference, actual, case)
    return oracle_seconds


def _infer(runner: Runner, case: Case) -> dict[str, np.ndarray]:
    """One call, or for a streaming case one call per chunk with the final state carried over."""
    if not case.chunks:
        return runner.infer(case.feeds)
    feeds, pieces, start = dict(case.feeds), [], 0
    for length in case.chunks:
        feeds["input"] = np.take(case.feeds["input"], range(start, start + length), axis=case.time_axis)
        if "sequence_lens" in feeds:
            feeds["sequence_lens"] = np.full_like(case.feeds["sequence_lens"], length)
        out = runner.infer(feeds)
        pieces.append(out["output"])
        feeds["h0"] = out["h_n"]
        if "c_n" in out:
            feeds["c0"] = out["c_n"]
        start += length
    out["output"] = np.concatenate(pieces, axis=case.time_axis)
    return out


def _compare(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], case: Case) -> dict[str, OutputDrift]:
    missing = OutputDrift.unmatched("missing from the runner's outputs")
    return {
        name: OutputDrift.from_arrays(expected[name], actual[name], case.time_axis if name == OUTPUT else None)
        if name in actual else missing
        for name in expected
    }


def _case_summary(case: Case) -> dict[str, Any]:
    return {
        "name": case.name,
        "description": case.description,
        "inputs": {k: list(v.shape) for k, v in case.feeds.items()},
        "chunks": list(case.chunks) if case.chunks else None,
        "nonfinite_inputs": nonfinite_count(case),
    }
