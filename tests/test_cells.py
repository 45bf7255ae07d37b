"""Bring your own weights, safely: cell stacks (nn.GRUCell/LSTMCell/RNNCell) as native layers, trained weights
never silently replaced, --check with weights, TorchScript archives read without running them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rnnexport.cli import main
from rnnexport.verification.runners.ort_runner import OrtRunner

CELLS = {"gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell, "rnn_tanh": torch.nn.RNNCell, "rnn_relu": torch.nn.RNNCell}


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


class Decoder(torch.nn.Module):
    """A user's model: a stack of cells stepped by hand, time-major, as people write it."""

    def __init__(self, cell: str, input_size: int, hidden: int, layers: int, bias: bool):
        super().__init__()
        kwargs = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
        sizes = [input_size] + [hidden] * (layers - 1)
        self.cells = torch.nn.ModuleList(CELLS[cell](n, hidden, bias=bias, **kwargs) for n in sizes)
        self.lstm = cell == "lstm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [None] * len(self.cells)
        ys = []
        for step in x:
            for i, cell in enumerate(self.cells):
                states[i] = cell(step, states[i])
                step = states[i][0] if self.lstm else states[i]
            ys.append(step)
        return torch.stack(ys)


def _checkpoint(tmp: Path, cell: str, layers: int, bias: bool, nest: str) -> tuple[Decoder, Path]:
    torch.manual_seed(layers + 3 * bias)
    model = Decoder(cell, 6, 9, layers, bias).eval()
    with torch.no_grad():  # "trained": anything but the seed's weights
        for p in model.parameters():
            p.uniform_(-0.4, 0.4)
    state = {nest: model.state_dict()} if nest else model.state_dict()
    torch.save({"epoch": torch.tensor(3), **state}, tmp / "ckpt.pt")
    return model, tmp / "ckpt.pt"


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_stacks_export_as_native_layers_equal_to_the_users_loop(tmp_path, cell, layers, bias):
    user, ckpt = _checkpoint(tmp_path, cell, layers, bias, nest="model.decoder")
    cfg = tmp_path / "mine.toml"
    assert _run("init", "--from-checkpoint", ckpt, "--prefix", "model.decoder.cells", "--out", cfg)[0] == 0
    if cell == "rnn_relu":
        cfg.write_text(cfg.read_text().replace('cell = "rnn_tanh"', 'cell = "rnn_relu"'))
    code, output = _run("build", cfg, "--out", tmp_path / "art")
    assert code == 0, output
    manifest = json.loads((tmp_path / "art" / "mine" / "manifest.json").read_text())
    assert manifest["weights_origin"]["layout"] == "cell-stack"
    x = np.random.default_rng(1).standard_normal((13, 3, 6)).astype(np.float32)
    with torch.no_grad():
        expected = user(torch.from_numpy(x)).numpy()
    got = OrtRunner(tmp_path / "art" / "mine" / "model.onnx").infer({"input": x})["output"]
    assert np.abs(got - expected).max() < 1e-5
    code, output = _run("verify", tmp_path / "art" / "mine", "--cases", "example,long", "--long-seq", "64")
    assert code == 0, output


def test_lstm_cell_stack_under_decoder_cells_goes_through_init_build_verify_and_formulations(tmp_path):
    _, ckpt = _checkpoint(tmp_path, "lstm", 2, True, nest="decoder")
    cfg = tmp_path / "mine.toml"
    code, output = _run("init", "--from-checkpoint", ckpt, "--out", cfg)  # found alone, no renaming
    assert code == 0 and output.startswith(f"wrote {cfg}: 2 × lstm, hidden 9"), output
    text = cfg.read_text()
    assert '[weights]' in text and 'file = "ckpt.pt"' in text and 'prefix = "decoder.cells."' in text
    assert _run("build", cfg, "--out", tmp_path / "art")[0] == 0
    assert _run("verify", tmp_path / "art" / "mine", "--cases", "example")[0] == 0
    code, output = _run("formulations", cfg)
    assert code == 0, output
    rows = {line.split()[0]: float(line.split()[1]) for line in output.splitlines()[2:]
            if re.match(r"\s+(native|time_major|layer_major)\s+\d", line)}
    assert rows["time_major"] <= 1e-5 and rows["native"] == 0.0


def test_trained_weights_are_never_silently_replaced_by_the_seed(tmp_path):
    _, ckpt = _checkpoint(tmp_path, "gru", 2, True, nest="")
    cfgs = tmp_path / "cfgs"
    cfgs.mkdir()
    raw = tmp_path / "raw.toml"
    assert _run("init", "--from-checkpoint", ckpt, "--out", raw)[0] == 0
    seeded = re.sub(r"\[weights\].*", "", raw.read_text(), flags=re.S)  # the same model without its [weights]
    (cfgs / "raw.toml").write_text(seeded)
    art = tmp_path / "art"
    assert _run("build", cfgs / "raw.toml", "--weights", ckpt, "--out", art)[0] == 0
    before = (art / "raw" / "model.onnx").read_bytes()
    assert _run("build", cfgs / "raw.toml", "--weights", ckpt, "--out", art, "--check")[0] == 0
    code, output = _run("build", cfgs, "--out", art)
    assert code == 2 and "was built from trained weights (ckpt.pt)" in output and "--reseed" in output
    assert (art / "raw" / "model.onnx").read_bytes() == before
    assert _run("build", cfgs, "--out", art, "--reseed")[0] == 0
    assert (art / "raw" / "model.onnx").read_bytes() != before


def test_a_config_with_weights_keeps_them_on_every_build_and_check(tmp_path):
    _, ckpt = _checkpoint(tmp_path, "rnn_tanh", 1, True, nest="net")
    cfg = tmp_path / "configs" / "mine.toml"
    cfg.parent.mkdir()
    assert _run("init", "--from-checkpoint", ckpt, "--prefix", "net.cells", "--out", cfg)[0] == 0
    for _ in range(2):
        assert _run("build", cfg.parent, "--out", tmp_path / "art")[0] == 0
    assert _run("build", cfg.parent, "--out", tmp_path / "art", "--check")[0] == 0
    origin = json.loads((tmp_path / "art" / "mine" / "manifest.json").read_text())["weights_origin"]
    assert origin["kind"] == "file" and origin["prefix"] == "net.cells."


def test_prefix_with_or_without_dot_and_suggestions(tmp_path):
    _, ckpt = _checkpoint(tmp_path, "gru", 2, True, nest="model.encoder")
    assert _run("init", "--from-checkpoint", ckpt, "--prefix", "model.encoder.cells")[0] == 0
    assert _run("init", "--from-checkpoint", ckpt, "--prefix", "model.encoder.cells.")[0] == 0
    code, output = _run("init", "--from-checkpoint", ckpt, "--prefix", "encoder.rnn")
    assert (code, output) == (2, f"Error: {ckpt}: no recurrent module under the prefix 'encoder.rnn.'; recurrent "
                                 "weights were found under: model.encoder.cells. (cell-stack)\n")


def test_a_stack_that_does_not_chain_names_the_layer(tmp_path):
    state = {"cells.0.weight_ih": torch.zeros(12, 3), "cells.0.weight_hh": torch.zeros(12, 4),
             "cells.1.weight_ih": torch.zeros(12, 5), "cells.1.weight_hh": torch.zeros(12, 4)}
    torch.save(state, tmp_path / "w.pt")
    code, output = _run("init", "--from-checkpoint", tmp_path / "w.pt")
    assert (code, output) == (2, f"Error: {tmp_path / 'w.pt'}: cells.1. takes inputs of size 5, but the layer before "
                                 "it gives 4: the cells do not form a stack\n")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script: how the archive is made, not read
def test_torchscript_archives_are_read_without_running_them(tmp_path):
    torch.manual_seed(7)
    user = torch.nn.LSTM(6, 9, 2).eval()
    torch.jit.save(torch.jit.script(user), tmp_path / "model.jit")
    code, output = _run("init", "--from-checkpoint", tmp_path / "model.jit", "--out", tmp_path / "jit.toml")
    assert code == 0, output
    assert _run("build", tmp_path / "jit.toml", "--out", tmp_path / "art")[0] == 0
    x = np.random.default_rng(2).standard_normal((5, 2, 6)).astype(np.float32)
    with torch.no_grad():
        expected = user(torch.from_numpy(x))[0].numpy()
    got = OrtRunner(tmp_path / "art" / "jit" / "model.onnx").infer({"input": x})["output"]
    assert np.abs(got - expected).max() < 1e-5


def test_lint_config_compares_the_whole_architecture(tmp_path):
    gru = tmp_path / "gru.toml"
    gru.write_text('cell = "gru"\ninput_size = 12\nhidden_size = 24\n')
    lstm = tmp_path / "lstm.toml"
    lstm.write_text('cell = "lstm"\ninput_size = 20\nhidden_size = 32\n')
    assert _run("build", gru, "--out", tmp_path / "art")[0] == 0
    code, output = _run("lint", tmp_path / "art" / "gru", "--config", lstm)
    assert code == 1
    for words in ("cell GRU where the config has LSTM", "hidden_size 24 where the config has 32",
                  "input size 12 where the config has 20", "graph outputs ['output', 'h_n'] where the contract has"):
        assert words in output, output


def test_float64_weights_are_cast_with_one_note_and_recorded_in_the_manifest(tmp_path):
    state = {k: v.double() for k, v in torch.nn.GRU(5, 8, 2).state_dict().items()}
    torch.save(state, tmp_path / "ckpt.pt")
    (tmp_path / "configs").mkdir()
    assert _run("init", "--from-checkpoint", tmp_path / "ckpt.pt", "--out", tmp_path / "configs" / "mine.toml")[0] == 0
    code, output = _run("build", tmp_path / "configs" / "mine.toml", "--out", tmp_path / "art")
    assert code == 0
    assert [line for line in output.splitlines() if "note:" in line] == ["  note: weights in float64 were cast to float32"]
    origin = json.loads((tmp_path / "art" / "mine" / "manifest.json").read_text())["weights_origin"]
    assert origin["cast_to_float32"] == ["float64"]


@pytest.mark.parametrize("kind", ["float16", "float64", "transposed", "views_of_one_buffer", "tied"])
def test_weights_are_loaded_as_float32_tensors_computing_what_the_checkpoint_does(tmp_path, kind):
    """The module is made without weights and takes the checkpoint's (cast to float32, made contiguous): no
    default initialisation is drawn and thrown away, and nothing of it is left."""
    from rnnexport.config import parse_config
    from rnnexport.export.checkpoints import module_from_weights

    source = torch.nn.LSTM(5, 8, 2, bidirectional=True).eval()
    state = source.state_dict()
    if kind == "transposed":  # a view in another memory order, as a checkpoint made by slicing holds
        state = {k: v.t().contiguous().t() if v.dim() == 2 else v for k, v in state.items()}
    elif kind == "views_of_one_buffer":  # as a model with flattened parameters saves them
        buffer = torch.cat([v.reshape(-1) for v in state.values()] + [torch.zeros(100_000)])
        offsets = np.cumsum([0] + [v.numel() for v in state.values()])
        state = {k: buffer[o:o + v.numel()].view(v.shape) for (k, v), o in zip(state.items(), offsets)}
    elif kind == "tied":
        state = {**state, "weight_hh_l1": state["weight_hh_l0"]}
    else:
        state = {k: v.to(getattr(torch, kind)) for k, v in state.items()}
    torch.save(state, tmp_path / "ckpt.pt")
    cfg = parse_config({"name": "m", "cell": "lstm", "input_size": 5, "hidden_size": 8, "num_layers": 2,
                        "bidirectional": True}, "test")
    module = module_from_weights(cfg, tmp_path / "ckpt.pt")[0]
    params = dict(module.named_parameters())
    assert all(p.dtype == torch.float32 and p.is_contiguous() and p.device.type == "cpu" for p in params.values())
    assert all(torch.equal(params[k], v.to(torch.float32)) for k, v in state.items())
    storages = [p.untyped_storage() for p in params.values()]  # each its own, of its own size: weights.pt holds them
    assert len({s.data_ptr() for s in storages}) == len(storages)
    assert all(s.nbytes() == p.numel() * 4 for s, p in zip(storages, params.values()))
    x = torch.randn(7, 3, 5)
    want = torch.nn.LSTM(5, 8, 2, bidirectional=True).eval()
    want.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    with torch.no_grad():
        assert torch.equal(module(x)[0], want(x)[0])
