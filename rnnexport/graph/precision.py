"""What a model computes in, read from the file: float16 and bfloat16 recurrent nodes, float16 weights cast to
float32, and quantized graphs (QDQ or dynamic). The names are those ``verification/verdict.py`` keeps a
tolerance for, so a processed file is judged as what it is.

    model_precision(onnx.load("model.onnx"))    # "float32", "f16", "bf16", "fp16-weights" or "int8"
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from rnnexport.contract import recurrent_cell
from rnnexport.graph.checks import bodies
from rnnexport.graph.subgraphs import scopes, shape_inferred

FLOAT32 = "float32"
# Ops that make a graph quantized: QDQ (quantize_static), integer kernels and ONNX Runtime's dynamic ones.
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                 "QLinearMatMul", "QLinearConv")
# Ops whose output holds dims, not values: what the values went through stops mattering there.
VALUE_FREE = ("Shape", "Size")
ELEMENT_PRECISION: dict[int, str] = {onnx.TensorProto.FLOAT16: "f16", onnx.TensorProto.BFLOAT16: "bf16",
                     onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.FLOAT: FLOAT32}
# From the finest to the coarsest: a model with several is judged by its coarsest.
ORDER = ("float64", FLOAT32, "fp16-weights", "f16", "bf16", "int8")


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name → ONNX element type, as far as shape inference and the graph's declarations tell; a
    recurrent node's outputs have the type of its X (the operator's one type T), also in contrib domains
    that shape inference does not know."""
    try:
        inferred = shape_inferred(model).graph
    except Exception:  # onnx raises its own errors for graphs it cannot infer; declarations remain
        inferred = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.input, *inferred.value_info, *inferred.output] if v.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:
        if recurrent_cell(node.domain, node.op_type) and node.input and node.input[0] in types:
            for out in node.output:
                types.setdefault(out, types[node.input[0]])
    return types


def coarsest(*precisions: str) -> str:
    """The coarsest of ``precisions`` (``ORDER``); names outside it count as coarser than all."""
    return max(precisions, key=lambda p: ORDER.index(p) if p in ORDER else len(ORDER))


def model_precision(model: onnx.ModelProto) -> str:
    """What the model's recurrent computation runs in: "int8" when a recurrent node is a quantized kernel
    (``DynamicQuantizeLSTM``) or its inputs, or its outputs on their way to a graph output, went through
    quantize/dequantize or integer kernels (``quantized_path``), else the recurrent nodes' element type ("f16",
    "bf16", "float64"), "fp16-weights" when their W or R is a float16 constant cast to float32, else "float32"."""
    if quantized_path(model):
        return "int8"
    types = element_types(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    found = [FLOAT32]
    for node in model.graph.node:
        if not recurrent_cell(node.domain, node.op_type) or not node.input:
            continue
        found.append(ELEMENT_PRECISION.get(types.get(node.input[0], onnx.TensorProto.FLOAT), FLOAT32))
        for weight in node.input[1:3]:
            cast = producers.get(weight)
            if cast is not None and cast.op_type == "Cast" and types.get(cast.input[0]) == onnx.TensorProto.FLOAT16:
                found.append("fp16-weights")
    return coarsest(*found)


def _quantizing(node: onnx.NodeProto) -> bool:
    return node.op_type in QUANTIZED_OPS or node.op_type.startswith("DynamicQuantize")


def _reads(node: onnx.NodeProto) -> list[str]:
    """What a node's outputs are computed from: its inputs, and for If/Loop/Scan the outputs of its bodies."""
    return [*node.input, *(v.name for _, body in bodies(node) for v in body.output)]


def _upstream(tensors: list[str], producers: dict[str, list[onnx.NodeProto]]) -> set[int]:
    """ids of the nodes whose values reach ``tensors``, in any graph (sibling bodies may each make a tensor of the
    same name). A Shape or Size passes on dims, not values: it is found, and the walk stops there."""
    return _walk(tensors, producers, _reads, count_stops=True)


def _downstream(tensors: list[str], readers: dict[str, list[onnx.NodeProto]]) -> set[int]:
    """ids of the nodes computed from the values of ``tensors`` (a body's output counts as read by its parent
    If/Loop/Scan). The walk stops at a Shape or Size, which is not found: it reads dims, not values."""
    return _walk(tensors, readers, lambda node: [out for out in node.output if out], count_stops=False)


def _walk(tensors: list[str], edges: dict[str, list[onnx.NodeProto]],
          onward: Callable[[onnx.NodeProto], list[str]], count_stops: bool) -> set[int]:
    """ids of the nodes ``edges`` lead to from ``tensors``, going on from each through ``onward(node)`` except at
    ``VALUE_FREE`` ops (found too when ``count_stops``); each tensor is visited once."""
    found: set[int] = set()
    seen: set[str] = set()
    stack = list(tensors)
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        for node in edges.get(tensor, []):
            stops = node.op_type in VALUE_FREE
            if count_stops or not stops:
                found.add(id(node))
            if not stops:
                stack += onward(node)
    return found


def quantized_path(model: onnx.ModelProto) -> list[str]:
    """The quantizing ops (``QUANTIZED_OPS``, ``DynamicQuantize*``) the recurrent computation goes through, by op
    type: a recurrent node that is one, those its X, W, R, B and states are computed from (a QDQ pair before X, a
    DequantizeLinear of int8 weights, through Cast, Reshape or anything else), and those between its outputs and a
    graph output. A quantize/dequantize pair whose result nothing reads, or that reaches neither a recurrent node
    nor, from one, a graph output, does not make the recurrent model int8. Linear in the graph's size."""
    nodes = [node for scope in scopes(model, shapes=False) for node in scope.nodes]
    producers: dict[str, list[onnx.NodeProto]] = {}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for out in node.output:
            producers.setdefault(out, []).append(node)
        for name in _reads(node):
            readers.setdefault(name, []).append(node)
    recurrent = [node for node in nodes if recurrent_cell(node.domain, node.op_type)]
    feeding = _upstream([t for node in recurrent for t in node.input if t], producers)
    live = _upstream([v.name for v in model.graph.output], producers)
    after = _downstream([out for node in recurrent for out in node.output if out], readers)
    on_path = {id(node) for node in recurrent} | feeding | (after & live)
    return sorted({node.op_type for node in nodes if id(node) in on_path and _quantizing(node)})


def precision_words(precision: str) -> str:
    """A sentence on what ``precision`` means for the file, for lint and inspect."""
    return {
        "f16": "the recurrent nodes compute in float16",
        "bf16": "the recurrent nodes compute in bfloat16",
        "fp16-weights": "the weights are stored in float16 and cast to float32",
        "int8": "the graph is quantized (QuantizeLinear/DequantizeLinear nodes or int8 kernels such as "
                "DynamicQuantizeLSTM)",
        "float64": "the recurrent nodes compute in float64",
    }.get(precision, f"the recurrent nodes compute in {precision}")


# rnnexport's masked LSTM graphs carry a padding flag as X's last column, whose W column is ±GATE_SATURATION
# (export/masked.py: 1e4); no trained weight comes near this.
PADDING_WEIGHT = 1e3


def quantized_padding(model: onnx.ModelProto) -> list[str]:
    """A quantized LSTM (``DynamicQuantizeLSTM``, or an ``LSTM`` whose W comes from ``DequantizeLinear``) whose W
    holds the masked graph's padding column: quantized per tensor with it, W's int8 step is ~1e4/127 and every
    trained weight rounds to 0. One sentence per node."""
    found = []
    for scope in scopes(model, shapes=False):
        producers = {out: node for node in scope.nodes for out in node.output}
        for index, node in enumerate(scope.nodes):
            weights = _dequantized_w(node, scope.constants, producers)
            if weights is None:
                continue
            w, input_axis = weights
            columns = np.abs(np.moveaxis(w, input_axis, -1)).reshape(-1, w.shape[input_axis]).max(axis=0)
            padding = [int(k) for k in np.flatnonzero(columns >= PADDING_WEIGHT)]
            if not padding:
                continue
            others = np.delete(np.moveaxis(w, input_axis, -1), padding, axis=-1)
            zeros = float(np.mean(others == 0)) if others.size else 1.0
            found.append(f"{scope.where(node, index)}: W's input column {padding[0]} holds ±{columns[padding[0]]:.3g}, "
                         "the padding column of a masked ragged graph (variable_lengths = \"masked\"); quantized "
                         f"with it, {zeros:.0%} of the other weights round to 0 and the model computes nothing "
                         "like the original: quantize its sequence_lens form instead (rnnexport build --variants "
                         "int8-dynamic does), or keep this graph in float")
    return found


def _dequantized_w(node: onnx.NodeProto, constants: dict[str, np.ndarray],
                   producers: dict[str, onnx.NodeProto]) -> tuple[np.ndarray, int] | None:
    """W of a quantized LSTM in float, with the axis of its input columns; None for anything else."""
    if node.op_type.startswith("DynamicQuantize") and node.op_type.endswith("LSTM") and len(node.input) > 9:
        w, scale, zero = (constants.get(node.input[k]) for k in (1, 8, 9))
        axis = 1  # DynamicQuantizeLSTM's W is [D, input_size, 4H]
    elif recurrent_cell(node.domain, node.op_type) == "LSTM" and len(node.input) > 1 and node.input[1] in producers:
        dq = producers[node.input[1]]
        if dq.op_type != "DequantizeLinear" or len(dq.input) < 2:
            return None
        w, scale = constants.get(dq.input[0]), constants.get(dq.input[1])
        zero = constants.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1)
        axis = 2  # ONNX's LSTM W is [D, 4H, input_size]
    else:
        return None
    if w is None or scale is None or zero is None or w.ndim != 3:
        return None
    if scale.size > 1 and axis == 1:  # per output channel: [D, 4H]
        scale, zero = scale.reshape(w.shape[0], 1, -1), zero.reshape(w.shape[0], 1, -1)
    elif scale.size > 1:
        return None  # a per-axis QDQ scale whose axis would need reading: not checked
    return (w.astype(np.float64) - zero.astype(np.float64)) * scale.astype(np.float64), axis
