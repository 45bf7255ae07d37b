"""One layer and direction of a recurrent module recomputed in float64, as PyTorch computes it or as an ONNX node
with other attributes would: the reference of per-layer localisation and the hypotheses of the diagnosis.

The equations are ONNX's (onnx/reference/ops/op_lstm.py, op_gru.py, op_rnn.py) with PyTorch's gate order:
activations f, g, h at their positions, ``clip`` applied to the gates' pre-activations (as ONNX Runtime reads
it: an LSTM's c is not clipped before h, measured against ONNX Runtime 1.32), LSTM's ``input_forget``
(f = 1 − i), GRU's ``linear_before_reset``; ragged rows as ``pack_padded_sequence`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rnnexport.contract import C0, H0, INPUT, LENGTHS

GATE_NAMES = {"GRU": "rzn", "LSTM": "ifgo", "RNN_TANH": "h", "RNN_RELU": "h"}
DIRECTIONS = ("forward", "backward")
# What PyTorch's modules compute, as ONNX activations at positions f, g, h (one per position the op has).
TORCH_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN_TANH": ("Tanh",),
                     "RNN_RELU": ("Relu",)}
# ONNX's activation functions with their default alpha and beta (the RNN operators' schema).
ACTIVATION_DEFAULTS: dict[str, tuple[float, float]] = {
    "Relu": (0.0, 0.0), "Tanh": (0.0, 0.0), "Sigmoid": (0.0, 0.0), "Affine": (1.0, 0.0), "LeakyRelu": (0.01, 0.0),
    "ThresholdedRelu": (1.0, 0.0), "ScaledTanh": (1.0, 1.0), "HardSigmoid": (0.2, 0.5), "Elu": (1.0, 0.0),
    "Softsign": (0.0, 0.0), "Softplus": (0.0, 0.0)}


def activate(name: str, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """ONNX's activation ``name`` (``ACTIVATION_DEFAULTS``) of ``x``."""
    if name == "Relu":
        return np.maximum(x, 0.0)
    if name == "Tanh":
        return np.tanh(x)
    if name == "Sigmoid":  # without overflow at a masked graph's ±1e4
        return np.exp(-np.logaddexp(0.0, -x))
    if name == "Affine":
        return alpha * x + beta
    if name == "LeakyRelu":
        return np.where(x >= 0, x, alpha * x)
    if name == "ThresholdedRelu":
        return np.where(x > alpha, x, 0.0)
    if name == "ScaledTanh":
        return alpha * np.tanh(beta * x)
    if name == "HardSigmoid":
        return np.clip(alpha * x + beta, 0.0, 1.0)
    if name == "Elu":
        return np.where(x >= 0, x, alpha * (np.exp(np.minimum(x, 0.0)) - 1.0))
    if name == "Softsign":
        return x / (1.0 + np.abs(x))
    if name == "Softplus":
        return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)
    raise ValueError(f"activation {name!r} is not one of ONNX's recurrent activations")


@dataclass(frozen=True)
class Cell:
    """What a node computes besides its weights: ``activations`` [(name, alpha, beta)] at positions f, g, h,
    ``clip`` (None: none), ``input_forget`` (LSTM) and ``linear_before_reset`` (GRU)."""

    activations: tuple[tuple[str, float, float], ...]
    clip: float | None = None
    input_forget: bool = False
    linear_before_reset: bool = True

    @classmethod
    def torch(cls, mode: str) -> Cell:
        return cls(tuple((name, *ACTIVATION_DEFAULTS[name]) for name in TORCH_ACTIVATIONS[mode]))

    def act(self, position: int, x: np.ndarray, clipped: bool = True) -> np.ndarray:
        if self.clip is not None and clipped:
            x = np.clip(x, -self.clip, self.clip)
        name, alpha, beta = self.activations[position]
        return activate(name, x, alpha, beta)

    def with_activation(self, position: int, activation: tuple[str, float, float]) -> Cell:
        acts = list(self.activations)
        acts[position] = activation
        return replace(self, activations=tuple(acts))


@dataclass(frozen=True)
class Weights:
    """One layer and direction, float64, in PyTorch's gate order: W (w_ih), R (w_hh), Wb (b_ih), Rb (b_hh)."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    peepholes: np.ndarray | None = None  # an LSTM node's P for this direction [3H], ONNX's order i, o, f

    def permuted(self, which: tuple[str, ...], perm: tuple[int, ...]) -> Weights:
        """The gate blocks of the tensors ``which`` (among "W", "R", "Wb", "Rb") in the order ``perm``."""
        def p(a: np.ndarray, name: str) -> np.ndarray:
            return np.concatenate([np.split(a, len(perm))[k] for k in perm]) if name in which else a
        return Weights(p(self.w_ih, "W"), p(self.w_hh, "R"), p(self.b_ih, "Wb"), p(self.b_hh, "Rb"), self.peepholes)


def run_direction(mode: str, x: np.ndarray, w: Weights, h: np.ndarray, c: np.ndarray, lengths: np.ndarray,
                  reverse: bool, cell: Cell | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction of one layer over time-major ``x`` [T, B, in] (packed: row b runs its first ``lengths[b]``
    steps, the backward direction from its own last step; outputs past a row's length are 0), computing as
    ``cell`` (default: PyTorch's). Returns (y [T, B, H], final h [B, H], final c [B, H])."""
    cell = cell or Cell.torch(mode)
    steps = x.shape[0]
    y = np.zeros((steps, x.shape[1], w.w_hh.shape[1]))
    # a hypothesis (a ReLU where a sigmoid was due, say) may overflow: inf and NaN are results here, compared
    # as such, not warnings
    with np.errstate(over="ignore", invalid="ignore"):
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            live = (t < lengths)[:, None]
            gi = x[t] @ w.w_ih.T + w.b_ih
            if mode == "GRU":
                hr, hz, hn = np.split(w.w_hh, 3)
                br, bz, bn = np.split(w.b_hh, 3)
                ir, iz, i_n = np.split(gi, 3, axis=1)
                r, z = cell.act(0, ir + h @ hr.T + br), cell.act(0, iz + h @ hz.T + bz)
                recurrent = r * (h @ hn.T + bn) if cell.linear_before_reset else (r * h) @ hn.T + bn
                new_h, new_c = (1 - z) * cell.act(1, i_n + recurrent) + z * h, c
            elif mode == "LSTM":
                i, f, g, o = np.split(gi + h @ w.w_hh.T + w.b_hh, 4, axis=1)
                p_i, p_o, p_f = np.split(w.peepholes, 3) if w.peepholes is not None else (0.0, 0.0, 0.0)
                i, g = cell.act(0, i + p_i * c), cell.act(1, g)
                f = 1.0 - i if cell.input_forget else cell.act(0, f + p_f * c)
                new_c = f * c + i * g
                o = cell.act(0, o + p_o * new_c)
                new_h = o * cell.act(2, new_c, clipped=False)  # ONNX Runtime clips the gates, not c before h
            else:
                new_h, new_c = cell.act(0, gi + h @ w.w_hh.T + w.b_hh), c
            h, c = np.where(live, new_h, h), np.where(live, new_c, c)
            y[t] = np.where(live, h, 0.0)
    return y, h, c


def module_weights(module: Any, layer: int, direction: int) -> Weights:
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    get = lambda name: getattr(module, name + sfx).detach().double().numpy()  # noqa: E731
    zeros = np.zeros(get("weight_hh").shape[0])
    return Weights(get("weight_ih"), get("weight_hh"), get("bias_ih") if module.bias else zeros,
                   get("bias_hh") if module.bias else zeros)


@dataclass
class Reference:
    """PyTorch's per-layer results for one input: ``ys[layer][direction]`` [T, B, H], the final states
    ``hs``/``cs[layer][direction]`` [B, H], each layer's input, and the feeds' lengths and initial states
    [L*D, B, H] (zeros where the graph takes none; ``given_state``: whether it takes them)."""

    lengths: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    given_state: bool
    inputs: list[np.ndarray] = field(default_factory=list)
    ys: list[list[np.ndarray]] = field(default_factory=list)
    hs: list[list[np.ndarray]] = field(default_factory=list)
    cs: list[list[np.ndarray]] = field(default_factory=list)


def reference(module: Any, feeds: dict[str, np.ndarray]) -> Reference:
    """PyTorch's per-layer results (float64) for ``feeds``."""
    x = feeds[INPUT].astype(np.float64)
    x = x.transpose(1, 0, 2) if module.batch_first else x
    steps, batch = x.shape[:2]
    dirs = 2 if module.bidirectional else 1
    lengths = feeds[LENGTHS].astype(np.int64) if LENGTHS in feeds else np.full(batch, steps)
    zeros = np.zeros((module.num_layers * dirs, batch, module.hidden_size))
    ref = Reference(lengths, feeds[H0].astype(np.float64) if H0 in feeds else zeros,
                    feeds[C0].astype(np.float64) if C0 in feeds else zeros, H0 in feeds)
    for layer in range(module.num_layers):
        ref.inputs.append(x)
        runs = [run_direction(module.mode, x, module_weights(module, layer, d), ref.h0[layer * dirs + d],
                              ref.c0[layer * dirs + d], lengths, reverse=d == 1) for d in range(dirs)]
        ref.ys.append([r[0] for r in runs])
        ref.hs.append([r[1] for r in runs])
        ref.cs.append([r[2] for r in runs])
        x = np.concatenate(ref.ys[-1], axis=2)
    return ref
