"""What a runtime that ignores ``sequence_lens`` does, told apart from other drift in words a deployer can act on.

PyTorch's ``pack_padded_sequence`` semantics: outputs past a row's length are zero, and the final state is
the state at the row's last valid step (for a backward direction: after running from that step to 0).
A runtime that ignores ``sequence_lens`` computes the padded steps too: non-zero outputs there, and a final
state taken at the padded end.
"""

from __future__ import annotations

import numpy as np

from rnnexport.contract import H_N, LENGTHS, OUTPUT
from rnnexport.verification.cases import Case

PORTABLE = 'rebuild with [inputs] variable_lengths = "masked" for a graph that does not depend on it'


def ragged_hints(case: Case, actual: dict[str, np.ndarray]) -> dict[str, str]:
    """output → a sentence, for the outputs of a ragged case that look like ``sequence_lens`` was ignored."""
    lengths = case.feeds.get(LENGTHS)
    y = actual.get(OUTPUT)
    if lengths is None or y is None or y.ndim != 3 or case.chunks or case.time_axis is None:
        return {}  # no time axis: a whole model's own inputs, whose names say nothing of their roles
    time_major = np.moveaxis(y, case.time_axis, 0)
    steps = time_major.shape[0]
    short = [b for b, n in enumerate(lengths) if n < steps]
    padded = max((float(np.abs(time_major[n:, b]).max()) for b, n in enumerate(lengths) if n < steps), default=0.0)
    if not short or padded == 0.0:
        return {}
    hints = {OUTPUT: f"outputs past a row's length are not zero (up to {padded:.3g}): the runtime does not "
                     f"honour sequence_lens; {PORTABLE}"}
    if H_N in actual:
        hints[H_N] = ("the final state is not taken at each row's length: the runtime does not honour "
                      f"sequence_lens; {PORTABLE}")
        if "c_n" in actual:
            hints["c_n"] = hints[H_N]
    return hints
