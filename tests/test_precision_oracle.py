"""Variants judged against the oracle of their own precision: fp16-weights against the module with the file's
float16 weights at the float32 tolerance, int8-dynamic's weights against ONNX Runtime's quantization rule and its
outputs against the dequantized module. Realistic bugs in a variant file (a weight block scaled by 1.01, an int8
scale ×1.1, a zero point +1, a gate swap in any layer) fail verify and name the layer.

ONNX Runtime and PyTorch really run; every mutation is made in a real variant file.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.export.gates import GATE_ORDER
from rnnexport.export.native import recurrent_nodes
from rnnexport.export.variants import make_variant, source_config
from rnnexport.verification.engine import verify
from rnnexport.verification.precision_oracle import int8_weight_problems, precision_module, quantize_rule
from rnnexport.verification.verdict import OWN_ORACLE_TOLERANCE

CONFIG = {p.stem: p for p in SHIPPED}
LSTMS = [p.stem for p in SHIPPED if load_config(p).cell == "lstm"]
CPU = ("CPUExecutionProvider",)
GATES = {"gru": 3, "lstm": 4, "rnn_relu": 1, "rnn_tanh": 1}


def _variant(name: str, kind: str):
    cfg = load_config(CONFIG[name])
    module, model = export_config(cfg)
    source = export_config(source_config(cfg, kind), module)[1]
    return cfg, module, source, onnx.load_from_string(make_variant(source, kind, cfg.cell))


def _tensor(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _replace(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    tensor = _tensor(model, name)
    tensor.CopyFrom(onnx.numpy_helper.from_array(value.astype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)),
                                                 name))


def _last_layer(model: onnx.ModelProto, cfg) -> tuple[onnx.NodeProto, int, int]:
    """The last recurrent node, its layer and the direction its W's first row block belongs to."""
    nodes = recurrent_nodes(model)
    node = nodes[-1]
    if len(nodes) == cfg.num_layers:
        return node, cfg.num_layers - 1, 0
    return node, (len(nodes) - 1) // cfg.num_directions, (len(nodes) - 1) % cfg.num_directions


def _verify(cfg, module, model, kind, variant: onnx.ModelProto, cases=("example",)):
    report = verify(module, model, cfg=cfg, runtimes=("ort",), providers=CPU, case_names=cases,
                    variants={kind: variant.SerializeToString()})
    return report, next(r for r in report.runners if r.name == f"ort-cpu-{kind}")


def _first_failing(result) -> tuple[int, str]:
    failing = next(x for x in result.localisation.layers if not x["ok"])
    return failing["layer"], failing["direction"]


@pytest.mark.parametrize("name", ["lstm_3layer_bidir", "gru_2layer"])
def test_the_fp16_oracle_computes_with_the_files_own_float16_weights(name):
    cfg, module, model, variant = _variant(name, "fp16-weights")
    own = dict(precision_module(module, "fp16-weights").named_parameters())
    for layer, node in enumerate(recurrent_nodes(variant)):
        for index, prefix in ((1, "weight_ih"), (2, "weight_hh")):
            stored = onnx.numpy_helper.to_array(_tensor(variant, f"{node.input[index]}_fp16"))
            rows = [np.split(own[f"{prefix}_l{layer}{sfx}"].detach().numpy(), GATES[cfg.cell])
                    for sfx in ("", "_reverse")[:cfg.num_directions]]
            want = np.stack([np.concatenate([blocks[k] for k in GATE_ORDER[module.mode]]) for blocks in rows])
            assert stored.dtype == np.float16 and np.array_equal(stored.astype(np.float32), want)
    assert any(p.detach().numpy().astype(np.float16).astype(np.float32).tolist() != p.detach().numpy().tolist()
               for p in module.parameters())  # the rounding is real: the module's own weights are not float16


@pytest.mark.parametrize("name", ["lstm_3layer_bidir", "lstm_dropout_ragged"])
def test_the_int8_files_weights_are_onnx_runtimes_rule_applied_to_the_module(name):
    cfg, module, model, variant = _variant(name, "int8-dynamic")
    assert int8_weight_problems(variant, module) == []
    node = recurrent_nodes(variant)[0]
    q, scale, zero = (onnx.numpy_helper.to_array(_tensor(variant, node.input[k])) for k in (1, 8, 9))
    w = onnx.numpy_helper.to_array(_tensor(model, recurrent_nodes(model)[0].input[1]))  # [D, 4H, in], ONNX order
    for d in range(w.shape[0]):
        want_q, want_scale, want_zero = quantize_rule(w[d])
        assert scale[d] == np.float32(np.abs(w[d]).max()) / np.float32(127) == want_scale and zero[d] == want_zero
        assert np.array_equal(q[d].T, want_q)
        assert np.abs((q[d].T.astype(np.float64) - zero[d]) * scale[d] - w[d]).max() <= scale[d] / 2 * (1 + 1e-6)


@pytest.mark.parametrize("name", [p.stem for p in SHIPPED])
def test_fp16_weights_with_one_weight_block_scaled_by_1_01_fails_naming_the_layer(name):
    cfg, module, model, variant = _variant(name, "fp16-weights")
    report, result = _verify(cfg, module, model, "fp16-weights", variant)
    assert report.judge().passed, report.judge().failures()
    stored = f"{recurrent_nodes(variant)[0].input[1]}_fp16"  # layer 0, forward: the measured case
    w = onnx.numpy_helper.to_array(_tensor(variant, stored)).astype(np.float32)
    hidden = w.shape[1] // GATES[cfg.cell]
    w[0, :hidden] *= 1.01
    _replace(variant, stored, w)
    report, result = _verify(cfg, module, model, "fp16-weights", variant)
    failures = report.judge().failures()
    assert failures and all(f.startswith("ort-cpu-fp16-weights: ") for f in failures)
    assert any("against torch-float64-oracle-fp16-weights" in f for f in failures)
    assert _first_failing(result) == (0, "forward"), result.localisation.summary()
    assert result.localisation.diagnosis.startswith("layer 0, forward direction: weights differ by ~")
    assert result.localisation.diagnosis.endswith("of their largest value (W), not a structural bug")


@pytest.mark.parametrize("name", LSTMS)
@pytest.mark.parametrize("bug", ["scale", "zero_point"])
def test_int8_with_a_scale_times_1_1_or_a_zero_point_plus_1_fails_naming_the_layer(name, bug):
    cfg, module, model, variant = _variant(name, "int8-dynamic")
    node = recurrent_nodes(variant)[-1]
    layer = cfg.num_layers - 1
    k = 8 if bug == "scale" else 9
    value = onnx.numpy_helper.to_array(_tensor(variant, node.input[k])).copy()
    value[0] = value[0] * 1.1 if bug == "scale" else value[0] + 1
    _replace(variant, node.input[k], value)
    report, result = _verify(cfg, module, model, "int8-dynamic", variant)
    failures = report.judge().failures()
    words = "scale" if bug == "scale" else "zero point"
    assert f"ort-cpu-int8-dynamic: layer {layer}, forward direction: W's {words} " in "\n".join(failures), failures
    assert any(f.startswith(f"ort-cpu-int8-dynamic: layer {layer}, forward direction: W's {words}") for f in failures)


VARIANT_CELLS = [("fp16-weights", p.stem) for p in SHIPPED] + [("int8-dynamic", n) for n in LSTMS]


@pytest.mark.parametrize("kind,name", VARIANT_CELLS)
def test_a_gate_swap_in_the_last_layer_of_any_variant_fails(kind, name):
    cfg = load_config(CONFIG[name])
    module, _ = export_config(cfg)
    source = export_config(source_config(cfg, kind), module)[1]
    node, layer, direction = _last_layer(source, cfg)
    w = onnx.numpy_helper.to_array(_tensor(source, node.input[1])).copy()
    gates = GATES[cfg.cell]
    if gates == 1:  # one gate: negate a direction's W instead
        w[0] = -w[0]
    else:
        blocks = np.split(w, gates, axis=1)
        blocks[0], blocks[1] = blocks[1], blocks[0]
        w = np.concatenate(blocks, axis=1)
    _replace(source, node.input[1], w)
    variant = onnx.load_from_string(make_variant(source, kind, cfg.cell))
    report, result = _verify(cfg, module, export_config(cfg, module)[1], kind, variant)
    failures = report.judge().failures()
    assert failures and all(f.startswith(f"ort-cpu-{kind}: ") for f in failures), failures
    if kind == "int8-dynamic":  # the weight check names it; the outputs may stay within activation quantization
        assert any(f.startswith(f"ort-cpu-int8-dynamic: layer {layer}, forward direction: W's int8 values differ")
                   for f in failures), failures
    else:
        assert _first_failing(result) == (layer, ("forward", "backward")[direction]), result.localisation.summary()


@pytest.mark.parametrize("name", LSTMS)
def test_int8_activation_tolerance_is_measured(name):
    """OWN_ORACLE_TOLERANCE["int8"] holds the int8 variant against its own oracle on every shipped LSTM config,
    every case (lstm_large: the saturating case, its worst, and the example)."""
    cfg, module, model, variant = _variant(name, "int8-dynamic")
    cases = ("example", "saturating") if name == "lstm_large" else None
    report = verify(module, export_config(cfg, module)[1], cfg=cfg, runtimes=("ort",), providers=CPU,
                    case_names=cases, long_seq=256, variants={"int8-dynamic": variant.SerializeToString()})
    result = next(r for r in report.runners if r.name == "ort-cpu-int8-dynamic")
    tol = OWN_ORACLE_TOLERANCE["int8"]
    needed = max(d.max_abs / (1 + d.expected_max_abs) for outs in result.vs_precision.values() for d in outs.values())
    assert needed <= tol.atol == tol.rtol, needed
    assert result.weight_problems == [] and report.judge().passed, report.judge().failures()


def test_report_json_keeps_both_numbers(tmp_path):
    cfg = load_config(CONFIG["lstm_3layer_bidir"])
    artifact = build_artifact(cfg, tmp_path, variants=("fp16-weights", "int8-dynamic"))
    result = CliRunner().invoke(main, ["verify", str(artifact), "--runtimes", "ort", "--cases", "example,tiny",
                                       "--record"])
    assert result.exit_code == 0, result.output
    report = json.loads((artifact / "report.json").read_text())
    runners = {r["name"]: r for r in report["runners"]}
    fp16, plain = runners["ort-cpu-fp16-weights"], runners["ort-cpu"]
    assert "vs_precision" not in plain and "precision_oracle" not in plain
    assert fp16["precision_oracle"] == "torch-float64-oracle-fp16-weights"
    assert fp16["judged_at"]["precision_oracle"] == report["tolerances"]["cpu"]
    for case in ("example", "tiny"):
        own, deployed = fp16["vs_precision"][case]["output"], fp16["drift"][case]["output"]
        assert set(own) == set(deployed) and own["max_abs"] < deployed["max_abs"]
    int8 = runners["ort-cpu-int8-dynamic"]
    assert int8["precision_oracle"] == "torch-float64-oracle-int8" and int8["weight_problems"] == []
    tol = OWN_ORACLE_TOLERANCE["int8"]
    assert int8["judged_at"]["precision_oracle"] == {"atol": tol.atol, "rtol": tol.rtol}


def test_a_runner_coarser_than_the_file_is_not_held_to_its_precision_oracle():
    """A clean fp16-weights file verified as a bare file on every runtime: OpenVINO's default runner computes in
    bf16 where the CPU has it, coarser than fp16-weights; it is judged at bf16's floor against the float oracle,
    never against the fp16-weights oracle at float32 tolerance (which failed every clean file)."""
    cfg, module, _, variant = _variant("gru_2layer", "fp16-weights")
    report = verify(module, variant.SerializeToString(), cfg=cfg, runtimes=("ort", "openvino"), providers=CPU,
                    case_names=("example",))
    ran = {r.name: r for r in report.runners if r.status == "ok"}
    assert report.judge().passed, report.judge().failures
    for result in ran.values():
        assert (result.precision_oracle is not None) == (result.precision == "fp16-weights"), result.name
    assert ran["ort-cpu"].precision == "fp16-weights" and ran["ort-cpu"].vs_precision


@pytest.mark.parametrize("name", LSTMS)
def test_int8_with_a_bias_gate_swap_in_its_last_layer_fails_naming_it(name):
    """B stays float32 in an int8-dynamic file; a swap of two of its gate blocks in the last layer moves the outputs
    less than activation quantization does, so B is checked against the module's biases."""
    cfg, module, model, variant = _variant(name, "int8-dynamic")
    node, layer, _ = _last_layer(variant, cfg)
    b = onnx.numpy_helper.to_array(_tensor(variant, node.input[3])).copy()
    d = b.shape[0] - 1  # the node's last direction
    hidden = cfg.hidden_size
    b[d, :hidden], b[d, hidden:2 * hidden] = b[d, hidden:2 * hidden].copy(), b[d, :hidden].copy()
    _replace(variant, node.input[3], b)
    report, result = _verify(cfg, module, model, "int8-dynamic", variant)
    direction = ("forward", "backward")[d]
    assert any(f"layer {layer}, {direction} direction: B differs from the module's biases" in p
               for p in result.weight_problems), result.weight_problems
    assert not report.judge().passed
