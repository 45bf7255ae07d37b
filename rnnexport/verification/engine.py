"""The one verification engine: cases × runners against an oracle → ``VerifyReport`` (numbers only; ``judge``
makes the verdict). Every front-end runs it, and differs only in its oracle, cases and runners:

- ``verify``: a recurrent module, its float64 copy as the oracle, the standard cases of its config;
- ``golden.verify_golden``: outputs an earlier run saved, without PyTorch;
- ``whole_model.verify_model``: a whole ``nn.Module`` in float64, cases from its named dynamic dims.

    report = rnnexport.verify(my_model.rnn, "model.onnx")
    assert report.passed(), report.failures()
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import numbers
import os
import time
from concurrent.futures import Future
from contextlib import ExitStack, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import onnx

from rnnexport.config import ModelConfig, Tolerance, config_for_module, parse_config
from rnnexport.contract import AUTO_THREADS, C0, C_N, CASE_NAMES, DEFAULT_THREADS, H0, H_N, MAX_THREADS, OUTPUT
from rnnexport.errors import ConfigError, ProviderUnavailable, RunnerFailed, RunnerUnavailable
from rnnexport.export.variants import float16_compute
from rnnexport.graph.precision import coarsest, model_precision, quantized_padding
from rnnexport.graph.reader import check_model_matches, contract_problems, model_from_source
from rnnexport.verification.cases import LONG_SEQ, Case, make_cases, nonfinite_count, skipped_cases
from rnnexport.verification.diagnosis import diagnose_results
from rnnexport.verification.drift import OutputDrift
from rnnexport.verification.precision_oracle import model_of, oracle_name, own_oracles
from rnnexport.verification.ragged import ragged_hints, reads_sequence_lens
from rnnexport.verification.results import RunnerResult, VerifyReport
from rnnexport.verification.runners import (
    DEFAULT_FAMILIES,
    FAMILIES,
    TORCH_CPU,
    TORCH_CUDA,
    OpenedAhead,
    Runner,
    RunnerSpec,
    worker_pool,
)
from rnnexport.verification.runners.iree_runner import iree_specs
from rnnexport.verification.runners.openvino_runner import openvino_specs
from rnnexport.verification.runners.ort_runner import (
    CPU,
    CUDA,
    TENSORRT,
    OrtRunner,
    ort_name,
    provider_status,
    variant_specs,
)
from rnnexport.verification.runners.tract_runner import tract_specs
from rnnexport.verification.verdict import Tolerances

if TYPE_CHECKING:
    import torch

__all__ = ["Oracle", "RunnerSpec", "RunnerResult", "VerifyReport", "run_engine", "runtime_specs", "verify"]

DEFAULT_PROVIDERS = (CPU, CUDA)
FLOAT16_CUDA = "ort-cuda-float16"
# How much model a run keeps opened ahead of the runner in use (each runner holds about its model's size): the
# shipped artifacts (32 MB at most) have all their runners opened ahead, a 1 GB model one.
AHEAD_BYTES = 256 << 20
# Cases whose inputs are at most this large in all have the oracle computed on a thread of its own beside the
# runners; larger ones (long sequences) in order, first, so that its peak never meets a runner's: at 100,000 steps
# of lstm_dropout_ragged (batch 4, 32 MB of inputs) the two side by side raised verify's peak by 93 MB
# (2026-12-01). The shipped artifacts' standard cases come to 3.1 MiB at most.
ORACLE_AHEAD_BYTES = 8 << 20
# After a call whose case has inputs at least this large, the memory freed is handed back to the system
# (``release_freed``).
RELEASE_BYTES = 8 << 20


class Oracle(Protocol):
    """What every runner is measured against. ``expected(case)``: output name → array, in float64."""

    name: str
    settings: dict[str, Any]

    def expected(self, case: Case) -> dict[str, np.ndarray]: ...


def run_engine(name: str, data: bytes, oracle: Oracle, cases: list[Case], specs: list[RunnerSpec], *,
               config: dict[str, Any], tolerances: Tolerances, skipped: dict[str, str] | None = None,
               contract: list[str] | None = None, start: float | None = None,
               own: dict[str, Oracle] | None = None, no_lengths: frozenset[str] = frozenset(),
               ahead: bool = False, oracle_ahead: bool = False) -> VerifyReport:
    """Run every case through ``oracle`` and every runner of ``specs`` (in that order; one that cannot run here
    is reported as such) and gather the drift against the oracle into a report. ``data``: the serialized
    model the runtimes run (its sha256 names the report). ``start``: ``time.perf_counter()`` when the caller
    began, so that ``seconds`` includes its own preparation. ``own``: runner name → the oracle of that runner's
    precision (``precision_oracle.py``), whose drift is recorded as well (``vs_precision``). ``no_lengths``: runners
    whose graphs' recurrent nodes do not read ``sequence_lens`` (masked graphs): no hint says they ignore it.
    ``ahead``: the runners are opened on a second thread while the oracle and the runners before them run
    (``OpenedAhead``, up to ``AHEAD_BYTES`` of model ahead); each still runs alone, and is closed before the next.
    ``oracle_ahead``: the oracle computes its cases on a thread of its own while the runners run (``Expected``),
    where all the cases' inputs come to at most ``ORACLE_AHEAD_BYTES``: for an oracle that runs none of a user's
    code, which could keep state between calls."""
    start = time.perf_counter() if start is None else start
    background = oracle_ahead and sum(v.nbytes for c in cases for v in c.feeds.values()) <= ORACLE_AHEAD_BYTES
    with (OpenedAhead(specs, AHEAD_BYTES // max(len(data), 1)) if ahead else nullcontext(specs) as specs,
          Expected(oracle, cases, background) as expected):
        return _run_engine(name, data, oracle, expected, cases, specs, config=config, tolerances=tolerances,
                           skipped=skipped, contract=contract, start=start, own=own, no_lengths=no_lengths)


class Expected:
    """The oracle's outputs of each case, by case name. ``background``: computed in order on a thread of their
    own, so that the runners run beside the oracle (each call still one thread), and each awaited when first asked
    for; otherwise all computed here, before anything else runs. ``seconds``: the oracle's calls, in total. On
    exit the cases not begun are dropped and the one being computed is waited for."""

    def __init__(self, oracle: Oracle, cases: list[Case], background: bool):
        self._oracle, self.seconds = oracle, 0.0
        self._pool = worker_pool("rnnexport-oracle") if background else None
        self._values: dict[str, Future[dict[str, np.ndarray]] | dict[str, np.ndarray]] = {}
        for case in cases:
            self._values[case.name] = self._pool.submit(self._timed, case) if self._pool else self._timed(case)

    def _timed(self, case: Case) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        try:
            return self._oracle.expected(case)
        finally:
            self.seconds += time.perf_counter() - t0
            release_freed(case)

    def __getitem__(self, name: str) -> dict[str, np.ndarray]:
        value = self._values[name]
        return value.result() if isinstance(value, Future) else value

    def __enter__(self) -> Expected:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _run_engine(name: str, data: bytes, oracle: Oracle, expected: Expected, cases: list[Case],
                specs: list[RunnerSpec], *, config: dict[str, Any], tolerances: Tolerances,
                skipped: dict[str, str] | None, contract: list[str] | None, start: float,
                own: dict[str, Oracle] | None, no_lengths: frozenset[str]) -> VerifyReport:
    results: dict[str, RunnerResult] = {}
    reference: dict[str, dict[str, np.ndarray]] = {}  # PyTorch float32's outputs, what runtimes are compared with
    # an own-precision oracle's outputs, computed for the first runner held to it and kept for the others (a bare
    # fp16-weights file holds ONNX Runtime and OpenVINO f32 to the same one)
    own_expected: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for spec in specs:  # one runner open at a time: what a runtime keeps after a long case goes when it closes
        with ExitStack() as stack:
            runner = open_runner(stack, spec, results)
            if runner is None:
                continue
            result = results[runner.name]
            # a runner that turned out to compute coarser than its file (OpenVINO's bf16 on an fp16-weights file)
            # is judged at its own precision's floor, not against the file's precision oracle at float32 tolerance
            precise = (own or {}).get(runner.name)
            precise = precise if precise and precise.name == oracle_name(result.precision) else None
            for case in cases:
                outputs = _run_runner(runner, case, expected, result, precise, own_expected,
                                      reference.get(case.name), runner.name not in no_lengths)
                if runner.name == TORCH_CPU and outputs is not None:
                    reference[case.name] = outputs
                del outputs  # before the next case runs
                release_freed(case)
            if isinstance(runner, OrtRunner):
                result.placement, result.fallbacks = runner.placement, runner.fallbacks()
    for case in cases:  # the oracle's own failure, where no runner asked for that case
        expected[case.name]
    return VerifyReport(
        name=name, model_sha256=hashlib.sha256(data).hexdigest(), config=config, tolerances=tolerances,
        cases=[_case_summary(c) for c in cases], skipped_cases=skipped or {}, runners=list(results.values()),
        oracle={"name": oracle.name, **oracle.settings, "run_seconds": expected.seconds},
        seconds=time.perf_counter() - start, inputs=cases, contract=contract or [])


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # TypeError: Windows, where a library must be named
        return None


def release_freed(case: Case) -> None:
    """After a call on a case with inputs of ``RELEASE_BYTES`` or more: the memory freed since handed back to the
    system, where glibc's ``malloc_trim`` can. A long sequence's buffers, freed, otherwise stay resident between
    the heap's live blocks and count towards verify's peak: at 100,000 steps of lstm_dropout_ragged (batch 4) about
    140 MB of them between two runners (2026-12-01). A trim takes milliseconds (80 ms after a heap of 3,000
    scattered 800 kB blocks)."""
    if sum(v.nbytes for v in case.feeds.values()) >= RELEASE_BYTES and (trim := _malloc_trim()) is not None:
        trim(0)


def open_runner(stack: ExitStack, spec: RunnerSpec, results: dict[str, RunnerResult]) -> Runner | None:
    """``spec``'s runner entered on ``stack``, its result added to ``results``; None (and a result saying why) when
    it cannot run here."""
    try:
        runner = stack.enter_context(spec.open())
    except ProviderUnavailable as exc:
        results[spec.name] = RunnerResult.unavailable(spec, exc)
        return None
    result = results[runner.name] = RunnerResult.of(runner)
    result.precision = coarsest(runner.precision, spec.precision)  # the file's, if coarser
    result.model_bytes = spec.model_bytes
    return runner


def thread_plan(threads: int | str) -> tuple[int, bool]:
    """``threads`` as verify takes it → (threads of PyTorch and of every runtime, whether ``run_engine`` opens the
    runners ahead on a second thread). ``"auto"`` (the default): one thread each, runners opened ahead where this
    process may use two cores or more; a count N from 0 to ``MAX_THREADS``: N threads each (0: each one's own
    default, all cores), runners opened ahead unless N is 1, so that 1 keeps verify to one busy thread.
    ``ConfigError`` for anything else. Why one thread by default: ``DEFAULT_THREADS`` in ``contract.py``."""
    if isinstance(threads, str) and threads == AUTO_THREADS:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return 1, cores >= 2
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 0 <= threads <= MAX_THREADS:
        raise ConfigError(f"threads {threads!r}: expected {AUTO_THREADS!r} or a whole number from 0 to {MAX_THREADS}")
    count = int(threads)
    return count, count != 1


def check_names(runtimes: tuple[str, ...], case_names: tuple[str, ...] | None, known_cases: tuple[str, ...]) -> None:
    """Refuse runner families and case names that do not exist (``ConfigError``): a misspelt name must not
    quietly run nothing."""
    unknown = [r for r in runtimes if r not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown runtime {unknown[0]!r}; known: {', '.join(FAMILIES)}")
    unknown = [c for c in case_names or () if c not in known_cases]
    if unknown:
        raise ConfigError(f"unknown case {unknown[0]!r}; known: {', '.join(known_cases)}")


def default_providers(runtimes: tuple[str, ...]) -> tuple[str, ...]:
    """ONNX Runtime's providers a run of ``runtimes`` tries when none are named: CPU and CUDA, and TensorRT where
    its libraries load; none where ONNX Runtime is not among the ``runtimes``, so that a GPU provider's libraries
    are loaded only for a run that uses them."""
    if "ort" not in runtimes:
        return ()
    return DEFAULT_PROVIDERS + ((TENSORRT,) if provider_status(TENSORRT) is None else ())


def runtime_specs(data: bytes, providers: tuple[str, ...], runtimes: tuple[str, ...], threads: int = 0,
                  variants: dict[str, bytes | str] | None = None) -> list[RunnerSpec]:
    """The runtime runners of the chosen families for the serialized model ``data``: ONNX Runtime on each of
    ``providers``, OpenVINO, tract, IREE, then each deployment variant on ONNX Runtime, and the model computing in
    float16 on CUDA where CUDA is among the providers. No PyTorch: this is what a golden or whole-model check
    runs. Each runner of ``data`` computes at least as coarsely as the file does (``model_precision``: a float16
    or quantized file is judged at that precision's tolerance)."""
    specs: list[RunnerSpec] = []
    if "ort" in runtimes:
        for provider in providers:
            provider_status(provider)  # cached: loads a GPU provider's libraries here, not on OpenedAhead's thread
            specs.append(RunnerSpec(ort_name(provider), "onnxruntime", "cpu" if provider == CPU else "cuda",
                                    functools.partial(OrtRunner, data, provider, threads=threads),
                                    model_bytes=len(data)))
    if "openvino" in runtimes:
        specs += openvino_specs(data, threads)
    if "tract" in runtimes:
        specs += tract_specs(data)
    if "iree" in runtimes:
        specs += iree_specs(data, threads)
    computes_in = model_precision(onnx.load_model_from_string(data))  # a float16 or quantized file, as it is
    specs = [dataclasses.replace(s, precision=coarsest(s.precision, computes_in)) for s in specs]
    if "ort" in runtimes:
        specs += variant_specs(variants or {}, providers, threads)
        if CUDA in providers:  # half precision where it is deployed: on the GPU
            specs.append(RunnerSpec(FLOAT16_CUDA, "onnxruntime", "cuda", lambda: _float16_cuda(data, threads),
                                    precision="f16", model_bytes=len(data)))
    return specs


def torch_specs(module: torch.nn.Module) -> list[RunnerSpec]:
    """PyTorch float32 running ``module`` itself, on CPU and (where torch sees one) on CUDA."""
    from rnnexport.verification.runners.torch_runner import TorchRunner, torch_cuda

    return [RunnerSpec(TORCH_CPU, "torch", "cpu", lambda: TorchRunner(module, "cpu")),
            RunnerSpec(TORCH_CUDA, "torch", "cuda", lambda: torch_cuda(module))]


def _float16_cuda(data: bytes, threads: int) -> OrtRunner:
    """The model computing in float16 on ONNX Runtime's CUDA provider (judged at the f16 tolerance)."""
    reason = provider_status(CUDA)
    if reason:
        raise RunnerUnavailable(FLOAT16_CUDA, reason)
    model = float16_compute(onnx.load_model_from_string(data)).SerializeToString()
    return OrtRunner(model, CUDA, threads=threads, name=FLOAT16_CUDA, precision="f16")


def tolerances_for(cfg: ModelConfig, atol: float | None = None, rtol: float | None = None) -> Tolerances:
    """The config's tolerance on CPU, at least ``CUDA_TOLERANCE`` on CUDA; ``atol``/``rtol`` override both."""
    return Tolerances(cfg.tolerance, atol=atol, rtol=rtol)


def config_for_onnx(module: torch.nn.Module, model: onnx.ModelProto, name: str = "model") -> ModelConfig:
    """A config describing ``module`` with the optional inputs that ``model`` declares."""
    inputs = {i.name for i in model.graph.input}
    raw = config_for_module(module, name)
    raw["inputs"] = {"initial_state": "h0" in inputs, "variable_lengths": "sequence_lens" in inputs}
    return parse_config(raw, f"module {name}")


def verify(
    module: torch.nn.Module,
    model: onnx.ModelProto | str | bytes,
    *,
    cfg: ModelConfig | None = None,
    providers: tuple[str, ...] | None = None,
    runtimes: tuple[str, ...] = DEFAULT_FAMILIES,
    case_names: tuple[str, ...] | None = None,
    tolerances: Tolerances | Tolerance | None = None,
    seed: int = 0,
    long_seq: int = LONG_SEQ,
    cases: list[Case] | None = None,
    threads: int | str = DEFAULT_THREADS,
    variants: dict[str, bytes | str] | None = None,
    per_layer: bool = False,
    shapes: tuple[tuple[int, int], ...] = (),
) -> VerifyReport:
    """Run ``cases`` (default: ``make_cases(cfg, seed)``) through the float64 oracle and every runner of
    the ``runtimes`` families: PyTorch float32 (CPU, and CUDA when torch sees a GPU), ONNX Runtime on each
    of ``providers`` (default: CPU and CUDA, and TensorRT where this onnxruntime has it), OpenVINO
    (where it is installed) and, when named, tract and IREE. A runner that cannot run here is reported as not available.

    ``cfg`` defaults to one derived from ``module`` and the model's inputs. ``tolerances`` default to
    the config's for CPU and ``CUDA_TOLERANCE`` (or the config's, if larger) for CUDA; a single
    ``Tolerance`` applies to both. ``threads``: ``thread_plan``'s.
    ``variants`` (variant name → serialized model, see ``export/variants.py``) run on ONNX Runtime as runners
    of their own, judged at their precision's tolerance against the float oracle and, for fp16-weights and int8,
    against the oracle of their own precision too (``precision_oracle.py``); ``shapes`` add a case per (seq,
    batch). A variant given as a sentence is reported as not available with that reason. A runtime runner that
    fails its tolerance (every one, with ``per_layer``) gets a ``localisation``: each layer's error up to the first
    failing one, and a diagnosis of the likely bug.
    """
    from rnnexport.verification.runners.torch_runner import Float64Oracle, torch_threads

    start = time.perf_counter()
    check_names(runtimes, case_names, CASE_NAMES)
    threads, ahead = thread_plan(threads)
    proto, data = model_from_source(model)
    cfg = cfg or config_for_onnx(module, proto)
    check_model_matches(proto, cfg, cfg.name, need_recurrent=False)
    replayed = cases is not None
    cases = cases if cases is not None else make_cases(cfg, seed, case_names, long_seq, shapes)
    if isinstance(tolerances, Tolerance):
        tolerances = Tolerances(tolerances, atol=tolerances.atol, rtol=tolerances.rtol)
    tolerances = tolerances or tolerances_for(cfg)
    specs = (torch_specs(module) if "torch" in runtimes else []) + runtime_specs(
        data, providers or default_providers(runtimes), runtimes, threads, variants)
    skipped = {} if replayed else {k: v for k, v in skipped_cases(cfg).items() if case_names is None or k in case_names}
    with torch_threads(threads):  # PyTorch's runners and the oracle honour --threads as the runtimes do
        problems = contract_problems(proto, cfg) + quantized_padding(proto)  # what every runtime would get
        own = own_oracles(module, specs, data, variants or {})
        no_lengths = lengths_unread(specs, proto, data, variants or {})
        report = run_engine(cfg.name, data, Float64Oracle(module), cases, specs, config=cfg.to_dict(),
                            tolerances=tolerances, skipped=skipped, contract=problems, start=start,
                            own={name: o.oracle for name, o in own.items()}, no_lengths=no_lengths, ahead=ahead,
                            oracle_ahead=ahead)
        results = {r.name: r for r in report.runners}
        own = {name: o for name, o in own.items() if results[name].precision_oracle}  # those run_engine kept
        for name, o in own.items():
            if results[name].status == "ok":
                results[name].weight_problems = o.problems
        diagnose_results(module, data, variants or {}, cfg, cases, results, tolerances, per_layer,
                         own={name: o.module for name, o in own.items()})
    report.seconds = time.perf_counter() - start
    return report


def lengths_unread(specs: list[RunnerSpec], proto: onnx.ModelProto, data: bytes,
                   variants: dict[str, bytes | str]) -> frozenset[str]:
    """The runtime runners whose graphs' recurrent nodes do not read ``sequence_lens`` (masked graphs): ``run_engine``
    hints no ignored ``sequence_lens`` for them. ``proto`` is ``data`` parsed; a variant's file is parsed here."""
    return frozenset(s.name for s in specs if s.kind != "torch" and not reads_sequence_lens(
        proto if (m := model_of(s.name, data, variants)) is data else onnx.load_model_from_string(m)))


class UnusableOutputs(Exception):
    """A runner's outputs that cannot be compared at all (a streaming case whose state cannot be carried)."""


def _run_runner(runner: Runner, case: Case, oracle: Expected, result: RunnerResult,
                precise: Oracle | None, own_expected: dict[tuple[str, str], dict[str, np.ndarray]],
                reference: dict[str, np.ndarray] | None, reads_lengths: bool) -> dict[str, np.ndarray] | None:
    """Run ``case`` on one runner and record in ``result`` its drift against the ``oracle``'s outputs (awaited once
    the runner has run, when the oracle runs beside it), against
    ``precise`` (the oracle of the runner's own precision; its outputs kept in ``own_expected``, by oracle and case)
    and against PyTorch float32's ``reference``; returns the runner's outputs (None when it failed). Whatever a runner
    returns (another shape, type, rank or count, NaN/Inf) is recorded as drift in words, never raised.
    ``reads_lengths``: the runner's recurrent nodes read ``sequence_lens`` (not a masked graph), so a ragged hint
    may say it is ignored."""
    t0 = time.perf_counter()
    try:
        actual = _infer(runner, case)
    except RunnerFailed as exc:  # this case would not run (a shape the graph cannot take, say)
        result.case_errors[case.name] = exc.reason
        return None
    except UnusableOutputs as exc:
        result.drift[case.name] = {name: OutputDrift.unmatched(str(exc)) for name in oracle[case.name]}
        return None
    result.run_seconds += time.perf_counter() - t0
    expected = oracle[case.name]
    result.drift[case.name] = _compare(expected, actual, case)
    if precise is not None:
        if (precise.name, case.name) not in own_expected:  # its time is counted once, on the runner that ran it
            t0 = time.perf_counter()
            own_expected[precise.name, case.name] = precise.expected(case)
            result.precision_oracle_seconds += time.perf_counter() - t0
        result.vs_precision[case.name] = _compare(own_expected[precise.name, case.name], actual, case)
        result.precision_oracle = precise.name
    if result.kind != "torch" and reads_lengths and (hints := ragged_hints(case, actual, expected)):
        result.hints[case.name] = hints
    explain = getattr(runner, "explain", None)  # what a runner's family knows of its own wrong results
    if explain and (said := explain(case, actual)):
        result.hints[case.name] = {**result.hints.get(case.name, {}), **said}
    if result.kind != "torch" and reference is not None:
        result.vs_float32[case.name] = _compare(reference, actual, case)
    return actual


def _infer(runner: Runner, case: Case) -> dict[str, np.ndarray]:
    """One call, or for a streaming case one call per chunk with the final state carried over (``UnusableOutputs``
    when a call returns no state of the shape fed in, or pieces of output that do not join along time)."""
    if not case.chunks:
        return runner.infer(case.feeds)
    feeds, pieces, start = dict(case.feeds), [], 0
    for length in case.chunks:
        feeds["input"] = np.take(case.feeds["input"], range(start, start + length), axis=case.time_axis)
        if "sequence_lens" in feeds:
            feeds["sequence_lens"] = np.full_like(case.feeds["sequence_lens"], length)
        out = runner.infer(feeds)
        if OUTPUT not in out:
            raise UnusableOutputs(f"no {OUTPUT!r} among the runner's outputs ({', '.join(out) or 'none'})")
        pieces.append(np.asarray(out[OUTPUT]))
        for state, final in ((H0, H_N), (C0, C_N)):
            if state not in case.feeds:
                continue
            carried = out.get(final)
            if carried is None or np.shape(carried) != case.feeds[state].shape:
                got = "none" if carried is None else f"shape {list(np.shape(carried))}"
                raise UnusableOutputs(f"{final} ({got}) cannot be fed back as {state} "
                                      f"{list(case.feeds[state].shape)} for the next chunk")
            feeds[state] = carried
        start += length
    try:
        out[OUTPUT] = np.concatenate(pieces, axis=case.time_axis)
    except ValueError as exc:  # numpy: shapes that differ off the time axis, or no such axis
        shapes = ", ".join(str(list(p.shape)) for p in pieces)
        raise UnusableOutputs(f"the chunks' outputs ({shapes}) do not join along the time axis: {exc}") from None
    return out


def _compare(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], case: Case) -> dict[str, OutputDrift]:
    """Drift of every output the oracle has; one the runner lacks is named, one the oracle lacks is ignored."""
    missing = OutputDrift.unmatched(f"missing from the runner's outputs (it returned {', '.join(actual) or 'none'})")
    return {
        name: OutputDrift.from_arrays(expected[name], np.asarray(actual[name]),
                                      case.time_axis if name == OUTPUT and case.time_axis is not None else None)
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
