"""TOML config → validated, frozen ``ModelConfig``. No torch import here.

One model per file. Every message names the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport.contract import RESERVED_NAMES, REVERSE_OPS, VARIANTS
from rnnexport.contract import input_names as contract_input_names
from rnnexport.errors import ConfigError

CELLS = ("gru", "lstm", "rnn_tanh", "rnn_relu")
GATES = {"gru": 3, "lstm": 4, "rnn_tanh": 1, "rnn_relu": 1}
MIN_OPSET = 9
DEFAULT_OPSET = 17
MAX_SIZE = 65536
MAX_LAYERS = 64
MAX_SEQ_LEN = 1_000_000
# Protobuf caps one ONNX file at 2 GiB; we write no external data, so stay well below.
MAX_WEIGHT_BYTES = 1 << 30
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_CONFIG_BYTES = 1 << 20


def newest_opset() -> int:
    """The newest default-domain opset the installed onnx knows (imported lazily: onnx is heavy)."""
    import onnx.defs

    return onnx.defs.onnx_opset_version()


@dataclass(frozen=True)
class Example:
    """The shape the model is exported and benchmarked with."""

    seq_len: int = 16
    batch: int = 2


@dataclass(frozen=True)
class Inputs:
    """Optional graph inputs: ``h0``/``c0`` (initial_state) and ``sequence_lens`` (variable_lengths)."""

    initial_state: bool = False
    variable_lengths: bool | str = False  # true: ONNX's sequence_lens; "masked": portable (see onnx_export)


@dataclass(frozen=True)
class Tolerance:
    """Pass when max |actual - expected| <= atol + rtol * max |expected|, per output."""

    atol: float = 1e-5
    rtol: float = 1e-5

    def allowed(self, expected_max_abs: float) -> float:
        """The largest error allowed for an output whose reference has this max |value|."""
        return self.atol + self.rtol * expected_max_abs

    def allows(self, max_abs: float, expected_max_abs: float) -> bool:
        """The one pass rule of rnnexport: ``max_abs <= atol + rtol * expected_max_abs``."""
        return max_abs <= self.allowed(expected_max_abs)

    def __str__(self) -> str:
        return f"atol {self.atol:g}, rtol {self.rtol:g}"


@dataclass(frozen=True)
class Weights:
    """Trained weights for the model: ``file`` (a path relative to the config file) and the key ``prefix`` of
    the recurrent module in it (empty: found when alone). Every build of the config uses them."""

    file: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    cell: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False
    dropout: float = 0.0
    seed: int = 0
    opset: int = DEFAULT_OPSET
    example: Example = Example()
    inputs: Inputs = Inputs()
    tolerance: Tolerance = Tolerance()
    weights: Weights | None = None
    variants: tuple[str, ...] = ()  # deployment variants built beside model.onnx (contract.VARIANTS)
    reverse: str = REVERSE_OPS[0]  # how a masked bidirectional graph reverses rows (contract.REVERSE_OPS)
    source: str | None = dataclasses.field(default=None, compare=False)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (every default filled in), without where it came from."""
        data = dataclasses.asdict(self)
        del data["source"]
        if data["weights"] is None:  # configs without trained weights keep the hash they always had
            del data["weights"]
        if not data["variants"]:  # likewise configs without variants
            del data["variants"]
        else:
            data["variants"] = list(data["variants"])
        if data["reverse"] == REVERSE_OPS[0]:  # likewise configs that keep ReverseSequence
            del data["reverse"]
        return data

    def with_variable_lengths(self, value: bool | str) -> ModelConfig:
        """The same config with ``[inputs] variable_lengths = value`` (the other ragged form)."""
        return dataclasses.replace(self, inputs=dataclasses.replace(self.inputs, variable_lengths=value))

    def weights_file(self) -> Path | None:
        """The ``[weights]`` file, resolved against the folder of the config file; None without one."""
        if self.weights is None or not self.weights.file:
            return None
        base = Path(self.source).parent if self.source and self.source.endswith(".toml") else Path(".")
        return base / self.weights.file

    def sha256(self) -> str:
        """Hash of the resolved config: comments and key order in the file do not change it."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def weight_count(cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, bias: bool) -> int:
    """Number of parameters of the PyTorch module, computed without allocating it."""
    gates = GATES[cell] * hidden_size
    dirs = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        layer_in = input_size if layer == 0 else hidden_size * dirs
        total += dirs * (gates * layer_in + gates * hidden_size + (2 * gates if bias else 0))
    return total


# key → (type, default); nested tables are handled by _TABLES.
_SCALARS: dict[str, tuple[type, Any]] = {
    "name": (str, None),
    "cell": (str, None),
    "input_size": (int, None),
    "hidden_size": (int, None),
    "num_layers": (int, 1),
    "bias": (bool, True),
    "batch_first": (bool, False),
    "bidirectional": (bool, False),
    "dropout": (float, 0.0),
    "seed": (int, 0),
    "opset": (int, DEFAULT_OPSET),
    "reverse": (str, REVERSE_OPS[0]),
}
_TABLES: dict[str, type] = {"example": Example, "inputs": Inputs, "tolerance": Tolerance, "weights": Weights}
_REQUIRED = ("cell", "input_size", "hidden_size")
_CHOICES = {"inputs.variable_lengths": ((False, True, "masked"), 'true, false or "masked"'),
            "reverse": (REVERSE_OPS, " or ".join(f'"{op}"' for op in REVERSE_OPS))}
_TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", float: "a number", dict: "a table"}


class _Checker:
    """Collects the file name so every message can say where the problem is."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}': {_show(value)} is not allowed; expected {allowed}")

    def typed(self, key: str, value: Any, kind: type) -> Any:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise self.fail(key, value, _TYPE_WORDS[kind])
        return value

    def in_range(self, key: str, value: int | float, low: float, high: float, what: str) -> None:
        if not low <= value <= high:
            raise self.fail(key, value, what)

    def table(self, key: str, raw: Any, kind: type) -> Any:
        raw = self.typed(key, raw, dict)
        fields = {f.name: f for f in dataclasses.fields(kind)}
        values = {}
        for sub, value in raw.items():
            if sub not in fields:
                raise ConfigError(
                    f"{self.source}: unknown key '{key}.{sub}'; allowed in [{key}]: {', '.join(fields)}"
                )
            if f"{key}.{sub}" in _CHOICES:
                values[sub] = self.choice(f"{key}.{sub}", value)
            else:
                values[sub] = self.typed(f"{key}.{sub}", value, type(fields[sub].default))
        return kind(**values)

    def choice(self, key: str, value: Any) -> Any:
        allowed, words = _CHOICES[key]
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise self.fail(key, value, words)
        return value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def parse_config(raw: dict[str, Any], source: str, default_name: str | None = None) -> ModelConfig:
    """Validate a dict as read from TOML; ``source`` names it in messages."""
    check = _Checker(source)
    if "proj_size" in raw:
        raise ConfigError(
            f"{source}: key 'proj_size' is not supported: ONNX's LSTM operator has no projection, "
            "so an LSTM with proj_size cannot be exported as a native node"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _CHOICES:
            values[key] = check.choice(key, value)
        elif key in _SCALARS:
            values[key] = check.typed(key, value, _SCALARS[key][0])
        elif key in _TABLES:
            values[key] = check.table(key, value, _TABLES[key])
        elif key == "variants":
            values[key] = parse_variants(value, source)
        else:
            allowed = ", ".join([*_SCALARS, "variants", *_TABLES])
            raise ConfigError(f"{source}: unknown key '{key}'; allowed keys: {allowed}")
    for key in _REQUIRED:
        if key not in values:
            raise ConfigError(f"{source}: missing required key '{key}'")
    values.setdefault("name", default_name)
    _check_values(check, values)
    return ModelConfig(**values, source=source)


def parse_variants(value: Any, source: str) -> tuple[str, ...]:
    """A list of names from ``VARIANTS`` (or one comma-separated string), kept in ``VARIANTS`` order."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{source}: key 'variants': {_show(value)} is not allowed; expected a list of names "
                          f"from {', '.join(VARIANTS)}")
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"{source}: key 'variants': unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    return tuple(v for v in VARIANTS if v in names)


def _check_values(check: _Checker, v: dict[str, Any]) -> None:
    name = v["name"]
    if name is None or not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise check.fail(
            "name", name, "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise check.fail("name", name,
                         f"a name other than those of the files rnnexport writes ({', '.join(RESERVED_NAMES)})")
    if v["cell"] not in CELLS:
        raise check.fail("cell", v["cell"], "one of " + ", ".join(CELLS))
    for key in ("input_size", "hidden_size"):
        check.in_range(key, v[key], 1, MAX_SIZE, f"an integer from 1 to {MAX_SIZE}")
    check.in_range("num_layers", v.get("num_layers", 1), 1, MAX_LAYERS, f"an integer from 1 to {MAX_LAYERS}")
    dropout = v.get("dropout", 0.0)
    check.in_range("dropout", dropout, 0.0, 0.999999, "a number from 0 up to (not including) 1")
    if dropout > 0 and v.get("num_layers", 1) == 1:
        raise check.fail("dropout", dropout, "0 when num_layers = 1 (PyTorch applies dropout only between layers)")
    check.in_range("seed", v.get("seed", 0), 0, 2**63 - 1, "a non-negative integer")
    top = newest_opset()
    check.in_range("opset", v.get("opset", DEFAULT_OPSET), MIN_OPSET, top, f"an integer from {MIN_OPSET} to {top}")
    example = v.get("example", Example())
    check.in_range("example.seq_len", example.seq_len, 1, MAX_SEQ_LEN, f"an integer from 1 to {MAX_SEQ_LEN}")
    check.in_range("example.batch", example.batch, 1, MAX_SIZE, f"an integer from 1 to {MAX_SIZE}")
    weights = v.get("weights")
    if weights is not None and not weights.file.strip():
        raise check.fail("weights.file", weights.file, "the path of the weights file, relative to this config "
                         "(without a [weights] table the weights are seeded)")
    masked_both_ways = v.get("bidirectional", False) and v.get("inputs", Inputs()).variable_lengths == "masked"
    if v.get("reverse", REVERSE_OPS[0]) != REVERSE_OPS[0] and not masked_both_ways:
        raise check.fail("reverse", v["reverse"], f'"{REVERSE_OPS[0]}" unless bidirectional = true and [inputs] '
                         'variable_lengths = "masked" (only the backward direction of a masked graph reverses rows)')
    tol = v.get("tolerance", Tolerance())
    check.in_range("tolerance.atol", tol.atol, 0.0, 1e300, "a finite, non-negative number")
    check.in_range("tolerance.rtol", tol.rtol, 0.0, 1e300, "a finite, non-negative number")
    count = weight_count(
        v["cell"], v["input_size"], v["hidden_size"], v.get("num_layers", 1),
        v.get("bidirectional", False), v.get("bias", True),
    )
    if count * 4 > MAX_WEIGHT_BYTES:
        raise ConfigError(
            f"{check.source}: the model would hold {count:,} weights ({count * 4 / 2**30:.1f} GiB as float32); "
            f"the limit is {MAX_WEIGHT_BYTES / 2**30:.0f} GiB, since an ONNX file without external data "
            "must stay under 2 GiB"
        )


def load_config(path: str | Path) -> ModelConfig:
    """Read and validate one TOML config. ``name`` defaults to the file's stem."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ConfigError(f"{path}: not a regular file (a device, a pipe or a socket); expected a .toml file")
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a config "
                              f"(at most {MAX_CONFIG_BYTES:,})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a .toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path), default_name=path.stem)


def find_configs(paths: Sequence[str | Path]) -> list[Path]:
    """Expand folders to their ``*.toml`` files (sorted); files are kept as given, duplicates dropped."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            try:
                tomls = sorted(p for p in path.iterdir() if p.suffix == ".toml" and p.is_file())
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read folder: {exc.strerror or exc}") from None
            if not tomls:
                raise ConfigError(f"{path}: folder holds no .toml config")
            found.extend(tomls)
        elif path.exists():
            found.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


def load_configs(paths: Sequence[str | Path]) -> list[ModelConfig]:
    """Load every config under ``paths``; two configs with the same name are refused."""
    configs = [load_config(p) for p in find_configs(paths)]
    seen: dict[str, str] = {}
    for cfg in configs:
        if cfg.name in seen:
            raise ConfigError(f"{cfg.source}: name '{cfg.name}' is already used by {seen[cfg.name]}")
        seen[cfg.name] = cfg.source or cfg.name
    return configs


def config_for_module(module: Any, name: str = "model") -> dict[str, Any]:
    """The architecture keys of a config that describe ``module``, an ``nn.GRU``/``nn.LSTM``/``nn.RNN`` (for
    ``parse_config``). Reads the module's attributes only: no torch import."""
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


def input_names(cfg: ModelConfig) -> list[str]:
    """The graph inputs of ``cfg``'s model, in order (the contract's names for its cell and optional inputs)."""
    return contract_input_names(cfg.cell == "lstm", cfg.inputs.initial_state, bool(cfg.inputs.variable_lengths))
