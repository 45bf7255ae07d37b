"""Every formulation of a stacked RNN computes the native module's function and exports the same bytes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.cli import main
from rnnexport.config import Tolerance, load_config, parse_config
from rnnexport.export.builders import build_model
from rnnexport.export.native import export_onnx
from rnnexport.formulations import FORMULATIONS, compare_formulations, dropout_masks, make_formulation
from rnnexport.formulations.compare import _call, _max_diff
from rnnexport.verification.cases import make_feeds

GRID = [
    (cell, layers, bidirectional, initial_state)
    for cell, layers, bidirectional, initial_state in itertools.product(
        ["gru", "lstm", "rnn_tanh", "rnn_relu"], [1, 2, 4], [False, True], [False, True])
]


def _config(cell, layers, bidirectional, initial_state, batch_first=False, bias=True, dropout=0.0):
    return parse_config(
        {"name": "f", "cell": cell, "input_size": 5, "hidden_size": 7, "num_layers": layers, "seed": layers,
         "bidirectional": bidirectional, "batch_first": batch_first, "bias": bias, "dropout": dropout,
         "inputs": {"initial_state": initial_state}, "example": {"seq_len": 9, "batch": 3}},
        "test")


def _feeds(cfg):
    arrays = make_feeds(cfg, 9, 3, np.random.default_rng(0))
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


@pytest.mark.parametrize(("cell", "layers", "bidirectional", "initial_state"), GRID)
def test_every_formulation_agrees_with_native(cell, layers, bidirectional, initial_state):
    cfg = _config(cell, layers, bidirectional, initial_state, batch_first=layers == 2, bias=layers != 4)
    native = build_model(cfg)
    feeds = _feeds(cfg)
    reference_bytes = export_onnx(native).SerializeToString()
    with torch.no_grad():
        expected = _call(native, feeds)
        for kind in FORMULATIONS[1:]:
            if bidirectional and kind in ("time_major", "scripted"):
                with pytest.raises(ValueError, match=f"{kind} is not defined: in a bidirectional stack"):
                    make_formulation(native, kind)
                continue
            module = make_formulation(native, kind)
            assert _max_diff(expected, _call(module, feeds)) < 1e-6, kind
            assert export_onnx(module).SerializeToString() == reference_bytes, kind


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_with_fixed_masks_agrees_across_orders(bidirectional):
    cfg = _config("lstm", 3, bidirectional, True, dropout=0.5)
    native = build_model(cfg)
    feeds = _feeds(cfg)
    masks = dropout_masks(native, 9, 3, seed=1)
    assert 0.3 < float((masks[0] == 0).float().mean()) < 0.7  # the masks really drop
    kinds = ["layer_major", "stacked"] + ([] if bidirectional else ["time_major"])
    with torch.no_grad():
        outs = {k: _call(make_formulation(native, k).train(), feeds, masks) for k in kinds}
        eval_out = _call(make_formulation(native, "layer_major"), feeds)
    for kind in kinds[1:]:
        assert _max_diff(outs["layer_major"], outs[kind]) < 1e-6, kind
    assert _max_diff(outs["layer_major"], eval_out) > 1e-2  # dropout changed the result


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_cli_formulations_on_every_shipped_config(path):
    result = CliRunner().invoke(main, ["formulations", str(path), "--repeats", "1"])
    assert result.exit_code == 0, result.output
    cfg = load_config(path)
    assert result.output.startswith(f"{cfg.name}: all formulations agree (example seq {cfg.example.seq_len}")
    shown = [line.split()[0] for line in result.output.splitlines()[2:] if line.startswith("  ") and ":" not in line
             and not line.startswith(("  layer_major runs", "  layer_major against", "  dropout"))]
    assert shown == (["native", "stacked", "layer_major"] if cfg.bidirectional else list(FORMULATIONS))
    if cfg.bidirectional:
        assert "  time_major: not defined: in a bidirectional stack" in result.output
    else:  # measured, or said to be unmeasurable on a busy machine, never a ratio of noisy medians
        noisy = "layer_major against time_major: not compared, their timings stayed noisy" in result.output
        assert ("layer_major runs" in result.output) != noisy
        assert noisy == any("(noisy)" in line for line in result.output.splitlines()
                            if line.split()[:1] in (["layer_major"], ["time_major"]))
    if cfg.dropout:
        assert "dropout (training mode, one fixed set of masks)" in result.output


def test_report_numbers_and_verdict():
    cfg = load_config(next(p for p in SHIPPED if p.stem == "lstm_dropout_ragged"))
    report = compare_formulations(cfg, repeats=2)
    ok = [r for r in report.results if r.status == "ok"]
    assert [r.name for r in ok] == list(FORMULATIONS)
    assert len({r.onnx_sha256 for r in ok}) == 1
    assert all(r.max_abs_vs_oracle < 1e-6 and r.seconds > 0 for r in ok)
    assert set(report.dropout) == {"stacked", "time_major"}
    assert report.passed(cfg.tolerance)
    assert not report.passed(Tolerance(1e-12, 0.0))  # float32 formulations differ in the last bits
