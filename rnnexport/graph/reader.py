"""ONNX models from files, bytes or protos, and the check that a model keeps the graph contract.

One reader for model bytes: every command that opens an ONNX file goes through ``read_model``.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model

from rnnexport.config import ModelConfig, input_names
from rnnexport.contract import BATCH, LENGTHS, MANIFEST_FILE, MODEL_FILE, SEQ, output_names
from rnnexport.errors import ArtifactError
from rnnexport.graph.checks import check_model, check_tensor, external_location, tensors
from rnnexport.graph.subgraphs import recurrent_nodes

MAX_MODEL_BYTES = 2 << 30  # protobuf's limit for one message


def read_model(path: str | Path) -> tuple[onnx.ModelProto, bytes]:
    """The parsed model at ``path`` and its bytes; a folder means its ``model.onnx`` (an artifact).

    Tensors stored as external data are read from files beside the model (refused when a location
    leaves that folder), and the bytes returned hold them inline."""
    path = Path(path)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    try:
        if not path.is_file():
            reason = "is a folder without a model.onnx" if path.is_dir() else "not a regular file"
            raise ArtifactError(f"{path}: {reason}" if path.exists() else f"{path}: no such file")
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ArtifactError(f"{path}: {size / 2**30:.1f} GiB is larger than an ONNX model can be")
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror or exc}") from None
    proto = load_model_bytes(data, str(path))
    if _has_external_data(proto):
        _load_external(proto, path)
        data = proto.SerializeToString()
    return proto, data


def _has_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for _, t in tensors(proto, ""))


def _load_external(proto: onnx.ModelProto, path: Path) -> None:
    """Read every external tensor (initializers, ``Constant`` values, in subgraphs too) from files beside the
    model, then check each against its dims again."""
    folder = path.resolve().parent
    for label, tensor in tensors(proto, str(path)):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        target = external_location(tensor, folder, f"{path}: {label}")
        if not target.is_file():
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            why = "is not a regular file (a folder, pipe or device)" if target.exists() else "is missing"
            raise ArtifactError(f"{path}: {label}: external data file {location!r} {why}")
    try:
        load_external_data_for_model(proto, str(folder))
    except Exception as exc:  # onnx raises ValueError, OSError, ... for short or unreadable data files
        raise ArtifactError(f"{path}: cannot read its external data: {exc}") from None
    for label, tensor in tensors(proto, str(path)):
        check_tensor(tensor, f"{path}: {label}")


def model_from_source(model: onnx.ModelProto | str | Path | bytes) -> tuple[onnx.ModelProto, bytes]:
    """The parsed model and its bytes, from a ModelProto, a path or bytes."""
    if isinstance(model, onnx.ModelProto):
        return model, model.SerializeToString()
    if isinstance(model, (str, Path)):
        return read_model(model)
    return load_model_bytes(model, "model"), model


def load_model_bytes(data: bytes, source: str) -> onnx.ModelProto:
    """Parse ONNX bytes, turning protobuf's errors into a message about the file."""
    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # protobuf raises DecodeError and friends
        raise ArtifactError(f"{source}: not an ONNX model (it does not parse)") from None
    if not proto.graph.node:
        raise ArtifactError(f"{source}: not an ONNX model (it has no graph)")
    check_model(proto, source)
    return proto


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """The inputs a caller feeds: graph inputs that are not initializers, in order."""
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def check_model_matches(model: onnx.ModelProto, cfg: ModelConfig, source: str, need_recurrent: bool = True) -> None:
    """Refuse an ONNX file whose inputs do not fit ``cfg``, or (``need_recurrent``) that has no recurrent
    node: bad input, exit 2. A torch exporter's unrolled graph is verified all the same."""
    if need_recurrent and not recurrent_nodes(model):
        raise ArtifactError(f"{source}: the graph has no GRU, LSTM or RNN node")
    expected = input_names(cfg)
    found = graph_inputs(model)
    if found != expected:
        raise ArtifactError(f"{source}: graph inputs {found} do not match the config, which expects {expected}")


def contract_problems(model: onnx.ModelProto, cfg: ModelConfig) -> list[str]:
    """The graph's inputs and outputs against the README's contract for ``cfg``: names in order, element
    types, ranks, and which axes are the dynamic seq and batch."""
    problems = []
    expected_in = input_names(cfg)
    found_in = graph_inputs(model)
    if found_in != expected_in:
        problems.append(f"graph inputs {found_in} where the contract has {expected_in}, in that order")
    found_out = [o.name for o in model.graph.output]
    expected_out = list(output_names(cfg.cell == "lstm"))
    if found_out != expected_out:
        problems.append(f"graph outputs {found_out} where the contract has {expected_out}, in that order "
                        "(a caller that takes outputs by position gets the wrong tensor)")
    seq_batch = [BATCH, SEQ] if cfg.batch_first else [SEQ, BATCH]
    state: list[str | None] = [None, BATCH, None]
    dims: dict[str, list[str | None]] = {"input": seq_batch + [None], "output": seq_batch + [None], LENGTHS: [BATCH]}
    values = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    for name in set(expected_in + expected_out) & set(values):
        tensor = values[name].type.tensor_type
        want_type = onnx.TensorProto.INT32 if name == LENGTHS else onnx.TensorProto.FLOAT
        if tensor.elem_type != want_type:
            problems.append(f"{name}: element type {onnx.TensorProto.DataType.Name(tensor.elem_type)} where the "
                            f"contract has {onnx.TensorProto.DataType.Name(want_type)}")
        want = dims.get(name, state)
        if len(tensor.shape.dim) != len(want):
            problems.append(f"{name}: rank {len(tensor.shape.dim)} where the contract has {len(want)}")
            continue
        for axis, (dim, role) in enumerate(zip(tensor.shape.dim, want)):
            if role and dim.HasField("dim_value"):
                problems.append(f"{name}: axis {axis} ({role}) is fixed to {dim.dim_value}; it must be dynamic")
    return problems


def model_paths(paths: list[Path]) -> list[Path]:
    """ONNX files and artifact folders to read: a folder that is neither an artifact (no manifest.json) nor holds
    model.onnx stands for the artifact folders and .onnx files inside it. Raises ``ArtifactError`` for a missing
    path, or a folder with nothing to read."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ArtifactError(f"{path}: no such file or folder")
        if path.is_dir() and not (path / MANIFEST_FILE).is_file() and not (path / MODEL_FILE).is_file():
            inside = sorted(p for p in path.iterdir() if not p.name.startswith(".") and (
                (p.is_dir() and (p / MANIFEST_FILE).is_file()) or (p.is_file() and p.suffix == ".onnx")))
            if not inside:
                raise ArtifactError(f"{path}: holds no artifact folder and no .onnx file")
            found += inside
        else:
            found.append(path)
    return found
