"""Whole models as people really write them: nested states, sorted packing, cells, a module called twice, weights
that are not graph leaves, a data-dependent assert, a model that refuses one step. Each exports with native
recurrent nodes and passes verify_model at every shape it has; what cannot be exported is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from real_models import (
    Asserting,
    BosThenStep,
    CalledTwice,
    CellLoop,
    CellStep,
    ConvThenGru,
    Crnn,
    HeadInsideLoop,
    HookWeightNormed,
    LstmCellStack,
    PartialLoop,
    SortedPacking,
    SqueezesTime,
    TokenIdsPerRow,
    TupleState,
    UnbindLoop,
    WeightNormed,
)
from torch import nn

from rnnexport.errors import ExportError
from rnnexport.export.whole_model import export_model
from rnnexport.verification.whole_model import InputSpec, verify_model

X = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
DIMS = ({0: "batch", 1: "seq"},)


SORTED_LENGTHS = torch.tensor([5, 4, 2])
PASSING = {
    "tuple_state": (TupleState, (X, (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6))),
                    ({0: "batch", 1: "seq"}, ({1: "batch"}, {1: "batch"}))),
    "sorted_packing": (SortedPacking, (X, SORTED_LENGTHS), ({0: "batch", 1: "seq"}, {0: "batch"})),
    "cell_step": (CellStep, (X[:, 0], torch.zeros(3, 6), torch.zeros(3, 6)), ({0: "batch"},) * 3),
    "called_twice": (CalledTwice, (X,), DIMS),
    "cell_stack_over_time": (CellLoop, (X,), DIMS),
    "cell_iterating_a_tensor": (UnbindLoop, (X.transpose(0, 1),), ({0: "seq", 1: "batch"},)),
    "cell_called_twice_without_a_loop": (BosThenStep, (X[:, 0], torch.zeros(3, 6)), ({0: "batch"}, {0: "batch"})),
    "lstm_cell_stack_over_time": (LstmCellStack, (X.transpose(0, 1), torch.randn(3, 6), torch.randn(3, 6)),
                                  ({0: "seq", 1: "batch"}, {0: "batch"}, {0: "batch"})),
    "weight_norm": (WeightNormed, (X,), DIMS),
    "hook_weight_norm": (HookWeightNormed, (X,), DIMS),
    "data_dependent_assert": (Asserting, (X,), DIMS),
    "crnn": (Crnn, (torch.randn(2, 1, 8, 12),), ({0: "batch", 3: "seq"},)),
    "token_ids_per_row": (TokenIdsPerRow, (X.transpose(0, 1), torch.tensor([1, 2, 3])),
                          ({0: "seq", 1: "batch"}, {0: "batch"})),
}


@pytest.mark.parametrize("name", sorted(PASSING))
def test_models_as_people_write_them_export_natively_and_pass_at_every_shape(name):
    make, inputs, dims = PASSING[name]
    torch.manual_seed(0)
    model = make().eval()
    proto = export_model(model, inputs, dynamic_shapes=dims)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["GRU"] + ops["LSTM"] + ops["RNN"] >= 1 and not ops["Loop"] and not ops["Scan"]
    report = verify_model(model, proto, inputs, dynamic_shapes=dims, runtimes=("ort", "openvino"))
    verdict = report.judge()
    assert verdict.passed, verdict.failures()
    ort = next(r for r in report.runners if r.name == "ort-cpu")
    shapes = {tuple(tuple(s) for s in c["inputs"].values()) for c in report.cases}
    assert ort.status == "ok" and len(ort.drift) == len(report.cases) and len(shapes) == len(report.cases)
    assert len(report.cases) >= (3 if name.startswith("cell_step") or "without_a_loop" in name else 5)  # no seq dim


def test_a_module_called_twice_shares_one_set_of_initializers():
    model = CalledTwice().eval()
    proto = export_model(model, (X,), dynamic_shapes=DIMS)
    names = [i.name for i in proto.graph.initializer]
    assert len(names) == len(set(names)) and sum(n.startswith("rnn/W_") for n in names) == 1
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == 2 and grus[0].input[1] == grus[1].input[1]  # the same W


def test_sorted_packing_is_verified_with_sorted_lengths_and_unsorted_elsewhere():
    model = SortedPacking().eval()
    dims = PASSING["sorted_packing"][2]
    report = verify_model(model, export_model(model, (X, SORTED_LENGTHS), dynamic_shapes=dims),
                          (X, SORTED_LENGTHS), dynamic_shapes=dims, runtimes=("ort",))
    for case in report.inputs:
        lengths = case.feeds["lengths"].tolist()
        assert lengths == sorted(lengths, reverse=True) and lengths[0] == case.feeds["x"].shape[1], case.name


def test_the_shortest_sequence_a_model_accepts_is_probed_and_said():
    model = Crnn().eval()
    image = torch.randn(2, 1, 8, 12)
    dims = ({0: "batch", 3: "seq"},)
    report = verify_model(model, export_model(model, (image,), dynamic_shapes=dims), (image,), dynamic_shapes=dims,
                          runtimes=("ort",))
    short = next(c for c in report.cases if c["name"] == "seq1")
    assert short["inputs"]["image"][3] == 3 and "the shortest PyTorch accepts" in short["description"]
    assert "Kernel size can't be greater than actual input size" in short["description"]


def test_samplers_receive_the_cases_sizes_and_roles_are_explicit():
    model = SortedPacking().eval()
    dims = PASSING["sorted_packing"][2]
    proto = export_model(model, (X, SORTED_LENGTHS), dynamic_shapes=dims)
    seen = []

    def lengths(shape, rng, sizes):
        seen.append(sizes)
        return torch.full(shape, sizes["seq"]).numpy()

    specs = [InputSpec("x", ("batch", "seq", 4)), InputSpec("lengths", ("batch",), sampler=lengths)]
    report = verify_model(model, proto, (X, SORTED_LENGTHS), specs=specs, runtimes=("ort",))
    assert report.judge().passed and {"seq": 50, "batch": 3} in seen
    with pytest.raises(ExportError, match="role 'ids'; expected one of float, tokens, lengths"):
        InputSpec("x", ("batch",), role="ids")


@pytest.mark.parametrize("make, dims, words", [
    (HeadInsideLoop, DIMS, "the GRUCell cell is called 5 times in one forward (a Python loop over time, say) and a "
                           "step's output is used inside the loop, other than to stack it, so it is no layer over a "
                           "sequence: export one step (the cell with its state as inputs and outputs) and loop on the "
                           "host, or use nn.GRU"),
    (lambda: nn.Sequential(nn.LSTM(4, 6, proj_size=3, batch_first=True)), DIMS,
     "the LSTM 0 has proj_size 3: ONNX's LSTM operator has no projection"),
    (CalledTwice, ({0: "batch", 1: "seq", 2: "features"},),
     "input 0 axis 2: dynamic dim 'features'; name them \"batch\" or \"seq\" (a dim of another name, a feature axis"),
    (lambda: nn.Sequential(nn.Linear(4, 4)), DIMS, "the model holds no nn.GRU, nn.LSTM, nn.RNN or their cells"),
    (PartialLoop, DIMS, "the GRUCell cell is called 4 times in one forward (a Python loop over time, say) and the loop "
                        "does not cover the 5 steps of its sequence"),
    (CalledTwice, ({0: "batch", 1: "seq"}, {0: "batch"}), "dynamic_shapes do not mirror the example inputs"),
    (CalledTwice, ({0: "seq", 1: "seq"},), "'seq' is 5 here and 3 at input 0 axis 0; one name, one size"),
    (CalledTwice, ({0: "batch", 5: "seq"},), "input 0 axis 5: the input has 3 axes"),
])
def test_what_cannot_be_a_native_node_is_one_line_naming_the_cause(make, dims, words):
    with pytest.raises(ExportError) as raised:
        export_model(make().eval(), (X,), dynamic_shapes=dims)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_dynamically_quantized_lstm_is_refused_by_name():
    with warnings.catch_warnings():  # torch deprecates torch.ao.quantization, which models still ship with
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.LSTM(4, 6)), {nn.LSTM}, dtype=torch.qint8)
    with pytest.raises(ExportError, match=r"0 is a quantized LSTM \(torch\.ao\.nn\.quantized\.dynamic"):
        export_model(model, (X.transpose(0, 1),), dynamic_shapes=({0: "seq", 1: "batch"},))


def test_a_failure_in_the_rest_of_the_model_names_its_source_line():
    with pytest.raises(ExportError) as raised:
        export_model(SqueezesTime().eval(), (X,), dynamic_shapes=DIMS)
    text = str(raised.value)
    assert "\x1b[" not in text and "\n" not in text
    assert "real_models.py:" in text and "return self.rnn(x)[0].squeeze(1)" in text


FACTORIES = {
    "syntax": ("def tagger(:\n", "importing broken failed: SyntaxError: invalid syntax at broken.py:1"),
    "raises_at_import": ("raise RuntimeError('no GPU here')\n",
                         "importing broken failed: RuntimeError: no GPU here (at broken.py:1)"),
    "factory_raises": ("def tagger():\n    raise ValueError('bad config')\n",
                       "the factory failed: ValueError: bad config (at broken.py:2)"),
    "factory_exits": ("import sys\ndef tagger():\n    sys.exit(0)\n", "the factory failed: it called sys.exit(0)"),
    "factory_recurses": ("def tagger():\n    return tagger()\n", "the factory failed: RecursionError"),
    "returns_int": ("def tagger():\n    return 3\n", "the factory returned int; expected rnnexport.WholeModel"),
    "model_none": ("import torch, rnnexport\ndef tagger():\n"
                   "    return rnnexport.WholeModel(None, (torch.zeros(2, 3),))\n",
                   "WholeModel.model is NoneType; expected a torch.nn.Module"),
    "float64_inputs": ("import torch, rnnexport\ndef tagger():\n    return rnnexport.WholeModel(torch.nn.GRU(3, 4), "
                       "(torch.zeros(5, 2, 3, dtype=torch.float64),))\n", "an example input is torch.float64"),
    "not_a_function": ("tagger = 3\n", "broken has no function tagger"),
    "nan_weight": ("import torch, rnnexport\ndef tagger():\n    gru = torch.nn.GRU(3, 4)\n"
                   "    torch.nn.init.constant_(gru.bias_hh_l0, float('nan'))\n"
                   "    return rnnexport.WholeModel(gru, (torch.zeros(5, 2, 3),))\n",
                   "the model's bias_hh_l0 holds NaN or infinite values"),
    "input_names_for_two": ("import torch, rnnexport\ndef tagger():\n    return rnnexport.WholeModel("
                            "torch.nn.GRU(3, 4), (torch.zeros(5, 2, 3),), input_names=['a', 'b'])\n",
                            "input_names must be 1 distinct names, one per example input tensor; found ['a', 'b']"),
    "cell_loop": ("import torch, rnnexport\nfrom real_models import HeadInsideLoop\ndef tagger():\n"
                  "    return rnnexport.WholeModel(HeadInsideLoop(), (torch.zeros(2, 4, 4),),\n"
                  "                                ({0: 'batch', 1: 'seq'},))\n",
                  "the GRUCell cell is called 4 times in one forward"),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_export_model_never_prints_a_traceback(name, tmp_path):
    source, words = FACTORIES[name]
    (tmp_path / "broken.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # the cell_loop factory imports this module
    result = subprocess.run([sys.executable, "-m", "rnnexport", "export-model", "broken:tagger", "--out", "out",
                             "--runtimes", "ort"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("Error: ") and words in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.py"]


def test_a_cell_stack_over_time_becomes_one_native_node_per_cell_with_a_dynamic_sequence():
    proto = export_model(CellLoop().eval(), (X,), dynamic_shapes=DIMS)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["GRU"] == 2 and not ops["Gather"]  # no step of the unrolled loop is left
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", "seq", ""]


def test_an_axis_the_model_needs_fixed_is_refused_when_named_dynamic():
    with pytest.raises(ExportError, match=r"input x axis 1 is named 'seq', but the model needs it fixed \(it is 4"):
        export_model(ConvThenGru().eval(), (torch.randn(2, 4, 9),), dynamic_shapes=({0: "batch", 1: "seq"},))


def test_an_onnx_file_missing_one_of_the_models_outputs_is_refused():
    model = CalledTwice().eval()
    proto = export_model(model, (X,), dynamic_shapes=DIMS)
    del proto.graph.output[1]
    with pytest.raises(ExportError, match=r"the model returns 2 tensor\(s\) and the ONNX model has 1 output"):
        verify_model(model, proto, (X,), dynamic_shapes=DIMS, runtimes=("ort",))
