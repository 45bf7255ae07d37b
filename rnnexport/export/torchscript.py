"""The tensors of a TorchScript archive (``torch.jit.save``), read without running any of its code.

The archive's ``data.pkl`` is unpickled with a loader that knows three things only: tensors (rebuilt here
from the archive's storages with numpy), dicts, and ``__torch__`` classes, which become plain records of
their attributes. Anything else in the pickle is refused.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnexport.errors import ArtifactError

MAX_DEPTH = 64  # submodules (and dicts) inside each other; real models nest a handful deep

STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
            "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _Record:
    """An object of a TorchScript class: only its attributes are kept."""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


MAX_ELEMENTS = 2**28  # per tensor: 1 GiB of float32, far beyond any recurrent layer's weights
MAX_STORAGE_BYTES = 2**32


def _rebuild_tensor(storage: np.ndarray, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """The tensor ``storage[offset + sum(i_k * stride_k)]``, after checking that every element it reads lies
    inside ``storage``: the numbers come from the archive, and numpy trusts them (reading past the storage is
    a segfault or someone else's memory)."""
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError("a tensor without a storage")
    offset, size, stride = _index(offset, "offset"), _indices(size, "size"), _indices(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"a tensor of {len(size)} sizes and {len(stride)} strides")
    count = int(np.prod(size, dtype=object)) if size else 1
    if count > MAX_ELEMENTS:
        raise pickle.UnpicklingError(f"a tensor of {count:,} elements (at most {MAX_ELEMENTS:,})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if count else offset - 1
    if count and last >= storage.size:
        raise pickle.UnpicklingError(f"a tensor reaching element {last:,} of a storage of {storage.size:,}")
    if offset > storage.size:
        raise pickle.UnpicklingError(f"a tensor at offset {offset:,} of a storage of {storage.size:,}")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride])
    return torch.from_numpy(view.copy())


def _index(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**62:
        raise pickle.UnpicklingError(f"a tensor {what} of {value!r:.40}")
    return value


def _indices(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple) or len(values) > 16:
        raise pickle.UnpicklingError(f"a tensor {what} of {values!r:.40}")
    return tuple(_index(v, what) for v in values)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):  # bare: a class defined in a script
            return type(name, (_Record,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch.jit._pickle" and name.startswith("build_") and name.endswith("list"):
            return list
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):  # a list's or dict's element type
            return lambda value, type_tag: value
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda tensor, requires_grad, hooks: tensor
        if module == "torch" and name in STORAGES:
            return name
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        _, storage, key, _, _ = pid
        if not isinstance(key, str):
            raise pickle.UnpicklingError(f"a storage key {key!r:.40}")
        if storage not in STORAGES:
            raise pickle.UnpicklingError(f"a {storage}")
        name = f"{self.root}/data/{key}"
        if self.archive.getinfo(name).file_size > MAX_STORAGE_BYTES:
            raise pickle.UnpicklingError(f"a storage of more than {MAX_STORAGE_BYTES:,} bytes")
        return np.frombuffer(self.archive.read(name), dtype=STORAGES[storage])


def read_archive(path: Path) -> dict[str, Any]:
    """The archive's module as nested dicts of its tensors (submodules as dicts under their names)."""
    try:
        with zipfile.ZipFile(path) as archive:
            root = archive.namelist()[0].split("/", 1)[0]
            top = _Unpickler(archive.read(f"{root}/data.pkl"), archive, root).load()
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: a TorchScript archive whose weights cannot be read safely ({exc}); save a "
                            "state_dict instead: torch.save(model.state_dict(), 'weights.pt')") from None
    return _as_dict(top, path)


def _as_dict(value: Any, path: Path, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ArtifactError(f"{path}: submodules nested more than {MAX_DEPTH} deep")
    if isinstance(value, _Record):
        value = value.state
    if isinstance(value, dict):
        return {k: _as_dict(v, path, depth + 1) for k, v in value.items()
                if isinstance(v, (torch.Tensor, dict, _Record))}
    return value
