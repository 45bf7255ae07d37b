"""Whole models: any ``nn.Module`` that contains ``nn.GRU``/``nn.LSTM``/``nn.RNN`` layers, exported with those
layers as rnnexport's native subgraphs and everything else by ``torch.onnx.export(dynamo=True)``. Verified by
``verification.whole_model.verify_model`` against PyTorch and the float64 oracle at the standard shapes.

    model = rnnexport.export_model(tagger, (tokens,), dynamic_shapes=({0: "batch", 1: "seq"},),
                                   input_names=["tokens"], output_names=["logits"])
    report = rnnexport.verify_model(tagger, model, (tokens,), dynamic_shapes=({0: "batch", 1: "seq"},))

How: during the export each recurrent module's forward is a stand-in, ``torch.onnx.ops.symbolic_multi_out``,
which the exporter writes as one ``rnnexport::Recurrent`` node whose output shapes stay symbolic. That node is
then replaced by the graph ``export_onnx`` writes for the module (one node per layer, gates reordered in one
place), its tensors renamed under the module's path.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import onnx
import torch
from onnx import helper
from torch import nn

from rnnexport.config import Tolerance
from rnnexport.contract import C0, C_N, H0, H_N, INPUT, LENGTHS, OUTPUT
from rnnexport.errors import ExportError
from rnnexport.export.native import export_onnx

STAND_IN = ("rnnexport", "Recurrent")
RECURRENT = (nn.GRU, nn.LSTM, nn.RNN)


def recurrent_modules(model: nn.Module) -> list[tuple[str, nn.RNNBase]]:
    """(path, module) of every GRU/LSTM/RNN inside ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RECURRENT)]


class Padded:
    """What ``pack_padded_sequence`` returns while ``export_model`` runs: the padded tensor and its lengths, kept
    as they are (a PackedSequence's data has a size that depends on the lengths' values, which no symbolic
    shape can carry); ``pad_packed_sequence`` gives them back. The recurrent stand-in takes the lengths as the
    native graph's ``sequence_lens``."""

    def __init__(self, data: torch.Tensor, lengths: Any, batch_first: bool):
        if not isinstance(lengths, torch.Tensor):
            raise ExportError("export_model: pack_padded_sequence was given lengths as a list; pass a tensor input "
                              "so the lengths stay an input of the graph")
        self.data, self.lengths, self.batch_first = data, lengths, batch_first


def _pack(input: torch.Tensor, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True) -> Padded:
    return Padded(input, lengths, batch_first)


def _unpack(sequence: Padded, batch_first: bool = False, padding_value: float = 0.0,
            total_length: int | None = None) -> tuple[torch.Tensor, Any]:
    if padding_value != 0.0:
        raise ExportError("export_model: pad_packed_sequence with a padding_value other than 0 is not supported")
    data = sequence.data if batch_first == sequence.batch_first else sequence.data.transpose(0, 1)
    return data, sequence.lengths


def _stand_in(index: int) -> Callable:
    def forward(self: nn.RNNBase, x: Any, hx: Any = None) -> Any:
        padded = isinstance(x, Padded)
        data = x.data if padded else x
        if not isinstance(data, torch.Tensor):
            raise ExportError(f"export_model: a {type(self).__name__} fed a {type(x).__name__}; pass a padded tensor, "
                              "or pack it with torch.nn.utils.rnn.pack_padded_sequence inside the model")
        batch_first = x.batch_first if padded else self.batch_first
        dirs = 2 if self.bidirectional else 1
        batch = data.shape[0] if batch_first else data.shape[1]
        state = [self.num_layers * dirs, batch, self.hidden_size]
        shapes = [[data.shape[0], data.shape[1], dirs * self.hidden_size], state] + (
            [state] if self.mode == "LSTM" else [])
        h0, c0 = (hx if isinstance(hx, tuple) else (hx, None))
        lengths = x.lengths.to(data.device) if padded else None
        outs = torch.onnx.ops.symbolic_multi_out(
            f"{STAND_IN[0]}::{STAND_IN[1]}", [data, h0, c0, lengths],
            {"index": index, "batch_first": int(batch_first)}, dtypes=[data.dtype] * len(shapes), shapes=shapes,
            version=1)
        y = Padded(outs[0], x.lengths, batch_first) if padded else outs[0]
        return (y, (outs[1], outs[2])) if self.mode == "LSTM" else (y, outs[1])
    return forward


@contextlib.contextmanager
def _stand_ins(model: nn.Module, modules: list[tuple[str, nn.RNNBase]]) -> Iterator[None]:
    """Each recurrent module's forward replaced by its stand-in, on the instance, and pack_padded_sequence /
    pad_packed_sequence by their pass-through forms (in torch and in the model's own modules, which may have
    imported them by name), for the ``with`` block."""
    import sys

    rnn_utils = torch.nn.utils.rnn
    swaps = {rnn_utils.pack_padded_sequence: _pack, rnn_utils.pad_packed_sequence: _unpack}
    namespaces = [rnn_utils.__dict__] + [vars(sys.modules[type(m).__module__]) for m in model.modules()
                                         if type(m).__module__ in sys.modules]
    patched = []
    for namespace in {id(n): n for n in namespaces}.values():
        for key, value in list(namespace.items()):
            if callable(value) and any(value is original for original in swaps):
                patched.append((namespace, key, value))
                namespace[key] = swaps[value]
    for index, (_, module) in enumerate(modules):
        module.forward = _stand_in(index).__get__(module)
    try:
        yield
    finally:
        for _, module in modules:
            del module.forward
        for namespace, key, value in patched:
            namespace[key] = value


def _dims(dynamic_shapes: Any) -> Any:
    """``{0: "batch"}`` → ``{0: torch.export.Dim("batch")}`` (one Dim per name), nested as given."""
    made: dict[str, Any] = {}

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return made.setdefault(value, torch.export.Dim(value))
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v) for v in value)
        return value
    return convert(dynamic_shapes)


def export_model(model: nn.Module, example_inputs: tuple, *, dynamic_shapes: Any = None,
                 input_names: list[str] | None = None, output_names: list[str] | None = None,
                 opset: int = 18) -> onnx.ModelProto:
    """``model`` as ONNX: its GRU/LSTM/RNN layers as native recurrent nodes (one per layer), the rest by
    ``torch.onnx.export(dynamo=True)``. ``dynamic_shapes`` as torch.export takes them; a dim may be a name
    (``{0: "batch", 1: "seq"}``), one ``Dim`` per name."""
    modules = recurrent_modules(model)
    if not modules:
        raise ExportError("export_model: the model holds no nn.GRU, nn.LSTM or nn.RNN; use torch.onnx.export")
    model = model.eval()
    with _stand_ins(model, modules), _quiet():
        try:
            program = torch.onnx.export(model, tuple(example_inputs), dynamo=True, dynamic_shapes=_dims(dynamic_shapes),
                                        input_names=input_names, output_names=output_names, opset_version=opset,
                                        verbose=False)
        except ExportError:
            raise
        except Exception as exc:  # torch.export's own error types
            raise ExportError(f"export_model: torch.onnx.export failed: {str(exc).splitlines()[0][:300]}") from None
    if program is None:  # not with dynamo=True, which always returns the program
        raise ExportError("export_model: torch.onnx.export returned no ONNX program")
    proto = program.model_proto
    _replace_stand_ins(proto, modules)
    onnx.checker.check_model(proto, full_check=True)
    return proto


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and warnings (torchvision missing, deprecations) stay off stderr."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _replace_stand_ins(proto: onnx.ModelProto, modules: list[tuple[str, nn.RNNBase]]) -> None:
    """Each ``rnnexport::Recurrent`` node → the module's native subgraph, tensors renamed under its path."""
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    nodes: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        if (node.domain, node.op_type) != STAND_IN:
            nodes.append(node)
            continue
        attrs = {a.name: a.i for a in node.attribute}
        path, module = modules[attrs["index"]]
        slots = dict(zip((INPUT, H0, C0, LENGTHS), node.input))
        native = copy.deepcopy(module).float()
        native.batch_first = bool(attrs.get("batch_first", module.batch_first))
        ragged = bool(slots.get(LENGTHS))
        sub = export_onnx(native, opset=max(opset, 11) if ragged else opset, initial_state=bool(slots.get(H0)),
                          variable_lengths="masked" if ragged else False)
        outer = {name: tensor for name, tensor in slots.items() if tensor}
        outer.update(zip((OUTPUT, H_N, C_N), node.output))
        prefix = (path or "rnn").replace(".", "/") + "/"
        if ragged:  # the model's lengths (int64, usually) as the graph's int32 sequence_lens
            nodes.append(helper.make_node("Cast", [slots[LENGTHS]], [prefix + LENGTHS], name=prefix + "lengths_int32",
                                          to=onnx.TensorProto.INT32))
            outer[LENGTHS] = prefix + LENGTHS
        rename = lambda name, outer=outer, prefix=prefix: outer.get(name, prefix + name if name else name)  # noqa: E731
        for inner in sub.graph.node:
            inner.input[:] = [rename(n) for n in inner.input]
            inner.output[:] = [rename(n) for n in inner.output]
            inner.name = prefix + inner.name
            nodes.append(inner)
        for init in sub.graph.initializer:
            init.name = rename(init.name)
            proto.graph.initializer.append(init)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    kept = [o for o in proto.opset_import if o.domain != STAND_IN[0]]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    names = {o for n in nodes for o in n.output}
    kept_info = [v for v in proto.graph.value_info if v.name in names]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept_info)


@dataclass
class WholeModel:
    """What a factory for ``rnnexport export-model pkg.module:factory`` returns: the model, example inputs, and
    the names of their dynamic dims (``"batch"`` and ``"seq"``), inputs and outputs."""

    model: nn.Module
    example_inputs: tuple
    dynamic_shapes: Any = None
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    tolerance: Tolerance | None = None


def load_factory(spec: str) -> WholeModel:
    """``package.module:factory`` → the ``WholeModel`` the factory returns (the current folder is importable)."""
    import importlib
    import os
    import sys

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ExportError(f"{spec!r}: expected package.module:factory")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"{spec}: cannot import: {exc}") from None
    made = factory()
    if not isinstance(made, WholeModel):
        raise ExportError(f"{spec}: the factory returned {type(made).__name__}; expected rnnexport.WholeModel")
    return made
