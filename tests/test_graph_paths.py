"""What lint, inspect and verify read from the paths through a graph, on shipped artifacts edited the way files
are edited in the wild: a file's precision comes from what its recurrent nodes compute on (a quantize/dequantize
pair nobody reads changes nothing), shapes built from constants by Concat, Cast or Unsqueeze are folded like the
constants themselves, and a fixed size is named at the axis the recurrent output's role lands on."""

from __future__ import annotations

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
from rnnexport.graph.inspection import inspect_path
from rnnexport.graph.lint import lint_model
from rnnexport.graph.precision import model_precision
from rnnexport.verification.engine import verify

ORT_ONLY = dict(runtimes=("ort",), providers=("CPUExecutionProvider",), threads=1, case_names=("example",))


def _built(name: str):
    cfg = load_config(next(p for p in SHIPPED if p.stem == name))
    return (cfg, *export_config(cfg))


def _recurrent(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in ("GRU", "LSTM", "RNN")]


def _scaled_layer_1(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """``model`` with layer 1's W multiplied by ``factor``: an export bug verify must fail."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    name = _recurrent(edited)[1].input[1]
    init = next(t for t in edited.graph.initializer if t.name == name)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), name))
    return edited


def _qdq(model: onnx.ModelProto, source: str, prefix: str) -> str:
    """Append a QuantizeLinear → DequantizeLinear pair on ``source`` (int8, per tensor); its output's name."""
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), f"{prefix}_scale"),
                                    numpy_helper.from_array(np.array(0, np.int8), f"{prefix}_zero")])
    model.graph.node.extend([
        helper.make_node("QuantizeLinear", [source, f"{prefix}_scale", f"{prefix}_zero"], [f"{prefix}_q"],
                         name=f"{prefix}_quantize"),
        helper.make_node("DequantizeLinear", [f"{prefix}_q", f"{prefix}_scale", f"{prefix}_zero"], [f"{prefix}_dq"],
                         name=f"{prefix}_dequantize")])
    return f"{prefix}_dq"


def _with_dead_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` plus a quantize/dequantize pair on a 4-element constant whose output nothing reads."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    edited.graph.initializer.append(numpy_helper.from_array(np.arange(4, dtype=np.float32), "unused_constant"))
    _qdq(edited, "unused_constant", "unused")
    onnx.checker.check_model(edited, full_check=True)
    return edited


def _ort_cpu(report):
    return next(r for r in report.runners if r.name == "ort-cpu")


def test_a_dead_quantize_dequantize_pair_does_not_loosen_the_tolerance_of_a_wrong_model():
    cfg, module, model = _built("gru_2layer")
    wrong = _scaled_layer_1(model, 1.08)
    dead = _with_dead_qdq(wrong)
    assert model_precision(dead) == model_precision(wrong) == "float32"
    reports = [verify(module, m, cfg=cfg, **ORT_ONLY) for m in (wrong, dead)]
    for report in reports:
        assert _ort_cpu(report).precision == "float32"
        assert not report.passed()
    # the dead pair changes no number and no verdict: the same drift, judged at the same tolerance
    assert _ort_cpu(reports[1]).worst()[2].max_abs == _ort_cpu(reports[0]).worst()[2].max_abs
    assert reports[1].failures() == reports[0].failures()


def test_a_quantize_dequantize_pair_reading_a_recurrent_output_that_nothing_reads_changes_nothing(tmp_path):
    cfg, module, model = _built("gru_2layer")
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    _qdq(edited, _recurrent(edited)[1].output[0], "unread_y")  # reads layer 1's Y, but reaches no output
    onnx.checker.check_model(edited, full_check=True)
    assert model_precision(edited) == "float32"
    path = tmp_path / "dead.onnx"
    onnx.save(edited, path)
    assert inspect_path(path)["precision"] == "float32"
    lint = CliRunner().invoke(main, ["lint", str(path), "--no-run"])
    assert lint.exit_code == 0 and "precision" not in lint.output, lint.output


def _through_qdq(model: onnx.ModelProto, slot: int) -> onnx.ModelProto:
    """``model`` with layer 1's input ``slot`` (1: W) read through a QDQ pair and a Cast to float32."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    node = _recurrent(edited)[1]
    dq = _qdq(edited, node.input[slot], "w1")
    edited.graph.node.append(helper.make_node("Cast", [dq], ["w1_cast"], to=TensorProto.FLOAT, name="w1_cast"))
    node.input[slot] = "w1_cast"
    sorted_nodes = _topological(edited)
    del edited.graph.node[:]
    edited.graph.node.extend(sorted_nodes)
    onnx.checker.check_model(edited, full_check=True)
    return edited


def _topological(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    ready = {t.name for t in model.graph.initializer} | {v.name for v in model.graph.input}
    left, ordered = list(model.graph.node), []
    while left:
        node = next(n for n in left if all(not t or t in ready for t in n.input))
        left.remove(node)
        ordered.append(node)
        ready.update(node.output)
    return ordered


def test_weights_quantized_on_their_way_to_a_recurrent_node_make_it_int8(tmp_path):
    cfg, module, model = _built("gru_2layer")
    quantized = _through_qdq(model, 1)
    assert model_precision(quantized) == model_precision(_with_dead_qdq(quantized)) == "int8"
    report = verify(module, quantized, cfg=cfg, **ORT_ONLY)
    assert _ort_cpu(report).precision == "int8"
    path = tmp_path / "int8.onnx"
    onnx.save(quantized, path)
    assert inspect_path(path)["precision"] == "int8"
    assert [f.code for f in lint_model(quantized) if f.level == "note"] == ["precision"]


def test_an_output_quantized_on_its_way_to_the_graph_output_is_int8():
    cfg, module, model = _built("gru_2layer")
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    output = edited.graph.output[0].name
    producer = next(n for n in edited.graph.node if output in n.output)
    producer.output[list(producer.output).index(output)] = "before_output"
    edited.graph.node.append(helper.make_node("Identity", [_qdq(edited, "before_output", "out")], [output]))
    onnx.checker.check_model(edited, full_check=True)
    assert model_precision(edited) == "int8"
    session = ort.InferenceSession(edited.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [o.name for o in model.graph.output]
