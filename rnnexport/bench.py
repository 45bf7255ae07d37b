"""Benchmarks measured as ratios within one run: a deploy matrix of PyTorch eager, ONNX Runtime on our graph
(and on torch.onnx's graphs, its variants and the other ragged form), OpenVINO, tract (one thread whatever the
count: its Python API has none to set; it runs in a process of its own, which times each run itself, so the
pipe to it is left out), each with its worst drift against the float64 oracle; export times, this machine's float32
GEMM peak, and ``rnnexport verify`` of the artifacts timed from outside, as a user runs it (``time_verify``).

Timing: one warm-up call per runner, then ``rounds`` rounds; in each round every runner runs in a rotated
order, about 20 ms of calls each, every call timed on its own (wall clock, with the calling thread's CPU time
beside it as a cross-check). The median over calls is quoted with its spread ((p90 - p10) / median). The even
and the odd rounds make two passes: a figure is trusted only when their medians agree within 20%; a runner
whose passes do not gets more rounds (up to 3×) and is marked noisy if they still do not, wherever it is shown.
Two fixed probes are timed at the start of every round, a matrix product on every core (``machine_probe``) and a
read of a buffer half this machine's L3 (``memory_probe``): a figure measured while either ran 20% or more slower
than at its best in the run is marked noisy too, since two passes on a machine slowed throughout (a busy neighbour
on a core or the cache) agree with each other and not with the next run.
ONNX Runtime's threads do not spin after a call, so no runner takes CPU from the next; eager PyTorch is also
timed alone first, and the two figures are printed side by side.
Like for like: every runner is measured at 1 thread and at all cores, and ratios compare equal thread counts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import onnx
import onnxruntime as ort
import torch

from rnnexport.artifacts.build import build_artifact, export_config, variant_files
from rnnexport.artifacts.targets import Target
from rnnexport.config import GATES, ModelConfig
from rnnexport.contract import AUTO_THREADS
from rnnexport.errors import ExportError, RunnerFailed, RunnerUnavailable
from rnnexport.export.builders import build_model
from rnnexport.export.torch_exporters import EXPORTERS
from rnnexport.verification.cases import make_feeds
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.torch_runner import Float64Oracle, TorchRunner, torch_threads
from rnnexport.verification.runners.tract_runner import TRACT, TractRunner

CORES = os.cpu_count() or 1
THREADS = tuple(dict.fromkeys((1, CORES)))
SAMPLE_SECONDS = 0.02  # of calls per runner and round, each call timed on its own
CALLS_PER_ROUND = 200
NOISY = 0.20  # a spread at or above this is not quoted as a plain median
PROBE_SIZE = 384  # machine_probe's matrices: a product of 113 MFLOP, in the L2 caches
PROBE_BYTES = 16 << 20  # memory_probe's buffer: half the 32 MiB L3 of this project's machines, about 1 ms to read
PROBE_CALLS = 5  # calls of each probe at the start of each round (their medians are the round's machine speed)
PEAK_SIZES = (1024, 2048, 4096)
REFERENCE = "ort-cpu"  # ratios are to ONNX Runtime float32 on our graph, full optimisation, same threads


def shape_classes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(seq_len, batch) per shape class: the example, one streaming step, a large batch, a long sequence."""
    return {"example": (cfg.example.seq_len, cfg.example.batch), "stream": (1, 1),
            "large_batch": (cfg.example.seq_len, 64), "long": (512, 1)}


def forward_flops(cfg: ModelConfig, seq_len: int, batch: int) -> int:
    """Multiply-adds ×2 of the input and recurrent products of one forward pass (gates' pointwise work aside)."""
    gates = GATES[cfg.cell] * cfg.hidden_size
    total = 0
    for layer in range(cfg.num_layers):
        layer_in = cfg.input_size if layer == 0 else cfg.num_directions * cfg.hidden_size
        total += 2 * gates * (layer_in + cfg.hidden_size) * cfg.num_directions
    return total * seq_len * batch


def gemm_peak(threads: int, sizes: tuple[int, ...] = PEAK_SIZES, rounds: int = 3) -> float:
    """Float32 GFLOP/s of square ``torch.mm`` at ``threads`` threads: the best over ``sizes`` and ``rounds``
    (a single 1024² product underestimates the peak: recurrent kernels were measured above it)."""
    best = 0.0
    with torch_threads(threads):
        for size in sizes:
            a, b = torch.randn(size, size), torch.randn(size, size)
            torch.mm(a, b)
            seconds = min(_seconds(functools.partial(torch.mm, a, b)) for _ in range(rounds))
            best = max(best, 2 * size**3 / seconds / 1e9)
    return best


def memory_bandwidth(threads: int, mib: int = 256, rounds: int = 3) -> float:
    """GB/s of one large copy (bytes read plus bytes written) at ``threads`` PyTorch threads, the best of
    ``rounds``: the rate at which a call can at best stream its weights from memory."""
    with torch_threads(threads):
        source = torch.ones(mib * 2**20 // 4)
        target = torch.empty_like(source)
        target.copy_(source)
        seconds = min(_seconds(functools.partial(target.copy_, source)) for _ in range(rounds))
    return 2 * source.numel() * 4 / seconds / 1e9


def floor_ms(flops: int, weight_bytes: int, peak_gflops: float, bandwidth_gbps: float) -> tuple[float, str]:
    """The least time one call can take on this machine, and what sets it: its FLOPs at the GEMM peak
    ("arithmetic") or its weights read once at the copy bandwidth ("memory"), whichever is longer."""
    arithmetic, memory = flops / peak_gflops / 1e6, weight_bytes / bandwidth_gbps / 1e6
    return (arithmetic, "arithmetic") if arithmetic >= memory else (memory, "memory")


def over_peak(flops: int, timing: Timing, peak_gflops: float) -> float:
    """The share of the GEMM peak a run at ``timing`` reaches; above 1 means the peak is unsound."""
    return flops / (timing.median_ms / 1e3) / 1e9 / peak_gflops


def _seconds(call: Callable[[], Any], repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat


@dataclass
class Timing:
    """Per-call latency: ``median_ms`` of individually timed calls, their ``spread`` ((p90 - p10) / median), how
    many ``rounds`` were run, ``cpu_ms``: the median CPU time of the calling thread per call (a cross-check: on a
    loaded machine wall time grows while a single-threaded call's CPU time does not), and ``passes``: the medians of
    the even and the odd rounds, ``machine_ms`` and ``memory_ms``: the medians of the round's probes over those
    rounds. ``noisy``: the two passes differ by ``NOISY`` or more, so the figure does not repeat, or (``slowed``, set
    by ``mark_slowed``) the machine ran a probe ``NOISY`` or more slower than at its best in the run."""

    median_ms: float
    spread: float
    rounds: int = 0
    noisy: bool = False
    cpu_ms: float | None = None
    passes: tuple[float, float] | None = None
    machine_ms: float | None = None
    memory_ms: float | None = None
    slowed: bool = False

    @classmethod
    def of(cls, samples: list[float], cpu: list[float] | None = None, parity: list[int] | None = None,
           machine: list[Probe] | None = None) -> Timing:
        """From per-call seconds; ``cpu``: the same calls' thread CPU seconds; ``parity``: each call's round
        number (two passes: even and odd rounds); ``machine``: the probes in each of those rounds.
        Without passes, noisy means a spread of ``NOISY`` or more."""
        ordered = sorted(samples)
        p10, p90 = ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]
        median = statistics.median(ordered)
        spread = (p90 - p10) / median if median else 0.0
        rounds = len(set(parity)) if parity else len(ordered)
        passes = None
        if parity and rounds >= 2:
            halves = [[t for t, r in zip(samples, parity) if r % 2 == k] for k in (0, 1)]
            passes = (statistics.median(halves[0]) * 1e3, statistics.median(halves[1]) * 1e3)
        noisy = _disagree(*passes) if passes else spread >= NOISY
        return cls(median * 1e3, spread, rounds, noisy, statistics.median(cpu) * 1e3 if cpu else None, passes,
                   statistics.median(m.compute_ms for m in machine) if machine else None,
                   statistics.median(m.memory_ms for m in machine) if machine else None)

    def mark_slowed(self, best: Probe) -> None:
        """Noisy if the machine ran a probe ``NOISY`` or more slower than at ``best`` while this was measured."""
        ran = ((self.machine_ms, best.compute_ms), (self.memory_ms, best.memory_ms))
        if any(ms is not None and ms >= (1 + NOISY) * fastest for ms, fastest in ran):
            self.slowed = self.noisy = True


class Probe(NamedTuple):
    """The probes' median milliseconds: ``machine_probe`` (compute) and ``memory_probe`` (memory)."""

    compute_ms: float
    memory_ms: float


def mark_slowed(results: Sequence[ConfigBench], best: Probe) -> Probe:
    """Mark noisy each figure of ``results`` measured while the machine ran a probe ``NOISY`` or more slower than at
    its best: ``best`` or the fastest of a figure's, whichever is less, for each probe (returned). The
    recommendations are made again, since they say which of their figures are noisy."""
    timings = [t for r in results for t in r.timings()]
    best = Probe(min([best.compute_ms, *(t.machine_ms for t in timings if t.machine_ms is not None)]),
                 min([best.memory_ms, *(t.memory_ms for t in timings if t.memory_ms is not None)]))
    for timing in timings:
        timing.mark_slowed(best)
    for result in results:
        result.recommendation = _recommend(result.runtime)
    return best


def machine_probe() -> None:
    """A fixed product of ``PROBE_SIZE``² float32 matrices (``torch.mm``) on every core, about 0.6 ms on 2 cores:
    timed at the start of every round, it shows when the machine gives this process less of any core (a busy
    neighbour on one, a lower clock), since each of its threads waits for the slowest. On this project's shared
    machine such a slowdown raised the runners' thread CPU time 1.3-1.9×, and two-thread figures the most."""
    with torch_threads(CORES):
        torch.mm(*_probe_matrices())


def memory_probe() -> float:
    """A read of ``PROBE_BYTES`` (numpy's sum, one thread): slower when neighbours evict it from the shared L3 or
    take the memory bandwidth, which slows a runner whose weights live there (lstm_large's 31.5 MB read at every
    step ran 1.3-1.6× slower across two runs while a computation's time stayed within 1%)."""
    return float(_probe_buffer().sum())


@functools.cache
def _probe_buffer() -> np.ndarray:
    return np.ones(PROBE_BYTES // 4, dtype=np.float32)


@functools.cache
def _probe_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(PROBE_SIZE, PROBE_SIZE, generator=generator),
            torch.rand(PROBE_SIZE, PROBE_SIZE, generator=generator))


def probe(calls: int = PROBE_CALLS) -> Probe:
    """Each probe's median milliseconds over ``calls`` runs."""
    return Probe(*(statistics.median(_seconds(p) for _ in range(calls)) * 1e3 for p in (machine_probe, memory_probe)))


def _disagree(a: float, b: float) -> bool:
    return abs(a - b) >= NOISY * min(a, b)


def time_interleaved(calls: Mapping[str, Callable[[], Any]], rounds: int,
                     warmed: dict[str, float] | None = None, max_rounds: int | None = None) -> dict[str, Timing]:
    """Per-call timing of each call: after one warm-up call, ``rounds`` rounds in rotated order; in each round every
    call runs ``CALLS_PER_ROUND``-bounded times (about ``SAMPLE_SECONDS`` worth), each timed on its own, wall and
    thread CPU (a call that returns ``Measured`` gives its own), each round after the machine's probes (``probe``).
    Even and odd rounds make two passes; a call whose passes differ by ``NOISY`` or more gets more
    rounds (rotated among such calls) up to ``max_rounds`` (default 3×) and stays marked noisy if they still do.
    ``warmed`` gives, for calls that already ran once, how long that took: they are not warmed up again."""
    if not calls:
        return {}
    per_round = {}
    for name, call in calls.items():
        if warmed is None or name not in warmed:
            call()  # warm-up
        once = warmed[name] if warmed and name in warmed else _seconds(call)
        per_round[name] = max(1, min(CALLS_PER_ROUND, int(SAMPLE_SECONDS / max(once, 1e-6))))
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    parity: dict[str, list[int]] = {name: [] for name in calls}
    machine: dict[str, list[Probe]] = {name: [] for name in calls}
    done = dict.fromkeys(calls, 0)
    limit = max_rounds or 3 * rounds
    names = list(calls)
    while names:
        for r in range(rounds):
            speed = probe()
            for name in names[r % len(names):] + names[: r % len(names)]:
                machine[name].append(speed)
                for _ in range(per_round[name]):
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    own = calls[name]()
                    seconds, cpu_seconds = time.perf_counter() - start, time.thread_time() - start_cpu
                    if isinstance(own, Measured):  # timed where it ran
                        seconds, cpu_seconds = own
                    wall[name].append(seconds)
                    cpu[name].append(cpu_seconds)
                    parity[name].append(done[name])
                done[name] += 1
        names = [n for n in names if Timing.of(wall[n], parity=parity[n]).noisy and done[n] + rounds <= limit]
    return {name: Timing.of(wall[name], cpu[name], parity[name], machine[name]) for name in calls}


class Measured(NamedTuple):
    """A call's own account of its time, for a runner that works in another process (tract: its child times each
    run, where the pipe to it would add as much as the run at one step): what ``time_interleaved`` records instead
    of timing the call from outside."""

    seconds: float
    cpu_seconds: float


@dataclass
class Entry:
    """One deployable way to run the model at one thread count: ``runner`` is the name verify gives it; ``timed``,
    where given, runs it and returns its own ``Measured`` time."""

    runner: str
    threads: int
    precision: str
    infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    timed: Callable[[dict[str, np.ndarray]], Measured] | None = None

    @property
    def key(self) -> str:
        return f"{self.runner}@{self.threads}t"


@dataclass
class ConfigBench:
    name: str
    flops: dict[str, int]
    export_ms: dict[str, Timing | str]
    runtime: dict[str, dict[str, Timing | str]]  # shape class → runner@threads → timing, or why it did not run
    drift: dict[str, dict[str, float]]  # shape class → runner@threads → max |Δ| vs the float64 oracle
    precision: dict[str, str]  # runner → what it computes in
    recommendation: dict[str, dict[str, Any]]
    eager_alone: dict[str, Timing] = field(default_factory=dict)  # runner@threads → timed with nothing else
    nodes_by_seq: dict[int, int] = field(default_factory=dict)
    file_bytes: int = 0
    weight_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def timings(self) -> list[Timing]:
        """Every figure timed in rounds: the latencies, eager PyTorch timed alone, and the export times."""
        found = [t for timings in self.runtime.values() for t in timings.values() if isinstance(t, Timing)]
        return found + list(self.eager_alone.values()) + [t for t in self.export_ms.values() if isinstance(t, Timing)]

    def ratio(self, shape: str, key: str) -> float | None:
        """Latency of ``key`` over ONNX Runtime float32 on our graph at the same thread count."""
        threads = key.rsplit("@", 1)[1]
        mine, ref = self.runtime[shape].get(key), self.runtime[shape].get(f"{REFERENCE}@{threads}")
        return mine.median_ms / ref.median_ms if isinstance(mine, Timing) and isinstance(ref, Timing) else None

    def noisy_latency(self) -> dict[str, list[str]]:
        """runner → the shape classes whose ``deploy_latency`` ratio rests on a noisy median (its own or the
        reference's): stored beside the ratios so that every place that shows one marks it."""
        found: dict[str, list[str]] = {}
        for shape, timings in self.runtime.items():
            reference = timings.get(f"{REFERENCE}@{CORES}t")
            for key, timing in timings.items():
                runner, threads = key.rsplit("@", 1)
                noisy = isinstance(timing, Timing) and timing.noisy or isinstance(reference, Timing) and reference.noisy
                if threads == f"{CORES}t" and noisy and runner != REFERENCE:
                    found.setdefault(runner, []).append(shape)
        return found

    def deploy_latency(self) -> dict[str, dict[str, float]]:
        """runner → shape class → latency ratio to ``REFERENCE`` at all cores: what verify's reports show."""
        found: dict[str, dict[str, float]] = {}
        for shape, timings in self.runtime.items():
            for key in timings:
                runner, threads = key.rsplit("@", 1)
                ratio = self.ratio(shape, key)
                if threads == f"{CORES}t" and ratio is not None and not runner.startswith(("torch-", "ort-torch")):
                    found.setdefault(runner, {})[shape] = round(ratio, 3)
        return found


def _export_bytes(cfg: ModelConfig, module: torch.nn.Module, exporter: str) -> bytes:
    return export_config(cfg, module, exporter)[1].SerializeToString()


def _export_times(cfg: ModelConfig, module: torch.nn.Module, rounds: int, exporters: tuple[str, ...]
                  ) -> tuple[dict, dict]:
    """Export time of each exporter (module → serialized bytes) and the graphs they made."""
    graphs: dict[str, bytes | str] = {}
    calls: dict[str, Callable[[], bytes]] = {}
    first: dict[str, float] = {}
    for exporter in EXPORTERS:
        if exporter not in exporters:
            graphs[exporter] = "not measured"
            continue
        call = functools.partial(_export_bytes, cfg, module, exporter)
        start = time.perf_counter()
        try:
            graphs[exporter] = call()  # the graph to run, and the warm-up of its timing
        except ExportError as exc:
            graphs[exporter] = exc.reason
            continue
        first[exporter], calls[exporter] = time.perf_counter() - start, call
    slow = {k: v for k, v in calls.items() if k == "torch-dynamo"}  # seconds per call: a few rounds only
    timings = time_interleaved({k: v for k, v in calls.items() if k not in slow}, rounds, first)
    timings.update(time_interleaved(slow, max(1, rounds // 3), first, max_rounds=max(1, rounds // 3)))
    return {e: timings.get(e, graphs[e]) for e in EXPORTERS}, graphs


def _eager(module: torch.nn.Module, threads: int) -> Callable:
    runner = TorchRunner(module)

    def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch_threads(threads):
            return runner.infer(feeds)
    return infer


def _graphs(cfg: ModelConfig, module: torch.nn.Module, native: bytes) -> dict[str, tuple[bytes, str]]:
    """ONNX Runtime runner name → (graph, precision): our graph, its variants, and for a ragged config the
    other ragged form (``sequence_lens`` against ``masked``), to measure what portability costs."""
    model = onnx.load_model_from_string(native)
    graphs = {REFERENCE: (native, "float32")}
    from rnnexport.export.variants import PRECISION

    made, _ = variant_files(cfg, module, model, ("fp16-weights", "int8-dynamic"))
    graphs.update({f"{REFERENCE}-{kind}": (data, PRECISION[kind]) for kind, data in made.items()})
    if cfg.inputs.variable_lengths:
        other = True if cfg.inputs.variable_lengths == "masked" else "masked"
        alt = dataclasses.replace(cfg.with_variable_lengths(other), opset=max(cfg.opset, 11))
        label = "sequence_lens" if other is True else "masked"
        graphs[f"{REFERENCE}-{label}"] = (export_config(alt, module)[1].SerializeToString(), "float32")
    return graphs


def _entries(cfg: ModelConfig, module: torch.nn.Module, exported: dict[str, Any], stack: ExitStack
             ) -> tuple[list[Entry], dict]:
    """Every runner of the deploy matrix at each thread count, and why those that cannot open did not. Runners
    that hold a process (tract's) are closed by ``stack``."""
    entries, missing = [], {}
    graphs = _graphs(cfg, module, exported["native"])
    tract = _open_tract(exported["native"], stack)
    for threads in THREADS:
        entries.append(Entry("torch-eager", threads, "float32", _eager(module, threads)))
        for name, (data, precision) in graphs.items():
            levels = ("ORT_ENABLE_ALL", "ORT_ENABLE_BASIC") if name == REFERENCE else ("ORT_ENABLE_ALL",)
            for level in levels:
                label = name if level == "ORT_ENABLE_ALL" else f"{name}-basic"
                session = OrtRunner(data, threads=threads, optimization=getattr(ort.GraphOptimizationLevel, level),
                                    arena=True)
                entries.append(Entry(label, threads, precision, session.infer))
        for exporter in EXPORTERS[1:]:
            if isinstance(exported[exporter], bytes):
                entries.append(Entry(f"ort-{exporter}", threads, "float32",
                                     OrtRunner(exported[exporter], threads=threads, arena=True).infer))
        for force_f32, label in ((True, "openvino-cpu-f32"), (False, "openvino-cpu-default")):
            try:
                from rnnexport.verification.runners.openvino_runner import OpenVinoRunner

                runner = OpenVinoRunner(exported["native"], force_f32=force_f32, threads=threads,
                                        keep_buffers=True)
                entries.append(Entry(label, threads, runner.precision, runner.infer))
            except (RunnerUnavailable, RunnerFailed) as exc:
                missing[f"{label}@{threads}t"] = exc.reason
        if isinstance(tract, str):
            missing[f"{TRACT}@{threads}t"] = tract
        else:  # tract's Python API has no thread setting: one thread at every count (its CPU time ≈ wall time)
            entries.append(Entry(TRACT, threads, tract.precision, tract.infer, functools.partial(_tract_timed, tract)))
    return entries, missing


def _tract_timed(tract: TractRunner, feeds: dict[str, np.ndarray]) -> Measured:
    tract.infer(feeds)
    return Measured(*cast(tuple[float, float], tract.last_call))


def _open_tract(data: bytes, stack: ExitStack) -> TractRunner | str:
    """tract on ``data`` (its process closed by ``stack``), or why it cannot run."""
    try:
        return stack.enter_context(TractRunner(data))
    except (RunnerUnavailable, RunnerFailed) as exc:
        return exc.reason


def _runtime(cfg: ModelConfig, module: torch.nn.Module, exported: dict, rounds: int
             ) -> tuple[dict, dict, dict, dict]:
    """Timings and drift of every entry at every shape class, the precision of each runner, and eager timed
    alone at the example shape (before anything else runs) to show the rotation does not slow it down."""
    with ExitStack() as stack:
        return _measure(cfg, module, *_entries(cfg, module, exported, stack), rounds)


def _measure(cfg: ModelConfig, module: torch.nn.Module, entries: list[Entry], missing: dict[str, str], rounds: int
             ) -> tuple[dict, dict, dict, dict]:
    oracle = Float64Oracle(module)
    results: dict[str, dict[str, Timing | str]] = {}
    drift: dict[str, dict[str, float]] = {}
    alone: dict[str, Timing] = {}
    for shape, (seq_len, batch) in shape_classes(cfg).items():
        feeds = make_feeds(cfg, seq_len, batch, np.random.default_rng(0), lengths="ragged")
        expected = oracle.infer(feeds)
        if shape == "example":
            for e in entries:
                if e.runner == "torch-eager":
                    alone[e.key] = time_interleaved({e.key: functools.partial(e.infer, feeds)}, rounds)[e.key]
        calls: dict[str, Callable[[], Any]] = {}
        results[shape], drift[shape] = dict(missing), {}
        for e in entries:
            try:
                actual = e.infer(feeds)
            except RunnerFailed as exc:
                results[shape][e.key] = f"does not run: {exc.reason[:120]}"
                continue
            wrong = output_problem(expected, actual)
            if wrong:  # a wrong-shaped graph is a failed runner, never a crash or a timed figure
                results[shape][e.key] = f"wrong output: {wrong}"
                continue
            drift[shape][e.key] = max(float(np.abs(actual[k].astype(np.float64) - expected[k]).max())
                                      for k in expected)
            calls[e.key] = functools.partial(e.timed or e.infer, feeds)
        results[shape].update(time_interleaved(calls, rounds))
    return results, drift, {e.runner: e.precision for e in entries}, alone


def output_problem(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> str | None:
    """Why ``actual`` cannot be compared with the oracle's ``expected`` (a missing output, another shape, not
    real numbers), or None."""
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            return f"no {name} among its outputs {sorted(actual)}"
        if not np.issubdtype(np.asarray(got).dtype, np.floating):
            return f"{name} is {np.asarray(got).dtype}, not real numbers"
        if np.shape(got) != want.shape:
            return f"{name} has shape {list(np.shape(got))} where PyTorch gives {list(want.shape)}"
    return None


def _recommend(runtime: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Fastest float32 ONNX Runtime setting on our graph per shape class."""
    best = {}
    for shape, timings in runtime.items():
        ours = {k: v for k, v in timings.items() if k.split("@")[0] in (REFERENCE, f"{REFERENCE}-basic")
                and isinstance(v, Timing)}
        name = min(ours, key=lambda k: ours[k].median_ms)
        runner, threads = name.split("@")
        level = "ORT_ENABLE_BASIC" if runner.endswith("-basic") else "ORT_ENABLE_ALL"
        best[shape] = {"intra_op_num_threads": int(threads.removesuffix("t")), "graph_optimization_level": level,
                       "median_ms": ours[name].median_ms, "spread": ours[name].spread, "noisy": ours[name].noisy}
    return best


def bench_config(cfg: ModelConfig, rounds: int = 5, exporters: tuple[str, ...] = EXPORTERS,
                 module: torch.nn.Module | None = None) -> ConfigBench:
    """Every measurement for one config (see the module's docstring for the method); ``native`` is
    always measured, the torch exporters when named in ``exporters``."""
    module = module or build_model(cfg)
    export_ms, graphs = _export_times(cfg, module, rounds, ("native", *exporters))
    runtime, drift, precision, alone = _runtime(cfg, module, graphs, rounds)
    long_cfg = export_config(_with_seq(cfg, 10 * cfg.example.seq_len))[1]
    weights = sum(p.numel() * 4 for p in module.parameters())
    return ConfigBench(
        name=cfg.name, flops={s: forward_flops(cfg, *shape) for s, shape in shape_classes(cfg).items()},
        export_ms=export_ms, runtime=runtime, drift=drift, precision=precision,
        recommendation=_recommend(runtime),
        eager_alone=alone,
        nodes_by_seq={cfg.example.seq_len: len(_graph(graphs["native"]).node), 10 * cfg.example.seq_len:
                      len(long_cfg.graph.node)},
        file_bytes=len(graphs["native"]), weight_bytes=weights)


@dataclass(frozen=True)
class VerifyRun:
    """``rnnexport verify`` of artifacts as a user runs it: one process, imports, opening the runners and writing
    the reports included. ``execution_seconds``: the float64 oracles' and every runner's calls, summed from the
    reports (``oracle.run_seconds``, each runner's ``run_seconds`` and ``precision_oracle_seconds``)."""

    configs: tuple[str, ...]
    wall_seconds: float
    execution_seconds: float
    cpu_seconds: float  # the verify process's user + system CPU time: beside the wall time, the machine's load

    @property
    def ratio(self) -> float:
        return self.wall_seconds / self.execution_seconds


def run_cli(args: Sequence[str]) -> tuple[subprocess.CompletedProcess, float, resource.struct_rusage]:
    """``python -m rnnexport ARGS`` in a process of its own: see ``run_python``."""
    return run_python(["-m", "rnnexport", *args])


def run_python(args: Sequence[str]) -> tuple[subprocess.CompletedProcess, float, resource.struct_rusage]:
    """``python ARGS`` in a process of its own: its result, wall seconds and resource usage (``ru_maxrss``, KiB
    on Linux, is that process's peak resident memory alone)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's usage alone, where RUSAGE_CHILDREN sums them
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, proc.returncode, out.read(), err.read()), wall, usage


def stage_artifacts(targets: Sequence[Target], folder: Path) -> list[Path]:
    """Each target as an artifact folder of its own under ``folder`` (``folder/<k>/<name>``, so two targets of one
    name do not meet): an artifact copied, a config built."""
    made = []
    for k, target in enumerate(targets):
        parent = folder / str(k)
        if target.folder is not None:
            made.append(Path(shutil.copytree(target.folder, parent / target.folder.name)))
        else:
            made.append(build_artifact(target.cfg, parent))
    return made


def time_verify(paths: Sequence[Path], report: Path, threads: str = AUTO_THREADS) -> VerifyRun:
    """``rnnexport verify PATHS -q --json REPORT --threads THREADS`` timed from outside (``RunnerFailed`` when it
    cannot run)."""
    done, wall, usage = run_cli(["verify", *map(str, paths), "-q", "--json", str(report), "--threads", threads])
    if done.returncode not in (0, 1):
        raise RunnerFailed("verify", (done.stderr or done.stdout).strip()[-300:])
    reports = json.loads(report.read_text())["reports"]
    execution = sum(r["oracle"].get("run_seconds", 0.0) + sum(
        x.get("run_seconds", 0.0) + x.get("precision_oracle_seconds", 0.0) for x in r["runners"]) for r in reports)
    return VerifyRun(tuple(r["name"] for r in reports), wall, execution, usage.ru_utime + usage.ru_stime)


@dataclass(frozen=True)
class MemoryRun:
    """Peak resident memory of verifying one artifact with a case of ``seq`` × ``batch`` added, over the same
    verify without it, beside the float32 bytes of that case's outputs, and the same increment for each runtime
    alone running the case once (``runtime_mib``: runtime → MiB): what deploying it needs, which verify cannot
    lower. ``kept_mib`` is verify's increment beyond the largest runtime's: what verify itself holds."""

    name: str
    seq: int
    batch: int
    output_bytes: int
    verify_mib: float
    runtime_mib: dict[str, float]

    @property
    def kept_mib(self) -> float:
        return self.verify_mib - max(self.runtime_mib.values(), default=0.0)

    def times_output(self, mib: float) -> float:
        return mib * 2**20 / self.output_bytes


# Run as `python -c PEAK_WRAPPER FILE (-m MODULE | -c CODE) ARGS…`: the module or code as python would run it, then
# at exit the process's own peak resident memory (VmHWM, KiB) written to FILE.
PEAK_WRAPPER = """
import atexit, runpy, sys

def _peak(path=sys.argv[1]):
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(path, "w") as out:
        out.write(kib)

atexit.register(_peak)
mode, target, *rest = sys.argv[2:]
if mode == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def peak_mib(args: Sequence[str]) -> tuple[float | None, subprocess.CompletedProcess]:
    """``python ARGS`` (``-m MODULE …`` or ``-c CODE …``) in a process of its own: its peak resident memory in MiB
    (None if it ended without running exit handlers, ``os._exit``) and its result. Read inside the process
    (``/proc/self/status``, Linux): the ``ru_maxrss`` that ``wait4`` gives starts at the parent's resident size,
    which Linux carries across fork and exec (a child running ``pass`` read 1,391 MiB under a 1.4 GB parent)."""
    with tempfile.TemporaryDirectory(prefix="rnnexport-peak-") as folder:
        path = Path(folder) / "peak"
        done, _, _ = run_python(["-c", PEAK_WRAPPER, str(path), *args])
        return (int(path.read_text()) / 1024 if path.is_file() else None), done


MEMORY_RUNNERS = ("ort-cpu", "openvino-cpu-f32", "openvino-cpu-default")  # verify's runtimes, as run_once opens them


def verify_memory(folder: Path, seq: int, batch: int, runtimes: tuple[str, ...] = MEMORY_RUNNERS) -> MemoryRun:
    """``MemoryRun`` of the artifact ``folder`` (each figure a difference of two processes' peaks, ``peak_mib``);
    ``RunnerFailed`` when a run fails."""
    from rnnexport.artifacts.folders import load_artifact

    cfg = load_artifact(folder).config
    shape = f"seq={seq},batch={batch}"

    def peak(args: list[str]) -> float:
        mib, done = peak_mib(args)
        if done.returncode not in (0, 1) or mib is None:
            raise RunnerFailed(" ".join(args[:4]), (done.stderr or done.stdout).strip()[-300:] or "no peak recorded")
        return mib

    verify = ["-m", "rnnexport", "verify", str(folder), "--cases", "example", "-q"]
    alone = ["-c", "import sys; from rnnexport.bench import run_once; run_once(*sys.argv[1:])", str(folder)]
    return MemoryRun(
        cfg.name, seq, batch, seq * batch * cfg.num_directions * cfg.hidden_size * 4,
        peak([*verify, "--shape", shape]) - peak(verify),
        {r: peak([*alone, r, str(seq), str(batch)]) - peak([*alone, r, "1", str(batch)]) for r in runtimes})


def run_once(folder: str, runtime: str, seq: str, batch: str) -> None:
    """The artifact's model run once on ``runtime`` (one of ``MEMORY_RUNNERS``, one thread) at ``seq`` × ``batch``,
    as a deployment would: for ``verify_memory``'s process of its own. OpenVINO's default precision (bf16 on CPUs
    with AVX512-BF16 or AMX) needs more than its f32 (588 against 550 MiB for gru_bidir_nobias_ragged at 100,000 ×
    4, 2026-11-30), and verify runs both."""
    from rnnexport.artifacts.folders import load_artifact
    from rnnexport.verification.runners.openvino_runner import OpenVinoRunner

    artifact = load_artifact(folder)
    data = artifact.model_path.read_bytes()
    feeds = make_feeds(artifact.config, int(seq), int(batch), np.random.default_rng(0))
    if runtime not in MEMORY_RUNNERS:
        raise ValueError(f"run_once: runtime {runtime!r} is not one of {', '.join(MEMORY_RUNNERS)}")
    runner = (OrtRunner(data, threads=1, arena=True) if runtime == "ort-cpu"
              else OpenVinoRunner(data, threads=1, keep_buffers=True, force_f32=runtime == "openvino-cpu-f32"))
    runner.infer(feeds)


def _with_seq(cfg: ModelConfig, seq_len: int) -> ModelConfig:
    return dataclasses.replace(cfg, example=dataclasses.replace(cfg.example, seq_len=seq_len))


def _graph(data: bytes) -> onnx.GraphProto:
    return onnx.load_model_from_string(data).graph


def _fmt(value: Timing | str | None) -> str:
    if not isinstance(value, Timing):
        return "—"
    return f"{value.median_ms:.3g} ms ±{value.spread:.0%}" + (" (noisy)" if value.noisy else "")


def computes_float32(result: ConfigBench, key: str) -> bool:
    """Whether the runner computes in float32: only those are held to the float32 GEMM peak (int8 and bf16
    kernels have peaks of their own, several times higher)."""
    return result.precision.get(key.rsplit("@", 1)[0], "float32") in ("float32", "fp16-weights")


def peak_problems(result: ConfigBench, peaks: dict[int, float]) -> list[str]:
    """Every float32 runner whose measured GFLOP/s exceed the GEMM peak at its thread count: the peak is
    unsound."""
    problems = []
    for shape, timings in result.runtime.items():
        for key, timing in timings.items():
            threads = int(key.rsplit("@", 1)[1].removesuffix("t"))
            if isinstance(timing, Timing) and computes_float32(result, key) \
                    and over_peak(result.flops[shape], timing, peaks[threads]) > 1:
                problems.append(f"{result.name} {shape} {key}: "
                                f"{over_peak(result.flops[shape], timing, peaks[threads]):.0%} of the GEMM peak")
    return problems


def render_bench(result: ConfigBench, peaks: dict[int, float], bandwidth: dict[int, float]) -> str:
    """Export times, the eager cross-talk check, then the deploy matrix: per shape class and thread count,
    each runner's latency, its ratio to ONNX Runtime float32 on our graph at the same thread count, its worst
    |Δ| against the float64 oracle, its share of the GEMM peak and its latency over the floor (``floor_ms``)."""
    native = result.export_ms["native"]
    parts = [f"native {_fmt(native)}"]
    for exporter in EXPORTERS[1:]:
        t = result.export_ms[exporter]
        # a Timing: bench_config's native export never fails (its graph is what the runtimes run)
        parts.append(f"{exporter} {_fmt(t)} ({t.median_ms / cast(Timing, native).median_ms:.0f}×)"
                     if isinstance(t, Timing) else f"{exporter}: {t}")
    lines = [f"{result.name}", "  export: " + " · ".join(parts)]
    for key, alone in result.eager_alone.items():
        inside = result.runtime["example"].get(key)
        if isinstance(inside, Timing):
            change = inside.median_ms / alone.median_ms - 1
            lines.append(f"  {key} at the example shape: {_fmt(alone)} alone, {_fmt(inside)} in the rotation "
                         f"({change:+.0%})")
    for shape, timings in result.runtime.items():
        lines.append(f"  {shape} ({result.flops[shape] / 1e6:.3g} MFLOP): runner@threads, latency, "
                     f"× {REFERENCE} at the same threads, worst |Δ| vs oracle, % of the float32 GEMM peak, "
                     "latency over this machine's floor")
        for key, timing in timings.items():
            if not isinstance(timing, Timing):
                lines.append(f"    {key:<34} {timing}")
                continue
            threads = int(key.rsplit("@", 1)[1].removesuffix("t"))
            ratio = result.ratio(shape, key)
            share = over_peak(result.flops[shape], timing, peaks[threads])
            shown = f"{share:.1%}" if computes_float32(result, key) else f"— ({result.precision[key.split('@')[0]]})"
            above = "  ⚠ above the GEMM peak" if share > 1 and computes_float32(result, key) else ""
            floor, bound = floor_ms(result.flops[shape], result.weight_bytes, peaks[threads], bandwidth[threads])
            lines.append(f"    {key:<34} {_fmt(timing):<24} ×{ratio:<6.2f} {result.drift[shape].get(key, 0):.1e}  "
                         f"{shown}  ×{timing.median_ms / floor:.3g} its {bound} floor{above}")
    settings = [f"{s} {r['intra_op_num_threads']} thread(s), {r['graph_optimization_level']}"
                + (" (noisy)" if r["noisy"] else "") for s, r in result.recommendation.items()]
    lines.append("  recommended: " + "; ".join(settings))
    judged = result.timings()
    slowed = sum(t.slowed for t in judged)
    if slowed:
        lines.append(f"  {slowed} of {len(judged)} figures were measured while the machine's probes ran {NOISY:.0%} "
                     "or more slower than at their best in this run so far: marked noisy")
    return "\n".join(lines)
