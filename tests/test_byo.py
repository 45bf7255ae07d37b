"""Bring your own model: a trained checkpoint → init → build --weights → verify; PyTorch's exporters as
backends; lint on hand-made bad graphs."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import SHIPPED
from onnx import TensorProto, helper

import rnnexport
from rnnexport.cli import main

GRU = next(p for p in SHIPPED if p.stem == "gru_2layer")
PREFIX = "model.encoder.rnn."


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(4, 12, num_layers=2, batch_first=True)


class Summer(torch.nn.Module):
    """A toy task: predict the running sum of the inputs' first feature."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = torch.nn.Linear(12, 1)

    def forward(self, x):
        return self.head(self.encoder.rnn(x)[0])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = Summer()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        x = torch.randn(16, 10, 4)
        loss = torch.nn.functional.mse_loss(model(x), x[..., :1].cumsum(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 2  # it really trained
    path = tmp_path_factory.mktemp("ckpt") / "summer.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, path)
    return path, model.encoder.rnn.eval()


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_checkpoint_to_verified_artifact_from_the_cli(checkpoint, tmp_path):
    path, trained = checkpoint
    config = tmp_path / "summer.toml"
    result = _invoke("init", "--from-checkpoint", path, "--prefix", PREFIX, "--out", config)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {config}: 2 × gru, hidden 12; batch_first cannot be inferred")
    text = config.read_text()
    assert "# NOTE: batch_first cannot be inferred from weights" in text
    assert 'cell = "gru"' in text and "input_size = 4" in text and "num_layers = 2" in text
    config.write_text(text.replace("batch_first = false", "batch_first = true"))  # as the user would
    out = tmp_path / "artifacts"
    result = _invoke("build", config, "--weights", path, "--prefix", PREFIX, "--out", out)
    assert result.exit_code == 0, result.output
    result = _invoke("verify", out / "summer", "--cases", "example,seq1,long,other_batch")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "summer" / "manifest.json").read_text())
    assert manifest["weights_origin"]["file"] == "summer.pt" and manifest["weights_origin"]["prefix"] == PREFIX
    saved = torch.load(out / "summer" / "weights.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in trained.state_dict().items())


def test_prefix_is_found_when_the_checkpoint_holds_one_rnn(checkpoint, tmp_path):
    path, trained = checkpoint
    result = _invoke("init", "--from-checkpoint", path)
    assert result.exit_code == 0
    assert f"# Written by `rnnexport init` from summer.pt (prefix '{PREFIX}')." in result.output


def test_two_rnns_need_a_prefix(tmp_path):
    path = tmp_path / "two.pt"
    torch.save({"a": torch.nn.GRU(2, 3).state_dict(), "b": torch.nn.LSTM(2, 3).state_dict()}, path)
    result = _invoke("init", "--from-checkpoint", path)
    assert (result.exit_code, result.output) == (
        2, f"Error: {path}: holds several recurrent modules: a. (module), b. (module); choose one with --prefix\n")
    result = _invoke("init", "--from-checkpoint", path, "--prefix", "b.")
    assert result.exit_code == 0 and 'cell = "lstm"' in result.output


def test_init_marks_what_cannot_be_inferred_for_rnn(tmp_path):
    path = tmp_path / "rnn.pt"
    torch.save(torch.nn.RNN(3, 5, num_layers=3, bidirectional=True, bias=False).state_dict(), path)
    text = _invoke("init", "--from-checkpoint", path, "--name", "elman").output
    assert "tanh or relu cannot be inferred" in text
    assert 'name = "elman"' in text and "num_layers = 3" in text and "bidirectional = true" in text
    assert "bias = false" in text
    cfg_path = tmp_path / "elman.toml"
    cfg_path.write_text(text)
    cfg = rnnexport.load_config(cfg_path)
    assert (cfg.cell, cfg.input_size, cfg.hidden_size) == ("rnn_tanh", 3, 5)


def test_wrong_prefix_and_init_over_an_existing_file(checkpoint, tmp_path):
    path, _ = checkpoint
    result = _invoke("init", "--from-checkpoint", path, "--prefix", "encoder.rnn.")
    assert (result.exit_code, result.output) == (2, f"Error: {path}: no recurrent module under the prefix 'encoder.rnn.'; recurrent weights "
                                                 "were found under: model.encoder.rnn. (module)\n")
    existing = tmp_path / "x.toml"
    existing.write_text("keep")
    result = _invoke("init", "--from-checkpoint", path, "--out", existing)
    assert result.exit_code == 2 and existing.read_text() == "keep"


def test_weights_that_do_not_fit_write_nothing(checkpoint, tmp_path):
    path, _ = checkpoint
    result = _invoke("build", GRU, "--weights", path, "--prefix", PREFIX, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}: weights do not fit the config gru_2layer: weight_ih_l0: "
                                    "expected shape [96, 16], found [36, 4]")
    assert not (tmp_path / "out").exists()


def test_python_api_exports_a_trained_submodule(checkpoint):
    _, trained = checkpoint
    model = rnnexport.export_onnx(trained, initial_state=True)
    report = rnnexport.verify(trained, model, providers=("CPUExecutionProvider",), case_names=("example", "long"))
    assert report.passed(), report.failures()


@pytest.mark.slow
def test_torch_exporters_go_through_the_same_verify(tmp_path):
    out = tmp_path / "out"
    for exporter in ("torch-script", "torch-dynamo"):
        result = _invoke("build", GRU, "--exporter", exporter, "--out", out / exporter)
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / exporter / "gru_2layer" / "manifest.json").read_text())
        assert manifest["exporter"] == exporter and "onnxscript" in manifest["versions"]
    assert _invoke("verify", out / "torch-script", "--cases", "example,seq1,long").exit_code == 0
    # The dynamo graph bakes the example's sequence length into a Reshape: other lengths do not run.
    result = _invoke("verify", out / "torch-dynamo", "--cases", "example,seq1,long")
    assert result.exit_code == 3
    assert "✗ ort-cpu: seq1: failed to run: " in result.output
    lint = _invoke("lint", out / "torch-dynamo" / "gru_2layer" / "model.onnx")
    assert lint.exit_code == 1 and "error: static-reshape: " in lint.output


def test_torch_exporters_refuse_sequence_lens(tmp_path):
    ragged = next(p for p in SHIPPED if p.stem == "gru_ragged_batch_first")
    result = _invoke("build", ragged, "--exporter", "torch-script", "--out", tmp_path / "out")
    assert (result.exit_code, result.output) == (2, "Error: gru_ragged_batch_first: the torch exporters cannot "
                                                    "export a sequence_lens input (pack_padded_sequence); use "
                                                    "--exporter native\n")


def _ours(tmp_path, name="gru_2layer"):
    path = next(p for p in SHIPPED if p.stem == name)
    assert _invoke("build", path, "--out", tmp_path / "art").exit_code == 0
    return onnx.load(tmp_path / "art" / name / "model.onnx")


def _set_attr(model, op, name, value):
    node = next(n for n in model.graph.node if n.op_type == op)
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, value))
    return model


def _loop_model():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Tanh", ["h_in"], ["h_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [2, 8])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "", "input"], ["output"], body=body)], "loop",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("steps", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [2, 8])])
    return helper.make_model(graph)


def _static(model):
    for dim in model.graph.input[0].type.tensor_type.shape.dim[:2]:
        dim.Clear()
        dim.dim_value = 7
    return model


LINT_CASES = {
    "linear_before_reset_0": (lambda t: _set_attr(_ours(t), "GRU", "linear_before_reset", 0),
                              "error: linear-before-reset: gru_l0: GRU with linear_before_reset=0 computes another "
                              "function than PyTorch's GRU (which needs 1)"),
    "layout_1": (lambda t: _set_attr(_ours(t), "GRU", "layout", 1),
                 "error: layout: gru_l0: layout=1; ONNX Runtime's CPU and CUDA kernels reject layout=1 (use "
                 "Transpose nodes)"),
    "loop": (lambda t: _loop_model(), "error: loop: 1 Loop node(s): the recurrence runs as a generic loop, not "
                                      "ONNX's GRU/LSTM/RNN operator"),
    "static_dims": (lambda t: _static(_ours(t)), "error: static-dims: input input: axis 0 (seq) and axis 1 (batch) "
                                                 "fixed to 7, 7; they must be dynamic for the model to take other "
                                                 "lengths and batches"),
}


@pytest.mark.parametrize("case", LINT_CASES)
def test_lint_finds_hand_made_problems(tmp_path, case):
    make, line = LINT_CASES[case]
    path = tmp_path / "bad.onnx"
    onnx.save(make(tmp_path), path)
    result = _invoke("lint", path)
    assert result.exit_code == 1
    assert f"{path}: {line}" in result.output.splitlines()


def test_shipped_artifacts_lint_clean(tmp_path):
    out = tmp_path / "art"
    assert _invoke("build", SHIPPED[0].parent, "--out", out, "-q").exit_code == 0
    for path in SHIPPED:
        result = _invoke("lint", out / path.stem / "model.onnx", "--config", path)
        assert result.exit_code == 0, result.output
        assert " 0 error(s)" in result.output.splitlines()[-1]
    relu = _invoke("lint", out / "rnn_relu_batch_first" / "model.onnx").output
    assert "warning: activations: rnn_l0: activations Relu: non-default activations fall back to CPU" in relu


def test_lint_layer_count_against_a_config(tmp_path):
    model = _ours(tmp_path)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = _invoke("lint", path, "--config", next(p for p in SHIPPED if p.stem == "lstm_3layer_bidir"))
    assert result.exit_code == 1
    assert f"{path}: error: layers: 2 recurrent nodes where the config makes 3 (one per layer" in result.output
