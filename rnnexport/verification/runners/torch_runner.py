"""PyTorch itself as a runner: the float64 oracle, and float32 on CPU and CUDA."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from rnnexport.contract import C0, H0, LENGTHS, output_names
from rnnexport.errors import RunnerUnavailable
from rnnexport.verification.runners import ORACLE, TORCH_CUDA, torch_name

# Time steps PyTorch runs at once on a longer sequence, so its own buffers (a layer's input projection for every
# step, each step's output kept for the stack at the end) stay a fixed size however long the sequence: at 100,000
# steps of gru_2layer (batch 4) the float64 oracle's peak fell from 760 MB to 200 MB, its 102 MB of outputs included.
CHUNK_STEPS = 4096
# A ragged batch longer than CHUNK_STEPS is packed in groups of rows whose packed run keeps no more than twice its
# output or this many bytes, whichever is more: each group costs a whole pass of per-step overhead (row by row, a
# 5,000-step batch of 64 took 5x as long as packed whole), so groups are as large as memory allows.
PACKED_BYTES = 1 << 28


class TorchRunner:
    """A copy of ``module`` in ``dtype`` on ``device``, run in eval mode under ``torch.no_grad()``.

    ``sequence_lens`` is applied as PyTorch does for ragged batches: ``pack_padded_sequence``, then
    ``pad_packed_sequence`` back to the full length (outputs past a row's length are zero).
    TF32 matmuls are off unless ``allow_tf32``; the setting is recorded in ``settings``.
    """

    kind = "torch"

    def __init__(self, module: nn.Module, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 allow_tf32: bool = False, name: str | None = None):
        self.torch_device, self.dtype, self.allow_tf32 = torch.device(device), dtype, allow_tf32
        self.device = self.torch_device.type
        self.module = copy.deepcopy(module).to(self.torch_device, dtype).eval()
        self.precision = str(dtype).removeprefix("torch.")
        self.name = name or torch_name(self.precision, self.device)
        self.settings = {"device": str(self.torch_device), "dtype": str(dtype), "allow_tf32": allow_tf32,
                         "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}

    def __enter__(self) -> TorchRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.torch_device, self.dtype)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._tensor(feeds["input"])
        state = None
        if H0 in feeds:
            h0 = self._tensor(feeds[H0])
            state = (h0, self._tensor(feeds[C0])) if C0 in feeds else h0
        with torch.no_grad(), _tf32(self.torch_device, self.allow_tf32):
            if LENGTHS in feeds and not _full_lengths(feeds[LENGTHS], x.shape[self._time_axis]):
                ragged = self._row_by_row if x.shape[self._time_axis] > CHUNK_STEPS else self._ragged
                y, final = ragged(x, state, feeds[LENGTHS])
            else:
                y, final = self._forward(x, state)
        finals = final if isinstance(final, tuple) else (final,)
        names = output_names(len(finals) == 2)
        return {n: t.detach().cpu().numpy() for n, t in zip(names, (y, *finals))}

    @functools.cache  # noqa: B019 (one runner, a handful of layers: kept as long as the runner)
    def _one_direction(self, layer: int, direction: int) -> nn.RNNBase:
        return one_direction(cast(nn.RNNBase, self.module), layer, direction)

    @property
    def _time_axis(self) -> int:
        return 1 if getattr(self.module, "batch_first", False) else 0

    def _forward(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """``module(x, state)``, in pieces of ``CHUNK_STEPS`` steps on longer sequences (the same recurrence, the
        state carried from piece to piece): a unidirectional stack runs each piece through every layer; a
        bidirectional one runs layer by layer, the backward direction from the last piece to the first."""
        steps = x.shape[self._time_axis]
        if steps <= CHUNK_STEPS or not isinstance(self.module, nn.RNNBase):
            return self.module(x, state)
        if self.module.bidirectional:
            y, final = _layer_by_layer(self.module, x.transpose(0, 1) if self._time_axis else x, state,
                                       self._one_direction)
            return (y.transpose(0, 1) if self._time_axis else y), final
        output = x.new_empty((*x.shape[:2], self.module.hidden_size))
        for piece, out in zip(torch.split(x, CHUNK_STEPS, self._time_axis),
                              torch.split(output, CHUNK_STEPS, self._time_axis)):
            y, state = self.module(piece, state)
            out.copy_(y)
        return output, state

    def _row_by_row(self, x: torch.Tensor, state: Any, lengths: np.ndarray) -> tuple[torch.Tensor, Any]:
        """What ``_ragged`` computes, for a sequence too long to pack whole: groups of rows packed together while
        their packed run's buffers stay within twice the output (or ``PACKED_BYTES``), and a row alone in pieces
        over its own length (``_forward``) where even one row would not. A packed row is independent of the others;
        outputs past a row's length are zero."""
        time_axis, batch_axis = self._time_axis, 1 - self._time_axis
        module = cast(nn.RNNBase, self.module)
        directions = 2 if module.bidirectional else 1
        y = x.new_zeros((*x.shape[:2], directions * module.hidden_size))
        # a packed run keeps every step's input projection and output: (gates + 1) × hidden × directions values
        gates = cast(torch.Tensor, module.weight_ih_l0).shape[0]
        row_bytes = x.shape[time_axis] * (gates + module.hidden_size) * directions * x.element_size()
        group = max(1, max(PACKED_BYTES, 2 * y.numel() * y.element_size()) // row_bytes)
        finals: list[Any] = []
        for first in range(0, len(lengths), group):
            rows = slice(first, first + group)
            count = len(lengths[rows])
            part = None if state is None else _rows(state, rows)
            if count > 1:
                out, final = self._ragged(x.narrow(batch_axis, first, count), part, lengths[rows])
                y.narrow(batch_axis, first, count).copy_(out)
            else:
                length = int(lengths[first])
                out, final = self._forward(x.narrow(batch_axis, first, 1).narrow(time_axis, 0, length), part)
                y.narrow(batch_axis, first, 1).narrow(time_axis, 0, length).copy_(out)
            finals.append(final)
        if isinstance(finals[0], tuple):
            return y, tuple(torch.cat([f[k] for f in finals], 1) for k in range(len(finals[0])))
        return y, torch.cat(finals, 1)

    def _ragged(self, x: torch.Tensor, state: Any, lengths: np.ndarray) -> tuple[torch.Tensor, Any]:
        batch_first = getattr(self.module, "batch_first", False)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, torch.from_numpy(lengths.astype(np.int64)), batch_first=batch_first, enforce_sorted=False
        )
        y, final = self.module(packed, state)
        total = x.shape[1 if batch_first else 0]
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=batch_first, total_length=total)
        return y, final


def _rows(state: Any, rows: slice) -> Any:
    """Batch rows ``rows`` of an initial state (``h0``, or ``(h0, c0)``)."""
    return tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]


def _full_lengths(lengths: np.ndarray, steps: int) -> bool:
    """Every row runs the whole sequence: ``sequence_lens`` changes nothing."""
    return bool(np.all(np.asarray(lengths) == steps))


def _layer_by_layer(module: nn.RNNBase, x: torch.Tensor, state: Any,
                    one_direction: Callable[[int, int], nn.RNNBase]) -> tuple[torch.Tensor, Any]:
    """A bidirectional ``module`` over time-major ``x`` one layer and one direction at a time (``one_direction``),
    each in pieces of ``CHUNK_STEPS`` steps: the same recurrence as ``module(x, state)``; a layer's output is the
    next one's input."""
    lstm = isinstance(module, nn.LSTM)
    hidden, batch = module.hidden_size, x.shape[1]
    if state is None:
        zeros = x.new_zeros((2 * module.num_layers, batch, hidden))
        state = (zeros, zeros) if lstm else zeros
    states = state if lstm else (state,)
    finals: list[list[torch.Tensor]] = [[] for _ in states]
    for layer in range(module.num_layers):
        y = x.new_empty((x.shape[0], batch, 2 * hidden))
        for direction in (0, 1):
            one = one_direction(layer, direction)
            index = 2 * layer + direction
            carried: Any = tuple(s[index:index + 1] for s in states)
            carried = carried if lstm else carried[0]
            starts = range(0, x.shape[0], CHUNK_STEPS)
            for start in (reversed(starts) if direction else starts):
                piece = x[start:start + CHUNK_STEPS]
                if direction:
                    out, carried = one(piece.flip(0), carried)
                    out = out.flip(0)
                else:
                    out, carried = one(piece, carried)
                y[start:start + CHUNK_STEPS, :, direction * hidden:(direction + 1) * hidden] = out
            for kept, value in zip(finals, carried if lstm else (carried,)):
                kept.append(value)
        x = y
    final = tuple(torch.cat(kept) for kept in finals)
    return x, final if lstm else final[0]


def one_direction(module: nn.RNNBase, layer: int, direction: int) -> nn.RNNBase:
    """One layer and direction of ``module`` as a one-layer, unidirectional ``nn.GRU``/``nn.LSTM``/``nn.RNN`` (the
    base class, whatever subclass ``module`` is) sharing its weights' storage. Made on the meta device, so no
    random initialisation draws from torch's generator."""
    kind = next(k for k in (nn.LSTM, nn.GRU, nn.RNN) if isinstance(module, k))
    extra = {"nonlinearity": module.nonlinearity} if kind is nn.RNN else {}
    size = module.input_size if layer == 0 else 2 * module.hidden_size
    one = kind(size, module.hidden_size, 1, bias=module.bias, device="meta", **extra)
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    for name in [name for name, _ in one.named_parameters()]:
        source = getattr(module, name.removesuffix("_l0") + suffix)
        setattr(one, name, nn.Parameter(source.detach(), requires_grad=False))
    return one.eval()


class Float64Oracle(TorchRunner):
    """The module's weights in float64 on CPU: the reference every runner is measured against.

    PyTorch, not ONNX Runtime: ONNX Runtime's CPU GRU/LSTM kernels have no float64 implementation.
    """

    def __init__(self, module: nn.Module):
        super().__init__(module, "cpu", torch.float64, name=ORACLE)

    def expected(self, case: Any) -> dict[str, np.ndarray]:
        """The oracle's outputs of a ``cases.Case`` (all of it at once, also for a streaming case)."""
        return self.infer(case.feeds)


def torch_cuda(module: nn.Module) -> TorchRunner:
    """PyTorch float32 on CUDA; not available where torch sees no CUDA device."""
    if not torch.cuda.is_available():
        raise RunnerUnavailable(TORCH_CUDA, f"torch {torch.__version__} sees no CUDA device")
    return TorchRunner(module, "cuda")


class _tf32:
    """Set TF32 for CUDA matmuls and cuDNN for one call, then restore the previous setting."""

    def __init__(self, device: torch.device, allow: bool):
        self.active = device.type == "cuda"
        self.allow = allow

    def __enter__(self) -> None:
        if self.active:
            self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.allow

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` for the ``with`` block (0: left as they are), and its
    inter-op threads lowered to ``threads`` for good where they can still be: PyTorch lets a process set those
    once, before any inter-op work has started (``torch.set_num_interop_threads``)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
        if torch.get_num_interop_threads() > threads:
            with contextlib.suppress(RuntimeError):  # set already, or inter-op work has begun: they stay
                torch.set_num_interop_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
