"""rnnexport: stacked GRU/LSTM/RNN from PyTorch to ONNX, with measured drift.

    cfg = rnnexport.load_config("configs/gru_2layer.toml")
    module = rnnexport.build_model(cfg)
    model = rnnexport.export_onnx(module, opset=cfg.opset)
    report = rnnexport.verify(module, model)
    assert report.passed(), report.failures()
"""

__version__ = "0.1.0"

from .builders import build_model  # noqa: E402
from .config import ModelConfig, load_config, load_configs  # noqa: E402
from .errors import ArtifactError, ConfigError, ExportError, ProviderUnavailable, RnnExportError  # noqa: E402
from .onnx_export import export_onnx  # noqa: E402
from .pipeline import build_artifact  # noqa: E402
from .verify import Tolerances, VerifyReport, verify  # noqa: E402

__all__ = [
    "ArtifactError", "ConfigError", "ExportError", "ModelConfig", "ProviderUnavailable", "RnnExportError",
    "Tolerances", "VerifyReport", "build_artifact", "build_model", "export_onnx", "load_config", "load_configs",
    "verify",
]
