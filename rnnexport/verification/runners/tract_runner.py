"""tract (Sonos' embedded inference engine) as a runner (optional: ``pip install 'rnnexport[tract]'``).

tract runs in a child process (``tract_child.py``), opened once per model, with a time limit per call: it
aborts its process on some graphs (a Rust panic, SIGABRT), and such a crash is this runner's failure
(``crashed: SIGABRT: <tract's panic message>``), never verify's. After a crash the next case starts a new child.

Input shapes are made concrete per case (tract panics on a recurrent node whose batch is symbolic): the child
loads the model once per set of input shapes. Where tract computes something other than the graph says (the
activations of an RNN, see ``explain``), a failing case says so in words.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx

from rnnexport.artifacts.folders import make_staging, remove_staging, remove_stale_temporaries
from rnnexport.contract import H_N, OUTPUT
from rnnexport.errors import RunnerFailed, RunnerUnavailable
from rnnexport.verification.cases import Case
from rnnexport.verification.runners import RunnerSpec
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.tract_child import (
    CPU_SECONDS,
    FEED,
    FRAME,
    OUT,
    SECONDS,
    decode_frame,
    write_frame,
)

TRACT = "tract-cpu"
INSTALL = "pip install 'rnnexport[tract]'"
CHILD = Path(__file__).with_name("tract_child.py")
TIMEOUT = 300.0  # seconds per call (a load, or one run): lstm_large's 1,024 steps run in a few seconds
# tract's messages for what it does not support → what to do about it.
UNSUPPORTED = {
    "Non constant seq_len": "tract does not take sequence_lens as an input of a recurrent node; build with "
                            '[inputs] variable_lengths = "masked" for a graph that does not need it',
    "Unimplemented(ReverseSequence)": 'tract has no ReverseSequence; build with reverse = "GatherElements" for a '
                                      "masked bidirectional graph without it",
    "Impossible to unify Sym(": "tract cannot bind the file's intermediate shapes (value_info, as ONNX shape "
                                "inference, onnxsim or onnxslim write them) to this case's sizes; deploy the file "
                                "without value_info (rnnexport's own files have none)",
}


def tract_specs(data: bytes) -> list[RunnerSpec]:
    """The tract runner for the serialized model ``data`` (not available without the package)."""
    return [RunnerSpec(TRACT, "tract", "cpu", functools.partial(TractRunner, data), model_bytes=len(data))]


def tract_status() -> str | None:
    """None when tract can run here, else why not."""
    return None if importlib.util.find_spec("tract") else f"tract is not installed ({INSTALL})"


class TractRunner:
    """tract running the serialized ONNX model ``data`` in a child process. ``timeout``: seconds per call
    before the child is killed. ``concrete_shapes``: set the input facts from each case's arrays (False: the
    graph's own symbolic dims, on which tract aborts for most recurrent graphs; what the isolation is for).
    Raises ``RunnerUnavailable`` without the package, ``RunnerFailed`` where tract cannot load the model."""

    kind, device, precision = "tract", "cpu", "float32"

    def __init__(self, data: bytes, name: str = TRACT, timeout: float = TIMEOUT, concrete_shapes: bool = True):
        self.name, self.timeout, self.concrete = name, timeout, concrete_shapes
        reason = tract_status()
        if reason:
            raise RunnerUnavailable(name, reason)
        self.data = data
        self.output_names = [o.name for o in onnx.load_model_from_string(data).graph.output]
        scratch = Path(tempfile.gettempdir())
        remove_stale_temporaries(scratch)  # what killed runs left: marked, their process gone
        self._child: _Child | None = None
        self._tanh: OrtRunner | None = None
        self.last_call: tuple[float, float] | None = None
        self._folder = make_staging(scratch, "tract")  # the child loads the model from a file, once per shape
        try:
            self.path = self._folder / "model.onnx"
            self.path.write_bytes(data)
            self.version = self._start().version
            self._request("load", _trial_feeds(data))
        except RunnerFailed as exc:
            self.close()
            raise RunnerFailed(name, f"could not load the model: {exc.reason}") from None
        except BaseException:  # Ctrl-C or a full disk while opening: no child and no staging folder stay behind
            self.close()
            raise
        self.settings = {"tract": self.version, "process": "child, one per model", "timeout_s": timeout,
                         "input_shapes": "concrete per case" if concrete_shapes else "symbolic (the graph's)"}

    def __enter__(self) -> TractRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """The child ended and the staging folder removed, however closing is left (a second Ctrl-C in the wait)."""
        try:
            if self._child:
                child, self._child = self._child, None
                child.close()
            if self._tanh:
                tanh, self._tanh = self._tanh, None
                tanh.close()
        finally:
            remove_staging(self._folder)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs by their ONNX names (tract returns them in the graph's order). ``last_call``: that
        run's own (wall, thread CPU) seconds, timed in the child around tract's run, the pipe left out."""
        reply = self._request("run", feeds)
        self.last_call = (float(reply[SECONDS]), float(reply[CPU_SECONDS]))
        return {name: reply[f"{OUT}{i}"] for i, name in enumerate(self.output_names) if f"{OUT}{i}" in reply}

    def _start(self) -> _Child:
        if self._child:  # one that crashed or timed out: its pipes and stderr file are closed here
            self._child.close()
        self._child = None
        self._child = _Child(self.path, self.name, self.timeout)
        return self._child

    def _request(self, op: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        child = self._child if self._child and self._child.alive() else self._start()
        reply = child.request({"op": op, "concrete": self.concrete, **{FEED + k: v for k, v in feeds.items()}})
        if str(reply["status"]) != "ok":
            text = str(reply["message"])
            words = next((w for key, w in UNSUPPORTED.items() if key in text), None)
            raise RunnerFailed(self.name, f"{words} (tract: {text})" if words else text)
        return reply

    def explain(self, case: Case, actual: dict[str, np.ndarray]) -> dict[str, str]:
        """output → a sentence, where tract's outputs are what this graph computes with every RNN activation
        replaced by Tanh (tract 0.23 ignores RNN's ``activations``): measured with ONNX Runtime on that graph."""
        nodes = rnn_activations(self.data)
        if not nodes or case.chunks:
            return {}
        if self._tanh is None:
            self._tanh = OrtRunner(_with_tanh(self.data), name=f"{self.name}-tanh-check")
        tanh = self._tanh.infer(case.feeds)
        gaps = {k: float(np.abs(tanh[k] - actual[k]).max()) for k in (OUTPUT, H_N)
                if k in actual and k in tanh and tanh[k].shape == actual[k].shape}
        if not gaps or max(gaps.values()) > 1e-4:
            return {}
        said = ", ".join(sorted({a for acts in nodes.values() for a in acts}))
        return {k: f"tract computes Tanh for RNN activations {said} (nodes {', '.join(nodes)}): its {k} matches "
                   f"this graph with Tanh to {gap:.2g}; a tract bug, not the export's" for k, gap in gaps.items()}


def rnn_activations(data: bytes) -> dict[str, list[str]]:
    """RNN node → its activations, for the nodes whose activations are not Tanh (tract computes Tanh for them,
    IREE lowers none of them)."""
    found = {}
    for node in onnx.load_model_from_string(data).graph.node:
        if node.op_type == "RNN":
            acts = [a.decode() for attr in node.attribute if attr.name == "activations" for a in attr.strings]
            if any(a != "Tanh" for a in acts):
                found[node.name] = acts
    return found


def _with_tanh(data: bytes) -> bytes:
    model = onnx.load_model_from_string(data)
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "RNN" and attr.name == "activations":
                attr.strings[:] = [b"Tanh"] * len(attr.strings)
    return model.SerializeToString()


def _trial_feeds(data: bytes) -> dict[str, np.ndarray]:
    """Zeros for every graph input, each symbolic dim 1: a load at open shows what tract refuses in the graph."""
    model = onnx.load_model_from_string(data)
    initializers = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        feeds[value.name] = np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return feeds


class _Child:
    """The child process: one request at a time, each within ``timeout`` seconds; its stderr kept in a file
    for the words of a crash."""

    def __init__(self, path: Path, name: str, timeout: float):
        self.name, self.timeout = name, timeout
        self.stderr = tempfile.TemporaryFile()
        env = {**os.environ, "RUST_BACKTRACE": "0"}  # the panic's message, not a page of frames
        self.process = subprocess.Popen([sys.executable, str(CHILD), str(path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        try:
            self.version = str(self._read()["tract"])
        except BaseException:  # a failed handshake, or Ctrl-C during it: the child goes too
            self.close()
            raise

    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, arrays: dict[str, Any]) -> dict[str, np.ndarray]:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            write_frame(stdin, arrays)
        except (BrokenPipeError, OSError):
            raise self._crashed() from None
        return self._read()

    def _read(self) -> dict[str, np.ndarray]:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + self.timeout
        head = self._read_exactly(stdout, FRAME.size, deadline)
        return decode_frame(self._read_exactly(stdout, FRAME.unpack(head)[0], deadline))

    def _read_exactly(self, stream: IO[bytes], size: int, deadline: float) -> bytes:
        chunks, left = [], size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([stream], [], [], wait)[0]:
                self.kill()
                raise RunnerFailed(self.name, f"timed out after {self.timeout:g} s (the tract process was killed)")
            chunk = os.read(stream.fileno(), min(left, 1 << 20))
            if not chunk:
                raise self._crashed()
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _crashed(self) -> RunnerFailed:
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = self.kill()
        how = f"crashed: {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        line = panic_line(self._stderr_text())
        return RunnerFailed(self.name, f"{how}: {line}" if line else how)

    def _stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def kill(self) -> int:
        self.process.kill()
        return self.process.wait()

    def close(self) -> None:
        """EOF on its stdin ends the child; one that does not end within 5 s, or while that wait is interrupted
        (a second Ctrl-C), is killed."""
        try:
            if self.process.poll() is None:
                if self.process.stdin:
                    self.process.stdin.close()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.kill()
        except BaseException:
            self.kill()
            raise
        finally:
            for stream in (self.process.stdin, self.process.stdout, self.stderr):
                if stream and not stream.closed:
                    stream.close()


def panic_line(stderr: str) -> str:
    """The line that says why the child died: the message of tract's first panic (the line after
    "thread … panicked at …"), else the last line of its stderr that is not a note."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if " panicked at " in line:
            return lines[i + 1][:300]
    rest = [line for line in lines if not line.startswith("note:")]
    return rest[-1][:300] if rest else ""
