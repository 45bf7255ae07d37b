"""Weights from a user's file: a state_dict, or a checkpoint in which the recurrent module sits under a
key prefix (``encoder.rnn.``). Loaded with ``torch.load(weights_only=True)``: nothing in it can run."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .builders import RecurrentModule, build_model
from .config import GATES, ModelConfig
from .errors import ArtifactError

PARAM = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")
ANCHOR = "weight_ih_l0"


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor in a ``torch.save`` file, nested dicts flattened to dotted keys
    (``{"model": {"rnn.weight_ih_l0": t}}`` → ``model.rnn.weight_ih_l0``)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
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
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a state_dict (a dict of tensors), found {type(data).__name__}")
    tensors = dict(_flatten(data, ""))
    if not tensors:
        raise ArtifactError(f"{path}: holds no tensors")
    return tensors


def _flatten(data: dict, prefix: str):
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            yield f"{prefix}{key}", value
        elif isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")


def select_module(tensors: dict[str, torch.Tensor], prefix: str | None, source: str) -> tuple[str, dict]:
    """(prefix, state_dict) of the recurrent module under ``prefix``; found alone when ``prefix`` is None."""
    if prefix is None:
        candidates = sorted(k[: -len(ANCHOR)] for k in tensors if k.endswith(ANCHOR))
        if not candidates:
            raise ArtifactError(f"{source}: no recurrent module's weights (no key ending in {ANCHOR})")
        if len(candidates) > 1:
            raise ArtifactError(f"{source}: holds several recurrent modules ({', '.join(candidates)}); "
                                "choose one with --prefix")
        prefix = candidates[0]
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if prefix and not state:
        raise ArtifactError(f"{source}: no key starts with the prefix {prefix!r}")
    if not prefix:  # a plain state_dict: every key must belong to the module
        return prefix, state
    return prefix, {k: v for k, v in state.items() if "." not in k}


def module_from_weights(cfg: ModelConfig, path: str | Path, prefix: str | None = None
                        ) -> tuple[RecurrentModule, str]:
    """The config's module holding the weights from ``path`` (every missing, extra or misshapen key is
    named), and the prefix the recurrent module was found under."""
    found_prefix, state = select_module(load_tensors(path), prefix, str(path))
    module = build_model(cfg)
    expected = module.state_dict()
    problems = [f"missing {k} (expected {list(v.shape)})" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k} {list(v.shape)}" for k, v in state.items() if k not in expected]
    problems += [f"{k}: expected shape {list(expected[k].shape)}, found {list(v.shape)}"
                 for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        raise ArtifactError(f"{path}: weights do not fit the config {cfg.name}: " + "; ".join(problems))
    with torch.no_grad():
        module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return module.eval(), found_prefix


def infer_config(state: dict[str, torch.Tensor], source: str) -> tuple[dict[str, Any], list[str]]:
    """Architecture keys of a config from a recurrent module's state_dict, and what could not be known."""
    if any(k.startswith("weight_hr_l") for k in state):
        raise ArtifactError(f"{source}: an LSTM with proj_size cannot be exported: ONNX's LSTM has no projection")
    params = {k: m for k in state if (m := PARAM.fullmatch(k))}
    if "weight_ih_l0" not in params or "weight_hh_l0" not in state:
        raise ArtifactError(f"{source}: no weight_ih_l0/weight_hh_l0: not the weights of nn.GRU, nn.LSTM or nn.RNN")
    rows, hidden = state["weight_hh_l0"].shape
    gates = {g: c for c, g in GATES.items() if c != "rnn_relu"}.get(rows // hidden if rows % hidden == 0 else 0)
    if gates is None:
        raise ArtifactError(f"{source}: weight_hh_l0 has shape {list(state['weight_hh_l0'].shape)}, "
                            "which is no GRU, LSTM or RNN")
    notes = ["batch_first cannot be inferred from weights: set it to match how the model is called"]
    if gates == "rnn_tanh":
        notes.append("tanh or relu cannot be inferred from weights: use cell = \"rnn_relu\" for nonlinearity='relu'")
    raw = {
        "cell": gates,
        "input_size": int(state["weight_ih_l0"].shape[1]),
        "hidden_size": int(hidden),
        "num_layers": 1 + max(int(m[3]) for m in params.values()),
        "bias": "bias_ih_l0" in state,
        "bidirectional": any(m[4] for m in params.values()),
    }
    return raw, notes


def config_toml(name: str, raw: dict[str, Any], notes: list[str], source: str) -> str:
    """A TOML config for ``raw`` that the user can edit, with ``notes`` as comments."""
    lines = [f"# Written by `rnnexport init` from {source}.", *[f"# NOTE: {n}." for n in notes],
             f'name = "{name}"', f'cell = "{raw["cell"]}"']
    for key in ("input_size", "hidden_size", "num_layers"):
        lines.append(f"{key} = {raw[key]}")
    for key in ("bias", "bidirectional"):
        lines.append(f"{key} = {'true' if raw[key] else 'false'}")
    lines += ["batch_first = false  # cannot be inferred from weights: check", "",
              "[example]", "seq_len = 16", "batch = 2", "",
              "[inputs]", "initial_state = false", "variable_lengths = false", ""]
    return "\n".join(lines)
