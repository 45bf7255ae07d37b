"""Hostile ONNX files: every command that reads a model (lint, inspect, verify) gives one `Error:` line naming
the tensor or node, exit 2, and leaves the disk as it was: attributes of the wrong type or out of the spec's
range, unknown data types, tensors declaring more than they hold, external data outside the model's folder
in a Constant or a subgraph, nodes without their inputs, impossible dims, subgraphs nested too deep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import SHIPPED, tree_snapshot
from onnx import TensorProto, helper, numpy_helper

from rnnexport.artifacts.build import build_artifact
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.graph.checks import MAX_DEPTH

GRU = SHIPPED[0]


def _gru(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "GRU")


def _attribute(name: str, value: object) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        node = _gru(model)
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(name, value)])
    return change


def _initializer_type(model: onnx.ModelProto) -> None:
    model.graph.initializer[0].data_type = 999


def _constant(tensor: TensorProto) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        model.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], value=tensor))
    return change


def _declared_only(dims: list[int]) -> TensorProto:
    tensor = helper.make_tensor("v", TensorProto.FLOAT, [0], [])
    del tensor.dims[:]
    tensor.dims.extend(dims)
    return tensor


def _external(location: str) -> TensorProto:
    tensor = helper.make_tensor("v", TensorProto.FLOAT, [4], np.zeros(4, np.float32))
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def _in_subgraph(node_tensor: TensorProto) -> Callable[[onnx.ModelProto], None]:
    """An If whose branches hold a Constant with ``node_tensor``."""
    def change(model: onnx.ModelProto) -> None:
        branch = helper.make_graph([helper.make_node("Constant", [], ["k"], value=node_tensor)], "branch", [],
                                   [helper.make_tensor_value_info("k", TensorProto.FLOAT, None)])
        model.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
        model.graph.node.append(helper.make_node("If", ["flag"], ["unused_if"], then_branch=branch, else_branch=branch))
    return change


def _no_inputs(model: onnx.ModelProto) -> None:
    _gru(model).ClearField("input")


def _dim(axis: int, value: int) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        dim = model.graph.input[0].type.tensor_type.shape.dim[axis]
        dim.ClearField("dim_param")
        dim.dim_value = value
    return change


def _nested(model: onnx.ModelProto) -> None:
    leaf = helper.make_graph([helper.make_node("Constant", [], ["k"], value_float=1.0)], "leaf", [],
                             [helper.make_tensor_value_info("k", TensorProto.FLOAT, [])])
    graph = leaf
    for level in range(MAX_DEPTH + 1):  # one branch nests deeper, the other is a leaf: the file stays small
        node = helper.make_node("If", ["flag"], ["k"], then_branch=leaf, else_branch=graph, name=f"if{level}")
        graph = helper.make_graph([node], f"g{level}", [], [helper.make_tensor_value_info("k", TensorProto.FLOAT, [])])
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
    model.graph.node.extend(graph.node)


def _second_producer(model: onnx.ModelProto) -> None:
    model.graph.node.append(helper.make_node("Identity", ["input"], [_gru(model).output[0]], name="again"))


# (id, change to gru_2layer's model.onnx, the Error line after "{file}: ")
HOSTILE = [
    ("direction_int", _attribute("direction", 1),
     "node 'gru_l0' (GRU): attribute 'direction' is INT; the ONNX spec has STRING"),
    ("activations_ints", _attribute("activations", [1, 2]),
     "node 'gru_l0' (GRU): attribute 'activations' is INTS; the ONNX spec has STRINGS"),
    ("clip_tensor", _attribute("clip", numpy_helper.from_array(np.array([1.0], np.float32))),
     "node 'gru_l0' (GRU): attribute 'clip' is TENSOR; the ONNX spec has FLOAT"),
    ("hidden_size_string", _attribute("hidden_size", "32"),
     "node 'gru_l0' (GRU): attribute 'hidden_size' is STRING; the ONNX spec has INT"),
    ("direction_sideways", _attribute("direction", "sideways"),
     "node 'gru_l0' (GRU): attribute direction = 'sideways' is not allowed by the ONNX spec"),
    ("activation_unknown", _attribute("activations", ["Sigmoid", "Gelu"]),
     "node 'gru_l0' (GRU): attribute activations = ['Sigmoid', 'Gelu'] is not allowed by the ONNX spec"),
    ("linear_before_reset_7", _attribute("linear_before_reset", 7),
     "node 'gru_l0' (GRU): attribute linear_before_reset = 7 is not allowed by the ONNX spec"),
    ("clip_negative", _attribute("clip", -1.0),
     "node 'gru_l0' (GRU): attribute clip = -1.0 is not allowed by the ONNX spec"),
    ("hidden_size_not_the_weights", _attribute("hidden_size", 31),
     "node 'gru_l0' (GRU): W has shape [1, 96, 16], but hidden_size 31 and direction forward make [1, 93, input_size]"),
    ("two_producers", _second_producer,
     "tensor 'Y_0' is made twice (again by node 'again'); ONNX allows one producer"),
    ("data_type_999", _initializer_type, "initializer 'W_0' has data type 999, which ONNX does not define"),
    ("constant_2_40_elements", _constant(_declared_only([2**20, 2**20])),
     "tensor 'Constant_0.value' declares 1,099,511,627,776 elements (dims [1048576, 1048576]), more than a model "
     "can hold"),
    ("constant_without_data", _constant(_declared_only([3, 4])),
     "tensor 'Constant_0.value' declares 12 elements (dims [3, 4]) but holds 0"),
    ("constant_external_outside", _constant(_external("../../etc/passwd")),
     "tensor 'Constant_0.value' keeps its data at '../../etc/passwd', outside the model's folder; only files "
     "beside the model are read"),
    ("subgraph_external_outside", _in_subgraph(_external("/etc/passwd")),
     "tensor 'If_5/then_branch/Constant_0.value' keeps its data at '/etc/passwd', outside the model's folder; only "
     "files beside the model are read"),
    ("subgraph_2_40_elements", _in_subgraph(_declared_only([2**40])),
     "tensor 'If_5/then_branch/Constant_0.value' declares 1,099,511,627,776 elements (dims [1099511627776]), more "
     "than a model can hold"),
    ("node_without_inputs", _no_inputs, "node 'gru_l0' (GRU) has 0 input(s); the ONNX spec allows 3 to 6"),
    ("dim_minus_3", _dim(2, -3), "input 'input': axis 2 is declared -3; a dim is 0 to 2147483647"),
    ("dim_2_40", _dim(0, 2**40), "input 'input': axis 0 is declared 1099511627776; a dim is 0 to 2147483647"),
    ("nested_too_deep", _nested, f"subgraphs nested more than {MAX_DEPTH} deep (inside node 'if{MAX_DEPTH}')"),
]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return build_artifact(load_config(GRU), tmp_path_factory.mktemp("a"))


@pytest.mark.parametrize("command", ["lint", "inspect", "verify"])
@pytest.mark.parametrize(("change", "message"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_hostile_model_is_one_error_line(tmp_path, artifact, command, change, message):
    model = onnx.load(artifact / "model.onnx")
    change(model)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())  # onnx.save would check some of these itself
    args = [command, str(path)] + (["--config", str(GRU), "--weights", str(artifact / "weights.pt")]
                                   if command == "verify" else [])
    before = tree_snapshot(tmp_path)
    result = CliRunner().invoke(main, args)
    assert (result.exit_code, result.output) == (2, f"Error: {path}: {message}\n")
    assert tree_snapshot(tmp_path) == before


def test_external_data_inside_the_folder_still_reads_everywhere(tmp_path, artifact):
    """The same Constant, its data beside the model: read, and the model lints and verifies."""
    model = onnx.load(artifact / "model.onnx")
    (tmp_path / "v.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    _in_subgraph(_external("v.bin"))(model)
    _constant(_external("v.bin"))(model)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    for args in (["inspect", str(path)], ["verify", str(path), "--config", str(GRU), "--weights",
                                          str(artifact / "weights.pt"), "--cases", "example"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output


def test_lint_never_feeds_a_huge_fixed_dim(tmp_path, artifact):
    """A fixed sequence length of 2**30 is reported, and the run is skipped in words instead of allocating 64 GiB."""
    model = onnx.load(artifact / "model.onnx")
    _dim(0, 2**30)(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["lint", str(path), "--run"])
    assert result.exit_code == 1, result.output
    assert f"{path}: error: static-dims: input input: axis 0 (seq) fixed to 1073741824" in result.output
    assert (f"{path}: warning: run: not run: input input: its declared shape [1073741824, 1, 16] holds "
            f"{2**30 * 16:,} elements, more than the {2**26:,} lint feeds a run") in result.output


def test_external_data_that_is_a_pipe_is_named_as_such(tmp_path, artifact):
    import os

    model = onnx.load(artifact / "model.onnx")
    _constant(_external("v.bin"))(model)
    os.mkfifo(tmp_path / "v.bin")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert (result.exit_code, result.output) == (2, f"Error: {path}: tensor 'Constant_0.value': external data file "
                                                    "'v.bin' is not a regular file (a folder, pipe or device)\n")
