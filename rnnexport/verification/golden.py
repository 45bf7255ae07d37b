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
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport._version import versions
from rnnexport.artifacts.folders import load_artifact
from rnnexport.artifacts.targets import Target
from rnnexport.config import parse_config
from rnnexport.contract import DEFAULT_THREADS, INPUTS_FILE, MANIFEST_FILE
from rnnexport.errors import ArtifactError
from rnnexport.graph.reader import check_model_matches, contract_problems, model_from_source
from rnnexport.verification.cases import Case, cases_to_npz, load_cases, output_shapes
from rnnexport.verification.engine import default_providers, lengths_unread, run_engine, runtime_specs, thread_plan
from rnnexport.verification.results import VerifyReport
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
    from rnnexport.verification.runners.torch_runner import Float64Oracle

    folder = out / target.cfg.name
    check_golden_target(folder)
    staging = staged.add_folder(folder)
    oracle = Float64Oracle(target.module)
    # Any, not np.ndarray: numpy's stub would check the arrays against savez_compressed's allow_pickle: bool
    expected: dict[str, Any] = {f"{case.name}/{k}": v for case in report.inputs
                                for k, v in oracle.infer(case.feeds).items()}
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
            name = json.loads((path / MANIFEST_FILE).read_text())["name"]
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
    listed = index.get("cases")
    if sorted(c.name for c in cases) != sorted(listed if isinstance(listed, list) else []):
        raise ArtifactError(f"{folder}: {INPUTS_FILE} holds cases {sorted(c.name for c in cases)}, but {GOLDEN_FILE} "
                            f"lists {listed!r:.200}")
    missing = [c.name for c in cases if c.name not in expected]
    if missing:
        raise ArtifactError(f"{folder}: no expected outputs for case {missing[0]}")
    return index, cases, expected


class GoldenOracle:
    """Outputs an earlier run of the float64 oracle saved: ``expected(case)`` reads them back."""

    def __init__(self, folder: Path, index: dict[str, Any], expected: dict[str, dict[str, np.ndarray]]):
        self.name, self.saved = ORACLE_NAME, expected
        recorded = index.get("oracle")
        oracle = recorded if isinstance(recorded, dict) else {}
        self.settings = {"threads": oracle.get("threads"), "golden": str(folder),
                         "golden_model_sha256": index.get("model_sha256"), "golden_versions": index.get("versions")}

    def expected(self, case: Case) -> dict[str, np.ndarray]:
        return self.saved[case.name]


def verify_golden(model: Any, folder: Path, *, providers: tuple[str, ...] | None = None,
                  runtimes: tuple[str, ...] = ("ort", "openvino"), threads: int | str = DEFAULT_THREADS,
                  atol: float | None = None, rtol: float | None = None, case_names: tuple[str, ...] = (),
                  variants: dict[str, bytes | str] | None = None) -> VerifyReport:
    """Run the golden cases (those of ``case_names``, default all) through every runtime runner and compare
    with the saved oracle outputs: the engine's ``VerifyReport``, made without PyTorch. ``variants`` (an
    artifact's deployment variants) run beside the model, as in ``verify``."""
    start = time.perf_counter()
    threads, ahead = thread_plan(threads)
    index, cases, expected = load_golden(folder)
    cfg = parse_config(index["config"], f"{folder / GOLDEN_FILE} [config]")
    proto, data = model_from_source(model)
    check_model_matches(proto, cfg, str(model) if isinstance(model, (str, Path)) else cfg.name, need_recurrent=False)
    if case_names:
        cases = [c for c in cases if c.name in case_names]
        if not cases:
            raise ArtifactError(f"{folder}: holds none of the chosen cases ({', '.join(case_names)}); it holds "
                                f"{', '.join(sorted(expected))}")
    outputs = [o.name for o in proto.graph.output]
    for case in cases:
        missing = [o for o in outputs if o not in expected[case.name]]
        if missing:
            raise ArtifactError(f"{folder}: no expected output {missing[0]} for case {case.name}; the model has "
                                f"{', '.join(outputs)}")
        for name, shape in output_shapes(cfg, case.feeds["input"].shape).items():
            saved = expected[case.name].get(name)
            if saved is not None and (saved.shape != shape or saved.dtype.kind != "f"):
                raise ArtifactError(f"{folder}: expected output {name} of case {case.name} is {saved.dtype} "
                                    f"{list(saved.shape)}; its inputs make {list(shape)} of real numbers")
    runtimes = tuple(r for r in runtimes if r != "torch")
    specs = runtime_specs(data, providers or default_providers(runtimes), runtimes, threads, variants)
    return run_engine(cfg.name, data, GoldenOracle(folder, index, expected), cases, specs, config=cfg.to_dict(),
                      tolerances=Tolerances(cfg.tolerance, atol=atol, rtol=rtol),
                      contract=contract_problems(proto, cfg), start=start,
                      no_lengths=lengths_unread(specs, proto, data, variants or {}), ahead=ahead)


def golden_targets(paths: list[Path], golden: Path) -> list[Target]:
    """A target per artifact folder (a folder of them stands for those inside; the manifest is checked first)
    or .onnx file, each with its golden folder in ``golden`` and the config saved there; an artifact's
    deployment variants join in. Nothing here imports torch."""
    if not golden.is_dir():
        raise ArtifactError(f"--golden {golden}: no such folder")
    found = []
    for path in paths:
        if not path.exists():
            raise ArtifactError(f"{path}: no such file or folder")
        if path.suffix == ".toml" or (path.is_dir() and any(path.glob("*.toml"))):
            raise ArtifactError(f"{path}: a config; --golden compares artifact folders and .onnx files (build it "
                                "first)")
        if path.is_dir() and not (path / MANIFEST_FILE).is_file():
            found += sorted(p for p in path.iterdir() if (p / MANIFEST_FILE).is_file())
        else:
            found.append(path)
    if not found:
        raise ArtifactError(f"{', '.join(map(str, paths))}: no artifact folder or .onnx file to compare")
    targets = []
    for path in found:
        folder = golden_folder(path, golden)
        cfg = load_golden(folder)[0]["config"]
        variants: dict[str, bytes | str] = {}
        if path.is_dir():
            artifact = load_artifact(path)
            model_path = artifact.model_path
            variants = {k: p.read_bytes() for k, p in artifact.variant_paths().items()}
        else:
            model_path = path
        targets.append(Target(parse_config(cfg, f"{folder / GOLDEN_FILE} [config]"), None,
                              model_from_source(model_path)[0], variants=variants, golden=folder))
    return targets
