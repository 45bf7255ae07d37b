"""A graph's constant tensors as lint reads them: initializers, ``Constant`` nodes in any form, and the small
expressions shapes are built with out of them (Concat, Cast, Unsqueeze, Squeeze, Identity, Gather), folded. A
``Shape`` is not constant: it reads a runtime dim.

    constants = folded_constants(graph.initializer, graph.node, outer={})    # tensor name → numpy value
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

FOLDED_OPS = ("Concat", "Cast", "Unsqueeze", "Squeeze", "Identity", "Gather")
# Elements in a folded value or an operand (but Gather's table): shapes, sizes and indices, never weights.
MAX_FOLDED = 4096


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


def folded_constants(initializers: Any, nodes: Any, outer: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensor name → value for the enclosing scopes' constants (``outer``), ``initializers``, the ``Constant``
    nodes, and every ``FOLDED_OPS`` node of the ONNX domain whose inputs all are constants, in whatever order the
    nodes come: each node is folded once, when its last input becomes known (linear in the number of nodes)."""
    found = dict(outer)  # a subgraph sees its enclosing scopes' constants
    found.update({t.name: numpy_helper.to_array(t) for t in initializers})
    nodes = list(nodes)
    for node in nodes:
        value = constant_value(node)
        if value is not None:
            found[node.output[0]] = value
    waiting: dict[int, int] = {}
    readers: dict[str, list[int]] = {}
    ready = []
    for index, node in enumerate(nodes):
        if node.op_type not in FOLDED_OPS or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        missing = {t for t in node.input if t and t not in found}
        waiting[index] = len(missing)
        for tensor in missing:
            readers.setdefault(tensor, []).append(index)
        if not missing:
            ready.append(index)
    while ready:
        node = nodes[ready.pop()]
        value = _fold(node, [found[t] if t else None for t in node.input])
        if value is None or node.output[0] in found:
            continue
        found[node.output[0]] = value
        for index in readers.get(node.output[0], []):
            waiting[index] -= 1
            if waiting[index] == 0:
                ready.append(index)
    return found


def _fold(node: onnx.NodeProto, values: list[np.ndarray | None]) -> np.ndarray | None:
    """What ``node`` computes from its constant inputs (None: an absent optional input), or None where it is not
    folded: an operand or a result over ``MAX_FOLDED`` elements, or inputs the op refuses."""
    operands = values[1:] if node.op_type == "Gather" else values
    if not values or values[0] is None or any(v is not None and v.size > MAX_FOLDED for v in operands):
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    try:
        with np.errstate(all="ignore"):  # a NaN cast to an integer: ONNX leaves it undefined, so does this
            value = _compute(node.op_type, attrs, values)
    except (ValueError, IndexError, TypeError, KeyError):  # numpy's words for inputs the op refuses
        return None
    return value if value is not None and value.size <= MAX_FOLDED else None


def _compute(op: str, attrs: dict[str, Any], values: list[np.ndarray | None]) -> np.ndarray | None:
    first = values[0]
    assert first is not None  # _fold checked
    if op == "Identity":
        return first
    if op == "Cast":
        return first.astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "Concat":
        parts = [v for v in values if v is not None]
        return np.concatenate(parts, axis=attrs.get("axis", 0)) if len(parts) == len(values) else None
    if op == "Gather":
        return None if len(values) < 2 or values[1] is None else np.take(first, values[1], axis=attrs.get("axis", 0))
    given = values[1] if len(values) > 1 else None  # Squeeze/Unsqueeze axes: an input since opset 13
    axes = [int(a) for a in (given.reshape(-1) if given is not None else attrs.get("axes", []))]
    if op == "Squeeze":
        return np.squeeze(first, axis=tuple(axes)) if axes else np.squeeze(first)
    rank = first.ndim + len(axes)
    return np.expand_dims(first, tuple(sorted(a % rank for a in axes))) if axes else None
