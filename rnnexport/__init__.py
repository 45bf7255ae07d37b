"""rnnexport: stacked GRU/LSTM/RNN from PyTorch to ONNX, with measured drift.

    cfg = rnnexport.load_config("configs/gru_2layer.toml")
    module = rnnexport.build_model(cfg)
    model = rnnexport.export_onnx(module, opset=cfg.opset)
"""

__version__ = "0.1.0"

from .config import ModelConfig, load_config, load_configs  # noqa: E402
from .errors import ArtifactError, ConfigError, ExportError, ProviderUnavailable, RnnExportError  # noqa: E402


def __getattr__(name):
    # torch and onnx take seconds to import; load them only when their API is used.
    if name == "build_model":
        from .builders import build_model
        return build_model
    if name == "export_onnx":
        from .onnx_export import export_onnx
        return export_onnx
    raise AttributeError(f"module 'rnnexport' has no attribute {name!r}")


__all__ = [
    "ArtifactError", "ConfigError", "ExportError", "ModelConfig", "ProviderUnavailable", "RnnExportError",
    "build_model", "export_onnx", "load_config", "load_configs",
]
