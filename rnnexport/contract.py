"""The ONNX graph contract every rnnexport model keeps (README, "The ONNX graph"): names only, no imports.

Inputs, in this order when present: ``input``, ``h0``, ``c0`` (LSTM), ``sequence_lens`` (int32, [batch]).
Outputs, in this order: ``output``, ``h_n``, ``c_n`` (LSTM). Dynamic dims are named ``seq`` and ``batch``.
"""

RECURRENT_OPS = ("GRU", "LSTM", "RNN")
INPUT, H0, C0, LENGTHS = "input", "h0", "c0", "sequence_lens"
OUTPUT, H_N, C_N = "output", "h_n", "c_n"
SEQ, BATCH = "seq", "batch"


def output_names(is_lstm: bool) -> tuple[str, ...]:
    return (OUTPUT, H_N, C_N) if is_lstm else (OUTPUT, H_N)


def input_names(is_lstm: bool, initial_state: bool, variable_lengths: bool) -> list[str]:
    names = [INPUT]
    if initial_state:
        names += [H0, C0] if is_lstm else [H0]
    if variable_lengths:
        names.append(LENGTHS)
    return names
