"""Splicing native recurrent graphs into a whole model's exported graph: the stand-in node's name, renaming a
subgraph's tensors under a module's path, Squeeze/Unsqueeze at any opset, and restoring topological order.

Initializers keep the module's base path (``encoder/rnn/W_0``), so a module spliced in twice shares them; every
other tensor and node takes the call's prefix (``encoder/rnn/call2/…``).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import onnx
from onnx import helper, numpy_helper

STAND_IN = ("rnnexport", "Recurrent")  # (domain, op type) of the node each recurrent module is exported as


def is_stand_in(node: onnx.NodeProto) -> bool:
    return (node.domain, node.op_type) == STAND_IN


def int_attrs(node: onnx.NodeProto) -> dict[str, int]:
    return {a.name: a.i for a in node.attribute}


def splice(sub: onnx.ModelProto, outer: dict[str, str], base: str, prefix: str
           ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``sub``'s nodes and initializers renamed: a name in ``outer`` (the subgraph's inputs and outputs) becomes the
    outer tensor, an initializer ``base + name``, anything else ``prefix + name``."""
    initializers = {init.name for init in sub.graph.initializer}

    def renamed(name: str) -> str:
        if not name:
            return name
        if name in outer:
            return outer[name]
        return (base if name in initializers else prefix) + name

    nodes = []
    for inner in sub.graph.node:
        inner.input[:] = [renamed(n) for n in inner.input]
        inner.output[:] = [renamed(n) for n in inner.output]
        inner.name = prefix + inner.name
        nodes.append(inner)
    inits = []
    for init in sub.graph.initializer:
        init.name = base + init.name
        inits.append(init)
    return nodes, inits


def axes_node(op: str, source: str, target: str, axes: list[int], opset: int, prefix: str) -> list[onnx.NodeProto]:
    """Squeeze or Unsqueeze of ``axes``: an attribute before opset 13, a constant input from 13 on."""
    name = f"{target.rsplit('/', 1)[-1]}_{op.lower()}"
    if opset < 13:
        return [helper.make_node(op, [source], [target], name=prefix + name, axes=axes)]
    const = prefix + name + "_axes"
    return [helper.make_node("Constant", [], [const], name=const, value=numpy_helper.from_array(
                np.array(axes, np.int64), const)),
            helper.make_node(op, [source, const], [target], name=prefix + name)]


def topological(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes so each comes after the producers of its inputs, keeping the given order where
    it already holds (ONNX requires topological order; a splice may put a node before what feeds it)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output}
    waiting = {k: {i for i in n.input if i not in ready and i in producer} for k, n in enumerate(graph.node)}
    users: dict[int, list[int]] = {}
    for k, needs in waiting.items():
        for name in needs:
            users.setdefault(producer[name], []).append(k)
    queue = deque(sorted(k for k, needs in waiting.items() if not needs))
    blocked = {k: len({producer[n] for n in needs}) for k, needs in waiting.items()}
    order = []
    while queue:
        k = queue.popleft()
        order.append(k)
        for user in sorted(set(users.get(k, []))):
            blocked[user] -= 1
            if blocked[user] == 0:
                queue.append(user)
    nodes = [graph.node[k] for k in order] + [n for k, n in enumerate(graph.node) if k not in set(order)]
    del graph.node[:]
    graph.node.extend(nodes)
