"""All formulations of one config measured side by side: agreement, time, exported bytes."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from rnnexport.artifacts.build import export_config
from rnnexport.bench import Timing
from rnnexport.config import ModelConfig, Tolerance
from rnnexport.export.builders import build_model
from rnnexport.formulations.modules import (
    BIDIRECTIONAL_NOTE,
    FORMULATIONS,
    UNIDIRECTIONAL_ONLY,
    make_formulation,
    scripted_unavailable,
)
from rnnexport.verification.cases import make_feeds
from rnnexport.verification.runners.torch_runner import Float64Oracle

_T = TypeVar("_T")


@dataclass
class FormulationResult:
    """One formulation measured on the config's example shape. ``status``: "ok", "not defined" (for
    this architecture) or "not available" (in this torch)."""

    name: str
    status: str = "ok"
    reason: str | None = None
    max_abs_vs_native: float | None = None
    max_abs_vs_oracle: float | None = None
    seconds: float | None = None  # median time of one forward pass
    spread: float | None = None  # (p90 - p10) / median of the timed passes, as bench quotes it
    noisy: bool = False  # the spread stayed at or above bench.NOISY after the extra rounds
    onnx_sha256: str | None = None


def measured(value: _T | None, result: FormulationResult) -> _T:
    """``value``, a field of an "ok" ``result``: measured, so never None there."""
    if value is None:
        raise TypeError(f"formulation {result.name} ({result.status}) holds no measurement")
    return value


@dataclass
class FormulationsReport:
    config: str
    shape: dict[str, int]
    results: list[FormulationResult]
    dropout: dict[str, float] | None = None  # training mode, fixed masks: max |Δ| from layer_major
    expected_max_abs: float = 0.0

    def passed(self, tol: Tolerance) -> bool:
        """Every available formulation (and the dropout check) within ``tol`` of native (relative to
        max|native|), and every exported graph byte-identical."""
        ok = [r for r in self.results if r.status == "ok"]
        diffs = [measured(r.max_abs_vs_native, r) for r in ok] + list((self.dropout or {}).values())
        return all(tol.allows(d, self.expected_max_abs) for d in diffs) and len({r.onnx_sha256 for r in ok}) == 1

    def speedup(self) -> float | None:
        """time_major's time over layer_major's: how much faster the layer-major order runs."""
        timed = {r.name: r for r in self.results if r.status == "ok"}
        slow, fast = timed.get("time_major"), timed.get("layer_major")
        if slow is None or fast is None or slow.noisy or fast.noisy:  # a noisy median is no ground for a ratio
            return None
        return measured(slow.seconds, slow) / measured(fast.seconds, fast)


def _call(module: nn.Module, feeds: dict[str, Tensor], masks: list[Tensor] | None = None) -> list[Tensor]:
    state = None
    if "h0" in feeds:
        state = (feeds["h0"], feeds["c0"]) if "c0" in feeds else feeds["h0"]
    y, final = module(feeds["input"], state, masks) if masks is not None else module(feeds["input"], state)
    return [y, *(final if isinstance(final, tuple) else (final,))]


def _max_diff(a: list[Tensor], b: list[Tensor]) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b))


SAMPLE_SECONDS = 0.01


def _timing(module: nn.Module, feeds: dict[str, Tensor], repeats: int) -> Timing:
    """Forward passes timed after a warm-up, each sample the mean of enough back-to-back passes to last about
    SAMPLE_SECONDS (a single sub-millisecond pass is mostly timer and scheduler jitter), measured as bench measures:
    the median and the spread, with up to 3× the samples while the spread stays at bench's noisy threshold, then
    the noisy mark."""
    start = time.perf_counter()
    _call(module, feeds)  # warm-up, and the size of a sample
    calls = max(1, int(SAMPLE_SECONDS / max(time.perf_counter() - start, 1e-6)))
    samples: list[float] = []
    rounds = max(repeats, 5)
    while True:
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                _call(module, feeds)
            samples.append((time.perf_counter() - start) / calls)
        timing = Timing.of(samples)
        if not timing.noisy or len(samples) >= 3 * rounds:
            return timing


def compare_formulations(cfg: ModelConfig, repeats: int = 5, seed: int = 0,
                         native: nn.RNNBase | None = None) -> FormulationsReport:
    """Every formulation of ``cfg``'s model (``native``: the module with a user's weights; default: the
    config's seeded one) on its example shape (full lengths, the config's states): max |Δ| from native and
    from the float64 oracle, median forward time, exported sha256."""
    native = build_model(cfg) if native is None else native
    arrays = make_feeds(cfg, cfg.example.seq_len, cfg.example.batch, np.random.default_rng(seed))
    feeds = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "sequence_lens"}
    oracle = Float64Oracle(native).infer({k: v for k, v in arrays.items() if k != "sequence_lens"})
    oracle_out = [torch.from_numpy(oracle[k]) for k in ("output", "h_n", "c_n") if k in oracle]
    results = []
    with torch.no_grad():
        expected = _call(native, feeds)
        for kind in FORMULATIONS:
            status, reason = _unavailable(kind, native)
            if reason:
                results.append(FormulationResult(kind, status, reason))
                continue
            module = make_formulation(native, kind)
            got = _call(module, feeds)
            model = export_config(cfg, module)[1]
            timing = _timing(module, feeds, repeats)
            results.append(FormulationResult(
                kind, max_abs_vs_native=_max_diff(expected, got), max_abs_vs_oracle=_max_diff(oracle_out, got),
                seconds=timing.median_ms / 1e3, spread=timing.spread, noisy=timing.noisy,
                onnx_sha256=hashlib.sha256(model.SerializeToString()).hexdigest()))
        report = FormulationsReport(cfg.name, {"seq_len": cfg.example.seq_len, "batch": cfg.example.batch}, results,
                                    expected_max_abs=max(float(t.abs().max()) for t in expected))
        if cfg.dropout > 0:
            report.dropout = dropout_agreement(native, feeds, seed)
    return report


def _unavailable(kind: str, native: nn.RNNBase) -> tuple[str, str | None]:
    if kind in UNIDIRECTIONAL_ONLY and native.bidirectional:
        return "not defined", BIDIRECTIONAL_NOTE
    if kind == "scripted":
        return "not available", scripted_unavailable()
    return "ok", None


def dropout_masks(native: nn.RNNBase, seq_len: int, batch: int, seed: int) -> list[Tensor]:
    """One fixed inverted-dropout mask per layer boundary, [seq, batch, dirs*hidden], scaled by 1/(1-p)."""
    generator = torch.Generator().manual_seed(seed)
    keep = 1.0 - float(native.dropout)
    width = (2 if native.bidirectional else 1) * native.hidden_size
    return [torch.bernoulli(torch.full((seq_len, batch, width), keep), generator=generator) / keep
            for _ in range(native.num_layers - 1)]


def dropout_agreement(native: nn.RNNBase, feeds: dict[str, Tensor], seed: int = 0) -> dict[str, float]:
    """Training mode with one fixed set of masks: each formulation's max |Δ| from layer_major."""
    x = feeds["input"]
    seq_len, batch = (x.shape[1], x.shape[0]) if native.batch_first else (x.shape[0], x.shape[1])
    masks = dropout_masks(native, seq_len, batch, seed)
    kinds = ["stacked", "time_major"] if not native.bidirectional else ["stacked"]
    reference = _call(make_formulation(native, "layer_major").train(), feeds, masks)
    return {k: _max_diff(reference, _call(make_formulation(native, k).train(), feeds, masks)) for k in kinds}
