"""Names shared across rnnexport, defined here only and importing nothing: the ONNX graph contract every
rnnexport model keeps (docs/graph.md), the files rnnexport writes, and the names the CLI offers.

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
# How a masked (ragged) graph reverses each row within its length for a backward direction: ONNX's
# ReverseSequence, or GatherElements with indices computed from sequence_lens (for runtimes without
# ReverseSequence, such as tract). The first is the default.
REVERSE_OPS = ("ReverseSequence", "GatherElements")
# A masked LSTM's padding flag (X's last column, 1 on padded steps) has this weight: +GATE_SATURATION on the forget
# rows, −GATE_SATURATION on the input rows, so sigmoid saturates to exactly 1 and 0 in float32, bf16 and f16 and c
# is held through the padded steps (export/masked.py writes it, verification/hypotheses.py recomputes it).
GATE_SATURATION = 1e4
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


# Files rnnexport writes (an artifact folder: model, weights, manifest, variants and verify's reports; beside the
# folders: index.json). No model may be named like one of them.
MODEL_FILE, WEIGHTS_FILE, MANIFEST_FILE = "model.onnx", "weights.pt", "manifest.json"
REPORT_FILE, MARKDOWN_FILE, INPUTS_FILE = "report.json", "report.md", "inputs.npz"
REPORT_FILES = (REPORT_FILE, MARKDOWN_FILE, INPUTS_FILE)  # what verify writes into an artifact folder
INDEX_FILE = "index.json"
VARIANT_FILES = {kind: f"model.{kind}.onnx" for kind in VARIANTS}  # variant → its file beside model.onnx
RESERVED_NAMES = (INDEX_FILE, MODEL_FILE, WEIGHTS_FILE, MANIFEST_FILE, *REPORT_FILES, *VARIANT_FILES.values())

# What the CLI offers by name (here, so that `rnnexport --help` imports neither numpy nor torch).
WHOLE_MODEL_CASES = ("example", "seq1", "batch1", "long", "other_batch")  # what verify_model runs
CASE_NAMES = ("example", "seq1", "batch1", "long", "other_batch", "saturating", "tiny", "zero_state", "ragged",
              "ragged_saturating", "streaming")
EXPORTERS = ("native", "torch-dynamo", "torch-script")
DEFAULT_FAMILIES = ("torch", "ort", "openvino")  # what verify runs without --runtimes
FAMILIES = (*DEFAULT_FAMILIES, "tract", "iree")  # runner families `verify --runtimes` picks from; the last two
# only when named
# Threads in verify unless --threads says otherwise (engine.thread_plan). "auto": one thread for PyTorch and each
# runtime, the next runners opened on a second thread while one runs. One thread: on a shared 2-core machine the
# runtimes' own defaults (all cores, spinning) made verify of the 8 shipped artifacts 6× slower in wall time and
# 7× in CPU time than one thread (106 s vs 17.6 s wall, 2026-11-30), while on the same machine quiet they gained
# 10% (10.1 s vs 11.2 s wall, for 32% more CPU) (docs/verify.md). 0: each runtime's own default.
AUTO_THREADS = "auto"
DEFAULT_THREADS = AUTO_THREADS
MAX_THREADS = 1024
