"""Config loading: defaults, hashing, and the shipped set (bad configs: test_bad_inputs.py)."""

from __future__ import annotations

from click.testing import CliRunner
from conftest import SHIPPED, write_config

from rnnexport.cli import main
from rnnexport.config import load_config, load_configs

BASE = 'name = "m"\ncell = "gru"\ninput_size = 4\nhidden_size = 8\n'


def test_one_bad_config_among_good_ones_writes_nothing(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "a_good.toml").write_text(SHIPPED[0].read_text())
    (configs / "b_bad.toml").write_text(BASE.replace("hidden_size = 8", "hidden_size = 0"))
    result = CliRunner().invoke(main, ["build", str(configs), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


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


def test_the_large_configs_comment_says_its_true_size():
    """The first line of configs/lstm_large.toml states its weight count and bytes: computed here, not trusted."""
    import re

    from rnnexport.export.builders import build_model

    path = next(p for p in SHIPPED if p.stem == "lstm_large")
    stated = re.search(r"about ([\d.]+) M weights, ([\d.]+) MB", path.read_text().splitlines()[0])
    count = sum(p.numel() for p in build_model(load_config(path)).parameters())
    assert stated and (float(stated[1]), float(stated[2])) == (round(count / 1e6, 1), round(count * 4 / 1e6, 1))
