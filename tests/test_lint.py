"""lint and inspect on ONNX files nobody here wrote: ONNX's own backend node models, and small crafted graphs
for each rule (subgraphs, roles from the graph, folded Constants, PyTorch-incompatible attributes, foreign
domains, the ONNX Runtime run at other shapes). Every expected finding is written out or derived from the
model's own attributes, never from lint's code."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from rnnexport.cli import main
from rnnexport.graph.inspection import inspect_path, render_inspect
from rnnexport.graph.lint import lint_model

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # some generators divide by zero on purpose
    from onnx.backend.test.case.node import collect_testcases

    NODE_CASES = {c.name: c.model for c in collect_testcases()
                  if c.name.startswith(("test_gru", "test_lstm", "test_rnn", "test_simple_rnn"))}

H, I = 4, 3


def _codes(findings) -> set[tuple[str, str]]:
    return {(f.level, f.code) for f in findings}


def _attr(node, name, default=None):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _expected_from_attributes(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """What the node's attributes and inputs say lint must find, read here independently."""
    node = model.graph.node[0]
    slots = dict(zip(("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"), node.input))
    found = {("warning", "weights")}  # the node tests pass W and R as graph inputs
    if node.op_type == "GRU" and _attr(node, "linear_before_reset", 0) != 1:
        found.add(("error", "linear-before-reset"))
    if _attr(node, "layout", 0):
        found.add(("error", "layout"))
        found.add(("error", "run"))  # and ONNX Runtime's CPU kernels indeed refuse to run it
    if _attr(node, "direction", b"forward") == b"reverse":
        found.add(("error", "reverse"))
    if slots.get("P"):
        found.add(("error", "peepholes"))
    if slots.get("sequence_lens"):
        found.add(("warning", "sequence-lens"))
    inputs = {v.name: v for v in model.graph.input}
    batch_major = bool(_attr(node, "layout", 0))
    role_axes = {"X": (0, 1), "initial_h": (0,) if batch_major else (1,), "initial_c": (0,) if batch_major else (1,),
                 "sequence_lens": (0,)}
    for slot, axes in role_axes.items():
        dims = inputs[slots[slot]].type.tensor_type.shape.dim if slots.get(slot) else []
        if any(dims[a].HasField("dim_value") for a in axes if a < len(dims)):
            found.add(("error", "static-dims"))
    return found


@pytest.mark.parametrize("name", sorted(NODE_CASES))
def test_onnx_backend_node_models_get_the_findings_their_attributes_call_for(name):
    model = NODE_CASES[name]
    assert _codes(lint_model(model, run=True)) == _expected_from_attributes(model)


def test_the_node_corpus_is_there():
    assert len(NODE_CASES) >= 15 and any("peephole" in n for n in NODE_CASES) and any("batchwise" in n for n in NODE_CASES)


def _gru_graph(state_name: str = "h0", lbr: int = 1, name: str = "gru", weights_as_inputs: bool = False,
               dims=("seq", "batch")) -> onnx.GraphProto:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [1, 3 * H, I], rng.standard_normal(3 * H * I).tolist())
    r = helper.make_tensor("R", TensorProto.FLOAT, [1, 3 * H, H], rng.standard_normal(3 * H * H).tolist())
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*dims, I]),
              helper.make_tensor_value_info(state_name, TensorProto.FLOAT, [1, dims[1], H])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 3 * H, I]),
                   helper.make_tensor_value_info("R", TensorProto.FLOAT, [1, 3 * H, H])]
    node = helper.make_node("GRU", ["x", "W", "R", "", "", state_name], ["y", "y_h"], name=name, hidden_size=H,
                            linear_before_reset=lbr)
    return helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                                                   helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)],
                             [] if weights_as_inputs else [w, r])


def _model(graph: onnx.GraphProto, **kw) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kw)


def test_roles_come_from_the_graph_not_from_names():
    named = {state: lint_model(_model(_gru_graph(state)), run=True) for state in ("h0", "initial_h", "hidden")}
    assert all(findings == [] for findings in named.values()), named
    as_inputs = lint_model(_model(_gru_graph(weights_as_inputs=True)), run=True)
    assert _codes(as_inputs) == {("warning", "weights")}  # W and R as inputs: no static-dims error
    fixed = lint_model(_model(_gru_graph("initial_h", dims=(5, "batch"))), run=True)
    assert [str(f) for f in fixed] == ["error: static-dims: input x: axis 0 (seq) fixed to 5; they must be dynamic "
                                       "for the model to take other lengths and batches"]


def test_a_batch_first_input_is_followed_through_its_transpose():
    graph = _gru_graph()
    graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "seq", I]))  # batch fixed
    graph.node[0].input[0] = "x_t"
    graph.node.insert(0, helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2]))
    findings = lint_model(_model(graph))
    assert [str(f) for f in findings] == ["error: static-dims: input x: axis 0 (batch) fixed to 2; they must be "
                                          "dynamic for the model to take other lengths and batches"]


def _if_model(lbr: int) -> onnx.ModelProto:
    inner = _gru_graph(lbr=lbr)
    then_branch = helper.make_graph(list(inner.node), "then", [], list(inner.output), list(inner.initializer))
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y"]), helper.make_node(
        "Identity", ["h0"], ["y_h"])], "else", [], list(inner.output))
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    node = helper.make_node("If", ["cond"], ["y", "y_h"], name="If_0", then_branch=then_branch,
                            else_branch=else_branch)
    return _model(helper.make_graph([node], "m", [*inner.input, cond], list(inner.output)))


def test_a_gru_inside_an_if_branch_is_seen_with_its_path(tmp_path):
    findings = lint_model(_if_model(lbr=0))
    assert [str(f) for f in findings] == ["error: linear-before-reset: If_0/then_branch/gru: GRU with "
                                          "linear_before_reset=0 computes another function than PyTorch's GRU "
                                          "(which needs 1)"]
    assert lint_model(_if_model(lbr=1)) == []
    path = tmp_path / "if.onnx"
    onnx.save(_if_model(lbr=0), path)
    text = render_inspect(inspect_path(path))
    assert "  cell        GRU × 1 layers, hidden 4, input 3, forward" in text
    assert "  layer       If_0/then_branch/gru: GRU, W [1, 12, 3], R [1, 12, 4], layout 0, linear_before_reset 0" in text


def test_a_constant_node_shape_that_fixes_the_length_is_flagged_and_fails_to_run():
    graph = _gru_graph()
    graph.node.append(helper.make_node("Constant", [], ["shape"], value_ints=[7, -1, H]))
    graph.node.append(helper.make_node("Reshape", ["y", "shape"], ["flat"], name="flatten"))
    graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, None))
    findings = lint_model(_model(graph), run=True)
    assert str(findings[0]) == "error: static-reshape: flatten: reshapes the output of gru to [7, -1, 4], fixing the " \
                               "sequence length to 7"
    assert findings[1].code == "run" and findings[1].message.startswith("ONNX Runtime fails at sequence length 2, batch 1")
    assert len(findings) == 2


@pytest.mark.parametrize("attr,value,line", [
    ("clip", 3.0, "error: clip: lstm: clip=3 clips the gates' pre-activations; PyTorch does not"),
    ("input_forget", 1, "error: input-forget: lstm: input_forget=1 couples the input and forget gates; PyTorch's "
                        "LSTM does not"),
    ("activation_alpha", [0.5, 0.5, 0.5], "error: activation-params: lstm: activation_alpha/activation_beta set "
                                          "({'activation_alpha': [0.5, 0.5, 0.5]}); PyTorch's activations take no "
                                          "parameters"),
    ("direction", "reverse", "error: reverse: lstm: direction=reverse; PyTorch has no reverse-only layer (only the "
                             "backward half of a bidirectional one)"),
])
def test_lstm_attributes_pytorch_cannot_express(attr, value, line):
    model = _lstm_model(**{attr: value})
    assert [str(f) for f in lint_model(model)] == [line]


def _lstm_model(peepholes: bool = False, domain: str = "", **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, s, rng.standard_normal(int(np.prod(s))).tolist())
             for n, s in (("W", [1, 4 * H, I]), ("R", [1, 4 * H, H]), ("P", [1, 3 * H]))]
    inputs = ["x", "W", "R"] + (["", "", "", "", "P"] if peepholes else [])
    node = helper.make_node("LSTM", inputs, ["y"], name="lstm", hidden_size=H, domain=domain, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", "batch", I])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_peepholes_and_a_foreign_domain():
    assert [str(f) for f in lint_model(_lstm_model(peepholes=True), run=True)] == [
        "error: peepholes: lstm: LSTM with peephole weights P; PyTorch's LSTM has none"]
    findings = lint_model(_lstm_model(domain="com.example"), run=True)
    assert [(f.level, f.code) for f in findings] == [("error", "no-recurrent-node"), ("error", "foreign-domain"),
                                                     ("error", "run")]
    assert findings[1].message == ("lstm: com.example:LSTM is not ONNX's LSTM (domain 'com.example'); ONNX Runtime "
                                   "and OpenVINO will not run it as one")
    assert findings[2].message.startswith("ONNX Runtime cannot load the model: ")


def test_a_recurrent_node_in_a_model_function_is_seen():
    inner = _lstm_model().graph
    function = helper.make_function("com.mine", "Encoder", ["x"], ["y"], list(inner.node[:1]),
                                    [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Encoder", ["x"], ["y"], domain="com.mine")], "g",
                              list(inner.input), list(inner.output), list(inner.initializer))
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.mine", 1)])
    layers = inspect_path_of(model)
    assert [layer["where"] for layer in layers] == ["function com.mine:Encoder/lstm"]


def inspect_path_of(model: onnx.ModelProto) -> list[dict]:
    from rnnexport.graph.inspection import layer_summary

    return layer_summary(model)


def test_cli_lint_run_options(tmp_path):
    graph = _gru_graph()
    graph.node.append(helper.make_node("Constant", [], ["shape"], value_ints=[7, -1, H]))
    graph.node.append(helper.make_node("Reshape", ["y", "shape"], ["flat"], name="flatten"))
    graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, None))
    path = tmp_path / "m.onnx"
    onnx.save(_model(graph), path)
    default = CliRunner().invoke(main, ["lint", str(path)]).output
    assert f"{path}: error: run: ONNX Runtime fails at sequence length 2, batch 1" in default
    skipped = CliRunner().invoke(main, ["lint", str(path), "--no-run"]).output
    assert "error: run" not in skipped and "error: static-reshape" in skipped


@pytest.mark.parametrize("name,expected", [
    ("gru_ragged_batch_first", {"input": {0: "batch", 1: "seq"}, "h0": {1: "batch"}}),
    ("lstm_3layer_bidir", {"input": {0: "seq", 1: "batch"}, "h0": {1: "batch"}, "c0": {1: "batch"}}),
    ("lstm_dropout_ragged", {"input": {0: "seq", 1: "batch"}}),  # masked: lengths feed the mask, not the nodes
])
def test_roles_of_our_own_graphs_are_found_through_transposes_gathers_and_masks(name, expected):
    from conftest import SHIPPED

    from rnnexport.artifacts.build import export_config
    from rnnexport.config import load_config
    from rnnexport.graph.subgraphs import input_roles, scopes

    model = export_config(load_config(next(p for p in SHIPPED if p.stem == name)))[1]
    assert input_roles(next(scopes(model))) == expected
    assert lint_model(model, run=True) == []  # and it runs at 2 and 7 steps, batch 1 and 3
