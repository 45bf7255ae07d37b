"""What an ONNX model may hold before anything else reads it: the edge every model crosses once, in
``reader.load_model_bytes``. Behind it, code trusts what it reads.

- Every tensor (initializers, ``Constant`` and other attribute tensors, in every subgraph and function): a
  data type ONNX defines, dims ≥ 0, at most ``MAX_TENSOR_BYTES``, stored data the size its dims declare,
  and external data only at a relative location inside the model's folder.
- Every attribute of an ONNX-domain op of the type its schema declares (``direction`` a string,
  ``activations`` strings, ``clip`` a float, ``hidden_size`` an int), and the recurrent ops' values in the
  ranges the ONNX spec allows (GRU/LSTM/RNN in onnx/defs/rnn/defs.cc).
- Every ONNX-domain node with as many inputs and outputs as its schema allows (a GRU needs X, W and R).
- Declared dims of graph inputs, outputs and value_info ≥ 0 and below 2**31.
- Subgraphs nested at most ``MAX_DEPTH`` deep.

Each problem is an ``ArtifactError`` naming the tensor or node and where it sits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import AttributeProto, TensorProto, defs, helper

from rnnexport.contract import ONNX_DOMAINS, recurrent_cell
from rnnexport.errors import ArtifactError

MAX_DEPTH = 16  # subgraphs inside subgraphs; real models nest a few deep (protobuf stops near 30)
MAX_TENSOR_BYTES = 16 * 2**30  # one tensor, external data included
MAX_DIM = 2**31 - 1  # a declared dim beyond this is no tensor a runtime can hold
PACKED_4BIT = {TensorProto.INT4, TensorProto.UINT4} | ({TensorProto.FLOAT4E2M1} if hasattr(TensorProto, "FLOAT4E2M1")
                                                       else set())
COMPLEX = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}
# The ONNX spec's activation functions for GRU/LSTM/RNN (onnx/defs/rnn/defs.cc).
ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid",
               "Elu", "Softsign", "Softplus")
DIRECTIONS = ("forward", "reverse", "bidirectional")
FLAGS = ("layout", "linear_before_reset", "input_forget")  # 0 or 1


def graphs(model: onnx.ModelProto, source: str) -> list[tuple[str, onnx.GraphProto]]:
    """(path, graph) of the main graph and every subgraph, walked without recursion, at most ``MAX_DEPTH``
    deep. Raises ``ArtifactError`` beyond that."""
    found, todo = [], [("", model.graph, 0)]
    while todo:
        path, graph, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ArtifactError(f"{source}: subgraphs nested more than {MAX_DEPTH} deep (inside node "
                                f"{path.split('/', 1)[0]!r})")
        found.append((path, graph))
        for index, node in enumerate(graph.node):
            todo += [(f"{node_path(path, node, index)}/{name}", sub, depth + 1) for name, sub in bodies(node)]
    return found


def bodies(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) of every subgraph a node holds: If's branches, Loop's and Scan's bodies."""
    return [(attr.name, sub) for attr in node.attribute
            for sub in ([attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs))]


def node_path(path: str, node: onnx.NodeProto, index: int) -> str:
    """``If_0/then_branch/gru``: a node by its name (or op type and index) inside the graph at ``path``."""
    name = node.name or f"{node.op_type}_{index}"
    return f"{path}/{name}" if path else name


def _nodes(model: onnx.ModelProto, source: str) -> Iterator[tuple[str, onnx.NodeProto, bool]]:
    """(where, node, in a model function) of every node of every graph and function."""
    for path, graph in graphs(model, source):
        for index, node in enumerate(graph.node):
            yield node_path(path, node, index), node, False
    for function in model.functions:
        for index, node in enumerate(function.node):
            yield node_path(f"function {function.domain}:{function.name}", node, index), node, True


def tensors(model: onnx.ModelProto, source: str) -> Iterator[tuple[str, TensorProto]]:
    """(label, tensor) of every tensor the model stores, initializers and attribute tensors, everywhere;
    the label names it for messages: ``initializer 'W_0'``, ``tensor 'If_0/then_branch/Constant_0.value'``."""
    for path, graph in graphs(model, source):
        for tensor in [*graph.initializer, *(s.values for s in graph.sparse_initializer)]:
            yield f"initializer {f'{path}/{tensor.name}' if path else tensor.name!r}", tensor
    for where, node, _ in _nodes(model, source):
        for attr in node.attribute:
            held = [attr.t] if attr.type == AttributeProto.TENSOR else list(attr.tensors)
            if attr.type == AttributeProto.SPARSE_TENSOR:
                held = [attr.sparse_tensor.values]
            yield from ((f"tensor {f'{where}.{attr.name}'!r}", t) for t in held)


def check_model(model: onnx.ModelProto, source: str) -> None:
    """Every rule of this module's docstring; raises ``ArtifactError`` at the first problem."""
    for label, tensor in tensors(model, source):
        check_tensor(tensor, f"{source}: {label}")
    opsets = {domain: version for domain, version in ((o.domain or "", o.version) for o in model.opset_import)}
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    for where, node, in_function in _nodes(model, source):
        if node.domain in ONNX_DOMAINS and opset:
            _check_against_schema(node, opset, f"{source}: node {where!r} ({node.op_type})", in_function)
        if recurrent_cell(node.domain, node.op_type):
            _check_recurrent(node, f"{source}: node {where!r} ({node.op_type})")
    for path, graph in graphs(model, source):
        at = f" of {path}" if path else ""
        for kind, values in (("input", graph.input), ("output", graph.output), ("value", graph.value_info)):
            for value in values:
                _check_dims(value, f"{source}: {kind} {value.name!r}{at}")
        _check_single_producers(graph, f"{source}{':' if not path else f': {path}:'}")
        shapes = {t.name: tuple(t.dims) for t in graph.initializer}
        for index, node in enumerate(graph.node):
            if node.domain in ONNX_DOMAINS and node.op_type in GATES:
                _check_weight_shapes(node, shapes, f"{source}: node {node_path(path, node, index)!r} ({node.op_type})")


GATES = {"GRU": 3, "LSTM": 4, "RNN": 1}  # gate blocks stacked in W and R (ONNX spec)


def _check_single_producers(graph: onnx.GraphProto, where: str) -> None:
    """Each tensor name is made once in a graph (ONNX's single assignment): by an initializer, an input or
    one node's output."""
    made = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name and name in made:
                raise ArtifactError(f"{where} tensor {name!r} is made twice (again by node "
                                    f"{node.name or f'{node.op_type}_{index}'!r}); ONNX allows one producer")
            made.add(name)


def _check_weight_shapes(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """W [directions, gates × hidden_size, input] and R [directions, gates × hidden_size, hidden_size], where
    they are initializers, agree with the node's hidden_size and direction (the ONNX spec's shapes)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    hidden, direction = attrs.get("hidden_size"), attrs.get("direction", b"forward")
    directions = 2 if direction == b"bidirectional" else 1
    for slot, name in (("W", node.input[1]), ("R", node.input[2])):
        shape = shapes.get(name)
        if shape is None or hidden is None:
            continue
        want = (directions, GATES[node.op_type] * hidden) + ((hidden,) if slot == "R" else ())
        if len(shape) != 3 or shape[: len(want)] != want:
            raise ArtifactError(f"{what}: {slot} has shape {list(shape)}, but hidden_size {hidden} and direction "
                                f"{direction.decode() if isinstance(direction, bytes) else direction} make "
                                f"[{', '.join(map(str, want))}{', input_size' if slot == 'W' else ''}]")


def check_tensor(tensor: TensorProto, what: str) -> None:
    """A known data type, dims ≥ 0 within ``MAX_TENSOR_BYTES``, and (unless external) stored data the size
    the dims declare. Raises ``ArtifactError``."""
    if tensor.data_type == TensorProto.UNDEFINED or tensor.data_type not in TensorProto.DataType.values():
        raise ArtifactError(f"{what} has data type {tensor.data_type}, which ONNX does not define")
    if any(d < 0 for d in tensor.dims):
        raise ArtifactError(f"{what} has a negative dim: {list(tensor.dims)}")
    declared = math.prod(tensor.dims)
    itemsize = 0 if tensor.data_type == TensorProto.STRING else helper.tensor_dtype_to_np_dtype(
        tensor.data_type).itemsize
    if declared * max(itemsize, 1) > MAX_TENSOR_BYTES:
        raise ArtifactError(f"{what} declares {declared:,} elements (dims {list(tensor.dims)}), more than a "
                            f"model can hold")
    if tensor.data_location == TensorProto.EXTERNAL:
        return
    stored = _stored_elements(tensor, itemsize)
    if stored != declared and not (tensor.data_type in PACKED_4BIT and stored == math.ceil(declared / 2)):
        raise ArtifactError(f"{what} declares {declared:,} elements (dims {list(tensor.dims)}) but holds {stored:,}")


def _stored_elements(tensor: TensorProto, itemsize: int) -> int:
    if tensor.data_type in PACKED_4BIT:  # two values a byte, raw or one per int32_data entry
        return len(tensor.raw_data) if tensor.raw_data else len(tensor.int32_data)
    if tensor.raw_data:
        return len(tensor.raw_data) // itemsize if itemsize else 0
    count = len(getattr(tensor, helper.tensor_dtype_to_field(tensor.data_type)))
    return count // 2 if tensor.data_type in COMPLEX else count


def external_location(tensor: TensorProto, folder: Path, what: str) -> Path:
    """The file an external tensor's data lives in, refused unless it is a relative path inside ``folder``."""
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    target = (folder / location).resolve()
    if not location or Path(location).is_absolute() or not target.is_relative_to(folder.resolve()):
        raise ArtifactError(f"{what} keeps its data at {location!r}, outside the model's folder; only files "
                            "beside the model are read")
    return target


def _check_against_schema(node: onnx.NodeProto, opset: int, what: str, in_function: bool) -> None:
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except defs.SchemaError:
        return  # not an op of this opset: the runtime that loads the model says so
    inputs, outputs = len(node.input), len(node.output)
    if not schema.min_input <= inputs <= schema.max_input:
        raise ArtifactError(f"{what} has {inputs} input(s); the ONNX spec allows {schema.min_input} to "
                            f"{schema.max_input}")
    if not 1 <= outputs <= schema.max_output and not (outputs == 0 and schema.min_output == 0):
        raise ArtifactError(f"{what} has {outputs} output(s); the ONNX spec allows {schema.min_output} to "
                            f"{schema.max_output}")
    for attr in node.attribute:
        declared = schema.attributes.get(attr.name)
        if declared is None or (in_function and attr.ref_attr_name):
            continue
        expected = str(declared.type).rsplit(".", 1)[-1]  # "AttrType.FLOAT": the names AttributeProto uses too
        if attr.type != AttributeProto.AttributeType.Value(expected):
            found = AttributeProto.AttributeType.Name(attr.type) if attr.type in AttributeProto.AttributeType.values() \
                else str(attr.type)
            raise ArtifactError(f"{what}: attribute {attr.name!r} is {found}; the ONNX spec has {expected}")


def _check_recurrent(node: onnx.NodeProto, what: str) -> None:
    """The values the ONNX spec allows for GRU/LSTM/RNN attributes; X, W and R present."""
    if len(node.input) < 3 or not all(node.input[:3]):
        raise ArtifactError(f"{what} lacks one of its inputs X, W and R")
    for attr in node.attribute:
        value = helper.get_attribute_value(attr) if attr.type != AttributeProto.UNDEFINED else None
        bad = {
            "direction": lambda v: not isinstance(v, bytes) or v.decode(errors="replace") not in DIRECTIONS,
            "hidden_size": lambda v: not isinstance(v, int) or not 1 <= v <= MAX_DIM,
            "activations": lambda v: not isinstance(v, list) or any(a.decode(errors="replace") not in ACTIVATIONS
                                                                     for a in v),
            "clip": lambda v: not isinstance(v, float) or not (math.isfinite(v) and v > 0),
        }.get(attr.name, (lambda v: v not in (0, 1)) if attr.name in FLAGS else None)
        if bad is not None and bad(value):
            raise ArtifactError(f"{what}: attribute {attr.name} = {_show(value)} is not allowed by the ONNX spec")


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return repr(value.decode(errors="replace"))
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value[:8]) + (", …" if len(value) > 8 else "") + "]"
    return f"{value!r:.60}"


def _check_dims(value: onnx.ValueInfoProto, what: str) -> None:
    for axis, dim in enumerate(value.type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and not 0 <= dim.dim_value <= MAX_DIM:
            raise ArtifactError(f"{what}: axis {axis} is declared {dim.dim_value}; a dim is 0 to {MAX_DIM}")
