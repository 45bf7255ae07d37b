"""Benchmarks measured as ratios within one run: PyTorch eager, ONNX Runtime on our graph and on torch.onnx's
graphs, export times, verification time, and this machine's float32 GEMM peak.

Timing: one warm-up call per runner, then ``rounds`` rounds; in each round every runner runs in a rotated
order, ``repeat`` calls each (calibrated so one sample lasts ~20 ms). The median over rounds is quoted with
its spread ((p90 - p10) / median).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .builders import build_model
from .cases import make_feeds
from .config import GATES, ModelConfig
from .errors import ExportError, RunnerFailed
from .exporters import EXPORTERS
from .pipeline import export_config
from .runners.ort_runner import OrtRunner
from .runners.torch_runner import TorchRunner
from .verification import verify

CORES = os.cpu_count() or 1
SAMPLE_SECONDS = 0.02


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


def gemm_peak(threads: int, size: int = 1024, rounds: int = 7) -> float:
    """Float32 GFLOP/s of a square ``torch.mm`` at ``threads`` threads: the best of ``rounds``."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(rounds))
    finally:
        torch.set_num_threads(saved)
    return 2 * size**3 / best / 1e9


def _seconds(call: Callable[[], Any], repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat


@dataclass
class Timing:
    median_ms: float
    spread: float  # (p90 - p10) / median over rounds

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        ordered = sorted(samples)
        p10, p90 = ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]
        median = statistics.median(ordered)
        return cls(median * 1e3, (p90 - p10) / median if median else 0.0)


def time_interleaved(calls: dict[str, Callable[[], Any]], rounds: int,
                     warmed: dict[str, float] | None = None) -> dict[str, Timing]:
    """Median and spread of each call, measured in rotated order within each round. ``warmed`` gives,
    for calls that already ran once, how long that took: they are neither warmed up nor timed again
    to choose how many calls make one sample."""
    if not calls:
        return {}
    repeat = {}
    for name, call in calls.items():
        if warmed is None or name not in warmed:
            call()  # warm-up
        once = warmed[name] if warmed and name in warmed else _seconds(call)
        repeat[name] = max(1, int(SAMPLE_SECONDS / max(once, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(_seconds(calls[name], repeat[name]))
    return {name: Timing.of(values) for name, values in samples.items()}


@dataclass
class ConfigBench:
    name: str
    flops: dict[str, int]
    export_ms: dict[str, Timing | str]
    runtime: dict[str, dict[str, Timing | str]]  # shape class → runner → timing, or why it did not run
    recommendation: dict[str, dict[str, Any]]
    verify_seconds: float
    verify_execution_seconds: float
    nodes_by_seq: dict[int, int] = field(default_factory=dict)
    file_bytes: int = 0
    weight_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _export_bytes(cfg: ModelConfig, module: torch.nn.Module, exporter: str) -> bytes:
    return export_config(cfg, module, exporter)[1].SerializeToString()


def _export_times(cfg: ModelConfig, module: torch.nn.Module, rounds: int, exporters: tuple[str, ...]
                  ) -> tuple[dict, dict]:
    """Export time of each exporter (module → serialized bytes) and the graphs they made."""
    graphs, calls, first = {}, {}, {}
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
    timings.update(time_interleaved(slow, max(1, rounds // 3), first))
    return {e: timings.get(e, graphs[e]) for e in EXPORTERS}, graphs


def _session_runners(graphs: dict[str, Any]) -> dict[str, Any]:
    runners = {}
    for threads in (1, CORES):
        for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_ALL"):
            name = f"ort-native-{threads}t-{level.removeprefix('ORT_ENABLE_').lower()}"
            runners[name] = OrtRunner(graphs["native"], threads=threads,
                                      optimization=getattr(ort.GraphOptimizationLevel, level))
    for exporter in EXPORTERS[1:]:
        if isinstance(graphs[exporter], bytes):
            runners[f"ort-{exporter}-{CORES}t"] = OrtRunner(graphs[exporter], threads=CORES)
    return runners


def _runtime(cfg: ModelConfig, module: torch.nn.Module, graphs: dict, rounds: int) -> dict[str, dict]:
    results = {}
    runners = _session_runners(graphs)
    eager = TorchRunner(module)
    for shape, (seq_len, batch) in shape_classes(cfg).items():
        feeds = make_feeds(cfg, seq_len, batch, np.random.default_rng(0))
        calls: dict[str, Callable[[], Any]] = {
            f"torch-eager-{torch.get_num_threads()}t": lambda f=feeds: eager.infer(f)}
        results[shape] = {}
        for name, runner in runners.items():
            try:
                runner.infer(feeds)
                calls[name] = (lambda r=runner, f=feeds: r.infer(f))
            except RunnerFailed as exc:
                results[shape][name] = f"does not run: {exc.reason[:120]}"
        results[shape].update(time_interleaved(calls, rounds))
    return results


def _recommend(runtime: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Fastest ONNX Runtime setting on our graph per shape class."""
    best = {}
    for shape, timings in runtime.items():
        ours = {k: v for k, v in timings.items() if k.startswith("ort-native-") and isinstance(v, Timing)}
        name = min(ours, key=lambda k: ours[k].median_ms)
        threads, level = name.removeprefix("ort-native-").split("-")
        best[shape] = {"intra_op_num_threads": int(threads.removesuffix("t")),
                       "graph_optimization_level": f"ORT_ENABLE_{level.upper()}", "median_ms": ours[name].median_ms}
    return best


def bench_config(cfg: ModelConfig, rounds: int = 5, exporters: tuple[str, ...] = EXPORTERS) -> ConfigBench:
    """Every measurement for one config (see the module's docstring for the method); ``native`` is
    always measured, the torch exporters when named in ``exporters``."""
    module = build_model(cfg)
    export_ms, graphs = _export_times(cfg, module, rounds, ("native", *exporters))
    runtime = _runtime(cfg, module, graphs, rounds)
    start = time.perf_counter()
    report = verify(module, graphs["native"], cfg=cfg, providers=("CPUExecutionProvider",), runtimes=("torch", "ort"))
    total = time.perf_counter() - start
    execution = sum(r.run_seconds for r in report.runners) + report.oracle.get("run_seconds", 0.0)
    long_cfg = export_config(_with_seq(cfg, 10 * cfg.example.seq_len))[1]
    weights = sum(p.numel() * 4 for p in module.parameters())
    return ConfigBench(
        name=cfg.name, flops={s: forward_flops(cfg, *shape) for s, shape in shape_classes(cfg).items()},
        export_ms=export_ms, runtime=runtime, recommendation=_recommend(runtime), verify_seconds=total,
        verify_execution_seconds=execution,
        nodes_by_seq={cfg.example.seq_len: len(_graph(graphs["native"]).node), 10 * cfg.example.seq_len:
                      len(long_cfg.graph.node)},
        file_bytes=len(graphs["native"]), weight_bytes=weights)


def _with_seq(cfg: ModelConfig, seq_len: int) -> ModelConfig:
    return dataclasses.replace(cfg, example=dataclasses.replace(cfg.example, seq_len=seq_len))


def _graph(data: bytes) -> onnx.GraphProto:
    return onnx.load_model_from_string(data).graph


def _fmt(value: Timing | str | None) -> str:
    return f"{value.median_ms:.3g} ms ±{value.spread:.0%}" if isinstance(value, Timing) else "—"


def best_ort(timings: dict[str, Timing | str], prefix: str) -> Timing | None:
    found = [v for k, v in timings.items() if k.startswith(prefix) and isinstance(v, Timing)]
    return min(found, key=lambda t: t.median_ms) if found else None


def render_bench(result: ConfigBench, peaks: dict[int, float]) -> str:
    """A compact table: ratios first, absolute times beside them."""
    native = result.export_ms["native"]
    parts = [f"native {_fmt(native)}"]
    for exporter in EXPORTERS[1:]:
        t = result.export_ms[exporter]
        parts.append(f"{exporter} {_fmt(t)} ({t.median_ms / native.median_ms:.0f}×)" if isinstance(t, Timing)
                     else f"{exporter}: {t}")
    lines = [f"{result.name}", "  export: " + " · ".join(parts),
             "  shape        eager        ort 1 thread   ort all cores  torch-script   eager/ours  "
             "ours/torch-script  % GEMM peak"]
    for shape, timings in result.runtime.items():
        eager = next(v for k, v in timings.items() if k.startswith("torch-eager"))
        one, all_cores = best_ort(timings, "ort-native-1t"), best_ort(timings, f"ort-native-{CORES}t")
        ours = min(one, all_cores, key=lambda t: t.median_ms)
        script = timings.get(f"ort-torch-script-{CORES}t")
        vs_script = f"{ours.median_ms / script.median_ms:.2f}" if isinstance(script, Timing) else "—"
        threads = 1 if ours is one else CORES
        peak = result.flops[shape] / (ours.median_ms / 1e3) / 1e9 / peaks[threads]
        lines.append(f"  {shape:<12} {_fmt(eager):<12} {_fmt(one):<14} {_fmt(all_cores):<14} {_fmt(script):<14} "
                     f"{eager.median_ms / ours.median_ms:<11.2f} {vs_script:<18} {peak:.1%}")
    overhead = 1 - result.verify_execution_seconds / result.verify_seconds
    lines.append(f"  verify: {result.verify_seconds:.2f} s, {overhead:.0%} outside model execution")
    settings = [f"{s} {r['intra_op_num_threads']} thread(s), {r['graph_optimization_level']}"
                for s, r in result.recommendation.items()]
    lines.append("  recommended: " + "; ".join(settings))
    return "\n".join(lines)
