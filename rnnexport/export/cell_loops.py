"""Cells stepped in a Python loop over time, recognised as layers.

A model that steps a stack of cells over its sequence (``for t in range(x.shape[1]): h0 = cell0(x[:, t], h0);
h1 = cell1(h0, h1); outs.append(h1)``, then ``torch.stack(outs, 1)``) is exported at its example's length T: the
loop unrolls into T calls of each cell's stand-in. When the unrolled graph has exactly the shape of a stacked
layer, it is folded back into one native recurrent node per cell:

    step t of the first cell reads Gather(S, t, axis a) of one sequence S, t = 0 … T-1
    step t of cell k + 1 reads the output of cell k at step t
    step t of each cell takes the state step t - 1 of the same cell returned
    the per-step outputs are used only as above, by an Unsqueeze → Concat that stacks them in order, and
    (the last step's) by anything else: the final state

Anything else (a head applied inside the loop, teacher forcing, attention over the steps) is refused with the
words of ``refusal``: export one step and loop on the host, or use the layer module.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import onnx
from onnx import helper, numpy_helper
from torch import nn

from rnnexport.contract import C0, C_N, H0, H_N, INPUT, OUTPUT
from rnnexport.errors import ExportError
from rnnexport.export.native import export_onnx
from rnnexport.export.probe import Probe, is_cell, native_layer
from rnnexport.export.splice import axes_node, int_attrs, is_stand_in, splice, topological


def looped_cells(modules: list[tuple[str, nn.Module]], found: Probe) -> list[int]:
    """Indices of the cells the probe saw called more than once in one forward."""
    return [i for i, (_, m) in enumerate(modules) if is_cell(m) and found.calls.get(i, 0) > 1]


def refusal(path: str, module: nn.Module, calls: int, why: str) -> ExportError:
    kind = type(module).__name__
    return ExportError(f"export_model: the {kind} {path} is called {calls} times in one forward (a Python loop over "
                       f"time, say) and {why}, so it is no layer over a sequence: export one step (the cell with its "
                       f"state as inputs and outputs) and loop on the host, or use nn.{kind.removesuffix('Cell')}")


@dataclass
class _Graph:
    """Who produces and who consumes each tensor of a graph, and the constants it holds."""

    graph: onnx.GraphProto

    def __post_init__(self) -> None:
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def length(self, name: str, axis: int) -> int | None:
        """The static size of ``name``'s ``axis`` where the graph records it (inputs and value_info)."""
        for value in (*self.graph.input, *self.graph.value_info, *self.graph.output):
            if value.name == name:
                dims = value.type.tensor_type.shape.dim
                return dims[axis].dim_value if axis < len(dims) and dims[axis].HasField("dim_value") else None
        return None

    def int_constant(self, name: str) -> list[int] | None:
        value = self.constants.get(name)
        return None if value is None or value.dtype.kind not in "iu" else [int(v) for v in value.reshape(-1)]


def fold_cell_loops(proto: onnx.ModelProto, modules: list[tuple[str, nn.Module]], found: Probe,
                    looped: list[int]) -> None:
    """Replace the unrolled steps of every looped cell with native layers (module docstring), or raise the
    ``refusal`` naming the first cell whose steps are not a layer over a sequence."""
    if not looped:
        return
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    g = _Graph(proto.graph)
    steps = {i: [n for n in proto.graph.node if is_stand_in(n) and int_attrs(n)["index"] == i] for i in looped}
    stack = _stack_order(g, modules, steps, found)
    removed: set[int] = set()
    added: list[onnx.NodeProto] = []
    source, axis, gathers = _sequence(g, modules, steps[stack[0]], found)
    x, time_major = source, axis == 0
    if not time_major:
        x = modules[stack[0]][0].replace(".", "/") + "/X_time_major"
        added.append(helper.make_node("Transpose", [source], [x], name=x, perm=[1, 0, 2]))
    for index in stack:
        layer_nodes, x = _layer(g, modules, found, steps[index], index, x, opset)
        added += layer_nodes
        removed.update(id(n) for n in steps[index])
    removed.update(id(n) for n in gathers if all(id(c) in removed for o in n.output for c in g.consumers[o]))
    kept = [n for n in proto.graph.node if id(n) not in removed]
    del proto.graph.node[:]
    proto.graph.node.extend(kept + added)
    _drop_dead(proto.graph)
    topological(proto.graph)


def _stack_order(g: _Graph, modules: list[tuple[str, nn.Module]], steps: dict[int, list[onnx.NodeProto]],
                 found: Probe) -> list[int]:
    """The looped cells from the one that reads the sequence to the last, each reading the one before it."""
    outputs = {n.output[0]: i for i, calls in steps.items() for n in calls}
    feeds = {}
    for i, calls in steps.items():
        path, module = modules[i]
        if len({len(c) for c in steps.values()}) != 1:
            raise refusal(path, module, found.calls[i], "the cells are called different numbers of times")
        sources = {outputs.get(n.input[0]) for n in calls}
        if len(sources) != 1:
            raise refusal(path, module, found.calls[i], "its input is not one cell's output at every step")
        feeds[i] = sources.pop()
    first = [i for i, source in feeds.items() if source is None]
    if len(first) != 1:
        path, module = modules[next(iter(steps))]
        raise refusal(path, module, found.calls[next(iter(steps))], "the looped cells are not one stack")
    order = first
    while len(order) < len(steps):
        following = [i for i, source in feeds.items() if source == order[-1]]
        if len(following) != 1:
            path, module = modules[order[-1]]
            raise refusal(path, module, found.calls[order[-1]], "its output feeds no single next cell")
        order.append(following[0])
    return order


def _sequence(g: _Graph, modules: list[tuple[str, nn.Module]], calls: list[onnx.NodeProto], found: Probe
              ) -> tuple[str, int, list[onnx.NodeProto]]:
    """The sequence S the first cell steps through, the axis (0 or 1) it steps along, and the nodes that read its
    steps: ``Gather(S, t, axis)`` (``x[:, t]``, ``x[t]``), ``Squeeze(Split(S, axis)[t])`` (``x.unbind(1)``,
    ``torch.split``) or ``Squeeze(Slice(S, t, t + 1, axis))`` (``for x_t in x``). Step t must read position t,
    and the loop must cover all of S's axis."""
    path, module = modules[int_attrs(calls[0])["index"]]
    fail = refusal(path, module, len(calls), "step t does not read step t of one sequence")
    reads = [_step_read(g, n.input[0]) for n in calls]
    if any(r is None for r in reads):
        raise fail
    sources = {r[0] for r in reads if r}
    axes = {r[1] for r in reads if r}
    if len(sources) != 1 or len(axes) != 1 or [r[2] for r in reads if r] != list(range(len(calls))) or axes - {0, 1}:
        raise fail
    source, axis = sources.pop(), axes.pop()
    if g.length(source, axis) != len(calls):
        raise refusal(path, module, len(calls), f"the loop does not cover the {g.length(source, axis) or '?'} steps "
                      "of its sequence")
    return source, axis, [n for r in reads if r for n in r[3]]


def _step_read(g: _Graph, name: str) -> tuple[str, int, int, list[onnx.NodeProto]] | None:
    """(S, axis, t, the nodes that read it) when ``name`` is step t of S along axis; None otherwise."""
    node = g.producer.get(name)
    if node is not None and node.op_type == "Gather":
        position = g.int_constant(node.input[1])
        if position is not None and len(position) == 1 and g.constants[node.input[1]].ndim == 0:
            return node.input[0], int_attrs(node).get("axis", 0), position[0], [node]
    if node is not None and node.op_type == "Squeeze":
        split = g.producer.get(node.input[0])
        axes = _axes(g, node)
        if split is not None and split.op_type == "Split" and len(axes) == 1:
            axis = int_attrs(split).get("axis", 0)
            sizes = g.int_constant(split.input[1]) if len(split.input) > 1 and split.input[1] else None
            if axes[0] == axis and (sizes is None or set(sizes) == {1}):
                return split.input[0], axis, list(split.output).index(node.input[0]), [node, split]
        if split is not None and split.op_type == "Slice" and len(axes) == 1 and len(split.input) >= 4:
            starts, ends, slice_axes = (g.int_constant(split.input[k]) for k in (1, 2, 3))
            steps = g.int_constant(split.input[4]) if len(split.input) > 4 and split.input[4] else [1]
            one_step = starts and len(starts) == 1 and ends == [starts[0] + 1] and slice_axes == axes and steps == [1]
            if one_step and starts:  # iterating a tensor: x[t:t + 1].squeeze(axis)
                return split.input[0], axes[0], starts[0], [node, split]
    return None


def _layer(g: _Graph, modules: list[tuple[str, nn.Module]], found: Probe, calls: list[onnx.NodeProto], index: int,
           x: str, opset: int) -> tuple[list[onnx.NodeProto], str]:
    """One cell's T steps as one native layer over ``x`` (time-major); returns its nodes and its output Y (time-major).
    The last step's state outputs become the layer's final state; a stack of its per-step outputs, its Y."""
    path, module = modules[index]
    lstm = isinstance(module, nn.LSTMCell)
    for t, node in enumerate(calls[1:], start=1):
        states = list(node.input[1:3]) if lstm else list(node.input[1:2])
        if states != list(calls[t - 1].output):
            raise refusal(path, module, len(calls), "step t does not take the state step t - 1 returned")
    stacked = _stacked(g, calls, path, module)
    base = path.replace(".", "/") + "/"
    h, c = (list(calls[0].input) + ["", "", ""])[1:3]
    sub = export_onnx(native_layer(module, found.weights[index]), opset=opset, initial_state=bool(h))
    before: list[onnx.NodeProto] = []
    outer = {INPUT: x, OUTPUT: base + "Y"}
    for name, value in ((H0, h), (C0, c)):
        if value:
            before += axes_node("Unsqueeze", value, base + name, [0], opset, base)
            outer[name] = base + name
    after: list[onnx.NodeProto] = []
    for name, value in zip((H_N, C_N), calls[-1].output):
        outer[name] = base + name
        after += axes_node("Squeeze", base + name, value, [0], opset, base)
    if stacked is not None:
        concat, axis = stacked
        after.append(helper.make_node("Transpose", [base + "Y"], [concat.output[0]], name=base + "Y_stacked",
                                      perm=[1, 0, 2]) if axis == 1 else
                     helper.make_node("Identity", [base + "Y"], [concat.output[0]], name=base + "Y_stacked"))
    nodes, inits = splice(sub, outer, base, base)
    g.graph.initializer.extend(inits)
    return before + nodes + after, base + "Y"


def _stacked(g: _Graph, calls: list[onnx.NodeProto], path: str, module: nn.Module
             ) -> tuple[onnx.NodeProto, int] | None:
    """The Concat that stacks the per-step outputs (each through an Unsqueeze on the Concat's axis), in order, and
    its axis, removed from the graph; None when only the last step's outputs are used. Any other use of a step's
    output inside the loop is refused."""
    steps = {id(c) for n in calls for name in n.output for c in g.consumers[name] if is_stand_in(c)}
    per_step = [[c for c in g.consumers[n.output[0]] if id(c) not in steps] for n in calls]
    inside = [c for n in calls[:-1] for name in n.output[1:] for c in g.consumers[name] if id(c) not in steps]
    fail = refusal(path, module, len(calls), "a step's output is used inside the loop, other than to stack it")
    if inside:
        raise fail
    if all(not others for others in per_step[:-1]):
        return None
    unsqueezes = []
    for others in per_step[:-1]:
        if len(others) != 1 or others[0].op_type != "Unsqueeze":
            raise fail
        unsqueezes.append(others[0])
    concats = {id(c): c for u in unsqueezes for c in g.consumers[u.output[0]]}
    stack = next(iter(concats.values())) if len(concats) == 1 else None
    last = [c for c in per_step[-1] if c.op_type == "Unsqueeze" and stack is not None
            and any(k is stack for k in g.consumers[c.output[0]])]
    if len(last) != 1:
        raise fail
    unsqueezes.append(last[0])
    concats = {id(c): c for u in unsqueezes for c in g.consumers[u.output[0]]}
    concat = next(iter(concats.values())) if len(concats) == 1 else None
    if concat is None or concat.op_type != "Concat" or list(concat.input) != [u.output[0] for u in unsqueezes]:
        raise refusal(path, module, len(calls), "its steps' outputs are not stacked in order")
    axis = int_attrs(concat).get("axis", 0)
    if {tuple(_axes(g, u)) for u in unsqueezes} != {(axis,)} or axis not in (0, 1):
        raise refusal(path, module, len(calls), "its steps' outputs are not stacked along time")
    outputs = {o.name for o in g.graph.output}
    g.graph.node.remove(concat)
    for node in unsqueezes:  # one the model also uses elsewhere (h.unsqueeze(0) as h_n, merged with it) stays
        if node.output[0] not in outputs and all(c is concat for c in g.consumers[node.output[0]]):
            g.graph.node.remove(node)
    return concat, axis


def _axes(g: _Graph, node: onnx.NodeProto) -> list[int]:
    """An Unsqueeze's axes: its second input (opset 13 on) or its attribute."""
    if len(node.input) > 1:
        return g.int_constant(node.input[1]) or []
    return [int(v) for a in node.attribute if a.name == "axes" for v in a.ints]


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is used (the unrolled steps' index constants, say), repeatedly, then the
    initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
