"""IREE as a verify runner: real imports, compiles and runs (llvm-cpu on this CPU), dynamic where IREE lowers the
graph so and once per set of shapes where it does not, and its own limits told in words."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.artifacts.build import export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.contract import LENGTHS
from rnnexport.errors import RunnerFailed
from rnnexport.verification.cases import make_cases
from rnnexport.verification.engine import verify
from rnnexport.verification.runners.iree_runner import IREE, IreeRunner, first_error
from rnnexport.verification.runners.ort_runner import CPU

pytest.importorskip("iree.compiler", reason="IREE is not installed (pip install 'rnnexport[iree]')")
pytest.importorskip("iree.runtime", reason="IREE is not installed (pip install 'rnnexport[iree]')")

CONFIGS = {path.stem: path for path in SHIPPED}


def _runner(report, name=IREE):
    return next(r for r in report.runners if r.name == name)


@pytest.mark.parametrize("name,shapes", [("gru_2layer", "compiled per set of input shapes"),
                                         ("lstm_dropout_ragged", "dynamic")])
def test_iree_matches_the_oracle_at_shapes_other_than_the_export(name, shapes):
    """A GRU compiles once per set of input shapes, an LSTM (masked ragged graph) once with dynamic seq and batch;
    both land within float32 tolerance of the float64 oracle on cases whose shapes the export never saw."""
    cfg = load_config(CONFIGS[name])
    module, model = export_config(cfg)
    cases = ("batch1", "other_batch", "ragged") if cfg.inputs.variable_lengths else ("batch1", "other_batch")
    report = verify(module, model, cfg=cfg, providers=(CPU,), runtimes=("ort", "iree"), case_names=cases,
                    threads=1)
    iree = _runner(report)
    assert iree.status == "ok" and iree.kind == "iree" and iree.precision == "float32", iree.reason
    assert iree.settings["input_shapes"] == shapes and iree.settings["driver"] == "local-sync"
    assert iree.settings["iree"] == "3.13.0"
    assert set(iree.drift) == set(cases)
    worst = iree.worst()
    assert worst is not None and 0 < worst[2].max_abs < 5e-6, worst
    assert report.passed(), report.failures()


def test_iree_returns_the_graphs_outputs_by_name_equal_to_onnx_runtimes():
    """Two shapes through one runner: the graph's own output names, values equal to ONNX Runtime's to float32
    rounding, one compiled module per set of shapes (an RNN compiles only with fixed shapes)."""
    cfg = load_config(CONFIGS["rnn_tanh_nobias"])
    _, model = export_config(cfg)
    data = model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    with IreeRunner(data, threads=2) as runner:
        assert runner.settings["driver"] == "local-task"
        for seq, batch in ((3, 2), (11, 5)):
            feeds = {"input": rng.standard_normal((seq, batch, cfg.input_size)).astype(np.float32)}
            expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
            got = runner.infer(feeds)
            assert list(got) == list(expected)
            for key in expected:
                assert got[key].shape == expected[key].shape
                assert np.abs(got[key] - expected[key]).max() < 1e-5
        trial = ((2, 2, cfg.input_size),)  # compiled at open, where the graph as it is would not compile
        assert set(runner._modules) == {trial, ((3, 2, 8),), ((11, 5, 8),)}


def test_a_relu_rnn_iree_cannot_compile_is_that_runners_failure_in_words():
    """IREE 3.13 lowers no RNN with ReLU: the runner fails at open, saying so; the other runners' results stay."""
    cfg = load_config(CONFIGS["rnn_relu_batch_first"])
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, providers=(CPU,), runtimes=("ort", "iree"), case_names=("example",),
                    threads=1)
    iree = _runner(report)
    assert iree.status == "failed"
    assert iree.reason.startswith("could not load the model: IREE does not lower an RNN with activations other "
                                  "than Tanh (nodes rnn_l0, rnn_l1, rnn_l2)"), iree.reason
    assert _runner(report, "ort-cpu").status == "ok"
    with pytest.raises(RunnerFailed, match="IREE cannot compile this graph with dynamic shapes"):
        IreeRunner(model.SerializeToString())


def test_iree_ignoring_sequence_lens_is_said_and_diagnosed(tmp_path):
    """A graph whose nodes read sequence_lens: IREE runs every row to the end; verify fails the ragged case and
    says it is IREE's doing (its outputs equal ONNX Runtime's with every length set to the full sequence)."""
    text = CONFIGS["lstm_dropout_ragged"].read_text().replace('variable_lengths = "masked"', "variable_lengths = true")
    path = tmp_path / "lstm_lens.toml"
    path.write_text(text)
    cfg = load_config(path)
    module, model = export_config(cfg)
    case = next(c for c in make_cases(cfg, 0, ("ragged",)))
    steps = case.feeds["input"].shape[0]
    assert np.any(case.feeds[LENGTHS] < steps)
    full = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {**case.feeds, LENGTHS: np.full_like(case.feeds[LENGTHS], steps)})
    with IreeRunner(model.SerializeToString(), threads=1) as runner:
        got = runner.infer(case.feeds)
        assert np.abs(got["output"] - full[0]).max() < 1e-5  # every row run to the end
        hints = runner.explain(case, got)
        assert set(hints) == set(got) and all(h.startswith("IREE ignores sequence_lens: its ") for h in hints.values())
        example = dataclasses.replace(case, feeds={**case.feeds, LENGTHS: np.full_like(case.feeds[LENGTHS], steps)})
        assert runner.explain(example, runner.infer(example.feeds)) == {}  # nothing to say with full lengths
    result = CliRunner().invoke(main, ["verify", str(path), "--runtimes", "torch,ort,iree", "--cases",
                                       "example,ragged", "--threads", "1"])
    assert result.exit_code == 1, result.output
    assert "✗ iree-cpu: ragged/output: max |Δ|" in result.output
    assert "IREE ignores sequence_lens: its output matches this graph run at the full length" in result.output
    assert "diagnosis: layer 0, forward direction: sequence_lens is not honoured" in result.output


def test_require_names_the_iree_runner():
    runner = CliRunner()
    refused = runner.invoke(main, ["verify", str(CONFIGS["rnn_tanh_nobias"]), "--require", "iree-gpu"])
    assert refused.exit_code == 2 and "iree-cpu" in refused.output
    outside = runner.invoke(main, ["verify", str(CONFIGS["rnn_tanh_nobias"]), "--require", "iree-cpu"])
    assert outside.exit_code == 2 and "leave out iree" in outside.output


@pytest.mark.parametrize("text,said", [
    ("/tmp/x/dynamic.mlir:12:12: error: 'linalg.fill' op unexpected result\nnote: see current operation",
     "error: 'linalg.fill' op unexpected result"),
    ("Traceback (most recent call last):\n  File \"x\"\nValueError: no such op", "ValueError: no such op"),
    ("", "exited with code 3"),
    ("x: error: " + "a" * 300, "error: " + "a" * 153 + "…"),
])
def test_first_error_line(text, said):
    assert first_error(text, 3) == said

