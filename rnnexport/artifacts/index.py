"""``index.json`` beside the artifact folders, and the stable shards of a CI matrix."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from rnnexport.artifacts.folders import write_json_atomic
from rnnexport.contract import INDEX_FILE, MANIFEST_FILE, MODEL_FILE, REPORT_FILE, VARIANT_FILES, WEIGHTS_FILE
from rnnexport.errors import ArtifactError

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
