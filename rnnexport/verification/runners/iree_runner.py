"""IREE (a compiler and runtime for deployment) as a runner (optional: ``pip install 'rnnexport[iree]'``).

The model is imported (``iree.compiler.tools.import_onnx``, torch-mlir's ONNX importer) and compiled for this CPU
(``iree-compile``, llvm-cpu, ``--iree-llvmcpu-target-cpu=host``), each in a process of its own with a time limit,
so a compiler crash is this runner's failure; the compiled module runs in this process. IREE 3.13 compiles
LSTMs with dynamic seq and batch but not GRUs or RNNs ("failed to legalize operation 'torch.operator'" on a
dynamic dim), so where the graph as it is does not compile, each case's input shapes are written into a copy of
the graph and that compiled, once per set of shapes (about 2 s each for gru_2layer on this project's machines,
2026-12-01). Where IREE computes something other than the graph says (it ignores ``sequence_lens``, see
``explain``), a failing case says so in words.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rnnexport.artifacts.folders import make_staging, remove_staging, remove_stale_temporaries
from rnnexport.contract import LENGTHS
from rnnexport.errors import RunnerFailed, RunnerUnavailable
from rnnexport.verification.cases import Case
from rnnexport.verification.runners import RunnerSpec
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.tract_runner import rnn_activations

IREE = "iree-cpu"
INSTALL = "pip install 'rnnexport[iree]'"
TIMEOUT = 300.0  # seconds for one import or one compile (lstm_3layer_bidir's dynamic graph compiles in 5 s)
# The size of every named dim in the compile tried at open where the graph as it is does not compile: 2, since a
# masked ragged GRU compiles at 2 but not at 1 (where its mask's Range is empty; 2026-12-01).
TRIAL_SIZE = 2
ERROR_CHARS = 160  # of a compiler error line: its operation, not the whole MLIR value it prints
TARGET = ("--iree-hal-target-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host")


def iree_specs(data: bytes, threads: int = 0) -> list[RunnerSpec]:
    """The IREE runner for the serialized model ``data`` (not available without the packages)."""
    return [RunnerSpec(IREE, "iree", "cpu", functools.partial(IreeRunner, data, threads=threads),
                       model_bytes=len(data))]


def iree_status() -> str | None:
    """None when IREE's compiler and runtime are installed here, else why not."""
    missing = [p for p in ("iree.compiler", "iree.runtime") if not _found(p)]
    return f"{' and '.join(missing)} not installed ({INSTALL})" if missing else None


def _found(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:  # the parent namespace ``iree`` itself is missing
        return False


class IreeRunner:
    """IREE running the serialized ONNX model ``data`` on this CPU. ``threads``: 1 runs each call on the calling
    thread (IREE's ``local-sync`` driver); N > 1 on IREE's task system with N worker groups; 0 its default (one
    per core). Raises ``RunnerUnavailable`` without the packages, ``RunnerFailed`` where the graph can be compiled
    neither as it is nor at the first case's shapes (the compiler's first error line)."""

    kind, device, precision = "iree", "cpu", "float32"

    def __init__(self, data: bytes, name: str = IREE, threads: int = 0, timeout: float = TIMEOUT):
        self.name, self.timeout = name, timeout
        reason = iree_status()
        if reason:
            raise RunnerUnavailable(name, reason)
        self.data, self.model = data, _shaped_outputs(onnx.load_model_from_string(data))
        initializers = {i.name for i in self.model.graph.initializer}
        self.input_names = [i.name for i in self.model.graph.input if i.name not in initializers]
        self.output_names = [o.name for o in self.model.graph.output]
        self.driver = "local-sync" if threads == 1 else "local-task"
        if threads > 1:
            _task_groups(threads)
        scratch = Path(tempfile.gettempdir())
        remove_stale_temporaries(scratch)  # what killed runs left: marked, their process gone
        self._folder = make_staging(scratch, "iree")
        self._modules: dict[tuple, Any] = {}  # input shapes → compiled module, where the graph needs them fixed
        self._lengths: OrtRunner | None = None
        try:
            self._dynamic, self._why_dynamic = self._compile(self.model, "dynamic")
            if self._dynamic is None:  # a trial at TRIAL_SIZE for every named dim: what IREE refuses, said once
                self._fixed(tuple(tuple(d.dim_value if d.HasField("dim_value") else TRIAL_SIZE
                                        for d in i.type.tensor_type.shape.dim)
                                  for i in self.model.graph.input if i.name in self.input_names))
        except RunnerFailed as exc:
            self.close()
            raise RunnerFailed(name, f"could not load the model: {exc.reason}") from None
        except BaseException:  # Ctrl-C or a full disk while compiling: no staging folder stays behind
            self.close()
            raise
        self.settings = {"iree": version("iree-base-runtime"), "compiler": version("iree-base-compiler"),
                         "target": "llvm-cpu, host CPU", "driver": self.driver, "timeout_s": timeout,
                         "input_shapes": "dynamic" if self._dynamic else "compiled per set of input shapes"}

    def __enter__(self) -> IreeRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._lengths:
                lengths, self._lengths = self._lengths, None
                lengths.close()
        finally:
            remove_staging(self._folder)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs by their ONNX names (IREE returns them in the graph's order)."""
        arrays = [np.ascontiguousarray(feeds[n]) for n in self.input_names]
        module = self._dynamic or self._fixed(tuple(a.shape for a in arrays))
        function = next(f for f in module.vm_module.function_names if "$" not in f and not f.startswith("__"))
        try:
            result = module[function](*arrays)
        except (RuntimeError, ValueError) as exc:  # IREE's status as an exception: a shape the module refuses
            raise RunnerFailed(self.name, str(exc).strip().splitlines()[0][:300]) from None
        results = result if isinstance(result, (list, tuple)) else [result]
        return {n: np.asarray(r.to_host() if hasattr(r, "to_host") else r)
                for n, r in zip(self.output_names, results)}

    def _fixed(self, shapes: tuple) -> Any:
        if shapes not in self._modules:
            fixed = onnx.ModelProto()
            fixed.CopyFrom(self.model)
            sizes: dict[str, int] = {}  # a named dim → its size in this case
            for value, shape in zip((i for i in fixed.graph.input if i.name in self.input_names), shapes):
                for dim, size in zip(value.type.tensor_type.shape.dim, shape):
                    if dim.dim_param:
                        sizes[dim.dim_param] = size
                    dim.Clear()
                    dim.dim_value = size
            for value in fixed.graph.output:  # named as an input's dim: that size; another name: left unknown
                for dim in value.type.tensor_type.shape.dim:
                    if dim.dim_param:
                        size = sizes.get(dim.dim_param)
                        dim.Clear()
                        if size is not None:
                            dim.dim_value = size
            module, why = self._compile(fixed, "x".join("_".join(map(str, s)) for s in shapes))
            if module is None:
                relu = list(rnn_activations(self.data))  # IREE 3.13 compiles none (2026-12-01)
                said = (f"IREE does not lower an RNN with activations other than Tanh (nodes {', '.join(relu)}); "
                        if relu else "")
                at = ", ".join(str(list(shape)) for shape in shapes)
                raise RunnerFailed(self.name, f"{said}IREE cannot compile this graph with dynamic shapes, nor with "
                                              f"input shapes {at} ({why})")
            self._modules[shapes] = module
        return self._modules[shapes]

    def _compile(self, model: onnx.ModelProto, label: str) -> tuple[Any, str]:
        """``model`` imported and compiled → (the loaded module, "") or (None, the first error line)."""
        import iree.runtime as rt  # heavy, and only where IREE runs

        onnx_path, mlir, vmfb = (self._folder / f"{label}.{ext}" for ext in ("onnx", "mlir", "vmfb"))
        onnx_path.write_bytes(model.SerializeToString())
        steps = ([sys.executable, "-m", "iree.compiler.tools.import_onnx", str(onnx_path), "-o", str(mlir)],
                 [_compiler(), str(mlir), *TARGET, "-o", str(vmfb)])
        for command in steps:
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                return None, f"timed out after {self.timeout:g} s"
            if done.returncode:
                return None, first_error(done.stderr or done.stdout, done.returncode)
        try:
            return rt.load_vm_flatbuffer(vmfb.read_bytes(), driver=self.driver), ""
        finally:
            for path in (onnx_path, mlir, vmfb):
                path.unlink(missing_ok=True)

    def explain(self, case: Case, actual: dict[str, np.ndarray]) -> dict[str, str]:
        """output → a sentence, where IREE's outputs are what this graph computes with ``sequence_lens`` set to
        the full length (IREE 3.13's ONNX import ignores the recurrent nodes' ``sequence_lens``): measured with
        ONNX Runtime on that graph."""
        if LENGTHS not in case.feeds or LENGTHS not in self.input_names or case.chunks:
            return {}
        lengths = case.feeds[LENGTHS]
        steps = case.feeds["input"].shape[case.time_axis or 0]
        if np.all(lengths == steps):
            return {}
        if self._lengths is None:
            self._lengths = OrtRunner(self.data, name=f"{self.name}-lengths-check", threads=1)
        full = self._lengths.infer({**case.feeds, LENGTHS: np.full_like(lengths, steps)})
        gaps = {k: float(np.abs(full[k] - actual[k]).max()) for k in actual
                if k in full and full[k].shape == actual[k].shape}
        if not gaps or max(gaps.values()) > 1e-4:
            return {}
        return {k: f"IREE ignores sequence_lens: its {k} matches this graph run at the full length to {gap:.2g}; an "
                   'IREE bug, not the export\'s (build with [inputs] variable_lengths = "masked" for a graph without '
                   "sequence_lens)" for k, gap in gaps.items()}


def _shaped_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with a shape on every graph output, from ONNX shape inference where the file gives none (the
    importer refuses an output without one: "Field 'shape' of 'type' is required", as on the per-layer outputs
    that diagnosis exposes)."""
    bare = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if bare:
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
        for value in bare:
            if value.name in known and known[value.name].type.tensor_type.HasField("shape"):
                value.type.CopyFrom(known[value.name].type)
    return model


@functools.cache
def _compiler() -> str:
    from iree.compiler.tools.binaries import find_tool

    return str(find_tool("iree-compile"))


@functools.cache
def _task_groups(threads: int) -> None:
    """IREE's task system at ``threads`` worker groups: a process-wide flag, read when a device is made."""
    import iree.runtime as rt

    rt.flags.parse_flags(f"--task_topology_group_count={threads}")


def first_error(text: str, code: int) -> str:
    """The first line of the compiler's or importer's output that says what failed (``error:``, an exception's
    last line), else how it ended."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    error = next((line[line.index("error:"):] for line in lines if "error:" in line), None)  # without the file
    if error is None and lines:
        error = lines[-1]
    return error[:ERROR_CHARS].rstrip() + ("…" if len(error) > ERROR_CHARS else "") if error else \
        f"exited with code {code}"
