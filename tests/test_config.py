"""Config validation: every bad config gives one message naming file, key, value and what is allowed."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import SHIPPED, tree_snapshot, write_config

from rnnexport.cli import main
from rnnexport.config import load_config, load_configs, newest_opset

BASE = 'name = "m"\ncell = "gru"\ninput_size = 4\nhidden_size = 8\n'

BAD_CONFIGS = [
    ("malformed", 'cell = "gru"\ninput_size = ', "not valid TOML: Invalid value (at end of document)"),
    ("unknown_key", BASE + "hidden = 3\n",
     "unknown key 'hidden'; allowed keys: name, cell, input_size, hidden_size, num_layers, bias, batch_first, "
     "bidirectional, dropout, seed, opset, example, inputs, tolerance"),
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
     "key 'tolerance.atol': -1.0 is not allowed; expected a non-negative number"),
    ("zero_seq", BASE + "[example]\nseq_len = 0\n",
     "key 'example.seq_len': 0 is not allowed; expected an integer from 1 to 1000000"),
    ("bool_as_string", BASE + 'bidirectional = "yes"\n', "key 'bidirectional': 'yes' is not allowed; expected true or false"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_gives_one_error_line_and_exit_2(tmp_path, text, message):
    path = write_config(tmp_path, text)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("existing")
    before = tree_snapshot(out)
    result = CliRunner().invoke(main, ["build", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {path}: {message}\n"
    assert tree_snapshot(out) == before


def test_one_bad_config_among_good_ones_writes_nothing(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "a_good.toml").write_text(SHIPPED[0].read_text())
    (configs / "b_bad.toml").write_text(BASE.replace("hidden_size = 8", "hidden_size = 0"))
    result = CliRunner().invoke(main, ["build", str(configs), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing.toml", "{p}: no such file or folder"),
        (lambda d: d, "{p}: folder holds no .toml config"),
    ],
    ids=["missing_file", "empty_folder"],
)
def test_missing_and_empty_paths(tmp_path, setup, message):
    path = setup(tmp_path)
    result = CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "out")])
    assert (result.exit_code, result.output) == (2, f"Error: {message.format(p=path)}\n")


def test_duplicate_names_are_refused(tmp_path):
    a = write_config(tmp_path, BASE, "a.toml")
    b = write_config(tmp_path, BASE, "b.toml")
    result = CliRunner().invoke(main, ["build", str(a), str(b), "--out", str(tmp_path / "out")])
    assert (result.exit_code, result.output) == (2, f"Error: {b}: name 'm' is already used by {a}\n")


def test_defaults_are_filled_and_name_defaults_to_file_stem(tmp_path):
    cfg = load_config(write_config(tmp_path, BASE.replace('name = "m"\n', ""), "my-model.toml"))
    assert cfg.name == "my-model"
    assert (cfg.num_layers, cfg.opset, cfg.bias, cfg.example.seq_len) == (1, 17, True, 16)


def test_hash_ignores_comments_and_key_order(tmp_path):
    a = load_config(write_config(tmp_path, BASE + "seed = 3\n", "a.toml"))
    b = load_config(write_config(tmp_path, "# same model\nseed = 3\n" + BASE, "b.toml"))
    c = load_config(write_config(tmp_path, BASE + "seed = 4\n", "c.toml"))
    assert a.sha256() == b.sha256() != c.sha256()


def test_every_shipped_config_loads():
    configs = load_configs([SHIPPED[0].parent])
    assert [c.name for c in configs] == [p.stem for p in SHIPPED]
    cells = {c.cell for c in configs}
    assert cells == {"gru", "lstm", "rnn_tanh", "rnn_relu"}
    assert any(c.bidirectional and c.num_layers >= 3 and c.cell == "lstm" for c in configs)
    assert any(c.batch_first for c in configs) and any(not c.bias for c in configs)
    assert any(c.inputs.initial_state for c in configs) and any(c.inputs.variable_lengths for c in configs)
    assert any(c.dropout > 0 for c in configs)
    assert any(c.hidden_size >= 512 and c.num_layers >= 4 for c in configs)
