"""The build stages composed: config → module → ONNX → artifact folder."""

from __future__ import annotations

import io
import platform
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from . import __version__
from .artifacts import MODEL_FILE, WEIGHTS_FILE, sha256_file, write_artifact
from .builders import RecurrentModule, build_model
from .checkpoints import module_from_weights
from .config import ModelConfig
from .exporters import exporter_versions, torch_export
from .onnx_export import export_onnx, op_counts


def export_config(cfg: ModelConfig, module: RecurrentModule | None = None, exporter: str = "native"
                  ) -> tuple[RecurrentModule, onnx.ModelProto]:
    """Build (or take) the module for ``cfg`` and export it with the config's opset and inputs, with
    rnnexport's own writer or one of PyTorch's exporters (``EXPORTERS``)."""
    module = build_model(cfg) if module is None else module
    if exporter != "native":
        return module, torch_export(module, cfg, exporter)
    model = export_onnx(
        module,
        opset=cfg.opset,
        initial_state=cfg.inputs.initial_state,
        variable_lengths=cfg.inputs.variable_lengths,
        metadata={"config_sha256": cfg.sha256(), "name": cfg.name},
    )
    return module, model


def versions(exporter: str = "native") -> dict[str, str]:
    found = {
        "rnnexport": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return found if exporter == "native" else {**found, **exporter_versions()}


def _io_dims(values: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
            "dims": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
        }
        for v in values
    ]


def manifest_for(cfg: ModelConfig, model: onnx.ModelProto, exporter: str = "native",
                 weights_origin: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything about an artifact except its files' hashes (added by ``write_artifact``)."""
    return {
        "name": cfg.name,
        "exporter": exporter,
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "weights_origin": weights_origin or {"kind": "seed", "seed": cfg.seed},
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), cfg.opset),
        "inputs": _io_dims(model.graph.input),
        "outputs": _io_dims(model.graph.output),
        "op_counts": op_counts(model),
        "versions": versions(exporter),
    }


def artifact_files(cfg: ModelConfig, module: RecurrentModule | None = None, exporter: str = "native"
                   ) -> tuple[onnx.ModelProto, dict[str, bytes]]:
    """The model, and the bytes of ``model.onnx`` and ``weights.pt`` (deterministic for ``native``)."""
    module, model = export_config(cfg, module, exporter)
    weights = io.BytesIO()
    torch.save(module.state_dict(), weights)
    return model, {MODEL_FILE: model.SerializeToString(), WEIGHTS_FILE: weights.getvalue()}


def build_artifact(cfg: ModelConfig, out: str | Path, *, exporter: str = "native", weights: str | Path | None = None,
                   prefix: str | None = None) -> Path:
    """Build ``cfg`` and write ``out/<name>/`` atomically. ``weights``: a state_dict or checkpoint file
    to take the weights from (the recurrent module found alone, or under ``prefix``) instead of the
    config's seed. Returns the artifact folder."""
    module, origin = None, None
    if weights:
        module, found = module_from_weights(cfg, weights, prefix)
        origin = {"kind": "file", "file": Path(weights).name, "sha256": sha256_file(Path(weights)), "prefix": found}
    model, files = artifact_files(cfg, module, exporter)
    return write_artifact(out, cfg, files, manifest_for(cfg, model, exporter, origin))
