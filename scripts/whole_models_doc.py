"""Write docs/whole-models.md: a catalogue of whole recurrent models, each exported by rnnexport.export_model, by
torch.onnx.export(dynamo=True) and by dynamo=False, and run in ONNX Runtime (CPU) and OpenVINO (CPU, f32) at the
example shape, 1 step, batch 1, 10x the steps and another batch, against the float64 oracle, measured in one run.

The architectures are built here (``architectures()``; the tests import them from this file): three generic ones
(a token tagger, a speech-style encoder, a streaming LSTM) and re-creations of published recurrent models, written
as their public code writes them, with small sizes and seeded random weights. Each class's docstring names what it
re-creates. The cases (shapes, inputs, the shortest length a model accepts) are verify_model's own.

Usage: python scripts/whole_models_doc.py      (needs onnxscript and openvino, in the dev extra)
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rnnexport.config import Tolerance  # noqa: E402
from rnnexport.export.whole_model import explain, export_model, torch_dims  # noqa: E402
from rnnexport.verification.whole_model import WholeModelRunner, input_specs, whole_model_cases  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------------
# The three generic architectures


class Tagger(nn.Module):
    """Embedding → 2-layer bidirectional LSTM (batch first, under encoder.rnn) → Linear."""

    def __init__(self, vocab: int = 100, emb: int = 16, hidden: int = 24, tags: int = 5):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.encoder = nn.Module()
        self.encoder.rnn = nn.LSTM(emb, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.encoder.rnn(self.emb(tokens))
        return self.head(y)


class SpeechEncoder(nn.Module):
    """Conv1d front end over [batch, features, time] → 3-layer GRU → Linear; returns logits and h_n."""

    def __init__(self, feats: int = 20, channels: int = 32, hidden: int = 32, out: int = 10):
        super().__init__()
        self.conv = nn.Conv1d(feats, channels, 3, padding=1)
        self.gru = nn.GRU(channels, hidden, num_layers=3)
        self.proj = nn.Linear(hidden, out)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.conv(features)).permute(2, 0, 1)
        y, h = self.gru(x)
        return self.proj(y), h


class Streaming(nn.Module):
    """A 2-layer LSTM with its state in and out: one chunk per call, the state carried by the caller."""

    def __init__(self, feats: int = 8, hidden: int = 16):
        super().__init__()
        self.lstm = nn.LSTM(feats, hidden, num_layers=2)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        y, (h, c) = self.lstm(x, (h0, c0))
        return self.head(y), h, c


# ---------------------------------------------------------------------------------------------------------------------
# Re-created published architectures (small sizes, random weights)


class SequenceWise(nn.Module):
    """deepspeech.pytorch's SequenceWise: a module applied to [T*N, H], reshaped back to [T, N, H]."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, n = x.size(0), x.size(1)
        x = x.view(t * n, -1)
        x = self.module(x)
        x = x.view(t, n, -1)
        return x


class BatchRNN(nn.Module):
    """deepspeech.pytorch's BatchRNN: SequenceWise BatchNorm1d, a bidirectional GRU, the directions summed."""

    def __init__(self, input_size: int, hidden_size: int, batch_norm: bool = True):
        super().__init__()
        self.batch_norm = SequenceWise(nn.BatchNorm1d(input_size)) if batch_norm else None
        self.rnn = nn.GRU(input_size=input_size, hidden_size=hidden_size, bidirectional=True, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        x, h = self.rnn(x)
        x = x.view(x.size(0), x.size(1), 2, -1).sum(2).view(x.size(0), x.size(1), -1)  # (TxNxH*2) -> (TxNxH)
        return x


class DeepSpeech2(nn.Module):
    """DeepSpeech2 (Amodei et al. 2016) as SeanNaren/deepspeech.pytorch writes it: Conv2d, BiGRUs, a Linear."""

    def __init__(self, n_freq: int = 16, hidden: int = 24, classes: int = 12):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=(11, 11), stride=(2, 2), padding=(5, 5)),
            nn.BatchNorm2d(8),
            nn.Hardtanh(0, 20, inplace=True),
            nn.Conv2d(8, 8, kernel_size=(11, 11), stride=(2, 1), padding=(5, 5)),
            nn.BatchNorm2d(8),
            nn.Hardtanh(0, 20, inplace=True))
        rnn_input_size = int(math.floor((n_freq + 2 * 5 - 11) / 2) + 1)
        rnn_input_size = int(math.floor(rnn_input_size + 2 * 5 - 11) / 2 + 1)
        rnn_input_size *= 8
        self.rnns = nn.Sequential(BatchRNN(rnn_input_size, hidden, batch_norm=False), BatchRNN(hidden, hidden))
        self.fc = nn.Sequential(SequenceWise(nn.Sequential(nn.BatchNorm1d(hidden), nn.Linear(hidden, classes,
                                                                                              bias=False))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        sizes = x.size()
        x = x.view(sizes[0], sizes[1] * sizes[2], sizes[3])  # Collapse feature dimension
        x = x.transpose(1, 2).transpose(0, 1).contiguous()  # TxNxH
        x = self.rnns(x)
        x = self.fc(x)
        x = x.transpose(0, 1)
        return x.log_softmax(dim=-1)  # InferenceBatchSoftmax, as at inference


class Tacotron2Encoder(nn.Module):
    """Tacotron 2 text encoder (Shen et al. 2018) as NVIDIA/tacotron2 writes it: Conv1d stack, packed BiLSTM."""

    def __init__(self, n_symbols: int = 40, embedding_dim: int = 32, kernel_size: int = 5, n_convolutions: int = 3):
        super().__init__()
        self.embedding = nn.Embedding(n_symbols, embedding_dim)
        std = math.sqrt(2.0 / (n_symbols + embedding_dim))
        val = math.sqrt(3.0) * std  # uniform bounds for std
        self.embedding.weight.data.uniform_(-val, val)
        convolutions = []
        for _ in range(n_convolutions):
            conv_layer = nn.Sequential(
                nn.Conv1d(embedding_dim, embedding_dim, kernel_size=kernel_size, stride=1,
                          padding=int((kernel_size - 1) / 2), dilation=1),
                nn.BatchNorm1d(embedding_dim))
            convolutions.append(conv_layer)
        self.convolutions = nn.ModuleList(convolutions)
        self.lstm = nn.LSTM(embedding_dim, int(embedding_dim / 2), 1, batch_first=True, bidirectional=True)

    def forward(self, text_inputs: torch.Tensor, input_lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(text_inputs).transpose(1, 2)
        for conv in self.convolutions:
            x = F.dropout(F.relu(conv(x)), 0.5, self.training)
        x = x.transpose(1, 2)
        input_lengths = input_lengths.cpu()
        x = nn.utils.rnn.pack_padded_sequence(x, input_lengths, batch_first=True)
        outputs, _ = self.lstm(x)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True)
        return outputs


class Prenet(nn.Module):
    """NVIDIA/tacotron2's Prenet: Linear layers without bias, ReLU and dropout."""

    def __init__(self, in_dim: int, sizes: list[int]):
        super().__init__()
        in_sizes = [in_dim] + sizes[:-1]
        self.layers = nn.ModuleList([nn.Linear(in_size, out_size, bias=False)
                                     for (in_size, out_size) in zip(in_sizes, sizes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.layers:
            x = F.dropout(F.relu(linear(x)), p=0.5, training=self.training)
        return x


class Tacotron2DecoderStep(nn.Module):
    """Tacotron 2 decoder step as NVIDIA/tacotron2's Decoder.decode: two LSTMCells, (h, c) states in and out."""

    def __init__(self, n_mel_channels: int = 8, prenet_dim: int = 16, attention_rnn_dim: int = 32,
                 decoder_rnn_dim: int = 32, encoder_embedding_dim: int = 16):
        super().__init__()
        self.prenet = Prenet(n_mel_channels, [prenet_dim, prenet_dim])
        self.attention_rnn = nn.LSTMCell(prenet_dim + encoder_embedding_dim, attention_rnn_dim)
        self.decoder_rnn = nn.LSTMCell(attention_rnn_dim + encoder_embedding_dim, decoder_rnn_dim, 1)
        self.linear_projection = nn.Linear(decoder_rnn_dim + encoder_embedding_dim, n_mel_channels)
        self.gate_layer = nn.Linear(decoder_rnn_dim + encoder_embedding_dim, 1, bias=True)

    def forward(self, decoder_input: torch.Tensor, attention_context: torch.Tensor,
                attention_state: tuple[torch.Tensor, torch.Tensor], decoder_state: tuple[torch.Tensor, torch.Tensor]):
        decoder_input = self.prenet(decoder_input)
        cell_input = torch.cat((decoder_input, attention_context), -1)
        attention_hidden, attention_cell = self.attention_rnn(cell_input, attention_state)
        attention_hidden = F.dropout(attention_hidden, 0.1, self.training)
        decoder_input = torch.cat((attention_hidden, attention_context), -1)
        decoder_hidden, decoder_cell = self.decoder_rnn(decoder_input, decoder_state)
        decoder_hidden = F.dropout(decoder_hidden, 0.1, self.training)
        decoder_hidden_attention_context = torch.cat((decoder_hidden, attention_context), dim=1)
        decoder_output = self.linear_projection(decoder_hidden_attention_context)
        gate_prediction = self.gate_layer(decoder_hidden_attention_context)
        return decoder_output, gate_prediction, (attention_hidden, attention_cell), (decoder_hidden, decoder_cell)


class RNNTPredictor(nn.Module):
    """RNN-T prediction network (Graves 2012) as NeMo's RNNTDecoder.predict: Embedding, LSTM, (h, c) in and out."""

    def __init__(self, vocab_size: int = 28, pred_n_hidden: int = 32, pred_rnn_layers: int = 2):
        super().__init__()
        self.blank_idx = vocab_size
        self.prediction = nn.ModuleDict({
            "embed": nn.Embedding(vocab_size + 1, pred_n_hidden, padding_idx=self.blank_idx),
            "dec_rnn": nn.LSTM(pred_n_hidden, pred_n_hidden, pred_rnn_layers)})

    def forward(self, y: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        y = self.prediction["embed"](y)  # (B, U) -> (B, U, H)
        y = y.transpose(0, 1)  # (U, B, H)
        g, hid = self.prediction["dec_rnn"](y, state)
        g = g.transpose(0, 1)  # (B, U, H)
        return g, hid


class STFT(nn.Module):
    """silero-vad's STFT: reflect padding, a Conv1d with a fixed Fourier basis, the magnitude."""

    def __init__(self, filter_length: int = 64, hop_length: int = 32):
        super().__init__()
        self.filter_length, self.hop_length = filter_length, hop_length
        fourier = torch.fft.fft(torch.eye(filter_length, dtype=torch.float64))
        cutoff = filter_length // 2 + 1
        window = torch.hann_window(filter_length, periodic=True, dtype=torch.float64)
        basis = torch.cat([fourier.real[:cutoff], fourier.imag[:cutoff]]) * window
        self.register_buffer("forward_basis_buffer", basis[:, None, :].float())

    def forward(self, input_data: torch.Tensor) -> torch.Tensor:
        input_data = F.pad(input_data, (0, self.filter_length // 4), mode="reflect")
        forward_transform = F.conv1d(input_data.unsqueeze(1), self.forward_basis_buffer, stride=self.hop_length)
        cutoff = self.filter_length // 2 + 1
        real_part, imag_part = forward_transform[:, :cutoff, :], forward_transform[:, cutoff:, :]
        return torch.sqrt(real_part ** 2 + imag_part ** 2)


class SileroVAD(nn.Module):
    """silero-vad v5-like streaming VAD: STFT, a Conv1d encoder over one chunk, an LSTMCell, state in and out."""

    def __init__(self, filter_length: int = 64, channels: int = 32):
        super().__init__()
        self.stft = STFT(filter_length, filter_length // 2)
        strides = (1, 2, 2, 2)
        sizes = [filter_length // 2 + 1] + [channels] * len(strides)
        self.encoder = nn.Sequential(*[nn.Sequential(nn.Conv1d(i, o, 3, stride=s, padding=1), nn.ReLU())
                                       for i, o, s in zip(sizes, sizes[1:], strides)])
        self.rnn = nn.LSTMCell(channels, channels)
        self.decoder = nn.Sequential(nn.Dropout(0.1), nn.ReLU(), nn.Conv1d(channels, 1, kernel_size=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stft(x)
        x = self.encoder(x)  # [batch, channels, 1]: one frame per chunk
        x = x.squeeze(-1)
        h, c = self.rnn(x, (state[0], state[1]))
        x = h.unsqueeze(-1)
        state = torch.stack([h, c])
        x = self.decoder(x)
        x = x.squeeze(1).mean(dim=1).unsqueeze(1)
        return x, state


class BidirectionalLSTM(nn.Module):
    """crnn.pytorch's BidirectionalLSTM: a bidirectional LSTM and a Linear on each step."""

    def __init__(self, nIn: int, nHidden: int, nOut: int):
        super().__init__()
        self.rnn = nn.LSTM(nIn, nHidden, bidirectional=True)
        self.embedding = nn.Linear(nHidden * 2, nOut)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        recurrent, _ = self.rnn(input)
        T, b, h = recurrent.size()
        t_rec = recurrent.view(T * b, h)
        output = self.embedding(t_rec)  # [T * b, nOut]
        output = output.view(T, b, -1)
        return output


class CRNN(nn.Module):
    """CRNN for OCR (Shi et al. 2015) as meijieru/crnn.pytorch writes it: CNN over the image, width as the seq."""

    def __init__(self, imgH: int = 16, nc: int = 1, nclass: int = 11, nh: int = 16):
        super().__init__()
        assert imgH % 16 == 0, "imgH has to be a multiple of 16"
        ks, ps, ss, nm = [3, 3, 3, 2], [1, 1, 1, 0], [1, 1, 1, 1], [8, 16, 16, 32]
        cnn = nn.Sequential()

        def convRelu(i: int, batchNormalization: bool = False) -> None:
            nIn = nc if i == 0 else nm[i - 1]
            nOut = nm[i]
            cnn.add_module(f"conv{i}", nn.Conv2d(nIn, nOut, ks[i], ss[i], ps[i]))
            if batchNormalization:
                cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(nOut))
            cnn.add_module(f"relu{i}", nn.ReLU(True))

        convRelu(0)
        cnn.add_module("pooling0", nn.MaxPool2d(2, 2))  # 8 x w/2
        convRelu(1)
        cnn.add_module("pooling1", nn.MaxPool2d(2, 2))  # 4 x w/4
        convRelu(2, True)
        cnn.add_module("pooling2", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))  # 2 x w/4+1
        convRelu(3, True)  # 1 x w/4
        self.cnn = cnn
        self.rnn = nn.Sequential(BidirectionalLSTM(nm[3], nh, nh), BidirectionalLSTM(nh, nh, nclass))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        conv = self.cnn(input)
        b, c, h, w = conv.size()
        assert h == 1, "the height of conv must be 1"
        conv = conv.squeeze(2)
        conv = conv.permute(2, 0, 1)  # [w, b, c]
        output = self.rnn(conv)
        return output


class WordLanguageModel(nn.Module):
    """pytorch/examples word_language_model RNNModel: Embedding, dropout, LSTM with hidden in and out, decoder."""

    def __init__(self, ntoken: int = 50, ninp: int = 24, nhid: int = 24, nlayers: int = 2, dropout: float = 0.2,
                 tie_weights: bool = True):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, input: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden


class CharRNN(nn.Module):
    """char-rnn (Karpathy 2015) as spro/char-rnn.pytorch writes it: one character per call, GRU hidden in and out."""

    def __init__(self, input_size: int = 40, hidden_size: int = 24, output_size: int = 40, n_layers: int = 2):
        super().__init__()
        self.encoder = nn.Embedding(input_size, hidden_size)
        self.rnn = nn.GRU(hidden_size, hidden_size, n_layers)
        self.decoder = nn.Linear(hidden_size, output_size)

    def forward(self, input: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = input.size(0)
        encoded = self.encoder(input)
        output, hidden = self.rnn(encoded.view(1, batch_size, -1), hidden)
        output = self.decoder(output.view(batch_size, -1))
        return output, hidden


class WeightDropout(nn.Module):
    """fastai's WeightDropout: the wrapped LSTM's weight_hh_l0 recomputed from a raw copy on every call."""

    def __init__(self, module: nn.Module, weight_p: float, layer_names: tuple[str, ...] = ("weight_hh_l0",)):
        super().__init__()
        self.module, self.weight_p, self.layer_names = module, weight_p, layer_names
        for layer in self.layer_names:
            # Makes a copy of the weights of the selected layers.
            w = getattr(self.module, layer)
            delattr(self.module, layer)
            self.register_parameter(f"{layer}_raw", nn.Parameter(w.data))
            setattr(self.module, layer, w.clone())
            if isinstance(self.module, nn.RNNBase):
                self.module.flatten_parameters = self._do_nothing

    def _setweights(self) -> None:
        """Apply dropout to the raw weights."""
        for layer in self.layer_names:
            raw_w = getattr(self, f"{layer}_raw")
            w = F.dropout(raw_w, p=self.weight_p) if self.training else raw_w.clone()
            setattr(self.module, layer, w)

    def forward(self, *args: Any) -> Any:
        self._setweights()
        with warnings.catch_warnings():
            # To avoid the warning that comes because the weights aren't flattened.
            warnings.simplefilter("ignore", category=UserWarning)
            return self.module(*args)

    def _do_nothing(self) -> None:
        pass


class AWDLSTM(nn.Module):
    """AWD-LSTM (Merity et al. 2017) as fastai's AWD_LSTM: 3 LSTMs of different sizes, weight-dropped, tied decoder."""

    def __init__(self, vocab_sz: int = 60, emb_sz: int = 16, n_hid: int = 32, n_layers: int = 3, pad_token: int = 1,
                 hidden_p: float = 0.2, input_p: float = 0.6, weight_p: float = 0.5):
        super().__init__()
        self.n_layers = n_layers
        self.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=pad_token)
        self.encoder.weight.data.uniform_(-0.1, 0.1)
        self.rnns = nn.ModuleList([self._one_rnn(emb_sz if layer == 0 else n_hid,
                                                 n_hid if layer != n_layers - 1 else emb_sz, weight_p)
                                   for layer in range(n_layers)])
        self.input_dp = nn.Dropout(input_p)
        self.hidden_dps = nn.ModuleList([nn.Dropout(hidden_p) for _ in range(n_layers)])
        self.decoder = nn.Linear(emb_sz, vocab_sz)
        self.decoder.weight = self.encoder.weight  # tie_weights

    def _one_rnn(self, n_in: int, n_out: int, weight_p: float) -> nn.Module:
        """Return one of the inner rnn"""
        rnn = nn.LSTM(n_in, n_out, 1, batch_first=True)
        return WeightDropout(rnn, weight_p)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        output = self.input_dp(self.encoder(inp))
        for layer, (rnn, hid_dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            output, _ = rnn(output)
            if layer != self.n_layers - 1:
                output = hid_dp(output)
        return self.decoder(output)


class DeepAR(nn.Module):
    """DeepAR (Salinas et al. 2019) as GluonTS writes it: mean-scaled target + covariates, LSTM, Gaussian head."""

    def __init__(self, num_feat: int = 4, num_cells: int = 24, num_layers: int = 2, dropout_rate: float = 0.1,
                 minimum_scale: float = 1e-10):
        super().__init__()
        self.minimum_scale = minimum_scale
        self.rnn = nn.LSTM(input_size=1 + num_feat + 1, hidden_size=num_cells, num_layers=num_layers,
                           dropout=dropout_rate, batch_first=True)
        self.proj_loc = nn.Linear(num_cells, 1)
        self.proj_scale = nn.Linear(num_cells, 1)

    def forward(self, past_target: torch.Tensor, time_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = past_target.abs().mean(dim=1, keepdim=True).clamp(min=self.minimum_scale)  # MeanScaler
        scaled = past_target / scale
        log_scale = scale.log().unsqueeze(1).expand(-1, past_target.shape[1], -1)
        inputs = torch.cat((scaled.unsqueeze(-1), time_feat, log_scale), dim=-1)
        output, _ = self.rnn(inputs)
        loc = self.proj_loc(output).squeeze(-1) * scale
        sigma = F.softplus(self.proj_scale(output)).squeeze(-1) * scale
        return loc, sigma


class CNNBlock(nn.Module):
    """speechbrain's CRDNN CNN block: two Conv2d + LayerNorm + LeakyReLU over [B, T, F, C], max-pooled over F."""

    def __init__(self, in_channels: int, out_channels: int, n_freq: int):
        super().__init__()
        self.conv_1 = nn.Conv2d(in_channels, out_channels, (3, 3), padding="same")
        self.norm_1 = nn.LayerNorm([n_freq, out_channels])
        self.conv_2 = nn.Conv2d(out_channels, out_channels, (3, 3), padding="same")
        self.norm_2 = nn.LayerNorm([n_freq, out_channels])
        self.act = nn.LeakyReLU()
        self.drop = nn.Dropout2d(0.15)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, F, C]
        x = self.act(self.norm_1(self.conv_1(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))
        x = self.act(self.norm_2(self.conv_2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))
        x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=(1, 2)).permute(0, 2, 3, 1)  # pool_axis=2
        return self.drop(x)


class CRDNN(nn.Module):
    """speechbrain's CRDNN lobe: CNN blocks over [batch, time, freq], a bidirectional LSTM, DNN blocks, a Linear."""

    def __init__(self, n_freq: int = 16, cnn_channels: tuple[int, int] = (8, 16), rnn_neurons: int = 24,
                 dnn_neurons: int = 32, n_out: int = 10):
        super().__init__()
        self.CNN = nn.Sequential(CNNBlock(1, cnn_channels[0], n_freq), CNNBlock(cnn_channels[0], cnn_channels[1],
                                                                                n_freq // 2))
        self.RNN = nn.LSTM(n_freq // 4 * cnn_channels[1], rnn_neurons, num_layers=1, batch_first=True,
                           bidirectional=True)
        self.DNN = nn.ModuleList([nn.ModuleDict({"linear": nn.Linear(i, dnn_neurons), "norm": nn.BatchNorm1d(
            dnn_neurons), "act": nn.LeakyReLU(), "dropout": nn.Dropout(0.15)}) for i in (2 * rnn_neurons,
                                                                                          dnn_neurons)])
        self.output = nn.Linear(dnn_neurons, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, F]
        x = self.CNN(x.unsqueeze(-1))
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        x, _ = self.RNN(x)
        for block in self.DNN:
            x = block["linear"](x)
            x = block["norm"](x.transpose(1, 2)).transpose(1, 2)  # speechbrain's BatchNorm1d over [B, T, F]
            x = block["dropout"](block["act"](x))
        return self.output(x).log_softmax(dim=-1)


class BahdanauAttention(nn.Module):
    """The PyTorch seq2seq translation tutorial's BahdanauAttention: additive scores, softmax, bmm."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
        scores = scores.squeeze(2).unsqueeze(1)
        weights = F.softmax(scores, dim=-1)
        context = torch.bmm(weights, keys)
        return context, weights


class AttnDecoderStep(nn.Module):
    """Seq2seq attention decoder step (Bahdanau et al. 2015; PyTorch's translation tutorial) with a GRUCell."""

    def __init__(self, hidden_size: int = 24, output_size: int = 30, dropout_p: float = 0.1):
        super().__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRUCell(2 * hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input: torch.Tensor, hidden: torch.Tensor, encoder_outputs: torch.Tensor):
        embedded = self.dropout(self.embedding(input))  # [batch, hidden]
        query = hidden.unsqueeze(1)  # [batch, 1, hidden]
        context, attn_weights = self.attention(query, encoder_outputs)
        input_gru = torch.cat((embedded, context.squeeze(1)), dim=1)
        hidden = self.gru(input_gru, hidden)
        output = F.log_softmax(self.out(hidden), dim=-1)
        return output, hidden, attn_weights.squeeze(1)


class TwoPassRefiner(nn.Module):
    """Two-pass refiner: one BiGRU called twice, sharing weights (RAFT's weight-tied refinement, Teed & Deng 2020)."""

    def __init__(self, feats: int = 32, hidden: int = 16, out: int = 4):
        super().__init__()
        self.gru = nn.GRU(feats, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, _ = self.gru(x)
        refined, _ = self.gru(x + first)  # the same module again, on its own residual-refined output
        return self.head(refined)


class TimeSequencePrediction(nn.Module):
    """pytorch/examples time_sequence_prediction's Sequence: two LSTMCells stepped in a Python loop over time."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        outputs = []
        h_t = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        c_t = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        h_t2 = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        c_t2 = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        return torch.cat(outputs, dim=1)


def _as_trained(model: nn.Module) -> nn.Module:
    """The model as training leaves it (seeded): BatchNorm running statistics drawn, so that the norms are not
    identities, and WeightDropout's raw weights moved by a step, so that the wrapped LSTM's weight attribute is
    stale until a forward recomputes it (an exporter must read the weights the forward computes with)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
            if isinstance(module, WeightDropout):
                for layer in module.layer_names:
                    raw = getattr(module, f"{layer}_raw")
                    raw.add_(0.1 * torch.randn_like(raw))
    return model.eval()


def architectures() -> dict[str, tuple]:
    """name → (model, example inputs, dynamic dims by name, input names, output names), seeded. Inputs and dims
    may nest (a state tuple); names are those of the flattened inputs and outputs."""
    torch.manual_seed(0)
    archs = {
        "tagger": (Tagger().eval(), (torch.randint(0, 100, (4, 12)),), ({0: "batch", 1: "seq"},), ["tokens"],
                   ["logits"]),
        "speech_encoder": (SpeechEncoder().eval(), (torch.randn(3, 20, 30),), ({0: "batch", 2: "seq"},),
                           ["features"], ["logits", "h_n"]),
        "streaming": (Streaming().eval(), (torch.randn(5, 2, 8), torch.zeros(2, 2, 16), torch.zeros(2, 2, 16)),
                      ({0: "seq", 1: "batch"}, {1: "batch"}, {1: "batch"}), ["x", "h0", "c0"], ["y", "h_n", "c_n"]),
    }
    batch = {0: "batch"}
    made = [
        ("deepspeech2", lambda: (DeepSpeech2(), (torch.randn(2, 1, 16, 20),), ({0: "batch", 3: "seq"},),
                                 ["spectrogram"], ["log_probs"])),
        ("tacotron2_encoder", lambda: (Tacotron2Encoder(), (torch.randint(0, 40, (3, 11)), torch.tensor([11, 8, 5])),
                                       ({0: "batch", 1: "seq"}, batch), ["text", "text_lengths"], ["memory"])),
        ("tacotron2_decoder_step", lambda: (
            Tacotron2DecoderStep(),
            (torch.randn(2, 8), torch.randn(2, 16), (torch.randn(2, 32), torch.randn(2, 32)),
             (torch.randn(2, 32), torch.randn(2, 32))),
            (batch, batch, (batch, batch), (batch, batch)),
            ["decoder_input", "attention_context", "attention_hidden", "attention_cell", "decoder_hidden",
             "decoder_cell"],
            ["mel", "gate", "attention_hidden_out", "attention_cell_out", "decoder_hidden_out", "decoder_cell_out"])),
        ("rnnt_predictor", lambda: (RNNTPredictor(), (torch.randint(0, 29, (3, 6)), (torch.zeros(2, 3, 32),
                                                                                     torch.zeros(2, 3, 32))),
                                    ({0: "batch", 1: "seq"}, ({1: "batch"}, {1: "batch"})), ["targets", "h0", "c0"],
                                    ["g", "h_n", "c_n"])),
        ("silero_vad", lambda: (SileroVAD(), (torch.randn(2, 256), torch.zeros(2, 2, 32)), (batch, {1: "batch"}),
                                ["chunk", "state"], ["speech_prob", "state_n"])),
        ("crnn", lambda: (CRNN(), (torch.randn(2, 1, 16, 32),), ({0: "batch", 3: "seq"},), ["image"], ["logits"])),
        ("word_language_model", lambda: (WordLanguageModel(), (torch.randint(0, 50, (10, 3)), (
            torch.zeros(2, 3, 24), torch.zeros(2, 3, 24))), ({0: "seq", 1: "batch"}, ({1: "batch"}, {1: "batch"})),
            ["input", "h0", "c0"], ["log_probs", "h_n", "c_n"])),
        ("char_rnn", lambda: (CharRNN(), (torch.randint(0, 40, (4,)), torch.zeros(2, 4, 24)), (batch, {1: "batch"}),
                              ["char", "hidden"], ["logits", "hidden_out"])),
        ("awd_lstm", lambda: (AWDLSTM(), (torch.randint(0, 60, (3, 14)),), ({0: "batch", 1: "seq"},), ["tokens"],
                              ["logits"])),
        ("deepar", lambda: (DeepAR(), (torch.randn(3, 24).abs() + 0.5, torch.randn(3, 24, 4)),
                            ({0: "batch", 1: "seq"}, {0: "batch", 1: "seq"}), ["past_target", "time_feat"],
                            ["loc", "scale"])),
        ("crdnn", lambda: (CRDNN(), (torch.randn(2, 18, 16),), ({0: "batch", 1: "seq"},), ["features"],
                           ["log_probs"])),
        ("seq2seq_attention_step", lambda: (AttnDecoderStep(), (torch.randint(0, 30, (3,)), torch.randn(3, 24),
                                                                torch.randn(3, 9, 24)),
                                            (batch, batch, {0: "batch", 1: "seq"}),
                                            ["token", "hidden", "encoder_outputs"],
                                            ["log_probs", "hidden_out", "attention"])),
        ("two_pass_refiner", lambda: (TwoPassRefiner(), (torch.randn(2, 15, 32),), ({0: "batch", 1: "seq"},), ["x"],
                                      ["y"])),
        ("time_sequence_prediction", lambda: (TimeSequencePrediction(), (torch.randn(3, 10),),
                                              ({0: "batch", 1: "seq"},), ["input"], ["output"])),
    ]
    for index, (name, build) in enumerate(made):
        torch.manual_seed(1000 + index)  # each model's weights and inputs independent of the others
        model, *rest = build()
        archs[name] = (_as_trained(model), *rest)
    return archs


# ---------------------------------------------------------------------------------------------------------------------
# Measuring


@contextlib.contextmanager
def _quiet():
    """Warnings, logging and what the exporters print (also from C++, straight to file descriptors 1 and 2) off."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _flat_dims(dims: Any) -> list[dict]:
    """One {axis: name} per flattened input (a dim may be a name or a torch.export.Dim)."""
    flat, _ = tree_flatten(tuple(dims), is_leaf=lambda v: v is None or isinstance(v, dict))
    return [{a: v if isinstance(v, str) else v.__name__ for a, v in (d or {}).items()} for d in flat]


def _torch_export(model, inputs, dims, names, outputs, dynamo: bool) -> onnx.ModelProto:
    if dynamo:
        program = torch.onnx.export(model, tuple(inputs), dynamo=True, dynamic_shapes=torch_dims(tuple(dims)),
                                    input_names=names, output_names=outputs)
        return program.model_proto
    buffer = io.BytesIO()
    axes = {n: d for n, d in zip(names, _flat_dims(dims)) if d}
    torch.onnx.export(model, tuple(inputs), buffer, dynamo=False, input_names=names, output_names=outputs,
                      dynamic_axes=axes, opset_version=17)
    return onnx.load_model_from_string(buffer.getvalue())


EXPORTERS = {
    "rnnexport.export_model": lambda m, i, d, n, o: export_model(m, i, dynamic_shapes=d, input_names=n, output_names=o),
    "torch dynamo=True": lambda m, i, d, n, o: _torch_export(m, i, d, n, o, True),
    "torch dynamo=False": lambda m, i, d, n, o: _torch_export(m, i, d, n, o, False),
}
EXPORTS = {"rnnexport.export_model": 3, "torch dynamo=True": 2, "torch dynamo=False": 3}  # exports per model
TIMED = {"rnnexport.export_model": 3, "torch dynamo=True": 1, "torch dynamo=False": 3}  # of which timed
RUNTIMES = ("ORT", "OpenVINO f32")
CASE_TITLES = {"example": "example", "seq1": "1 step", "batch1": "batch 1", "long": "10× steps",
               "other_batch": "other batch"}
TOLERANCE = Tolerance()  # verify's default


def _first_line(text: str, limit: int = 160) -> str:
    lines = [re.sub(r"^(Exception from )?src/\S+:\d+:?\s*", "", line).strip() for line in str(text).splitlines()]
    line = next((x for x in lines if x and not set(x) <= set("-=*#[ ]")), "") or "(no message)"
    line = re.sub(r"\s*Please (feel free to )?(report|request|open|submit|fix)\b.*", "", line)
    line = line.replace("|", "/").replace("`", "'")
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _ort_message(text: str) -> str:
    fixed = re.search(r"invalid dimensions for input: (\S+) .*?index: (\d+) Got: (\d+) Expected: (\d+)", text, re.S)
    reshape = re.search(r"requested shape:(\{[^}]*\})", text)
    if fixed:
        return f"ORT: input {fixed[1]} axis {fixed[2]} is fixed to {fixed[4]} (got {fixed[3]})"
    if reshape:
        return f"ORT: a Reshape to {reshape[1]} inside the graph fails"
    return "ORT: " + _first_line(text.split("Status Message:")[-1].split(" : ", 3)[-1])


def _ov_message(text: str) -> str:
    """OpenVINO's message: the node it names and its last line (the detail), without source locations."""
    lines = [line.strip() for line in str(text).splitlines()
             if line.strip() and not line.strip().startswith("Exception from src/")]
    if not lines:
        return "OpenVINO: (no message)"
    node = re.match(r"\[CPU\] (\w+) node with name '([^']+)'", lines[0])
    detail = re.sub(r"Check '.*' failed at \S+:\d+:?", "", lines[-1]).strip() or lines[0]
    return "OpenVINO: " + (f"{node[1]} node {node[2]}: " if node else "") + _first_line(detail)


class _Runtime:
    """One exported graph in one runtime: ``run(feeds by position)`` → the outputs in graph order."""

    def __init__(self, kind: str, data: bytes):
        self.kind = kind
        if kind == "ORT":
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 4
            self.session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
        else:
            import openvino

            core = openvino.Core()
            self.compiled = core.compile_model(core.read_model(data), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            self.request = self.compiled.create_infer_request()
            self.inputs = [i.get_any_name() for i in self.compiled.inputs]

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        if self.kind == "ORT":
            return self.session.run(None, dict(zip(self.inputs, feeds)))
        result = self.request.infer(dict(enumerate(feeds)))
        return [np.array(result[o]) for o in self.compiled.outputs]


def _compare(got: list[np.ndarray], expected: list[np.ndarray]) -> tuple[str, Any]:
    """("ok", worst |Δ|, within tolerance) or ("wrong", what differs)."""
    if len(got) != len(expected):
        return "wrong", f"{len(got)} outputs where PyTorch gives {len(expected)}"
    worst, within = 0.0, True
    for index, (g, e) in enumerate(zip(got, expected)):
        if tuple(g.shape) != tuple(e.shape):
            return "wrong", f"output {index} has shape {list(g.shape)} where PyTorch gives {list(e.shape)}"
        delta = float(np.abs(g.astype(np.float64) - e).max()) if e.size else 0.0
        worst = max(worst, delta)
        within &= TOLERANCE.allows(delta, float(np.abs(e).max()) if e.size else 0.0)
    return "ok", (worst, within)


def prepare(spec: tuple) -> dict:
    """The cases verify_model would run (shapes, inputs, the shortest length PyTorch accepts) and the oracle."""
    model, inputs, dims, names, outputs = spec
    leaves, treespec = tree_flatten(tuple(inputs))
    specs = input_specs(model, inputs, dims, names)
    oracle = WholeModelRunner(model, outputs, torch.float64, "torch-float64-oracle", treespec)
    cases, skipped = whole_model_cases(specs, leaves, oracle, 0)
    expected = {c.name: [np.asarray(v) for v in oracle.expected(c).values()] for c in cases}
    return {"cases": cases, "skipped": skipped, "expected": expected, "count": len(leaves)}


def measure(exporter: str, spec: tuple, prepared: dict) -> dict:
    """One exporter on one model: the export (timed), its nodes, and every case on every runtime."""
    model, inputs, dims, names, outputs = spec
    model = copy.deepcopy(model)  # what one exporter does to the model never reaches the next
    times, protos = [], []
    try:
        for _ in range(EXPORTS[exporter]):
            start = time.perf_counter()
            with _quiet():
                protos.append(EXPORTERS[exporter](model, inputs, dims, names, outputs))
            times.append(time.perf_counter() - start)
    except Exception as exc:  # what the exporter says is the finding
        if not protos:
            return {"error": _export_error(exc, exporter)}
    proto = protos[0]  # what a user gets from one export in a fresh process
    declared = [[[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in p.graph.input]
                for p in protos]
    ops = Counter(_op_types(proto.graph, proto.functions))
    data = proto.SerializeToString()
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [v.name for v in proto.graph.input if v.name not in initializers]
    runs: dict[str, dict[str, tuple[str, Any]]] = {}
    for kind in RUNTIMES:
        runs[kind] = {}
        if len(graph_inputs) != prepared["count"]:
            failure = ("fails", f"the graph has {len(graph_inputs)} inputs ({', '.join(graph_inputs)}); the model "
                                f"takes {prepared['count']}")
            runs[kind] = {c.name: failure for c in prepared["cases"]}
            continue
        try:
            with _quiet():
                runtime = _Runtime(kind, data)
        except Exception as exc:
            what = ("ORT cannot load the graph: " + _first_line(str(exc).split("Status Message:")[-1])
                    if kind == "ORT" else "cannot compile: " + _ov_message(str(exc)))
            runs[kind] = {c.name: ("fails", what) for c in prepared["cases"]}
            continue
        for case in prepared["cases"]:
            try:
                got = runtime.run(list(case.feeds.values()))
                runs[kind][case.name] = _compare(got, prepared["expected"][case.name])
            except Exception as exc:
                runs[kind][case.name] = ("fails", _ort_message(str(exc)) if kind == "ORT" else _ov_message(str(exc)))
    return {"s": statistics.median(times[:TIMED[exporter]]), "timed": min(TIMED[exporter], len(times)),
            "nodes": len(proto.graph.node), "ops": ops, "runs": runs, "declared": declared,
            "names": [v.name for v in proto.graph.input],
            "identical": len({hashlib.sha256(p.SerializeToString()).hexdigest() for p in protos}) == 1,
            "exports": len(protos)}


def _export_error(exc: BaseException, exporter: str) -> str:
    """An exporter's failure in one line: export_model's own message; for torch.onnx, the root cause as
    export_model explains it, with the line of the model's code it names (not a line of this script's harness)."""
    if exporter == "rnnexport.export_model":
        return _first_line(f"{type(exc).__name__}: {exc}", 400)
    text = explain(exc)
    harness = _as_trained.__code__.co_firstlineno  # the models end above this line
    cited = re.search(r" \((?:at )?whole_models_doc\.py:(\d+)[^)]*\)+$", text)
    if cited and int(cited[1]) >= harness:
        text = text[:cited.start()]
    return _first_line(text, 400)


def _op_types(graph: onnx.GraphProto, functions: Any = ()) -> list[str]:
    """Every node's op type, also inside subgraphs (Loop/Scan/If bodies) and local functions."""
    found = []
    for node in graph.node:
        found.append(node.op_type)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                found += _op_types(sub)
    for function in functions:
        found += [n.op_type for n in function.node]
    return found


# ---------------------------------------------------------------------------------------------------------------------
# The page


def _cell(result: tuple[str, Any] | None, notes: dict[str, int]) -> str:
    if result is None:
        return "—"
    status, value = result
    if status == "ok":
        worst, within = value
        return f"{worst:.1e}" if within else f"**{worst:.1e}**"
    note = notes.setdefault(value, len(notes) + 1)
    return f"{'wrong shape' if status == 'wrong' else 'fails'} [{note}]"


def _dims_text(declared: list) -> str:
    return ", ".join(str(d) for d in declared)


def main() -> None:
    import openvino

    torch.manual_seed(0)
    archs = architectures()
    lines = ["# Whole models: a catalogue of recurrent architectures, exported three ways", "",
             "*Generated by `python scripts/whole_models_doc.py`; do not edit by hand. Every number below is "
             "measured by that run.*", "",
             f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino "
             f"{openvino.get_version().split('-')[0]}, onnx {onnx.__version__}, Python {platform.python_version()}, "
             f"{platform.machine()}, {os.cpu_count()} CPU cores (export times are this machine's).", "",
             f"Each model below re-creates a published or common recurrent architecture at small sizes with seeded "
             f"random weights ({len(archs)} in all). Each is exported by `rnnexport.export_model`, by "
             "`torch.onnx.export(dynamo=True)` and by `torch.onnx.export(dynamo=False)` (opset 17), and each "
             "export runs in ONNX Runtime (CPU) and in OpenVINO (CPU, `INFERENCE_PRECISION_HINT` f32) at the cases "
             "`verify_model` builds from the dims named `batch` and `seq`: the example shape, 1 step (or the "
             "shortest length PyTorch itself accepts), batch 1, 10× the steps, and another batch, with the same "
             "inputs. A number is the worst |Δ| over every output against the model run in float64 by PyTorch; "
             f"**bold** where it exceeds verify's default tolerance (atol {TOLERANCE.atol:g} + rtol "
             f"{TOLERANCE.rtol:g} × max |expected|, per output); `fails [n]` and "
             "`wrong shape [n]` point to the message under the table; `—` is a case the model has no dim for.", "",
             "Export time: the median of 3 exports for `export_model` and `dynamo=False`; for `dynamo=True` the "
             "first export alone (it takes seconds; a second export is made only to compare the dims it "
             "declares). Nodes: those of the main graph; recurrent nodes (GRU/LSTM/RNN) and Loop/Scan are counted "
             "also inside subgraphs and functions.", ""]
    table: dict[str, dict[str, dict]] = {}
    for name, spec in archs.items():
        print(f"{name}:", flush=True)
        prepared = prepare(spec)
        table[name] = {}
        lines += [f"## {name}", "", f"`{type(spec[0]).__name__}`: " + (type(spec[0]).__doc__ or "").strip(), "",
                  "| exporter | export | nodes | runtime | " + " | ".join(CASE_TITLES.values()) + " |",
                  "|---|---|---|---|" + "---|" * len(CASE_TITLES)]
        notes: dict[str, int] = {}
        for exporter in EXPORTERS:
            found = table[name][exporter] = measure(exporter, spec, prepared)
            print(f"  {exporter}: {found.get('error') or 'exported'}", flush=True)
            if "error" in found:
                note = notes.setdefault("export: " + found["error"], len(notes) + 1)
                lines.append(f"| {exporter} | fails [{note}] | — | — | " + " | ".join(["—"] * len(CASE_TITLES)) + " |")
                continue
            recurrent = sum(found["ops"][op] for op in ("GRU", "LSTM", "RNN"))
            loops = found["ops"]["Loop"] + found["ops"]["Scan"]
            for index, kind in enumerate(RUNTIMES):
                cells = [_cell(found["runs"][kind].get(case), notes) for case in CASE_TITLES]
                head = (f"| {exporter} | {found['s']:.2f} s | {found['nodes']} ({recurrent} recurrent, {loops} "
                        "Loop/Scan)" if index == 0 else "| | |")
                lines.append(f"{head} | {kind} | " + " | ".join(cells) + " |")
        lines.append("")
        no_seq = any(r.startswith("no input has a dim named seq") for r in prepared["skipped"].values())
        shapes = [f"{CASE_TITLES[c.name]}: {c.description.removeprefix('seq 1, ') if no_seq else c.description}"
                  for c in prepared["cases"]]
        shapes += [f"{CASE_TITLES[n]}: — ({reason})" for n, reason in prepared["skipped"].items()]
        lines += ["Cases: " + "; ".join(shapes) + ".", ""]
        lines += [f"[{n}] {text}" + "  " for text, n in notes.items()]
        if notes:
            lines[-1] = lines[-1].rstrip()
            lines.append("")
    lines += _summary(table, archs)
    (ROOT / "docs" / "whole-models.md").write_text("\n".join(lines))
    print("wrote docs/whole-models.md")


def _summary(table: dict[str, dict[str, dict]], archs: dict[str, tuple]) -> list[str]:
    """The closing section: counts and lists read off the measured table."""
    total = len(table)
    lines = ["## What the table shows", "",
             f"Counted over the {total} models above; \"every case\" means every case the model has a dim for (a "
             "model without a `seq` dim has no 1-step or 10× case).", "",
             "| exporter | exported | ran at every case, ORT | ran at every case, OpenVINO f32 | also within "
             "tolerance on both | worst \\|Δ\\| where it ran |", "|---|---|---|---|---|---|"]
    details: list[str] = []
    for exporter in EXPORTERS:
        exported = [n for n in table if "error" not in table[n][exporter]]
        ran = {kind: [n for n in exported if all(r[0] == "ok" for r in table[n][exporter]["runs"][kind].values())]
               for kind in RUNTIMES}
        both = [n for n in ran[RUNTIMES[0]] if n in ran[RUNTIMES[1]]]
        within = [n for n in both if all(r[1][1] for kind in RUNTIMES for r in table[n][exporter]["runs"][kind]
                                         .values())]
        deltas = [r[1][0] for n in exported for kind in RUNTIMES for r in table[n][exporter]["runs"][kind].values()
                  if r[0] == "ok"]
        lines.append(f"| {exporter} | {len(exported)} of {total} | {len(ran['ORT'])} | {len(ran['OpenVINO f32'])} "
                     f"| {len(within)} | {max(deltas):.1e} |" if deltas else f"| {exporter} | {len(exported)} of "
                     f"{total} | {len(ran['ORT'])} | {len(ran['OpenVINO f32'])} | {len(within)} | — |")
        refused = [n for n in table if n not in exported]
        part = [f"refused or failed to export {', '.join(refused)}" if refused else "exported every model"]
        for kind in RUNTIMES:
            short = [n for n in exported if n not in ran[kind]]
            if short:
                part.append(f"on {kind} failed or gave wrong shapes at some case for {', '.join(short)}")
        for kind in RUNTIMES:
            over = [n for n in ran[kind] if not all(r[1][1] for r in table[n][exporter]["runs"][kind].values())]
            if over:
                part.append(f"on {kind} ran at every case but exceeded the tolerance at some case for "
                            f"{', '.join(over)}")
        details.append(f"- {exporter}: " + "; ".join(part) + ".")
    lines += [""] + details + [""]
    lines += ["The table uses the first export of each model by each exporter in the process, as a user's script "
              "would. Exporting the same model again in the same process:", ""]
    for exporter in EXPORTERS:
        found = [(n, table[n][exporter]) for n in table if "error" not in table[n][exporter]]
        changed = [(n, f) for n, f in found if any(d != f["declared"][0] for d in f["declared"][1:])]
        same_bytes = sum(1 for _, f in found if f["identical"])
        repeat = f"{EXPORTS[exporter]} exports of each model"
        if not changed:
            lines.append(f"- {exporter} ({repeat}): the same declared input dims every time; byte-identical graphs "
                         f"for {same_bytes} of {len(found)} models.")
            continue
        lines.append(f"- {exporter} ({repeat}): a later export declares other input dims for {len(changed)} of "
                     f"{len(found)} models: " + "; ".join(
                         f"{n} first {_dims_text(f['declared'][0])}, then {_dims_text(f['declared'][-1])}"
                         for n, f in changed) + ".")
    lines += ["", "`dynamo=False` (the TorchScript exporter) is deprecated in torch "
              f"{torch.__version__.split('+')[0]}.", ""]
    return lines


if __name__ == "__main__":
    main()
