"""Walking ONNX graphs as lint and inspect need them: every subgraph (``If``/``Loop``/``Scan`` bodies and
``model.functions``) with its path, constants folded, and the role of each graph input decided from where
it flows into a recurrent node, not from its name.

    for site in recurrent_sites(model):
        site.path, site.node, site.scope
    roles = input_roles(model.graph)      # graph input → {axis: "seq" | "batch" | "directions" | ...}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx

from rnnexport.contract import ONNX_DOMAINS, RECURRENT_OPS, recurrent_cell
from rnnexport.graph.axes import axis_sources
from rnnexport.graph.checks import bodies, graphs, node_path
from rnnexport.graph.folding import folded_constants

Dims = tuple[int | None, ...]
# The recurrent operators' inputs, in order; DynamicQuantizeLSTM adds scales and zero points after P.
RECURRENT_INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
# shape_inferred keeps the values of integer tensors, and of real ones up to this size (in float16 at least)
INFERRED_BYTES = 1024
WEIGHT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
VALUE_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


@dataclass
class Scope:
    """One graph or function body: its path (``""`` for the main graph, ``If_0/then_branch`` …), nodes,
    the names of its constant tensors with their values, and its declared inputs."""

    path: str
    nodes: list[onnx.NodeProto]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)  # tensor → rank, where shape inference tells
    dims: dict[str, Dims] = field(default_factory=dict)  # tensor → its sizes where known (None: symbolic)

    def where(self, node: onnx.NodeProto, index: int) -> str:
        return node_path(self.path, node, index)


@dataclass
class Site:
    """A recurrent node (or a node that claims to be one: ``LSTM`` in a foreign domain) in its scope."""

    path: str
    node: onnx.NodeProto
    scope: Scope

    @property
    def cell(self) -> str | None:
        return recurrent_cell(self.node.domain, self.node.op_type)

    @property
    def foreign(self) -> bool:
        """An op named like ONNX's GRU/LSTM/RNN in a domain rnnexport does not know."""
        return self.cell is None and self.node.op_type in RECURRENT_OPS


def scopes(model: onnx.ModelProto, shapes: bool = True) -> Iterator[Scope]:
    """The main graph, every subgraph of every node attribute (recursively), and every model function.
    ``shapes=False``: without ``dims`` and ``ranks``, for a walk that reads nodes and constants only (shape
    inference is most of a walk's cost: 104 ms against 11 ms on lstm_large, 3.0 ms against 0.18 ms on
    lstm_3layer_bidir)."""
    dims = tensor_dims(model) if shapes else {}
    ranks = {name: len(sizes) for name, sizes in dims.items()}

    def walk(graph: onnx.GraphProto, path: str, outer: dict[str, np.ndarray]) -> Iterator[Scope]:
        constants = folded_constants(graph.initializer, graph.node, outer)
        scope = Scope(path, list(graph.node), constants, list(graph.input), ranks, dims)
        yield scope
        for index, node in enumerate(graph.node):
            for name, sub in bodies(node):
                yield from walk(sub, f"{scope.where(node, index)}/{name}", scope.constants)

    yield from walk(model.graph, "", {})
    for function in model.functions:
        yield Scope(f"function {function.domain}:{function.name}", list(function.node),
                    folded_constants([], function.node, {}))


def shape_inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX's shape inference of ``model``, run on a copy whose main graph's floating-point tensors over
    ``INFERRED_BYTES`` (the weights) are left without their values: shapes are decided by integer tensors (a
    Reshape's target, a Split's sizes, a Slice's starts) or small real ones (a Resize's scales). Handing the weights
    to ONNX's C++ and back took 0.11 s of the 0.12 s on lstm_large's 31 MB (measured) and fails beyond protobuf's
    2 GiB. Raises what ``infer_shapes`` raises on a graph it cannot infer."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    tensors = [*light.graph.initializer, *(a.t for n in light.graph.node if n.op_type == "Constant"
                                           for a in n.attribute if a.HasField("t"))]
    for tensor in tensors:
        if tensor.data_type in WEIGHT_TYPES and math.prod(tensor.dims) * 2 > INFERRED_BYTES:
            for values in VALUE_FIELDS:
                tensor.ClearField(values)
    return onnx.shape_inference.infer_shapes(light)


def tensor_dims(model: onnx.ModelProto) -> dict[str, Dims]:
    """Tensor name → its sizes (None where symbolic or unknown), in every graph, as ONNX's shape inference finds
    them (nothing where it cannot run)."""
    try:
        inferred = shape_inferred(model)
    except Exception:  # onnx raises its own errors on graphs it cannot infer: ranks stay unknown there
        return {}
    found: dict[str, Dims] = {}
    for _, graph in graphs(inferred, "the inferred model"):  # nested as deep as the checked model: within bounds
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if value.type.tensor_type.HasField("shape"):
                found[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                          for d in value.type.tensor_type.shape.dim)
    return found


def recurrent_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """ONNX's GRU/LSTM/RNN nodes of the main graph, and the contrib ones rnnexport knows (``recurrent_cell``)."""
    return [n for n in model.graph.node if recurrent_cell(n.domain, n.op_type)]


def recurrent_sites(model: onnx.ModelProto, foreign: bool = False) -> list[Site]:
    """Every recurrent node in every scope, with its path; ``foreign`` adds ops named GRU/LSTM/RNN in
    domains rnnexport does not know (which are not ONNX's)."""
    sites = []
    for scope in scopes(model):
        for index, node in enumerate(scope.nodes):
            site = Site(scope.where(node, index), node, scope)
            if site.cell or (foreign and site.foreign):
                sites.append(site)
    return sites


def _producers(scope: Scope) -> dict[str, tuple[onnx.NodeProto, int]]:
    return {out: (node, k) for node in scope.nodes for k, out in enumerate(node.output)}


class Fix(NamedTuple):
    """A node (or a constant) on a recurrent node's path that sets a sequence or batch axis to a number."""

    where: str  # the node's path, or the constant's name
    node: onnx.NodeProto | None  # None: a constant tensor
    role: str  # "seq" or "batch"
    size: int
    tensor: str  # what it reshapes, expands, …: the tensor it reads (upstream) or the recurrent output (downstream)
    site: str  # the recurrent node's name
    slot: str  # X, initial_h, … (upstream) or Y, Y_h, Y_c (downstream)
    downstream: bool


@dataclass
class Walk:
    """What a walk along the recurrent nodes' paths found: the roles of graph input axes, and every fix."""

    roles: dict[str, dict[int, str]] = field(default_factory=dict)
    fixes: list[Fix] = field(default_factory=list)


FIXABLE = ("seq", "batch")


def _ranks(scope: Scope, extra: dict[str, int] | None) -> dict[str, int]:
    ranks = {**scope.ranks, **(extra or {})}
    ranks.update({v.name: len(v.type.tensor_type.shape.dim) for v in scope.inputs
                  if v.type.tensor_type.HasField("shape")})
    ranks.update({name: value.ndim for name, value in scope.constants.items()})
    for node in scope.nodes:  # a recurrent node's outputs: Y [T, D, B, H] (4), Y_h and Y_c [D, B, H] (3)
        if recurrent_cell(node.domain, node.op_type) or node.op_type in RECURRENT_OPS:
            ranks.update({out: 4 if k == 0 else 3 for k, out in enumerate(node.output) if out})
    return ranks


def _first_dims(scope: Scope, node: onnx.NodeProto) -> Dims | None:
    """The sizes of the node's first input where known: a constant's shape, or what shape inference found."""
    if not node.input:
        return None
    value = scope.constants.get(node.input[0])
    return tuple(value.shape) if value is not None else scope.dims.get(node.input[0])


def walk_back(scope: Scope, starts: list[tuple[str, dict[int, str], str, str]], ranks: dict[str, int] | None = None,
              first: bool = False) -> Walk:
    """From each (tensor, {axis: role}, site, slot) back through the ops ``axes.axis_sources`` reads to the graph
    inputs, carrying the roles; every node that sets a sequence or batch axis to a number (more than 1) on the
    way is a ``Fix``. Each (tensor, roles) is visited once: linear in the graph, cycles included. ``first``:
    stop at the first graph input reached (``trace_back``)."""
    producers, inputs, ranks = _producers(scope), {v.name for v in scope.inputs}, _ranks(scope, ranks)
    found, seen = Walk(), set()
    stack = [(tensor, axes, site, slot) for tensor, axes, site, slot in reversed(starts)]
    while stack:
        tensor, axes, site, slot = stack.pop()
        key = (tensor, tuple(sorted(axes.items())))
        if key in seen:
            continue
        seen.add(key)
        if tensor in inputs and tensor not in scope.constants:
            found.roles.setdefault(tensor, {}).update(axes)
            if first:
                return found
            continue
        if tensor in scope.constants:
            value = scope.constants[tensor]
            found.fixes += [Fix(tensor, None, r, int(value.shape[a]), tensor, site, slot, False)
                            for a, r in axes.items() if r in FIXABLE and a < value.ndim and value.shape[a] > 1]
            continue
        node, out_index = producers.get(tensor, (None, 0))
        if node is None or node.domain not in ONNX_DOMAINS or node.op_type in RECURRENT_OPS:
            continue
        sources = axis_sources(node, out_index, scope.constants, [ranks.get(t) for t in node.input],
                               ranks.get(tensor), _first_dims(scope, node))
        if sources is None:
            continue
        mapped: dict[int, dict[int, str]] = {}
        for axis, role in axes.items():
            if axis >= len(sources):
                continue
            source = sources[axis]
            if source.fixed is not None and role in FIXABLE and source.fixed > 1:
                found.fixes.append(Fix(scope.where(node, scope.nodes.index(node)), node, role, source.fixed,
                                       node.input[0] if node.input else tensor, site, slot, False))
            # the input axis a fixed one is made from keeps its role (x's seq axis, reshaped to 24 steps): the
            # graph input still has the axis, and lint's run feeds it other lengths
            for k, a in source.inputs:
                mapped.setdefault(k, {})[a] = role
        followed = {k for source in sources for k, _ in source.inputs}
        for k in sorted(followed, reverse=True):
            if k < len(node.input) and node.input[k] and (mapped.get(k) or not axes):
                stack.append((node.input[k], mapped.get(k, {}), site, slot))
    return found


def trace_back(scope: Scope, tensor: str, axes: dict[int, str]) -> tuple[str, dict[int, str]] | None:
    """The graph input ``tensor`` comes from, through ops that keep, permute, split, merge or slice the axes with
    roles, and its axes with those roles (``walk_back``); None when it comes from anything else."""
    roles = walk_back(scope, [(tensor, axes, "", "")], first=True).roles
    return next(iter(roles.items()), None)


def index_ranges(scope: Scope) -> dict[str, int]:
    """Graph inputs used as indices into a constant table (an embedding's Gather): input → the table's rows, the
    exclusive upper bound of their values."""
    found: dict[str, int] = {}
    for node in scope.nodes:
        if node.op_type == "Gather" and node.input[0] in scope.constants and len(node.input) > 1:
            source = trace_back(scope, node.input[1], {})
            if source:
                rows = int(scope.constants[node.input[0]].shape[0])
                found[source[0]] = min(rows, found.get(source[0], rows))
    return found


def recurrent_starts(scope: Scope) -> list[tuple[str, dict[int, str], str, str]]:
    """(tensor, {axis: role}, node, slot) for every input of every recurrent node in ``scope`` that has axes with
    roles: X (seq, batch and feature), initial_h/initial_c (directions, batch), sequence_lens (batch). A
    foreign-domain LSTM still declares the operator's input order: its roles are read the same way."""
    starts = []
    for node in scope.nodes:
        if not (recurrent_cell(node.domain, node.op_type) or node.op_type in RECURRENT_OPS):
            continue
        batch_major = any(a.name == "layout" and a.i == 1 for a in node.attribute)
        for slot, tensor in zip(RECURRENT_INPUTS, node.input):
            if not tensor:
                continue
            if slot == "X":
                axes = {0: "batch", 1: "seq"} if batch_major else {0: "seq", 1: "batch"}
                axes[2] = "feature"
            elif slot in ("initial_h", "initial_c"):
                axes = {1: "directions", 0: "batch"} if batch_major else {0: "directions", 1: "batch"}
            elif slot == "sequence_lens":
                axes = {0: "batch"}
            else:
                axes = {}
            starts.append((tensor, axes, node.name or node.op_type, slot))
    return starts


def input_roles(scope: Scope, ranks: dict[str, int] | None = None) -> dict[str, dict[int, str]]:
    """For each graph input that flows into a recurrent node: which of its axes are the sequence, the batch, the
    feature axis (X's last: the node's input_size) and a state's num-directions (the roles the recurrent
    operator gives them), and ``{}`` for weights (W, R, B, P)."""
    return walk_back(scope, recurrent_starts(scope), ranks).roles


def walk_forward(scope: Scope, ranks: dict[str, int] | None = None) -> list[Fix]:
    """From every recurrent node's outputs (Y: seq and batch; Y_h, Y_c: batch) forward through the ops
    ``axes.axis_sources`` reads, every node that sets those axes to a number (more than 1) on the way to the
    graph's outputs. Each (tensor, roles) is visited once."""
    ranks = _ranks(scope, ranks)
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in scope.nodes:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, k))
    stack: list[tuple[str, dict[int, str], onnx.NodeProto, str]] = []
    for node in scope.nodes:
        if recurrent_cell(node.domain, node.op_type):
            batch_major = any(a.name == "layout" and a.i == 1 for a in node.attribute)
            state = {0: "batch"} if batch_major else {1: "batch"}
            roles = [{0: "batch", 1: "seq"} if batch_major else {0: "seq", 2: "batch"}, state, state]
            stack += [(out, axes, node, slot) for out, axes, slot in zip(node.output, roles, ("Y", "Y_h", "Y_c"))
                      if out]
    fixes: list[Fix] = []
    seen = set()
    while stack:
        tensor, axes, site, slot = stack.pop()
        key = (tensor, tuple(sorted(axes.items())))
        if key in seen:
            continue
        seen.add(key)
        for node, k in readers.get(tensor, []):
            if node.domain not in ONNX_DOMAINS or node.op_type in RECURRENT_OPS:
                continue
            for o, out in enumerate(node.output):
                sources = axis_sources(node, o, scope.constants, [ranks.get(t) for t in node.input], ranks.get(out),
                                       _first_dims(scope, node))
                mapped: dict[int, str] = {}
                for j, source in enumerate(sources or []):
                    role = next((axes[a] for i, a in source.inputs if i == k and a in axes), None)
                    if role is None:
                        continue
                    if source.fixed is not None and role in FIXABLE:
                        if source.fixed > 1:
                            fixes.append(Fix(scope.where(node, scope.nodes.index(node)), node, role, source.fixed,
                                             tensor, site.name or site.op_type, slot, True))
                        continue
                    mapped[j] = role
                if mapped and out:
                    stack.append((out, mapped, site, slot))
    return fixes


def cycles(scope: Scope) -> list[str]:
    """Nodes of ``scope`` that depend on their own outputs (a cycle), by name; empty for a proper DAG. Kahn's
    order over the nodes: what it cannot order is on or after a cycle; the nodes named are those on one."""
    producers = _producers(scope)
    needs = {i: {id(producers[t][0]) for t in node.input if t in producers} for i, node in enumerate(scope.nodes)}
    ids = {id(node): i for i, node in enumerate(scope.nodes)}
    needs = {i: {ids[n] for n in deps} for i, deps in needs.items()}
    readers: dict[int, list[int]] = {}
    for i, deps in needs.items():
        for d in deps:
            readers.setdefault(d, []).append(i)
    waiting = {i: len(deps) for i, deps in needs.items()}
    ready = [i for i, n in waiting.items() if n == 0]
    while ready:
        i = ready.pop()
        for r in readers.get(i, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    left = {i for i, n in waiting.items() if n > 0}
    on_cycle = _on_cycle(left, needs)
    return [scope.where(scope.nodes[i], i) for i in sorted(on_cycle)]


def _on_cycle(left: set[int], needs: dict[int, set[int]]) -> set[int]:
    """Of the nodes Kahn's order left, those that reach themselves (the rest only read a cycle's outputs):
    peel off, repeatedly, nodes none of the others read."""
    left = set(left)
    while True:
        read = {d for i in left for d in needs[i] if d in left}
        keep = left & read
        if keep == left:
            return left
        left = keep


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count by op type in the main graph, sorted by name."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))
