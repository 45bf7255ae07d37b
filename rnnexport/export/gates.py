"""What PyTorch's recurrent modules and ONNX's recurrent operators name differently: gate order and op type.

Both the native graph (``native.py``) and the masked ragged graph (``masked.py``) write nodes with these.
"""

from __future__ import annotations

# Row blocks of PyTorch's stacked gate weights, in the order ONNX wants them.
# LSTM: PyTorch i, f, g, o → ONNX i, o, f, c.   GRU: PyTorch r, z, n → ONNX z, r, h.
LSTM_TORCH_TO_ONNX = (0, 3, 1, 2)
GRU_TORCH_TO_ONNX = (1, 0, 2)
RNN_TORCH_TO_ONNX = (0,)
ONNX_OP = {"GRU": "GRU", "LSTM": "LSTM", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}  # PyTorch mode → ONNX op type
GATE_ORDER = {"GRU": GRU_TORCH_TO_ONNX, "LSTM": LSTM_TORCH_TO_ONNX, "RNN_TANH": RNN_TORCH_TO_ONNX,
              "RNN_RELU": RNN_TORCH_TO_ONNX}


def trim_optional(inputs: list[str]) -> list[str]:
    """Drop trailing empty names: optional inputs are left out rather than named ''."""
    while inputs and inputs[-1] == "":
        inputs.pop()
    return inputs
