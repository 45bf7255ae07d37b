"""Property tests over the whole config space: build → export → ONNX Runtime (CPU) matches PyTorch.

Profiles (HYPOTHESIS_PROFILE): "ci" (the default, 500 examples) and "long" (2,000 examples):
    HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from conftest import max_abs_diff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnexport.artifacts.build import export_config
from rnnexport.config import MIN_OPSET, newest_opset, parse_config
from rnnexport.export.native import op_counts, recurrent_nodes
from rnnexport.verification.cases import make_feeds
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.torch_runner import TorchRunner

settings.register_profile("ci", max_examples=500, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

configs = st.fixed_dictionaries({
    "name": st.just("prop"),
    "cell": st.sampled_from(["gru", "lstm", "rnn_tanh", "rnn_relu"]),
    "num_layers": st.integers(1, 4),
    "input_size": st.integers(1, 64),
    "hidden_size": st.integers(1, 64),
    "bidirectional": st.booleans(),
    "batch_first": st.booleans(),
    "bias": st.booleans(),
    "opset": st.integers(MIN_OPSET, newest_opset()),
    "seed": st.integers(0, 2**32),
    "inputs": st.fixed_dictionaries({"initial_state": st.booleans(), "variable_lengths": st.booleans()}),
})
shapes = st.tuples(st.integers(1, 40), st.integers(1, 6))  # (seq_len, batch)


@given(raw=configs, shape=shapes, data_seed=st.integers(0, 2**16), ragged=st.booleans())
def test_export_matches_pytorch_anywhere_in_the_config_space(raw, shape, data_seed, ragged):
    cfg = parse_config(raw, "property")
    module, model = export_config(cfg)
    onnx.checker.check_model(model, full_check=True)
    assert len(recurrent_nodes(model)) == cfg.num_layers
    assert not {"Loop", "Scan"} & set(op_counts(model))
    feeds = make_feeds(cfg, *shape, np.random.default_rng(data_seed), lengths="ragged" if ragged else "full")
    with TorchRunner(module) as expected_runner, OrtRunner(model.SerializeToString()) as actual_runner:
        expected = expected_runner.infer(feeds)
        actual = actual_runner.infer(feeds)
    scale = max(float(np.abs(v).max(initial=0.0)) for v in expected.values())
    assert max_abs_diff(expected, actual) <= 1e-5 + 1e-5 * scale
