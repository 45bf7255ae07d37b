"""Files people ship after post-processing, verified as what they are: converted to float16 with
onnxconverter-common (keep_io_types, as deployers run it), quantized (QDQ, ONNX Runtime's quantize_dynamic).
The runner shows the file's precision, the tolerance is that precision's, lint and inspect name it, and
per-layer localisation reads each node's outputs in their own type. Everything here runs in ONNX Runtime."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import SHIPPED
from onnx import TensorProto, helper, numpy_helper

from rnnexport.artifacts.build import export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.graph.inspection import inspect_path, render_inspect
from rnnexport.graph.lint import lint_model
from rnnexport.graph.precision import model_precision
from rnnexport.verification.engine import verify
from rnnexport.verification.verdict import PRECISION_TOLERANCE, Tolerances

ORT_ONLY = dict(runtimes=("ort",), providers=("CPUExecutionProvider",), threads=1)


def _built(name: str):
    cfg = load_config(next(p for p in SHIPPED if p.stem == name))
    return (cfg, *export_config(cfg))


def _float16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns of every weight it rounds, by design
        return convert_float_to_float16(model, keep_io_types=True)


def _ort_result(report):
    return next(r for r in report.runners if r.name == "ort-cpu")


def test_a_float16_file_is_verified_at_the_f16_tolerance_with_per_layer_localisation():
    cfg, module, model = _built("gru_2layer")
    half = _float16(model)
    assert model_precision(half) == "f16" and model_precision(model) == "float32"
    report = verify(module, half, cfg=cfg, per_layer=True, **ORT_ONLY)
    ort_cpu = _ort_result(report)
    assert ort_cpu.precision == "f16"
    assert report.to_dict()["runners"][0]["judged_at"] == {"atol": 5e-3, "rtol": 5e-3, "rule": (
        "the f16 floor (PRECISION_TOLERANCE)")}
    assert report.passed(), report.failures()
    worst = ort_cpu.worst()[2].max_abs
    assert 1e-4 < worst  # float16 rounding really is there: float32's own tolerance (1e-5) could not pass it
    assert not report.passed(Tolerances(atol=1e-5, rtol=1e-5))
    layers = ort_cpu.localisation.layers
    assert [(x["layer"], x["ok"]) for x in layers] == [(0, True), (1, True)] and all(x["max_abs"] > 0 for x in layers)


def test_openvino_runs_a_float16_file_at_the_file_precision_or_its_own_if_coarser():
    pytest.importorskip("openvino")
    cfg, module, model = _built("gru_2layer")
    report = verify(module, _float16(model), cfg=cfg, runtimes=("openvino",), case_names=("example",), threads=1,
                    per_layer=True)
    precisions = {r.name: r.precision for r in report.runners if r.status == "ok"}
    assert precisions["openvino-cpu-f32"] == "f16"  # forced f32 inference, but the file's weights are float16
    assert precisions["openvino-cpu-default"] in ("f16", "bf16")  # bf16 where the CPU computes in it
    assert report.passed(), report.failures()
    assert all(r.localisation.summary().startswith("every layer within tolerance") for r in report.runners
               if r.status == "ok")


@pytest.mark.parametrize("name", ["lstm_dropout_ragged", "gru_ragged_batch_first", "gru_bidir_nobias_ragged"])
def test_masked_graphs_converted_to_float16_load_and_pass_at_the_f16_tolerance(name):
    cfg, module, model = _built(name)
    half = _float16(model)
    ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])  # it loads (m_pad is typed)
    report = verify(module, half, cfg=cfg, case_names=("example", "ragged", "batch1"), per_layer=True, **ORT_ONLY)
    assert _ort_result(report).precision == "f16"
    assert report.passed(), report.failures()
    assert _ort_result(report).localisation.summary().startswith("every layer within tolerance")


def _quantize_dynamic(model: onnx.ModelProto, tmp_path) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = tmp_path / "f32.onnx", tmp_path / "int8.onnx"
    onnx.save(model, source)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_dynamic(source, target, op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().setLevel(level)
    return onnx.load(target)


def test_quantize_dynamic_of_a_masked_lstm_is_refused_naming_the_padding_column(tmp_path):
    cfg, module, model = _built("lstm_dropout_ragged")
    quantized = _quantize_dynamic(model, tmp_path)
    errors = [str(f) for f in lint_model(quantized) if f.level == "error"]
    assert len(errors) == cfg.num_layers and errors[0].startswith(
        f"error: quantized-padding: lstm_l0_quant: W's input column {cfg.input_size} holds ±1e+04, the padding "
        "column of a masked ragged graph")
    report = verify(module, quantized, cfg=cfg, case_names=("example",), **ORT_ONLY)
    assert _ort_result(report).precision == "int8"
    failures = report.failures()
    assert any(f.startswith("graph: lstm_l0_quant: W's input column") for f in failures), failures
    assert any(f.startswith("ort-cpu: example/") for f in failures)  # and it really computes something else
    seq_lens_form = _quantize_dynamic(export_config(cfg.with_variable_lengths(True))[1], tmp_path)
    assert [f for f in lint_model(seq_lens_form) if f.level == "error"] == []  # what the advice says to quantize


def test_a_qdq_file_is_verified_as_int8(tmp_path):
    cfg, module, model = _built("gru_2layer")
    first = next(n for n in model.graph.node if n.op_type == "GRU")
    scale = numpy_helper.from_array(np.array(4 / 127, np.float32), "x_scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), "x_zero")
    model.graph.initializer.extend([scale, zero])
    x = first.input[0]
    first.input[0] = "x_dq"
    at = list(model.graph.node).index(first)
    for k, node in enumerate([helper.make_node("QuantizeLinear", [x, "x_scale", "x_zero"], ["x_q"], name="quantize_x"),
                              helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"],
                                               name="dequantize_x")]):
        model.graph.node.insert(at + k, node)
    onnx.checker.check_model(model)
    assert model_precision(model) == "int8"
    report = verify(module, model, cfg=cfg, case_names=("example", "tiny"), **ORT_ONLY)
    assert _ort_result(report).precision == "int8"
    assert report.judge().tolerances.for_runner("cpu", "int8") == PRECISION_TOLERANCE["int8"]
    tiny = _ort_result(report).drift["tiny"]["output"]  # |x| ≈ 1e-3 rounds to 0 in steps of 4/127: it shows
    assert tiny.max_abs > 1e-4
    # quantized by its own rule, not int8-dynamic's: no oracle of its own precision, no weight check against that rule
    assert _ort_result(report).precision_oracle is None and not any("rule" in f for f in report.failures())


def test_lint_and_inspect_name_the_precision(tmp_path):
    cfg, module, model = _built("gru_2layer")
    path = tmp_path / "half.onnx"
    onnx.save(_float16(model), path)
    lint = CliRunner().invoke(main, ["lint", str(path), "--no-run"])
    assert lint.exit_code == 0 and lint.output.splitlines() == [
        f"{path}: note: precision: the recurrent nodes compute in float16: verify judges it as f16 (atol 0.005, "
        "rtol 0.005 at least)", f"{path}: 0 error(s), 0 warning(s)"]
    info = inspect_path(path)
    assert info["precision"] == "f16"
    assert "  precision   f16: the recurrent nodes compute in float16" in render_inspect(info).splitlines()
    onnx.save(model, path)
    assert inspect_path(path)["precision"] == "float32" and "precision" not in render_inspect(inspect_path(path))


def test_a_bfloat16_graph_is_named_bf16():
    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["seq", "batch", 3])
    w = helper.make_tensor("W", TensorProto.BFLOAT16, [1, 12, 3], [0.0] * 36)
    r = helper.make_tensor("R", TensorProto.BFLOAT16, [1, 12, 4], [0.0] * 48)
    node = helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=4, linear_before_reset=1)
    graph = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)],
                              [w, r])
    assert model_precision(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])) == "bf16"


def test_shape_inference_without_the_weights_values_finds_what_it_finds_with_them():
    """A Split into 160 pieces (sizes: 1,280 bytes of int64) decides shapes and keeps its values; the float16
    weight loses its values and nothing else: the inferred types and shapes are those of the whole model."""
    from onnx import TensorProto, helper, numpy_helper

    from rnnexport.graph.subgraphs import shape_inferred

    sizes = numpy_helper.from_array(np.ones(160, dtype=np.int64), "sizes")
    weight = numpy_helper.from_array(np.ones((160, 64), dtype=np.float16), "weight")
    graph = helper.make_graph(
        [helper.make_node("Split", ["x", "sizes"], [f"p{i}" for i in range(160)], axis=0),
         helper.make_node("MatMul", ["p0", "weight"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [160, 160])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], [sizes, weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    light, whole = shape_inferred(model), onnx.shape_inference.infer_shapes(model)
    assert light.graph.value_info == whole.graph.value_info and light.graph.output == whole.graph.output
    assert [d.dim_value for d in light.graph.output[0].type.tensor_type.shape.dim] == [1, 64]
