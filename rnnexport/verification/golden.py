"""Golden outputs: each case's inputs and the float64 oracle's outputs, saved once (``verify --save-golden DIR``)
and compared against later (``verify --golden DIR``) on a machine that has a runtime but no PyTorch.

    DIR/<name>/golden.json    schema, model sha256, config, versions, cases, the oracle's settings
    DIR/<name>/inputs.npz     the cases' feeds (as report inputs.npz)
    DIR/<name>/expected.npz   the oracle's outputs, float64, keyed <case>/<output>

Comparing imports no torch: the runners are ONNX Runtime and OpenVINO, the statistics and verdict the same
as ``verify``'s.
"""

from __future__ import annotations

import io
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.config import parse_config
from rnnexport.contract import INPUTS_FILE
from rnnexport.errors import ArtifactError
from rnnexport.verification.cases import Case, cases_to_npz, load_cases
from rnnexport.verification.verdict import Tolerances

GOLDEN_FILE, EXPECTED_FILE = "golden.json", "expected.npz"
SCHEMA_VERSION = 1
ORACLE_NAME = "golden outputs of torch-float64-oracle"


def check_golden_target(folder: Path) -> None:
    """Refuse to replace anything at ``folder`` but golden outputs an earlier ``--save-golden`` wrote."""
    if not (folder.exists() or folder.is_symlink()):
        return
    ours = folder.is_dir() and not folder.is_symlink() and (folder / GOLDEN_FILE).is_file() and all(
        p.name in (GOLDEN_FILE, EXPECTED_FILE, INPUTS_FILE) for p in folder.iterdir())
    if not ours:
        raise ArtifactError(f"{folder}: exists and is not golden outputs written by rnnexport; refusing to replace "
                            "it (move it away, or choose another --save-golden folder)")


def stage_golden(staged: Any, target: Any, report: Any, out: Path) -> None:
    """Write ``out/<name>/`` for one verified target into a hidden folder that ``staged`` moves into place."""
    from rnnexport._version import versions
    from rnnexport.verification.runners.torch_runner import Float64Oracle

    folder = out / target.cfg.name
    check_golden_target(folder)
    staging = staged.add_folder(folder)
    oracle = Float64Oracle(target.module)
    expected = {f"{case.name}/{k}": v for case in report.inputs for k, v in oracle.infer(case.feeds).items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **expected)
    index = {"schema_version": SCHEMA_VERSION, "name": target.cfg.name, "model_sha256": report.model_sha256,
             "config": target.cfg.to_dict(), "cases": [c.name for c in report.inputs], "versions": versions(),
             "oracle": report.oracle}
    try:
        (staging / INPUTS_FILE).write_bytes(cases_to_npz(report.inputs))
        (staging / EXPECTED_FILE).write_bytes(buffer.getvalue())
        (staging / GOLDEN_FILE).write_text(json.dumps(index, indent=2, allow_nan=False) + "\n")
    except OSError as exc:
        raise ArtifactError(f"{folder}: cannot write: {exc.strerror or exc}") from None


def golden_folder(path: Path, golden: Path) -> Path:
    """The golden folder for a model at ``path``: ``golden`` itself when it holds golden.json, else
    ``golden/<name>`` where name is the artifact's (or the .onnx file's stem)."""
    if (golden / GOLDEN_FILE).is_file():
        return golden
    name = path.stem
    if path.is_dir():
        try:
            name = json.loads((path / "manifest.json").read_text())["name"]
        except (OSError, ValueError, KeyError, TypeError):
            name = path.name
    if not (golden / name / GOLDEN_FILE).is_file():
        raise ArtifactError(f"{golden}: holds no golden outputs for {name} (expected {golden / name / GOLDEN_FILE})")
    return golden / name


def load_golden(folder: Path) -> tuple[dict[str, Any], list[Case], dict[str, dict[str, np.ndarray]]]:
    """The index, the cases and the expected outputs ``{case: {output: array}}`` of a golden folder."""
    try:
        index = json.loads((folder / GOLDEN_FILE).read_text())
        if not isinstance(index, dict) or index.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {index.get('schema_version') if isinstance(index, dict) else None!r}")
        cfg = parse_config(index["config"], f"{folder / GOLDEN_FILE} [config]")
        cases = load_cases(folder / INPUTS_FILE, cfg)
        expected: dict[str, dict[str, np.ndarray]] = {}
        with np.load(folder / EXPECTED_FILE, allow_pickle=False) as data:
            for key in data.files:
                case, output = key.split("/", 1)
                expected.setdefault(case, {})[output] = data[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{folder}: not readable golden outputs: {exc}") from None
    missing = [c.name for c in cases if c.name not in expected]
    if missing:
        raise ArtifactError(f"{folder}: no expected outputs for case {missing[0]}")
    return index, cases, expected


def verify_golden(model: Any, folder: Path, *, providers: tuple[str, ...] | None = None,
                  runtimes: tuple[str, ...] = ("ort", "openvino"), threads: int = 0,
                  atol: float | None = None, rtol: float | None = None) -> Any:
    """Run the golden cases through every runtime runner and compare with the saved oracle outputs: a
    ``VerifyReport`` like ``verify``'s, made without PyTorch."""
    from rnnexport.graph.reader import check_model_matches, contract_problems, model_from_source
    from rnnexport.verification.engine import VerifyReport, _case_summary, _open_runners, _run_case, default_providers

    start = time.perf_counter()
    index, cases, expected = load_golden(folder)
    cfg = parse_config(index["config"], f"{folder / GOLDEN_FILE} [config]")
    proto, data = model_from_source(model)
    check_model_matches(proto, cfg, str(model) if isinstance(model, (str, Path)) else cfg.name, need_recurrent=False)
    families = tuple(r for r in runtimes if r != "torch")
    with ExitStack() as stack:
        runners, results = _open_runners(stack, None, data, providers or default_providers(), families, threads, {})
        for case in cases:
            _run_case(case, lambda c: expected[c.name], runners, results)
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    oracle = {"name": ORACLE_NAME, "threads": index.get("oracle", {}).get("threads"), "run_seconds": 0.0,
              "golden": str(folder), "golden_model_sha256": index.get("model_sha256"),
              "golden_versions": index.get("versions")}
    return VerifyReport(name=cfg.name, model_sha256=sha, config=cfg.to_dict(),
                        tolerances=Tolerances(cfg.tolerance, atol=atol, rtol=rtol),
                        cases=[_case_summary(c) for c in cases], skipped_cases={}, runners=list(results.values()),
                        oracle=oracle, seconds=time.perf_counter() - start, inputs=cases,
                        contract=contract_problems(proto, cfg))


def golden_note(report: Any) -> str | None:
    """One line when the model is not the one the golden outputs were saved from."""
    saved = report.oracle.get("golden_model_sha256")
    if saved and saved != report.model_sha256:
        return (f"this model (sha256 {report.model_sha256[:12]}…) is not the one the golden outputs were saved "
                f"from ({saved[:12]}…): the comparison says whether it computes the same")
    return None


def golden_targets(paths: list[Path], golden: Path) -> list[tuple[Path, Path]]:
    """(model file, its golden folder) for artifact folders (a folder of them stands for those inside) and
    .onnx files; each must have golden outputs in ``golden``."""
    found = []
    for path in paths:
        if not path.exists():
            raise ArtifactError(f"{path}: no such file or folder")
        if path.is_dir() and not (path / "manifest.json").is_file():
            found += sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())
        else:
            found.append(path)
    if not found:
        raise ArtifactError(f"{', '.join(map(str, paths))}: no artifact folder or .onnx file to compare")
    return [((p / "model.onnx") if p.is_dir() else p, golden_folder(p, golden)) for p in found]


def compare_golden(paths: list[Path], golden: Path, runtimes: tuple[str, ...], providers: tuple[str, ...],
                   threads: int, atol: float | None, rtol: float | None, json_path: Path | None) -> list[tuple]:
    """``verify --golden``: (report, verdict, note) per model, every report also in ``json_path`` when given
    (checked before any work)."""
    from rnnexport.artifacts.folders import write_json_atomic

    if json_path is not None and (json_path.is_dir() or not json_path.parent.is_dir()):
        raise ArtifactError(f"--json {json_path}: expected a file name in an existing folder")
    judged = []
    for model, folder in golden_targets(paths, golden):
        report = verify_golden(model, folder, providers=providers or None, runtimes=runtimes, threads=threads,
                               atol=atol, rtol=rtol)
        verdict = report.judge()
        judged.append((report, verdict, golden_note(report)))
    if json_path is not None:
        write_json_atomic(json_path, {"schema_version": 1, "reports": [r.to_dict(v) for r, v, _ in judged]})
    return judged
