"""Other formulations of the same stacked RNN, all holding the very same weights as the native module.

- ``native``: ``nn.GRU``/``nn.LSTM``/``nn.RNN`` with ``num_layers=N``.
- ``stacked``: N single-layer modules, each over the whole sequence.
- ``layer_major``: cells (``nn.GRUCell``/...), each layer over the whole sequence, then the next layer.
  A layer's input projection W_ih·x_t + b_ih is one matrix product for all time steps.
- ``time_major``: the same cells, each time step through all layers before the next step. The input of
  layer l at step t exists only after layer l-1 ran step t, so the projection is one product per step.
- ``scripted``: a TorchScript stack of layers written out in PyTorch's equations, in the style of
  PyTorch's reference custom LSTM.

Every formulation has ``to_native()``, which writes its weights back into a native module: the exporter
uses it, so each formulation exports to the same graph.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Tuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnexport.config import config_for_module
from rnnexport.export.builders import native_module

FORMULATIONS = ("native", "stacked", "layer_major", "time_major", "scripted")
UNIDIRECTIONAL_ONLY = ("time_major", "scripted")
BIDIRECTIONAL_NOTE = ("in a bidirectional stack, the backward direction of layer 2 starts at the last step, "
                      "so it needs all of layer 1's outputs before its first step")
CELL_CLASSES = {"GRU": nn.GRUCell, "LSTM": nn.LSTMCell, "RNN_TANH": nn.RNNCell, "RNN_RELU": nn.RNNCell}
PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _native_like(native: Any, **changes: Any) -> nn.Module:
    """A new native module with ``native``'s architecture (optionally changed), float32, eval mode."""
    kwargs = config_for_module(native)
    del kwargs["name"]
    kwargs.update(changes)
    if kwargs["num_layers"] == 1:
        kwargs["dropout"] = 0.0  # PyTorch warns about dropout on a single layer; there is none to apply
    return native_module(kwargs.pop("cell"), **kwargs)


def _suffixes(module: nn.Module) -> list[str]:
    return ["", "_reverse"] if module.bidirectional else [""]


def _copy_params(dst: nn.Module, dst_suffix: str, src: nn.Module, src_suffix: str, bias: bool) -> None:
    """Copy ``weight_ih``, ``weight_hh`` (and both biases when ``bias``) from ``src``'s parameters named
    ``p + src_suffix`` into ``dst``'s named ``p + dst_suffix``: the one place formulations move weights."""
    for p in PARAMS[: 4 if bias else 2]:
        getattr(dst, p + dst_suffix).data.copy_(getattr(src, p + src_suffix).data)


def _split_state(hx: Any, is_lstm: bool) -> tuple[Tensor | None, Tensor | None]:
    if hx is None:
        return None, None
    return (hx[0], hx[1]) if is_lstm else (hx, None)


def _finish(y: Tensor, hs: list[Tensor], cs: list[Tensor], is_lstm: bool) -> tuple[Tensor, Any]:
    h_n = torch.stack(hs)
    return y, ((h_n, torch.stack(cs)) if is_lstm else h_n)


class _Formulation(nn.Module):
    """Shared shape handling: batch_first in and out, initial states split per layer and direction."""

    def __init__(self, native: nn.RNNBase):
        super().__init__()
        self.mode, self.hidden_size = native.mode, native.hidden_size
        self.input_size, self.num_layers = native.input_size, native.num_layers
        self.bidirectional, self.batch_first, self.bias = native.bidirectional, native.batch_first, native.bias
        self.dropout = float(native.dropout)
        self.dirs = 2 if native.bidirectional else 1
        self.is_lstm = native.mode == "LSTM"

    def _states(self, x: Tensor, hx: Any) -> tuple[Tensor, Tensor]:
        """(h0, c0) as [layers*dirs, batch, hidden], zeros where not given."""
        h0, c0 = _split_state(hx, self.is_lstm)
        zeros = x.new_zeros(self.num_layers * self.dirs, x.shape[1], self.hidden_size)
        return (zeros if h0 is None else h0), (zeros if c0 is None else c0)

    def _between_layers(self, y: Tensor, layer: int, masks: list[Tensor] | None) -> Tensor:
        """Dropout after every layer but the last: the given masks, or fresh ones in training mode."""
        if layer == self.num_layers - 1:
            return y
        if masks is not None:
            return y * masks[layer]
        return F.dropout(y, self.dropout, self.training)


class Stacked(_Formulation):
    """N single-layer native modules, each over the whole sequence."""

    def __init__(self, native: nn.RNNBase):
        super().__init__(native)
        self.layers = nn.ModuleList()
        for layer in range(self.num_layers):
            single = _native_like(native, num_layers=1, batch_first=False,
                                  input_size=native.input_size if layer == 0 else self.dirs * self.hidden_size)
            for sfx in _suffixes(native):
                _copy_params(single, f"_l0{sfx}", native, f"_l{layer}{sfx}", native.bias)
            self.layers.append(single)

    def forward(self, x: Tensor, hx: Any = None, masks: list[Tensor] | None = None) -> tuple[Tensor, Any]:
        x = x.transpose(0, 1) if self.batch_first else x
        h0, c0 = self._states(x, hx)
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer, module in enumerate(self.layers):
            rows = slice(layer * self.dirs, (layer + 1) * self.dirs)
            state = (h0[rows], c0[rows]) if self.is_lstm else h0[rows]
            x, final = module(x, state)
            hs.extend((final[0] if self.is_lstm else final).unbind(0))
            cs.extend(final[1].unbind(0) if self.is_lstm else [])
            x = self._between_layers(x, layer, masks)
        return _finish(x.transpose(0, 1) if self.batch_first else x, hs, cs, self.is_lstm)

    def to_native(self) -> nn.Module:
        native = _native_like(self)
        for layer, module in enumerate(self.layers):
            for sfx in _suffixes(self):
                _copy_params(native, f"_l{layer}{sfx}", module, f"_l0{sfx}", self.bias)
        return native.eval()


def cell_step(mode: str, gi: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, bias_hh: Tensor | None
              ) -> Tuple[Tensor, Tensor]:
    """One time step in PyTorch's equations, given the input projection ``gi`` = W_ih·x_t + b_ih.
    Returns (h, c); ``c`` passes through unchanged except for LSTM. TorchScript compiles it as it is."""
    gh = F.linear(h, weight_hh, bias_hh)
    if mode == "GRU":
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, c
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "RNN_RELU":
        return torch.relu(gi + gh), c
    return torch.tanh(gi + gh), c


class _Cells(_Formulation):
    """Cells ``cells[layer * dirs + direction]`` holding the native module's weights."""

    def __init__(self, native: nn.RNNBase):
        super().__init__(native)
        self.cells = nn.ModuleList()
        cell_class = CELL_CLASSES[native.mode]
        extra = {"nonlinearity": native.mode.removeprefix("RNN_").lower()} if cell_class is nn.RNNCell else {}
        for layer in range(self.num_layers):
            for sfx in _suffixes(native):
                size = native.input_size if layer == 0 else self.dirs * self.hidden_size
                cell = cell_class(size, self.hidden_size, bias=native.bias, **extra)
                _copy_params(cell, "", native, f"_l{layer}{sfx}", native.bias)
                self.cells.append(cell)

    def _cell(self, index: int) -> nn.RNNCellBase:
        return cast(nn.RNNCellBase, self.cells[index])

    def _step(self, cell: nn.RNNCellBase, gi: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return cell_step(self.mode, gi, h, c, cell.weight_hh, cell.bias_hh)

    def to_native(self) -> nn.Module:
        native = _native_like(self)
        for index, cell in enumerate(self.cells):
            layer, direction = divmod(index, self.dirs)
            _copy_params(native, f"_l{layer}{_suffixes(self)[direction]}", cell, "", self.bias)
        return native.eval()


class LayerMajor(_Cells):
    """Each layer over the whole sequence (its input projection in one product), then the next layer."""

    def forward(self, x: Tensor, hx: Any = None, masks: list[Tensor] | None = None) -> tuple[Tensor, Any]:
        x = x.transpose(0, 1) if self.batch_first else x
        h0, c0 = self._states(x, hx)
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.dirs):
                index = layer * self.dirs + direction
                cell = self._cell(index)
                gi_all = F.linear(x, cell.weight_ih, cell.bias_ih)  # [seq, batch, gates*hidden] at once
                h, c = h0[index], c0[index]
                steps = range(x.shape[0] - 1, -1, -1) if direction else range(x.shape[0])
                ys: dict[int, Tensor] = {}
                for t in steps:
                    h, c = self._step(cell, gi_all[t], h, c)
                    ys[t] = h
                outputs.append(torch.stack([ys[t] for t in range(x.shape[0])]))
                hs.append(h)
                cs.append(c)
            x = self._between_layers(torch.cat(outputs, dim=2), layer, masks)
        return _finish(x.transpose(0, 1) if self.batch_first else x, hs, cs, self.is_lstm)


class TimeMajor(_Cells):
    """Each time step through all layers before the next step (unidirectional stacks only)."""

    def __init__(self, native: nn.RNNBase):
        if native.bidirectional:
            raise ValueError(f"time_major is not defined: {BIDIRECTIONAL_NOTE}")
        super().__init__(native)

    def forward(self, x: Tensor, hx: Any = None, masks: list[Tensor] | None = None) -> tuple[Tensor, Any]:
        x = x.transpose(0, 1) if self.batch_first else x
        h0, c0 = self._states(x, hx)
        hs, cs = list(h0.unbind(0)), list(c0.unbind(0))
        ys = []
        for t in range(x.shape[0]):
            inp = x[t]
            for layer in range(len(self.cells)):
                cell = self._cell(layer)
                gi = F.linear(inp, cell.weight_ih, cell.bias_ih)  # one product per step and layer
                hs[layer], cs[layer] = self._step(cell, gi, hs[layer], cs[layer])
                step_masks = None if masks is None else [m[t] for m in masks]
                inp = self._between_layers(hs[layer], layer, step_masks)
            ys.append(inp)
        return _finish(torch.stack(ys).transpose(0, 1) if self.batch_first else torch.stack(ys), hs, cs, self.is_lstm)


class ScriptLayer(nn.Module):
    """One unidirectional layer over the whole sequence, as PyTorch's reference custom LSTM's layers."""

    __constants__ = ["mode"]

    def __init__(self, mode: str, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor):
        super().__init__()
        self.mode = mode
        self.weight_ih = nn.Parameter(weight_ih.clone())
        self.weight_hh = nn.Parameter(weight_hh.clone())
        self.bias_ih = nn.Parameter(bias_ih.clone())
        self.bias_hh = nn.Parameter(bias_hh.clone())

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        gi_all = F.linear(x, self.weight_ih, self.bias_ih)
        outputs: List[Tensor] = []
        for t in range(x.size(0)):
            h, c = cell_step(self.mode, gi_all[t], h, c, self.weight_hh, self.bias_hh)
            outputs.append(h)
        return torch.stack(outputs), h, c


class ScriptStack(nn.Module):
    def __init__(self, layers: List[ScriptLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        i = 0
        for layer in self.layers:
            x, h, c = layer(x, h0[i], c0[i])
            hs.append(h)
            cs.append(c)
            i += 1
        return x, torch.stack(hs), torch.stack(cs)


def scripted_unavailable() -> str | None:
    """Why the scripted formulation cannot be built with the installed torch, or None."""
    if not callable(getattr(torch.jit, "script", None)):
        return f"torch {torch.__version__} has no torch.jit.script"
    return None


class Scripted(_Formulation):
    """A ``torch.jit.script`` stack of layers (unidirectional, eval only); biases are zeros without bias."""

    def __init__(self, native: nn.RNNBase):
        if native.bidirectional:
            raise ValueError(f"scripted is not defined: {BIDIRECTIONAL_NOTE}")
        super().__init__(native)
        layers = []
        for layer in range(self.num_layers):
            w_ih, w_hh = (getattr(native, f"{p}_l{layer}").data for p in PARAMS[:2])
            zeros = w_ih.new_zeros(w_ih.shape[0])
            b_ih, b_hh = ((getattr(native, f"{p}_l{layer}").data if native.bias else zeros) for p in PARAMS[2:])
            layers.append(ScriptLayer(native.mode, w_ih, w_hh, b_ih, b_hh))
        with warnings.catch_warnings():
            # torch.jit.script is deprecated in torch 2.13 but still works; this row exists to show it.
            warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=DeprecationWarning)
            self.core = torch.jit.script(ScriptStack(layers))

    def forward(self, x: Tensor, hx: Any = None, masks: list[Tensor] | None = None) -> tuple[Tensor, Any]:
        x = x.transpose(0, 1) if self.batch_first else x
        h0, c0 = self._states(x, hx)
        y, h_n, c_n = self.core(x, h0, c0)
        y = y.transpose(0, 1) if self.batch_first else y
        return y, ((h_n, c_n) if self.is_lstm else h_n)

    def to_native(self) -> nn.Module:
        native = _native_like(self)
        for layer, module in enumerate(self.core.layers):
            _copy_params(native, f"_l{layer}", module, "", self.bias)
        return native.eval()


def make_formulation(native: nn.RNNBase, kind: str) -> nn.Module:
    """``native``'s weights in formulation ``kind`` (one of ``FORMULATIONS``), in eval mode.

    Raises ValueError for time_major/scripted on a bidirectional stack."""
    builders = {"stacked": Stacked, "layer_major": LayerMajor, "time_major": TimeMajor, "scripted": Scripted}
    if kind == "native":
        return native
    return builders[kind](native).eval()
