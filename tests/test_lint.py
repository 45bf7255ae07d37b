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
    ("gru_ragged_batch_first", {"input": {0: "batch", 1: "seq", 2: "feature"}, "h0": {1: "batch"}}),
    ("lstm_3layer_bidir", {"input": {0: "seq", 1: "batch", 2: "feature"}, "h0": {1: "batch"}, "c0": {1: "batch"}}),
    # masked: lengths feed the mask, not the nodes; an LSTM's X is the input with the padding column beside it
    ("lstm_dropout_ragged", {"input": {0: "seq", 1: "batch"}}),
])
def test_roles_of_our_own_graphs_are_found_through_transposes_gathers_and_masks(name, expected):
    from conftest import SHIPPED

    from rnnexport.artifacts.build import export_config
    from rnnexport.config import load_config
    from rnnexport.graph.subgraphs import input_roles, scopes

    model = export_config(load_config(next(p for p in SHIPPED if p.stem == name)))[1]
    assert input_roles(next(scopes(model))) == expected
    assert lint_model(model, run=True) == []  # and it runs at 2 and 7 steps, batch 1 and 3


# Fixed lengths upstream and downstream of the recurrent node (issue #28), and walks linear in the graph (#27).

def _gru_reading(x: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto] = (), state: str = "",
                 x_dims=("seq", "batch", I), extra_outputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A GRU whose X is ``x`` and initial_h is ``state`` (both made by ``nodes`` from the graph input ``x_in``)."""
    graph = _gru_graph()
    gru = graph.node[0]
    gru.input[0], gru.input[5] = x, state
    del graph.input[1]  # h0: the state, if any, comes from the nodes
    graph.input[0].CopyFrom(helper.make_tensor_value_info("x_in", TensorProto.FLOAT, list(x_dims)))
    graph.node.insert(0, helper.make_node("Identity", ["x_in"], ["x"], name="take_x"))
    for k, node in enumerate(nodes):
        graph.node.insert(1 + k, node)
    graph.initializer.extend(inits)
    graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in extra_outputs)
    return _model(graph)


def _ints(name: str, values) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))


def _static(model: onnx.ModelProto, run: bool = False) -> list[str]:
    return [str(f) for f in lint_model(model, run=run) if f.code in ("static-reshape", "static-dims")]


def _reshape_before_gru() -> onnx.ModelProto:
    return _gru_reading("x24", [helper.make_node("Reshape", ["x", "shape24"], ["x24"], name="reshape_x")],
                        [_ints("shape24", [24, -1, I])])


def _baked_batch() -> onnx.ModelProto:
    zeros = helper.make_tensor("h0_const", TensorProto.FLOAT, [1, 1, H], [0.0] * H)
    return _gru_reading("x", [helper.make_node("Expand", ["h0_const", "batch3"], ["h0"], name="expand_h0")],
                        [zeros, _ints("batch3", [1, 3, H])], state="h0")


def test_a_reshape_to_a_constant_before_the_gru_is_an_error_without_running():
    assert _static(_reshape_before_gru()) == [
        "error: static-reshape: reshape_x: reshapes x to [24, -1, 3] on its way to gru's X, fixing the sequence "
        "length to 24"]


def test_an_expand_of_a_constant_state_to_a_baked_batch_is_an_error_without_running():
    assert _static(_baked_batch()) == [
        "error: static-reshape: expand_h0: expands h0_const to [1, 3, 4] on its way to gru's initial_h, fixing the "
        "batch size to 3"]


def test_the_cli_says_both_with_and_without_the_run(tmp_path):
    for name, model in (("reshape", _reshape_before_gru()), ("expand", _baked_batch())):
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        for flags in (["--no-run"], []):
            result = CliRunner().invoke(main, ["lint", str(path), *flags])
            assert result.exit_code == 1 and f"{path}: error: static-reshape: " in result.output, result.output


def test_the_model_really_fails_where_lint_says():
    import onnxruntime as ort  # the Expand's batch 3: ONNX Runtime refuses batch 2, so the error is no guess

    session = ort.InferenceSession(_baked_batch().SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"x_in": np.zeros((5, 3, I), np.float32)})
    with pytest.raises(Exception, match="batch_size|dimension|shape"):
        session.run(None, {"x_in": np.zeros((5, 2, I), np.float32)})


@pytest.mark.parametrize("nodes,inits,state,line", [
    ([helper.make_node("Tile", ["h0_const", "rep"], ["h0"], name="tile_h0")],
     [helper.make_tensor("h0_const", TensorProto.FLOAT, [1, 1, H], [0.0] * H), _ints("rep", [1, 5, 1])], "h0",
     "tile_h0: tiles h0_const by [1, 5, 1] on its way to gru's initial_h, fixing the batch size to 5"),
    ([helper.make_node("ConstantOfShape", ["shape"], ["h0"], name="zeros",
                       value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))],
     [_ints("shape", [1, 6, H])], "h0",
     "zeros: makes a tensor of the constant shape [1, 6, 4] on its way to gru's initial_h, fixing the batch size to 6"),
    ([helper.make_node("Slice", ["x", "s", "e", "a"], ["x_cut"], name="first_steps")],
     [_ints("s", [0]), _ints("e", [24]), _ints("a", [0])], "",
     "first_steps: slices x from [0] to [24] on its way to gru's X, fixing the sequence length to 24"),
    ([helper.make_node("Split", ["x", "sizes"], ["x_cut", "rest"], name="halves", axis=1)],
     [_ints("sizes", [2, 3])], "",
     "halves: splits x into the sizes [2, 3] on its way to gru's X, fixing the batch size to 2"),
])
def test_tile_constant_of_shape_slice_and_split_sizes_upstream(nodes, inits, state, line):
    x = "x" if state else "x_cut"
    assert _static(_gru_reading(x, nodes, inits, state=state)) == [f"error: static-reshape: {line}"]


@pytest.mark.parametrize("nodes,inits,line", [
    ([helper.make_node("Slice", ["y", "s", "e", "a"], ["cut"], name="cut_y")],
     [_ints("s", [0]), _ints("e", [10]), _ints("a", [0])],
     "cut_y: slices the output of gru from [0] to [10], fixing the sequence length to 10"),
    ([helper.make_node("Transpose", ["y_h"], ["h_t"], perm=[1, 0, 2]),
      helper.make_node("Reshape", ["h_t", "shape"], ["cut"], name="flat_h")], [_ints("shape", [8, -1])],
     "flat_h: reshapes gru's Y_h to [8, -1], fixing the batch size to 8"),
])
def test_fixed_lengths_downstream_to_a_graph_output(nodes, inits, line):
    model = _gru_reading("x", [], [], extra_outputs=("cut",))
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    assert _static(model) == [f"error: static-reshape: {line}"]


def test_taking_the_last_step_or_keeping_the_length_is_no_error():
    keep = [helper.make_node("Slice", ["y", "s", "e", "a"], ["last"]),  # y[-1:]: the last step, by design
            helper.make_node("Reshape", ["y", "merge"], ["merged"])]   # [0, 0, -1]: the lengths are copied
    model = _gru_reading("x", [], [], extra_outputs=("last", "merged"))
    model.graph.node.extend(keep)
    model.graph.initializer.extend([_ints("s", [-1]), _ints("e", [2**63 - 1]), _ints("a", [0]),
                                    _ints("merge", [0, 0, -1])])
    assert lint_model(model, run=True) == []


def test_roles_are_traced_through_reshape_flatten_squeeze_unsqueeze_split_and_slice():
    from rnnexport.graph.subgraphs import input_roles, scopes

    nodes = [helper.make_node("Unsqueeze", ["x", "ax0"], ["x4"]),            # [1, batch, seq, I]
             helper.make_node("Squeeze", ["x4", "ax0"], ["x3"]),             # [batch, seq, I]
             helper.make_node("Slice", ["x3", "s", "e", "a2"], ["x_all"]),   # every feature: no length fixed
             helper.make_node("Split", ["x_all", "halves"], ["xa", "xb"], axis=2),
             helper.make_node("Concat", ["xa", "xb"], ["xc"], axis=2),
             helper.make_node("Reshape", ["xc", "keep"], ["xr"]),            # [0, 0, -1]
             helper.make_node("Transpose", ["xr"], ["xt"], perm=[1, 0, 2])]  # time-major for the GRU
    inits = [_ints("ax0", [0]), _ints("s", [0]), _ints("e", [2**63 - 1]), _ints("a2", [2]), _ints("halves", [1, 2]),
             _ints("keep", [0, 0, -1])]
    model = _gru_reading("xt", nodes, inits, x_dims=(2, "seq", I))  # batch-first, batch fixed to 2
    assert input_roles(next(scopes(model))) == {"x_in": {0: "batch", 1: "seq"}}
    assert _static(model) == ["error: static-dims: input x_in: axis 0 (batch) fixed to 2; they must be dynamic for "
                              "the model to take other lengths and batches"]
    flat = _gru_reading("xs", [helper.make_node("Flatten", ["x", ], ["x2"], axis=2),  # [seq, batch, I] → [seq*batch, I]
                               helper.make_node("Unsqueeze", ["x2", "ax1"], ["xs"])], [_ints("ax1", [1])])
    assert input_roles(next(scopes(flat)))["x_in"].get(0) == "seq"


def test_a_dynamic_feature_axis_is_an_error():
    model = _model(_gru_graph(dims=("seq", "batch")))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    assert [str(f) for f in lint_model(model)] == [
        "error: dynamic-feature: input x: axis 2 is declared dynamic (h) but feeds a recurrent node's feature axis, "
        "whose size W fixes (input_size): the model runs at that size only"]


def test_32_nested_wheres_lint_in_linear_time():
    import time

    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    nodes = [helper.make_node("Where", ["c", f"w{k}", f"w{k}"], [f"w{k + 1}"]) for k in range(32)]
    model = _gru_reading("w32", [helper.make_node("Identity", ["x"], ["w0"])] + nodes, x_dims=(3, "batch", I))
    model.graph.input.append(cond)
    start = time.perf_counter()
    findings = lint_model(model)
    assert time.perf_counter() - start < 5  # 2^32 paths before memoising
    assert [f.code for f in findings] == ["static-dims"]  # the fixed seq is found through all 32 of them


def test_a_cyclic_graph_is_an_error_not_a_hang():
    import time

    model = _gru_reading("x_loop", [helper.make_node("Add", ["x", "x_back"], ["x_loop"], name="add"),
                                    helper.make_node("Identity", ["x_loop"], ["x_mid"], name="mid"),
                                    helper.make_node("Identity", ["x_mid"], ["x_back"], name="back")])
    deep = _gru_reading("d5000", [helper.make_node("Identity", [f"d{k}" if k else "x"], [f"d{k + 1}"])
                                  for k in range(5000)])  # deeper than Python's recursion limit
    start = time.perf_counter()
    findings = lint_model(model, run=True)
    assert [str(f) for f in findings] == [
        "error: cycle: the main graph: add, mid, back read each other's outputs in a cycle; an ONNX graph must be "
        "acyclic, and no runtime loads it"]
    assert lint_model(deep) == []
    assert time.perf_counter() - start < 10
