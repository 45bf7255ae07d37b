"""Portable ragged graphs (``[inputs] variable_lengths = "masked"``): the result does not depend on a runtime
honouring the recurrent operators' ``sequence_lens`` input, which OpenVINO's ONNX frontend ignores.

Per layer and direction group, with T steps, lengths L[b] and valid[t, b] = t < L[b]:

    forward:   Y = RNN(X)                               (steps past L[b] are computed, then discarded)
    backward:  Y = ReverseSequence(RNN(ReverseSequence(X, L)), L)    (each row reversed within its length)
               or, with reverse = "GatherElements" (runtimes without ReverseSequence, such as tract), the same
               permutation as GatherElements(X, src) on the time axis, src[t, b] = L[b] − 1 − t where valid,
               else t (it is its own inverse, so one index tensor reverses X and Y)
    output:    Where(valid, Y, 0);  h_n: Y at step L[b] − 1, picked with Where(t == L[b] − 1) and ReduceSum
    c_n (LSTM): the node's own final cell state, kept through the padded steps by a mask feature m = ¬valid
                appended to X whose weight column drives the forget gate to 1 and the input gate to 0

Each direction is its own forward node, so both see their padded steps last. Needs opset 11 (Range).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from torch import nn

from rnnexport.contract import GATE_SATURATION, REVERSE_OPS
from rnnexport.errors import ExportError
from rnnexport.export.gates import ONNX_OP, trim_optional

MIN_MASKED_OPSET = 11


def check_opset(opset: int) -> None:
    if opset < MIN_MASKED_OPSET:
        raise ExportError(f'variable_lengths = "masked" needs opset {MIN_MASKED_OPSET} or newer (Range, '
                          f"ReverseSequence); this config has {opset}")


def lstm_mask_column(w: np.ndarray, hidden: int) -> np.ndarray:
    """``W`` [1, 4H, in] with one more input column: +SAT on the forget rows, −SAT on the input rows
    (ONNX gate order i, o, f, c)."""
    column = np.zeros((w.shape[0], w.shape[1], 1), dtype=w.dtype)
    column[:, 0:hidden] = -GATE_SATURATION
    column[:, 2 * hidden:3 * hidden] = GATE_SATURATION
    return np.concatenate([w, column], axis=2)


class MaskedLayers:
    """The masked layers of one export, built into a ``_GraphBuilder`` (``g``) that owns nodes and constants."""

    def __init__(self, g: Any, opset: int, reverse: str = REVERSE_OPS[0]):
        check_opset(opset)
        if reverse not in REVERSE_OPS:
            raise ExportError(f"reverse {reverse!r}: expected one of {', '.join(REVERSE_OPS)}")
        self.g, self.opset, self.reverse = g, opset, reverse

    def masks(self, x: str) -> None:
        """``valid`` [T, B, 1] bool, ``last`` [T, B, 1] bool (t == L − 1), ``pad`` [T, B, 1] float (¬valid)."""
        g = self.g
        g.node("Shape", [x], ["m_shape"], "m_shape")
        g.node("Gather", ["m_shape", g.const("m_zero", np.array(0, np.int64))], ["m_steps64"], "m_steps", axis=0)
        g.node("Cast", ["m_steps64"], ["m_steps"], "m_steps_int32", to=TensorProto.INT32)
        g.node("Range", [g.const("m_start", np.array(0, np.int32)), "m_steps", g.const("m_one", np.array(1, np.int32))],
               ["m_t"], "m_range")
        self._add_axis("m_t", "m_t_col", 1)
        g.node("Less", ["m_t_col", "sequence_lens"], ["m_valid2"], "m_valid2")
        g.node("Sub", ["sequence_lens", "m_one"], ["m_last_step"], "m_last_step")
        g.node("Equal", ["m_t_col", "m_last_step"], ["m_last2"], "m_last2")
        for name in ("m_valid", "m_last"):
            self._add_axis(f"{name}2", name, 2)
        g.node("Not", ["m_valid"], ["m_pad_bool"], "m_pad_bool")
        # Where between float constants, not a Cast to FLOAT: converters to float16 (onnxconverter-common's
        # keep_io_types) retype the constants and the tensor but leave a Cast's `to`, which no runtime then loads
        g.node("Where", ["m_pad_bool", g.const("m_one_f", np.ones(1, np.float32)),
                         g.const("m_zero_f", np.zeros(1, np.float32))], ["m_pad"], "m_pad")
        g.node("Cast", ["sequence_lens"], ["m_lengths64"], "m_lengths64", to=TensorProto.INT64)  # ReverseSequence's
        if self.reverse == "GatherElements" and self.g.spec["dirs"] == 2:
            self._reverse_indices()

    def _reverse_indices(self) -> None:
        """``m_src`` [T, B, 1] int64: L − 1 − t on valid steps, t on padded ones."""
        g = self.g
        g.node("Sub", ["m_last_step", "m_t_col"], ["m_mirror"], "m_mirror")
        g.node("Where", ["m_valid2", "m_mirror", "m_t_col"], ["m_src2"], "m_src2")
        g.node("Cast", ["m_src2"], ["m_src2_64"], "m_src2_64", to=TensorProto.INT64)
        self._add_axis("m_src2_64", "m_src", 2)

    def _reverse(self, x: str, out: str, name: str) -> None:
        """``out``: ``x`` [T, B, F] with each row reversed within its length (padded steps stay in place)."""
        g = self.g
        if self.reverse == "ReverseSequence":
            g.node("ReverseSequence", [x, "m_lengths64"], [out], name, batch_axis=1, time_axis=0)
            return
        g.node("Shape", [x], [f"{out}_shape"], f"{name}_shape")
        g.node("Expand", ["m_src", f"{out}_shape"], [f"{out}_src"], f"{name}_indices")
        g.node("GatherElements", [x, f"{out}_src"], [out], name, axis=0)

    def _add_axis(self, x: str, out: str, axis: int) -> None:
        """A trailing axis of size 1 (Unsqueeze's axes moved from attribute to input in opset 13)."""
        if self.opset < 13:
            self.g.node("Unsqueeze", [x], [out], f"{out}_unsqueeze", axes=[axis])
        else:
            shape = [-1, 1] if axis == 1 else [0, 0, 1]
            target = self.g.const(f"{out}_shape", np.array(shape, np.int64))
            self.g.node("Reshape", [x, target], [out], f"{out}_reshape")

    def layer(self, module: nn.Module, layer: int, x: str, states: list[str], out: str,
              weights: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> dict[str, list[str]]:
        """Both direction groups of one layer; ``out`` receives the masked [T, B, D*H] output. Returns the
        final states per direction, in PyTorch's order."""
        g, spec = self.g, self.g.spec
        w, r, b = weights
        ys: list[str] = []
        finals: dict[str, list[str]] = {"h": [], "c": []}
        for d in range(spec["dirs"]):
            tag = f"l{layer}" + ("_reverse" if d else "")
            x_d = x
            if d:
                self._reverse(x, f"X_{tag}", f"reverse_in_{tag}")
                x_d = f"X_{tag}"
            y, h, c = self._direction(tag, layer, d, x_d, states, (w[d:d + 1], r[d:d + 1],
                                                                     None if b is None else b[d:d + 1]))
            if d:
                self._reverse(y, f"Y_{tag}_aligned", f"reverse_out_{tag}")
                y = f"Y_{tag}_aligned"
            ys.append(y)
            finals["h"].append(h)
            if c:
                finals["c"].append(c)
        joined = ys[0]
        if len(ys) == 2:
            g.node("Concat", ys, [f"Y_l{layer}_both"], f"join_dirs_l{layer}", axis=2)
            joined = f"Y_l{layer}_both"
        g.node("Where", ["m_valid", joined, "m_zero_f"], [out],
               f"zero_padding_l{layer}")
        return finals

    def _direction(self, tag: str, layer: int, d: int, x: str, states: list[str],
                   weights: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> tuple[str, str, str | None]:
        """One forward node over ``x``: its [T, B, H] output, h at each row's last valid step, and (LSTM) c."""
        g, spec = self.g, self.g.spec
        op = ONNX_OP[spec["mode"]]
        w, r, b = weights
        if op == "LSTM":
            g.node("Concat", [x, "m_pad"], [f"X_{tag}_flagged"], f"flag_padding_{tag}", axis=2)
            x, w = f"X_{tag}_flagged", lstm_mask_column(w, spec["hidden"])
        inputs = [x, g.const(f"W_{tag}", w), g.const(f"R_{tag}", r), g.const(f"B_{tag}", b) if b is not None else ""]
        inputs.append("")  # no sequence_lens: the point of this graph
        if g.initial_state:
            inputs += [g.layer_state(name, layer, d, 1) for name in states]
        outs = [f"Y_{tag}", f"Y_h_{tag}"] + ([f"Y_c_{tag}"] if op == "LSTM" else [])
        attrs: dict[str, Any] = {"hidden_size": spec["hidden"]}
        if op == "GRU":
            attrs["linear_before_reset"] = 1
        if spec["mode"] == "RNN_RELU":
            attrs["activations"] = ["Relu"]
        g.node(op, trim_optional(inputs), outs, f"{op.lower()}_{tag}", **attrs)
        shape = g.const(f"squeeze_shape_{tag}", np.array([0, -1, spec["hidden"]], dtype=np.int64))
        g.node("Reshape", [f"Y_{tag}", shape], [f"Y_{tag}_3d"], f"squeeze_dirs_{tag}")
        g.node("Where", ["m_last", f"Y_{tag}_3d", "m_zero_f"],
               [f"Y_{tag}_last"], f"pick_last_{tag}")
        self._reduce_time(f"Y_{tag}_last", f"h_{tag}")
        return f"Y_{tag}_3d", f"h_{tag}", (f"Y_c_{tag}" if op == "LSTM" else None)

    def _reduce_time(self, x: str, out: str) -> None:
        if self.opset < 13:
            self.g.node("ReduceSum", [x], [out], f"sum_{out}", axes=[0], keepdims=1)
        else:
            self.g.node("ReduceSum", [x, self.g.const(f"axes_{out}", np.array([0], np.int64))], [out], f"sum_{out}",
                        keepdims=1)

