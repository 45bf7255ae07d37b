"""Runners: one small interface, ``name`` and ``infer(feeds) -> dict[str, np.ndarray]``.

Feeds use the ONNX names: ``input``, optional ``h0``, ``c0`` and ``sequence_lens`` (int32, [batch]).
Outputs: ``output``, ``h_n`` and, for LSTM, ``c_n``. Runners never mutate their feeds.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from .errors import ProviderUnavailable

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
RECURRENT_OPS = ("GRU", "LSTM", "RNN")
SHORT_NAMES = {CPU: "ort-cpu", CUDA: "ort-cuda", TENSORRT: "ort-tensorrt"}
# ONNX Runtime's CUDA provider uses TF32 matmuls by default on Ampere and newer; the oracle comparison
# wants plain float32, as PyTorch's runner does.
PROVIDER_OPTIONS = {CUDA: {"use_tf32": "0"}}


class TorchRunner:
    """A copy of ``module`` in ``dtype`` on ``device``, run in eval mode under ``torch.no_grad()``.

    ``sequence_lens`` is applied as PyTorch does for ragged batches: ``pack_padded_sequence``, then
    ``pad_packed_sequence`` back to the full length (outputs past a row's length are zero).
    TF32 matmuls are off unless ``allow_tf32``; the setting is recorded in ``settings``.
    """

    def __init__(self, module: nn.Module, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 allow_tf32: bool = False, name: str | None = None):
        self.device, self.dtype, self.allow_tf32 = torch.device(device), dtype, allow_tf32
        self.module = copy.deepcopy(module).to(self.device, dtype).eval()
        self.name = name or f"torch-{str(dtype).removeprefix('torch.')}-{self.device.type}"
        self.settings = {"device": str(self.device), "dtype": str(dtype), "allow_tf32": allow_tf32,
                         "threads": torch.get_num_threads()}

    def __enter__(self) -> TorchRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtype)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._tensor(feeds["input"])
        state = None
        if "h0" in feeds:
            h0 = self._tensor(feeds["h0"])
            state = (h0, self._tensor(feeds["c0"])) if "c0" in feeds else h0
        with torch.no_grad(), _tf32(self.device, self.allow_tf32):
            if "sequence_lens" in feeds:
                y, final = self._ragged(x, state, feeds["sequence_lens"])
            else:
                y, final = self.module(x, state)
        finals = final if isinstance(final, tuple) else (final,)
        names = ("output", "h_n", "c_n")[: 1 + len(finals)]
        return {n: t.detach().cpu().numpy() for n, t in zip(names, (y, *finals))}

    def _ragged(self, x: torch.Tensor, state: Any, lengths: np.ndarray) -> tuple[torch.Tensor, Any]:
        batch_first = getattr(self.module, "batch_first", False)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, torch.from_numpy(lengths.astype(np.int64)), batch_first=batch_first, enforce_sorted=False
        )
        y, final = self.module(packed, state)
        total = x.shape[1 if batch_first else 0]
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=batch_first, total_length=total)
        return y, final


class Float64Oracle(TorchRunner):
    """The module's weights in float64 on CPU: the reference every runner is measured against.

    PyTorch, not ONNX Runtime: ONNX Runtime's CPU GRU/LSTM kernels have no float64 implementation.
    """

    def __init__(self, module: nn.Module):
        super().__init__(module, "cpu", torch.float64, name="torch-float64-oracle")


class _tf32:
    """Set TF32 for CUDA matmuls and cuDNN for one call, then restore the previous setting."""

    def __init__(self, device: torch.device, allow: bool):
        self.active = device.type == "cuda"
        self.allow = allow

    def __enter__(self) -> None:
        if self.active:
            self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.allow

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def provider_status(provider: str) -> str | None:
    """None when ONNX Runtime can use ``provider`` here, else why not (a short sentence)."""
    if provider not in ort.get_all_providers():
        return f"unknown provider (known: {', '.join(ort.get_all_providers())})"
    if provider not in ort.get_available_providers():
        hint = " (install onnxruntime-gpu)" if provider in (CUDA, TENSORRT) else ""
        return f"this onnxruntime {ort.__version__} was built without it{hint}"
    return None


class OrtRunner:
    """An ONNX Runtime session on one execution provider; refuses a silent fallback to another.

    ``model``: a path or serialized bytes. ``threads``: intra-op threads (0 = ONNX Runtime's default,
    all cores). ``settings`` records the session options; ``placement`` maps each recurrent node to
    the provider it really runs on (measured with ONNX Runtime's profiler on the first ``infer``; by
    default for every provider but CPU, which has nothing to fall back to).
    """

    def __init__(self, model: str | Path | bytes, provider: str = CPU, threads: int = 0,
                 optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                 check_placement: bool | None = None):
        reason = provider_status(provider)
        if reason:
            raise ProviderUnavailable(f"{provider}: not available: {reason}")
        self.provider, self.name = provider, SHORT_NAMES.get(provider, provider)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = optimization
        options.log_severity_level = 4  # failures come back as exceptions; its own log would repeat them
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
            raise ProviderUnavailable(f"ONNX Runtime ({provider}) could not load the model: "
                                      f"{_first_line(exc)}") from None
        used = self.session.get_providers()[0]
        if used != provider:
            raise ProviderUnavailable(f"{provider}: not available: the session fell back to {used} (no usable device)")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.placement: dict[str, str] = {}
        self.settings = {"provider": provider, "intra_op_num_threads": threads,
                         "graph_optimization_level": str(optimization).rsplit(".", 1)[-1],
                         "provider_options": provider_options,
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
            raise ProviderUnavailable(f"ONNX Runtime ({self.provider}) failed to run the model: "
                                      f"{_first_line(exc)}") from None
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


def _first_line(exc: Exception) -> str:
    """ONNX Runtime's message without its source location: what failed and the shapes involved."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    text = re.sub(r"Status Message: /\S+:\d+ .*? was false\. ", "", text)
    return text[:300]
