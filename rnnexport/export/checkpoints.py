"""Weights from a user's file: a state_dict, a checkpoint in which the recurrent module sits under a key
prefix (``encoder.rnn.``), or a TorchScript archive; the module may be an ``nn.GRU``/``nn.LSTM``/``nn.RNN``,
one ``nn.GRUCell``/``nn.LSTMCell``/``nn.RNNCell``, or a numbered stack of cells (``cells.0.``, ``cells.1.``).

Nothing in a file can run: ``torch.load(weights_only=True)``, and TorchScript archives are read by an
unpickler that builds tensors and plain objects only (``torchscript.py``).
"""

from __future__ import annotations

import pickle
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnexport.config import GATES, ModelConfig
from rnnexport.errors import ArtifactError
from rnnexport.export.builders import RecurrentModule, unfilled_model
from rnnexport.export.torchscript import MAX_DEPTH, read_archive

PARAM = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")
CELL_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
STACK_ITEM = re.compile(r"(.*?)(\d+)\.$")
MAX_ENTRIES = 1_000_000  # keys and nested dicts of one file; a large model's state_dict has thousands
MAX_WEIGHTS_BYTES = 16 * 2**30  # a file larger than this is not one recurrent model's weights
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor in a ``torch.save`` file or TorchScript archive, nested dicts flattened to dotted keys
    (``{"model": {"rnn.weight_ih_l0": t}}`` → ``model.rnn.weight_ih_l0``)."""
    path = Path(path)
    check_weights_file(path)
    if _is_torchscript(path):
        data = read_archive(path)
    else:
        data = _torch_load(path)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a state_dict (a dict of tensors), found {type(data).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in _flatten(data, path):
        if key in tensors:
            raise ArtifactError(f"{path}: the key {key!r} appears twice once nested dicts are flattened "
                                "(a key with dots beside a nested dict of the same path)")
        tensors[key] = value
    if not tensors:
        raise ArtifactError(f"{path}: holds no tensors")
    return tensors


def check_weights_file(path: Path) -> None:
    """Refuse what cannot be a weights file before opening it: a folder, a FIFO or device (reading one never
    ends), or a file over ``MAX_WEIGHTS_BYTES``. Raises ``ArtifactError``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ArtifactError(f"{path}: is a folder, expected a weights file")
    if not stat.S_ISREG(info.st_mode):
        raise ArtifactError(f"{path}: not a regular file (a pipe, socket or device), expected a weights file")
    if info.st_size > MAX_WEIGHTS_BYTES:
        raise ArtifactError(f"{path}: {info.st_size / 2**30:.1f} GiB, over the {MAX_WEIGHTS_BYTES // 2**30} GiB "
                            "rnnexport reads; save only the recurrent module's state_dict")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/", 1)[-1].startswith("code/") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a pickle of tensors at all
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            reason = detail[1].strip() if detail else str(exc).strip().splitlines()[0]
            raise ArtifactError(f"{path}: not a PyTorch weights file ({reason})") from None
        raise ArtifactError(f"{path}: refused: not a plain weights file; loading it would run code "
                            f"(it references {found[1]}). Save the model's state_dict() instead") from None
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, zipfile errors, ...
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ArtifactError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {first})") from None


def _flatten(data: dict, path: Path) -> list[tuple[str, torch.Tensor]]:
    """(dotted key, tensor) of every tensor in nested dicts; iterative, at most ``MAX_DEPTH`` deep and
    ``MAX_ENTRIES`` entries in all (a pickle stores a dict once however often it is referenced, so 40 levels
    of ``{"a": d, "b": d}`` in a 3 KB file would flatten to 2**40 keys)."""
    found, todo, entries = [], [(data, "", 0)], 0
    while todo:
        node, prefix, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ArtifactError(f"{path}: dicts nested more than {MAX_DEPTH} deep")
        entries += len(node)
        if entries > MAX_ENTRIES:
            raise ArtifactError(f"{path}: more than {MAX_ENTRIES:,} entries once nested dicts are flattened (the "
                                "same dict referenced from several places counts each time)")
        for key, value in node.items():
            if isinstance(value, torch.Tensor):
                found.append((f"{prefix}{key}", value))
            elif isinstance(value, dict):
                todo.append((value, f"{prefix}{key}.", depth + 1))
    return found


@dataclass(frozen=True)
class Found:
    """A recurrent module found in a file: its key ``prefix``, ``layout`` ("module", "cell" or "cell-stack")
    and its weights under ``nn.GRU``/``nn.LSTM``/``nn.RNN``'s names."""

    prefix: str
    layout: str
    state: dict[str, torch.Tensor]


def candidates(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """prefix → layout of every recurrent module in ``tensors``: modules (``weight_ih_l0``), cells
    (``weight_ih`` with ``weight_hh``) and numbered stacks of cells (reported once, by the stack's prefix)."""
    found = {k[: -len("weight_ih_l0")]: "module" for k in tensors if k.endswith("weight_ih_l0")}
    cells = [k[: -len("weight_ih")] for k in tensors if k.endswith("weight_ih") and f"{k[:-9]}weight_hh" in tensors]
    for prefix in cells:
        stack = STACK_ITEM.fullmatch(prefix)
        if stack and (stack[1] or prefix != f"{stack[2]}."):
            found.setdefault(stack[1], "cell-stack")
        elif stack:  # a bare "0." prefix: a stack at the top level of the file
            found.setdefault("", "cell-stack")
        else:
            found[prefix] = "cell"
    return dict(sorted(found.items()))


def select_module(tensors: dict[str, torch.Tensor], prefix: str | None, source: str) -> Found:
    """The recurrent module under ``prefix`` (with or without its trailing dot); found when it is alone."""
    found = candidates(tensors)
    listing = ", ".join(f"{p or '(top level)'} ({layout})" for p, layout in found.items())
    if prefix is None:
        if not found:
            raise ArtifactError(f"{source}: no recurrent module's weights (no key ending in weight_ih_l0, and no "
                                "GRUCell/LSTMCell/RNNCell weight_ih with weight_hh)")
        if len(found) > 1:
            raise ArtifactError(f"{source}: holds several recurrent modules: {listing}; choose one with --prefix")
        prefix = next(iter(found))
    prefix = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
    if prefix not in found:
        where = f"; recurrent weights were found under: {listing}" if found else ""
        raise ArtifactError(f"{source}: no recurrent module under the prefix {prefix!r}{where}")
    layout = found[prefix]
    if layout == "module":
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        return Found(prefix, layout, {k: v for k, v in state.items() if "." not in k})
    if layout == "cell":
        return Found(prefix, layout, {f"{p}_l0": tensors[prefix + p] for p in CELL_PARAMS if prefix + p in tensors})
    return Found(prefix, layout, _stack_state(tensors, prefix, source))


def _stack_state(tensors: dict[str, torch.Tensor], prefix: str, source: str) -> dict[str, torch.Tensor]:
    """A numbered stack of cells under ``prefix`` as a stacked module's weights (``cells.1.weight_ih`` →
    ``weight_ih_l1``); the numbers must run 0, 1, … without a gap."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(" + "|".join(CELL_PARAMS) + ")")
    matches = [(m, t) for k, t in tensors.items() if (m := pattern.fullmatch(k))]
    state = {f"{m[2]}_l{int(m[1])}": t for m, t in matches}
    layers = sorted({int(m[1]) for m, _ in matches})
    if layers != list(range(len(layers))):
        raise ArtifactError(f"{source}: the cells under {prefix!r} are numbered {layers}; a stack needs 0, 1, 2, …")
    return state


def module_from_weights(cfg: ModelConfig, path: str | Path, prefix: str | None = None
                        ) -> tuple[RecurrentModule, str, str]:
    """The config's module holding the weights from ``path`` (every missing, extra or misshapen key is
    named, the first three in full), the prefix the recurrent module was found under, and its layout."""
    found = select_module(load_tensors(path), prefix, str(path))
    return module_from_found(cfg, found, path), found.prefix, found.layout


def module_from_found(cfg: ModelConfig, found: Found, path: str | Path) -> RecurrentModule:
    """The config's module holding ``found``'s weights (read from ``path``), as float32 copies of their own: a
    checkpoint's tensors may be views into a larger buffer or tied to each other, which ``weights.pt`` must not
    carry along."""
    module = unfilled_model(cfg)
    expected = module.state_dict()
    state = found.state
    problems = [f"missing {k} (expected {list(v.shape)})" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k} {list(v.shape)}" for k, v in state.items() if k not in expected]
    problems += [f"{k}: expected shape {list(expected[k].shape)}, found {list(v.shape)}"
                 for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        more = len(problems) - SHOWN_PROBLEMS
        raise ArtifactError(f"{path}: weights do not fit the config {cfg.name}: {shown}" + (
            f"; and {more} more (rnnexport init --from-checkpoint {Path(path).name} writes a config that fits them)"
            if more > 0 else ""))
    _check_dtypes(state, str(path))
    with torch.no_grad():
        module.load_state_dict({k: v.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
                                for k, v in state.items()}, assign=True)
    return module.eval()


SHOWN_PROBLEMS = 3  # of the weights' mismatches in one Error line; the rest are counted


def _check_dtypes(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights that float32 cannot hold (complex) or that are no weights at all (int, bool)."""
    for key, value in state.items():
        if value.dtype.is_complex:
            raise ArtifactError(f"{source}: {key} is {value.dtype}; complex weights cannot be exported")
        if value.dtype not in FLOAT_TYPES:
            raise ArtifactError(f"{source}: {key} is {value.dtype}, not a floating-point weight")
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            raise ArtifactError(f"{source}: {key} holds {int((~finite).sum()):,} NaN or infinite value(s) of "
                                f"{value.numel():,}; every output would be NaN, so there is nothing to export or "
                                "verify")
        if value.dtype == torch.float64 and value.numel() and float(value.abs().max()) > FLOAT32_MAX:
            big = int((value.abs() > FLOAT32_MAX).sum())
            raise ArtifactError(f"{source}: {key} holds {big:,} value(s) beyond float32's range (3.4e38)")


def cast_dtypes(found: Found) -> list[str]:
    """The weights' element types other than float32 (cast on load; float64 loses digits)."""
    return sorted({str(v.dtype).removeprefix("torch.") for v in found.state.values() if v.dtype != torch.float32})


def infer_config(found: Found, source: str) -> tuple[dict[str, Any], list[str]]:
    """Architecture keys of a config from a recurrent module's weights (``Found.state``, in ``nn.GRU``'s
    names), and what could not be known. Every layer must fit the one before it."""
    state = found.state
    if any(k.startswith("weight_hr_l") for k in state):
        raise ArtifactError(f"{source}: an LSTM with proj_size cannot be exported: ONNX's LSTM has no projection")
    params = {k: m for k in state if (m := PARAM.fullmatch(k))}
    if "weight_ih_l0" not in params or "weight_hh_l0" not in state:
        raise ArtifactError(f"{source}: no weight_ih_l0/weight_hh_l0: not the weights of nn.GRU, nn.LSTM or nn.RNN")
    rows, hidden = state["weight_hh_l0"].shape
    cell = {g: c for c, g in GATES.items() if c != "rnn_relu"}.get(rows // hidden if rows % hidden == 0 else 0)
    if cell is None:
        raise ArtifactError(f"{source}: weight_hh_l0 has shape {list(state['weight_hh_l0'].shape)}, "
                            "which is no GRU, LSTM or RNN")
    raw = {
        "cell": cell,
        "input_size": int(state["weight_ih_l0"].shape[1]),
        "hidden_size": int(hidden),
        "num_layers": 1 + max(int(m[3]) for m in params.values()),
        "bias": "bias_ih_l0" in state,
        "bidirectional": any(m[4] for m in params.values()),
    }
    _check_stack(state, raw, found, source)
    notes = ["batch_first cannot be inferred from weights: set it to match how the model is called"]
    if cell == "rnn_tanh":
        notes.append("tanh or relu cannot be inferred from weights: use cell = \"rnn_relu\" for nonlinearity='relu'")
    return raw, notes


def _check_stack(state: dict[str, torch.Tensor], raw: dict[str, Any], found: Found, source: str) -> None:
    """Every key of the inferred module is present, and layer l's input is layer l−1's output."""
    dirs = 2 if raw["bidirectional"] else 1
    for layer in range(1, raw["num_layers"]):
        width = state.get(f"weight_ih_l{layer}")
        if width is not None and width.shape[1] != raw["hidden_size"] * dirs:
            name = f"{found.prefix}{layer}." if found.layout == "cell-stack" else f"layer {layer}"
            raise ArtifactError(f"{source}: {name} takes inputs of size {width.shape[1]}, but the layer before it "
                                f"gives {raw['hidden_size'] * dirs}: the cells do not form a stack")
    suffixes = ["", "_reverse"][:dirs]
    params = CELL_PARAMS if raw["bias"] else CELL_PARAMS[:2]
    missing = [f"{p}_l{layer}{sfx}" for layer in range(raw["num_layers"]) for sfx in suffixes for p in params
               if f"{p}_l{layer}{sfx}" not in state]
    if missing:
        raise ArtifactError(f"{source}: incomplete recurrent weights under {found.prefix or '(top level)'!r}: "
                            f"missing {', '.join(missing)}")


def config_toml(name: str, raw: dict[str, Any], notes: list[str], source: str, weights: tuple[str, str] | None) -> str:
    """A TOML config for ``raw`` that the user can edit, with ``notes`` as comments and ``weights``
    (file, prefix) as its [weights] table."""
    lines = [f"# Written by `rnnexport init` from {source}.", *[f"# NOTE: {n}." for n in notes],
             f'name = "{name}"', f'cell = "{raw["cell"]}"']
    for key in ("input_size", "hidden_size", "num_layers"):
        lines.append(f"{key} = {raw[key]}")
    for key in ("bias", "bidirectional"):
        lines.append(f"{key} = {'true' if raw[key] else 'false'}")
    lines += ["batch_first = false  # cannot be inferred from weights: check", "",
              "[example]", "seq_len = 16", "batch = 2", "",
              "[inputs]", "initial_state = false", "variable_lengths = false", ""]
    if weights:
        lines += ["[weights]  # every build of this config takes its weights from here",
                  f"file = {_toml_string(weights[0])}", f"prefix = {_toml_string(weights[1])}", ""]
    return "\n".join(lines)


def _toml_string(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a valid TOML basic string


def write_init_config(checkpoint: Path, prefix: str | None, name: str | None, out: Path | None) -> tuple[str, str]:
    """``init``: the config text for the recurrent module in ``checkpoint`` (written to ``out`` when given)
    and a one-line summary. The name defaults to ``out``'s stem, else the checkpoint's."""
    import os

    from rnnexport.artifacts.folders import write_text_atomic
    from rnnexport.config import parse_config

    if out is not None and (out.exists() or out.is_symlink()):
        raise ArtifactError(f"{out}: already exists; choose another --out or remove it")
    if out is not None and not out.parent.is_dir():
        raise ArtifactError(f"{out}: the folder {out.parent} does not exist")
    found = select_module(load_tensors(checkpoint), prefix, str(checkpoint))
    _check_dtypes(found.state, str(checkpoint))  # what build would refuse, refused before a config is written
    raw, notes = infer_config(found, str(checkpoint))
    name = name or (out.stem if out is not None else checkpoint.stem)
    parse_config({"name": name, **raw}, f"--name {name!r}")  # the same checks a config file gets
    file = os.path.relpath(checkpoint.resolve(), (out.parent if out is not None else Path(".")).resolve())
    layout = "" if found.layout == "module" else f", {found.layout}"
    origin = checkpoint.name + (f" (prefix {found.prefix!r}{layout})" if found.prefix or layout else "")
    text = config_toml(name, raw, notes, origin, (file, found.prefix))
    if out is not None:
        write_text_atomic(out, text)
    summary = f"{raw['num_layers']} × {raw['cell']}, hidden {raw['hidden_size']}; " + "; ".join(notes)
    return text, summary
