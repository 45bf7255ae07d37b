"""Whatever a runtime returns goes through every hint, localisation and diagnosis path and comes out as a failed
check in words, never a traceback: real graphs of the shipped configs, mutated (a Transpose removed, an output
cast, dropped or poisoned with NaN/Inf), run by ONNX Runtime and judged against PyTorch's float64 oracle."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import SHIPPED
from onnx import TensorProto, helper, numpy_helper

from rnnexport.artifacts.build import export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.report.html import render_html
from rnnexport.verification.engine import verify

CASES = ("example", "ragged", "streaming")


def _built(name: str):
    cfg = load_config(next(p for p in SHIPPED if p.stem == name))
    module, model = export_config(cfg)
    return cfg, module, model


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if t == old else t for t in node.input]
        node.output[:] = [new if t == old else t for t in node.output]


def _drop_node(graph: onnx.GraphProto, name: str) -> None:
    """Remove a one-in, one-out node and wire its input to its output's readers (and the graph output)."""
    node = next(n for n in graph.node if n.name == name)
    graph.node.remove(node)
    if node.output[0] in {v.name for v in graph.output}:
        _rename(graph, node.input[0], node.output[0])
    else:
        _rename(graph, node.output[0], node.input[0])


def _after(graph: onnx.GraphProto, output: str, nodes: list[onnx.NodeProto], elem_type: int = TensorProto.FLOAT,
           initializers: tuple[onnx.TensorProto, ...] = (), extra_axes: int = 0) -> None:
    """Insert ``nodes`` between the graph output ``output`` and its producer (they read ``{output}_in``)."""
    _rename(graph, output, f"{output}_in")
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    value = next(v for v in graph.output if v.name == output)
    rank = len(value.type.tensor_type.shape.dim) + extra_axes
    value.CopyFrom(helper.make_tensor_value_info(output, elem_type, [f"{output}_{k}" for k in range(rank)]))


def _mutant(model: onnx.ModelProto, how: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    hidden = next(v for v in g.output if v.name == "output").type.tensor_type.shape.dim[2].dim_value
    if how == "output transpose removed":
        _drop_node(g, "output_to_batch_first")
    elif how == "output of rank 4":
        _after(g, "output", [helper.make_node("Unsqueeze", ["output_in", "axis0"], ["output"])],
               initializers=(numpy_helper.from_array(np.array([0], np.int64), "axis0"),), extra_axes=1)
    elif how in ("output in float16", "output in int64"):
        to = TensorProto.FLOAT16 if how.endswith("float16") else TensorProto.INT64
        _after(g, "output", [helper.make_node("Cast", ["output_in"], ["output"], to=to)], to)
    elif how == "h_n missing":
        g.output.remove(next(v for v in g.output if v.name == "h_n"))
    elif how == "an extra output":
        g.output.append(helper.make_tensor_value_info("Y_l0", TensorProto.FLOAT, ["t", "d", "b", "h"]))
    elif how == "h_n of rank 4":
        _after(g, "h_n", [helper.make_node("Unsqueeze", ["h_n_in", "axis0"], ["h_n"])],
               initializers=(numpy_helper.from_array(np.array([0], np.int64), "axis0"),), extra_axes=1)
    elif how in ("NaN in output", "Inf in output"):
        poison = np.zeros(hidden, np.float32)
        poison[hidden // 2] = np.nan if how.startswith("NaN") else np.inf
        _after(g, "output", [helper.make_node("Add", ["output_in", "poison"], ["output"])],
               initializers=(numpy_helper.from_array(poison, "poison"),))
    elif how == "NaN in layer 1's weights":
        w = next(t for t in g.initializer if t.name == "W_l1")
        values = numpy_helper.to_array(w).copy()
        values[0, 0, 0] = np.nan
        w.CopyFrom(numpy_helper.from_array(values, "W_l1"))
    onnx.checker.check_model(m)
    return m


# mutation → a sentence its failure must contain, and one the localisation must contain (None: any words)
MUTANTS = {
    "output transpose removed": ("example/output: shape [18, 4, 40] where PyTorch gives [4, 18, 40]",
                                 "batch and time axes swapped"),
    "output of rank 4": ("example/output: shape [1, 4, 18, 40] where PyTorch gives [4, 18, 40]", None),
    "output in float16": ("output: element type FLOAT16 where the contract has FLOAT", None),
    "output in int64": ("example/output: element type int64 where PyTorch gives real numbers", None),
    "h_n missing": ("example/h_n: missing from the runner's outputs (it returned output)", None),
    "an extra output": ("graph outputs ['output', 'h_n', 'Y_l0'] where the contract has ['output', 'h_n']", None),
    "h_n of rank 4": ("streaming/output: h_n (shape [1, 2, 4, 40]) cannot be fed back as h0 [2, 4, 40] for the "
                      "next chunk", None),
    "NaN in output": ("example/output: 72 NaN/Inf where the oracle is finite", None),
    "Inf in output": ("example/output: 72 NaN/Inf where the oracle is finite", None),
    # ONNX Runtime's GRU turns a NaN weight into finite garbage (its activations clamp): layer 1 is found all the same
    "NaN in layer 1's weights": ("example/output: max |Δ|", "first failing: layer 1, forward direction"),
}


@pytest.fixture(scope="module")
def ragged_batch_first():
    return _built("gru_ragged_batch_first")


@pytest.mark.parametrize("how", list(MUTANTS))
def test_every_kind_of_output_is_a_failed_check_in_words(ragged_batch_first, how):
    cfg, module, model = ragged_batch_first
    report = verify(module, _mutant(model, how), cfg=cfg, runtimes=("torch", "ort"), case_names=CASES,
                    providers=("CPUExecutionProvider",), per_layer=True, threads=1)
    failure, located = MUTANTS[how]
    failures = report.failures()
    assert any(failure in f for f in failures), failures
    assert all("Traceback" not in f for f in failures)
    ort = next(r for r in report.runners if r.name == "ort-cpu")
    assert ort.localisation is not None  # localised or said why not, in words
    words = ort.localisation.summary() + " " + (ort.localisation.diagnosis or "")
    assert located is None or located in words, words
    assert "could not be read" not in words  # never an exception's text standing in for a finding
    text = str(report)  # every renderer reads the same outputs
    assert "FAIL" in text and json.dumps(report.to_dict()) and "FAIL" in render_html([(report, report.judge())])


def test_the_untouched_model_passes_the_same_checks(ragged_batch_first):
    cfg, module, model = ragged_batch_first  # the mutants above fail for their mutation, not for the setup
    report = verify(module, model, cfg=cfg, runtimes=("torch", "ort"), case_names=CASES,
                    providers=("CPUExecutionProvider",), per_layer=True, threads=1)
    assert report.passed(), report.failures()
    ort = next(r for r in report.runners if r.name == "ort-cpu")
    assert ort.localisation.summary().startswith("every layer within tolerance")


def test_a_node_whose_y_is_not_time_major_is_named_by_localisation():
    cfg, module, model = _built("rnn_relu_batch_first")  # both Transposes gone: each node reads batch-first X
    mutant = onnx.ModelProto()  # as time-major, so its Y is [batch, 1, seq, hidden] and h_n [layers, seq, hidden]
    mutant.CopyFrom(model)
    for transpose in [n for n in mutant.graph.node if n.op_type == "Transpose"]:
        _drop_node(mutant.graph, transpose.name)
    report = verify(module, mutant, cfg=cfg, runtimes=("ort",), case_names=("example",),
                    providers=("CPUExecutionProvider",), threads=1)
    ort = next(r for r in report.runners if r.name == "ort-cpu")
    seq, batch = cfg.example.seq_len, cfg.example.batch
    assert not report.passed()
    assert ort.localisation.summary() == (
        f"layer 0: {next(n.name for n in mutant.graph.node if n.op_type == 'RNN')}'s Y has shape "
        f"[{batch}, 1, {seq}, {cfg.hidden_size}] where ONNX's [seq, num_directions, batch, hidden_size] is "
        f"[{seq}, 1, {batch}, {cfg.hidden_size}] (a layout=1 node, or not the layer PyTorch computes)")


def test_the_transpose_removed_ragged_model_exits_1_with_words(ragged_batch_first, tmp_path):
    cfg, module, model = ragged_batch_first
    import torch

    weights = tmp_path / "weights.pt"
    torch.save(module.state_dict(), weights)
    path = tmp_path / "notrans.onnx"
    onnx.save(_mutant(model, "output transpose removed"), path)
    config = next(p for p in SHIPPED if p.stem == "gru_ragged_batch_first")
    result = CliRunner().invoke(main, ["verify", str(path), "--config", str(config), "--weights", str(weights),
                                       "--threads", "1", "--cases", "example,ragged"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "ort-cpu: ragged/output: shape [18, 4, 40] where PyTorch gives [4, 18, 40]" in result.output
    assert "batch and time axes swapped" in result.output


def test_inf_inside_a_layer_is_named_at_that_layer():
    cfg, module, model = _built("rnn_relu_batch_first")  # layer 1 reads Inf: ReLU passes it on, ONNX Runtime's
    poison = np.zeros(cfg.hidden_size, np.float32)      # tanh and sigmoid would clamp it to finite garbage
    poison[0] = np.inf
    layer1 = next(n for n in model.graph.node if n.name == "rnn_l1")
    layer1.input[0] = "X_1_poisoned"
    model.graph.node.insert(list(model.graph.node).index(layer1), helper.make_node("Add", ["X_1", "poison"],
                                                                                   ["X_1_poisoned"]))
    model.graph.initializer.append(numpy_helper.from_array(poison, "poison"))
    report = verify(module, model, cfg=cfg, runtimes=("ort",), case_names=("example",),
                    providers=("CPUExecutionProvider",), threads=1)
    ort = next(r for r in report.runners if r.name == "ort-cpu")
    assert not report.passed()
    assert [x["ok"] for x in ort.localisation.layers] == [True, False]
    assert ort.localisation.diagnosis.startswith("layer 1, forward direction: ")
    assert ort.localisation.diagnosis.endswith(" NaN/Inf in rnn_l1's Y where PyTorch's layer output is finite")


def test_golden_outputs_judge_every_kind_of_output_in_words_too(tmp_path):
    from rnnexport.artifacts.build import build_artifact

    config = next(p for p in SHIPPED if p.stem == "gru_ragged_batch_first")
    artifact = build_artifact(load_config(config), tmp_path / "art")
    golden = tmp_path / "golden"
    saved = CliRunner().invoke(main, ["verify", str(artifact), "--cases", ",".join(CASES), "--runtimes", "torch,ort",
                                      "--save-golden", str(golden), "-q"])
    assert saved.exit_code == 0, saved.output
    model = onnx.load(artifact / "model.onnx")
    for how in ("output transpose removed", "output in int64", "h_n of rank 4", "NaN in output"):
        path = tmp_path / f"{artifact.name}.onnx"  # golden outputs are found by the model file's stem
        onnx.save(_mutant(model, how), path)
        result = CliRunner().invoke(main, ["verify", str(path), "--golden", str(golden), "--runtimes", "ort",
                                           "--threads", "1"])
        assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
        assert result.exit_code == 1, (how, result.output)
        assert MUTANTS[how][0].split(": ", 1)[-1] in result.output, (how, result.output)
