"""Cases × runners vs the float64 oracle → ``VerifyReport`` (data only; ``passed`` judges).

    report = rnnexport.verify(my_model.rnn, "model.onnx")
    assert report.passed(), report.failures()
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import torch

from .builders import config_for_module
from .cases import LONG_SEQ, Case, input_names, make_cases, nonfinite_count, skipped_cases
from .config import ModelConfig, Tolerance, parse_config
from .drift import HISTOGRAM_EDGES, OutputDrift
from .errors import ArtifactError, ProviderUnavailable
from .onnx_export import recurrent_nodes
from .runtimes import CPU, CUDA, SHORT_NAMES, TENSORRT, Float64Oracle, OrtRunner, TorchRunner, provider_status

SCHEMA_VERSION = 1
DEFAULT_PROVIDERS = (CPU, CUDA)
# GPU kernels (cuDNN, cuBLAS) sum in other orders than CPU ones; TF32 stays off on both sides.
CUDA_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)


@dataclass
class RunnerResult:
    """One runner's outcome. ``status``: "ok", "not available" or "failed" (``reason`` says why).

    ``drift[case][output]``: against the float64 oracle; ``vs_float32[case][output]``: an ONNX Runtime
    runner against PyTorch float32 on the same device kind (CPU), for comparison.
    """

    name: str
    kind: str  # "torch" or "onnxruntime"
    device: str  # "cpu" or "cuda"
    status: str = "ok"
    reason: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)
    drift: dict[str, dict[str, OutputDrift]] = field(default_factory=dict)
    vs_float32: dict[str, dict[str, OutputDrift]] = field(default_factory=dict)
    case_errors: dict[str, str] = field(default_factory=dict)  # case → why the runner could not run it
    run_seconds: float = 0.0

    def worst(self) -> tuple[str, str, OutputDrift] | None:
        """(case, output, drift) with the largest max abs error against the oracle."""
        items = [(c, o, d) for c, outs in self.drift.items() for o, d in outs.items()]
        return max(items, key=lambda t: (t[2].nonfinite_mismatches, t[2].max_abs)) if items else None

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("name", "kind", "device", "status", "reason", "settings",
                                              "placement", "fallbacks", "case_errors", "run_seconds")}
        worst = self.worst()
        data["worst"] = None if worst is None else {
            "case": worst[0], "output": worst[1], "max_abs": worst[2].max_abs,
            "index": list(worst[2].worst_index), "nonfinite_mismatches": worst[2].nonfinite_mismatches}
        for key in ("drift", "vs_float32"):
            data[key] = {c: {o: d.to_dict() for o, d in outs.items()} for c, outs in getattr(self, key).items()}
        return data


@dataclass(frozen=True)
class Tolerances:
    """Pass when, per output, max|actual - oracle| <= atol + rtol * max|oracle| and no NaN/Inf appears
    where the oracle has none. CUDA runners use ``cuda``."""

    cpu: Tolerance = Tolerance()
    cuda: Tolerance = CUDA_TOLERANCE

    def for_device(self, device: str) -> Tolerance:
        return self.cuda if device == "cuda" else self.cpu


def _nonfinite(d: OutputDrift) -> str:
    parts = []
    if d.nonfinite_introduced:
        parts.append(f"{d.nonfinite_introduced} NaN/Inf where the oracle is finite")
    if d.nonfinite_mismatches - d.nonfinite_introduced:
        parts.append(f"{d.nonfinite_mismatches - d.nonfinite_introduced} finite or different values where the "
                     "oracle is NaN/Inf")
    return ", ".join(parts)


class Problem(NamedTuple):
    runner: str
    case: str | None
    text: str


@dataclass
class VerifyReport:
    name: str
    model_sha256: str
    config: dict[str, Any]
    tolerances: Tolerances
    cases: list[dict[str, Any]]
    skipped_cases: dict[str, str]
    runners: list[RunnerResult]
    oracle: dict[str, Any]
    seconds: float = 0.0
    inputs: list[Case] = field(default_factory=list, repr=False)  # the feeds, saved as inputs.npz

    def problems(self, tolerances: Tolerances | None = None, strict_placement: bool = False,
                 require: tuple[str, ...] = ()) -> list[Problem]:
        """Every failed check: the runner, the case (None for the runner as a whole) and one sentence."""
        tol = tolerances or self.tolerances
        found = []
        for r in self.runners:
            required = r.name in require or r.settings.get("provider") in require
            if r.status == "failed" or (r.status == "not available" and required):
                found.append(Problem(r.name, None, f"{r.name}: {r.status}: {r.reason}"))
            for case, error in r.case_errors.items():
                found.append(Problem(r.name, case, f"{r.name}: {case}: failed to run: {error}"))
            if strict_placement and r.fallbacks:
                nodes = ", ".join(f"{n} on {p}" for n, p in r.fallbacks.items())
                found.append(Problem(r.name, None, f"{r.name}: recurrent nodes fell back to another provider: {nodes}"))
            t = tol.for_device(r.device)
            for case, outputs in r.drift.items():
                for output, d in outputs.items():
                    if d.nonfinite_mismatches:
                        found.append(Problem(r.name, case, f"{r.name}: {case}/{output}: {_nonfinite(d)}"))
                    elif d.max_abs > t.atol + t.rtol * d.expected_max_abs:
                        limit = f"atol {t.atol:g} + rtol {t.rtol:g} × {d.expected_max_abs:.3g}"
                        text = f"{r.name}: {case}/{output}: max |Δ| {d.max_abs:.3g} > {limit}"
                        found.append(Problem(r.name, case, text))
        return found

    def failures(self, tolerances: Tolerances | None = None, strict_placement: bool = False,
                 require: tuple[str, ...] = ()) -> list[str]:
        """Every reason this report fails, one sentence each; empty when it passes."""
        return [p.text for p in self.problems(tolerances, strict_placement, require)]

    def passed(self, tolerances: Tolerances | None = None, strict_placement: bool = False,
               require: tuple[str, ...] = ()) -> bool:
        return not self.failures(tolerances, strict_placement, require)

    def runtime_failed(self, require: tuple[str, ...] = ()) -> bool:
        """A runner could not load or run the model, or a required provider is missing (exit 3)."""
        return any(r.status == "failed" or r.case_errors or (r.status == "not available" and
                                            (r.name in require or r.settings.get("provider") in require))
                   for r in self.runners)

    def error_ratios(self) -> dict[str, float]:
        """Each ONNX Runtime runner's worst error over PyTorch float32's own error at the same case and
        output: about 1 means the runtime is as close to the oracle as PyTorch itself."""
        reference = next((r for r in self.runners if r.name == "torch-float32-cpu" and r.status == "ok"), None)
        ratios = {}
        for r in self.runners:
            worst = r.worst()
            own = reference and worst and reference.drift.get(worst[0], {}).get(worst[1])
            if r.kind == "onnxruntime" and own and own.max_abs > 0:
                ratios[r.name] = worst[2].max_abs / own.max_abs
        return ratios

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "passed": self.passed(),
            "failures": self.failures(),
            "model_sha256": self.model_sha256,
            "config": self.config,
            "tolerances": dataclasses.asdict(self.tolerances),
            "oracle": self.oracle,
            "cases": self.cases,
            "skipped_cases": self.skipped_cases,
            "runners": [r.to_dict() for r in self.runners],
            "error_ratio_to_torch_float32": self.error_ratios(),
            "histogram_edges": list(HISTOGRAM_EDGES),
            "seconds": self.seconds,
        }


def tolerances_for(cfg: ModelConfig, atol: float | None = None, rtol: float | None = None) -> Tolerances:
    """The config's tolerance on CPU, at least ``CUDA_TOLERANCE`` on CUDA; ``atol``/``rtol`` override both."""
    cpu = cfg.tolerance
    cuda = Tolerance(max(cpu.atol, CUDA_TOLERANCE.atol), max(cpu.rtol, CUDA_TOLERANCE.rtol))
    if atol is not None or rtol is not None:
        cpu = cuda = Tolerance(cpu.atol if atol is None else atol, cpu.rtol if rtol is None else rtol)
    return Tolerances(cpu=cpu, cuda=cuda)


def default_providers() -> tuple[str, ...]:
    return DEFAULT_PROVIDERS + ((TENSORRT,) if provider_status(TENSORRT) is None else ())


def config_for_onnx(module: torch.nn.Module, model: onnx.ModelProto, name: str = "model") -> ModelConfig:
    """A config describing ``module`` with the optional inputs that ``model`` declares."""
    inputs = {i.name for i in model.graph.input}
    raw = config_for_module(module, name)
    raw["inputs"] = {"initial_state": "h0" in inputs, "variable_lengths": "sequence_lens" in inputs}
    return parse_config(raw, f"module {name}")


def check_model_matches(model: onnx.ModelProto, cfg: ModelConfig, source: str, need_recurrent: bool = True) -> None:
    """Refuse an ONNX file whose inputs do not fit ``cfg``, or (``need_recurrent``) that has no recurrent
    node: bad input, exit 2. A torch exporter's unrolled graph is verified all the same."""
    if need_recurrent and not recurrent_nodes(model):
        raise ArtifactError(f"{source}: the graph has no GRU, LSTM or RNN node")
    expected = input_names(cfg)
    initializers = {i.name for i in model.graph.initializer}
    found = [i.name for i in model.graph.input if i.name not in initializers]
    if found != expected:
        raise ArtifactError(f"{source}: graph inputs {found} do not match the config, which expects {expected}")


def verify(
    module: torch.nn.Module,
    model: onnx.ModelProto | str | Path | bytes,
    *,
    cfg: ModelConfig | None = None,
    providers: tuple[str, ...] | None = None,
    case_names: tuple[str, ...] | None = None,
    tolerances: Tolerances | None = None,
    seed: int = 0,
    long_seq: int = LONG_SEQ,
    cases: list[Case] | None = None,
) -> VerifyReport:
    """Run ``cases`` (default: ``make_cases(cfg, seed)``) through the float64 oracle, PyTorch float32
    (CPU, and CUDA when torch sees a GPU) and ONNX Runtime on each of ``providers`` (default: CPU and
    CUDA, and TensorRT where this onnxruntime has it; an absent provider is reported as not available).

    ``cfg`` defaults to one derived from ``module`` and the model's inputs. ``tolerances`` default to
    the config's for CPU and ``CUDA_TOLERANCE`` (or the config's, if larger) for CUDA.
    """
    start = time.perf_counter()
    proto, data = model_from_source(model)
    cfg = cfg or config_for_onnx(module, proto)
    check_model_matches(proto, cfg, cfg.name, need_recurrent=False)
    replayed = cases is not None
    cases = cases if replayed else make_cases(cfg, seed, case_names, long_seq)
    tolerances = tolerances or tolerances_for(cfg)
    oracle = Float64Oracle(module)
    runners, results = _open_runners(module, data, providers or default_providers())
    oracle_seconds = 0.0
    try:
        for case in cases:
            oracle_seconds += _run_case(case, oracle, runners, results)
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)
    for name, runner in runners.items():
        if isinstance(runner, OrtRunner):
            results[name].placement, results[name].fallbacks = runner.placement, runner.fallbacks()
    return VerifyReport(
        name=cfg.name,
        model_sha256=hashlib.sha256(data).hexdigest(),
        config=cfg.to_dict(),
        tolerances=tolerances,
        cases=[_case_summary(c) for c in cases],
        skipped_cases={} if replayed else {k: v for k, v in skipped_cases(cfg).items()
                                           if case_names is None or k in case_names},
        runners=list(results.values()),
        oracle={"name": oracle.name, **oracle.settings, "run_seconds": oracle_seconds},
        seconds=time.perf_counter() - start,
        inputs=cases,
    )


def model_from_source(model: onnx.ModelProto | str | Path | bytes) -> tuple[onnx.ModelProto, bytes]:
    """The parsed model and its bytes, from a ModelProto, a path or bytes."""
    if isinstance(model, onnx.ModelProto):
        return model, model.SerializeToString()
    if isinstance(model, (str, Path)):
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{model}: cannot read: {exc.strerror or exc}") from None
        return load_model_bytes(data, str(model)), data
    return load_model_bytes(model, "model"), model


def load_model_bytes(data: bytes, source: str) -> onnx.ModelProto:
    """Parse ONNX bytes, turning protobuf's errors into a message about the file."""
    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # protobuf raises DecodeError and friends
        raise ArtifactError(f"{source}: not an ONNX model (it does not parse)") from None
    if not proto.graph.node:
        raise ArtifactError(f"{source}: not an ONNX model (it has no graph)")
    return proto


def _open_runners(module: torch.nn.Module, data: bytes, providers: tuple[str, ...]):
    """Runners keyed by name, in report order; unavailable ones appear only in the results."""
    runners: dict[str, Any] = {}
    results: dict[str, RunnerResult] = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        runner = TorchRunner(module, device)
        runners[runner.name] = runner
        results[runner.name] = RunnerResult(runner.name, "torch", device, settings=runner.settings)
    if "cuda" not in devices:
        results["torch-float32-cuda"] = RunnerResult(
            "torch-float32-cuda", "torch", "cuda", status="not available",
            reason=f"torch {torch.__version__} sees no CUDA device")
    for provider in providers:
        device = "cpu" if provider == CPU else "cuda"
        name = SHORT_NAMES.get(provider, provider)
        result = results[name] = RunnerResult(name, "onnxruntime", device, settings={"provider": provider})
        reason = provider_status(provider)
        if reason:
            result.status, result.reason = "not available", reason
            continue
        try:
            runner = OrtRunner(data, provider)
        except ProviderUnavailable as exc:
            not_there = "not available" in str(exc)
            result.status = "not available" if not_there else "failed"
            result.reason = str(exc).split("not available: ", 1)[-1] if not_there else str(exc)
            continue
        runners[name], result.settings = runner, runner.settings
    return runners, results


def _run_case(case: Case, oracle: Float64Oracle, runners: dict[str, Any], results: dict[str, RunnerResult]) -> float:
    """Run one case everywhere and record the drift; returns the oracle's run time."""
    t0 = time.perf_counter()
    expected = oracle.infer(case.feeds)
    oracle_seconds = time.perf_counter() - t0
    float32: dict[str, dict[str, np.ndarray]] = {}
    for name, runner in runners.items():
        result = results[name]
        if result.status != "ok":
            continue
        t0 = time.perf_counter()
        try:
            actual = _infer(runner, case)
        except ProviderUnavailable as exc:  # this case would not run (a shape the graph cannot take, say)
            result.case_errors[case.name] = str(exc).split(": ", 1)[-1]
            continue
        result.run_seconds += time.perf_counter() - t0
        if result.kind == "torch":
            float32[result.device] = actual
        result.drift[case.name] = _compare(expected, actual, case)
        reference = float32.get("cpu")
        if result.kind == "onnxruntime" and reference is not None:
            result.vs_float32[case.name] = _compare(reference, actual, case)
    return oracle_seconds


def _infer(runner: Any, case: Case) -> dict[str, np.ndarray]:
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
    return {
        name: OutputDrift.from_arrays(expected[name], actual[name], case.time_axis if name == "output" else None)
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
