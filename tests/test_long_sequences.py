"""Long sequences at a memory that does not grow with them: PyTorch runs them in pieces, the engine keeps one
runner open and one runner's outputs alive at a time. Each piece-wise result is compared with the whole-sequence
one computed by PyTorch itself."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from conftest import SHIPPED
from torch import nn

from rnnexport.artifacts.build import export_config
from rnnexport.config import load_config
from rnnexport.verification.cases import make_cases
from rnnexport.verification.engine import run_engine, runtime_specs, tolerances_for
from rnnexport.verification.runners import torch_runner
from rnnexport.verification.runners.ort_runner import CPU
from rnnexport.verification.runners.torch_runner import Float64Oracle, TorchRunner

MODULES = [(nn.GRU, {}), (nn.LSTM, {}), (nn.RNN, {"nonlinearity": "relu"}), (nn.RNN, {"bias": False})]


@pytest.mark.parametrize("kind, extra", MODULES, ids=["gru", "lstm", "rnn_relu", "rnn_tanh_nobias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_pieces_compute_what_the_whole_sequence_computes(monkeypatch, kind, extra, bidirectional, batch_first):
    """50 steps in pieces of 7 (the last one shorter), with and without initial states, in float64 and float32."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    module = kind(5, 7, 3, bidirectional=bidirectional, batch_first=batch_first, **extra)
    rows = 6 if bidirectional else 3
    x = rng.standard_normal((3, 50, 5) if batch_first else (50, 3, 5)).astype(np.float32)
    states = {"initial_h": rng.uniform(-1, 1, (rows, 3, 7)).astype(np.float32)}
    if kind is nn.LSTM:
        states["initial_c"] = rng.standard_normal((rows, 3, 7)).astype(np.float32)
    for runner, atol in ((Float64Oracle(module), 1e-14), (TorchRunner(module), 2e-6)):
        for feeds in ({"input": x}, {"input": x, **states}):
            whole = runner.infer(feeds)
            with monkeypatch.context() as patch:
                patch.setattr(torch_runner, "CHUNK_STEPS", 7)
                pieces = runner.infer(feeds)
            assert set(pieces) == set(whole)
            for name in whole:
                assert pieces[name].shape == whole[name].shape, name
                assert pieces[name].dtype == whole[name].dtype, name
                np.testing.assert_allclose(pieces[name], whole[name], rtol=0, atol=atol, err_msg=name)


def test_lengths_that_are_all_full_run_in_pieces_too(monkeypatch):
    """``sequence_lens`` equal to the sequence changes nothing, so it does not force the whole-sequence packing."""
    torch.manual_seed(1)
    module = nn.GRU(4, 6, 2)
    x = np.random.default_rng(1).standard_normal((40, 2, 4)).astype(np.float32)
    oracle = Float64Oracle(module)
    plain = oracle.infer({"input": x})
    monkeypatch.setattr(torch_runner, "CHUNK_STEPS", 9)
    full = oracle.infer({"input": x, "sequence_lens": np.array([40, 40], np.int32)})
    np.testing.assert_allclose(full["output"], plain["output"], rtol=0, atol=1e-14)
    ragged = oracle.infer({"input": x, "sequence_lens": np.array([40, 13], np.int32)})
    assert np.all(ragged["output"][13:, 1] == 0) and np.abs(ragged["output"][:13, 1]).max() > 0


@pytest.mark.parametrize("kind, extra", MODULES[:3], ids=["gru", "lstm", "rnn_relu"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("rows_at_once", [1, 3])
def test_ragged_rows_in_groups_compute_what_packing_computes(monkeypatch, kind, extra, bidirectional, batch_first,
                                                             rows_at_once):
    """A ragged batch longer than the pieces is packed in groups of rows (here 3, then the last row alone) or row by
    row over each row's own length, in pieces: PyTorch's result for the whole batch packed."""
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    module = kind(5, 7, 2, bidirectional=bidirectional, batch_first=batch_first, **extra)
    rows = 4 if bidirectional else 2
    feeds = {"input": rng.standard_normal((4, 50, 5) if batch_first else (50, 4, 5)).astype(np.float32),
             "sequence_lens": np.array([50, 1, 23, 8], np.int32),
             "initial_h": rng.uniform(-1, 1, (rows, 4, 7)).astype(np.float32)}
    if kind is nn.LSTM:
        feeds["initial_c"] = rng.standard_normal((rows, 4, 7)).astype(np.float32)
    oracle = Float64Oracle(module)
    packed = oracle.infer(feeds)
    monkeypatch.setattr(torch_runner, "CHUNK_STEPS", 7)
    row_bytes = 50 * (module.weight_ih_l0.shape[0] + 7) * (2 if bidirectional else 1) * 8
    monkeypatch.setattr(torch_runner, "PACKED_BYTES", rows_at_once * row_bytes)
    rowwise = oracle.infer(feeds)
    assert set(rowwise) == set(packed)
    for name in packed:
        assert rowwise[name].shape == packed[name].shape, name
        np.testing.assert_allclose(rowwise[name], packed[name], rtol=0, atol=1e-14, err_msg=name)
    padding = rowwise["output"][:, 8:] if batch_first else rowwise["output"][8:]
    assert np.all((padding[3] if batch_first else padding[:, 3]) == 0)


def test_pieces_of_a_subclass_leave_torchs_generator_alone(monkeypatch):
    """A user's own subclass of nn.GRU (its constructor takes no arguments) runs in pieces too, and the pieces
    draw nothing from torch's random generator."""

    class Encoder(nn.GRU):
        def __init__(self):
            super().__init__(4, 6, num_layers=2, bidirectional=True)

    torch.manual_seed(3)
    module = Encoder()
    x = np.random.default_rng(3).standard_normal((30, 2, 4)).astype(np.float32)
    oracle = Float64Oracle(module)
    whole = oracle.infer({"input": x})
    monkeypatch.setattr(torch_runner, "CHUNK_STEPS", 7)
    state = torch.get_rng_state()
    pieces = oracle.infer({"input": x})
    assert torch.equal(torch.get_rng_state(), state)
    for name in whole:
        np.testing.assert_allclose(pieces[name], whole[name], rtol=0, atol=1e-14, err_msg=name)


class _Recorded:
    """A real runner whose opening and closing is written to ``events``."""

    def __init__(self, spec, events):
        self.spec, self.events = spec, events

    def __call__(self):
        @contextlib.contextmanager
        def opened():
            with self.spec.open() as runner:
                self.events.append(("open", runner.name))
                yield runner
                self.events.append(("close", runner.name))
        return opened()


def test_the_engine_keeps_one_runner_open_at_a_time():
    """Whatever a runtime keeps after the longest case (OpenVINO keeps the buffers of its largest shape) goes
    before the next runtime runs; the report is the same as ever."""
    cfg = load_config(next(p for p in SHIPPED if p.stem == "gru_2layer"))
    module, model = export_config(cfg)
    data = model.SerializeToString()
    events: list[tuple[str, str]] = []
    specs = [dataclasses.replace(s, open=_Recorded(s, events))
             for s in runtime_specs(data, (CPU,), ("ort", "openvino"))]
    cases = make_cases(cfg, 0, ("example", "long"), 300)
    report = run_engine(cfg.name, data, Float64Oracle(module), cases, specs, config=cfg.to_dict(),
                        tolerances=tolerances_for(cfg))
    opened = [name for what, name in events if what == "open"]
    assert opened == [s.name for s in specs if s.name in opened] and len(opened) >= 2
    assert events == [e for name in opened for e in (("open", name), ("close", name))]
    assert report.passed(), report.failures()
    for runner in report.runners:
        if runner.status == "ok":
            assert set(runner.drift) == {"example", "long"}
            if runner.precision == "float32":
                assert runner.drift["long"]["output"].max_abs < cfg.tolerance.atol
