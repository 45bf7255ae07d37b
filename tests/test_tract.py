"""tract as a verify runner: real runs in a child process, its panics isolated, its own bugs told in words, and the
masked bidirectional graph it can run (reverse = "GatherElements")."""

from __future__ import annotations

import functools
import json
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import SHIPPED, write_config

from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.errors import ConfigError, RunnerFailed
from rnnexport.export.native import export_onnx, op_counts
from rnnexport.verification.cases import make_cases
from rnnexport.verification.engine import run_engine, runtime_specs, tolerances_for, verify
from rnnexport.verification.runners import RunnerSpec, tract_runner
from rnnexport.verification.runners.ort_runner import CPU
from rnnexport.verification.runners.torch_runner import Float64Oracle
from rnnexport.verification.runners.tract_runner import TRACT, TractRunner, panic_line

pytest.importorskip("tract", reason="tract is not installed (pip install 'rnnexport[tract]')")

CONFIGS = {path.stem: path for path in SHIPPED}
GATHER = 'reverse = "GatherElements"\n'


def _runner(report, name=TRACT):
    return next(r for r in report.runners if r.name == name)


def test_tract_matches_the_oracle_per_case_shape():
    """Every case runs at its own shapes (the child loads once per shape) and lands within float32 tolerance."""
    cfg = load_config(CONFIGS["lstm_3layer_bidir"])
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, providers=(CPU,), runtimes=("ort", "tract"))
    tract = _runner(report)
    assert tract.status == "ok" and tract.precision == "float32" and tract.kind == "tract"
    assert tract.settings["tract"].startswith("0.23.")
    assert set(tract.drift) == {c.name for c in make_cases(cfg, 0)}  # batch1, seq1, long (1,024 steps), …
    worst = tract.worst()
    assert worst is not None and 0 < worst[2].max_abs < 5e-6, worst
    assert report.passed(), report.failures()


def test_tract_outputs_by_onnx_name_and_each_shape():
    """tract names outputs after the nodes that make them; the runner returns the graph's own names, with values
    equal to ONNX Runtime's to float32 rounding, at two shapes in one child."""
    module, model = export_config(load_config(CONFIGS["rnn_tanh_nobias"]))
    data = model.SerializeToString()
    session = ort.InferenceSession(data)
    rng = np.random.default_rng(3)
    with TractRunner(data) as runner:
        for shape in [(9, 2, 8), (1, 5, 8)]:
            feeds = {"input": rng.standard_normal(shape).astype(np.float32)}
            got = runner.infer(feeds)
            expected = dict(zip(["output", "h_n"], session.run(None, feeds)))
            assert list(got) == ["output", "h_n"]
            for name in expected:
                assert got[name].shape == expected[name].shape
                assert 0 < np.abs(got[name]).max() and np.abs(got[name] - expected[name]).max() < 1e-5
            seconds, cpu_seconds = runner.last_call  # the child's own timing of the run, for bench
            assert seconds > 0 and cpu_seconds > 0


def test_a_panic_at_load_is_that_runners_failure_and_other_runners_keep_their_results():
    """A symbolic batch makes tract abort (Rust panic, SIGABRT): with isolation, verify reports it as tract's
    failure, with the panic's message, and ONNX Runtime's numbers are still there."""
    cfg = load_config(CONFIGS["gru_2layer"])
    module, model = export_config(cfg)
    data = model.SerializeToString()
    symbolic = RunnerSpec(TRACT, "tract", "cpu", functools.partial(TractRunner, data, concrete_shapes=False))
    cases = make_cases(cfg, 0, ("example", "batch1"))
    report = run_engine(cfg.name, data, Float64Oracle(module), cases, runtime_specs(data, (CPU,), ("ort",)) + [symbolic],
                        config=cfg.to_dict(), tolerances=tolerances_for(cfg))
    tract = _runner(report)
    assert tract.status == "failed"
    assert tract.reason == ('could not load the model: crashed: SIGABRT: called `Result::unwrap()` on an `Err` value: '
                            'UndeterminedSymbol("batch")')
    ort_cpu = _runner(report, "ort-cpu")
    assert ort_cpu.status == "ok" and set(ort_cpu.drift) == {"example", "batch1"}
    assert 0 < ort_cpu.worst()[2].max_abs < 1e-5
    assert report.judge().failures() == [f"{TRACT}: failed: {tract.reason}"]


def test_a_panic_while_running_fails_that_call_and_the_next_call_gets_a_new_process():
    module, model = export_config(load_config(CONFIGS["gru_2layer"]))
    data = model.SerializeToString()
    good = {"input": np.random.default_rng(0).standard_normal((4, 3, 16)).astype(np.float32)}
    expected = dict(zip(["output", "h_n"], ort.InferenceSession(data).run(None, good)))
    with TractRunner(data) as runner:
        with pytest.raises(RunnerFailed) as crash:  # 15 features where the graph has 16: tract aborts in a matmul
            runner.infer({"input": np.ones((4, 3, 15), np.float32)})
        assert crash.value.reason == ("crashed: SIGABRT: ndarray: inputs 12 × 15 and 16 × 96 are not compatible "
                                      "for matrix multiplication")
        got = runner.infer(good)
    assert np.abs(got["h_n"] - expected["h_n"]).max() < 1e-5


def test_a_call_past_the_time_limit_is_that_runners_failure():
    _, model = export_config(load_config(CONFIGS["gru_2layer"]))
    with pytest.raises(RunnerFailed) as slow:
        TractRunner(model.SerializeToString(), timeout=0.001)
    assert slow.value.reason == "could not load the model: timed out after 0.001 s (the tract process was killed)"


def test_ctrl_c_while_tract_loads_leaves_no_child_and_no_staging_folder(tmp_path, monkeypatch):
    """The child started and the model staged, Ctrl-C lands during the trial load: both go."""
    _, model = export_config(load_config(CONFIGS["gru_2layer"]))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    children = []

    def interrupted(self, *args):
        children.append(self._child)
        raise KeyboardInterrupt

    monkeypatch.setattr(TractRunner, "_request", interrupted)
    with pytest.raises(KeyboardInterrupt):
        TractRunner(model.SerializeToString())
    assert list(tmp_path.iterdir()) == [] and children
    assert all(child is not None and child.process.poll() is not None for child in children)


def test_ctrl_c_during_the_childs_handshake_ends_the_child(monkeypatch):
    _, model = export_config(load_config(CONFIGS["gru_2layer"]))
    closed = []
    monkeypatch.setattr(tract_runner._Child, "_read", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    original = tract_runner._Child.close
    monkeypatch.setattr(tract_runner._Child, "close", lambda self: (closed.append(self), original(self)))
    with pytest.raises(KeyboardInterrupt):
        TractRunner(model.SerializeToString())
    assert closed and all(child.process.poll() is not None for child in closed)


def test_a_second_ctrl_c_while_closing_still_ends_the_child_and_removes_the_folder(tmp_path, monkeypatch):
    """Closing waits for the child to read EOF; Ctrl-C in that wait kills it, and the staging folder goes."""
    _, model = export_config(load_config(CONFIGS["gru_2layer"]))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runner = TractRunner(model.SerializeToString())
    child = runner._child
    wait = child.process.wait

    def interrupted_once(timeout=None):
        child.process.wait = wait
        raise KeyboardInterrupt

    child.process.wait = interrupted_once
    with pytest.raises(KeyboardInterrupt):
        runner.close()
    assert child.process.poll() is not None and list(tmp_path.iterdir()) == []


def test_panic_line_is_the_panic_message():
    stderr = ("\nthread '<unnamed>' (18568) panicked at onnx/src/ops/rec/common.rs:189:43:\ncalled `Result::unwrap()` "
              "on an `Err` value: UndeterminedSymbol(\"batch\")\nnote: run with `RUST_BACKTRACE=1`\n"
              "thread caused non-unwinding panic. aborting.\n")
    assert panic_line(stderr) == 'called `Result::unwrap()` on an `Err` value: UndeterminedSymbol("batch")'
    assert panic_line("Traceback (most recent call last):\nImportError: no tract\nnote: x\n") == "ImportError: no tract"


def test_tract_computes_tanh_for_a_relu_rnn_and_verify_says_so():
    """tract 0.23 ignores RNN's activations: the ReLU RNN fails on tract, by far more than float32 rounding,
    with words naming the runtime, the cell and the case; ONNX Runtime passes the same graph."""
    cfg = load_config(CONFIGS["rnn_relu_batch_first"])
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, providers=(CPU,), runtimes=("ort", "tract"), case_names=("example",))
    tract = _runner(report)
    assert tract.drift["example"]["output"].max_abs > 0.1 and tract.drift["example"]["h_n"].max_abs > 0.1
    assert _runner(report, "ort-cpu").drift["example"]["output"].max_abs < 1e-5
    failures = report.failures()
    assert [f.split(":")[:2] for f in failures] == [[TRACT, " example/output"], [TRACT, " example/h_n"]]
    for failure in failures:
        assert "tract computes Tanh for RNN activations Relu (nodes rnn_l0, rnn_l1, rnn_l2)" in failure
        assert "a tract bug, not the export's" in failure
    assert tract.localisation.diagnosis == "layer 0, forward direction: activation tanh where the module uses relu"


def test_sequence_lens_as_an_input_is_an_unsupported_feature_in_words():
    module, model = export_config(load_config(CONFIGS["gru_bidir_nobias_ragged"]).with_variable_lengths(True))
    with pytest.raises(RunnerFailed) as refused:
        TractRunner(model.SerializeToString())
    assert refused.value.reason.startswith(
        'could not load the model: tract does not take sequence_lens as an input of a recurrent node; build with '
        '[inputs] variable_lengths = "masked"')
    assert refused.value.reason.endswith("Non constant seq_len is not supported)")


def test_reverse_sequence_is_refused_in_words_and_gather_elements_runs(tmp_path):
    """The shipped masked bidirectional graph uses ReverseSequence, which tract lacks; reverse = "GatherElements"
    builds the same permutation from Gather indices: equal outputs on ONNX Runtime, and within float32
    tolerance on tract for every case, ragged included."""
    text = CONFIGS["gru_bidir_nobias_ragged"].read_text()
    cfg = load_config(write_config(tmp_path, text.replace('name = "gru_bidir_nobias_ragged"\n',
                                                          'name = "gather"\n' + GATHER)))
    module, gathered = export_config(cfg)
    _, reversed_ = export_config(load_config(CONFIGS["gru_bidir_nobias_ragged"]), module)
    assert "ReverseSequence" not in op_counts(gathered) and op_counts(gathered)["GatherElements"] == 4
    with pytest.raises(RunnerFailed, match=r'tract has no ReverseSequence; build with reverse = "GatherElements"'):
        TractRunner(reversed_.SerializeToString())
    for case in make_cases(cfg, 0):
        a = ort.InferenceSession(reversed_.SerializeToString()).run(None, case.feeds)
        b = ort.InferenceSession(gathered.SerializeToString()).run(None, case.feeds)
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), case.name
    report = verify(module, gathered, cfg=cfg, providers=(CPU,), runtimes=("ort", "openvino", "tract"))
    tract = _runner(report)
    assert "ragged" in tract.drift and 0 < tract.worst()[2].max_abs < 1e-5
    assert report.passed(), report.failures()


def test_masked_lstm_with_initial_state_runs_on_tract_with_gather_elements():
    import torch

    module = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True).eval()
    model = export_onnx(module, opset=13, initial_state=True, variable_lengths="masked", reverse="GatherElements")
    onnx.checker.check_model(model, full_check=True)
    report = verify(module, model, providers=(CPU,), runtimes=("torch", "tract"), case_names=("ragged", "long"))
    tract = _runner(report)
    assert set(tract.drift) == {"ragged", "long"} and 0 < tract.worst()[2].max_abs < 1e-4
    assert report.passed(), report.failures()


@pytest.mark.parametrize("text, words", [
    ('reverse = "Gather"\n', "key 'reverse': 'Gather' is not allowed; expected \"ReverseSequence\" or "
                             "\"GatherElements\""),
    (GATHER, "key 'reverse': 'GatherElements' is not allowed; expected \"ReverseSequence\" unless bidirectional = "
             "true and [inputs] variable_lengths = \"masked\""),
])
def test_reverse_key_is_checked(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_config(write_config(tmp_path, 'cell = "gru"\ninput_size = 4\nhidden_size = 8\n' + text))


def test_default_reverse_keeps_the_config_hash():
    cfg = load_config(CONFIGS["gru_bidir_nobias_ragged"])
    assert "reverse" not in cfg.to_dict() and cfg.reverse == "ReverseSequence"


def test_cli_runs_tract_when_named_and_requires_it_by_name(tmp_path):
    artifact = build_artifact(load_config(CONFIGS["rnn_tanh_nobias"]), tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(artifact), "--runtimes", "ort,tract", "--cases", "example,long",
                                  "--require", TRACT, "--json", str(tmp_path / "all.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "all.json").read_text())["reports"][0]
    tract = next(r for r in report["runners"] if r["name"] == TRACT)
    assert tract["status"] == "ok" and tract["settings"]["tract"].startswith("0.23.") and tract["worst"]["max_abs"] < 1e-5
    default = runner.invoke(main, ["verify", str(artifact), "--cases", "example"])
    assert default.exit_code == 0 and TRACT not in default.output  # opt-in: not among the default families
    refused = runner.invoke(main, ["verify", str(artifact), "--runtimes", "ort", "--require", TRACT])
    assert (refused.exit_code, refused.output) == (
        2, f"Error: --require {TRACT}: the runner families run here (ort) leave out tract\n")


def test_the_deploy_table_lists_every_shipped_config_and_form():
    import importlib.util

    from conftest import ROOT

    from rnnexport.config import load_configs

    spec = importlib.util.spec_from_file_location("deploy_doc", ROOT / "scripts" / "deploy_doc.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = (ROOT / "docs" / "deploy.md").read_text()
    labels = [label for label, _ in script.forms(load_configs([ROOT / "configs"]))]
    assert len(labels) == len(SHIPPED) + 2
    assert all(f"| {label} |" in text for label in labels), "regenerate: python scripts/deploy_doc.py"
    assert "| `gru_bidir_nobias_ragged`, reverse = \"GatherElements\" | 1e-05 / 1e-05 |" in text


@pytest.mark.slow
def test_verify_runs_tract_on_every_shipped_config(tmp_path):
    """`verify --runtimes ort,openvino,tract` over the shipped artifacts: tract runs every one; two fail, each for a
    reason of tract's own said in words (no ReverseSequence; Tanh for a ReLU RNN), and the rest pass."""
    out = tmp_path / "art"
    assert CliRunner().invoke(main, ["build", str(SHIPPED[0].parent), "--out", str(out), "-q"]).exit_code == 0
    result = CliRunner().invoke(main, ["verify", str(out), "--runtimes", "ort,openvino,tract", "--cases",
                                       "example,ragged", "--json", str(tmp_path / "all.json")])
    assert result.exit_code == 3, result.output  # a runtime failed: tract could not load one artifact
    reports = {r["name"]: r for r in json.loads((tmp_path / "all.json").read_text())["reports"]}
    assert set(reports) == set(CONFIGS)
    tract = {name: next(r for r in report["runners"] if r["name"] == TRACT) for name, report in reports.items()}
    assert tract["gru_bidir_nobias_ragged"]["status"] == "failed"
    assert "tract has no ReverseSequence" in tract["gru_bidir_nobias_ragged"]["reason"]
    assert tract["rnn_relu_batch_first"]["worst"]["max_abs"] > 0.1
    assert any("tract computes Tanh for RNN activations Relu" in f for f in reports["rnn_relu_batch_first"]["failures"])
    for name in set(CONFIGS) - {"gru_bidir_nobias_ragged", "rnn_relu_batch_first"}:
        assert tract[name]["status"] == "ok" and 0 < tract[name]["worst"]["max_abs"] < 1e-5, name
        assert reports[name]["passed"], reports[name]["failures"]


def test_a_file_with_inferred_intermediate_shapes_is_refused_in_words():
    """ONNX shape inference (onnxsim and onnxslim run it too) writes value_info with the symbolic dims, and tract
    then cannot take a case's concrete sizes; the same graph without value_info runs."""
    _, model = export_config(load_config(CONFIGS["lstm_3layer_bidir"]))
    inferred = onnx.shape_inference.infer_shapes(model)
    assert len(inferred.graph.value_info) > 0
    with pytest.raises(RunnerFailed) as refused:
        TractRunner(inferred.SerializeToString())
    assert refused.value.reason.startswith("could not load the model: tract cannot bind the file's intermediate "
                                           "shapes (value_info, as ONNX shape inference, onnxsim or onnxslim write")
    assert "Impossible to unify Sym(batch) with Val(1)" in refused.value.reason
    del inferred.graph.value_info[:]
    with TractRunner(inferred.SerializeToString()) as runner:
        assert runner.version.startswith("0.23.")


def test_the_model_copy_a_killed_run_left_for_tract_is_removed_by_the_next(tmp_path):
    """tract loads the model from a file: it sits in a marked staging folder of the temp folder, gone when
    the runner closes, and removed by the next tract runner when a killed run (a dead pid) left it."""
    import tempfile
    from pathlib import Path

    from rnnexport.artifacts.folders import STAGING_MARK, STAGING_TEXT, TMP_PREFIX

    left = Path(tempfile.gettempdir()) / f"{TMP_PREFIX}999999999-tract-test"
    left.mkdir(exist_ok=True)
    (left / STAGING_MARK).write_text(STAGING_TEXT)
    (left / "model.onnx").write_bytes(b"a model a killed verify left")
    data = export_config(load_config(SHIPPED[0]))[1].SerializeToString()
    with TractRunner(data) as runner:
        folder = runner.path.parent
        assert runner.path.read_bytes() == data and not left.exists()
    assert not folder.exists()
