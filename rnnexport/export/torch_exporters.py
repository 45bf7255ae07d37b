"""PyTorch's own ONNX exporters, as comparison backends: ``torch-dynamo`` (``torch.onnx.export(dynamo=True)``)
and ``torch-script`` (``dynamo=False``, TorchScript-based, deprecated). rnnexport's own writer is ``native``.

Each gets the module wrapped so that its arguments and results carry the graph's names (``input``, ``h0``,
``c0`` → ``output``, ``h_n``, ``c_n``) and the same dynamic ``seq`` and ``batch`` dims are asked for.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import onnx
import torch
from torch import nn

from rnnexport.config import ModelConfig
from rnnexport.contract import EXPORTERS  # noqa: F401 (re-exported)
from rnnexport.errors import ExportError


class _Wrapper(nn.Module):
    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn


class _Plain(_Wrapper):
    def forward(self, input: torch.Tensor):  # noqa: A002 - the graph's input name
        y, final = self.rnn(input)
        return (y, *final) if isinstance(final, tuple) else (y, final)


class _WithH0(_Wrapper):
    def forward(self, input: torch.Tensor, h0: torch.Tensor):  # noqa: A002
        return (*self.rnn(input, h0),)


class _WithH0C0(_Wrapper):
    def forward(self, input: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):  # noqa: A002
        y, (h_n, c_n) = self.rnn(input, (h0, c0))
        return y, h_n, c_n


def _wrapped(module: nn.Module, cfg: ModelConfig) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str], list[str]]:
    """The wrapper, example arguments (seq and batch at least 2, so neither is specialised to 1), and names."""
    if cfg.inputs.variable_lengths:
        reason = "the torch exporters cannot export a sequence_lens input (pack_padded_sequence); use --exporter native"
        raise ExportError(f"{cfg.name}: {reason}", reason=reason)
    seq, batch = max(cfg.example.seq_len, 2), max(cfg.example.batch, 2)
    x = torch.zeros((batch, seq, cfg.input_size) if cfg.batch_first else (seq, batch, cfg.input_size))
    state = torch.zeros(cfg.num_layers * cfg.num_directions, batch, cfg.hidden_size)
    lstm = cfg.cell == "lstm"
    outputs = ["output", "h_n", "c_n"] if lstm else ["output", "h_n"]
    if not cfg.inputs.initial_state:
        return _Plain(module).eval(), (x,), ["input"], outputs
    if lstm:
        return _WithH0C0(module).eval(), (x, state, state.clone()), ["input", "h0", "c0"], outputs
    return _WithH0(module).eval(), (x, state), ["input", "h0"], outputs


@contextlib.contextmanager
def _quiet():
    """The torch exporters print progress and warn about deprecations; keep both out of our output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def torch_export(module: nn.Module, cfg: ModelConfig, exporter: str) -> onnx.ModelProto:
    """Export ``module`` with PyTorch's ``exporter`` ("torch-dynamo" or "torch-script")."""
    wrapper, args, inputs, outputs = _wrapped(module, cfg)
    time_axis, batch_axis = (1, 0) if cfg.batch_first else (0, 1)
    try:
        with _quiet(), torch.no_grad():
            if exporter == "torch-dynamo":
                _require_onnxscript()
                seq, batch = torch.export.Dim("seq"), torch.export.Dim("batch")
                shapes = ({time_axis: seq, batch_axis: batch},) + ({1: batch},) * (len(args) - 1)
                program = torch.onnx.export(wrapper, args, dynamo=True, dynamic_shapes=shapes, input_names=inputs,
                                            output_names=outputs, verbose=False, optimize=True)
                if program is None:  # not with dynamo=True, which always returns the program
                    reason = "torch.onnx.export (torch-dynamo) returned no ONNX program"
                    raise ExportError(f"{cfg.name}: {reason}", reason=reason)
                return program.model_proto
            axes: dict[str, Any] = {"input": {time_axis: "seq", batch_axis: "batch"},
                                    "output": {time_axis: "seq", batch_axis: "batch"}}
            axes.update({n: {1: "batch"} for n in [*inputs[1:], *outputs[1:]]})
            buffer = io.BytesIO()
            # the TorchScript exporter writes to a file object too, which torch's hint (str | PathLike) leaves out
            torch.onnx.export(wrapper, args, buffer, dynamo=False,  # type: ignore[arg-type]
                              input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=cfg.opset)
            return onnx.load_model_from_string(buffer.getvalue())
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many types; say which one failed and why
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        reason = f"torch.onnx.export ({exporter}) failed: {first}"
        raise ExportError(f"{cfg.name}: {reason}", reason=reason) from None


def _require_onnxscript() -> None:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("--exporter torch-dynamo needs onnxscript, a dependency of rnnexport that is missing here: "
                          "pip install onnxscript") from None


def exporter_versions() -> dict[str, str]:
    """Versions of what the torch exporters use, for the manifest."""
    try:
        import onnxscript

        return {"onnxscript": onnxscript.__version__}
    except ImportError:
        return {"onnxscript": "not installed"}
