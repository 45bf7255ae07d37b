"""Deployment variants of an artifact's float32 graph, each its own file beside ``model.onnx``.

- ``fp16-weights``: every float32 initializer stored as float16 and cast back to float32 inside the graph
  (about half the file; every runtime still computes in float32).
- ``int8-dynamic``: ONNX Runtime's dynamic quantization of the recurrent weights (``LSTM`` becomes
  ``com.microsoft:DynamicQuantizeLSTM``, int8 weights, activations quantized per call). ONNX Runtime has
  no such kernel for GRU or RNN: for those cells no variant is written, and the build says so.

    data = make_variant(model, "fp16-weights", cfg.cell)    # bytes, the same for the same model
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnexport.errors import ExportError

# What each variant computes in: the precision name its runners carry and its tolerance is looked up by.
PRECISION = {"fp16-weights": "fp16-weights", "int8-dynamic": "int8"}
FLOAT16_MAX = float(np.finfo(np.float16).max)
QUANTIZED_OP = "DynamicQuantizeLSTM"


def unavailable(kind: str, cell: str) -> str | None:
    """Why ``kind`` cannot be made for a ``cell`` graph, in one sentence, or None."""
    if kind == "int8-dynamic" and cell != "lstm":
        return (f"int8-dynamic: ONNX Runtime's dynamic quantization has no int8 {cell.upper()} kernel "
                "(only LSTM); no variant written")
    return None


def wants_sequence_lens(kind: str, variable_lengths: bool | str) -> bool:
    """int8-dynamic runs on ONNX Runtime only, which honours ``sequence_lens``: a masked ragged LSTM is
    quantized from its ``sequence_lens`` form. The masked form's ±1e4 padding column would set the int8 scale
    of W and round every trained weight to 0 (measured on lstm_dropout_ragged: max |Δ| 2.3 for outputs of 2.2)."""
    return kind == "int8-dynamic" and variable_lengths == "masked"


def source_config(cfg: Any, kind: str) -> Any:
    """The config whose graph the ``kind`` variant is made from: ``cfg`` itself, or its ``sequence_lens``
    form where ``wants_sequence_lens``."""
    return cfg.with_variable_lengths(True) if wants_sequence_lens(kind, cfg.inputs.variable_lengths) else cfg


def make_variant(model: onnx.ModelProto, kind: str, cell: str) -> bytes:
    """The serialized ``kind`` variant of ``model`` (deterministic: the same bytes for the same model)."""
    reason = unavailable(kind, cell)
    if reason:
        raise ExportError(reason)
    if kind == "fp16-weights":
        return fp16_weights(model).SerializeToString()
    return int8_dynamic(model)


def fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its float32 initializers stored as float16 and a ``Cast`` to float32 in front of the
    graph for each, so the rest of the graph is unchanged."""
    variant = onnx.ModelProto()
    variant.CopyFrom(model)
    graph = variant.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        if values.size and float(np.abs(values).max()) > FLOAT16_MAX:
            raise ExportError(f"fp16-weights: initializer {init.name} holds values beyond float16's range "
                              f"(max |w| {float(np.abs(values).max()):.3g} > {FLOAT16_MAX:.0f})")
        kept.append(numpy_helper.from_array(values.astype(np.float16), f"{init.name}_fp16"))
        casts.append(helper.make_node("Cast", [f"{init.name}_fp16"], [init.name], name=f"cast_{init.name}",
                                      to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(variant)
    return variant


def int8_dynamic(model: onnx.ModelProto) -> bytes:
    """ONNX Runtime's ``quantize_dynamic`` of the LSTM nodes (int8 weights); every LSTM must come out as
    ``DynamicQuantizeLSTM``, or nothing is called int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    lstms = sum(n.op_type == "LSTM" for n in model.graph.node)
    with tempfile.TemporaryDirectory(prefix="rnnexport-int8-") as tmp:
        source, target = Path(tmp) / "model.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model.SerializeToString())
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process is for image models
        try:
            quantize_dynamic(source, target, op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(quiet)
        data = target.read_bytes()
    quantized = sum(n.op_type == QUANTIZED_OP for n in onnx.load_from_string(data).graph.node)
    if lstms == 0 or quantized != lstms:
        raise ExportError(f"int8-dynamic: ONNX Runtime quantized {quantized} of {lstms} LSTM nodes; "
                          "no variant written")
    return data


def float16_compute(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` computing in float16 throughout (weights float16, float inputs cast to float16 on entry and
    outputs back to float32 on exit, so callers feed and read float32 as before): the form a GPU runs at half
    precision. Not an artifact variant: verify makes it for ONNX Runtime's CUDA provider."""
    variant = onnx.ModelProto()
    variant.CopyFrom(model)
    graph = variant.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    inputs = {v.name for v in graph.input if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = {v.name for v in graph.output if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    rename = {name: f"{name}_fp16" for name in inputs | outputs}
    for node in graph.node:
        node.input[:] = [rename.get(n, n) if n in inputs else n for n in node.input]
        node.output[:] = [rename.get(n, n) if n in outputs else n for n in node.output]
    for node in graph.node:  # an output that is also read inside the graph is read in float16
        node.input[:] = [rename[n] if n in outputs else n for n in node.input]
        for attr in node.attribute:  # casts to float32 inside the graph (a padding mask) become float16 casts
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    entry = [helper.make_node("Cast", [n], [rename[n]], name=f"to_fp16_{n}", to=TensorProto.FLOAT16)
             for n in sorted(inputs)]
    leave = [helper.make_node("Cast", [rename[n]], [n], name=f"to_fp32_{n}", to=TensorProto.FLOAT)
             for n in sorted(outputs)]
    nodes = entry + list(graph.node) + leave
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(variant)
    return variant

