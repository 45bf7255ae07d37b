"""tract in a child process: ``python tract_child.py MODEL.onnx`` (run by path, so it imports nothing of
rnnexport; ``tract_runner.TractRunner`` starts it). tract aborts the process on some graphs (a Rust panic,
SIGABRT), so the process that runs it must not be verify's own.

Protocol on stdin/stdout: frames of an 8-byte little-endian length and an ``.npz`` (``allow_pickle=False``).
The child first writes ``{status: "ready", tract: <version>}``; then per request ``{op: "load" | "run",
concrete: bool, "in:<input>": array, …}`` it answers ``{status: "ok", "out:<i>": array, …}`` (outputs by position:
tract names them after the nodes that make them; a run adds ``seconds`` and ``cpu_seconds``, its own wall and
thread CPU time, the pipe left out) or
``{status: "error", message: <tract's message in one line>}``. EOF on stdin ends it.

Input facts are set from the arrays fed (``concrete``) or left to the graph's own dims; one runnable is kept
per set of input shapes, so a model is loaded once per shape and run for every case of that shape.
"""

from __future__ import annotations

import io
import struct
import sys
import time
from collections import OrderedDict
from typing import IO, Any

import numpy as np

FRAME = struct.Struct("<Q")
FEED, OUT = "in:", "out:"
SECONDS, CPU_SECONDS = "seconds", "cpu_seconds"
KEEP = 4  # runnables kept, most recently used first (a runnable holds its own copy of the weights)
DATUM = {"float32": "f32", "float64": "f64", "float16": "f16", "int32": "i32", "int64": "i64", "int8": "i8",
         "uint8": "u8", "bool": "bool"}


def write_frame(stream: IO[bytes], arrays: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    data = buffer.getvalue()
    stream.write(FRAME.pack(len(data)) + data)
    stream.flush()


def decode_frame(data: bytes) -> dict[str, np.ndarray]:
    buffer = io.BytesIO(data)
    with np.load(buffer, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _read_frame(stream: IO[bytes]) -> dict[str, np.ndarray] | None:
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    return decode_frame(stream.read(FRAME.unpack(head)[0]))


def message(exc: BaseException) -> str:
    """tract's message in one line: what it was doing, and the innermost cause ("Caused by:" lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines[1:] if line != "Caused by:" and not line.startswith("Stack backtrace")]
    text = lines[0] if lines else type(exc).__name__
    return f"{text}: {causes[-1]}" if causes else text


class Loaded:
    """One runnable per set of input shapes, at most ``KEEP`` of them."""

    def __init__(self, path: str):
        import tract

        self.tract, self.path = tract, path
        self.cache: OrderedDict[tuple, tuple[Any, list[str]]] = OrderedDict()

    def runnable(self, feeds: dict[str, np.ndarray], concrete: bool) -> tuple[Any, list[str]]:
        key = (concrete, *sorted((k, v.shape, v.dtype.str) for k, v in feeds.items()))
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        model = self.tract.onnx().load(self.path)
        inputs = [model.input_name(i) for i in range(model.input_count())]
        missing = [name for name in inputs if name not in feeds]
        if missing:
            raise ValueError(f"the graph's input {missing[0]!r} was not fed (fed: {', '.join(feeds)})")
        if concrete:
            for i, name in enumerate(inputs):
                array = feeds[name]
                model.set_input_fact(i, ",".join([*map(str, array.shape), DATUM.get(array.dtype.name, "f32")]))
        self.cache[key] = (model.into_model().into_runnable(), inputs)
        while len(self.cache) > KEEP:
            self.cache.popitem(last=False)
        return self.cache[key]

    def handle(self, request: dict[str, np.ndarray]) -> dict[str, Any]:
        feeds = {k.removeprefix(FEED): v for k, v in request.items() if k.startswith(FEED)}
        runnable, inputs = self.runnable(feeds, bool(request.get("concrete", True)))
        if str(request["op"]) == "load":
            return {"status": "ok"}
        start, start_cpu = time.perf_counter(), time.thread_time()
        outputs = {f"{OUT}{i}": v.to_numpy() for i, v in enumerate(runnable.run([feeds[name] for name in inputs]))}
        seconds, cpu_seconds = time.perf_counter() - start, time.thread_time() - start_cpu
        return {"status": "ok", **outputs, SECONDS: np.float64(seconds), CPU_SECONDS: np.float64(cpu_seconds)}


def main(argv: list[str]) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    import tract

    loaded = Loaded(argv[1])
    write_frame(stdout, {"status": "ready", "tract": tract.version()})
    while (request := _read_frame(stdin)) is not None:
        try:
            reply = loaded.handle(request)
        except (tract.TractError, ValueError) as exc:
            reply = {"status": "error", "message": message(exc)}
        write_frame(stdout, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
