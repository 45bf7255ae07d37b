"""Checks any ONNX file for what breaks recurrent models in deployment. One ``Finding`` per problem."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import onnx

from .config import ModelConfig
from .contract import RECURRENT_OPS
from .inspection import layer_summary
from .onnx_export import recurrent_nodes

UNROLL_OPS = ("MatMul", "Gemm")
PASS_THROUGH = ("Transpose", "Squeeze", "Unsqueeze", "Identity")


class Finding(NamedTuple):
    level: str  # "error" or "warning"
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.code}: {self.message}"


def lint_model(model: onnx.ModelProto, cfg: ModelConfig | None = None) -> list[Finding]:
    """Everything wrong with ``model`` for deployment; with ``cfg``, also whatever does not match it (cell,
    sizes, layers, directions, bias, batch_first, and the graph's inputs and outputs in contract order)."""
    found = _structure(model, len(expected_nodes(cfg)) if cfg else None)
    layers = layer_summary(model)
    for layer in layers:
        found += _node_findings(layer)
    found += _dynamic_dims(model) + _fixed_reshapes(model)
    if cfg is not None:
        found += against_config(model, layers, cfg)
    return found


CELL_OPS = {"gru": "GRU", "lstm": "LSTM", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


def against_config(model: onnx.ModelProto, layers: list[dict], cfg: ModelConfig) -> list[Finding]:
    """Where the graph does not compute ``cfg``'s network, one finding each."""
    found = [Finding("error", "contract", text) for text in contract_problems(model, cfg)]
    for layer, (width, direction) in zip(layers, expected_nodes(cfg)):
        node = layer["node"] or layer["op"]
        checks = [("cell", layer["op"], CELL_OPS[cfg.cell]), ("hidden_size", layer["hidden_size"], cfg.hidden_size),
                  ("input size", layer["input_size"], width), ("direction", layer["direction"], direction),
                  ("bias", layer["has_bias"], cfg.bias)]
        for what, got, want in checks:
            if got is not None and got != want:
                found.append(Finding("error", "config", f"{node}: {what} {got} where the config has {want}"))
        relu = isinstance(layer["activations"], list) and layer["activations"][0].lower() == "relu"
        if layer["op"] == "RNN" and relu != (cfg.cell == "rnn_relu"):
            found.append(Finding("error", "config", f"{node}: activation {'Relu' if relu else 'Tanh'} where the "
                                                    f"config's cell is {cfg.cell}"))
    return found


def expected_nodes(cfg: ModelConfig) -> list[tuple[int, str]]:
    """(input width, direction) of each recurrent node ``cfg``'s graph has, in order: one node per layer, or in
    a masked ragged graph one forward node per layer and direction (an LSTM's input has the padding flag)."""
    masked = cfg.inputs.variable_lengths == "masked"
    flag = 1 if masked and cfg.cell == "lstm" else 0
    nodes = []
    for layer in range(cfg.num_layers):
        width = (cfg.input_size if layer == 0 else cfg.hidden_size * cfg.num_directions) + flag
        if masked:
            nodes += [(width, "forward")] * cfg.num_directions
        else:
            nodes.append((width, "bidirectional" if cfg.bidirectional else "forward"))
    return nodes


def contract_problems(model: onnx.ModelProto, cfg: ModelConfig) -> list[str]:
    """The graph's inputs and outputs against the README's contract for ``cfg``: names in order, element
    types, ranks, and which axes are the dynamic seq and batch."""
    from .cases import input_names
    from .contract import BATCH, LENGTHS, SEQ, output_names
    from .models import graph_inputs

    problems = []
    expected_in = input_names(cfg)
    found_in = graph_inputs(model)
    if found_in != expected_in:
        problems.append(f"graph inputs {found_in} where the contract has {expected_in}, in that order")
    found_out = [o.name for o in model.graph.output]
    expected_out = list(output_names(cfg.cell == "lstm"))
    if found_out != expected_out:
        problems.append(f"graph outputs {found_out} where the contract has {expected_out}, in that order "
                        "(a caller that takes outputs by position gets the wrong tensor)")
    seq_batch = [BATCH, SEQ] if cfg.batch_first else [SEQ, BATCH]
    state = [None, BATCH, None]
    dims = {"input": seq_batch + [None], "output": seq_batch + [None], LENGTHS: [BATCH]}
    values = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    for name in set(expected_in + expected_out) & set(values):
        tensor = values[name].type.tensor_type
        want_type = onnx.TensorProto.INT32 if name == LENGTHS else onnx.TensorProto.FLOAT
        if tensor.elem_type != want_type:
            problems.append(f"{name}: element type {onnx.TensorProto.DataType.Name(tensor.elem_type)} where the "
                            f"contract has {onnx.TensorProto.DataType.Name(want_type)}")
        want = dims.get(name, state)
        if len(tensor.shape.dim) != len(want):
            problems.append(f"{name}: rank {len(tensor.shape.dim)} where the contract has {len(want)}")
            continue
        for axis, (dim, role) in enumerate(zip(tensor.shape.dim, want)):
            if role and dim.HasField("dim_value"):
                problems.append(f"{name}: axis {axis} ({role}) is fixed to {dim.dim_value}; it must be dynamic")
    return problems


def _structure(model: onnx.ModelProto, num_layers: int | None) -> list[Finding]:
    ops = Counter(n.op_type for n in model.graph.node)
    nodes = recurrent_nodes(model)
    found = []
    for op in ("Loop", "Scan"):
        if ops[op]:
            found.append(Finding("error", "loop", f"{ops[op]} {op} node(s): the recurrence runs as a generic loop, "
                                                  "not ONNX's GRU/LSTM/RNN operator"))
    matmuls = sum(ops[op] for op in UNROLL_OPS)
    if not nodes:
        hint = f" and {matmuls} MatMul/Gemm nodes: the recurrence looks unrolled step by step" if matmuls else ""
        found.append(Finding("error", "no-recurrent-node", f"no GRU, LSTM or RNN node{hint}"))
    elif matmuls > 2 * len(nodes):
        found.append(Finding("warning", "unroll", f"{matmuls} MatMul/Gemm nodes beside {len(nodes)} recurrent "
                                                  "node(s): part of the recurrence may be unrolled"))
    if num_layers is not None and nodes and len(nodes) != num_layers:
        found.append(Finding("error", "layers", f"{len(nodes)} recurrent nodes where the config makes {num_layers} "
                                                "(one per layer, and per direction in masked ragged graphs)"))
    return found


def _node_findings(layer: dict) -> list[Finding]:
    node, found = layer["node"] or layer["op"], []
    if layer["op"] == "GRU" and layer.get("linear_before_reset") != 1:
        found.append(Finding("error", "linear-before-reset", f"{node}: GRU with linear_before_reset=0 computes "
                                                             "another function than PyTorch's GRU (which needs 1)"))
    if layer["layout"] != 0:
        found.append(Finding("error", "layout", f"{node}: layout={layer['layout']}; ONNX Runtime's CPU and CUDA "
                                                "kernels reject layout=1 (use Transpose nodes)"))
    if not _default_activations(layer):
        found.append(Finding("warning", "activations", f"{node}: activations {'/'.join(layer['activations'])}: "
                                                       "non-default activations fall back to CPU on the CUDA provider"))
    if layer.get("sequence_lens") and layer["op_type"] == layer["op"]:  # contrib ops run on ONNX Runtime only
        found.append(Finding("warning", "sequence-lens", f"{node}: takes sequence_lens, which OpenVINO's ONNX frontend "
                                                         "(2026.4, measured) ignores: padded steps are computed and the "
                                                         "final state taken at the padded end; build with "
                                                         '[inputs] variable_lengths = "masked" for a portable graph'))
    acts = layer["activations"]
    if layer["direction"] == "bidirectional" and isinstance(acts, list) and acts[:len(acts) // 2] != acts[len(acts) // 2:]:
        found.append(Finding("warning", "direction-activations", f"{node}: the two directions use different "
                                                                 "activations, which TensorRT's ONNX parser refuses"))
    if not layer["weights_are_initializers"]:
        found.append(Finding("warning", "weights", f"{node}: W/R are not initializers: runtimes cannot prepack "
                                                   "them, and the graph may compute them on every call"))
    return found


DEFAULT_ACTIVATIONS = {"GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"], "RNN": ["tanh"]}


def _default_activations(layer: dict) -> bool:
    """No activations attribute, or one that spells out the operator's defaults (as torch's exporter does)."""
    if layer["activations"] == "default":
        return True
    dirs = 2 if layer["direction"] == "bidirectional" else 1
    return [a.lower() for a in layer["activations"]] == DEFAULT_ACTIVATIONS[layer["op"]] * dirs


def _dynamic_dims(model: onnx.ModelProto) -> list[Finding]:
    """The sequence and batch dims of the inputs should be symbolic: a number fixes the model to one shape."""
    initializers = {i.name for i in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 3:
            continue
        # input: [seq, batch, features] (either order); states: [layers*dirs, batch, hidden]
        axes = (1,) if value.name in ("h0", "c0") or "state" in value.name else (0, 1)
        fixed = [str(dims[i].dim_value) for i in axes if dims[i].HasField("dim_value")]
        if fixed:
            found.append(Finding("error", "static-dims", f"input {value.name}: dims {', '.join(fixed)} are fixed "
                                                         "numbers where seq and batch should be dynamic"))
    return found


def _constants(model: onnx.ModelProto) -> dict[str, list[int]]:
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return {k: v.ravel().tolist() for k, v in values.items() if v.ndim == 1 and v.dtype.kind == "i"}


def _fixed_reshapes(model: onnx.ModelProto) -> list[Finding]:
    """A Reshape of a recurrent node's sequence output to a constant shape with a fixed first (time) dim
    works at the example's sequence length only."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = _constants(model)
    found = []
    for node in model.graph.node:
        shape = constants.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
        if not shape or shape[0] <= 0:
            continue
        tensor = node.input[0]
        source = producers.get(tensor)
        for _ in range(3):  # through a Transpose or Squeeze or two
            if source is None or source.op_type in RECURRENT_OPS or source.op_type not in PASS_THROUGH:
                break
            tensor = source.input[0]
            source = producers.get(tensor)
        if source is not None and source.op_type in RECURRENT_OPS and tensor == source.output[0]:  # Y, not Y_h
            found.append(Finding("error", "static-reshape",
                                 f"{node.name or 'Reshape'}: reshapes the output of {source.name or source.op_type} "
                                 f"to {shape}, fixing the sequence length to {shape[0]}"))
    return found


def lint_path(path: Path, cfg: ModelConfig | None = None) -> list[tuple[Path, list[Finding]]]:
    """``lint_model`` of an ONNX file, or of an artifact folder's model.onnx and every variant beside it."""
    from .artifacts import VARIANT_FILES
    from .models import read_model

    from .variants import wants_sequence_lens

    files = [(path, cfg)]
    if path.is_dir():
        files = [(path / "model.onnx", cfg)]
        for kind, name in VARIANT_FILES.items():
            variant_cfg = cfg
            if cfg and wants_sequence_lens(kind, cfg.inputs.variable_lengths):  # quantized from that form
                variant_cfg = dataclasses.replace(cfg, inputs=dataclasses.replace(cfg.inputs, variable_lengths=True))
            if (path / name).is_file():
                files.append((path / name, variant_cfg))
    return [(file, lint_model(read_model(file)[0], file_cfg)) for file, file_cfg in files]


def has_errors(findings: list[Finding]) -> bool:
    return any(f.level == "error" for f in findings)
