"""rnnexport: stacked GRU/LSTM/RNN from PyTorch to ONNX, with measured drift.

    cfg = rnnexport.load_config("configs/gru_2layer.toml")
    module = rnnexport.build_model(cfg)
    model = rnnexport.export_onnx(module, opset=cfg.opset)
    report = rnnexport.verify(module, model)
    assert report.passed(), report.failures()

Names are imported on first use, so ``import rnnexport`` (and ``rnnexport --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_WHERE = {
    "build_model": "builders", "ModelConfig": "config", "Tolerance": "config", "load_config": "config",
    "load_configs": "config", "ArtifactError": "errors", "ConfigError": "errors", "ExportError": "errors",
    "ProviderUnavailable": "errors", "RnnExportError": "errors", "RunnerFailed": "errors",
    "RunnerUnavailable": "errors", "export_onnx": "onnx_export", "build_artifact": "pipeline",
    "Policy": "verdict", "Tolerances": "verdict", "Verdict": "verdict", "VerifyReport": "verification",
    "verify": "verification", "Outputs": "jobs", "VerifyOptions": "jobs", "verify_targets": "jobs",
    "load_targets": "targets", "export_model": "wholemodel", "verify_model": "wholemodel",
    "WholeModel": "wholemodel", "InputSpec": "wholemodel",
}
__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rnnexport' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
