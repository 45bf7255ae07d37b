"""``verify --export-test-data``: each model and its cases in ONNX's test-case layout, for any runtime's harness."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from rnnexport.artifacts.folders import StagedWrites
from rnnexport.artifacts.targets import Target
from rnnexport.contract import MODEL_FILE
from rnnexport.errors import ArtifactError
from rnnexport.verification.cases import Case
from rnnexport.verification.runners.torch_runner import Float64Oracle


def export_test_data(target: Target, cases: list[Case], out: Path) -> Path:
    """``out/<name>/model.onnx`` and ``test_data_set_N/{input,output}_K.pb`` in ONNX's test-case layout.

    Expected outputs are PyTorch's float64 oracle, cast to the model's float32. Streaming cases (several
    calls) are left out: a test data set is one call.
    """
    with StagedWrites() as staged:
        stage_test_data(staged, target, cases, out)
    return out / target.cfg.name


def stage_test_data(staged: StagedWrites, target: Target, cases: list[Case], out: Path) -> None:
    """Write the test data of ``export_test_data`` into a hidden folder that ``staged`` moves into place."""
    folder = out / target.cfg.name
    check_test_data_target(folder)
    staging = staged.add_folder(folder)
    try:
        (staging / MODEL_FILE).write_bytes(target.model.SerializeToString())
        oracle = Float64Oracle(target.module)
        input_names = [i.name for i in target.model.graph.input]
        output_names = [o.name for o in target.model.graph.output]
        for number, case in enumerate(c for c in cases if not c.chunks):
            data_set = staging / f"test_data_set_{number}"
            data_set.mkdir()
            expected = oracle.infer(case.feeds)
            for k, name in enumerate(input_names):
                _write_tensor(data_set / f"input_{k}.pb", case.feeds[name], name)
            for k, name in enumerate(output_names):
                _write_tensor(data_set / f"output_{k}.pb", expected[name].astype(np.float32), name)
    except OSError as exc:
        raise ArtifactError(f"{folder}: cannot write: {exc.strerror or exc}") from None
    check_test_data_target(folder)


def check_test_data_target(folder: Path) -> None:
    """Refuse to replace anything at ``folder`` but an ONNX test-case folder (model.onnx and
    test_data_set_N folders only), such as an earlier ``--export-test-data`` wrote."""
    if not (folder.exists() or folder.is_symlink()):
        return
    ours = folder.is_dir() and not folder.is_symlink() and all(
        (p.name == MODEL_FILE and p.is_file()) or (re.fullmatch(r"test_data_set_\d+", p.name) and p.is_dir())
        for p in folder.iterdir())
    if not ours:
        raise ArtifactError(f"{folder}: exists and is not ONNX test data written by rnnexport; refusing to replace "
                            "it (move it away, or choose another --export-test-data folder)")


def _write_tensor(path: Path, array: np.ndarray, name: str) -> None:
    path.write_bytes(numpy_helper.from_array(array, name).SerializeToString())
