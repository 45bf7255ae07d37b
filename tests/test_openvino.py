"""OpenVINO as a deploy target, and ragged graphs that compute the same on every runtime (issue: deploy targets).

OpenVINO really runs here: the dev extra installs it through constraints.txt.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import SHIPPED
from onnx.reference import ReferenceEvaluator

from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import Inputs, load_config, parse_config
from rnnexport.errors import ExportError
from rnnexport.export.native import export_onnx
from rnnexport.verification.engine import verify
from rnnexport.verification.runners.openvino_runner import OpenVinoRunner
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.torch_runner import Float64Oracle
from rnnexport.verification.verdict import PRECISION_TOLERANCE

RAGGED = [p for p in SHIPPED if "ragged" in p.stem]
CELLS = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN}


def _feeds(module: torch.nn.Module, steps: int, lengths: list[int], initial: bool, rng: np.random.Generator):
    batch, dirs = len(lengths), 1 + module.bidirectional
    shape = (batch, steps, module.input_size) if module.batch_first else (steps, batch, module.input_size)
    feeds = {"input": rng.standard_normal(shape).astype(np.float32), "sequence_lens": np.array(lengths, np.int32)}
    if initial:
        state = (module.num_layers * dirs, batch, module.hidden_size)
        feeds["h0"] = rng.uniform(-1, 1, state).astype(np.float32)
        if isinstance(module, torch.nn.LSTM):
            feeds["c0"] = rng.standard_normal(state).astype(np.float32)
    return feeds


def _max_error(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> float:
    assert set(actual) == set(expected)
    return max(float(np.abs(actual[k].astype(np.float64) - expected[k]).max()) for k in expected)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("initial", [False, True], ids=["no_state", "state"])
def test_masked_graph_matches_pack_padded_sequence_everywhere(cell, bidirectional, batch_first, initial):
    torch.manual_seed(len(cell) + 2 * bidirectional + 4 * batch_first + 8 * initial)
    kwargs = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
    module = CELLS[cell](5, 7, num_layers=2, bidirectional=bidirectional, batch_first=batch_first, **kwargs).eval()
    model = export_onnx(module, opset=13, initial_state=initial, variable_lengths="masked")
    data = model.SerializeToString()
    rng = np.random.default_rng(0)
    # exported without any example shape: other lengths and batches, unsorted, including 1 and the maximum
    for steps, lengths in ((11, [4, 11, 1, 6, 2]), (3, [3, 1]), (1, [1])):
        feeds = _feeds(module, steps, lengths, initial, rng)
        expected = Float64Oracle(module).infer(feeds)
        assert _max_error(expected, OrtRunner(data).infer(feeds)) < 1e-5
        assert _max_error(expected, OpenVinoRunner(data).infer(feeds)) < 1e-5
        if cell == "rnn_relu":
            continue  # onnx.reference's RNN knows only Tanh, Sigmoid and Affine
        with warnings.catch_warnings():  # the reference LSTM's sigmoid overflows to exactly 0 on padded steps
            warnings.simplefilter("ignore", RuntimeWarning)
            names = [o.name for o in model.graph.output]
            reference = dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))
        assert _max_error(expected, reference) < 1e-5


def test_masked_graph_keeps_the_export_rules():
    cfg = load_config(next(p for p in RAGGED if p.stem == "lstm_dropout_ragged"))
    model = export_config(cfg)[1]
    long_cfg = dataclasses.replace(cfg, example=dataclasses.replace(cfg.example, seq_len=4000))
    ops = [n.op_type for n in model.graph.node]
    assert not {"Loop", "Scan"} & set(ops)
    assert ops == [n.op_type for n in export_config(long_cfg)[1].graph.node]  # independent of seq_len
    assert all(len(n.input) < 5 or not n.input[4] for n in model.graph.node if n.op_type == "LSTM")
    assert model.SerializeToString() == export_config(cfg)[1].SerializeToString()
    onnx.checker.check_model(model, full_check=True)


def test_masked_needs_opset_11():
    raw = {"name": "m", "cell": "gru", "input_size": 3, "hidden_size": 4, "opset": 10,
           "inputs": {"variable_lengths": "masked"}}
    with pytest.raises(ExportError, match='variable_lengths = "masked" needs opset 11 or newer'):
        export_config(parse_config(raw, "t"))


@pytest.mark.parametrize("path", RAGGED, ids=[p.stem for p in RAGGED])
def test_sequence_lens_graph_fails_on_openvino_and_the_portable_one_passes(tmp_path, path):
    portable = load_config(path)
    assert portable.inputs.variable_lengths == "masked"
    plain = dataclasses.replace(portable, inputs=dataclasses.replace(portable.inputs, variable_lengths=True))
    cases = ("example", "ragged")
    failing = verify(*export_config(plain), cfg=plain, case_names=cases, runtimes=("torch", "ort", "openvino"))
    verdict = failing.judge()
    assert verdict.exit_code == 1
    assert "openvino-cpu-f32" in verdict.failed_runners() and "ort-cpu" not in verdict.failed_runners()
    words = " ".join(verdict.failures())
    assert "the runtime does not honour sequence_lens" in words and 'variable_lengths = "masked"' in words
    passing = verify(*export_config(portable), cfg=portable, case_names=cases)
    assert passing.judge().passed, passing.failures()
    f32 = next(r for r in passing.runners if r.name == "openvino-cpu-f32")
    assert f32.precision == "float32" and max(d.max_abs for o in f32.drift.values() for d in o.values()) < 1e-5


def test_every_report_shows_openvino_rows_with_the_precision_used(tmp_path):
    artifact = build_artifact(load_config(SHIPPED[0]), tmp_path)
    result = CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example,long", "--long-seq", "64",
                                       "--record"])
    assert result.exit_code == 0, result.output
    report = json.loads((artifact / "report.json").read_text())
    rows = {r["name"]: r for r in report["runners"]}
    assert rows["openvino-cpu-f32"]["settings"]["inference_precision"] == "float32"
    default = rows["openvino-cpu-default"]
    assert default["precision"] == default["settings"]["inference_precision"]
    assert default["settings"]["openvino"] and default["status"] == "ok"
    assert "openvino" in (artifact / "report.md").read_text()


def _swap_gates(model: onnx.ModelProto) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    tensor = next(t for t in broken.graph.initializer if t.name.startswith("W_"))
    w = onnx.numpy_helper.to_array(tensor).copy()
    blocks = np.split(w, 3, axis=1)
    tensor.CopyFrom(onnx.numpy_helper.from_array(np.concatenate([blocks[1], blocks[0], blocks[2]], axis=1),
                                                 tensor.name))
    return broken


def test_reduced_precision_tolerance_still_fails_a_gate_swap():
    cfg = load_config(SHIPPED[0])  # gru_2layer
    module, model = export_config(cfg)
    report = verify(module, _swap_gates(model), cfg=cfg, case_names=("example",), runtimes=("openvino",))
    default = next(r for r in report.runners if r.name == "openvino-cpu-default")
    if default.precision == "float32":
        pytest.skip("this CPU's OpenVINO default is float32: no reduced-precision runner to test")
    assert default.precision in PRECISION_TOLERANCE
    assert "openvino-cpu-default" in report.judge().failed_runners()


def test_runtimes_option_picks_runner_families(tmp_path):
    artifact = build_artifact(load_config(SHIPPED[0]), tmp_path)
    result = CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example", "--runtimes", "openvino",
                                       "--record"])
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in json.loads((artifact / "report.json").read_text())["runners"]]
    assert names == ["openvino-cpu-f32", "openvino-cpu-default"]
    bad = CliRunner().invoke(main, ["verify", str(artifact), "--runtimes", "tvm"])
    assert (bad.exit_code, bad.output) == (2, "Error: unknown runtime 'tvm'; known: torch, ort, openvino, tract, iree\n")


def test_lint_warns_about_sequence_lens_and_mixed_direction_activations(tmp_path):
    module = torch.nn.GRU(3, 4, bidirectional=True).eval()
    model = export_onnx(module, variable_lengths=True)
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    node.attribute.append(onnx.helper.make_attribute("activations", ["Sigmoid", "Tanh", "Sigmoid", "Relu"]))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    output = CliRunner().invoke(main, ["lint", str(path)]).output
    assert f"{path}: warning: sequence-lens: gru_l0: takes sequence_lens, which OpenVINO's ONNX frontend" in output
    assert f"{path}: warning: direction-activations: gru_l0: the two directions use different activations" in output
    portable = tmp_path / "p.onnx"
    onnx.save(export_onnx(module, variable_lengths="masked"), portable)
    assert "sequence-lens" not in CliRunner().invoke(main, ["lint", str(portable)]).output


def test_config_accepts_masked_and_nothing_else():
    assert parse_config({"cell": "gru", "input_size": 2, "hidden_size": 3, "name": "m",
                         "inputs": {"variable_lengths": "masked"}}, "t").inputs == Inputs(False, "masked")
    with pytest.raises(Exception, match="key 'inputs.variable_lengths': 'mask' is not allowed; expected true, false"):
        parse_config({"cell": "gru", "input_size": 2, "hidden_size": 3, "name": "m",
                      "inputs": {"variable_lengths": "mask"}}, "t")


# OpenVINO's own readings, as printed by Core().get_property on the machines named.
NVIDIA_H200 = ("GPU: vendor=0x10de arch=v9.0.0", "NVIDIA H200 (dGPU)")  # OpenVINO 2026.4.1, 2026-11-30


@pytest.mark.parametrize(("architecture", "full_name", "intel"), [
    (*NVIDIA_H200, False),
    ("GPU: vendor=0x8086 arch=v12.55.8", "Intel(R) Arc(TM) A770 Graphics (dGPU)", True),
    ("GPU: VENDOR=0X8086 arch=v12.0.0", "", True),  # the vendor id is read as hex whatever its case
    ("GPU: vendor=0x10de arch=v9.0.0", "Intel-branded name, NVIDIA vendor id", False),  # the id decides
    ("", "Intel(R) UHD Graphics 770 (iGPU)", True),  # no architecture: the name decides
    ("", "", False),
])
def test_only_intel_gpus_are_run_by_openvino(architecture, full_name, intel):
    from rnnexport.verification.runners.openvino_runner import is_intel_gpu

    assert is_intel_gpu(architecture, full_name) is intel


def test_a_gpu_openvino_does_not_list_is_not_available_here(tmp_path):
    import openvino

    from rnnexport.verification.runners.openvino_runner import openvino_device_status, openvino_devices

    assert openvino_device_status("CPU") is None
    listed = openvino_devices()
    missing = next(f"GPU.{i}" for i in range(9) if f"GPU.{i}" not in listed)
    assert openvino_device_status(missing) == (f"OpenVINO {openvino.__version__} lists no device {missing} here "
                                               f"(it lists {', '.join(listed)})")


def test_a_gpu_that_is_not_intel_is_shown_not_available_with_the_reason(tmp_path, monkeypatch):
    """OpenVINO's listing of a GPU is simulated (no GPU here) with what it read on the H200; the runners, the
    report and --require then run for real."""
    from rnnexport.verification.runners import openvino_runner

    monkeypatch.setattr(openvino_runner, "openvino_devices", lambda: ("CPU", "GPU"))
    monkeypatch.setattr(openvino_runner, "_gpu_identity", lambda device: NVIDIA_H200)
    reason = "OpenVINO's GPU plugin supports Intel GPUs only, and GPU is NVIDIA H200 (dGPU)"
    assert openvino_runner.openvino_device_status("GPU") == reason
    artifact = build_artifact(load_config(SHIPPED[0]), tmp_path)
    result = CliRunner().invoke(main, ["verify", str(artifact), "--runtimes", "openvino", "--json",
                                       str(tmp_path / "all.json")])
    assert result.exit_code == 0, result.output
    assert f"not available here: openvino-gpu-f32, openvino-gpu-default ({reason})" in result.output
    report = json.loads((tmp_path / "all.json").read_text())["reports"][0]
    runners = {r["name"]: r for r in report["runners"]}
    assert runners["openvino-gpu-f32"]["status"] == "not available" and runners["openvino-gpu-f32"]["reason"] == reason
    assert runners["openvino-cpu-f32"]["status"] == "ok"
    result = CliRunner().invoke(main, ["verify", str(artifact), "--require", "openvino-gpu-f32"])
    assert result.exit_code == 3, result.output
    assert f"required runner openvino-gpu-f32 is not available: {reason}" in result.output
    monkeypatch.setattr(openvino_runner, "_gpu_identity", lambda device: ("", ""))  # neither property read
    assert "GPU could not be identified" in openvino_runner.openvino_device_status("GPU")
    intel = ("GPU: vendor=0x8086 arch=v12.55.8", "Intel(R) Arc(TM) A770 Graphics (dGPU)")
    monkeypatch.setattr(openvino_runner, "_gpu_identity", lambda device: intel)
    assert openvino_runner.openvino_device_status("GPU") is None
