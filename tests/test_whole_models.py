"""Whole models (an embedding, a convolution, heads around GRU/LSTM layers): export_model writes the recurrent
layers as native nodes and the rest through torch.onnx's dynamo exporter; verify_model checks every standard
shape against PyTorch and the float64 oracle. The architectures are the docs page's own
(scripts/whole_models_doc.py): the three generic ones are checked in full, a fast subset of the catalogue's
re-created architectures on ONNX Runtime."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT

from rnnexport.errors import ExportError
from rnnexport.export.whole_model import export_model, recurrent_modules
from rnnexport.graph.lint import lint_model
from rnnexport.verification.whole_model import STANDARD_CASES, verify_model

_spec = importlib.util.spec_from_file_location("whole_models_doc", ROOT / "scripts" / "whole_models_doc.py")
doc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(doc)
ALL_ARCHS = doc.architectures()
BASIC = ("tagger", "speech_encoder", "streaming")  # the generic three, checked in full here
ARCHS = {name: ALL_ARCHS[name] for name in BASIC}


@pytest.fixture(scope="module")
def exported():
    return {name: export_model(m, i, dynamic_shapes=d, input_names=n, output_names=o)
            for name, (m, i, d, n, o) in ARCHS.items()}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_whole_models_export_with_native_nodes_and_pass_verify_at_every_standard_case(name, exported):
    model, inputs, dims, names, outputs = ARCHS[name]
    proto = exported[name]
    ops = Counter(n.op_type for n in proto.graph.node)
    layers = sum(m.num_layers for _, m in recurrent_modules(model))
    assert ops["GRU"] + ops["LSTM"] + ops["RNN"] == layers and not ops["Loop"] and not ops["Scan"]
    assert not [d for d in proto.opset_import if d.domain == "rnnexport"]
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(proto, strict_mode=True), full_check=True)
    assert lint_model(proto, run=True) == []  # roles traced through embeddings and convolutions; run at 2 and 7 steps
    assert [i.name for i in proto.graph.input] == names and [o.name for o in proto.graph.output] == outputs
    for value, roles in zip(proto.graph.input, dims):  # the declared dims are dynamic, the others fixed
        shape = value.type.tensor_type.shape.dim
        assert {a for a, d in enumerate(shape) if d.dim_param} == set(roles)
    again = export_model(model, inputs, dynamic_shapes=dims, input_names=names, output_names=outputs)
    assert hashlib.sha256(again.SerializeToString()).digest() == hashlib.sha256(proto.SerializeToString()).digest()
    report = verify_model(model, proto, inputs, dynamic_shapes=dims)
    verdict = report.judge()
    assert verdict.passed, verdict.failures()
    assert [c["name"] for c in report.cases] == list(STANDARD_CASES)
    seq = next(inputs[i].shape[a] for i, d in enumerate(dims) for a, r in d.items() if r == "seq")
    seqs = {c["name"]: c["inputs"] for c in report.cases}
    assert seq * 10 in next(iter(seqs["long"].values())) and 1 in next(iter(seqs["seq1"].values()))
    ort = next(r for r in report.runners if r.name == "ort-cpu")
    assert ort.status == "ok" and set(ort.drift) == set(STANDARD_CASES)


def test_a_gate_swapped_whole_model_fails_verify(exported):
    model, inputs, dims, _, _ = ARCHS["tagger"]
    broken = onnx.ModelProto()
    broken.CopyFrom(exported["tagger"])
    tensor = next(t for t in broken.graph.initializer if t.name.endswith("W_1"))
    blocks = np.split(onnx.numpy_helper.to_array(tensor), 4, axis=1)
    blocks[0], blocks[2] = blocks[2], blocks[0]
    tensor.CopyFrom(onnx.numpy_helper.from_array(np.concatenate(blocks, axis=1), tensor.name))
    verdict = verify_model(model, broken, inputs, dynamic_shapes=dims, runtimes=("ort",)).judge()
    assert verdict.exit_code == 1 and "ort-cpu" in verdict.failed_runners()


FACTORY = '''
import torch
import rnnexport
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(50, 8), nn.GRU(8, 12, 2, batch_first=True), nn.Linear(12, 3)

    def forward(self, tokens):
        return self.head(self.rnn(self.emb(tokens))[0])


def tagger():
    torch.manual_seed(0)
    return rnnexport.WholeModel(Tagger().eval(), (torch.randint(0, 50, (2, 9)),), ({0: "batch", 1: "seq"},),
                                ["tokens"], ["logits"])
'''


def test_cli_export_model_from_a_factory(tmp_path):
    (tmp_path / "mymodels.py").write_text(FACTORY)
    command = [sys.executable, "-m", "rnnexport", "export-model", "mymodels:tagger", "--out", "exported",
               "--runtimes", "ort"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Tagger: PASS (5 cases against torch-float64-oracle")
    assert result.stderr == ""
    out = tmp_path / "exported"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["model_sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    broken = onnx.load(out / "model.onnx")  # another file of the same model, with a gate swap: verified, it fails
    tensor = next(t for t in broken.graph.initializer if t.name.endswith("W_0"))
    blocks = np.split(onnx.numpy_helper.to_array(tensor), 3, axis=1)
    swapped = np.concatenate([blocks[1], blocks[0], blocks[2]], axis=1)
    tensor.CopyFrom(onnx.numpy_helper.from_array(swapped, tensor.name))
    onnx.save(broken, tmp_path / "theirs.onnx")
    checked = subprocess.run(command[:-4] + ["--onnx", "theirs.onnx", "--out", "checked", "--runtimes", "ort"],
                             cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 1 and "FAIL" in checked.stdout.splitlines()[0], checked.stdout + checked.stderr
    assert (tmp_path / "checked" / "model.onnx").read_bytes() == (tmp_path / "theirs.onnx").read_bytes()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = subprocess.run(command[:-4] + ["--out", "mine"], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.startswith("Error: mine: exists and is not an earlier export-model")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


RAGGED = '''
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class RaggedTagger(nn.Module):
    """Tokens and their lengths: packed by name-imported pack_padded_sequence, unpacked through nn.utils.rnn."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.rnn = nn.LSTM(8, 12, 2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(24, 3)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.emb(tokens), lengths, batch_first=True, enforce_sorted=False)
        y, (h, c) = self.rnn(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=tokens.shape[1])
        return self.head(y), h
'''


def test_a_packed_ragged_whole_model_exports_as_a_masked_graph_and_verifies(tmp_path):
    import torch

    (tmp_path / "ragged_models.py").write_text(RAGGED)
    sys.path.insert(0, str(tmp_path))
    try:
        import ragged_models
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    model = ragged_models.RaggedTagger().eval()
    inputs, dims = (torch.randint(0, 50, (3, 9)), torch.tensor([9, 4, 6])), ({0: "batch", 1: "seq"}, {0: "batch"})
    proto = export_model(model, inputs, dynamic_shapes=dims, input_names=["tokens", "lengths"],
                         output_names=["logits", "h_n"])
    assert torch.nn.utils.rnn.pack_padded_sequence.__module__ == "torch.nn.utils.rnn"  # put back after the export
    assert ragged_models.pack_padded_sequence is torch.nn.utils.rnn.pack_padded_sequence
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["LSTM"] == 4 and ops["ReverseSequence"] and not ops["Loop"]  # masked: one node per direction
    assert lint_model(proto, run=True) == []  # roles traced through embeddings and convolutions; run at 2 and 7 steps
    report = verify_model(model, proto, inputs, dynamic_shapes=dims)
    assert report.judge().passed, report.judge().failures()
    lengths = [c["inputs"]["lengths"] for c in report.cases]
    assert lengths == [[3], [3], [1], [3], [6]]


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_lint_finds_a_fixed_sequence_axis_through_embeddings_and_convolutions(name, exported):
    broken = onnx.ModelProto()
    broken.CopyFrom(exported[name])
    value = broken.graph.input[0]
    axis = next(a for a, d in enumerate(value.type.tensor_type.shape.dim) if d.dim_param == "seq")
    value.type.tensor_type.shape.dim[axis].Clear()
    value.type.tensor_type.shape.dim[axis].dim_value = 12
    errors = [str(f) for f in lint_model(broken, run=False) if f.level == "error"]
    assert errors == [f"error: static-dims: input {value.name}: axis {axis} (seq) fixed to 12; they must be dynamic "
                      "for the model to take other lengths and batches"]


# The catalogue of re-created architectures (docs/whole-models.md): a fast subset exported and verified for real.
# tacotron2_decoder_step builds its LSTMCells with bias=1 (an int), as NVIDIA/tacotron2 does
FAST = ["rnnt_predictor", "tacotron2_encoder", "awd_lstm", "seq2seq_attention_step", "tacotron2_decoder_step"]


@pytest.mark.parametrize("name", FAST)
def test_catalogue_models_export_with_native_nodes_and_pass_verify_on_ort(name):
    model, inputs, dims, names, outputs = ALL_ARCHS[name]
    proto = export_model(model, inputs, dynamic_shapes=dims, input_names=names, output_names=outputs)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["GRU"] + ops["LSTM"] + ops["RNN"] >= len(recurrent_modules(model)) and not ops["Loop"] + ops["Scan"]
    assert [i.name for i in proto.graph.input] == names and [o.name for o in proto.graph.output] == outputs
    report = verify_model(model, proto, inputs, dynamic_shapes=dims, runtimes=("ort",))
    verdict = report.judge()
    assert verdict.passed, verdict.failures()
    ran = [c["name"] for c in report.cases]
    has_seq = any("seq" in d.values() for d in doc._flat_dims(dims))
    assert ran == (list(STANDARD_CASES) if has_seq else ["example", "batch1", "other_batch"])
    ort = next(r for r in report.runners if r.name == "ort-cpu")
    assert ort.status == "ok" and set(ort.drift) == set(ran)


def test_the_catalogue_cell_loop_is_refused_by_export_model():
    model, inputs, dims, names, outputs = ALL_ARCHS["time_sequence_prediction"]
    with pytest.raises(ExportError, match="the LSTMCell lstm1 is called 10 times in one forward"):
        export_model(model, inputs, dynamic_shapes=dims, input_names=names, output_names=outputs)


def test_every_catalogue_architecture_has_a_one_line_docstring_and_the_page_lists_them():
    assert len(ALL_ARCHS) >= 12 and set(BASIC) <= set(ALL_ARCHS)
    for name, (model, *_) in ALL_ARCHS.items():
        text = (type(model).__doc__ or "").strip()
        assert text and "\n" not in text, f"{name}: {type(model).__name__} needs a one-line docstring"
    page = (ROOT / "docs" / "whole-models.md").read_text()
    listed = re.findall(r"^## (\S+)$", page, re.M)
    assert [n for n in listed if n in ALL_ARCHS] == list(ALL_ARCHS), "regenerate: python scripts/whole_models_doc.py"
    for model, *_ in ALL_ARCHS.values():  # each section names its class and its docstring, as the script writes them
        assert f"`{type(model).__name__}`: {type(model).__doc__.strip()}" in page


def test_the_catalogue_is_seeded():
    again = doc.architectures()
    for name, (model, inputs, *_) in ALL_ARCHS.items():
        other, other_inputs, *_ = again[name]
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values())), name
        flat, flat_other = torch.utils._pytree.tree_leaves(inputs), torch.utils._pytree.tree_leaves(other_inputs)
        assert all(torch.equal(a, b) for a, b in zip(flat, flat_other)), name
