"""Whole models on the verification engine: any ``nn.Module`` around GRU/LSTM/RNN layers, checked at the standard
shapes built from the dims its inputs name ``"batch"`` and ``"seq"``, against PyTorch float32 and the model itself
in float64 (the oracle).

    report = rnnexport.verify_model(tagger, model, (tokens,), dynamic_shapes=({0: "batch", 1: "seq"},))
    assert report.passed(), report.failures()
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from rnnexport.config import Tolerance
from rnnexport.contract import DEFAULT_THREADS, WHOLE_MODEL_CASES
from rnnexport.errors import ExportError
from rnnexport.export.probe import probe_model
from rnnexport.export.whole_model import check_dims, dim_name
from rnnexport.verification.cases import Case, shape_case_name
from rnnexport.verification.engine import check_names, default_providers, run_engine, runtime_specs, thread_plan
from rnnexport.verification.results import VerifyReport
from rnnexport.verification.runners import DEFAULT_FAMILIES, ORACLE, TORCH_CPU, RunnerSpec
from rnnexport.verification.runners.torch_runner import torch_threads
from rnnexport.verification.verdict import Tolerances

ROLES = ("float", "tokens", "lengths")
Sampler = Callable[..., np.ndarray]  # sampler(shape, rng) or sampler(shape, rng, sizes) → array of that shape


@dataclass(frozen=True)
class InputSpec:
    """One graph input (a leaf of the example inputs, in order): its name, its dims (ints, or ``"batch"``/``"seq"``)
    and its ``role``: ``"float"`` (N(0, 1) values), ``"tokens"`` (integers in ``[0, high)``; ``high`` defaults to
    the smallest ``nn.Embedding`` of the model), ``"lengths"`` (a ragged batch's lengths: 1 to seq, the longest
    exactly seq; ``sorted`` for ``pack_padded_sequence(enforce_sorted=True)``), or a ``sampler``, called as
    ``sampler(shape, rng)`` or ``sampler(shape, rng, {"seq": s, "batch": b})``.

    ``integer=True`` and ``lengths=True`` are the older spellings of the tokens and lengths roles."""

    name: str
    dims: tuple[int | str, ...]
    integer: bool = False
    high: int | None = None
    sampler: Sampler | None = None
    lengths: bool = False
    role: str | None = None
    sorted: bool = False

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise ExportError(f"InputSpec {self.name}: role {self.role!r}; expected one of {', '.join(ROLES)}")
        if self.role is None:
            object.__setattr__(self, "role", "lengths" if self.lengths else "tokens" if self.integer else "float")

    def make(self, seq: int, batch: int, rng: np.random.Generator) -> np.ndarray:
        shape = tuple(seq if d == "seq" else batch if d == "batch" else int(d) for d in self.dims)
        if self.sampler is not None:
            try:
                made = (self.sampler(shape, rng, {"seq": seq, "batch": batch}) if _takes_sizes(self.sampler)
                        else self.sampler(shape, rng))
            except Exception as exc:
                raise ExportError(f"verify_model: the sampler of input {self.name} failed at shape {list(shape)}: "
                                  f"{type(exc).__name__}: {str(exc)[:200]}") from None
            return _checked(np.asarray(made), shape, self.name)
        if self.role == "lengths":
            values = rng.integers(1, seq + 1, size=shape, dtype=np.int64)
            values[rng.integers(0, shape[0])] = seq
            return -np.sort(-values) if self.sorted else values
        if self.role == "tokens":
            if self.high is None:
                raise ExportError(f"verify_model: input {self.name} holds integers and no nn.Embedding says their "
                                  "range; pass InputSpec(..., role=\"tokens\", high=N) or a sampler")
            return rng.integers(0, self.high, size=shape, dtype=np.int64)
        return rng.standard_normal(shape).astype(np.float32)


def _takes_sizes(sampler: Sampler) -> bool:
    """Whether a sampler's third positional parameter is required: ``sampler(shape, rng, sizes)``."""
    try:
        params = list(inspect.signature(sampler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 and positional[2].default is inspect.Parameter.empty


def _checked(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A sampler's array, refused unless it has the case's shape and a float32 or integer type."""
    if array.shape != shape or array.dtype.kind not in "fiu":
        raise ExportError(f"verify_model: the sampler of input {name} returned {array.dtype} {list(array.shape)}; "
                          f"expected shape {list(shape)}")
    return array.astype(np.float32) if array.dtype.kind == "f" else array


def input_specs(model: nn.Module, example_inputs: tuple, dynamic_shapes: Any, names: list[str]) -> list[InputSpec]:
    """Specs from the example inputs (nested tuples and lists are flattened, as the ONNX graph's inputs are), the
    names given to their dynamic dims (``"batch"`` and ``"seq"``, as strings or ``torch.export.Dim``s), and one
    eager run of the model: an integer input that the model hands ``pack_padded_sequence`` as lengths is the
    lengths role (sorted where the model packs with ``enforce_sorted=True``), any other integer input tokens."""
    leaves, _ = tree_flatten(tuple(example_inputs))
    dims_of = check_dims(dynamic_shapes, example_inputs, "verify_model")
    if len(names) != len(leaves):
        raise ExportError(f"verify_model: the ONNX model has {len(names)} inputs and the example inputs hold "
                          f"{len(leaves)} tensors")
    packs = probe_model(model, tuple(example_inputs)).packs
    embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    specs = []
    for name, example, dims in zip(names, leaves, dims_of):
        roles = {axis: dim_name(value, f"verify_model: input {name}") for axis, value in (dims or {}).items()}
        shape = tuple(roles.get(axis, size) for axis, size in enumerate(example.shape))
        pack = next((p for p in packs if p.lengths is example), None)
        if pack is not None:
            specs.append(InputSpec(name, shape, role="lengths", sorted=pack.enforce_sorted))
        elif example.is_floating_point():
            specs.append(InputSpec(name, shape, role="float"))
        else:
            specs.append(InputSpec(name, shape, role="tokens", high=min(embeddings) if embeddings else None))
    return specs


STANDARD_CASES = WHOLE_MODEL_CASES


def standard_shapes(seq: int, batch: int) -> dict[str, tuple[int, int]]:
    """(seq, batch) of each standard case: the example, 1 step, batch 1, 10× the steps, a batch the example
    did not use."""
    return {"example": (seq, batch), "seq1": (1, batch), "batch1": (seq, 1), "long": (10 * seq, batch),
            "other_batch": (seq, batch + 3)}


class WholeModelRunner:
    """A whole ``nn.Module`` as a runner: a copy in ``dtype`` on CPU, in eval mode under ``torch.no_grad()``, fed
    the graph's inputs in order (float inputs cast to ``dtype``) and nested again as the example inputs were
    (``treespec``); its outputs flattened in PyTorch's pytree order and named as the ONNX graph's outputs. As the
    oracle (float64), ``expected(case)`` is its outputs, computed once per case."""

    kind, device = "torch", "cpu"

    def __init__(self, model: nn.Module, output_names: list[str], dtype: torch.dtype, name: str, treespec: Any):
        self.model = copy.deepcopy(model).to(dtype).eval()
        self.output_names, self.dtype, self.name, self.treespec = output_names, dtype, name, treespec
        self.precision = str(dtype).removeprefix("torch.")
        self.settings: dict[str, Any] = {"dtype": str(dtype), "threads": torch.get_num_threads()}
        self.cache: dict[str, dict[str, np.ndarray]] = {}

    def __enter__(self) -> WholeModelRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        leaves = [torch.from_numpy(v).to(self.dtype) if v.dtype.kind == "f" else torch.from_numpy(v)
                  for v in feeds.values()]
        with torch.no_grad():
            out = self.model(*tree_unflatten(leaves, self.treespec))
        flat = [out] if isinstance(out, torch.Tensor) else list(torch.utils._pytree.tree_leaves(out))
        return {name: t.detach().cpu().numpy() for name, t in zip(self.output_names, flat)}

    def expected(self, case: Case) -> dict[str, np.ndarray]:
        if case.name not in self.cache:
            self.cache[case.name] = {k: v.astype(np.float64) for k, v in self.infer(case.feeds).items()}
        return self.cache[case.name]

    def refuses(self, case: Case) -> str | None:
        """Why PyTorch itself cannot run ``case`` (None when it can): a model may not take a shape at all."""
        try:
            self.expected(case)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            return f"PyTorch itself refuses it: {type(exc).__name__}: {first}"
        return None


SHORTEST_PROBED = 16  # steps tried, from 1 up, for the shortest sequence a model accepts


def whole_model_cases(specs: list[InputSpec], leaves: list[torch.Tensor], oracle: WholeModelRunner, seed: int = 0,
                      case_names: tuple[str, ...] = (), shapes: tuple[tuple[int, int], ...] = ()
                      ) -> tuple[list[Case], dict[str, str]]:
    """The standard cases (those of ``case_names``, default all) at the example's seq and batch, and the cases
    skipped with the reason: those of a dim no input has, and those PyTorch itself refuses. The 1-step case takes
    the shortest sequence PyTorch accepts (probed up to 16 steps; its description says so). Each case's feeds
    depend only on (seed, case name)."""
    sizes = {d: leaves[i].shape[a] for i, s in enumerate(specs) for a, d in enumerate(s.dims) if isinstance(d, str)}
    seq, batch = sizes.get("seq", 1), sizes.get("batch", 1)
    cases, skipped = [], {}
    chosen = {k: v for k, v in standard_shapes(seq, batch).items() if not case_names or k in case_names}
    chosen.update({shape_case_name(s, b): (s, b) for s, b in shapes})
    for name, (case_seq, case_batch) in chosen.items():
        missing = "seq" if name in ("seq1", "long") else "batch" if name in ("batch1", "other_batch") else None
        if missing and missing not in sizes:
            skipped[name] = f"no input has a dim named {missing}"
            continue
        case = _case(name, specs, case_seq, case_batch, seed)
        tries = range(2, min(SHORTEST_PROBED, seq) + 1) if name == "seq1" else ()
        first_refusal = reason = oracle.refuses(case)
        for steps in tries if reason else ():
            case = _case(name, specs, steps, case_batch, seed, f"seq {steps} (the shortest PyTorch accepts; at 1 "
                         f"step {first_refusal})")
            reason = oracle.refuses(case)
            if reason is None:
                break
        if reason:
            skipped[name] = reason
            continue
        cases.append(case)
    return cases, skipped


def _case(name: str, specs: list[InputSpec], seq: int, batch: int, seed: int, description: str | None = None) -> Case:
    rng = np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)])
    feeds = {s.name: s.make(seq, batch, rng) for s in specs}
    return Case(name, feeds, description or f"seq {seq}, batch {batch}", time_axis=None)


def verify_model(model: nn.Module, onnx_model: onnx.ModelProto, example_inputs: tuple, *, dynamic_shapes: Any = None,
                 specs: list[InputSpec] | None = None, tolerance: Tolerance | Tolerances | None = None,
                 seed: int = 0, runtimes: tuple[str, ...] = DEFAULT_FAMILIES, providers: tuple[str, ...] | None = None,
                 threads: int | str = DEFAULT_THREADS, case_names: tuple[str, ...] = (),
                 shapes: tuple[tuple[int, int], ...] = ()) -> VerifyReport:
    """The standard cases (from the declared dynamic dims; ``case_names`` picks some; ``shapes`` adds one per
    (seq, batch)) through PyTorch float32, the float64 oracle and every runtime of ``runtimes`` (ONNX Runtime on
    ``providers``, OpenVINO): a ``VerifyReport`` judged as ``verify``'s are. ``tolerance`` defaults to
    ``Tolerance()`` on CPU, ``CUDA_TOLERANCE`` on CUDA; ``threads``: as ``engine.thread_plan`` reads it.
    Example inputs may be nested (a state tuple, say): the graph's inputs are their leaves, in order.

    A case PyTorch itself refuses is skipped with the reason, never raised. Raises ``ConfigError`` for unknown
    runtimes or cases and ``ExportError`` for specs, dims or an ONNX file that do not fit the model's inputs."""
    start = time.perf_counter()
    check_names(runtimes, case_names, STANDARD_CASES)
    threads, ahead = thread_plan(threads)
    bad = [s for s in shapes if len(s) != 2 or not all(isinstance(v, int) and v >= 1 for v in s)]
    if bad:
        raise ExportError(f"verify_model: shape {bad[0]!r}; expected (seq, batch), both at least 1")
    data = onnx_model.SerializeToString()
    initializers = {t.name for t in onnx_model.graph.initializer}
    graph_inputs = [i for i in onnx_model.graph.input if i.name not in initializers]
    outputs = [o.name for o in onnx_model.graph.output]
    leaves, treespec = tree_flatten(tuple(example_inputs))
    specs = specs or input_specs(model, example_inputs, dynamic_shapes, [i.name for i in graph_inputs])
    _check_inputs(specs, graph_inputs, leaves)
    with torch_threads(threads):
        oracle = WholeModelRunner(model, outputs, torch.float64, ORACLE, treespec)
        _check_outputs(model, example_inputs, outputs)
        cases, skipped = whole_model_cases(specs, leaves, oracle, seed, case_names, shapes)
        float32 = RunnerSpec(TORCH_CPU, "torch", "cpu", functools.partial(
            WholeModelRunner, model, outputs, torch.float32, TORCH_CPU, treespec))
        runners = ([float32] if "torch" in runtimes else []) + runtime_specs(
            data, providers or default_providers(runtimes), runtimes, threads)
        tolerances = tolerance if isinstance(tolerance, Tolerances) else Tolerances(tolerance or Tolerance())
        return run_engine(getattr(model, "name", type(model).__name__), data, oracle, cases, runners,
                          config={"model": type(model).__name__, "inputs": [s.name for s in specs]},
                          tolerances=tolerances, skipped=skipped, start=start, ahead=ahead)


def _check_outputs(model: nn.Module, example_inputs: tuple, outputs: list[str]) -> None:
    """The ONNX file has as many outputs as the model returns tensors (nested outputs flattened)."""
    with torch.no_grad():
        returned = model(*example_inputs)
    count = len(torch.utils._pytree.tree_leaves(returned))
    if count != len(outputs):
        raise ExportError(f"verify_model: the model returns {count} tensor(s) and the ONNX model has "
                          f"{len(outputs)} output(s) ({', '.join(outputs)}): is it a file of this model?")


ELEMENT_KINDS = {onnx.TensorProto.FLOAT: "f", onnx.TensorProto.INT64: "i", onnx.TensorProto.INT32: "i"}


def _check_inputs(specs: list[InputSpec], graph_inputs: list[onnx.ValueInfoProto], leaves: list[torch.Tensor]) -> None:
    """The ONNX file's inputs are the model's: as many, of the same names and kinds (float or integer), in order."""
    names = [i.name for i in graph_inputs]
    if [s.name for s in specs] != names:
        raise ExportError(f"verify_model: the ONNX model's inputs are {names}; the model's (from its example inputs "
                          f"and specs) are {[s.name for s in specs]}")
    for value, leaf in zip(graph_inputs, leaves):
        kind = ELEMENT_KINDS.get(onnx.TensorProto.DataType.ValueType(value.type.tensor_type.elem_type), "?")
        if kind != ("f" if leaf.is_floating_point() else "i"):
            raise ExportError(f"verify_model: the ONNX model's input {value.name} is "
                              f"{onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()}; the "
                              f"model's is {str(leaf.dtype).removeprefix('torch.')}: is it a file of this model?")
