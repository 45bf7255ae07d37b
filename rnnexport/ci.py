"""What CI pipelines need: reproducibility checks, shards, ``index.json``, ONNX test data and JUnit XML."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from onnx import numpy_helper

from .artifacts import MANIFEST_FILE, MODEL_FILE, VARIANT_FILES, WEIGHTS_FILE, StagedWrites, write_json_atomic
from .cases import Case
from .config import ModelConfig
from .errors import ArtifactError
from .pipeline import artifact_files
from .report import REPORT_FILE
from .runners.torch_runner import Float64Oracle
from .targets import Target
from .verdict import Verdict
from .verification import VerifyReport

INDEX_FILE = "index.json"
INDEX_SCHEMA_VERSION = 1


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ArtifactError(f"--shard {text!r}: expected K/N with 1 <= K <= N, for example 2/4")
    return int(match[1]), int(match[2])


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Stable: a config's shard depends only on its name and N, never on which other configs exist."""
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) % n == k - 1


def check_artifact(cfg: ModelConfig, out: Path, module: Any = None, exporter: str = "native",
                   variants: tuple[str, ...] = ()) -> list[str]:
    """Rebuild ``cfg`` in memory (with ``module``'s weights when given, else the seed's, ``exporter`` and
    ``variants``) and compare with ``out/<name>`` byte for byte; one line per difference."""
    folder = out / cfg.name
    if not (folder / MANIFEST_FILE).is_file():
        return [f"{cfg.name}: no artifact at {folder}"]
    problems = []
    fresh = artifact_files(cfg, module, exporter, variants)[1]
    for fname, data in fresh.items():
        path = folder / fname
        if not path.is_file() or path.read_bytes() != data:
            problems.append(f"{cfg.name}: {fname} differs from a fresh build")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for fname in manifest.get("files", {}):
        if fname not in fresh:
            problems.append(f"{cfg.name}: {fname} is in the artifact but a fresh build would not make it")
    if manifest.get("config_sha256") != cfg.sha256():
        problems.append(f"{cfg.name}: the config changed since the artifact was built")
    return problems


def _worst_drift(report: dict[str, Any]) -> float | None:
    """The worst float32 error of any runner (reduced-precision runners are judged on their own scale)."""
    values = [d["max_abs"] for r in report.get("runners", [])
              if r.get("status") == "ok" and r.get("precision", "float32") == "float32"
              for outputs in r.get("drift", {}).values() for d in outputs.values()]
    return max(values) if values else None


def _report_of(folder: Path, model_sha256: str | None) -> dict[str, Any] | None:
    """The folder's report.json when it describes the model now in the folder; else None (not verified)."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("model_sha256") == model_sha256 else None


def write_index(out: Path) -> Path:
    """``out/index.json``: every artifact with its config and model sha256, verdict and worst drift,
    derived from the folders themselves (so shards and reruns never disagree with it, and a run killed
    between an artifact's swap and this rewrite leaves an index that the next build or verify repairs)."""
    entries = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict):
            continue
        model_sha256 = manifest.get("files", {}).get(MODEL_FILE, {}).get("sha256")
        report = _report_of(folder, model_sha256)
        entries.append({
            "name": folder.name,
            "config_sha256": manifest.get("config_sha256"),
            "model_sha256": model_sha256,
            "weights_sha256": manifest.get("files", {}).get(WEIGHTS_FILE, {}).get("sha256"),
            "variants": {kind: manifest["files"][name].get("sha256") for kind, name in VARIANT_FILES.items()
                         if name in manifest.get("files", {})},
            "verified": report is not None,
            "passed": report.get("passed") if report else None,
            "worst_drift": _worst_drift(report) if report else None,
        })
    index = {"schema_version": INDEX_SCHEMA_VERSION, "artifacts": entries}
    try:
        unchanged = json.loads((out / INDEX_FILE).read_text()) == index
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:  # a true index is left as it is, mtime included
        write_json_atomic(out / INDEX_FILE, index)
    return out / INDEX_FILE


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


def junit_xml(judged: list[tuple[VerifyReport, Verdict]]) -> str:
    """One ``<testcase>`` per config × runner × case: failure on drift, skipped when the runner could not run."""
    suites = ET.Element("testsuites", name="rnnexport verify")
    for report, verdict in judged:
        problems = verdict.problems
        suite = ET.SubElement(suites, "testsuite", name=report.name)
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        case_names = [c["name"] for c in report.cases]
        for runner in report.runners:
            for case in case_names:
                counts["tests"] += 1
                element = ET.SubElement(suite, "testcase", classname=f"{report.name}.{runner.name}", name=case)
                mine = [p.text for p in problems if p.runner == runner.name and p.case in (case, None)]
                if mine:
                    counts["failures"] += 1
                    ET.SubElement(element, "failure", message=mine[0]).text = "\n".join(mine)
                elif runner.status != "ok":
                    counts["skipped"] += 1
                    ET.SubElement(element, "skipped", message=f"{runner.status}: {runner.reason}")
        suite.attrib.update({k: str(v) for k, v in counts.items()})
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
