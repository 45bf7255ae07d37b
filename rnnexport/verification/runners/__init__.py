"""Runners: small context managers with a stable ``name`` and ``infer(feeds) -> dict[str, np.ndarray]``.

Feeds use the ONNX names (``input``, ``h0``, ``c0``, ``sequence_lens``); outputs are ``output``, ``h_n``
and, for LSTM, ``c_n``. Runners never mutate their feeds. Every runner's name comes from the functions
and constants here, so a search for a name finds where it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rnnexport.contract import DEFAULT_FAMILIES, FAMILIES  # noqa: F401 (re-exported)

ORACLE = "torch-float64-oracle"


def torch_name(dtype: str, device: str) -> str:
    """``torch-float32-cpu``, ``torch-float32-cuda``: PyTorch running the module itself."""
    return f"torch-{dtype}-{device}"


TORCH_CPU, TORCH_CUDA = torch_name("float32", "cpu"), torch_name("float32", "cuda")


class Runner(Protocol):
    """What verify and bench need of a runtime. ``kind``: torch, onnxruntime, openvino or tract; ``device``:
    cpu, cuda or gpu; ``precision``: what it computes in (float64, float32, bf16, f16, …). A runner may also
    have ``explain(case, actual) -> {output: sentence}``: what its family knows makes its outputs wrong there."""

    name: str
    kind: str
    device: str
    precision: str
    settings: dict[str, Any]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: Any) -> None: ...


@dataclass(frozen=True)
class RunnerSpec:
    """A runner verify may run, before it runs: its stable ``name``, ``kind`` (torch, onnxruntime, openvino),
    ``device`` (cpu, cuda, gpu) and ``precision``, and ``open()`` → the runner, which raises
    ``RunnerUnavailable`` where it cannot run here (``RunnerFailed`` where the model would not load).
    ``model_bytes``: the size of the model file a runtime runner deploys (None for PyTorch)."""

    name: str
    kind: str
    device: str
    open: Callable[[], Runner]
    precision: str = "float32"
    model_bytes: int | None = None
