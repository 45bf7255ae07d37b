"""``rnnexport export-model package.module:factory``: the user's factory, imported and called, and what it returns
checked before torch sees it. Any failure of the user's code is one ``ExportError`` naming the file and line.

    made = load_factory("mymodels:tagger")   # the current folder is importable
    made.model, made.example_inputs, made.dynamic_shapes
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnexport.config import Tolerance
from rnnexport.errors import ExportError

SPEC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


@dataclass
class WholeModel:
    """What a factory for ``rnnexport export-model pkg.module:factory`` returns: the model, example inputs (tensors,
    or tuples and lists of them), and the names of their dynamic dims (``"batch"`` and ``"seq"``), inputs and
    outputs, and optionally the tolerance to judge it at and ``InputSpec``s for inputs whose values the defaults
    cannot draw (an integer input no ``nn.Embedding`` bounds, say)."""

    model: nn.Module
    example_inputs: tuple
    dynamic_shapes: Any = None
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    tolerance: Tolerance | None = None
    specs: list[Any] | None = None  # verification.whole_model.InputSpec per graph input, where the defaults won't do


def load_factory(spec: str) -> WholeModel:
    """``package.module:factory`` → the checked ``WholeModel`` the factory returns.

    Raises ``ExportError`` (one line, the user's file and line where there is one) for a malformed spec, a module
    that does not import (SyntaxError, an exception at import), a factory that is missing, not callable, raises,
    recurses, calls ``sys.exit``, or returns anything but a ``WholeModel`` of an ``nn.Module`` and tensors."""
    if not SPEC.fullmatch(spec):
        raise ExportError(f"{spec!r}: expected package.module:factory (dotted names, no paths)")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ExportError(f"{spec}: no module {exc.name} in the current folder or installed") from None
        raise ExportError(f"{spec}: importing {module_name} failed: {user_error(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise ExportError(f"{spec}: importing {module_name} failed: {user_error(exc)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ExportError(f"{spec}: {module_name} has no function {attr}")
    try:
        made = factory()
    except (Exception, SystemExit) as exc:
        raise ExportError(f"{spec}: the factory failed: {user_error(exc)}") from None
    if not isinstance(made, WholeModel):
        raise ExportError(f"{spec}: the factory returned {type(made).__name__}; expected rnnexport.WholeModel")
    check_whole_model(made, spec)
    return made


def check_whole_model(made: WholeModel, source: str) -> None:
    """The model is an ``nn.Module``; the example inputs a tuple of float32 or integer tensors (or tuples and lists
    of them); ``dynamic_shapes`` one entry per input. Raises ``ExportError`` naming what is wrong."""
    if not isinstance(made.model, nn.Module):
        raise ExportError(f"{source}: WholeModel.model is {type(made.model).__name__}; expected a torch.nn.Module")
    if not isinstance(made.example_inputs, (tuple, list)) or not made.example_inputs:
        raise ExportError(f"{source}: WholeModel.example_inputs must be a non-empty tuple of tensors")
    leaves, _ = torch.utils._pytree.tree_flatten(tuple(made.example_inputs))
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            raise ExportError(f"{source}: an example input is {type(leaf).__name__}; expected tensors (or tuples and "
                              "lists of them)")
        if leaf.is_floating_point() and leaf.dtype != torch.float32:
            raise ExportError(f"{source}: an example input is {leaf.dtype}; expected float32 (the ONNX graph's "
                              "inputs are float32)")
        if leaf.numel() == 0:
            raise ExportError(f"{source}: an example input of shape {list(leaf.shape)} is empty")
    shapes = made.dynamic_shapes
    if shapes is not None and (not isinstance(shapes, (tuple, list)) or len(shapes) != len(made.example_inputs)):
        raise ExportError(f"{source}: dynamic_shapes must be a tuple with one entry per example input "
                          f"({len(made.example_inputs)})")
    names = made.input_names
    if names is not None and (not isinstance(names, (tuple, list)) or len(names) != len(leaves)
                              or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
        raise ExportError(f"{source}: input_names must be {len(leaves)} distinct names, one per example input "
                          f"tensor; found {names!r:.100}")
    for name, tensor in [*made.model.named_parameters(), *made.model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ExportError(f"{source}: the model's {name} holds NaN or infinite values; every output they reach "
                              "would be NaN, so there is nothing to verify")


def user_error(exc: BaseException) -> str:
    """``Type: message`` of an exception in the user's code, with the innermost frame of a file outside torch and
    rnnexport (``at mymodels.py:12``)."""
    if isinstance(exc, SystemExit):
        text = f"it called sys.exit({exc.code!r})"
    elif isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} at {Path(exc.filename or '?').name}:{exc.lineno}"
    else:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    where = user_frame(traceback.extract_tb(exc.__traceback__))
    return f"{text} (at {where})" if where else text


def user_frame(frames: list[traceback.FrameSummary]) -> str | None:
    """``file.py:line`` of the innermost frame outside the Python library, torch and rnnexport."""
    ours = (Path(torch.__file__).parent, Path(__file__).parent.parent, Path(os.__file__).parent)
    for frame in reversed(frames):
        path = Path(frame.filename)
        if not any(path.is_relative_to(root) for root in ours) and not frame.filename.startswith("<"):
            return f"{path.name}:{frame.lineno}"
    return None
