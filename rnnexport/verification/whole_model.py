"""Whole models on the verification engine: any ``nn.Module`` around GRU/LSTM/RNN layers, checked at the standard
shapes built from the dims its inputs name ``"batch"`` and ``"seq"``, against PyTorch float32 and the model itself
in float64 (the oracle).

    report = rnnexport.verify_model(tagger, model, (tokens,), dynamic_shapes=({0: "batch", 1: "seq"},))
    assert report.passed(), report.failures()
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from rnnexport.config import Tolerance
from rnnexport.errors import ExportError
from rnnexport.verification.cases import Case
from rnnexport.verification.engine import default_providers, run_engine, runtime_specs
from rnnexport.verification.results import VerifyReport
from rnnexport.verification.runners import ORACLE, TORCH_CPU, RunnerSpec
from rnnexport.verification.verdict import Tolerances


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, its dims (ints, or ``"batch"``/``"seq"``), float or integer values (integers in
    ``[0, high)``; ``high`` defaults to the smallest ``nn.Embedding`` of the model), a ragged batch's lengths (an
    integer input whose only dim is ``"batch"``), or a ``sampler(shape, rng)``."""

    name: str
    dims: tuple[int | str, ...]
    integer: bool = False
    high: int | None = None
    sampler: Callable[[tuple[int, ...], np.random.Generator], np.ndarray] | None = None
    lengths: bool = False  # sequence lengths of a ragged batch: 1 to seq, unsorted, the longest exactly seq

    def make(self, seq: int, batch: int, rng: np.random.Generator) -> np.ndarray:
        shape = tuple(seq if d == "seq" else batch if d == "batch" else int(d) for d in self.dims)
        if self.sampler is not None:
            return self.sampler(shape, rng)
        if self.lengths:
            values = rng.integers(1, seq + 1, size=shape, dtype=np.int64)
            values[rng.integers(0, shape[0])] = seq
            return values
        if self.integer:
            return rng.integers(0, self.high, size=shape, dtype=np.int64)
        return rng.standard_normal(shape).astype(np.float32)


def input_specs(model: nn.Module, example_inputs: tuple, dynamic_shapes: Any, names: list[str]) -> list[InputSpec]:
    """Specs from the example inputs and the names given to their dynamic dims ("batch" and "seq")."""
    embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    specs = []
    dims_of = list(dynamic_shapes) if dynamic_shapes is not None else [None] * len(example_inputs)
    for name, example, dims in zip(names, example_inputs, dims_of):
        roles = dict(dims or {})
        bad = [v for v in roles.values() if v not in ("batch", "seq")]
        if bad:
            raise ExportError(f"verify_model: input {name}: dynamic dim {bad[0]!r}; name them \"batch\" or \"seq\"")
        shape = tuple(roles.get(axis, size) for axis, size in enumerate(example.shape))
        integer = not example.is_floating_point()
        if integer and shape == ("batch",):  # one integer per row: the rows' lengths (pack_padded_sequence)
            specs.append(InputSpec(name, shape, True, lengths=True))
            continue
        if integer and not embeddings:
            raise ExportError(f"verify_model: input {name} holds integers and no nn.Embedding says their range; "
                              "pass InputSpec(..., high=N) or a sampler")
        specs.append(InputSpec(name, shape, integer, min(embeddings) if integer else None))
    return specs


STANDARD_CASES = ("example", "seq1", "batch1", "long", "other_batch")


def standard_shapes(seq: int, batch: int) -> dict[str, tuple[int, int]]:
    """(seq, batch) of each standard case: the example, 1 step, batch 1, 10× the steps, a batch the example
    did not use."""
    return {"example": (seq, batch), "seq1": (1, batch), "batch1": (seq, 1), "long": (10 * seq, batch),
            "other_batch": (seq, batch + 3)}


class WholeModelRunner:
    """A whole ``nn.Module`` as a runner: a copy in ``dtype`` on CPU, in eval mode under ``torch.no_grad()``, fed
    the graph's inputs in order (float inputs cast to ``dtype``); its outputs flattened in PyTorch's pytree order
    and named as the ONNX graph's outputs. As the oracle (float64), ``expected(case)`` is its outputs."""

    kind, device = "torch", "cpu"

    def __init__(self, model: nn.Module, output_names: list[str], dtype: torch.dtype, name: str):
        self.model = copy.deepcopy(model).to(dtype).eval()
        self.output_names, self.dtype, self.name = output_names, dtype, name
        self.precision = str(dtype).removeprefix("torch.")
        self.settings: dict[str, Any] = {"dtype": str(dtype), "threads": torch.get_num_threads()}

    def __enter__(self) -> WholeModelRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(v).to(self.dtype) if v.dtype.kind == "f" else torch.from_numpy(v)
                for v in feeds.values()]
        with torch.no_grad():
            out = self.model(*args)
        flat = [out] if isinstance(out, torch.Tensor) else list(torch.utils._pytree.tree_leaves(out))
        return {name: t.detach().cpu().numpy() for name, t in zip(self.output_names, flat)}

    def expected(self, case: Case) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float64) for k, v in self.infer(case.feeds).items()}


def whole_model_cases(specs: list[InputSpec], example_inputs: tuple, seed: int = 0,
                      case_names: tuple[str, ...] = ()) -> list[Case]:
    """The standard cases (those of ``case_names``, default all) at the example's seq and batch: each case's feeds
    depend only on (seed, case name)."""
    seq = next((example_inputs[i].shape[a] for i, s in enumerate(specs) for a, d in enumerate(s.dims) if d == "seq"), 1)
    batch = next((example_inputs[i].shape[a] for i, s in enumerate(specs) for a, d in enumerate(s.dims)
                  if d == "batch"), 1)
    cases = []
    for name, (case_seq, case_batch) in standard_shapes(seq, batch).items():
        if case_names and name not in case_names:
            continue
        rng = np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)])
        feeds = {s.name: s.make(case_seq, case_batch, rng) for s in specs}
        cases.append(Case(name, feeds, f"seq {case_seq}, batch {case_batch}", time_axis=None))
    return cases


def verify_model(model: nn.Module, onnx_model: onnx.ModelProto, example_inputs: tuple, *, dynamic_shapes: Any = None,
                 specs: list[InputSpec] | None = None, tolerance: Tolerance | Tolerances | None = None,
                 seed: int = 0, runtimes: tuple[str, ...] = ("ort", "openvino"),
                 providers: tuple[str, ...] | None = None, threads: int = 0,
                 case_names: tuple[str, ...] = ()) -> VerifyReport:
    """The standard cases (from the declared dynamic dims; ``case_names`` picks some) through PyTorch float32, the
    float64 oracle and every runtime of ``runtimes`` (ONNX Runtime on ``providers``, OpenVINO): a ``VerifyReport``
    judged as ``verify``'s are. ``tolerance`` defaults to ``Tolerance()`` on CPU, ``CUDA_TOLERANCE`` on CUDA."""
    start = time.perf_counter()
    data = onnx_model.SerializeToString()
    names = [i.name for i in onnx_model.graph.input if i.name not in {t.name for t in onnx_model.graph.initializer}]
    outputs = [o.name for o in onnx_model.graph.output]
    specs = specs or input_specs(model, example_inputs, dynamic_shapes, names)
    cases = whole_model_cases(specs, example_inputs, seed, case_names)
    float32 = RunnerSpec(TORCH_CPU, "torch", "cpu", lambda: WholeModelRunner(model, outputs, torch.float32, TORCH_CPU))
    runners = [float32]
    runners += runtime_specs(data, providers or default_providers(), tuple(r for r in runtimes if r != "torch"),
                             threads)
    tolerances = tolerance if isinstance(tolerance, Tolerances) else Tolerances(tolerance or Tolerance())
    oracle = WholeModelRunner(model, outputs, torch.float64, ORACLE)
    return run_engine(getattr(model, "name", type(model).__name__), data, oracle, cases, runners,
                      config={"model": type(model).__name__, "inputs": [s.name for s in specs]},
                      tolerances=tolerances, start=start)
