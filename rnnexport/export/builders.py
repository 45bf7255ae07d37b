"""Config → PyTorch recurrent module with weights that are a pure function of the config."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnexport.config import ModelConfig

RecurrentModule = nn.GRU | nn.LSTM | nn.RNN


def build_model(cfg: ModelConfig) -> RecurrentModule:
    """An ``nn.GRU``/``nn.LSTM``/``nn.RNN`` in eval mode, float32, on CPU.

    Weights are drawn from ``numpy.random.default_rng(cfg.seed)`` in ``named_parameters()`` order,
    uniform in ±1/sqrt(hidden_size) as PyTorch's own initialiser, so they do not depend on torch's
    global RNG state.
    """
    module = native_module(cfg.cell, **_sizes(cfg))
    fill_deterministic(module, cfg.seed)
    return module.eval()


def unfilled_model(cfg: ModelConfig) -> RecurrentModule:
    """The config's module with no weights yet (on PyTorch's meta device, so nothing is drawn or allocated), for
    ``load_state_dict(weights, assign=True)``: its ``state_dict()`` gives the names and shapes due."""
    return native_module(cfg.cell, device="meta", **_sizes(cfg))


def _sizes(cfg: ModelConfig) -> dict[str, Any]:
    return {"input_size": cfg.input_size, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "bias": cfg.bias, "batch_first": cfg.batch_first, "dropout": cfg.dropout,
            "bidirectional": cfg.bidirectional}


def native_module(cell: str, **kwargs: Any) -> RecurrentModule:
    """``nn.GRU``, ``nn.LSTM`` or ``nn.RNN`` for a config's ``cell``, with ``nn.RNN``'s nonlinearity set."""
    if cell == "gru":
        return nn.GRU(**kwargs)
    if cell == "lstm":
        return nn.LSTM(**kwargs)
    return nn.RNN(nonlinearity=cell.removeprefix("rnn_"), **kwargs)


def fill_deterministic(module: nn.RNNBase, seed: int) -> None:
    """Overwrite every parameter with seeded uniform values in ±1/sqrt(hidden_size)."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(module.hidden_size)
    with torch.no_grad():
        for _, param in module.named_parameters():
            values = rng.uniform(-bound, bound, size=tuple(param.shape)).astype(np.float32)
            param.copy_(torch.from_numpy(values))
