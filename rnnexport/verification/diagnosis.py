"""Where and why a model fails: each recurrent node's own outputs (Y, Y_h, Y_c) against PyTorch's per-layer results,
then the export bug that best explains the first failing layer and direction (``hypotheses.py``).

    found = localise(module, model_bytes, cfg, feeds, tolerance, open_runner)
    found.layers        # [{layer, direction, node, output, outputs, max_abs, allowed, ok}], up to the first failing
    found.diagnosis     # "layer 2, forward direction: W gate blocks i and f swapped", or an honest "no known bug"

The intermediate tensors are exposed in an in-memory copy of the graph, never in the shipped file. PyTorch's
side is recomputed in float64 from the module's weights (``recompute.py``), one layer and direction at a time.
A masked ragged graph's nodes run the padded steps too: their Y_h is not PyTorch's h_n and is not compared (the
graph picks h_n from Y), their Y_c is (the padding flag holds c through the padded steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from rnnexport.config import ModelConfig, Tolerance
from rnnexport.graph.precision import element_types
from rnnexport.graph.subgraphs import recurrent_nodes
from rnnexport.verification.hypotheses import Site, diagnose
from rnnexport.verification.recompute import DIRECTIONS, Reference, reference
from rnnexport.verification.runners.iree_runner import IreeRunner
from rnnexport.verification.runners.openvino_runner import OpenVinoRunner
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.tract_runner import TractRunner

NODE_OUTPUTS = ("Y", "Y_h", "Y_c")  # a recurrent node's outputs, by position


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


def compared_outputs(node: onnx.NodeProto, masked: bool) -> dict[str, str]:
    """Which of the node's outputs are compared with PyTorch's (output → tensor name): Y, and Y_h and Y_c where
    the node has them (a masked graph's Y_h is not PyTorch's h_n)."""
    found = {name: tensor for name, tensor in zip(NODE_OUTPUTS, node.output) if tensor}
    if masked:
        found.pop("Y_h", None)
    return found


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
        output = f", {failing['output']}" if failing.get("output", "Y") != "Y" else ""
        head = (f"first failing: layer {failing['layer']}, {failing['direction']} direction{output} (max |Δ| "
                f"{failing['max_abs']:.3g} > {failing['allowed']:.2g})")
        return head + (f"; clean before it: {clean}" if clean else "") + (f" (case {self.case})" if self.case else "")

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "layers": self.layers, "diagnosis": self.diagnosis, "note": self.note}


def localise(module: Any, data: bytes, cfg: ModelConfig, feeds: dict[str, np.ndarray], tol: Tolerance,
             open_runner: Callable[[bytes], Any], diagnosis_tol: Tolerance | None = None) -> Localisation:
    """Each recurrent node's outputs (run by ``open_runner`` on a copy of ``data`` exposing them) against
    PyTorch's layer results, up to the first layer and direction over ``tol`` in any of Y, Y_h, Y_c; then the
    diagnosis of that one, at ``diagnosis_tol`` (default ``tol``)."""
    model = onnx.load_model_from_string(data)
    matched = node_layers(model, cfg)
    if isinstance(matched, str):
        return Localisation(note=matched)
    masked = cfg.inputs.variable_lengths == "masked"
    ref = reference(module, feeds)
    tensors = [t for node, _, _ in matched for t in compared_outputs(node, masked).values()]
    try:
        with open_runner(_exposed(model, tensors)) as runner:
            outputs = runner.infer(feeds)
    except Exception as exc:  # a runtime that refuses the exposed copy: say so, keep the verdict
        return Localisation(note=f"per-layer outputs could not be read: {str(exc)[:200]}")
    found = Localisation()
    for node, layer, directions in matched:
        problem = _unreadable(node, compared_outputs(node, masked), outputs, ref.ys[layer][0].shape, len(directions))
        if problem:
            found.note = f"layer {layer}: {problem}"
            return found
        for slot, direction in enumerate(directions):
            actual = _actual(node, outputs, slot, direction, masked, ref)
            entry, nonfinite = _entry(node, layer, direction, actual, _expected(ref, layer, direction, actual), tol)
            found.layers.append(entry)
            if nonfinite:
                found.diagnosis = (f"layer {layer}, {DIRECTIONS[direction]} direction: {nonfinite} NaN/Inf in "
                                   f"{node.name or node.op_type}'s {entry['output']} where PyTorch's layer output "
                                   "is finite")
                return found
            if not entry["ok"]:
                site = Site(module, ref, layer, direction, node, slot, masked, model)
                found.diagnosis = _diagnosis(site, actual, diagnosis_tol or tol)
                return found
    return found


def _actual(node: onnx.NodeProto, outputs: dict[str, np.ndarray], slot: int, direction: int, masked: bool,
            ref: Reference) -> dict[str, np.ndarray]:
    """The node's compared outputs for one direction, float64: Y [T, B, H] on valid steps in true time order,
    Y_h and Y_c [B, H]."""
    found = {}
    for name, tensor in compared_outputs(node, masked).items():
        value = np.asarray(outputs[tensor])
        if name == "Y":
            found[name] = _valid(_node_direction(value, slot, masked and direction == 1, ref.lengths), ref.lengths)
        else:
            found[name] = value[slot].astype(np.float64)
    return found


def _expected(ref: Reference, layer: int, direction: int, actual: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    results = {"Y": ref.ys[layer][direction], "Y_h": ref.hs[layer][direction], "Y_c": ref.cs[layer][direction]}
    return {name: results[name] for name in actual}


def _entry(node: onnx.NodeProto, layer: int, direction: int, actual: dict[str, np.ndarray],
           expected: dict[str, np.ndarray], tol: Tolerance) -> tuple[dict[str, Any], int]:
    """One layer and direction's row of the localisation (its worst output by share of the allowance), and the
    count of NaN/Inf among its outputs where PyTorch's are finite."""
    errors, ratios, allowed = {}, {}, {}
    for name, value in actual.items():
        nonfinite = int(np.count_nonzero(~np.isfinite(value)))
        if nonfinite:
            return {"layer": layer, "direction": DIRECTIONS[direction], "node": node.name, "output": name,
                    "outputs": {}, "max_abs": float("inf"), "allowed": 0.0, "ok": False}, nonfinite
        errors[name] = float(np.abs(value - expected[name]).max())
        allowed[name] = tol.allowed(float(np.abs(expected[name]).max()))
        ratios[name] = errors[name] / allowed[name]
    worst = max(ratios, key=lambda k: ratios[k])
    return {"layer": layer, "direction": DIRECTIONS[direction], "node": node.name, "output": worst,
            "outputs": errors, "max_abs": errors[worst], "allowed": allowed[worst],
            "ok": all(r <= 1.0 for r in ratios.values())}, 0


def _diagnosis(site: Site, actual: dict[str, np.ndarray], tol: Tolerance) -> str:
    """``hypotheses.diagnose``; an error inside it (rnnexport's own bug) is said as such, keeping the localisation."""
    try:
        return diagnose(site, actual, tol)
    except Exception as exc:  # numpy errors of the recomputation: our bug, not the model's, and not its verdict
        return (f"layer {site.layer}, {DIRECTIONS[site.direction]} direction: the diagnosis itself failed "
                f"({type(exc).__name__}: {str(exc)[:200]}); this is a bug of rnnexport, the localisation stands")


def _unreadable(node: onnx.NodeProto, compared: dict[str, str], outputs: dict[str, np.ndarray],
                layer_shape: tuple[int, ...], dirs: int) -> str | None:
    """Why a recurrent node's outputs as the runner returned them cannot be read: Y as [T, D, B, H], Y_h and Y_c
    as [D, B, H] (PyTorch's layer output is [T, B, H]); None when they can."""
    name = node.name or node.op_type
    steps, batch, hidden = layer_shape
    for output, tensor in compared.items():
        value = outputs.get(tensor)
        if value is None:
            return f"the runner did not return {name}'s {output} ({tensor})"
        value = np.asarray(value)
        if value.dtype.kind != "f" and not value.dtype.name.startswith("bfloat16"):
            return f"{name}'s {output} holds {value.dtype} values, not real numbers"
        if output == "Y" and (value.ndim != 4 or (value.shape[0], value.shape[2], value.shape[3]) != layer_shape
                              or value.shape[1] < dirs):
            return (f"{name}'s Y has shape {list(value.shape)} where ONNX's [seq, num_directions, batch, "
                    f"hidden_size] is [{steps}, {dirs}, {batch}, {hidden}] (a layout=1 node, or not the layer "
                    "PyTorch computes)")
        if output != "Y" and (value.ndim != 3 or value.shape[1:] != (batch, hidden) or value.shape[0] < dirs):
            return (f"{name}'s {output} has shape {list(value.shape)} where ONNX's [num_directions, batch, "
                    f"hidden_size] is [{dirs}, {batch}, {hidden}]")
    return None


def _reopen(result: Any, data: bytes) -> Callable[[bytes], Any]:
    """How to open another model the way ``result``'s runner was opened (same runtime, device, precision)."""
    settings = result.settings
    if result.kind == "openvino":
        return lambda model: OpenVinoRunner(model, settings.get("device", "CPU"),
                                            force_f32=bool(settings.get("precision_forced", True)))
    if result.kind == "tract":
        return lambda model: TractRunner(model, result.name)
    if result.kind == "iree":
        return lambda model: IreeRunner(model, result.name, threads=1)
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
    module at that oracle's tolerance: the export bug, not the precision's rounding. The diagnosis is made at the
    float32 tolerance (the own oracle's, there): never at a reduced precision's loose one, where a wrong bug fits."""
    own = own or {}
    for result in results.values():
        if result.status != "ok" or result.kind == "torch":
            continue
        oracle_module, tol = module, tolerances.for_runner(result.device, result.precision)
        float32 = tolerances.cpu if result.device == "cpu" else tolerances.cuda  # the diagnosis' tolerance
        failed = _failed_cases(cases, result.drift, tol)
        if result.name in own:
            own_tol = tolerances.for_own_oracle(result.device, result.precision)
            if failed_own := _failed_cases(cases, result.vs_precision, own_tol):
                oracle_module, tol, float32, failed = own[result.name], own_tol, own_tol, failed_own
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
            result.localisation = localise(oracle_module, model, cfg, case.feeds, tol, _reopen(result, model),
                                           diagnosis_tol=float32)
        except Exception as exc:  # rnnexport's own bug in localising: said as such, the verdict stands
            result.localisation = Localisation(note=f"localisation failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                                    "this is a bug of rnnexport")
        result.localisation.case = case.name
        if failed and _all_nodes_right(result.localisation):
            result.localisation.diagnosis = (
                "every recurrent node computes PyTorch's layer (Y, Y_h, Y_c) on this case: the error is in the graph "
                "around them" + (" (the padding mask, the reversal within lengths or the pick of h_n)"
                                 if cfg.inputs.variable_lengths == "masked" else ""))


def _all_nodes_right(found: Localisation) -> bool:
    return bool(found.layers) and all(x["ok"] for x in found.layers) and not (found.diagnosis or found.note)
