"""Artifact folders: contents, integrity checks, and atomic replacement."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import SHIPPED

import rnnexport.artifacts.folders as artifacts
from rnnexport.artifacts.build import build_artifact
from rnnexport.artifacts.folders import load_artifact
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.errors import ArtifactError
from rnnexport.export.builders import build_model

GRU = next(p for p in SHIPPED if p.stem == "gru_2layer")


@pytest.fixture
def artifact(tmp_path):
    return build_artifact(load_config(GRU), tmp_path / "out")


def test_artifact_holds_model_weights_and_manifest(artifact):
    assert sorted(p.name for p in artifact.iterdir()) == ["manifest.json", "model.onnx", "weights.pt"]
    manifest = json.loads((artifact / "manifest.json").read_text())
    cfg = load_config(GRU)
    assert manifest["schema_version"] == 1
    assert manifest["config"] == cfg.to_dict() and manifest["config_sha256"] == cfg.sha256()
    assert manifest["op_counts"]["GRU"] == cfg.num_layers
    assert [i["name"] for i in manifest["inputs"]] == ["input"]
    assert [o["dims"] for o in manifest["outputs"]] == [["seq", "batch", 32], [2, "batch", 32]]
    assert set(manifest["versions"]) >= {"rnnexport", "torch", "onnx", "onnxruntime"}
    state = torch.load(artifact / "weights.pt", weights_only=True)
    expected = build_model(cfg).state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    onnx.checker.check_model(str(artifact / "model.onnx"), full_check=True)
    loaded = load_artifact(artifact)
    assert loaded.config == cfg


@pytest.mark.parametrize("victim", ["model.onnx", "weights.pt"])
def test_tampered_file_is_detected(artifact, victim):
    with open(artifact / victim, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match=rf"{victim}: sha256 \w+… does not match the manifest's \w+…; "
                                            "the file was changed after it was built"):
        load_artifact(artifact)


def test_unknown_schema_version_is_refused(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="schema_version 99 is not supported; this rnnexport reads 1"):
        load_artifact(artifact)


def test_rebuild_replaces_the_artifact_and_leaves_no_temporaries(artifact):
    old_inode = (artifact / "model.onnx").stat().st_ino
    again = build_artifact(load_config(GRU), artifact.parent)
    assert again == artifact and (artifact / "model.onnx").stat().st_ino != old_inode
    assert sorted(p.name for p in artifact.parent.iterdir()) == ["gru_2layer"]
    load_artifact(artifact)


def test_failure_mid_write_keeps_the_previous_artifact(artifact, monkeypatch):
    before = {p.name: p.read_bytes() for p in artifact.iterdir()}
    real_write = artifacts._write_synced

    def fail_on_manifest(path, data):
        if path.name == "manifest.json":
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(artifacts, "_write_synced", fail_on_manifest)
    with pytest.raises(ArtifactError, match="gru_2layer: cannot write: No space left on device"):
        build_artifact(load_config(GRU), artifact.parent)
    assert {p.name: p.read_bytes() for p in artifact.iterdir()} == before
    assert sorted(p.name for p in artifact.parent.iterdir()) == ["gru_2layer"]


def test_cli_build_writes_every_shipped_config(tmp_path):
    out = tmp_path / "artifacts"
    result = CliRunner().invoke(main, ["build", str(SHIPPED[0].parent), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(SHIPPED) + 1 and lines[-1].startswith(f"summary: built {len(SHIPPED)} artifact(s) into ")
    assert lines[0].startswith(f"built {SHIPPED[0].stem}: {out / SHIPPED[0].stem} (")
    for path in SHIPPED:
        assert load_artifact(out / path.stem).config.name == path.stem


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["build", str(GRU), "--out", str(blocker)])
    assert (result.exit_code, result.output) == (2, f"Error: {blocker}: cannot create output folder: File exists\n")
