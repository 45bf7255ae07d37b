"""One eager run of a whole model at its example inputs, before anything is exported: which recurrent modules and
cells it calls and how often, the weights each one computes with at that moment (weight-normed, dropped-out or
otherwise derived weights are not graph leaves, so they are read here, as tensors), and what the model hands
``pack_padded_sequence``.

    found = probe_model(model, example_inputs)
    found.calls[index], found.weights[index], found.packs

The recurrent modules are numbered as ``recurrent_modules`` lists them; ``whole_model`` replaces the stand-in of
module ``index`` with a native graph built from ``native_layer(module, found.weights[index])``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from rnnexport.errors import ExportError

LAYERS = (nn.GRU, nn.LSTM, nn.RNN)
CELLS = (nn.GRUCell, nn.LSTMCell, nn.RNNCell)
CELL_LAYER = {nn.GRUCell: nn.GRU, nn.LSTMCell: nn.LSTM, nn.RNNCell: nn.RNN}
CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def recurrent_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every GRU/LSTM/RNN and GRUCell/LSTMCell/RNNCell inside ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS + CELLS)]


def is_cell(module: nn.Module) -> bool:
    return isinstance(module, CELLS)


@dataclass
class Pack:
    """One ``pack_padded_sequence`` call: the lengths it was given and whether it demanded them sorted."""

    lengths: Any
    enforce_sorted: bool


@dataclass
class Probe:
    """What one eager forward at the example inputs did (see the module docstring)."""

    calls: dict[int, int] = field(default_factory=dict)
    weights: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    packs: list[Pack] = field(default_factory=list)


def probe_model(model: nn.Module, example_inputs: tuple) -> Probe:
    """Run ``model`` once at ``example_inputs`` under ``torch.no_grad()`` and record what ``Probe`` holds.

    Raises ``ExportError`` when the model fails on its own example inputs (the export would fail the same way)."""
    found = Probe()
    modules = recurrent_modules(model)
    hooks = [module.register_forward_pre_hook(_recorder(found, index, module))
             for index, (_, module) in enumerate(modules)]
    original = nn.utils.rnn.pack_padded_sequence

    def pack(input: torch.Tensor, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True) -> Any:
        found.packs.append(Pack(lengths, enforce_sorted))
        return original(input, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)

    try:
        with patched(model, {original: pack}), torch.no_grad():
            model(*example_inputs)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"export_model: the model fails on its own example inputs: {type(exc).__name__}: "
                          f"{(str(exc).strip().splitlines() or [''])[0][:300]}") from None
    finally:
        for hook in hooks:
            hook.remove()
    return found


def _recorder(found: Probe, index: int, module: nn.Module) -> Callable[..., None]:
    """A forward pre-hook, registered after the module's own (weight norm, say), so the weights it reads are the
    ones the call computes with."""
    def record(_: nn.Module, args: Any) -> None:
        found.calls[index] = found.calls.get(index, 0) + 1
        if index not in found.weights:
            found.weights[index] = {name: getattr(module, name).detach().clone()
                                    for name in weight_names(module) if getattr(module, name, None) is not None}
    return record


def weight_names(module: nn.Module) -> list[str]:
    """The names of the weights a recurrent module or cell computes with, as attributes of the module."""
    if is_cell(module):
        return [n for n in CELL_WEIGHTS if n.startswith("weight") or module.bias]
    return list(cast(nn.RNNBase, module)._flat_weights_names)


def native_layer(module: nn.Module, weights: dict[str, torch.Tensor]) -> nn.RNNBase:
    """A plain float32 ``nn.GRU``/``nn.LSTM``/``nn.RNN`` that computes what ``module`` computed with ``weights``: a
    cell becomes a one-layer module (its weights under ``_l0`` names), a subclass its base class. Flags PyTorch's
    cells take as ints (``LSTMCell(..., 1)``, as NVIDIA's Tacotron2 writes it) become the bools the layers need."""
    if is_cell(module):
        cls = next(layer for cell, layer in CELL_LAYER.items() if isinstance(module, cell))
        extra = {"nonlinearity": module.nonlinearity} if cls is nn.RNN else {}
        native: nn.RNNBase = cls(module.input_size, module.hidden_size, 1, bias=bool(module.bias), **extra)
        state = {f"{name}_l0": value for name, value in weights.items()}
    else:
        rnn: Any = module
        cls = next(layer for layer in LAYERS if isinstance(module, layer))
        extra = {"nonlinearity": rnn.nonlinearity} if cls is nn.RNN else {}
        native = cls(rnn.input_size, rnn.hidden_size, rnn.num_layers, bias=bool(rnn.bias),
                     batch_first=bool(rnn.batch_first), bidirectional=bool(rnn.bidirectional), **extra)
        state = dict(weights)
    missing = set(native.state_dict()) - set(state)
    if missing:
        raise ExportError(f"export_model: the weights of {type(module).__name__} could not be read "
                          f"({sorted(missing)[0]} is not a tensor when the module runs)")
    native.load_state_dict({k: v.float() for k, v in state.items()})
    return native.float().eval()


@contextlib.contextmanager
def patched(model: nn.Module, swaps: dict[Any, Any]) -> Iterator[None]:
    """Each function of ``swaps`` replaced by its value, in ``torch.nn.utils.rnn`` and in the model's own modules
    (which may have imported it by name), for the ``with`` block."""
    rnn_utils = torch.nn.utils.rnn
    namespaces = [rnn_utils.__dict__] + [vars(sys.modules[type(m).__module__]) for m in model.modules()
                                         if type(m).__module__ in sys.modules]
    replaced = []
    for namespace in {id(n): n for n in namespaces}.values():
        for key, value in list(namespace.items()):
            if callable(value) and any(value is original for original in swaps):
                replaced.append((namespace, key, value))
                namespace[key] = swaps[value]
    try:
        yield
    finally:
        for namespace, key, value in replaced:
            namespace[key] = value
