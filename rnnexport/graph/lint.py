"""Checks any ONNX file for what breaks recurrent models in deployment. One ``Finding`` per problem."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

from rnnexport.config import ModelConfig
from rnnexport.contract import MODEL_FILE, VARIANT_FILES
from rnnexport.export.variants import source_config
from rnnexport.graph.axes import what_it_does
from rnnexport.graph.inspection import layer_summary
from rnnexport.graph.precision import model_precision, precision_words, quantized_padding
from rnnexport.graph.reader import contract_problems, read_model
from rnnexport.graph.subgraphs import (
    cycles,
    index_ranges,
    input_roles,
    recurrent_sites,
    recurrent_starts,
    scopes,
    walk_back,
    walk_forward,
)
from rnnexport.verification.runners.ort_runner import first_line
from rnnexport.verification.verdict import for_precision

UNROLL_OPS = ("MatMul", "Gemm")


class Finding(NamedTuple):
    level: str  # "error", "warning" or "note" (what the file is, for the reader: its precision)
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.code}: {self.message}"


def lint_model(model: onnx.ModelProto, cfg: ModelConfig | None = None, run: bool | None = False) -> list[Finding]:
    """Everything wrong with ``model`` for deployment, in every graph and subgraph; with ``cfg``, also whatever
    does not match it (cell, sizes, layers, directions, bias, batch_first, and the graph's inputs and outputs
    in contract order); with ``run``, whether ONNX Runtime runs it at other lengths and batch sizes (``None``:
    when its inputs can be synthesised, silently skipped otherwise)."""
    sites = recurrent_sites(model, foreign=True)
    found = _structure(model, [s for s in sites if s.cell], len(expected_nodes(cfg)) if cfg else None)
    found += [Finding("error", "foreign-domain", f"{s.path}: {s.node.domain}:{s.node.op_type} is not ONNX's "
                                                 f"{s.node.op_type} (domain {s.node.domain!r}); ONNX Runtime and "
                                                 "OpenVINO will not run it as one") for s in sites if s.foreign]
    layers = layer_summary(model)
    for layer in layers:
        found += _node_findings(layer)
    cyclic = _cycles(model)
    found += cyclic + _dynamic_dims(model) + _fixed_lengths(model) + _precision(model)
    if run is not False and not cyclic:
        found += run_findings(model, explicit=bool(run))
    if cfg is not None:
        found += against_config(model, [layer for layer in layers if not layer["path"]], cfg)
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


def _structure(model: onnx.ModelProto, sites: list, num_layers: int | None) -> list[Finding]:
    ops = Counter(n.op_type for scope in scopes(model) for n in scope.nodes)
    found = []
    for op in ("Loop", "Scan"):
        if ops[op] and not sites:
            found.append(Finding("error", "loop", f"{ops[op]} {op} node(s): the recurrence runs as a generic loop, "
                                                  "not ONNX's GRU/LSTM/RNN operator"))
    matmuls = sum(ops[op] for op in UNROLL_OPS)
    if not sites:
        hint = f" and {matmuls} MatMul/Gemm nodes: the recurrence looks unrolled step by step" if matmuls else ""
        found.append(Finding("error", "no-recurrent-node", f"no GRU, LSTM or RNN node in any graph or subgraph{hint}"))
    elif matmuls > 2 * len(sites):
        found.append(Finding("warning", "unroll", f"{matmuls} MatMul/Gemm nodes beside {len(sites)} recurrent "
                                                  "node(s): part of the recurrence may be unrolled"))
    main = [s for s in sites if not s.scope.path]
    if num_layers is not None and main and len(main) != num_layers:
        found.append(Finding("error", "layers", f"{len(main)} recurrent nodes where the config makes {num_layers} "
                                                "(one per layer, and per direction in masked ragged graphs)"))
    return found


def _node_findings(layer: dict) -> list[Finding]:
    node, found = layer["where"], []
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
        found.append(Finding("warning", "sequence-lens", f"{node}: takes sequence_lens, which OpenVINO's ONNX "
                             "frontend (2026.4, measured) ignores: padded steps are computed and the final state taken "
                             'at the padded end; build with [inputs] variable_lengths = "masked" for a portable graph'))
    acts = layer["activations"]
    half = len(acts) // 2 if isinstance(acts, list) else 0
    if layer["direction"] == "bidirectional" and isinstance(acts, list) and acts[:half] != acts[half:]:
        found.append(Finding("warning", "direction-activations", f"{node}: the two directions use different "
                                                                 "activations, which TensorRT's ONNX parser refuses"))
    found += _not_in_pytorch(layer)
    if not layer["weights_are_initializers"]:
        found.append(Finding("warning", "weights", f"{node}: W/R are not initializers: runtimes cannot prepack "
                                                   "them, and the graph may compute them on every call"))
    return found


def _not_in_pytorch(layer: dict) -> list[Finding]:
    """ONNX recurrent features PyTorch's modules do not have: a graph using them computes something no
    ``nn.GRU``/``nn.LSTM``/``nn.RNN`` does, like GRU's linear_before_reset=0."""
    node, found = layer["where"], []
    if layer.get("peepholes"):
        found.append(Finding("error", "peepholes", f"{node}: LSTM with peephole weights P; PyTorch's LSTM has none"))
    if layer.get("clip") is not None:
        found.append(Finding("error", "clip", f"{node}: clip={layer['clip']:g} clips the gates' pre-activations; "
                                              "PyTorch does not"))
    if layer.get("input_forget"):
        found.append(Finding("error", "input-forget", f"{node}: input_forget=1 couples the input and forget gates; "
                                                      "PyTorch's LSTM does not"))
    if layer.get("activation_params"):
        found.append(Finding("error", "activation-params", f"{node}: activation_alpha/activation_beta set "
                                                           f"({layer['activation_params']}); PyTorch's activations "
                                                           "take no parameters"))
    if layer["direction"] == "reverse":
        found.append(Finding("error", "reverse", f"{node}: direction=reverse; PyTorch has no reverse-only layer "
                                                 "(only the backward half of a bidirectional one)"))
    return found


DEFAULT_ACTIVATIONS = {"GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"], "RNN": ["tanh"]}


def _default_activations(layer: dict) -> bool:
    """No activations attribute, or one that spells out the operator's defaults (as torch's exporter does)."""
    if layer["activations"] == "default":
        return True
    dirs = 2 if layer["direction"] == "bidirectional" else 1
    return [a.lower() for a in layer["activations"]] == DEFAULT_ACTIVATIONS[layer["op"]] * dirs


def _dynamic_dims(model: onnx.ModelProto) -> list[Finding]:
    """The axes of the graph inputs that reach a recurrent node's sequence and batch axes (followed back through
    Transpose, Reshape and the other ops ``axes.axis_sources`` reads) must be symbolic: a number fixes the model to
    one shape. The axis that reaches its feature axis must be a number: W fixes it. A state's num-directions
    axis is fixed by nature; weights given as inputs have no such axes."""
    found = []
    values = {v.name: v for v in model.graph.input}
    for name, roles in input_roles(next(scopes(model))).items():
        dims = values[name].type.tensor_type.shape.dim
        fixed = [(axis, role, dims[axis].dim_value) for axis, role in sorted(roles.items())
                 if role in ("seq", "batch") and axis < len(dims) and dims[axis].HasField("dim_value")]
        if fixed:
            where = " and ".join(f"axis {axis} ({role})" for axis, role, _ in fixed)
            found.append(Finding("error", "static-dims", f"input {name}: {where} fixed to "
                                                         f"{', '.join(str(v) for *_, v in fixed)}; they must be "
                                                         "dynamic for the model to take other lengths and batches"))
        found += [Finding("error", "dynamic-feature", f"input {name}: axis {axis} is declared dynamic "
                                                      f"({dims[axis].dim_param or 'no size'}) but feeds a recurrent "
                                                      "node's feature axis, whose size W fixes (input_size): the "
                                                      "model runs at that size only")
                  for axis, role in sorted(roles.items())
                  if role == "feature" and axis < len(dims) and not dims[axis].HasField("dim_value")]
    return found


ROLE_WORDS = {"seq": "sequence length", "batch": "batch size"}


def _fixed_lengths(model: onnx.ModelProto) -> list[Finding]:
    """A node (or a constant) anywhere on the path from a graph input to a recurrent node's X, initial_h,
    initial_c or sequence_lens, or from its Y, Y_h or Y_c to a graph output, that sets a sequence or batch axis
    to a number (Reshape to [24, -1, F], Expand of a constant state to a baked batch, Tile, Slice, Split sizes,
    ConstantOfShape): the graph works at that length or batch only."""
    found, said = [], set()
    for scope in scopes(model):
        for fix in walk_back(scope, recurrent_starts(scope)).fixes + walk_forward(scope):
            if (fix.where, fix.role) in said:
                continue
            said.add((fix.where, fix.role))
            fixing = f"fixing the {ROLE_WORDS[fix.role]} to {fix.size}"
            if fix.node is None:
                text = f"{fix.site}'s {fix.slot} is the constant {fix.where}, {fixing}"
            elif fix.downstream:
                output = f"the output of {fix.site}" if fix.slot == "Y" else f"{fix.site}'s {fix.slot}"
                text = f"{fix.where}: {what_it_does(fix.node, scope.constants, output)}, {fixing}"
            else:
                done = what_it_does(fix.node, scope.constants, fix.tensor)
                text = f"{fix.where}: {done} on its way to {fix.site}'s {fix.slot}, {fixing}"
            found.append(Finding("error", "static-reshape", text))
    return found


def _precision(model: onnx.ModelProto) -> list[Finding]:
    """What the file computes in, when not float32 (a note: verify judges it at that precision's tolerance), and a
    quantized masked LSTM whose padding column wipes out its weights (an error)."""
    found = [Finding("error", "quantized-padding", text) for text in quantized_padding(model)]
    precision = model_precision(model)
    if precision != "float32":
        tol = for_precision(precision)
        found.append(Finding("note", "precision", f"{precision_words(precision)}: verify judges it as {precision} "
                                                  f"(atol {tol.atol:g}, rtol {tol.rtol:g} at least)"))
    return found


def _cycles(model: onnx.ModelProto) -> list[Finding]:
    found = []
    for scope in scopes(model):
        names = cycles(scope)
        if names:
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            found.append(Finding("error", "cycle", f"{scope.path or 'the main graph'}: {shown} read each other's "
                                                   "outputs in a cycle; an ONNX graph must be acyclic, and no "
                                                   "runtime loads it"))
    return found


RUN_SHAPES = ((2, 1), (2, 3), (7, 1), (7, 3))  # (seq, batch): neither is likely to be the example's


MAX_FEED_ELEMENTS = 2**26  # per input of lint's run: 256 MiB of float32, far beyond any real fixed dim


def synthesised_feeds(model: onnx.ModelProto, seq: int, batch: int) -> dict[str, np.ndarray] | str:
    """Feeds for every graph input at this sequence length and batch size, from the roles the graph gives them
    (declared fixed sizes are kept); or why they cannot be made (an axis whose size nothing determines)."""
    scope = next(scopes(model))
    roles, ranges = input_roles(scope), index_ranges(scope)
    symbols = {}  # a symbolic dim name shared with an axis of known role has that role (ONNX: same name, same size)
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and roles.get(value.name, {}).get(axis):
                symbols[dim.dim_param] = roles[value.name][axis]
    rng = np.random.default_rng(0)
    shapes, lengths = {}, []
    for value in model.graph.input:
        if value.name in scope.constants:
            continue
        shape = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            role = roles.get(value.name, {}).get(axis) or symbols.get(dim.dim_param)
            if dim.HasField("dim_value"):
                shape.append(dim.dim_value)
            elif role in ("seq", "batch"):
                shape.append(seq if role == "seq" else batch)
            else:
                return (f"input {value.name}: axis {axis} has no fixed size and feeds no recurrent sequence or batch "
                        "axis")
            if role == "seq":
                lengths.append(shape[-1])
        shapes[value.name] = (value.type.tensor_type.elem_type, shape)
        if math.prod(shape) > MAX_FEED_ELEMENTS:
            return (f"input {value.name}: its declared shape {shape} holds {math.prod(shape):,} elements, more "
                    f"than the {MAX_FEED_ELEMENTS:,} lint feeds a run")
    feeds = {}
    for name, (elem_type, shape) in shapes.items():
        integer = elem_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
        if integer and len(shape) == 1 and (roles.get(name) == {0: "batch"} or shape == [batch]):
            feeds[name] = np.full(shape, min(lengths, default=seq),  # full lengths: the longest the input holds
                                  dtype=onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        elif integer and name in ranges:  # indices into an embedding table: below its number of rows
            feeds[name] = rng.integers(0, ranges[name], size=shape).astype(
                onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        elif elem_type == onnx.TensorProto.FLOAT:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            return f"input {name}: {onnx.TensorProto.DataType.Name(elem_type)} with no known meaning"
    return feeds


def run_findings(model: onnx.ModelProto, explicit: bool = False) -> list[Finding]:
    """Run the graph in ONNX Runtime at two sequence lengths and two batch sizes; a failure at any of them is an
    error (a shape fixed inside the graph, an op the runtime refuses). Inputs that cannot be synthesised skip
    the check (with a warning when it was asked for)."""
    import onnxruntime as ort

    feeds = [(seq, batch, synthesised_feeds(model, seq, batch)) for seq, batch in RUN_SHAPES]
    why = next((f for *_, f in feeds if isinstance(f, str)), None)
    if why:
        return [Finding("warning", "run", f"not run: {why}")] if explicit else []
    options = ort.SessionOptions()
    options.log_severity_level, options.intra_op_num_threads = 4, 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's own exception types
        return [Finding("error", "run", f"ONNX Runtime cannot load the model: {first_line(exc)}")]
    for seq, batch, feed in feeds:
        try:
            session.run(None, feed)
        except Exception as exc:
            return [Finding("error", "run", f"ONNX Runtime fails at sequence length {seq}, batch {batch}: "
                                            f"{first_line(exc)}")]
    return []


def lint_path(path: Path, cfg: ModelConfig | None = None, run: bool | None = False) -> list[tuple[Path, list[Finding]]]:
    """``lint_model`` of an ONNX file, or of an artifact folder's model.onnx and every variant beside it."""
    files = [(path, cfg)]
    if path.is_dir():
        files = [(path / MODEL_FILE, cfg)] + [(path / name, cfg and source_config(cfg, kind))
                                                 for kind, name in VARIANT_FILES.items() if (path / name).is_file()]
    return [(file, lint_model(read_model(file)[0], file_cfg, run)) for file, file_cfg in files]


def has_errors(findings: list[Finding]) -> bool:
    return any(f.level == "error" for f in findings)
