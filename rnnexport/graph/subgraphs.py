"""Walking ONNX graphs as lint and inspect need them: every subgraph (``If``/``Loop``/``Scan`` bodies and
``model.functions``) with its path, constants folded, and the role of each graph input decided from where
it flows into a recurrent node, not from its name.

    for site in recurrent_sites(model):
        site.path, site.node, site.scope
    roles = input_roles(model.graph)      # graph input → {axis: "seq" | "batch" | "directions" | ...}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from rnnexport.contract import ONNX_DOMAINS, RECURRENT_OPS, recurrent_cell

# Ops that pass a tensor on with the same axes (Transpose permutes them; handled apart).
SAME_AXES = ("Identity", "Cast", "Relu", "Tanh", "Sigmoid", "Neg", "Abs", "Dropout")
# The recurrent operators' inputs, in order; DynamicQuantizeLSTM adds scales and zero points after P.
RECURRENT_INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")


@dataclass
class Scope:
    """One graph or function body: its path (``""`` for the main graph, ``If_0/then_branch`` …), nodes,
    the names of its constant tensors with their values, and its declared inputs."""

    path: str
    nodes: list[onnx.NodeProto]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)

    def where(self, node: onnx.NodeProto, index: int) -> str:
        name = node.name or f"{node.op_type}_{index}"
        return f"{self.path}/{name}" if self.path else name


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


def constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node, whichever attribute holds it (value, value_ints, value_int, …)."""
    if node.op_type != "Constant" or not node.attribute:
        return None
    attr = node.attribute[0]
    value = onnx.helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    if attr.name in ("value_int", "value_ints"):
        return np.array(value, dtype=np.int64)
    if attr.name in ("value_float", "value_floats"):
        return np.array(value, dtype=np.float32)
    return None  # value_string(s), sparse_value: not used as shapes


def _constants(initializers: Any, nodes: Any, outer: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    found = dict(outer)  # a subgraph sees its enclosing scopes' constants
    found.update({t.name: numpy_helper.to_array(t) for t in initializers})
    for node in nodes:
        value = constant_value(node)
        if value is not None:
            found[node.output[0]] = value
    return found


def scopes(model: onnx.ModelProto) -> Iterator[Scope]:
    """The main graph, every subgraph of every node attribute (recursively), and every model function."""
    def walk(graph: onnx.GraphProto, path: str, outer: dict[str, np.ndarray]) -> Iterator[Scope]:
        scope = Scope(path, list(graph.node), _constants(graph.initializer, graph.node, outer), list(graph.input))
        yield scope
        for index, node in enumerate(graph.node):
            for attr in node.attribute:
                subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else (
                    list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else [])
                for sub in subgraphs:
                    yield from walk(sub, f"{scope.where(node, index)}/{attr.name}", scope.constants)

    yield from walk(model.graph, "", {})
    for function in model.functions:
        yield Scope(f"function {function.domain}:{function.name}", list(function.node),
                    _constants([], function.node, {}))


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


def _producers(scope: Scope) -> dict[str, onnx.NodeProto]:
    return {out: node for node in scope.nodes for out in node.output}


def trace_back(scope: Scope, tensor: str, axes: dict[int, str], depth: int = 0) -> tuple[str, dict[int, str]] | None:
    """Follow ``tensor`` back through ops that keep (or permute) the axes with roles to the graph input it comes
    from, carrying the roles along: Transpose, element-wise unary ops, ReverseSequence, Gather and Concat along
    another axis, either branch of Where. None when it comes from anything else (a constant, a computation)."""
    if tensor in {v.name for v in scope.inputs}:
        return tensor, axes
    node = _producers(scope).get(tensor)
    if node is None or node.domain not in ONNX_DOMAINS or depth > 32:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    candidates: list[tuple[str, dict[int, str]]] = []
    if node.op_type == "Transpose" and "perm" in attrs:
        candidates = [(node.input[0], {attrs["perm"][a]: r for a, r in axes.items() if a < len(attrs["perm"])})]
    elif node.op_type in SAME_AXES or node.op_type == "ReverseSequence":
        candidates = [(node.input[0], axes)]
    elif node.op_type == "Gather" and node.input[0] in scope.constants and attrs.get("axis", 0) == 0:
        candidates = [(node.input[1], axes)]  # an embedding: the leading axes are those of the indices
    elif node.op_type == "Gather" and axes.get(attrs.get("axis", 0)) in (None, "directions"):
        indices = scope.constants.get(node.input[1])  # rows of a stacked state: only that axis changes size
        kept = {a: r for a, r in axes.items() if a != attrs.get("axis", 0)}
        candidates = [(node.input[0], kept)] if indices is not None and indices.ndim == 1 else []
    elif node.op_type in ("Conv", "ConvTranspose") and 1 not in axes:
        candidates = [(node.input[0], axes)]  # batch and spatial (time) axes stay; channels change
    elif node.op_type == "Concat" and attrs.get("axis") not in axes and attrs.get("axis", -1) >= 0:
        candidates = [(name, axes) for name in node.input]
    elif node.op_type == "Where":
        candidates = [(node.input[1], axes), (node.input[2], axes)]
    for name, mapped in candidates:
        found = trace_back(scope, name, mapped, depth + 1)
        if found:
            return found
    return None


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


def input_roles(scope: Scope) -> dict[str, dict[int, str]]:
    """For each graph input that flows into a recurrent node: which of its axes are the sequence, the batch and
    a state's num-directions (the roles the recurrent operator gives them), and ``{}`` for weights (W, R, B, P)."""
    roles: dict[str, dict[int, str]] = {}
    for node in scope.nodes:
        # a foreign-domain LSTM still declares the operator's input order: its roles are read the same way
        if not (recurrent_cell(node.domain, node.op_type) or node.op_type in RECURRENT_OPS):
            continue
        batch_major = any(a.name == "layout" and a.i == 1 for a in node.attribute)
        for slot, tensor in zip(RECURRENT_INPUTS, node.input):
            if not tensor:
                continue
            if slot == "X":
                axes = {0: "batch", 1: "seq"} if batch_major else {0: "seq", 1: "batch"}
            elif slot in ("initial_h", "initial_c"):
                axes = {1: "directions", 0: "batch"} if batch_major else {0: "directions", 1: "batch"}
            elif slot == "sequence_lens":
                axes = {0: "batch"}
            else:
                axes = {}
            found = trace_back(scope, tensor, axes)
            if found:
                roles.setdefault(found[0], {}).update(found[1])
    return roles


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count by op type in the main graph, sorted by name."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))
