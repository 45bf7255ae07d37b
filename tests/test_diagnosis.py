"""When verify fails, where and why: per-layer localisation, the diagnosis of each common export bug (injected
into real artifacts), minimum passing tolerances, per-cell error ratios, --shape, the contract check, and
golden outputs compared in a process that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import SHIPPED
from onnx import helper

from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.verification.engine import verify

CONFIG = {p.stem: p for p in SHIPPED}
CPU = ("CPUExecutionProvider",)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    return broken


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    tensor.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), tensor.name))


def _swap_blocks(model, name, gates, a, b, axis=1):
    tensor = _initializer(model, name)
    blocks = np.split(onnx.numpy_helper.to_array(tensor), gates, axis=axis)
    blocks[a], blocks[b] = blocks[b], blocks[a]
    _set(tensor, np.concatenate(blocks, axis=axis))


def _diagnosis(cfg, module, model, case="example", **kw):
    report = verify(module, model, cfg=cfg, runtimes=("ort",), providers=CPU, case_names=(case,), **kw)
    result = next(r for r in report.runners if r.name == "ort-cpu")
    return report, result.localisation


def test_a_gate_swapped_layer_2_of_a_3_layer_bidirectional_lstm_is_found_and_named():
    cfg = load_config(CONFIG["lstm_3layer_bidir"])
    module, model = export_config(cfg)
    broken = _copy(model)
    _swap_blocks(broken, "W_2", 4, 0, 2)  # ONNX order i, o, f, c: blocks 0 and 2 are PyTorch's i and f
    report, found = _diagnosis(cfg, module, broken)
    assert not report.judge().passed
    assert [(x["layer"], x["direction"], x["ok"]) for x in found.layers] == [
        (0, "forward", True), (0, "backward", True), (1, "forward", True), (1, "backward", True), (2, "forward", False)]
    assert found.diagnosis == "layer 2, forward direction: W gate blocks i and f swapped"
    text = str(report)
    assert "  ↳ ort-cpu: first failing: layer 2, forward direction" in text
    assert "  ↳ ort-cpu: diagnosis: layer 2, forward direction: W gate blocks i and f swapped" in text
    data = report.to_dict()
    runner = next(r for r in data["runners"] if r["name"] == "ort-cpu")
    assert runner["diagnosis"] == found.diagnosis and len(runner["localisation"]["layers"]) == 5
    from rnnexport.report.html import render_html
    from rnnexport.report.text import render_markdown

    page = render_html([(report, report.judge())])
    assert "<h2>Where and why</h2>" in page and "W gate blocks i and f swapped" in page
    assert "- ort-cpu: diagnosis: layer 2, forward direction: W gate blocks i and f swapped" in \
        render_markdown(report, report.judge()).splitlines()


def _node(model, index=0):
    from rnnexport.export.native import recurrent_nodes

    return recurrent_nodes(model)[index]


def _set_attr(node, name, value):
    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, value))


def _swap_directions(model):
    for name in ("W_0", "R_0", "B_0"):
        tensor = _initializer(model, name)
        value = onnx.numpy_helper.to_array(tensor)
        _set(tensor, value[::-1])


def _reorder_everywhere(model):  # ONNX's z, r, h: blocks 0 and 2 are PyTorch's z and n, in W, R and both halves of B
    _swap_blocks(model, "W_0", 3, 0, 2)
    _swap_blocks(model, "R_0", 3, 0, 2)
    _swap_blocks(model, "B_0", 6, 0, 2)
    _swap_blocks(model, "B_0", 6, 3, 5)


def _other_layers_state(model):  # layer 1 reads layer 0's rows of h0 and c0
    for name in ("h0_rows_l1", "c0_rows_l1"):
        tensor = _initializer(model, name)
        tensor.CopyFrom(onnx.numpy_helper.from_array(np.array([0, 1], dtype=np.int64), name))


def _ignore_lengths(model):
    for node in model.graph.node:
        if node.op_type in ("GRU", "LSTM", "RNN") and len(node.input) > 4:
            node.input[4] = ""


# (config, how to break its graph, the case to run, the diagnosis expected, word for word)
BUGS = {
    "R_gates": ("gru_2layer", lambda m: _swap_blocks(m, "R_1", 3, 0, 1), "example",
                "layer 1, forward direction: R gate blocks r and z swapped"),
    "B_gates": ("lstm_3layer_bidir", lambda m: [_swap_blocks(m, "B_0", 8, a, b) for a, b in ((1, 2), (5, 6))], "example",
                "layer 0, forward direction: B gate blocks f and o swapped"),
    "all_gates": ("gru_2layer", lambda m: _reorder_everywhere(m), "example",
                  "layer 0, forward direction: W, R and B gate blocks z and n swapped"),
    "linear_before_reset": ("gru_2layer", lambda m: _set_attr(_node(m, 1), "linear_before_reset", 0), "example",
                            "layer 1, forward direction: linear_before_reset=0 (PyTorch's GRU needs 1)"),
    "activation": ("rnn_relu_batch_first", lambda m: _set_attr(_node(m, 2), "activations", ["Tanh"]), "example",
                   "layer 2, forward direction: activation tanh where the module uses relu"),
    "direction_weights": ("lstm_3layer_bidir", _swap_directions, "example",
                          "layer 0, forward direction: directions' weights swapped: this direction runs with the "
                          "other direction's W, R and B"),
    "initial_state": ("lstm_3layer_bidir", _other_layers_state, "example",
                      "layer 1, forward direction: the initial state of row 0 (layer 0, forward) is used"),
    "sequence_lens": ("gru_bidir_nobias_ragged", _ignore_lengths, "ragged",
                      "layer 0, forward direction: sequence_lens is not honoured (every row runs all steps)"),
}


@pytest.mark.parametrize("bug", BUGS)
def test_each_export_bug_is_diagnosed_by_name(bug):
    name, breaks, case, expected = BUGS[bug]
    cfg = load_config(CONFIG[name])
    if bug == "sequence_lens":  # the node-level sequence_lens form, where a node can ignore it
        cfg = cfg.with_variable_lengths(True)
    module, model = export_config(cfg)
    broken = _copy(model)
    breaks(broken)
    report, found = _diagnosis(cfg, module, broken, case)
    assert not report.judge().passed
    assert found.diagnosis == expected, found.summary()


def test_batch_and_time_axes_swapped_are_named():
    cfg = load_config(CONFIG["rnn_relu_batch_first"])
    module, model = export_config(cfg)
    broken = _copy(model)
    last = next(n for n in broken.graph.node if n.name == "output_to_batch_first")
    source = last.input[0]
    broken.graph.node.remove(last)
    for node in broken.graph.node:
        node.output[:] = ["output" if o == source else o for o in node.output]
    report, found = _diagnosis(cfg, module, broken)
    seq, batch = cfg.example.seq_len, cfg.example.batch
    assert found.diagnosis == (f"example/output: batch and time axes swapped (shape [{seq}, {batch}, "
                               f"{cfg.hidden_size}] where PyTorch gives [{batch}, {seq}, {cfg.hidden_size}])")


def test_an_unknown_bug_is_said_honestly_and_a_clean_model_gets_no_diagnosis():
    cfg = load_config(CONFIG["rnn_tanh_nobias"])
    module, model = export_config(cfg)
    broken = _copy(model)
    w = _initializer(broken, "W_1")
    _set(w, -onnx.numpy_helper.to_array(w))
    _, found = _diagnosis(cfg, module, broken)
    assert found.diagnosis.startswith("layer 1, forward direction: no known export bug explains it")
    report, clean = _diagnosis(cfg, module, model)
    assert clean is None and report.judge().passed
    _, every = _diagnosis(cfg, module, model, per_layer=True)
    assert every.diagnosis is None and [x["ok"] for x in every.layers] == [True, True]


def test_min_passing_tolerance_and_the_largest_cell_ratio_are_recomputable_from_the_report():
    cfg = load_config(CONFIG["rnn_tanh_nobias"])
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, runtimes=("torch", "ort"), providers=CPU)
    data = report.to_dict()
    runners = {r["name"]: r for r in data["runners"]}
    tol = data["tolerances"]["cpu"]
    ort = runners["ort-cpu"]
    for output, needed in data["min_passing_tolerance"]["ort-cpu"].items():
        cells = [outs[output] for outs in ort["drift"].values() if output in outs]
        assert needed["atol"] == max(max(0.0, d["max_abs"] - tol["rtol"] * d["expected_max_abs"]) for d in cells)
    ratios = [(d["max_abs"] / runners["torch-float32-cpu"]["drift"][case][output]["max_abs"], case, output)
              for case, outs in ort["drift"].items() for output, d in outs.items()
              if runners["torch-float32-cpu"]["drift"][case][output]["max_abs"] > 0]
    ratio, case, output = max(ratios)
    assert data["largest_cell_error_ratio_to_torch_float32"]["ort-cpu"] == {"ratio": ratio, "case": case,
                                                                             "output": output}


def test_shape_option_adds_a_case(tmp_path):
    artifact = build_artifact(load_config(CONFIG["gru_2layer"]), tmp_path)
    result = CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example", "--record", "--shape",
                                       "seq=37,batch=5",
                                       "--runtimes", "ort"])
    assert result.exit_code == 0, result.output
    cases = json.loads((artifact / "report.json").read_text())["cases"]
    assert [(c["name"], c["inputs"]["input"]) for c in cases] == [("example", [24, 4, 16]),
                                                                  ("shape_seq37_batch5", [37, 5, 16])]
    bad = CliRunner().invoke(main, ["verify", str(artifact), "--shape", "seq=37"])
    assert (bad.exit_code, bad.output) == (2, "Error: --shape 'seq=37': expected seq=N,batch=M (for example "
                                              "seq=300,batch=7)\n")


def test_outputs_in_the_wrong_order_fail_verify_with_their_own_sentence():
    cfg = load_config(CONFIG["gru_2layer"])
    module, model = export_config(cfg)
    broken = _copy(model)
    outputs = list(broken.graph.output)
    del broken.graph.output[:]
    broken.graph.output.extend([outputs[1], outputs[0]])
    report = verify(module, broken, cfg=cfg, runtimes=("ort",), providers=CPU, case_names=("example",))
    assert report.judge().failures() == ["graph: graph outputs ['h_n', 'output'] where the contract has "
                                         "['output', 'h_n'], in that order (a caller that takes outputs by "
                                         "position gets the wrong tensor)"]


def test_a_clipping_relu_fails_the_saturating_case():
    cfg = load_config(CONFIG["rnn_relu_batch_first"])
    module, model = export_config(cfg)
    broken = _copy(model)
    _set_attr(_node(broken), "clip", 20.0)
    report = verify(module, broken, cfg=cfg, runtimes=("ort",), providers=CPU, case_names=("saturating",))
    assert not report.judge().passed


GOLDEN_CHECK = r"""
import sys
from rnnexport.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print("torch imported:", "torch" in sys.modules)
    raise
"""


def test_golden_outputs_round_trip_in_a_process_without_torch(tmp_path):
    artifact = build_artifact(load_config(CONFIG["lstm_3layer_bidir"]), tmp_path / "art")
    golden = tmp_path / "golden"
    saved = CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example,long", "--long-seq", "64",
                                      "--save-golden", str(golden), "-q"])
    assert saved.exit_code == 0, saved.output
    assert sorted(p.name for p in (golden / artifact.name).iterdir()) == ["expected.npz", "golden.json", "inputs.npz"]
    run = subprocess.run([sys.executable, "-c", GOLDEN_CHECK, "verify", str(artifact), "--golden", str(golden)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS (2 cases against golden outputs of torch-float64-oracle" in run.stdout
    assert "torch imported: False" in run.stdout
    broken = onnx.load(artifact / "model.onnx")
    _swap_blocks(broken, "W_1", 4, 0, 2)
    onnx.save(broken, tmp_path / f"{artifact.name}.onnx")
    run = subprocess.run([sys.executable, "-c", GOLDEN_CHECK, "verify", str(tmp_path / f"{artifact.name}.onnx"),
                          "--golden", str(golden)], capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "is not the one the golden outputs were saved from" in run.stdout and "torch imported: False" in run.stdout
