"""Write docs/whole-models.md: whole models exported by rnnexport.export_model, by torch.onnx.export(dynamo=True)
and by dynamo=False, each run in ONNX Runtime at the example shape and at other lengths and batches, against the
float64 oracle, measured in one run.

The three architectures are built here (``ARCHITECTURES``; the tests import them from this file):
a token tagger, a speech-style encoder and a streaming model with state in and out.

Usage: python scripts/whole_models_doc.py      (needs onnxscript, in the dev extra)
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import platform
import re
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rnnexport.export.whole_model import export_model  # noqa: E402
from rnnexport.verification.whole_model import standard_shapes  # noqa: E402


class Tagger(nn.Module):
    """Embedding → 2-layer bidirectional LSTM (batch first, under encoder.rnn) → Linear."""

    def __init__(self, vocab: int = 100, emb: int = 16, hidden: int = 24, tags: int = 5):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.encoder = nn.Module()
        self.encoder.rnn = nn.LSTM(emb, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.encoder.rnn(self.emb(tokens))
        return self.head(y)


class SpeechEncoder(nn.Module):
    """Conv1d front end over [batch, features, time] → 3-layer GRU → Linear; returns logits and h_n."""

    def __init__(self, feats: int = 20, channels: int = 32, hidden: int = 32, out: int = 10):
        super().__init__()
        self.conv = nn.Conv1d(feats, channels, 3, padding=1)
        self.gru = nn.GRU(channels, hidden, num_layers=3)
        self.proj = nn.Linear(hidden, out)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.conv(features)).permute(2, 0, 1)
        y, h = self.gru(x)
        return self.proj(y), h


class Streaming(nn.Module):
    """A 2-layer LSTM with its state in and out: one chunk per call, the state carried by the caller."""

    def __init__(self, feats: int = 8, hidden: int = 16):
        super().__init__()
        self.lstm = nn.LSTM(feats, hidden, num_layers=2)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        y, (h, c) = self.lstm(x, (h0, c0))
        return self.head(y), h, c


def architectures() -> dict[str, tuple]:
    """name → (model, example inputs, dynamic dims by name, input names, output names), seeded."""
    torch.manual_seed(0)
    return {
        "tagger": (Tagger().eval(), (torch.randint(0, 100, (4, 12)),), ({0: "batch", 1: "seq"},), ["tokens"],
                   ["logits"]),
        "speech_encoder": (SpeechEncoder().eval(), (torch.randn(3, 20, 30),), ({0: "batch", 2: "seq"},),
                           ["features"], ["logits", "h_n"]),
        "streaming": (Streaming().eval(), (torch.randn(5, 2, 8), torch.zeros(2, 2, 16), torch.zeros(2, 2, 16)),
                      ({0: "seq", 1: "batch"}, {1: "batch"}, {1: "batch"}), ["x", "h0", "c0"], ["y", "h_n", "c_n"]),
    }


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _torch_export(model, inputs, dims, names, outputs, dynamo: bool) -> onnx.ModelProto:
    buffer = io.BytesIO()
    if dynamo:
        made = {}
        shapes = tuple({a: made.setdefault(n, torch.export.Dim(n)) for a, n in d.items()} for d in dims)
        program = torch.onnx.export(model, inputs, dynamo=True, dynamic_shapes=shapes, input_names=names,
                                    output_names=outputs)
        return program.model_proto
    axes = {n: {a: v for a, v in d.items()} for n, d in zip(names, dims)}
    torch.onnx.export(model, inputs, buffer, dynamo=False, input_names=names, output_names=outputs,
                      dynamic_axes=axes, opset_version=17)
    return onnx.load_model_from_string(buffer.getvalue())


EXPORTERS = {
    "rnnexport.export_model": lambda m, i, d, n, o: export_model(m, i, dynamic_shapes=d, input_names=n, output_names=o),
    "torch dynamo=True": lambda m, i, d, n, o: _torch_export(m, i, d, n, o, True),
    "torch dynamo=False": lambda m, i, d, n, o: _torch_export(m, i, d, n, o, False),
}


def _feeds(inputs, dims, names, seq: int, batch: int, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for example, roles, name in zip(inputs, dims, names):
        shape = tuple(seq if roles.get(a) == "seq" else batch if roles.get(a) == "batch" else s
                      for a, s in enumerate(example.shape))
        feeds[name] = (rng.integers(0, 100, shape, dtype=np.int64) if not example.is_floating_point()
                       else rng.standard_normal(shape).astype(np.float32))
    return feeds


def measure(name: str, exporter: str, spec: tuple) -> dict:
    model, inputs, dims, names, outputs = spec
    times, protos = [], []
    try:
        for _ in range(3):
            start = time.perf_counter()
            with _quiet():
                protos.append(EXPORTERS[exporter](model, inputs, dims, names, outputs))
            times.append(time.perf_counter() - start)
    except Exception as exc:  # what the exporter says is the finding
        return {"error": f"export fails: {str(exc).splitlines()[0][:160]}"}
    proto = protos[0]  # what a user gets from one export in a fresh process
    dims_of = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input]
    repeat = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in protos[-1].graph.input]
    oracle = copy.deepcopy(model).double()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    seq = next(ex.shape[a] for ex, d in zip(inputs, dims) for a, r in d.items() if r == "seq")
    batch = next(ex.shape[a] for ex, d in zip(inputs, dims) for a, r in d.items() if r == "batch")
    runs = {}
    for case, (s, b) in standard_shapes(seq, batch).items():
        feeds = _feeds(inputs, dims, names, s, b, np.random.default_rng(1))
        args = [torch.from_numpy(v).double() if v.dtype.kind == "f" else torch.from_numpy(v) for v in feeds.values()]
        with torch.no_grad():
            expected = oracle(*args)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        try:
            got = session.run(None, feeds)
            wrong = next(((g.shape, e.shape) for g, e in zip(got, expected) if g.shape != tuple(e.shape)), None)
            runs[case] = (f"wrong output shape {list(wrong[0])} where PyTorch gives {list(wrong[1])}" if wrong else
                          max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)))
        except Exception as exc:
            text = str(exc)
            fixed = re.search(r"invalid dimensions for input: (\S+) .*?index: (\d+) Got: (\d+) Expected: (\d+)", text,
                              re.S)
            reshape = re.search(r"requested shape:(\{[^}]*\})", text)
            runs[case] = (f"input {fixed[1]} axis {fixed[2]} fixed to {fixed[4]}" if fixed else
                          f"a Reshape to {reshape[1]} inside the graph" if reshape else
                          text.split("Status Message:")[-1].strip()[:90])
    ops = Counter(n.op_type for n in proto.graph.node)
    return {"ms": statistics.median(times) * 1e3, "nodes": sum(ops.values()), "ops": ops, "runs": runs,
            "shapes": standard_shapes(seq, batch), "repeat_differs": dims_of != repeat, "repeat_dims": repeat,
            "names": [v.name for v in proto.graph.input]}


def main() -> None:
    lines = ["# Whole models: rnnexport.export_model against torch.onnx's exporters", "",
             "*Generated by `python scripts/whole_models_doc.py`; do not edit by hand.*", "",
             f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, Python "
             f"{platform.python_version()}. Each model is exported three ways and run in ONNX Runtime (CPU) at the "
             "example shape and at other shapes; the number is the max |Δ| of every output against the float64 "
             "PyTorch oracle, or what ONNX Runtime said. Export time is the median of 3 exports.", ""]
    failing: dict[str, list[str]] = {e: [] for e in EXPORTERS}
    repeats: list[str] = []
    for name, spec in architectures().items():
        lines += [f"## {name}", "", (type(spec[0]).__doc__ or "").strip(), ""]
        header = None
        for exporter in EXPORTERS:
            found = measure(name, exporter, spec)
            if "error" in found or any(isinstance(v, str) for v in found["runs"].values()):
                failing[exporter].append(name)
            if header is None and "runs" in found:
                header = [f"{c} (seq {s}, batch {b})" for c, (s, b) in found["shapes"].items()]
                lines += ["| exporter | export | nodes | " + " | ".join(header) + " |",
                          "|---|---|---|" + "---|" * len(header)]
            if "error" in found:
                lines.append(f"| {exporter} | {found['error']} | — | " + " | ".join(["—"] * len(header or [])) + " |")
                continue
            if found["repeat_differs"]:
                repeats.append(f"{exporter} on {name}: the third export in the same process declares inputs "
                               + ", ".join(f"{n} {d}" for n, d in zip(found["names"], found["repeat_dims"])))
            recurrent = sum(found["ops"][op] for op in ("GRU", "LSTM", "RNN"))
            cells = [f"{v:.1e}" if isinstance(v, float) else v if v.startswith("wrong") else f"fails: {v}"
                     for v in found["runs"].values()]
            lines.append(f"| {exporter} | {found['ms']:.0f} ms | {found['nodes']} ({recurrent} recurrent, "
                         f"{found['ops'].get('Loop', 0) + found['ops'].get('Scan', 0)} Loop/Scan) | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## What this shows", ""]
    for exporter, names in failing.items():
        lines.append(f"- {exporter}: " + (f"fails or gives wrong shapes at some shape for {', '.join(names)} (see "
                                           "the cells)." if names
                                           else "every model runs at every shape."))
    lines += ["", "The table runs the first export of each model in the process, as a user's script would. Exporting "
              "the same model again in one process does not always give the same graph:", ""]
    lines += [f"- {r}" for r in repeats] or ["- every exporter gave the same input dims on every export."]
    lines += ["", "`export_model` writes each recurrent layer as one ONNX GRU/LSTM/RNN node and leaves the "
              "embedding, convolution and heads to the dynamo exporter; its own graphs are byte-identical across "
              "exports. `dynamo=False` is deprecated in torch 2.13.", ""]
    (ROOT / "docs" / "whole-models.md").write_text("\n".join(lines))
    print("wrote docs/whole-models.md")


if __name__ == "__main__":
    main()
