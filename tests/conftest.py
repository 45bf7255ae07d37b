from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "configs").glob("*.toml"))
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA_EP:
        return
    skip = pytest.mark.skip(reason="ONNX Runtime's CUDAExecutionProvider is not available on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def max_abs_diff(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> float:
    """Largest |actual - expected| over every output; both must have the same outputs and shapes."""
    assert expected.keys() == actual.keys()
    for name in expected:
        assert expected[name].shape == actual[name].shape, name
    return max(float(np.abs(actual[k].astype(np.float64) - expected[k]).max()) for k in expected)


def write_config(folder: Path, text: str, name: str = "model.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to show that a failed command changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
