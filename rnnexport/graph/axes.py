"""Where each axis of a node's output comes from: the axis map that role tracing (which graph input axis is a
recurrent node's sequence, batch or feature axis) and the fixed-length rule follow, one op at a time.

    sources = axis_sources(node, out_index, constants, in_ranks, out_rank)
    sources[j].inputs   # ((input index, input axis), ...) that output axis j is made from
    sources[j].fixed    # its size when the node sets it to a number (Reshape to [24, -1, F], Expand, Slice, ...)

Ops not listed return None: a walk stops there (a MatMul, a Shape, anything that computes more than a layout).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import onnx

# Ops that pass a tensor on with the same axes.
SAME_AXES = ("Identity", "Cast", "CastLike", "Relu", "Tanh", "Sigmoid", "Neg", "Abs", "Dropout", "ReverseSequence")
OPEN_END = 2**31 - 1  # a Slice end at or past this reads to the end of the axis (INT_MAX, INT64_MAX)


class AxisSource(NamedTuple):
    """Output axis j of a node: the (input index, input axis) pairs it is made from, and its size when the node
    sets it to a number (``fixed``; None when it follows the input)."""

    inputs: tuple[tuple[int, int], ...]
    fixed: int | None = None


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ints(node: onnx.NodeProto, index: int, attr: str, constants: dict[str, np.ndarray]) -> list[int] | None:
    """An int list given as input ``index`` (a constant) or, in older opsets, as attribute ``attr``."""
    if len(node.input) > index and node.input[index]:
        value = constants.get(node.input[index])
        return None if value is None or value.dtype.kind not in "iu" else [int(v) for v in value.reshape(-1)]
    value = _attrs(node).get(attr)
    return [int(v) for v in value] if isinstance(value, list | tuple) else None


def axis_sources(node: onnx.NodeProto, out_index: int, constants: dict[str, np.ndarray], in_ranks: list[int | None],
                 out_rank: int | None, in_dims: tuple[int | None, ...] | None = None) -> list[AxisSource] | None:
    """For each axis of ``node.output[out_index]``, where it comes from; None for an op not followed or whose
    layout cannot be read (a shape that is not a constant, an unknown rank). ``in_dims``: the first input's sizes
    where known (None for a symbolic one), which place a Reshape's axes."""
    op, attrs = node.op_type, _attrs(node)
    rank = in_ranks[0] if in_ranks else None
    if op in SAME_AXES or (op in ("Conv", "ConvTranspose") and rank):
        n = rank if rank is not None else out_rank
        conv = op in ("Conv", "ConvTranspose")  # batch and spatial axes stay; channels (axis 1) change
        return None if n is None else [AxisSource(() if conv and j == 1 else ((0, j),)) for j in range(n)]
    if op == "Transpose":
        perm = attrs.get("perm") or (list(range(rank))[::-1] if rank else None)
        return None if perm is None else [AxisSource(((0, p),)) for p in perm]
    if op == "Reshape":
        shape = _ints(node, 1, "shape", constants)
        return None if shape is None else _reshape(shape, rank if rank is not None else len(shape), in_dims)
    if op == "Flatten" and rank is not None:
        k = attrs.get("axis", 1) % (rank + 1) if rank else 0
        return [AxisSource(tuple((0, a) for a in range(k))), AxisSource(tuple((0, a) for a in range(k, rank)))]
    if op in ("Squeeze", "Unsqueeze"):
        return _squeeze(node, constants, rank, out_rank)
    if op in ("Split", "Slice", "Tile", "Expand", "ConstantOfShape"):
        return _sized(node, out_index, constants, rank, out_rank)
    return _gathering(node, constants, in_ranks, out_rank)


def _reshape(shape: list[int], rank: int, dims: tuple[int | None, ...] | None = None) -> list[AxisSource]:
    """Reshape's output axes from the input's: first the leading and the trailing ones that keep an input axis
    (a 0 at its index, or the input axis's own known size: [1, batch, 6] to [3, 6] keeps the 6, so the 3 is the
    batch), then the rest aligned from the left, input axes of known size 1 left out (``_aligned``)."""
    known = list(dims) if dims is not None and len(dims) == rank else [None] * rank
    both = min(rank, len(shape))
    head = 0
    while head < both and (shape[head] == 0 or (shape[head] > 0 and shape[head] == known[head])):
        head += 1
    tail = 0
    while tail < both - head and shape[len(shape) - 1 - tail] > 0 and \
            shape[len(shape) - 1 - tail] == known[rank - 1 - tail]:
        tail += 1
    middle = [a for a in range(head, rank - tail) if known[a] != 1]
    return ([AxisSource(((0, j),)) for j in range(head)] + _aligned(shape[head:len(shape) - tail], middle, head)
            + [AxisSource(((0, a),)) for a in range(rank - tail, rank)])


def _aligned(shape: list[int], axes: list[int], offset: int) -> list[AxisSource]:
    """Output axes ``offset``, ``offset + 1``, … (``shape``) aligned with the input ``axes`` from the left: 0 copies
    the axis at its index, -1 takes the input axes the other entries leave, a number replaces one input axis (and
    fixes the size) unless it is a 1 inserted where the output has more axes than the input."""
    found, i, spare = [], 0, max(0, len(shape) - len(axes))
    for j, v in enumerate(shape):
        if v == 0:
            found.append(AxisSource(((0, offset + j),)))
            i = sum(a <= offset + j for a in axes)
        elif v == -1:
            take = max(1, len(axes) - i - (len(shape) - j - 1))
            found.append(AxisSource(tuple((0, a) for a in axes[i:i + take])))
            i += take
        elif v == 1 and spare:
            found.append(AxisSource((), 1))
            spare -= 1
        else:
            found.append(AxisSource(((0, axes[i]),) if i < len(axes) else (), v))
            i += 1
    return found


def _squeeze(node: onnx.NodeProto, constants: dict[str, np.ndarray], rank: int | None,
             out_rank: int | None) -> list[AxisSource] | None:
    axes = _ints(node, 1, "axes", constants)
    if axes is None or rank is None:
        return None
    if node.op_type == "Squeeze":
        gone = {a % rank for a in axes}
        return [AxisSource(((0, a),)) for a in range(rank) if a not in gone]
    size = rank + len(axes)
    added = {a % size for a in axes}
    kept = iter(range(rank))
    return [AxisSource((), 1) if j in added else AxisSource(((0, next(kept)),)) for j in range(size)]


def _sized(node: onnx.NodeProto, out_index: int, constants: dict[str, np.ndarray], rank: int | None,
           out_rank: int | None) -> list[AxisSource] | None:
    """Split, Slice, Tile, Expand, ConstantOfShape: the input's axes, some set to a number by a constant."""
    op, attrs = node.op_type, _attrs(node)
    if op == "ConstantOfShape":
        shape = constants.get(node.input[0]) if node.input else None
        return None if shape is None else [AxisSource((), int(v)) for v in shape.reshape(-1)]
    if op == "Expand":
        shape = constants.get(node.input[1]) if len(node.input) > 1 else None
        if shape is None or rank is None:
            return None
        size = max(rank, len(shape))
        found = []
        for j in range(size):
            a, s = j - (size - rank), j - (size - len(shape))
            v = int(shape[s]) if s >= 0 else 1
            found.append(AxisSource(((0, a),) if a >= 0 and v == 1 else (), v if v != 1 else None))
        return found
    n = rank if rank is not None else out_rank
    if n is None:
        return None
    fixed: dict[int, int] = {}
    if op == "Tile":
        repeats, source = _ints(node, 1, "repeats", constants), constants.get(node.input[0])
        if repeats and source is not None and source.ndim == n:
            fixed = {a: source.shape[a] * r for a, r in enumerate(repeats) if r != 1}
    elif op == "Split":
        axis = attrs.get("axis", 0) % n
        sizes = _ints(node, 1, "split", constants)
        if sizes and out_index < len(sizes):
            fixed = {axis: sizes[out_index]}
    elif op == "Slice":
        fixed = _slice_lengths(node, constants, n)
    return [AxisSource(((0, j),), fixed.get(j)) for j in range(n)]


def _slice_lengths(node: onnx.NodeProto, constants: dict[str, np.ndarray], rank: int) -> dict[int, int]:
    """Axes a Slice cuts to a known number of steps: a start and an end both counted from the axis's start."""
    starts, ends = _ints(node, 1, "starts", constants), _ints(node, 2, "ends", constants)
    axes = _ints(node, 3, "axes", constants) or list(range(len(starts or [])))
    steps = _ints(node, 4, "steps", constants) or [1] * len(axes)
    if starts is None or ends is None:
        return {}
    return {a % rank: (e - s + abs(st) - 1) // abs(st) for s, e, a, st in zip(starts, ends, axes, steps)
            if st > 0 and 0 <= s <= e < OPEN_END}


def _gathering(node: onnx.NodeProto, constants: dict[str, np.ndarray], in_ranks: list[int | None],
               out_rank: int | None) -> list[AxisSource] | None:
    """Gather (an embedding, or rows of a stacked state), Concat along an axis, Where's branches."""
    op, attrs = node.op_type, _attrs(node)
    n = out_rank if out_rank is not None else next((r for r in in_ranks if r is not None), None)
    if n is None:
        return None
    if op == "Gather":
        axis, table = attrs.get("axis", 0), node.input[0] in constants
        indices = constants.get(node.input[1]) if len(node.input) > 1 else None
        if table and axis == 0 and len(in_ranks) > 1 and in_ranks[1] is not None:
            return [AxisSource(((1, j),) if j < in_ranks[1] else ()) for j in range(n)]  # an embedding lookup
        if indices is not None and indices.ndim == 1:
            axis %= n
            return [AxisSource(() if j == axis else ((0, j),), len(indices) if j == axis else None) for j in range(n)]
        return None
    if op == "Concat":
        axis = attrs.get("axis", 0) % n
        return [AxisSource(() if j == axis else tuple((k, j) for k in range(len(node.input)))) for j in range(n)]
    if op == "Where":
        return [AxisSource(((1, j), (2, j))) for j in range(n)]
    return None


def what_it_does(node: onnx.NodeProto, constants: dict[str, np.ndarray], tensor: str) -> str:
    """What the node does to ``tensor`` with its constants, in words: "reshapes x to [24, -1, 3]", …"""
    def value(index: int, attr: str) -> list[int] | None:
        return _ints(node, index, attr, constants)

    op = node.op_type
    if op == "Reshape":
        return f"reshapes {tensor} to {value(1, 'shape')}"
    if op == "Expand":
        return f"expands {tensor} to {value(1, 'shape')}"
    if op == "Tile":
        return f"tiles {tensor} by {value(1, 'repeats')}"
    if op == "ConstantOfShape":
        return f"makes a tensor of the constant shape {value(0, 'shape')}"
    if op == "Split":
        return f"splits {tensor} into the sizes {value(1, 'split')}"
    if op == "Slice":
        return f"slices {tensor} from {value(1, 'starts')} to {value(2, 'ends')}"
    return f"{op} gives {tensor} a constant size"
