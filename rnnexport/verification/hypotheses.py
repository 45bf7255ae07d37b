"""The diagnosis of one failing layer and direction: every export bug rnnexport knows, recomputed in float64, and the
one that fits the node's outputs best, named only when it brings them within the diagnosis tolerance (a float32
tolerance: never the loose one of a reduced precision), else an honest "no known export bug".

Bugs tried: the node's own attributes where they differ from PyTorch's (each activation, ``clip``, ``input_forget``,
``linear_before_reset``) and its peepholes, each common activation at each position, gate blocks of W, R, Wb, Rb
and B permuted, GRU's Wb and Rb exchanged, directions and their weights swapped, a layer run backward in time, the
initial state of another row or none, missing biases, ``sequence_lens`` ignored (only where the graph has it and
the nodes are not masked), a masked LSTM's padding-flag column, a masked backward node's input not reversed; and
when no structural bug fits, the node's own weights read from the graph: "weights differ by ~X%, not a structural
bug".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from rnnexport.config import Tolerance
from rnnexport.contract import GATE_SATURATION, LENGTHS
from rnnexport.export.gates import GATE_ORDER
from rnnexport.verification.recompute import (
    ACTIVATION_DEFAULTS,
    DIRECTIONS,
    GATE_NAMES,
    Cell,
    Reference,
    Weights,
    module_weights,
    run_direction,
)

POSITIONS = {"LSTM": ("f", "g", "h"), "GRU": ("f", "g"), "RNN_TANH": ("f",), "RNN_RELU": ("f",)}
# ONNX's activations where a node has no ``activations`` attribute (an RNN's Tanh also for PyTorch's ReLU RNN)
ONNX_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN_TANH": ("Tanh",),
                    "RNN_RELU": ("Tanh",)}
USES_ALPHA = ("Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu")
USES_BETA = ("Affine", "ScaledTanh", "HardSigmoid")
# Weights that differ from the module's by at most this share of their largest value are a perturbation (a
# rounding, a scale); beyond it the difference is no known bug, said with the share.
PERTURBATION = 0.2
COMMON_ACTIVATIONS = ("Sigmoid", "Tanh", "Relu", "HardSigmoid")  # tried at every position, whatever the node says
SAME_WEIGHTS = 1e-6  # below this share, a tensor is the module's (float32 rounding of a dequantized int8 weight)
# (tensors permuted together, their name in the diagnosis)
GROUPS = ((("W", "R", "Wb", "Rb"), "W, R and B"), (("W",), "W"), (("R",), "R"), (("Wb", "Rb"), "B"), (("Wb",), "Wb"),
          (("Rb",), "Rb"))


@dataclass(frozen=True)
class Site:
    """One failing layer and direction: the module, PyTorch's reference, the node that computes it (``slot``: the
    direction's index in it), whether the graph is a masked ragged one, and the model it is in."""

    module: Any
    ref: Reference
    layer: int
    direction: int
    node: onnx.NodeProto
    slot: int
    masked: bool
    model: onnx.ModelProto

    @property
    def row(self) -> int:
        return self.layer * (2 if self.module.bidirectional else 1) + self.direction


@dataclass(frozen=True)
class Change:
    """How a hypothesis recomputes the site: the weights, the cell, the time order, the initial state row (None:
    zeros) and whether every row runs every step."""

    weights: Weights
    cell: Cell
    reverse: bool
    state_row: int | None
    full_length: bool = False
    states_exchanged: bool = False  # initial_h and initial_c in each other's place
    unreversed_input: bool = False  # a masked graph's backward node fed X as it is, not reversed within lengths
    flag: np.ndarray | None = None  # a masked LSTM's padding-flag column of W [4H], PyTorch's order (None: the graph's
    # contract, ±GATE_SATURATION)


def _onnx_to_torch(a: np.ndarray, mode: str) -> np.ndarray:
    """Gate blocks in ONNX's order (first axis) back in PyTorch's."""
    order = GATE_ORDER[mode]
    blocks = np.split(a, len(order))
    torch_blocks: list[np.ndarray] = [blocks[0]] * len(order)
    for onnx_index, torch_index in enumerate(order):
        torch_blocks[torch_index] = blocks[onnx_index]
    return np.concatenate(torch_blocks)


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """An initializer, or one cast to float32 (fp16-weights), in float64."""
    found = {t.name: t for t in model.graph.initializer}
    if name in found:
        return numpy_helper.to_array(found[name]).astype(np.float64)
    cast = next((n for n in model.graph.node if n.op_type == "Cast" and list(n.output) == [name]), None)
    if cast is not None and cast.input[0] in found:
        return numpy_helper.to_array(found[cast.input[0]]).astype(np.float64)
    return None


def graph_weights(site: Site) -> Weights | None:
    """The node's own W, R and B for the site's direction, in PyTorch's gate order (a DynamicQuantizeLSTM's
    dequantized; a masked LSTM's padding column left out), or None where they are not constants."""
    node, mode = site.node, site.module.mode
    inputs = list(node.input) + [""] * 12
    w, r = _constant(site.model, inputs[1]), _constant(site.model, inputs[2])
    b = _constant(site.model, inputs[3]) if inputs[3] else None
    if w is None or r is None or (inputs[3] and b is None):
        return None
    if node.op_type == "DynamicQuantizeLSTM":
        scales = [_constant(site.model, inputs[k]) for k in (8, 9, 10, 11)]
        if any(s is None for s in scales):
            return None
        # per direction [D] or per output channel [D, 4H]: either broadcasts as [D, 1, 1 or 4H]
        w_scale, w_zero, r_scale, r_zero = (np.asarray(s).reshape(w.shape[0], 1, -1) for s in scales)
        w = ((w - w_zero) * w_scale).transpose(0, 2, 1)
        r = ((r - r_zero) * r_scale).transpose(0, 2, 1)
    slot = site.slot
    w_ih = w[slot]
    if site.masked and mode == "LSTM" and w_ih.shape[1] == site.ref.inputs[site.layer].shape[2] + 1:
        w_ih = w_ih[:, :-1]  # the padding flag's column
    gates = len(GATE_NAMES[mode]) * site.module.hidden_size
    biases = b[slot] if b is not None else np.zeros(2 * gates)
    return Weights(_onnx_to_torch(w_ih, mode), _onnx_to_torch(r[slot], mode), _onnx_to_torch(biases[:gates], mode),
                   _onnx_to_torch(biases[gates:], mode))


def node_cell(node: onnx.NodeProto, mode: str, slot: int) -> Cell:
    """What ``node`` computes for its direction ``slot``: its activations (with their alpha and beta, consumed in
    order by the activations that take them), clip, input_forget and linear_before_reset; ONNX's defaults where an
    attribute is absent. ``ValueError`` for an activation ONNX does not define."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    count = len(POSITIONS[mode])
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in attrs.get("activations", [])]
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    acts = []
    for name in names:
        if name not in ACTIVATION_DEFAULTS:
            raise ValueError(f"activation {name!r} is not one of ONNX's")
        alpha, beta = ACTIVATION_DEFAULTS[name]
        alpha = alphas.pop(0) if name in USES_ALPHA and alphas else alpha
        beta = betas.pop(0) if name in USES_BETA and betas else beta
        acts.append((name, float(alpha), float(beta)))
    mine = acts[slot * count:(slot + 1) * count] if len(acts) >= (slot + 1) * count else acts[:count]
    if len(mine) != count:
        mine = [(name, *ACTIVATION_DEFAULTS[name]) for name in ONNX_ACTIVATIONS[mode]]
    return Cell(tuple(mine), float(attrs["clip"]) if "clip" in attrs else None, bool(attrs.get("input_forget", 0)),
                bool(attrs.get("linear_before_reset", 0)) if mode == "GRU" else True)


def _activation_words(mode: str, position: int, got: tuple[str, float, float], want: tuple[str, float, float]) -> str:
    def name(a: tuple[str, float, float]) -> str:
        return a[0] if a[1:] == ACTIVATION_DEFAULTS.get(a[0], a[1:]) else f"{a[0]}(alpha={a[1]:g}, beta={a[2]:g})"
    if mode.startswith("RNN_"):
        return f"activation {name(got).lower()} where the module uses {name(want).lower()}"
    return f"activation {POSITIONS[mode][position]} is {name(got)} where PyTorch's {mode} uses {name(want)}"


def cell_hypotheses(site: Site, base: Change) -> list[tuple[str, Change]]:
    """The node's attributes where they differ from PyTorch's, one at a time, then all together; then each common
    activation at each position (a runtime that computes another than the node names: tract's RNN)."""
    mode = site.module.mode
    mine, torch_cell = node_cell(site.node, mode, site.slot), Cell.torch(mode)
    found = [(_activation_words(mode, k, got, want), torch_cell.with_activation(k, got))
             for k, (got, want) in enumerate(zip(mine.activations, torch_cell.activations)) if got != want]
    if mine.clip is not None:
        found.append((f"clip = {mine.clip:g}: the activations' inputs are clipped to ±{mine.clip:g}, PyTorch's are "
                      "not", replace(torch_cell, clip=mine.clip)))
    if mine.input_forget and mode == "LSTM":
        found.append(("input_forget = 1: the forget gate is 1 − the input gate, PyTorch's LSTM has its own",
                      replace(torch_cell, input_forget=True)))
    if mode == "GRU" and not mine.linear_before_reset:
        found.append(("linear_before_reset=0 (PyTorch's GRU needs 1)", replace(torch_cell, linear_before_reset=False)))
    if len(found) > 1:
        found.append(("; ".join(words for words, _ in found), mine))
    said = {words for words, _ in found}
    for k, want in enumerate(torch_cell.activations):  # what a runtime may compute whatever the node says
        for name in COMMON_ACTIVATIONS:
            got = (name, *ACTIVATION_DEFAULTS[name])
            if name != want[0] and (words := _activation_words(mode, k, got, want)) not in said:
                found.append((words, torch_cell.with_activation(k, got)))
    changes = [(words, replace(base, cell=cell)) for words, cell in found]
    peepholes = _constant(site.model, site.node.input[7]) if len(site.node.input) > 7 and site.node.input[7] else None
    if mode == "LSTM" and peepholes is not None and np.any(peepholes[site.slot]):
        changes.append(("peepholes: the node has a P input, PyTorch's LSTM has none",
                        replace(base, weights=replace(base.weights, peepholes=peepholes[site.slot]))))
    return changes


def _gate_words(mode: str, perm: tuple[int, ...]) -> str:
    names = GATE_NAMES[mode]
    moved = [k for k in range(len(perm)) if perm[k] != k]
    if len(moved) == 2:
        return f"gate blocks {names[moved[0]]} and {names[moved[1]]} swapped"
    return f"gate blocks in the order {', '.join(names[k] for k in perm)} instead of {', '.join(names)}"


def weight_hypotheses(site: Site, base: Change) -> list[tuple[str, Change]]:
    """Gate blocks permuted in each group of tensors, GRU's Wb and Rb exchanged, and the biases missing."""
    module, w = site.module, base.weights
    gates = len(GATE_NAMES[module.mode])
    found = []
    for which, label in GROUPS:
        if not module.bias and any(t.endswith("b") for t in which):
            continue
        found += [(f"{label} {_gate_words(module.mode, p)}", replace(base, weights=w.permuted(which, p)))
                  for p in itertools.permutations(range(gates)) if p != tuple(range(gates))]
    if module.bias:
        if module.mode == "GRU":
            found.append(("Wb and Rb exchanged (B's two halves in the wrong order)",
                          replace(base, weights=Weights(w.w_ih, w.w_hh, w.b_hh, w.b_ih))))
        zeros = np.zeros_like(w.b_ih)
        found.append(("the biases are missing", replace(base, weights=Weights(w.w_ih, w.w_hh, zeros, zeros))))
    return found


def order_hypotheses(site: Site, base: Change) -> list[tuple[str, Change]]:
    """Directions, time order, initial states and lengths."""
    module, ref = site.module, site.ref
    dirs = 2 if module.bidirectional else 1
    found = []
    if dirs == 2:
        other = 1 - site.direction
        other_weights = module_weights(module, site.layer, other)
        other_row = site.row - site.direction + other
        found.append(("directions swapped: this direction's output is the other direction's",
                      replace(base, weights=other_weights, reverse=other == 1, state_row=other_row)))
        found.append(("directions' weights swapped: this direction runs with the other direction's W, R and B",
                      replace(base, weights=other_weights)))
    else:
        found.append(("the layer runs backward in time (direction = \"reverse\")", replace(base, reverse=True)))
    if ref.given_state:
        found.append(("the initial state is ignored (zeros used)", replace(base, state_row=None)))
        found += [(f"the initial state of row {k} (layer {k // dirs}, {DIRECTIONS[k % dirs]}) is used",
                   replace(base, state_row=k)) for k in range(module.num_layers * dirs) if k != site.row]
        if module.mode == "LSTM":
            found.append(("initial_h and initial_c exchanged (h0 read as c0 and c0 as h0)",
                          replace(base, states_exchanged=True)))
    if site.masked and site.direction == 1:
        found.append(("the backward direction's input is not reversed within each row's length (the masked graph's "
                      "reversal before the node)", replace(base, unreversed_input=True)))
    takes_lengths = any(i.name == LENGTHS for i in site.model.graph.input)  # a masked graph's nodes never do
    if takes_lengths and not site.masked and (ref.lengths < ref.inputs[0].shape[0]).any():
        found.append(("sequence_lens is not honoured (every row runs all steps)", replace(base, full_length=True)))
    return found


def _within_lengths(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``x`` [T, B, F] with each row reversed within its length (its own inverse)."""
    out = x.copy()
    for b, length in enumerate(lengths):
        out[:length, b] = x[:length, b][::-1]
    return out


def _masked_node(site: Site, change: Change, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """A masked graph's node as the graph runs it (export/masked.py): every step, over X reversed within each row's
    length for a backward direction (its Y read back in true order, as localisation reads it), and for an LSTM the
    padding flag appended to X with its W column."""
    ref, w, hidden = site.ref, change.weights, site.module.hidden_size
    reversed_input = change.reverse and not change.unreversed_input
    x = _within_lengths(ref.inputs[site.layer], ref.lengths) if reversed_input else ref.inputs[site.layer]
    steps = x.shape[0]
    if site.module.mode == "LSTM":
        pad = (np.arange(steps)[:, None] >= ref.lengths[None, :]).astype(np.float64)[..., None]
        flag = change.flag
        if flag is None:  # PyTorch's order i, f, g, o: the input gate shut, the forget gate open
            flag = np.concatenate([np.full(hidden, -GATE_SATURATION), np.full(hidden, GATE_SATURATION),
                                   np.zeros(2 * hidden)])
        x, w = np.concatenate([x, pad], axis=2), replace(w, w_ih=np.concatenate([w.w_ih, flag[:, None]], axis=1))
    y, h_n, c_n = run_direction(site.module.mode, x, w, h, c, np.full_like(ref.lengths, steps), False, change.cell)
    return (_within_lengths(y, ref.lengths) if site.direction == 1 else y), h_n, c_n


def recompute(site: Site, change: Change) -> dict[str, np.ndarray]:
    """Y (valid steps), Y_h and Y_c of the site under ``change``."""
    ref = site.ref
    zeros = np.zeros_like(ref.h0[0])
    h = ref.h0[change.state_row] if change.state_row is not None else zeros
    c = ref.c0[change.state_row] if change.state_row is not None else zeros
    h, c = (c, h) if change.states_exchanged else (h, c)
    steps = ref.inputs[site.layer].shape[0]
    if site.masked:
        y, h_n, c_n = _masked_node(site, change, h, c)
    else:
        lengths = np.full_like(ref.lengths, steps) if change.full_length else ref.lengths
        y, h_n, c_n = run_direction(site.module.mode, ref.inputs[site.layer], change.weights, h, c, lengths,
                                    change.reverse, change.cell)
    valid = (np.arange(steps)[:, None] < ref.lengths[None, :])[..., None]
    return {"Y": np.where(valid, y, 0.0), "Y_h": h_n, "Y_c": c_n}


def flag_hypotheses(site: Site, base: Change) -> list[tuple[str, Change]]:
    """A masked LSTM's padding-flag column as the graph holds it, where it is not ±GATE_SATURATION."""
    if not (site.masked and site.module.mode == "LSTM"):
        return []
    w = _constant(site.model, site.node.input[1])
    if w is None or w.shape[2] != site.ref.inputs[site.layer].shape[2] + 1:
        return []
    column = _onnx_to_torch(w[site.slot][:, -1], "LSTM")
    hidden = site.module.hidden_size
    if np.array_equal(column[:2 * hidden], np.repeat([-GATE_SATURATION, GATE_SATURATION], hidden)):
        return []
    return [(f"the padding flag's W column holds up to ±{float(np.abs(column).max()):.3g} where the masked graph "
             f"needs ±{GATE_SATURATION:g}: the gates are not held through the padded steps",
             replace(base, flag=column))]


def misfit(site: Site, change: Change, actual: dict[str, np.ndarray], tol: Tolerance) -> float:
    """The largest ratio of |recomputed − actual| to ``tol``'s allowance over the compared outputs (≤ 1: fits)."""
    got = recompute(site, change)
    return max(float(np.abs(got[k] - a).max()) / tol.allowed(float(np.abs(a).max())) for k, a in actual.items())


def _perturbation(site: Site, base: Change) -> tuple[str, Change] | None:
    """The node's own weights, where they differ from the reference's: named by how much."""
    mine = graph_weights(site)
    if mine is None:
        return None
    parts = []
    for label, got, want in (("W", mine.w_ih, base.weights.w_ih), ("R", mine.w_hh, base.weights.w_hh),
                             ("Wb", mine.b_ih, base.weights.b_ih), ("Rb", mine.b_hh, base.weights.b_hh)):
        if got.shape != want.shape:
            return None
        scale = float(np.abs(want).max()) or 1.0
        if (share := float(np.abs(got - want).max()) / scale) > SAME_WEIGHTS:
            parts.append((share, label))
    if not parts:
        return None
    share = max(parts)[0]
    which = ", ".join(label for _, label in parts)
    words = f"differ by ~{100 * share:.3g}% of their largest value ({which})"
    change = replace(base, weights=mine)
    if share > PERTURBATION:
        return f"no known export bug explains it; the node's own weights, which do, {words}", change
    return f"weights {words}, not a structural bug", change


def diagnose(site: Site, actual: dict[str, np.ndarray], tol: Tolerance) -> str:
    """The export bug that explains ``actual`` (the site's Y on valid steps, Y_h, Y_c: whichever were compared)
    best, if it fits within ``tol``; else the node's own weights if they fit; else "no known export bug"."""
    where = f"layer {site.layer}, {DIRECTIONS[site.direction]} direction"
    base = Change(module_weights(site.module, site.layer, site.direction), Cell.torch(site.module.mode),
                  site.direction == 1, site.row if site.ref.given_state else None)
    tried = (cell_hypotheses(site, base) + weight_hypotheses(site, base) + order_hypotheses(site, base)
             + flag_hypotheses(site, base))
    scored = sorted(((misfit(site, change, actual, tol), k, words) for k, (words, change) in enumerate(tried)))
    if scored and scored[0][0] <= 1.0:
        return f"{where}: {scored[0][2]}"
    perturbed = _perturbation(site, base)
    if perturbed and misfit(site, perturbed[1], actual, tol) <= 1.0:
        return f"{where}: {perturbed[0]}"
    return (f"{where}: no known export bug explains it (activations, clip, input_forget, linear_before_reset, gate "
            "order of W, R and B, directions, initial states, biases, sequence_lens and the weights were tried)")
