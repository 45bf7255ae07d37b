"""PyTorch recurrent module → ONNX ModelProto with one native GRU/LSTM/RNN node per layer.

Gate reordering lives here and nowhere else. The graph, for layer l of L with D directions:

    input ─(Transpose if batch_first)→ X_0 ─GRU/LSTM/RNN→ Y_l [seq, D, batch, H]
    Y_l ─(Transpose [0,2,1,3] if D == 2)→ Reshape → X_{l+1} [seq, batch, D*H]
    h_n = Concat(Y_h_0 … Y_h_{L-1}) [L*D, batch, H]   (c_n likewise for LSTM)

Only Transpose, Reshape, Gather, Concat and the recurrent operators are used, all with the same
inputs and attributes from opset 9 to the newest, so one code path serves every opset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from rnnexport._version import __version__
from rnnexport.config import DEFAULT_OPSET, MIN_OPSET, newest_opset
from rnnexport.contract import BATCH, REVERSE_OPS, SEQ
from rnnexport.errors import ExportError
from rnnexport.export.builders import RecurrentModule
from rnnexport.export.gates import GATE_ORDER, ONNX_OP, trim_optional
from rnnexport.export.masked import MaskedLayers
from rnnexport.graph.subgraphs import op_counts, recurrent_nodes  # noqa: F401 (where callers have always found them)


def export_onnx(
    module: nn.Module,
    *,
    opset: int = DEFAULT_OPSET,
    initial_state: bool = False,
    variable_lengths: bool | str = False,
    metadata: dict[str, str] | None = None,
    reverse: str = REVERSE_OPS[0],
) -> onnx.ModelProto:
    """Write ``module`` (``nn.GRU``, ``nn.LSTM`` or ``nn.RNN``, any dtype) as an ONNX model.

    Inputs: ``input`` (seq, batch, input_size) — (batch, seq, input_size) if batch_first;
    with ``initial_state``, ``h0`` (and ``c0`` for LSTM) of (num_layers*D, batch, hidden);
    with ``variable_lengths``, ``sequence_lens`` int32 (batch,) with pack_padded_sequence meaning: handed to
    the recurrent nodes (``True``), or applied by masking around them (``"masked"``, see ``onnx_masked``);
    ``reverse`` (``REVERSE_OPS``): how a masked graph's backward direction reverses rows, ReverseSequence or
    GatherElements (for runtimes without ReverseSequence).
    Outputs: ``output`` (seq, batch, D*hidden) — batch first if batch_first; ``h_n``, and ``c_n``
    for LSTM, (num_layers*D, batch, hidden). Weights are stored as float32 initializers.
    ``metadata`` is added to ``metadata_props`` beside the rnnexport version. Another formulation of the
    same network (anything with a ``to_native()`` method) is exported as the native module it equals.
    """
    to_native = None if isinstance(module, nn.RNNBase) else getattr(module, "to_native", None)
    if callable(to_native):
        module = to_native()
    rnn = _recurrent(module)
    spec = _spec(rnn, opset)
    graph = _GraphBuilder(spec, initial_state, variable_lengths, opset, reverse)
    graph.build(rnn)
    model = helper.make_model(
        helper.make_graph(graph.nodes, "rnnexport", graph.inputs, graph.outputs),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="rnnexport",
        producer_version=__version__,
    )
    model.ir_version = _ir_version(opset)
    props = {"rnnexport_version": __version__, **(metadata or {})}
    helper.set_model_props(model, {k: str(v) for k, v in sorted(props.items())})
    _check_structure(model, graph.constants)
    for name, array in graph.constants:  # added in place: the weights are copied once, not per helper
        tensor = model.graph.initializer.add()
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return model


def _check_structure(model: onnx.ModelProto, constants: list[tuple[str, np.ndarray]]) -> None:
    """onnx.checker with full shape inference on the graph, the weights declared by type and shape only
    (checking 30 MB of weight bytes would double the export time and find nothing: numpy wrote them)."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    skeleton.graph.input.extend(
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for name, a in constants)
    try:
        onnx.checker.check_model(skeleton, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug in this module, never the user's input
        raise AssertionError(f"exported graph fails onnx.checker: {exc}") from exc


def _ir_version(opset: int) -> int:
    """The lowest IR version that can carry ``opset``, so older runtimes can still load the file."""
    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)], ignore_unknown=True)


def _recurrent(module: nn.Module) -> RecurrentModule:
    if not isinstance(module, (nn.GRU, nn.LSTM, nn.RNN)):
        raise ExportError(
            f"cannot export {type(module).__name__}: expected a torch.nn.GRU, LSTM or RNN module"
        )
    return module


def _spec(module: RecurrentModule, opset: int) -> dict[str, Any]:
    if getattr(module, "proj_size", 0):
        raise ExportError("cannot export an LSTM with proj_size > 0: ONNX's LSTM operator has no projection")
    top = newest_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ExportError(f"opset {opset!r} is not supported; expected an integer from {MIN_OPSET} to {top}")
    return dict(
        mode=module.mode,
        hidden=module.hidden_size,
        input_size=module.input_size,
        layers=module.num_layers,
        dirs=2 if module.bidirectional else 1,
        bias=module.bias,
        batch_first=module.batch_first,
    )


def _reorder(weight: torch.Tensor, order: tuple[int, ...]) -> np.ndarray:
    """Split stacked gate rows into blocks and put them in ONNX's order."""
    blocks = np.split(weight.detach().to("cpu", torch.float32).numpy(), len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def layer_weights(module: nn.RNNBase, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """ONNX ``W`` [D, G*H, in], ``R`` [D, G*H, H] and ``B`` [D, 2*G*H] (None without bias) of one layer."""
    order = GATE_ORDER[module.mode]
    suffixes = ["", "_reverse"] if module.bidirectional else [""]
    ws, rs, bs = [], [], []
    for sfx in suffixes:
        ws.append(_reorder(getattr(module, f"weight_ih_l{layer}{sfx}"), order))
        rs.append(_reorder(getattr(module, f"weight_hh_l{layer}{sfx}"), order))
        if module.bias:
            wb = _reorder(getattr(module, f"bias_ih_l{layer}{sfx}")[:, None], order)[:, 0]
            rb = _reorder(getattr(module, f"bias_hh_l{layer}{sfx}")[:, None], order)[:, 0]
            bs.append(np.concatenate([wb, rb]))
    return np.stack(ws), np.stack(rs), (np.stack(bs) if bs else None)


class _GraphBuilder:
    """Accumulates nodes, inputs, outputs and initializers for one export."""

    def __init__(self, spec: dict[str, Any], initial_state: bool, variable_lengths: bool | str, opset: int,
                 reverse: str = REVERSE_OPS[0]):
        if variable_lengths not in (False, True, "masked"):
            raise ExportError(f"variable_lengths {variable_lengths!r}: expected False, True or \"masked\"")
        self.spec = spec
        self.masked = MaskedLayers(self, opset, reverse) if variable_lengths == "masked" else None
        self.initial_state = initial_state
        self.variable_lengths = variable_lengths
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[tuple[str, np.ndarray]] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.constants.append((name, array))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))

    def build(self, module: nn.RNNBase) -> None:
        spec = self.spec
        is_lstm = spec["mode"] == "LSTM"
        states = ["h0", "c0"] if is_lstm else ["h0"]
        self._declare_io(states)
        x = "input"
        if spec["batch_first"]:
            self.node("Transpose", [x], ["input_time_major"], "input_to_time_major", perm=[1, 0, 2])
            x = "input_time_major"
        if self.masked:
            self.masked.masks(x)
        finals: dict[str, list[str]] = {"h": [], "c": []}
        for layer in range(spec["layers"]):
            last_time_major = layer == spec["layers"] - 1 and not spec["batch_first"]
            x, layer_finals = self._layer(module, layer, x, states, "output" if last_time_major else f"X_{layer + 1}")
            for key, value in layer_finals.items():
                finals[key].append(value)
        self._finish(x, finals, is_lstm)

    def _declare_io(self, states: list[str]) -> None:
        spec = self.spec
        seq_batch = [BATCH, SEQ] if spec["batch_first"] else [SEQ, BATCH]
        self.inputs.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [*seq_batch, spec["input_size"]]))
        state_dims = [spec["layers"] * spec["dirs"], BATCH, spec["hidden"]]
        if self.initial_state:
            for name in states:
                self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, state_dims))
        if self.variable_lengths:
            self.inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [BATCH]))
        out_dims = [*seq_batch, spec["dirs"] * spec["hidden"]]
        self.outputs.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims))
        for name in ["h_n", "c_n"][: len(states)]:
            self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, state_dims))

    def _layer(
        self, module: nn.RNNBase, layer: int, x: str, states: list[str], out: str
    ) -> tuple[str, dict[str, str]]:
        spec = self.spec
        op = ONNX_OP[spec["mode"]]
        w, r, b = layer_weights(module, layer)
        if self.masked:
            finals = self.masked.layer(module, layer, x, states, out, (w, r, b))
            return out, {k: self._joined(v, f"{k}_n_l{layer}") for k, v in finals.items() if v}
        inputs = [x, self.const(f"W_{layer}", w), self.const(f"R_{layer}", r)]
        inputs.append(self.const(f"B_{layer}", b) if b is not None else "")
        inputs.append("sequence_lens" if self.variable_lengths is True else "")
        if self.initial_state:
            inputs += [self._layer_state(name, layer) for name in states]
        outs = [f"Y_{layer}", f"Y_h_{layer}"] + ([f"Y_c_{layer}"] if op == "LSTM" else [])
        attrs: dict[str, Any] = {"hidden_size": spec["hidden"]}
        if spec["dirs"] == 2:
            attrs["direction"] = "bidirectional"
        if op == "GRU":
            attrs["linear_before_reset"] = 1  # PyTorch applies the reset gate after the recurrence matmul
        if spec["mode"] == "RNN_RELU":
            attrs["activations"] = ["Relu"] * spec["dirs"]
        self.node(op, trim_optional(inputs), outs, f"{op.lower()}_l{layer}", **attrs)
        self._merge_directions(f"Y_{layer}", layer, out)
        return out, dict(zip("hc", outs[1:]))

    def _layer_state(self, name: str, layer: int) -> str:
        """Rows [layer*D, (layer+1)*D) of a stacked initial state, via Gather (same form in every opset)."""
        return self.layer_state(name, layer, 0, self.spec["dirs"])

    def layer_state(self, name: str, layer: int, first: int, count: int) -> str:
        """Rows [layer*D + first, layer*D + first + count) of a stacked initial state."""
        start = layer * self.spec["dirs"] + first
        if start == 0 and count == self.spec["layers"] * self.spec["dirs"]:
            return name
        tag = f"l{layer}" + (f"_d{first}" if count < self.spec["dirs"] else "")
        rows = self.const(f"{name}_rows_{tag}", np.arange(start, start + count, dtype=np.int64))
        self.node("Gather", [name, rows], [f"{name}_{tag}"], f"{name}_slice_{tag}", axis=0)
        return f"{name}_{tag}"

    def _joined(self, parts: list[str], out: str) -> str:
        if len(parts) == 1:
            return parts[0]
        self.node("Concat", parts, [out], f"join_{out}", axis=0)
        return out

    def _merge_directions(self, y: str, layer: int, out: str) -> None:
        """[seq, D, batch, H] → [seq, batch, D*H], the layout PyTorch hands to the next layer."""
        spec = self.spec
        if spec["dirs"] == 2:
            self.node("Transpose", [y], [f"{y}_t"], f"merge_dirs_t_l{layer}", perm=[0, 2, 1, 3])
            shape = self.const(f"merge_shape_l{layer}", np.array([0, 0, -1], dtype=np.int64))
            y = f"{y}_t"
        else:
            shape = self.const(f"merge_shape_l{layer}", np.array([0, -1, spec["hidden"]], dtype=np.int64))
        self.node("Reshape", [y, shape], [out], f"merge_dirs_l{layer}")

    def _finish(self, x: str, finals: dict[str, list[str]], is_lstm: bool) -> None:
        if self.spec["batch_first"]:
            self.node("Transpose", [x], ["output"], "output_to_batch_first", perm=[1, 0, 2])
        for key in ("h", "c") if is_lstm else ("h",):
            self.node("Concat", finals[key], [f"{key}_n"], f"{key}_n", axis=0)


