"""What a runtime that ignores ``sequence_lens`` does, told apart from other drift in words a deployer can act on.

PyTorch's ``pack_padded_sequence`` semantics: outputs past a row's length are zero, and the final state is
the state at the row's last valid step (for a backward direction: after running from that step to 0).
A runtime that ignores ``sequence_lens`` computes the padded steps too: non-zero outputs there, and a final
state taken at the padded end.
"""

from __future__ import annotations

import numpy as np
import onnx

from rnnexport.contract import H_N, LENGTHS, OUTPUT
from rnnexport.graph.subgraphs import recurrent_nodes
from rnnexport.verification.cases import Case

PORTABLE = 'rebuild with [inputs] variable_lengths = "masked" for a graph that does not depend on it'


def reads_sequence_lens(model: onnx.ModelProto) -> bool:
    """Whether a recurrent node of ``model`` reads ``sequence_lens``: only then can a runtime's ignoring it explain
    a ragged case (a masked graph's nodes never read it)."""
    return any(len(n.input) > 4 and n.input[4] for n in recurrent_nodes(model))


def ragged_hints(case: Case, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, str]:
    """output → a sentence, for the outputs of a ragged case that look like ``sequence_lens`` was ignored. Only
    outputs of the oracle's shape and of a real-number type are read: any other is a failure the drift already
    names (its shape, its type), and no hint is given for it."""
    lengths = case.feeds.get(LENGTHS)
    y, want = actual.get(OUTPUT), expected.get(OUTPUT)
    if lengths is None or y is None or want is None or case.chunks or case.time_axis is None:
        return {}  # no time axis: a whole model's own inputs, whose names say nothing of their roles
    if y.shape != want.shape or y.ndim != 3 or y.dtype.kind not in "fiu" or not np.isfinite(y).all():
        return {}  # another shape, type or NaN/Inf: the drift names it, and no hint would be true
    time_major = np.moveaxis(y, case.time_axis, 0).astype(np.float64)
    steps = time_major.shape[0]
    padded = max((float(np.abs(time_major[n:, b]).max()) for b, n in enumerate(lengths) if n < steps), default=0.0)
    if padded == 0.0:
        return {}
    hints = {OUTPUT: f"outputs past a row's length are not zero (up to {padded:.3g}): the runtime does not "
                     f"honour sequence_lens; {PORTABLE}"}
    if H_N in actual:
        hints[H_N] = ("the final state is not taken at each row's length: the runtime does not honour "
                      f"sequence_lens; {PORTABLE}")
        if "c_n" in actual:
            hints["c_n"] = hints[H_N]
    return hints
