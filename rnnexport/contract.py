"""The ONNX graph contract every rnnexport model keeps (README, "The ONNX graph"): names only, no imports.

Inputs, in this order when present: ``input``, ``h0``, ``c0`` (LSTM), ``sequence_lens`` (int32, [batch]).
Outputs, in this order: ``output``, ``h_n``, ``c_n`` (LSTM). Dynamic dims are named ``seq`` and ``batch``.
"""

RECURRENT_OPS = ("GRU", "LSTM", "RNN")
ONNX_DOMAINS = ("", "ai.onnx")
# Recurrent operators outside ONNX's domain that rnnexport knows, and the cell each computes.
CONTRIB_RECURRENT = {("com.microsoft", "DynamicQuantizeLSTM"): "LSTM"}


def recurrent_cell(domain: str, op_type: str) -> str | None:
    """The ONNX cell op (GRU, LSTM, RNN) a node of this domain and type computes, or None: ``LSTM`` in
    another domain (``com.example:LSTM``) is not ONNX's LSTM."""
    if domain in ONNX_DOMAINS:
        return op_type if op_type in RECURRENT_OPS else None
    return CONTRIB_RECURRENT.get((domain, op_type))
INPUT, H0, C0, LENGTHS = "input", "h0", "c0", "sequence_lens"
OUTPUT, H_N, C_N = "output", "h_n", "c_n"
SEQ, BATCH = "seq", "batch"
# Deployment variants an artifact may carry beside model.onnx, as model.<variant>.onnx (see variants.py).
VARIANTS = ("fp16-weights", "int8-dynamic")


def output_names(is_lstm: bool) -> tuple[str, ...]:
    return (OUTPUT, H_N, C_N) if is_lstm else (OUTPUT, H_N)


def input_names(is_lstm: bool, initial_state: bool, variable_lengths: bool) -> list[str]:
    names = [INPUT]
    if initial_state:
        names += [H0, C0] if is_lstm else [H0]
    if variable_lengths:
        names.append(LENGTHS)
    return names
