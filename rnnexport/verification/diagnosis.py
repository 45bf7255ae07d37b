"""Where and why a model fails: each recurrent node's own outputs against PyTorch's per-layer outputs, then the
common export bugs tried against the first failing layer and direction.

    found = localise(module, model_bytes, cfg, feeds, tolerance, open_runner)
    found.layers        # [{layer, direction, max_abs, allowed, ok}], in order, up to the first failing one
    found.diagnosis     # "layer 2, forward direction: W gate blocks i and f swapped", or an honest "no known bug"

The intermediate tensors are exposed in an in-memory copy of the graph, never in the shipped file. PyTorch's
side is recomputed here in float64 from the module's weights, one layer and direction at a time, with the
same equations as ``nn.GRU``/``nn.LSTM``/``nn.RNN`` (and ``pack_padded_sequence`` for ragged batches).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from rnnexport.config import ModelConfig, Tolerance
from rnnexport.contract import C0, H0, INPUT, LENGTHS
from rnnexport.graph.precision import element_types
from rnnexport.graph.subgraphs import recurrent_nodes
from rnnexport.verification.runners.openvino_runner import OpenVinoRunner
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.tract_runner import TractRunner

GATE_NAMES = {"GRU": "rzn", "LSTM": "ifgo", "RNN_TANH": "h", "RNN_RELU": "h"}
DIRECTIONS = ("forward", "backward")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Weights:
    """One layer and direction of the module, float64, in PyTorch's gate order."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray

    def permuted(self, which: str, perm: tuple[int, ...]) -> Weights:
        def p(a: np.ndarray) -> np.ndarray:
            return np.concatenate([np.split(a, len(perm))[k] for k in perm])
        return Weights(p(self.w_ih) if "W" in which else self.w_ih, p(self.w_hh) if "R" in which else self.w_hh,
                       p(self.b_ih) if "B" in which else self.b_ih, p(self.b_hh) if "B" in which else self.b_hh)


def run_direction(mode: str, x: np.ndarray, w: Weights, h: np.ndarray, c: np.ndarray, lengths: np.ndarray,
                  reverse: bool, lbr: bool = True, activation: str | None = None) -> tuple[np.ndarray, ...]:
    """One direction of one layer over time-major ``x`` [T, B, in] as PyTorch computes it (packed: row b runs
    its first ``lengths[b]`` steps, the backward direction from its own last step; outputs past a row's length
    are 0). ``lbr=False`` is ONNX's linear_before_reset=0; ``activation`` replaces an RNN's. Returns (y, h, c)."""
    steps = x.shape[0]
    y = np.zeros((steps, x.shape[1], w.w_hh.shape[1]))
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        live = (t < lengths)[:, None]
        gi = x[t] @ w.w_ih.T + w.b_ih
        if mode == "GRU":
            hr, hz, hn = np.split(w.w_hh, 3)
            br, bz, bn = np.split(w.b_hh, 3)
            ir, iz, i_n = np.split(gi, 3, axis=1)
            r, z = _sigmoid(ir + h @ hr.T + br), _sigmoid(iz + h @ hz.T + bz)
            n = np.tanh(i_n + (r * (h @ hn.T + bn) if lbr else (r * h) @ hn.T + bn))
            new_h, new_c = (1 - z) * n + z * h, c
        elif mode == "LSTM":
            i, f, g, o = np.split(gi + h @ w.w_hh.T + w.b_hh, 4, axis=1)
            new_c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            new_h = _sigmoid(o) * np.tanh(new_c)
        else:
            pre = gi + h @ w.w_hh.T + w.b_hh
            relu = (activation or mode.removeprefix("RNN_").lower()) == "relu"
            new_h, new_c = (np.maximum(pre, 0) if relu else np.tanh(pre)), c
        h, c = np.where(live, new_h, h), np.where(live, new_c, c)
        y[t] = np.where(live, h, 0.0)
    return y, h, c


def _weights(module: Any, layer: int, direction: int) -> Weights:
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    get = lambda name: getattr(module, name + sfx).detach().double().numpy()  # noqa: E731
    zeros = np.zeros(get("weight_hh").shape[0])
    return Weights(get("weight_ih"), get("weight_hh"), get("bias_ih") if module.bias else zeros,
                   get("bias_hh") if module.bias else zeros)


@dataclass
class Reference:
    """PyTorch's per-layer outputs for one input: ``ys[layer][direction]`` [T, B, H] and each layer's input."""

    inputs: list[np.ndarray] = field(default_factory=list)
    ys: list[list[np.ndarray]] = field(default_factory=list)


def reference(module: Any, feeds: dict[str, np.ndarray]) -> tuple[Reference, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's per-layer outputs (float64) for ``feeds``, with the time-major input, lengths and the initial
    states [L*D, B, H] (h, c)."""
    x = feeds[INPUT].astype(np.float64)
    x = x.transpose(1, 0, 2) if module.batch_first else x
    steps, batch = x.shape[:2]
    dirs = 2 if module.bidirectional else 1
    lengths = feeds[LENGTHS].astype(np.int64) if LENGTHS in feeds else np.full(batch, steps)
    zeros = np.zeros((module.num_layers * dirs, batch, module.hidden_size))
    h0 = feeds[H0].astype(np.float64) if H0 in feeds else zeros
    c0 = feeds[C0].astype(np.float64) if C0 in feeds else zeros
    ref = Reference()
    for layer in range(module.num_layers):
        ref.inputs.append(x)
        outs = [run_direction(module.mode, x, _weights(module, layer, d), h0[layer * dirs + d], c0[layer * dirs + d],
                              lengths, reverse=d == 1)[0] for d in range(dirs)]
        ref.ys.append(outs)
        x = np.concatenate(outs, axis=2)
    return ref, lengths, h0, c0


def node_layers(model: onnx.ModelProto, cfg: ModelConfig) -> list[tuple[onnx.NodeProto, int, list[int]]] | str:
    """(node, layer, directions it holds) for each recurrent node, or why the nodes cannot be matched to layers."""
    nodes = recurrent_nodes(model)
    dirs = cfg.num_directions
    if len(nodes) == cfg.num_layers:
        return [(n, layer, list(range(dirs))) for layer, n in enumerate(nodes)]
    if len(nodes) == cfg.num_layers * dirs and cfg.inputs.variable_lengths == "masked":
        return [(n, k // dirs, [k % dirs]) for k, n in enumerate(nodes)]
    return (f"the graph has {len(nodes)} recurrent nodes for {cfg.num_layers} layers × {dirs} directions: they "
            "cannot be matched to layers")


def _exposed(model: onnx.ModelProto, tensors: list[str]) -> bytes:
    """An in-memory copy of ``model`` with ``tensors`` added as graph outputs, each declared in its own element
    type (a float16 graph's Y is float16: a runtime refuses an output declared in another type)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    types = element_types(model)
    copy.graph.output.extend(helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None)
                             for t in tensors if t not in present)
    return copy.SerializeToString()


def _node_direction(y: np.ndarray, slot: int, reversed_input: bool, lengths: np.ndarray) -> np.ndarray:
    """Direction ``slot`` of a node's Y [T, D, B, H] as [T, B, H], in true time order (a masked graph's backward
    node ran on input reversed within each row's length)."""
    out = y[:, slot].astype(np.float64)
    if reversed_input:
        fixed = np.zeros_like(out)
        for b, length in enumerate(lengths):
            fixed[:length, b] = out[:length, b][::-1]
        out = fixed
    return out


def _valid(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    steps = np.arange(a.shape[0])[:, None]
    return np.where((steps < lengths[None, :])[..., None], a, 0.0)


@dataclass
class Localisation:
    layers: list[dict[str, Any]] = field(default_factory=list)
    diagnosis: str | None = None
    note: str | None = None  # why localisation could not be done
    case: str | None = None  # the case whose inputs were used

    def summary(self) -> str:
        if not self.layers:
            return self.note or "no recurrent node to compare"
        failing = next((layer for layer in self.layers if not layer["ok"]), None)
        clean = ", ".join(f"layer {x['layer']} {x['direction']} {x['max_abs']:.1e}" for x in self.layers if x["ok"])
        if failing is None:
            return f"{self.note} (clean before it: {clean})" if self.note else f"every layer within tolerance ({clean})"
        head = (f"first failing: layer {failing['layer']}, {failing['direction']} direction (max |Δ| "
                f"{failing['max_abs']:.3g} > {failing['allowed']:.2g})")
        return head + (f"; clean before it: {clean}" if clean else "") + (f" (case {self.case})" if self.case else "")

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "layers": self.layers, "diagnosis": self.diagnosis, "note": self.note}


def localise(module: Any, data: bytes, cfg: ModelConfig, feeds: dict[str, np.ndarray], tol: Tolerance,
             open_runner: Callable[[bytes], Any]) -> Localisation:
    """Each recurrent node's outputs (run by ``open_runner`` on a copy of ``data`` exposing them) against
    PyTorch's layer outputs, up to the first layer and direction over ``tol``; then the diagnosis of that one."""
    model = onnx.load_model_from_string(data)
    matched = node_layers(model, cfg)
    if isinstance(matched, str):
        return Localisation(note=matched)
    ref, lengths, h0, c0 = reference(module, feeds)
    with open_runner(_exposed(model, [n.output[0] for n, _, _ in matched])) as runner:
        outputs = runner.infer(feeds)
    found = Localisation()
    masked = cfg.inputs.variable_lengths == "masked"
    for node, layer, directions in matched:
        y = outputs.get(node.output[0])
        problem = _unreadable(node, y, ref.ys[layer][0].shape, len(directions))
        if problem:
            found.note = f"layer {layer}: {problem}"
            return found
        for slot, direction in enumerate(directions):
            actual = _valid(_node_direction(y, slot, masked and direction == 1, lengths), lengths)
            expected = ref.ys[layer][direction]
            nonfinite = int(np.count_nonzero(~np.isfinite(actual)))
            max_abs = float(np.abs(actual - expected).max())
            allowed = tol.allowed(float(np.abs(expected).max()))
            entry = {"layer": layer, "direction": DIRECTIONS[direction], "node": node.name, "max_abs": max_abs,
                     "allowed": allowed, "ok": max_abs <= allowed and not nonfinite}
            found.layers.append(entry)
            if nonfinite:
                found.diagnosis = (f"layer {layer}, {DIRECTIONS[direction]} direction: {nonfinite} NaN/Inf in "
                                   f"{node.name or node.op_type}'s Y where PyTorch's layer output is finite")
                return found
            if not entry["ok"]:
                found.diagnosis = diagnose(module, ref, layer, direction, actual, lengths, h0, c0, tol)
                return found
    return found


def _unreadable(node: onnx.NodeProto, y: np.ndarray | None, layer_shape: tuple[int, ...], dirs: int) -> str | None:
    """Why a recurrent node's Y as the runner returned it cannot be read as [T, D, B, H] (PyTorch's layer output
    is [T, B, H]), or None."""
    name = node.name or node.op_type
    if y is None:
        return f"the runner did not return {name}'s Y ({node.output[0]})"
    steps, batch, hidden = layer_shape
    if y.dtype.kind != "f" and not y.dtype.name.startswith("bfloat16"):
        return f"{name}'s Y holds {y.dtype} values, not real numbers"
    if y.ndim != 4 or (y.shape[0], y.shape[2], y.shape[3]) != (steps, batch, hidden) or y.shape[1] < dirs:
        return (f"{name}'s Y has shape {list(y.shape)} where ONNX's [seq, num_directions, batch, hidden_size] is "
                f"[{steps}, {dirs}, {batch}, {hidden}] (a layout=1 node, or not the layer PyTorch computes)")
    return None


def _gate_words(mode: str, perm: tuple[int, ...]) -> str:
    names = GATE_NAMES[mode]
    moved = [k for k in range(len(perm)) if perm[k] != k]
    if len(moved) == 2:
        return f"gate blocks {names[moved[0]]} and {names[moved[1]]} swapped"
    return f"gate blocks in the order {', '.join(names[k] for k in perm)} instead of {', '.join(names)}"


def hypotheses(module: Any, layer: int, direction: int, dirs: int) -> list[tuple[str, dict[str, Any]]]:
    """(what it would mean, how to recompute the layer and direction under it), most common first."""
    mode, gates = module.mode, len(GATE_NAMES[module.mode])
    found: list[tuple[str, dict[str, Any]]] = []
    perms = [p for p in itertools.permutations(range(gates)) if p != tuple(range(gates))]
    for which, label in (("WRB", "W, R and B"), ("W", "W"), ("R", "R"), ("B", "B")):
        if which == "B" and not module.bias:
            continue
        found += [(f"{label} {_gate_words(mode, p)}", {"permute": (which, p)}) for p in perms]
    if mode == "GRU":
        found.append(("linear_before_reset=0 (PyTorch's GRU needs 1)", {"lbr": False}))
    if mode.startswith("RNN_"):
        other = "tanh" if mode == "RNN_RELU" else "relu"
        found.append((f"activation {other} where the module uses {mode.removeprefix('RNN_').lower()}",
                      {"activation": other}))
    if dirs == 2:
        found.append(("directions swapped: this direction's output is the other direction's",
                      {"direction": 1 - direction}))
        found.append(("directions' weights swapped: this direction runs with the other direction's W, R and B",
                      {"weights_of": 1 - direction}))
    found.append(("the initial state is ignored (zeros used)", {"zero_state": True}))
    rows = module.num_layers * dirs
    found += [(f"the initial state of row {k} (layer {k // dirs}, {DIRECTIONS[k % dirs]}) is used",
               {"state_row": k}) for k in range(rows) if k != layer * dirs + direction]
    if module.bias:
        found.append(("the biases are missing", {"no_bias": True}))
    found.append(("sequence_lens is not honoured (every row runs all steps)", {"full_length": True}))
    return found


def diagnose(module: Any, ref: Reference, layer: int, direction: int, actual: np.ndarray, lengths: np.ndarray,
             h0: np.ndarray, c0: np.ndarray, tol: Tolerance) -> str:
    """The export bug that explains ``actual`` (one layer and direction, valid steps) within ``tol``, or a
    plain "no known bug explains it"."""
    dirs = 2 if module.bidirectional else 1
    where = f"layer {layer}, {DIRECTIONS[direction]} direction"
    allowed = tol.allowed(float(np.abs(actual).max()))
    for words, change in hypotheses(module, layer, direction, dirs):
        d = change.get("direction", direction)
        w = _weights(module, layer, change.get("weights_of", d))
        if "permute" in change:
            w = w.permuted(*change["permute"])
        if change.get("no_bias"):
            w = Weights(w.w_ih, w.w_hh, np.zeros_like(w.b_ih), np.zeros_like(w.b_hh))
        row = change.get("state_row", layer * dirs + direction)
        h, c = h0[row], c0[row]
        if change.get("zero_state"):
            h, c = np.zeros_like(h), np.zeros_like(c)
        steps = np.full_like(lengths, ref.inputs[layer].shape[0]) if change.get("full_length") else lengths
        y = run_direction(module.mode, ref.inputs[layer], w, h, c, steps, reverse=d == 1,
                          lbr=change.get("lbr", True), activation=change.get("activation"))[0]
        if float(np.abs(_valid(y, lengths) - actual).max()) <= allowed:
            return f"{where}: {words}"
    return f"{where}: no known export bug explains it (gate order, linear_before_reset, activations, directions, " \
           "initial states, biases and sequence_lens were tried)"


def _reopen(result: Any, data: bytes) -> Callable[[bytes], Any]:
    """How to open another model the way ``result``'s runner was opened (same runtime, device, precision)."""
    settings = result.settings
    if result.kind == "openvino":
        return lambda model: OpenVinoRunner(model, settings.get("device", "CPU"),
                                            force_f32=bool(settings.get("precision_forced", True)))
    if result.kind == "tract":
        return lambda model: TractRunner(model, result.name)
    return lambda model: OrtRunner(model, settings.get("provider", "CPUExecutionProvider"),
                                   threads=settings.get("intra_op_num_threads", 0))


def _swapped_axes(result: Any) -> str | None:
    """A shape mismatch that is the expected shape with its first two axes swapped."""
    for case, outputs in result.drift.items():
        for output, d in outputs.items():
            got, want = (list(s) for s in d.shapes) if d.shapes else ([], [])
            if got != want and len(got) == len(want) >= 2 and [got[1], got[0], *got[2:]] == want:
                return f"{case}/{output}: batch and time axes swapped (shape {got} where PyTorch gives {want})"
    return None


def _failed_cases(cases: list[Any], drift: dict[str, dict[str, Any]], tol: Tolerance) -> list[Any]:
    """The cases (not streamed) where some output of ``drift`` is over ``tol`` or of another shape."""
    return [c for c in cases if not c.chunks and any(d.shape_mismatch or not tol.allows(d.max_abs, d.expected_max_abs)
                                                     for d in drift.get(c.name, {}).values())]


def diagnose_results(module: Any, data: bytes, variants: dict[str, Any], cfg: ModelConfig, cases: list[Any],
                     results: dict[str, Any], tolerances: Any, per_layer: bool,
                     own: dict[str, Any] | None = None) -> None:
    """Set ``localisation`` on every runtime runner that failed its tolerance (every one with ``per_layer``):
    per-layer errors on the first case it failed (else the first case), and the diagnosis. A runner with an oracle
    of its own precision (``own``: runner name → that oracle's module) that fails it is localised against that
    module at that oracle's tolerance: the export bug, not the precision's rounding."""
    own = own or {}
    for result in results.values():
        if result.status != "ok" or result.kind == "torch":
            continue
        reference, tol = module, tolerances.for_runner(result.device, result.precision)
        failed = _failed_cases(cases, result.drift, tol)
        if result.name in own:
            own_tol = tolerances.for_own_oracle(result.device, result.precision)
            if failed_own := _failed_cases(cases, result.vs_precision, own_tol):
                reference, tol, failed = own[result.name], own_tol, failed_own
        if not (failed or per_layer):
            continue
        swapped = _swapped_axes(result)
        if swapped:
            result.localisation = Localisation(diagnosis=swapped, note="the outputs' shapes differ from PyTorch's")
            continue
        case = (failed or [c for c in cases if not c.chunks] or [None])[0]
        if case is None:
            continue
        model = next((v for k, v in variants.items() if result.name.endswith(f"-{k}") and isinstance(v, bytes)), data)
        try:
            result.localisation = localise(reference, model, cfg, case.feeds, tol, _reopen(result, model))
        except Exception as exc:  # a runtime that refuses the exposed copy: say so, keep the verdict
            result.localisation = Localisation(note=f"per-layer outputs could not be read: {str(exc)[:200]}")
        result.localisation.case = case.name
