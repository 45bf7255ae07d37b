"""Config → PyTorch recurrent module with weights that are a pure function of the config."""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import ModelConfig
from .errors import ArtifactError

RecurrentModule = nn.GRU | nn.LSTM | nn.RNN


def build_model(cfg: ModelConfig) -> RecurrentModule:
    """An ``nn.GRU``/``nn.LSTM``/``nn.RNN`` in eval mode, float32, on CPU.

    Weights are drawn from ``numpy.random.default_rng(cfg.seed)`` in ``named_parameters()`` order,
    uniform in ±1/sqrt(hidden_size) as PyTorch's own initialiser, so they do not depend on torch's
    global RNG state.
    """
    common = dict(
        input_size=cfg.input_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        bias=cfg.bias,
        batch_first=cfg.batch_first,
        dropout=cfg.dropout,
        bidirectional=cfg.bidirectional,
    )
    if cfg.cell == "gru":
        module = nn.GRU(**common)
    elif cfg.cell == "lstm":
        module = nn.LSTM(**common)
    else:
        module = nn.RNN(nonlinearity=cfg.cell.removeprefix("rnn_"), **common)
    fill_deterministic(module, cfg.seed)
    return module.eval()


def fill_deterministic(module: nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded uniform values in ±1/sqrt(hidden_size)."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(module.hidden_size)
    with torch.no_grad():
        for _, param in module.named_parameters():
            values = rng.uniform(-bound, bound, size=tuple(param.shape)).astype(np.float32)
            param.copy_(torch.from_numpy(values))


def config_for_module(module: RecurrentModule, name: str = "model") -> dict:
    """The architecture keys of a config that describe ``module`` (for ``parse_config``)."""
    cell = {"GRU": "gru", "LSTM": "lstm", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}[module.mode]
    return dict(
        name=name,
        cell=cell,
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``torch.save`` file, loaded with ``weights_only=True`` (a file that would run code
    on load is refused)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a folder, expected a weights file") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a pickle of tensors at all
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            reason = detail[1].strip() if detail else str(exc).strip().splitlines()[0]
            raise ArtifactError(f"{path}: not a PyTorch weights file ({reason})") from None
        raise ArtifactError(f"{path}: refused: not a plain weights file; loading it would run code "
                            f"(it references {found[1]})") from None
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, zipfile errors, ...
        raise ArtifactError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path}: expected a state_dict (a dict of tensors), found {type(state).__name__}")
    return state


def module_with_weights(cfg: ModelConfig, path: str | Path) -> RecurrentModule:
    """The config's module with the weights from ``path``; every missing, extra or misshapen key is named."""
    module = build_model(cfg)
    state = load_state_dict(path)
    expected = module.state_dict()
    problems = [f"missing {k} (expected {list(v.shape)})" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k} {list(v.shape)}" for k, v in state.items() if k not in expected]
    problems += [f"{k}: expected shape {list(expected[k].shape)}, found {list(v.shape)}"
                 for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        raise ArtifactError(f"{path}: weights do not fit the config {cfg.name}: " + "; ".join(problems))
    with torch.no_grad():
        module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return module.eval()
