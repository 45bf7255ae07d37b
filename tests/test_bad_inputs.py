"""The bad-input catalogue: every case gives exactly one `Error: …` line, exit 2 (3 for a runtime that is
missing), no traceback, and leaves every file it could touch as it was."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import SHIPPED, tree_snapshot
from onnx import TensorProto, helper

from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import load_config, newest_opset

# computed from the inputs, so an export change never breaks a tamper test
MODEL_BYTES = len(export_config(load_config(SHIPPED[0]))[1].SerializeToString())
MODEL_SHA = hashlib.sha256(export_config(load_config(SHIPPED[0]))[1].SerializeToString()).hexdigest()
BASE = 'name = "m"\ncell = "gru"\ninput_size = 4\nhidden_size = 8\n'
GRU = SHIPPED[0]  # gru_2layer
GRU_CFG = load_config(GRU)
assert GRU.stem == "gru_2layer"
CFG_PREFIX = "{tmp}/model.toml: "

BAD_CONFIGS = [
    ("malformed", 'cell = "gru"\ninput_size = ', "not valid TOML: Invalid value (at end of document)"),
    ("unknown_key", BASE + "hidden = 3\n",
     "unknown key 'hidden'; allowed keys: name, cell, input_size, hidden_size, num_layers, bias, batch_first, "
     "bidirectional, dropout, seed, opset, reverse, variants, example, inputs, tolerance, weights"),
    ("unknown_variant", BASE + 'variants = ["int4"]\n',
     "key 'variants': unknown variant 'int4'; known: fp16-weights, int8-dynamic"),
    ("variants_not_a_list", BASE + "variants = 3\n",
     "key 'variants': 3 is not allowed; expected a list of names from fp16-weights, int8-dynamic"),
    ("unknown_subkey", BASE + "[example]\nseq = 3\n", "unknown key 'example.seq'; allowed in [example]: seq_len, batch"),
    ("unknown_cell", BASE.replace('"gru"', '"transformer"'),
     "key 'cell': 'transformer' is not allowed; expected one of gru, lstm, rnn_tanh, rnn_relu"),
    ("string_size", BASE.replace("hidden_size = 8", 'hidden_size = "8"'),
     "key 'hidden_size': '8' is not allowed; expected an integer"),
    ("bool_size", BASE.replace("hidden_size = 8", "hidden_size = true"),
     "key 'hidden_size': true is not allowed; expected an integer"),
    ("float_layers", BASE + "num_layers = 2.5\n", "key 'num_layers': 2.5 is not allowed; expected an integer"),
    ("zero_hidden", BASE.replace("hidden_size = 8", "hidden_size = 0"),
     "key 'hidden_size': 0 is not allowed; expected an integer from 1 to 65536"),
    ("negative_input", BASE.replace("input_size = 4", "input_size = -3"),
     "key 'input_size': -3 is not allowed; expected an integer from 1 to 65536"),
    ("huge_layers", BASE + "num_layers = 1000\n", "key 'num_layers': 1000 is not allowed; expected an integer from 1 to 64"),
    ("huge_weights", BASE.replace("hidden_size = 8", "hidden_size = 60000") + "num_layers = 8\n",
     "the model would hold 162,003,600,000 weights (603.5 GiB as float32); the limit is 1 GiB, "
     "since an ONNX file without external data must stay under 2 GiB"),
    ("proj_size", BASE + "proj_size = 4\n",
     "key 'proj_size' is not supported: ONNX's LSTM operator has no projection, so an LSTM with proj_size "
     "cannot be exported as a native node"),
    ("opset_low", BASE + "opset = 8\n", f"key 'opset': 8 is not allowed; expected an integer from 9 to {newest_opset()}"),
    ("opset_high", BASE + "opset = 99\n", f"key 'opset': 99 is not allowed; expected an integer from 9 to {newest_opset()}"),
    ("dropout_one_layer", BASE + "dropout = 0.5\n",
     "key 'dropout': 0.5 is not allowed; expected 0 when num_layers = 1 (PyTorch applies dropout only between layers)"),
    ("dropout_range", BASE + "num_layers = 2\ndropout = 1.0\n",
     "key 'dropout': 1.0 is not allowed; expected a number from 0 up to (not including) 1"),
    ("name_traversal", BASE.replace('"m"', '"../x"'),
     "key 'name': '../x' is not allowed; expected 1-64 characters of letters, digits, '.', '_' or '-', "
     "starting with a letter or digit"),
    ("name_absolute", BASE.replace('"m"', '"/etc/x"'),
     "key 'name': '/etc/x' is not allowed; expected 1-64 characters of letters, digits, '.', '_' or '-', "
     "starting with a letter or digit"),
    ("name_empty", BASE.replace('"m"', '""'),
     "key 'name': '' is not allowed; expected 1-64 characters of letters, digits, '.', '_' or '-', "
     "starting with a letter or digit"),
    ("missing_cell", 'input_size = 4\nhidden_size = 8\n', "missing required key 'cell'"),
    ("table_as_value", BASE + "example = 3\n", "key 'example': 3 is not allowed; expected a table"),
    ("negative_atol", BASE + "[tolerance]\natol = -1.0\n",
     "key 'tolerance.atol': -1.0 is not allowed; expected a finite, non-negative number"),
    ("zero_seq", BASE + "[example]\nseq_len = 0\n",
     "key 'example.seq_len': 0 is not allowed; expected an integer from 1 to 1000000"),
    ("bool_as_string", BASE + 'bidirectional = "yes"\n', "key 'bidirectional': 'yes' is not allowed; expected true or false"),
]


@dataclass
class Bad:
    """A scenario: setup(tmp) writes its files and returns the CLI arguments."""

    id: str
    setup: Callable[[Path], list[str]]
    message: str  # the expected line after "Error: "; {tmp} is the scenario's folder
    code: int = 2


def _config(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "model.toml").write_text(text)
        return ["build", str(tmp / "model.toml"), "--out", str(tmp / "out")]
    return setup


def _artifact(tmp: Path) -> Path:
    return build_artifact(load_config(GRU), tmp / "out")


def _verify_onnx(write: Callable[[Path, Path], None], config: Path = GRU) -> Callable[[Path], list[str]]:
    """verify BAD.onnx --config --weights, where write(artifact, bad_path) makes the bad file."""
    def setup(tmp: Path) -> list[str]:
        artifact = _artifact(tmp)
        write(artifact, tmp / "bad.onnx")
        return ["verify", str(tmp / "bad.onnx"), "--config", str(config), "--weights", str(artifact / "weights.pt")]
    return setup


def _verify_weights(state: Callable[[], dict] | None = None, raw: bytes | None = None) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        artifact = _artifact(tmp)
        if raw is not None:
            (tmp / "w.pt").write_bytes(raw)
        else:
            torch.save(state(), tmp / "w.pt")
        return ["verify", str(artifact / "model.onnx"), "--config", str(GRU), "--weights", str(tmp / "w.pt")]
    return setup


def _gru_state(**changes) -> Callable[[], dict]:
    def make() -> dict:
        from rnnexport.export.builders import build_model

        state = dict(build_model(load_config(GRU)).state_dict())
        for key, value in changes.items():
            if value is None:
                del state[key]
            else:
                state[key] = value
        return state
    return make


class RunsCode:
    def __reduce__(self):
        return (print, ("this would run on load",))


def _no_recurrent_node(artifact: Path, bad: Path) -> None:
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["seq", "batch", 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["seq", "batch", 16])])
    onnx.save(helper.make_model(graph), bad)


def _torchscript(old: bytes, new: bytes) -> Callable[[Path], None]:
    """Writes a TorchScript archive of a small GRU whose data.pkl has ``old`` replaced by ``new``."""
    def make(path: Path) -> None:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script: what users' archives came from
            torch.jit.save(torch.jit.script(torch.nn.GRU(3, 4)), buffer)
        source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
        with zipfile.ZipFile(path, "w") as target:
            for name in source.namelist():
                data = source.read(name)
                target.writestr(name, data.replace(old, new) if name.endswith("/data.pkl") else data)
    return make


# weight_ih_l0 of GRU(3, 4) is stored as (MARK BININT1 12 BININT1 3 TUPLE): its size (12, 3)
TS_SIZE = b"(K\x0cK\x03t"


def _weights_setup(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        artifact = _artifact(tmp)
        make(tmp / "w.pt")
        return ["verify", str(artifact / "model.onnx"), "--config", str(GRU), "--weights", str(tmp / "w.pt")]
    return setup


def _deep_dict(depth: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        state: dict = {"w": torch.zeros(2)}
        for _ in range(depth):
            state = {"k": state}
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(10 * depth)  # pickling recurses once per level
        try:
            torch.save(state, path)
        finally:
            sys.setrecursionlimit(limit)
    return make


def _shared_dicts(levels: int) -> Callable[[Path], None]:
    """A few KB on disk: a pickle stores each dict once, however often it is referenced."""
    def make(path: Path) -> None:
        state: dict = {"rnn": torch.nn.GRU(3, 4).state_dict()}
        for _ in range(levels):
            state = {"a": state, "b": state}
        torch.save(state, path)
    return make


def _artifact_then(change: Callable[[Path], None], *extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        artifact = _artifact(tmp)
        change(artifact)
        return ["verify", str(artifact), *extra]
    return setup


def _edit_manifest(**changes) -> Callable[[Path], None]:
    def change(artifact: Path) -> None:
        manifest = json.loads((artifact / "manifest.json").read_text())
        manifest.update(changes)
        (artifact / "manifest.json").write_text(json.dumps(manifest))
    return change


def _edit_file_entry(name: str, **changes) -> Callable[[Path], None]:
    def change(artifact: Path) -> None:
        manifest = json.loads((artifact / "manifest.json").read_text())
        manifest["files"][name].update(changes)
        (artifact / "manifest.json").write_text(json.dumps(manifest))
    return change


def _index_folder(tmp: Path) -> list[str]:
    _artifact(tmp)
    (tmp / "out" / "index.json").unlink(missing_ok=True)
    (tmp / "out" / "index.json").mkdir()
    return ["build", str(GRU), "--out", str(tmp / "out")]


def _golden_with_unknown_case(tmp: Path) -> list[str]:
    artifact = _artifact(tmp)
    assert CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example", "--save-golden",
                                     str(tmp / "g")]).exit_code == 0
    np.savez(tmp / "g" / "gru_2layer" / "inputs.npz", **{"bogus/input": np.zeros((3, 2, 16), np.float32)})
    return ["verify", str(artifact), "--golden", str(tmp / "g")]


def _golden_with_wrong_shape(tmp: Path) -> list[str]:
    artifact = _artifact(tmp)
    assert CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example", "--save-golden",
                                     str(tmp / "g")]).exit_code == 0
    path = tmp / "g" / "gru_2layer" / "expected.npz"
    with np.load(path) as saved:
        arrays = dict(saved)
    arrays["example/output"] = arrays["example/output"][:, :1]  # one row of the batch kept
    np.savez(path, **arrays)
    return ["verify", str(artifact), "--golden", str(tmp / "g")]


def _inputs_file(arrays: dict[str, np.ndarray] | None, raw: bytes | None = None) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        artifact = _artifact(tmp)
        if raw is not None:
            (tmp / "in.npz").write_bytes(raw)
        else:
            np.savez(tmp / "in.npz", **arrays)
        return ["verify", str(artifact), "--inputs", str(tmp / "in.npz")]
    return setup


def _empty_folder(tmp: Path) -> list[str]:
    (tmp / "configs").mkdir()
    return ["build", str(tmp / "configs"), "--out", str(tmp / "out")]


def _duplicate_names(tmp: Path) -> list[str]:
    (tmp / "a.toml").write_text(BASE)
    (tmp / "b.toml").write_text(BASE)
    return ["build", str(tmp / "a.toml"), str(tmp / "b.toml"), "--out", str(tmp / "out")]


def _through_a_file(tmp: Path) -> list[str]:
    (tmp / "file.toml").write_text(BASE)
    return ["build", str(tmp / "file.toml" / "inner.toml"), "--out", str(tmp / "out")]


def _out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "model.toml").write_text(BASE)
    (tmp / "out").write_text("a file, not a folder")
    return ["build", str(tmp / "model.toml"), "--out", str(tmp / "out")]


def _verify_args(*args: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        return ["verify", str(_artifact(tmp)), *args]
    return setup


STATE_SHAPE = "weights do not fit the config gru_2layer: "
CATALOGUE = [Bad(f"config_{name}", _config(text), CFG_PREFIX + message) for name, text, message in BAD_CONFIGS] + [
    Bad("missing_config", lambda t: ["build", str(t / "nope.toml")], "{tmp}/nope.toml: no such file or folder"),
    Bad("path_through_a_file", _through_a_file, "{tmp}/file.toml/inner.toml: no such file or folder"),
    Bad("empty_config_folder", _empty_folder, "{tmp}/configs: folder holds no .toml config"),
    Bad("duplicate_names", _duplicate_names, "{tmp}/b.toml: name 'm' is already used by {tmp}/a.toml"),
    Bad("out_is_a_file", _out_is_a_file, "{tmp}/out: cannot create output folder: File exists"),
    Bad("onnx_not_onnx", _verify_onnx(lambda a, b: b.write_bytes(b"GIF89a not a model")),
        "{tmp}/bad.onnx: not an ONNX model (it does not parse)"),
    Bad("onnx_truncated", _verify_onnx(lambda a, b: b.write_bytes((a / "model.onnx").read_bytes()[:3000])),
        "{tmp}/bad.onnx: not an ONNX model (it does not parse)"),
    Bad("onnx_no_recurrent_node", _verify_onnx(_no_recurrent_node), "{tmp}/bad.onnx: the graph has no GRU, LSTM or RNN node"),
    Bad("onnx_inputs_do_not_match", _verify_onnx(lambda a, b: b.write_bytes((a / "model.onnx").read_bytes()),
                                                 config=SHIPPED[2]),
        "{tmp}/bad.onnx: graph inputs ['input'] do not match the config, which expects ['input', 'h0', 'sequence_lens']"),
    Bad("onnx_without_config", lambda t: ["verify", str(_artifact(t) / "model.onnx")],
        "{tmp}/out/gru_2layer/model.onnx: a bare .onnx file needs --config CFG.toml and --weights WEIGHTS.pt"),
    Bad("weights_missing_key", _verify_weights(_gru_state(bias_hh_l1=None)),
        "{tmp}/w.pt: " + STATE_SHAPE + "missing bias_hh_l1 (expected [96])"),
    Bad("weights_extra_key", _verify_weights(_gru_state(weight_ih_l2=torch.zeros(96, 32))),
        "{tmp}/w.pt: " + STATE_SHAPE + "unexpected weight_ih_l2 [96, 32]"),
    Bad("weights_wrong_shape", _verify_weights(_gru_state(weight_hh_l0=torch.zeros(96, 31))),
        "{tmp}/w.pt: " + STATE_SHAPE + "weight_hh_l0: expected shape [96, 32], found [96, 31]"),
    Bad("weights_run_code", _verify_weights(lambda: {"x": RunsCode()}),
        "{tmp}/w.pt: refused: not a plain weights file; loading it would run code (it references print). "
        "Save the model's state_dict() instead"),
    Bad("weights_not_a_dict", _verify_weights(lambda: [torch.zeros(2)]),
        "{tmp}/w.pt: expected a state_dict (a dict of tensors), found list"),
    Bad("weights_garbage", _verify_weights(raw=b"\x00\x01 not torch"),
        "{tmp}/w.pt: not a PyTorch weights file (Unsupported operand 0)"),
    Bad("torchscript_size_past_storage", _weights_setup(_torchscript(TS_SIZE, b"(K\xc8K\x03t")),
        "{tmp}/w.pt: a TorchScript archive whose weights cannot be read safely (a tensor reaching element 599 of a "
        "storage of 36); save a state_dict instead: torch.save(model.state_dict(), 'weights.pt')"),
    Bad("torchscript_string_size", _weights_setup(_torchscript(TS_SIZE, b"(X\x01\x00\x00\x00aK\x03t")),
        "{tmp}/w.pt: a TorchScript archive whose weights cannot be read safely (a tensor size of 'a'); save a "
        "state_dict instead: torch.save(model.state_dict(), 'weights.pt')"),
    Bad("weights_fifo", _weights_setup(os.mkfifo),
        "{tmp}/w.pt: not a regular file (a pipe, socket or device), expected a weights file"),
    Bad("weights_nested_3000_deep", _weights_setup(_deep_dict(3000)), "{tmp}/w.pt: dicts nested more than 64 deep"),
    Bad("weights_shared_dicts_2_40", _weights_setup(_shared_dicts(40)),
        "{tmp}/w.pt: more than 1,000,000 entries once nested dicts are flattened (the same dict referenced from "
        "several places counts each time)"),
    Bad("init_nan_weights", lambda t: (torch.save(_gru_state(weight_hh_l1=torch.full((96, 32), float("inf")))(),
                                                  t / "w.pt"),
                                       ["init", "--from-checkpoint", str(t / "w.pt"), "--out", str(t / "m.toml")])[1],
        "{tmp}/w.pt: weight_hh_l1 holds 3,072 NaN or infinite value(s) of 3,072; every output would be NaN, so "
        "there is nothing to export or verify"),
    Bad("weights_nan", _verify_weights(_gru_state(weight_hh_l1=torch.full((96, 32), float("nan")))),
        "{tmp}/w.pt: weight_hh_l1 holds 3,072 NaN or infinite value(s) of 3,072; every output would be NaN, so "
        "there is nothing to export or verify"),
    Bad("config_weights_file_empty", _config(BASE + '[weights]\nfile = ""\n'),
        CFG_PREFIX + "key 'weights.file': '' is not allowed; expected the path of the weights file, relative to "
        "this config (without a [weights] table the weights are seeded)"),
    Bad("config_weights_only_prefix", _config(BASE + '[weights]\nprefix = "rnn."\n'),
        CFG_PREFIX + "key 'weights.file': '' is not allowed; expected the path of the weights file, relative to "
        "this config (without a [weights] table the weights are seeded)"),
    Bad("artifact_tampered", _artifact_then(lambda a: (a / "model.onnx").write_bytes(b"x" * 10)),
        "{tmp}/out/gru_2layer/model.onnx: sha256 " + hashlib.sha256(b"x" * 10).hexdigest()[:12]
        + f"… does not match the manifest's {MODEL_SHA[:12]}…; "
        "the file was changed after it was built"),
    Bad("artifact_unknown_schema", _artifact_then(_edit_manifest(schema_version=7)),
        "{tmp}/out/gru_2layer/manifest.json: schema_version 7 is not supported; this rnnexport reads 1"),
    Bad("artifact_manifest_not_json", _artifact_then(lambda a: (a / "manifest.json").write_text("{oops")),
        "{tmp}/out/gru_2layer/manifest.json: unreadable manifest: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)"),
    Bad("artifact_manifest_bytes_negative", _artifact_then(_edit_file_entry("model.onnx", bytes=-1)),
        "{tmp}/out/gru_2layer/model.onnx: " + f"{MODEL_BYTES:,}" + " bytes, but the manifest records -1; the file or "
        "the manifest was changed after it was built"),
    Bad("index_json_a_folder", _index_folder,
        "{tmp}/out/index.json: is not a file; rnnexport writes its index of the artifacts there (move it away, or "
        "choose another --out)"),
    Bad("index_json_a_folder_verify", lambda t: (_index_folder(t), ["verify", str(t / "out" / "gru_2layer")])[1],
        "{tmp}/out/index.json: is not a file; rnnexport writes its index of the artifacts there (move it away, or "
        "choose another --out)"),
    Bad("golden_inputs_only_an_unknown_case", _golden_with_unknown_case,
        "{tmp}/g/gru_2layer: inputs.npz holds cases ['bogus'], but golden.json lists ['example']"),
    Bad("golden_output_of_another_shape", _golden_with_wrong_shape,
        "{tmp}/g/gru_2layer: expected output output of case example is float64 "
        f"[{GRU_CFG.example.seq_len}, 1, {GRU_CFG.hidden_size}]; its inputs make "
        f"[{GRU_CFG.example.seq_len}, {GRU_CFG.example.batch}, {GRU_CFG.hidden_size}] of real numbers"),
    Bad("artifact_missing_weights", _artifact_then(lambda a: (a / "weights.pt").unlink()),
        "{tmp}/out/gru_2layer/weights.pt: missing from the artifact"),
    Bad("verify_missing_path", lambda t: ["verify", str(t / "nothing")], "{tmp}/nothing: no such file or folder"),
    Bad("verify_folder_without_models", lambda t: ["verify", str(t)],
        "{tmp}: holds no artifact folder and no .toml config"),
    Bad("unknown_provider", _verify_args("--providers", "CUDAExecutionProvider,FooExecutionProvider"),
        f"unknown provider 'FooExecutionProvider'; known: {', '.join(ort.get_all_providers())}"),
    Bad("unknown_case", _verify_args("--cases", "example,huge"),
        "unknown case 'huge'; known: example, seq1, batch1, long, other_batch, saturating, tiny, zero_state, ragged, "
        "ragged_saturating, streaming"),
    Bad("threads_not_a_count", _verify_args("--threads", "1_0"),
        "Invalid value for '--threads': '1_0' is neither 'auto' nor a whole number from 0 to 1024. "
        "(rnnexport verify --help)"),
    Bad("threads_past_the_bound", _verify_args("--threads", "9" * 5000),
        "Invalid value for '--threads': '" + "9" * 5000 + "' is neither 'auto' nor a whole number from 0 to 1024. "
        "(rnnexport verify --help)"),
    Bad("bad_shard", _verify_args("--shard", "3/2"), "--shard '3/2': expected K/N with 1 <= K <= N, for example 2/4"),
    Bad("inputs_not_npz", _inputs_file(None, raw=b"plain text"), "{tmp}/in.npz: not a .npz file of inputs"),
    Bad("inputs_pickled", _inputs_file({"example/input": np.array([{"a": 1}], dtype=object)}),
        "{tmp}/in.npz: refused: it holds pickled objects, which could run code on load"),
    Bad("inputs_wrong_names", _inputs_file({"example/x": np.zeros((3, 2, 16), np.float32)}),
        "{tmp}/in.npz: case 'example' has inputs ['x']; the model takes ['input']"),
    Bad("inputs_wrong_size", _inputs_file({"example/input": np.zeros((3, 2, 15), np.float32)}),
        "{tmp}/in.npz: case 'example': input has shape [3, 2, 15]; expected 3 dims ending in 16"),
    Bad("inspect_not_onnx", lambda t: ["inspect", str(GRU)], f"{GRU}: not an ONNX model (it does not parse)"),
]
if "CUDAExecutionProvider" not in ort.get_available_providers():
    CATALOGUE.append(Bad("require_missing_cuda", _verify_args("--require", "CUDAExecutionProvider"),
                         f"required provider CUDAExecutionProvider is not available: this onnxruntime {ort.__version__} "
                         "was built without it (install onnxruntime-gpu)", code=3))


@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.id for b in CATALOGUE])
def test_bad_input(tmp_path, bad):
    args = bad.setup(tmp_path)
    before = tree_snapshot(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.output == f"Error: {bad.message.format(tmp=tmp_path)}\n"
    assert result.exit_code == bad.code
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert tree_snapshot(tmp_path) == before


def test_catalogue_is_large():
    assert len(CATALOGUE) >= 30


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_config_folder(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "a.toml").write_text(BASE)
    folder.chmod(0)
    try:
        result = CliRunner().invoke(main, ["build", str(folder), "--out", str(tmp_path / "out")])
    finally:
        folder.chmod(0o755)
    assert (result.exit_code, result.output) == (2, f"Error: {folder}: cannot read folder: Permission denied\n")


# ONNX Runtime's CPU GRU turns a NaN input into finite outputs (PyTorch keeps the NaN): that fails, exit 1;
# an Inf input saturates both the same way: exit 0.
@pytest.mark.parametrize(("value", "code"), [(np.nan, 1), (np.inf, 0)], ids=["nan", "inf"])
def test_nonfinite_inputs_are_reported_not_a_crash(tmp_path, value, code):
    """NaN/Inf in the inputs: the verifier runs, says so, and judges each runner on whether its NaN/Inf
    sit where the oracle's do (ONNX Runtime's CPU GRU, for one, returns finite values for a NaN input)."""
    artifact = _artifact(tmp_path)
    x = np.random.default_rng(0).standard_normal((6, 2, 16)).astype(np.float32)
    x[2, 1, 3] = value
    np.savez(tmp_path / "in.npz", **{"odd/input": x})
    result = CliRunner().invoke(main, ["verify", str(artifact), "--inputs", str(tmp_path / "in.npz")])
    assert "⚠ case odd: the inputs hold 1 NaN/Inf values; a runtime must propagate them where PyTorch does" \
        in result.output
    report = json.loads((artifact / "report.json").read_text())
    assert report["cases"][0]["nonfinite_inputs"] == 1
    runners = {r["name"]: r["drift"]["odd"]["output"] for r in report["runners"] if r["status"] == "ok"}
    assert runners["torch-float32-cpu"]["nonfinite_mismatches"] == 0
    ort_mismatches = runners["ort-cpu"]["nonfinite_mismatches"]
    assert result.exit_code == code, result.output
    if ort_mismatches:
        assert "✗ ort-cpu: odd/output: " in result.output


def test_malformed_neighbours_are_left_out_of_the_index_with_a_note(tmp_path):
    """A sibling artifact whose manifest lists its files as a list, and one whose report has runners ['x']:
    build and verify of another artifact beside them go on, say so, and index only what they can read."""
    out = tmp_path / "out"
    for config in SHIPPED[:3]:
        build_artifact(load_config(config), out)
    broken, odd_report, ours = (out / load_config(c).name for c in SHIPPED[:3])
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "files": ["model.onnx"]}))
    model_sha = json.loads((odd_report / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    (odd_report / "report.json").write_text(json.dumps({"model_sha256": model_sha, "passed": True, "runners": ["x"]}))
    note = f"note: {broken}: left out of index.json: its manifest.json has no 'files' table with model.onnx and its sha256"
    odd = f"note: {odd_report}: its report.json is listed as not verified in index.json: 'runners' is not a list of runners"
    for args in (["verify", str(ours), "--cases", "example", "--record"], ["build", str(SHIPPED[2]), "--out", str(out)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert result.output.count(note) == 1 and result.output.count(odd) == 1, result.output
        index = json.loads((out / "index.json").read_text())
        assert [e["name"] for e in index["artifacts"]] == sorted([odd_report.name, ours.name])
        assert next(e for e in index["artifacts"] if e["name"] == odd_report.name)["verified"] is False


SCRIPTED = """
import sys, torch, warnings
warnings.simplefilter("ignore")
class Tagger(torch.nn.Module):  # defined in a script: TorchScript names its class __torch__.Tagger
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(3, 4)
    def forward(self, x):
        return self.rnn(x)[0]
torch.jit.script(Tagger()).save(sys.argv[1])
"""


def test_a_torchscript_archive_of_a_class_defined_in_a_script_is_read(tmp_path):
    import subprocess

    (tmp_path / "make.py").write_text(SCRIPTED)  # TorchScript reads the class's source from its file
    subprocess.run([sys.executable, str(tmp_path / "make.py"), str(tmp_path / "ts.pt")], check=True)
    result = CliRunner().invoke(main, ["init", "--from-checkpoint", str(tmp_path / "ts.pt"), "--out",
                                       str(tmp_path / "m.toml")])
    assert result.exit_code == 0, result.output
    assert 'cell = "gru"' in (tmp_path / "m.toml").read_text()


def test_a_shape_too_large_for_this_machines_memory_is_refused_before_any_work(tmp_path):
    """The parser bounds steps × rows; what that costs depends on the model: lstm_large at 10 M steps × rows."""
    from rnnexport.jobs import SHAPE_BYTES_PER_VALUE

    cfg_path = next(p for p in SHIPPED if p.stem == "lstm_large")
    cfg = load_config(cfg_path)
    need = 1_000_000 * 10 * (cfg.input_size + cfg.hidden_size) * SHAPE_BYTES_PER_VALUE
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need <= memory / 2:
        pytest.skip(f"this machine has {memory / 2**30:.0f} GiB: the shape fits")
    before = tree_snapshot(tmp_path)
    result = CliRunner().invoke(main, ["verify", str(cfg_path), "--shape", "seq=1000000,batch=10", "--runtimes", "ort"])
    assert (result.exit_code, result.output) == (2, f"Error: --shape seq=1000000,batch=10: lstm_large's inputs and "
                                                 f"outputs at this shape need about {need / 2**30:.0f} GiB to verify, "
                                                 f"more than half of this machine's {memory / 2**30:.0f} GiB\n")
    assert tree_snapshot(tmp_path) == before
