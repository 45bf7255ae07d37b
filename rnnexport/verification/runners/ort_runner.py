"""ONNX Runtime as a runner, one execution provider per session."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rnnexport.contract import RECURRENT_OPS
from rnnexport.errors import NotApplicable, RunnerFailed, RunnerUnavailable
from rnnexport.export.variants import PRECISION
from rnnexport.verification.runners import RunnerSpec

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
_SHORT = {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}
# ONNX Runtime's CUDA provider uses TF32 matmuls by default on Ampere and newer; the oracle comparison
# wants plain float32, as PyTorch's runner does.
PROVIDER_OPTIONS = {CUDA: {"use_tf32": "0"}}


def ort_name(provider: str) -> str:
    """``ort-cpu``, ``ort-cuda``, ``ort-tensorrt``; another provider keeps its own name."""
    return f"ort-{_SHORT[provider]}" if provider in _SHORT else provider


def provider_status(provider: str) -> str | None:
    """None when ONNX Runtime can use ``provider`` here, else why not (a short sentence)."""
    if provider not in ort.get_all_providers():
        return f"unknown provider (known: {', '.join(ort.get_all_providers())})"
    if provider not in ort.get_available_providers():
        hint = " (install onnxruntime-gpu)" if provider in (CUDA, TENSORRT) else ""
        return f"this onnxruntime {ort.__version__} was built without it{hint}"
    if provider in (CUDA, TENSORRT):
        return _library_status(_SHORT[provider])
    return None


CAPI = Path(ort.__file__).parent / "capi"  # where ONNX Runtime keeps its libraries


@functools.cache
def _library_status(short: str) -> str | None:
    _preload_dlls()
    return library_status(CAPI, short)


@functools.cache
def _preload_dlls() -> None:
    """``onnxruntime.preload_dlls`` (ONNX Runtime 1.21 and later), once: it loads CUDA and cuDNN from pip's nvidia
    packages, which torch installs beside onnxruntime-gpu. What it prints is dropped: a library it could not load
    fails the provider's own load, whose reason is reported. ``redirect_stdout`` holds for the whole process, so
    the engine asks for the GPU providers' status on its own thread, before any runner opens on another
    (``runtime_specs``)."""
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            ort.preload_dlls()


def library_status(capi: Path, short: str) -> str | None:
    """Why ONNX Runtime's library for a GPU provider (``short``: ``cuda``, ``tensorrt``) in its ``capi`` folder
    would not load here, or None (also where the folder has no such library: elsewhere than Linux, the session
    tells).

    onnxruntime-gpu lists CUDA and TensorRT as available whether or not their libraries (cuDNN, TensorRT's
    libnvinfer) are installed; a session then falls back to CPU after printing an error on stderr (seen on an
    H200 without TensorRT, 2026-11-30). This loads the provider's library as ONNX Runtime does (its shared bridge
    with global symbols first, then the provider), so the reason is known before any session, and quietly."""
    bridge, library = capi / "libonnxruntime_providers_shared.so", capi / f"libonnxruntime_providers_{short}.so"
    if not (bridge.is_file() and library.is_file()):
        return None
    try:
        ctypes.CDLL(str(bridge), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
    except OSError as exc:
        return f"{library.name} does not load here ({first_line(exc).removeprefix(str(library) + ': ')})"
    return None


class OrtRunner:
    """An ONNX Runtime session on one execution provider; refuses a silent fallback to another.

    ``model``: a path (external data beside it is found) or serialized bytes. ``threads``: intra-op
    threads (0 = ONNX Runtime's default, all cores). Threads do not spin after a call (``spin=False``),
    so this session never takes CPU from the next runner. ``arena``: ONNX Runtime's CPU memory arena, on in a
    deployment (bench measures that) and off in verify, where it would keep the longest case's buffers (about 5x
    the outputs, measured on gru_2layer at 100,000 steps) while the other runtimes run. ``placement`` maps each
    recurrent node to the provider it really runs on (read from ONNX Runtime's profiler on the first ``infer``; by
    default for every provider but CPU, which has nothing to fall back to).
    """

    kind, precision = "onnxruntime", "float32"

    def __init__(self, model: str | Path | bytes, provider: str = CPU, threads: int = 0,
                 optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                 check_placement: bool | None = None, spin: bool = False, name: str | None = None,
                 precision: str = "float32", arena: bool = False):
        self.provider, self.name, self.precision = provider, name or ort_name(provider), precision
        self.device = "cpu" if provider == CPU else "cuda"
        reason = provider_status(provider)
        if reason:
            raise RunnerUnavailable(self.name, reason)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = optimization
        options.enable_cpu_mem_arena = arena  # verify: off, or it keeps the longest case's buffers to the end
        options.log_severity_level = 4  # failures come back as exceptions; its own log would repeat them
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self._profile_dir = None
        if provider != CPU if check_placement is None else check_placement:
            self._profile_dir = tempfile.mkdtemp(prefix="rnnexport-ort-profile-")
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(self._profile_dir, "profile")
        model_arg = str(model) if isinstance(model, Path) else model
        provider_options = dict(PROVIDER_OPTIONS.get(provider, {}))
        try:
            self.session = ort.InferenceSession(model_arg, sess_options=options,
                                                providers=[(provider, provider_options)])
        except Exception as exc:  # ONNX Runtime raises its own exception types for bad models
            self.close()
            raise RunnerFailed(self.name, f"could not load the model: {first_line(exc)}") from None
        used = self.session.get_providers()[0]
        if used != provider:
            self.close()
            raise RunnerUnavailable(self.name, f"the session fell back to {used} (no usable device)")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.placement: dict[str, str] = {}
        self.settings = {"provider": provider, "intra_op_num_threads": threads,
                         "graph_optimization_level": str(optimization).rsplit(".", 1)[-1],
                         "allow_spinning": spin, "provider_options": provider_options,
                         "onnxruntime": ort.__version__}

    def __enter__(self) -> OrtRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._profile_dir:
            for f in Path(self._profile_dir).glob("*"):
                f.unlink()
            os.rmdir(self._profile_dir)
            self._profile_dir = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as exc:
            raise RunnerFailed(self.name, f"failed to run the model: {first_line(exc)}") from None
        if self._profile_dir and not self.placement:
            self.placement = self._read_placement()
        return dict(zip(self.output_names, values))

    def _read_placement(self) -> dict[str, str]:
        path = self.session.end_profiling()
        events = json.loads(Path(path).read_text())
        placement = {}
        for event in events:
            args = event.get("args", {})
            if event.get("cat") == "Node" and args.get("op_name") in RECURRENT_OPS:
                placement[event["name"].removesuffix("_kernel_time")] = args.get("provider", "?")
        return placement

    def fallbacks(self) -> dict[str, str]:
        """Recurrent nodes that ONNX Runtime placed on another provider than the one asked for."""
        return {node: used for node, used in self.placement.items() if used != self.provider}


def variant_specs(variants: dict[str, bytes | str], providers: tuple[str, ...], threads: int) -> list[RunnerSpec]:
    """A runner per deployment variant and provider: ``ort-cpu-fp16-weights``, ``ort-cpu-int8-dynamic``, …;
    int8 only on CPU, where ONNX Runtime has its DynamicQuantizeLSTM kernel. A variant given as a sentence
    (why the build could not make it) is one "not applicable" runner."""
    found = []
    for kind, data in variants.items():
        if isinstance(data, str):
            name = f"{ort_name(CPU)}-{kind}"
            found.append(RunnerSpec(name, "onnxruntime", "cpu", functools.partial(_not_applicable, name, data),
                                    precision=PRECISION[kind]))
            continue
        for provider in providers:
            name, device = f"{ort_name(provider)}-{kind}", "cpu" if provider == CPU else "cuda"
            if kind == "int8-dynamic" and provider != CPU:
                found.append(RunnerSpec(name, "onnxruntime", device, functools.partial(
                    _refuse, name, "ONNX Runtime's DynamicQuantizeLSTM kernel runs on CPU only"),
                    precision=PRECISION[kind]))
                continue
            found.append(RunnerSpec(name, "onnxruntime", device, functools.partial(
                OrtRunner, data, provider, threads=threads, name=name, precision=PRECISION[kind]),
                precision=PRECISION[kind], model_bytes=len(data)))
    return found


def _not_applicable(name: str, reason: str) -> OrtRunner:
    raise NotApplicable(name, reason)


def _refuse(name: str, reason: str) -> OrtRunner:
    raise RunnerUnavailable(name, reason)


def first_line(exc: Exception) -> str:
    """A runtime's message without its source location: what failed and the shapes involved."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    text = re.sub(r"Status Message: /\S+:\d+ .*? was false\. ", "", text)
    return text[:300]
