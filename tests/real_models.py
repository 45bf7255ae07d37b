"""Models as people write them, for tests/test_real_models.py. A module of its own: pytest rewrites the asserts of
test modules into code torch.export cannot trace, and a model's own assert must reach the exporter as written."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TupleState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.LSTM(4, 6, 1, batch_first=True), nn.Linear(6, 2)

    def forward(self, x, state):
        y, (h, c) = self.rnn(x, state)
        return self.head(y), (h, c)


class SortedPacking(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 6, batch_first=True, bidirectional=True)

    def forward(self, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True)
        y, h = self.rnn(packed)
        return nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])[0], h


class CellStep(nn.Module):
    """A decoder step (Tacotron2, silero-vad): one LSTMCell call, its state in and out."""

    def __init__(self):
        super().__init__()
        self.cell, self.head = nn.LSTMCell(4, 6), nn.Linear(6, 2)

    def forward(self, x, h, c):
        h, c = self.cell(x, (h, c))
        return self.head(h), h, c


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cells = nn.ModuleList([nn.GRUCell(4, 6), nn.GRUCell(6, 6)])

    def forward(self, x):
        h = [x.new_zeros(x.shape[0], 6) for _ in self.cells]
        outs = []
        for t in range(x.shape[1]):
            inp = x[:, t]
            for i, cell in enumerate(self.cells):
                h[i] = inp = cell(inp, h[i])
            outs.append(inp)
        return torch.stack(outs, 1)


class CalledTwice(nn.Module):
    """One GRU run over the input, then again over its own output from its final state (a two-pass refiner)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 4, batch_first=True)

    def forward(self, x):
        y, h = self.rnn(x)
        return self.rnn(y, h)


class WeightNormed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.utils.parametrizations.weight_norm(nn.GRU(4, 6, batch_first=True), "weight_hh_l0")

    def forward(self, x):
        return self.rnn(x)[0]


class HookWeightNormed(nn.Module):
    def __init__(self):
        super().__init__()
        with pytest.warns(FutureWarning):  # torch deprecates the hook form, which models still ship with
            self.rnn = nn.utils.weight_norm(nn.GRU(4, 6, batch_first=True), "weight_hh_l0")

    def forward(self, x):
        return self.rnn(x)[0]


class Asserting(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 6, batch_first=True)

    def forward(self, x):
        y = self.rnn(x)[0]
        assert y.abs().max() < 100, "exploded"
        return y


class Crnn(nn.Module):
    """A CRNN for OCR: a 3×3 convolution over an image 8 high; at 1 pixel wide PyTorch refuses it."""

    def __init__(self):
        super().__init__()
        self.conv, self.rnn = nn.Conv2d(1, 4, 3), nn.GRU(4 * 6, 8, batch_first=True)

    def forward(self, image):
        features = self.conv(image).permute(0, 3, 1, 2).flatten(2)
        return self.rnn(features)[0]


class TokenIdsPerRow(nn.Module):
    """An integer [batch] input that is a token id per row (a speaker id, say), not lengths."""

    def __init__(self):
        super().__init__()
        self.emb, self.rnn = nn.Embedding(10, 4), nn.GRU(4, 6)

    def forward(self, x, speaker):
        return self.rnn(x + self.emb(speaker))[0]


class SqueezesTime(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 6, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0].squeeze(1)


class LstmCellStack(nn.Module):
    """Two LSTMCells stepped over a time-major sequence, states as tuples, the first layer's h and the last
    layer's c returned too (an attention decoder's recurrent core, without the attention)."""

    def __init__(self):
        super().__init__()
        self.cells = nn.ModuleList([nn.LSTMCell(4, 6), nn.LSTMCell(6, 5)])

    def forward(self, x, h0, c0):
        hs, cs = [h0, h0.new_zeros(h0.shape[0], 5)], [c0, c0.new_zeros(c0.shape[0], 5)]
        outs = []
        for t in range(x.shape[0]):
            inp = x[t]
            for i, cell in enumerate(self.cells):
                hs[i], cs[i] = cell(inp, (hs[i], cs[i]))
                inp = hs[i]
            outs.append(inp)
        return torch.stack(outs), hs[0], cs[1]


class HeadInsideLoop(nn.Module):
    """A cell stepped over time with a head applied at every step: no layer over a sequence."""

    def __init__(self):
        super().__init__()
        self.cell, self.head = nn.GRUCell(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h, outs = x.new_zeros(x.shape[0], 6), []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(self.head(h))
        return torch.stack(outs, 1)


class PartialLoop(nn.Module):
    """A cell stepped over all steps but the last: no layer over the whole sequence."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(4, 6)

    def forward(self, x):
        h, outs = None, []
        for t in range(x.shape[1] - 1):
            h = self.cell(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, 1)


class UnbindLoop(nn.Module):
    """An LSTMCell iterating a time-major tensor (``for x_t in x``), returning the outputs and an nn.LSTM-style h_n."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(4, 6)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[1], 6)
        outs = []
        for x_t in x:
            h, c = self.cell(x_t, (h, c))
            outs.append(h)
        return torch.stack(outs), h.unsqueeze(0)


class BosThenStep(nn.Module):
    """One cell called twice without a loop: a start-of-sequence step, then the real one."""

    def __init__(self):
        super().__init__()
        self.bos, self.cell = nn.Parameter(torch.randn(4)), nn.GRUCell(4, 6)

    def forward(self, x, h):
        h = self.cell(self.bos.expand(x.shape[0], 4), h)
        return self.cell(x, h)


class ConvThenGru(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.rnn = nn.Conv1d(4, 6, 3), nn.GRU(6, 5, batch_first=True)

    def forward(self, x):
        return self.rnn(self.conv(x).transpose(1, 2))[0]
