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

STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
            "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _Record:
    """An object of a TorchScript class: only its attributes are kept."""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride])
    return torch.from_numpy(view.copy())


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__."):
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
        if storage not in STORAGES:
            raise pickle.UnpicklingError(f"a {storage}")
        return np.frombuffer(self.archive.read(f"{self.root}/data/{key}"), dtype=STORAGES[storage])


def read_archive(path: Path) -> dict[str, Any]:
    """The archive's module as nested dicts of its tensors (submodules as dicts under their names)."""
    try:
        with zipfile.ZipFile(path) as archive:
            root = archive.namelist()[0].split("/", 1)[0]
            top = _Unpickler(archive.read(f"{root}/data.pkl"), archive, root).load()
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: a TorchScript archive whose weights cannot be read safely ({exc}); save a "
                            "state_dict instead: torch.save(model.state_dict(), 'weights.pt')") from None
    return _as_dict(top)


def _as_dict(value: Any) -> Any:
    if isinstance(value, _Record):
        value = value.state
    if isinstance(value, dict):
        return {k: _as_dict(v) for k, v in value.items() if isinstance(v, (torch.Tensor, dict, _Record))}
    return value
