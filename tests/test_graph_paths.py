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


def _ints(name: str, values) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))


def _first_gru_reading(model: onnx.ModelProto, slot: int, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                       tensor: str) -> onnx.ModelProto:
    """``model`` with its first recurrent node's input ``slot`` (0: X, 5: initial_h) replaced by ``tensor``, which
    ``nodes`` compute (placed before everything, in order) from ``inits`` and the graph's inputs."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    first = _recurrent(edited)[0]
    while len(first.input) <= slot:
        first.input.append("")
    first.input[slot] = tensor
    for k, node in enumerate(nodes):
        edited.graph.node.insert(k, node)
    edited.graph.initializer.extend(inits)
    onnx.checker.check_model(edited, full_check=True)
    return edited


def _shape_by_concat(cfg) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """[24, -1, input_size] as Concat([24], [-1, input_size]): one part an initializer, one a Constant node."""
    return ([helper.make_node("Constant", [], ["rest"], value_ints=[-1, cfg.input_size]),
             helper.make_node("Concat", ["steps", "rest"], ["fixed_shape"], axis=0, name="shape_concat")],
            [_ints("steps", [24])])


def _shape_by_cast(cfg) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """[24, -1, input_size] as a float constant cast to int64 (as converters write shapes computed in float)."""
    floats = numpy_helper.from_array(np.array([24, -1, cfg.input_size], np.float32), "float_shape")
    return [helper.make_node("Cast", ["float_shape"], ["fixed_shape"], to=TensorProto.INT64, name="shape_cast")], [floats]


def _reshaped_input(cfg, model, build):
    nodes, inits = build(cfg)
    x = _recurrent(model)[0].input[0]
    reshape = helper.make_node("Reshape", [x, "fixed_shape"], ["x_fixed"], name="reshape_x")
    line = (f"reshape_x: reshapes {x} to [24, -1, {cfg.input_size}] on its way to {_recurrent(model)[0].name}'s X, "
            "fixing the sequence length to 24")
    return _first_gru_reading(model, 0, [*nodes, reshape], inits, "x_fixed"), line


def _expanded_state(cfg, model):
    """A zero initial_h expanded to Concat([1, 3], [hidden_size]): a batch of 3 baked in."""
    zeros = numpy_helper.from_array(np.zeros((1, 1, cfg.hidden_size), np.float32), "h0_const")
    nodes = [helper.make_node("Unsqueeze", ["hidden", "zero_axis"], ["hidden_1d"], name="hidden_1d"),
             helper.make_node("Concat", ["lead", "hidden_1d"], ["state_shape"], axis=0, name="state_concat"),
             helper.make_node("Expand", ["h0_const", "state_shape"], ["h0_fixed"], name="expand_h0")]
    inits = [zeros, _ints("lead", [1, 3]), helper.make_tensor("hidden", TensorProto.INT64, [], [cfg.hidden_size]),
             _ints("zero_axis", [0])]
    line = (f"expand_h0: expands h0_const to [1, 3, {cfg.hidden_size}] on its way to {_recurrent(model)[0].name}'s "
            "initial_h, fixing the batch size to 3")
    return _first_gru_reading(model, 5, nodes, inits, "h0_fixed"), line


MUTANTS = {"concat": lambda cfg, m: _reshaped_input(cfg, m, _shape_by_concat),
           "cast": lambda cfg, m: _reshaped_input(cfg, m, _shape_by_cast),
           "expand": _expanded_state}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_shapes_built_from_constants_are_folded_and_fix_a_length_with_and_without_the_run(name, tmp_path):
    cfg, _, model = _built("gru_2layer")
    mutant, line = MUTANTS[name](cfg, model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(mutant, path)
    static = CliRunner().invoke(main, ["lint", str(path), "--no-run"])
    assert static.exit_code == 1 and static.output.splitlines() == [
        f"{path}: error: static-reshape: {line}", f"{path}: 1 error(s), 0 warning(s)"], static.output
    run = CliRunner().invoke(main, ["lint", str(path), "--run"])
    lines = run.output.splitlines()
    assert run.exit_code == 1 and lines[0] == f"{path}: error: static-reshape: {line}", run.output
    # roles are traced through the folded shape, so lint's run is made, and ONNX Runtime does fail at other shapes
    assert lines[1].startswith(f"{path}: error: run: ONNX Runtime fails at sequence length ") and len(lines) == 3
    assert "not run" not in run.output


def _shape_by_gather(cfg):
    """[24, -1, input_size] gathered from a longer constant, through 3,000 Identity nodes and a Squeeze/Unsqueeze:
    folded once each, in a walk linear in the graph."""
    chain = [helper.make_node("Identity", [f"table_{k}"], [f"table_{k + 1}"]) for k in range(3000)]
    return ([*chain, helper.make_node("Gather", ["table_3000", "picks"], ["picked"], axis=0),
             helper.make_node("Unsqueeze", ["picked", "axis0"], ["picked_2d"]),
             helper.make_node("Squeeze", ["picked_2d", "axis0"], ["fixed_shape"])],
            [_ints("table_0", [5, 24, -1, cfg.input_size]), _ints("picks", [1, 2, 3]), _ints("axis0", [0])])


def _shape_from_the_input(cfg):
    """[seq, -1, input_size] with seq read by Shape from the input itself: no constant, no fixed length."""
    x = "input"
    return ([helper.make_node("Shape", [x], ["x_shape"]), helper.make_node("Gather", ["x_shape", "first"], ["seq"]),
             helper.make_node("Concat", ["seq", "rest"], ["fixed_shape"], axis=0)],
            [_ints("first", [0]), _ints("rest", [-1, cfg.input_size])])


def test_a_gathered_constant_shape_is_folded_and_a_shape_read_from_the_input_is_not(tmp_path):
    cfg, _, model = _built("gru_2layer")
    assert _recurrent(model)[0].input[0] == "input"  # what _shape_from_the_input reads
    gathered, line = _reshaped_input(cfg, model, _shape_by_gather)
    assert [str(f) for f in lint_model(gathered) if f.level == "error"] == [f"error: static-reshape: {line}"]
    dynamic, _ = _reshaped_input(cfg, model, _shape_from_the_input)
    assert [str(f) for f in lint_model(dynamic) if f.level == "error"] == []
    session = ort.InferenceSession(dynamic.SerializeToString(), providers=["CPUExecutionProvider"])
    for seq, batch in ((2, 1), (7, 3)):  # and it does run at any length: lint was right to say nothing
        x = np.zeros((seq, batch, cfg.input_size), np.float32)
        assert session.run(None, {"input": x})[0].shape[:2] == (seq, batch)


@pytest.mark.parametrize("rows", [3, 5])
@pytest.mark.parametrize("keep_hidden", [True, False])
def test_a_reshape_of_h_n_names_the_batch_it_fixes(rows, keep_hidden):
    """Y_h is [1, batch, hidden]: a Reshape to [rows, hidden] (or [rows, -1]) makes the batch ``rows``."""
    cfg, _, model = _built("gru_2layer")
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    last = _recurrent(edited)[-1]
    shape = [rows, cfg.hidden_size if keep_hidden else -1]
    edited.graph.initializer.append(_ints("flat_shape", shape))
    edited.graph.node.append(helper.make_node("Reshape", [last.output[1], "flat_shape"], ["flat"], name="flat_h"))
    edited.graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, [None, None]))
    onnx.checker.check_model(edited, full_check=True)
    assert [str(f) for f in lint_model(edited) if f.level == "error"] == [
        f"error: static-reshape: flat_h: reshapes {last.name}'s Y_h to {shape}, fixing the batch size to {rows}"]
    session = ort.InferenceSession(edited.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros((2, rows, cfg.input_size), np.float32)
    assert session.run(["flat"], {"input": x})[0].shape == (rows, cfg.hidden_size)  # the batch lint names runs
    with pytest.raises(Exception, match="[Rr]eshape|shape"):
        session.run(["flat"], {"input": x[:, :2]})  # and another batch does not
