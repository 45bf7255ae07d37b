"""The oracle of a variant's own precision: what a right export computes at that precision, so that an export bug
is told apart from the precision's own rounding. Against the float oracle a variant's drift says what the user
deploys; against its own oracle it says whether the export is right.

- ``fp16-weights``: the module with every parameter rounded to float16, as the file stores them (float32
  compute). The variant must match it at the float32 tolerance.
- ``int8`` (ONNX Runtime's ``DynamicQuantizeLSTM``): W and R of each layer and direction quantized by ONNX Runtime's
  documented rule for int8 weights (``onnxruntime/quantization/quant_utils.py``, ``quantize_data``: symmetric,
  one scale per direction, scale = max|w| / 127, zero point 0, q = round(w / scale) within [-127, 127]), then
  dequantized; biases stay float. Only the activations' quantization (per call, uint8) separates the variant
  from it (``verdict.OWN_ORACLE_TOLERANCE``). The file's quantized weights, scales and zero points are checked
  against the same rule, within one step (``int8_weight_problems``).

Both oracles are built from the module's weights, never from the file's: a weight the file got wrong is then a
difference, not part of the reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from rnnexport.export.gates import GATE_ORDER
from rnnexport.verification.runners import ORACLE

OWN_ORACLES = ("fp16-weights", "int8")  # the precisions that have an oracle of their own
INT8_MAX = 127  # ONNX Runtime's symmetric int8 weights use [-127, 127]
QUANTIZED_LSTM = "DynamicQuantizeLSTM"
# (input of the node, what it is) for the int8 weights of DynamicQuantizeLSTM: W [D, in, 4H], R [D, H, 4H]
QUANTIZED_INPUTS = {"W": (1, 8, 9), "R": (2, 10, 11)}


def oracle_name(precision: str) -> str:
    """``torch-float64-oracle-fp16-weights``: the float64 oracle with the weights ``precision`` computes with."""
    return f"{ORACLE}-{precision}"


def quantize_rule(w: np.ndarray) -> tuple[np.ndarray, np.float32, int]:
    """ONNX Runtime's dynamic quantization of one weight tensor to int8: (q, scale, zero point)."""
    scale = np.float32(np.abs(w).max()) / np.float32(INT8_MAX)
    if scale == 0:
        return np.zeros(w.shape, np.int8), np.float32(1.0), 0
    q = np.clip(np.round(w.astype(np.float32) / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale, 0


def _direction_tensors(module: Any) -> list[tuple[str, Any]]:
    """(parameter name, parameter) for every W and R of every layer and direction."""
    return [(name, p) for name, p in module.named_parameters() if name.startswith(("weight_ih_", "weight_hh_"))]


def precision_module(module: Any, precision: str) -> Any:
    """A copy of ``module`` with the weights ``precision`` computes with (float32 parameters)."""
    import torch

    own = copy.deepcopy(module).float().eval()
    with torch.no_grad():
        if precision == "fp16-weights":
            for p in own.parameters():
                p.copy_(p.half().float())
        elif precision == "int8":
            for _, p in _direction_tensors(own):
                q, scale, zero = quantize_rule(p.detach().numpy())
                p.copy_(torch.from_numpy((q.astype(np.float32) - zero) * scale))
        else:
            raise ValueError(f"no oracle of its own for precision {precision!r}; known: {', '.join(OWN_ORACLES)}")
    return own


def _onnx_rows(weight: np.ndarray, mode: str) -> np.ndarray:
    """A PyTorch weight [G*H, in] with its gate blocks in ONNX's order."""
    blocks = np.split(weight, len(GATE_ORDER[mode]))
    return np.concatenate([blocks[k] for k in GATE_ORDER[mode]])


def int8_weight_problems(model: onnx.ModelProto, module: Any) -> list[str]:
    """Each ``DynamicQuantizeLSTM`` node's int8 W and R, scales and zero points against ONNX Runtime's rule applied
    to ``module``'s weights: a scale other than the rule's (beyond float32 rounding), another zero point, or an
    int8 value more than one step away. One sentence per layer, direction and tensor; nodes are matched to layers
    in graph order."""
    constants = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == QUANTIZED_LSTM]
    if len(nodes) != module.num_layers:
        return [f"{len(nodes)} {QUANTIZED_LSTM} nodes for {module.num_layers} layers: the int8 weights cannot be "
                "checked against the module's"]
    found = []
    for layer, node in enumerate(nodes):
        for tensor, (at, scale_at, zero_at) in QUANTIZED_INPUTS.items():
            names = [node.input[k] if len(node.input) > k else "" for k in (at, scale_at, zero_at)]
            if not all(name in constants for name in names):
                found.append(f"layer {layer}: {node.name or node.op_type}'s {tensor}, its scale or its zero point is "
                             "not a constant of the graph")
                continue
            q, scale, zero = (numpy_helper.to_array(constants[name]) for name in names)
            found += _tensor_problems(module, layer, tensor, q, scale, zero)
        if len(node.input) > 3 and node.input[3] in constants:
            found += _bias_problems(module, layer, numpy_helper.to_array(constants[node.input[3]]))
    return found


def _bias_problems(module: Any, layer: int, b: np.ndarray) -> list[str]:
    """B [D, 8 × hidden] stays float32 in an int8-dynamic file: it must be the module's biases in ONNX's gate order
    (Wb then Rb), up to float32 rounding. A gate swap in B alone moves outputs less than activation quantization."""
    if not module.bias:
        return []
    dirs, found = (2 if module.bidirectional else 1), []
    for d in range(dirs):
        suffix = f"_l{layer}" + ("_reverse" if d else "")
        want = np.concatenate([_onnx_rows(getattr(module, f"bias_{k}{suffix}").detach().numpy()[:, None],
                                          module.mode)[:, 0] for k in ("ih", "hh")])
        got = b.reshape(dirs, -1)[d] if b.size == dirs * want.size else None
        where = f"layer {layer}, {('forward', 'backward')[d]} direction: B"
        if got is None:
            return [f"layer {layer}: B has shape {list(b.shape)} where the module gives [{dirs}, {want.size}]"]
        worst = float(np.abs(got.astype(np.float64) - want).max())
        if worst > 1e-6 * max(float(np.abs(want).max()), 1.0):
            found.append(f"{where} differs from the module's biases by up to {worst:.3g}; it is kept in float32, so "
                         "it must match them")
    return found


def _tensor_problems(module: Any, layer: int, tensor: str, q: np.ndarray, scale: np.ndarray,
                     zero: np.ndarray) -> list[str]:
    """One quantized tensor (``q`` [D, in, G*H], ``scale`` and ``zero`` [D]) against the rule, per direction."""
    dirs = 2 if module.bidirectional else 1
    found = []
    for d in range(dirs):
        where = f"layer {layer}, {('forward', 'backward')[d]} direction: {tensor}"
        name = ("weight_ih" if tensor == "W" else "weight_hh") + f"_l{layer}" + ("_reverse" if d else "")
        want_q, want_scale, want_zero = quantize_rule(_onnx_rows(getattr(module, name).detach().numpy(), module.mode))
        if q.shape != (dirs, *want_q.T.shape) or scale.size != dirs or zero.size != dirs:
            found.append(f"{where} has shape {list(q.shape)} with {scale.size} scales where the rule gives "
                         f"{[dirs, *want_q.T.shape]} with {dirs}")
            return found
        got_scale, got_zero = float(scale.reshape(-1)[d]), int(zero.reshape(-1)[d])
        if abs(got_scale - float(want_scale)) > 1e-6 * float(want_scale):
            found.append(f"{where}'s scale {got_scale:.6g} where ONNX Runtime's rule gives {float(want_scale):.6g} "
                         f"(max|{tensor}| / {INT8_MAX}): ×{got_scale / float(want_scale):.4g}")
        if got_zero != want_zero:
            found.append(f"{where}'s zero point {got_zero} where ONNX Runtime's rule gives {want_zero}")
        steps = np.abs(q[d].T.astype(np.int32) - want_q.astype(np.int32))
        if steps.max() > 1:
            found.append(f"{where}'s int8 values differ from ONNX Runtime's rule by up to {int(steps.max())} steps "
                         f"({int(np.count_nonzero(steps > 1))} of {steps.size} values by more than one)")
    return found


@dataclass
class OwnOracle:
    """The oracle of one precision (``oracle``: what the engine asks, ``module``: what localisation recomputes)
    and what the file's weights get wrong against it (``problems``, int8 only)."""

    precision: str
    oracle: Any
    module: Any
    problems: list[str] = field(default_factory=list)


def model_of(runner: str, data: bytes, variants: dict[str, Any]) -> bytes:
    """The serialized model ``runner`` runs: its variant's (``ort-cpu-int8-dynamic`` → ``int8-dynamic``) or ``data``."""
    return next((v for k, v in variants.items() if runner.endswith(f"-{k}") and isinstance(v, bytes)), data)


def _dynamic_lstm(model: bytes, checked: dict[bytes, list[str]]) -> bool:
    """Whether ``model`` is quantized as ``int8-dynamic`` makes it: every recurrent node a DynamicQuantizeLSTM with
    one scale per direction (``quantize_dynamic``'s default; a per-channel file is not checked against this rule)."""
    if model in checked:
        return True
    graph = onnx.load_model_from_string(model).graph
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type in ("LSTM", "GRU", "RNN", QUANTIZED_LSTM)]
    return bool(nodes) and all(n.op_type == QUANTIZED_LSTM and len(n.input) > 11 and
                               sizes.get(n.input[8]) == sizes.get(n.input[10]) in (1, 2) for n in nodes)


def own_oracles(module: Any, specs: list[Any], data: bytes, variants: dict[str, Any]) -> dict[str, OwnOracle]:
    """Runner name → the oracle of its precision, for every spec that computes in one of ``OWN_ORACLES`` (the
    variants' runners, and any runner of a file that is itself fp16-weights or int8; int8 only where its recurrent
    nodes are ONNX Runtime's DynamicQuantizeLSTM, whose rule is known); one oracle per precision, and the int8
    weight check once per file."""
    from rnnexport.verification.runners.torch_runner import Float64Oracle

    made: dict[str, OwnOracle] = {}
    checked: dict[bytes, list[str]] = {}
    found = {}
    for spec in specs:
        if spec.precision not in OWN_ORACLES or spec.kind == "torch":
            continue
        model = model_of(spec.name, data, variants)
        if spec.precision == "int8" and not _dynamic_lstm(model, checked):
            continue  # quantized by another rule (QDQ, a quantize_static): no oracle of its own here
        if spec.precision not in made:
            own = precision_module(module, spec.precision)
            oracle = Float64Oracle(own)
            oracle.name = oracle_name(spec.precision)
            made[spec.precision] = OwnOracle(spec.precision, oracle, own)
        problems: list[str] = []
        if spec.precision == "int8":
            if model not in checked:
                checked[model] = int8_weight_problems(onnx.load_model_from_string(model), module)
            problems = checked[model]
        found[spec.name] = OwnOracle(spec.precision, made[spec.precision].oracle, made[spec.precision].module,
                                     problems)
    return found
