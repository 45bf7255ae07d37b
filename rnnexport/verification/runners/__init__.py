"""Runners: small context managers with a stable ``name`` and ``infer(feeds) -> dict[str, np.ndarray]``.

Feeds use the ONNX names (``input``, ``h0``, ``c0``, ``sequence_lens``); outputs are ``output``, ``h_n``
and, for LSTM, ``c_n``. Runners never mutate their feeds. Every runner's name comes from the functions
and constants here, so a search for a name finds where it is made.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
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


def worker_pool(prefix: str) -> ThreadPoolExecutor:
    """A one-thread pool whose thread runs PyTorch at the thread count of the thread that made it. PyTorch's count
    holds per thread for the BLAS under it: a new thread computed the float64 oracle with more threads than
    ``torch.set_num_threads(1)`` had set on the main one, and rounded differently (5.6e-17 on rnn_tanh_nobias's
    batch1 case, torch 2.13). Without torch imported there is nothing to set."""
    torch = sys.modules.get("torch")
    initializer = functools.partial(torch.set_num_threads, torch.get_num_threads()) if torch else None
    return ThreadPoolExecutor(1, thread_name_prefix=prefix, initializer=initializer)


class OpenedAhead:
    """The runners of ``specs`` opened in order on a second thread, up to ``depth`` (at least 1) ahead of the one
    in use, so that opening them (PyTorch's float32 copy, ONNX Runtime's sessions, OpenVINO's compiled models,
    tract's child) overlaps the oracle and the runners running (OpenVINO releases the GIL while it compiles).
    Entered, it gives ``specs`` again, each ``open()`` taking its runner from that thread (raising what opening it
    raised) and keeping no reference to it. On exit, however it is reached (an error, Ctrl-C while a runner is
    awaited), every runner opened and never taken is closed: those ready at once, the one still opening as soon as
    it is ready (on that thread), each even when closing another raised. A failure to close is raised unless an
    error is already on its way (then that one is what the caller sees)."""

    def __init__(self, specs: list[RunnerSpec], depth: int):
        self._specs, self._depth = specs, max(depth, 1)
        self._pool = worker_pool("rnnexport-open")
        self._futures: dict[int, Future[Runner]] = {}  # submitted and not taken
        self._submitted = 0
        self._lock = threading.Lock()
        self._ready: set[int] = set()  # opened (or failed to) while the run went on
        self._exiting = False

    def __enter__(self) -> list[RunnerSpec]:
        self._submit(self._depth)
        return [dataclasses.replace(s, open=functools.partial(self._take, i)) for i, s in enumerate(self._specs)]

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._exiting = True
            ready = sorted(self._ready)
        for future in self._futures.values():
            future.cancel()
        failed: list[Exception] = []
        try:
            for index in ready:  # every one is closed, even when closing one raises
                try:
                    self._close_unused(index)
                except Exception as error:
                    failed.append(error)
        finally:
            self._pool.shutdown(wait=True)
        if failed and exc[0] is None:  # an error already on its way (Ctrl-C, say) is the one that matters
            raise failed[0]

    def _submit(self, count: int) -> None:
        while self._submitted < min(count, len(self._specs)):
            index, self._submitted = self._submitted, self._submitted + 1
            self._futures[index] = self._pool.submit(self._specs[index].open)
            self._futures[index].add_done_callback(functools.partial(self._opened, index))

    def _take(self, index: int) -> Runner:
        self._submit(index + 1 + self._depth)
        runner = self._futures[index].result()
        del self._futures[index]  # from here on, the caller closes it
        return runner

    def _opened(self, index: int, future: Future[Runner]) -> None:
        """A runner ready: closed here if the run has ended without it (the one being opened on exit)."""
        with self._lock:
            self._ready.add(index)
            late = self._exiting
        if late:
            self._close_unused(index)

    def _close_unused(self, index: int) -> None:
        future = self._futures.get(index)
        if future is not None and not future.cancelled() and future.exception() is None:
            future.result().__exit__(None, None, None)
