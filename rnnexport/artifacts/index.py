"""``index.json`` beside the artifact folders, and the stable shards of a CI matrix."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from rnnexport.artifacts.folders import write_json_atomic
from rnnexport.contract import INDEX_FILE, MANIFEST_FILE, MODEL_FILE, REPORT_FILE, VARIANT_FILES, WEIGHTS_FILE
from rnnexport.errors import NOTES, ArtifactError

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


def _worst_drift(report: dict[str, Any]) -> float | None:
    """The worst float32 error of any runner (reduced-precision runners are judged on their own scale); None
    when the report does not have the shape verify writes."""
    values = []
    for runner in report.get("runners", []) if isinstance(report.get("runners"), list) else []:
        if not isinstance(runner, dict) or runner.get("status") != "ok" \
                or runner.get("precision", "float32") != "float32":
            continue
        drift = runner.get("drift")
        for outputs in drift.values() if isinstance(drift, dict) else []:
            for d in outputs.values() if isinstance(outputs, dict) else []:
                value = d.get("max_abs") if isinstance(d, dict) else None
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values.append(float(value))
    return max(values) if values else None


def _report_of(folder: Path, model_sha256: str | None) -> dict[str, Any] | None:
    """The folder's report.json when it describes the model now in the folder; else None (not verified)."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("model_sha256") == model_sha256 else None


def _report_problem(report: dict[str, Any]) -> str | None:
    """What keeps a report.json from being one verify wrote: ``passed`` true or false, ``runners`` a list of
    tables each with a ``name``."""
    if not isinstance(report.get("passed"), bool):
        return f"'passed' is {report.get('passed')!r:.40}, not true or false"
    runners = report.get("runners")
    if not isinstance(runners, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                                for r in runners):
        return "'runners' is not a list of runners"
    return None


def _sha(files: dict[str, Any], name: str) -> str | None:
    entry = files.get(name)
    value = entry.get("sha256") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


def _entry(folder: Path) -> dict[str, Any] | str | None:
    """The index entry of an artifact folder; a reason (str) when its manifest is malformed; None when the
    folder holds no manifest (not an artifact)."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"unreadable {MANIFEST_FILE} ({exc})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or _sha(files, MODEL_FILE) is None:
        return f"its {MANIFEST_FILE} has no 'files' table with {MODEL_FILE} and its sha256"
    model_sha256 = _sha(files, MODEL_FILE)
    report = _report_of(folder, model_sha256)
    if report is not None and (problem := _report_problem(report)):
        NOTES.warning(f"{folder}: its {REPORT_FILE} is listed as not verified in {INDEX_FILE}: {problem}")
        report = None
    passed = report.get("passed") if report else None
    config_sha256 = manifest.get("config_sha256")
    return {
        "name": folder.name,
        "config_sha256": config_sha256 if isinstance(config_sha256, str) else None,
        "model_sha256": model_sha256,
        "weights_sha256": _sha(files, WEIGHTS_FILE),
        "variants": {kind: _sha(files, name) for kind, name in VARIANT_FILES.items() if name in files},
        "verified": report is not None,
        "passed": passed if isinstance(passed, bool) else None,
        "worst_drift": _worst_drift(report) if report else None,
    }


def check_index_target(out: Path) -> None:
    """Refuse, before any work, an ``out/index.json`` that rnnexport could not replace (a folder, a link)."""
    index = out / INDEX_FILE
    if index.is_symlink() or (index.exists() and not index.is_file()):
        raise ArtifactError(f"{index}: is not a file; rnnexport writes its index of the artifacts there (move it "
                            "away, or choose another --out)")


def write_index(out: Path) -> Path:
    """``out/index.json``: every artifact with its config and model sha256, verdict and worst drift,
    derived from the folders themselves (so shards and reruns never disagree with it, and a run killed
    between an artifact's swap and this rewrite leaves an index that the next build or verify repairs).
    A folder whose manifest is malformed is left out with a note (``errors.NOTES``), never a crash."""
    check_index_target(out)
    entries = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry = _entry(folder)
        if isinstance(entry, str):
            NOTES.warning(f"{folder}: left out of {INDEX_FILE}: {entry}")
        elif entry is not None:
            entries.append(entry)
    index = {"schema_version": INDEX_SCHEMA_VERSION, "artifacts": entries}
    try:
        unchanged = json.loads((out / INDEX_FILE).read_text()) == index
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:  # a true index is left as it is, mtime included
        write_json_atomic(out / INDEX_FILE, index)
    return out / INDEX_FILE
