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

from rnnexport._version import __version__

_WHERE = {
    "build_model": "export.builders", "ModelConfig": "config", "Tolerance": "config", "load_config": "config",
    "load_configs": "config", "ArtifactError": "errors", "ConfigError": "errors", "ExportError": "errors",
    "ProviderUnavailable": "errors", "RnnExportError": "errors", "RunnerFailed": "errors",
    "RunnerUnavailable": "errors", "export_onnx": "export.native", "build_artifact": "artifacts.build",
    "Policy": "verification.verdict", "Tolerances": "verification.verdict", "Verdict": "verification.verdict",
    "VerifyReport": "verification.results", "verify": "verification.engine", "Outputs": "jobs",
    "VerifyOptions": "jobs", "verify_targets": "jobs", "load_targets": "artifacts.targets",
    "export_model": "export.whole_model", "verify_model": "verification.whole_model",
    "WholeModel": "export.whole_model", "InputSpec": "verification.whole_model",
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
