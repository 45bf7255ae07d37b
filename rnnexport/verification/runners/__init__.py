"""Runners: small context managers with a stable ``name`` and ``infer(feeds) -> dict[str, np.ndarray]``.

Feeds use the ONNX names (``input``, ``h0``, ``c0``, ``sequence_lens``); outputs are ``output``, ``h_n``
and, for LSTM, ``c_n``. Runners never mutate their feeds. Every runner's name comes from the functions
and constants here, so a search for a name finds where it is made.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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


class OpenedAhead:
    """The runners of ``specs`` opened in order on a second thread, up to ``depth`` (at least 1) ahead of the one
    in use, so that building ONNX Runtime's sessions and compiling OpenVINO's models overlaps the oracle and the
    runners running (OpenVINO releases the GIL while it compiles). Entered, it gives ``specs`` again, each
    ``open()`` taking its runner from that thread (raising what opening it raised); on exit it waits for the
    one being opened and closes those opened and never taken, so an error midway leaves nothing open."""

    def __init__(self, specs: list[RunnerSpec], depth: int):
        self._specs, self._depth = specs, max(depth, 1)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rnnexport-open")
        self._futures: list[Future[Runner]] = []
        self._taken: set[int] = set()

    def __enter__(self) -> list[RunnerSpec]:
        self._submit(self._depth)
        return [dataclasses.replace(s, open=functools.partial(self._take, i)) for i, s in enumerate(self._specs)]

    def __exit__(self, *exc: Any) -> None:
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        for i, future in enumerate(self._futures):
            if i not in self._taken and not future.cancelled() and future.exception() is None:
                future.result().__exit__(None, None, None)

    def _submit(self, count: int) -> None:
        while len(self._futures) < min(count, len(self._specs)):
            self._futures.append(self._pool.submit(self._specs[len(self._futures)].open))

    def _take(self, index: int) -> Runner:
        self._taken.add(index)
        self._submit(index + 1 + self._depth)
        return self._futures[index].result()
