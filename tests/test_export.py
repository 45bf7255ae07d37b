"""The exporter against PyTorch: shapes other than the example, every option, every opset."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from conftest import SHIPPED, max_abs_diff

from rnnexport.artifacts.build import export_config
from rnnexport.config import Inputs, load_config, newest_opset, parse_config
from rnnexport.errors import ExportError
from rnnexport.export.builders import build_model, fill_deterministic
from rnnexport.export.native import export_onnx, op_counts, recurrent_nodes
from rnnexport.verification.cases import make_feeds
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.torch_runner import TorchRunner

# (seq_len, batch) pairs away from every shipped example shape.
SHAPES = {"seq1": (1, 3), "seq300": (300, 2), "other_batch": (7, 6), "batch1": (9, 1)}
INPUT_VARIANTS = {
    "as_shipped": None,
    "no_inputs": Inputs(initial_state=False, variable_lengths=False),
    "all_inputs": Inputs(initial_state=True, variable_lengths=True),
}


def parity(cfg, shapes=SHAPES.values(), **feed_options) -> float:
    """Worst |ORT CPU - PyTorch float32| over ``shapes`` for ``cfg``."""
    module, model = export_config(cfg)
    worst = 0.0
    with TorchRunner(module) as torch_run, OrtRunner(model.SerializeToString()) as ort_run:
        for i, (seq, batch) in enumerate(shapes):
            feeds = make_feeds(cfg, seq, batch, np.random.default_rng(i), **feed_options)
            worst = max(worst, max_abs_diff(torch_run.infer(feeds), ort_run.infer(feeds)))
    return worst


@pytest.mark.parametrize("variant", INPUT_VARIANTS)
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_config_matches_pytorch_at_other_shapes(path, variant):
    cfg = load_config(path)
    if INPUT_VARIANTS[variant] is not None:
        cfg = dataclasses.replace(cfg, inputs=INPUT_VARIANTS[variant])
    assert parity(cfg) <= 1e-5
    if cfg.inputs.initial_state or cfg.inputs.variable_lengths:
        assert parity(cfg, state="zero", lengths="ragged") <= 1e-5


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_one_native_node_per_layer_and_no_loops(path):
    cfg = load_config(path)
    _, model = export_config(cfg)
    nodes = recurrent_nodes(model)
    masked = cfg.inputs.variable_lengths == "masked"  # one forward node per layer and direction
    assert len(nodes) == cfg.num_layers * (cfg.num_directions if masked else 1)
    assert {n.op_type for n in nodes} == {{"gru": "GRU", "lstm": "LSTM"}.get(cfg.cell, "RNN")}
    assert not {"Loop", "Scan", "If"} & set(op_counts(model))
    directions = {a.s.decode() for n in nodes for a in n.attribute if a.name == "direction"}
    assert directions == ({"bidirectional"} if cfg.bidirectional and not masked else set())
    onnx.checker.check_model(model, full_check=True)


def test_node_count_does_not_depend_on_sequence_length():
    cfg = load_config(SHIPPED[0])
    long_cfg = dataclasses.replace(cfg, example=dataclasses.replace(cfg.example, seq_len=5000))
    assert op_counts(export_config(cfg)[1]) == op_counts(export_config(long_cfg)[1])


@pytest.mark.parametrize("opset", sorted({9, 13, 17, newest_opset()}))
@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh", "rnn_relu"])
def test_every_cell_at_every_opset(cell, opset):
    cfg = parse_config(
        {"name": "t", "cell": cell, "input_size": 5, "hidden_size": 6, "num_layers": 2, "bidirectional": True,
         "batch_first": True, "opset": opset, "inputs": {"initial_state": True, "variable_lengths": True}},
        "test",
    )
    model = export_config(cfg)[1]
    assert model.opset_import[0].version == opset
    assert parity(cfg) <= 1e-5
    assert parity(cfg, state="zero", lengths="ragged") <= 1e-5


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_rebuild_is_byte_identical(path):
    cfg = load_config(path)
    first = export_config(cfg)[1].SerializeToString()
    second = export_config(load_config(path))[1].SerializeToString()
    assert first == second


def test_dynamic_dims_are_named_seq_and_batch():
    cfg = load_config(next(p for p in SHIPPED if "batch_first" in p.stem))
    model = export_config(cfg)[1]
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert cfg.batch_first
    assert dims["input"] == ["batch", "seq", cfg.input_size]
    assert dims["output"] == ["batch", "seq", cfg.num_directions * cfg.hidden_size]
    assert dims["h_n"] == [cfg.num_layers * cfg.num_directions, "batch", cfg.hidden_size]
    if cfg.inputs.variable_lengths:
        assert dims["sequence_lens"] == ["batch"]
        assert model.graph.input[-1].type.tensor_type.elem_type == onnx.TensorProto.INT32


def test_metadata_records_version_and_config_hash():
    cfg = load_config(SHIPPED[0])
    props = {p.key: p.value for p in export_config(cfg)[1].metadata_props}
    assert props["config_sha256"] == cfg.sha256()
    assert props["rnnexport_version"]


def test_exports_a_users_trained_module_in_float64():
    module = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True).double().eval()
    fill_deterministic(module, 11)
    model = export_onnx(module, opset=17, initial_state=True)
    cfg = parse_config({"name": "u", "cell": "lstm", "input_size": 3, "hidden_size": 4, "num_layers": 2,
                        "batch_first": True, "inputs": {"initial_state": True}}, "test")
    feeds = make_feeds(cfg, 13, 2, np.random.default_rng(0))
    with TorchRunner(module) as expected, OrtRunner(model.SerializeToString()) as actual:
        assert max_abs_diff(expected.infer(feeds), actual.infer(feeds)) <= 1e-5


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (torch.nn.Linear(3, 4), "cannot export Linear: expected a torch.nn.GRU, LSTM or RNN module"),
        (torch.nn.LSTM(3, 4, proj_size=2), "cannot export an LSTM with proj_size > 0: ONNX's LSTM operator has no projection"),
    ],
)
def test_unsupported_modules_are_refused(module, message):
    with pytest.raises(ExportError) as info:
        export_onnx(module)
    assert str(info.value) == message


def test_opset_out_of_range_is_refused():
    with pytest.raises(ExportError, match=r"opset 8 is not supported; expected an integer from 9 to \d+"):
        export_onnx(build_model(load_config(SHIPPED[0])), opset=8)


def test_gate_blocks_are_reordered_for_onnx():
    """A module whose gate blocks hold distinct constants shows exactly where each block lands."""
    module = torch.nn.LSTM(1, 1, bias=False)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))  # i, f, g, o
    w = onnx.numpy_helper.to_array(export_onnx(module).graph.initializer[0])
    assert w.ravel().tolist() == [1.0, 4.0, 2.0, 3.0]  # i, o, f, c
    gru = torch.nn.GRU(1, 1, bias=False)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.tensor([[1.0], [2.0], [3.0]]))  # r, z, n
    w = onnx.numpy_helper.to_array(export_onnx(gru).graph.initializer[0])
    assert w.ravel().tolist() == [2.0, 1.0, 3.0]  # z, r, h
