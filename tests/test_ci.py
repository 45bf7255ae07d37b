"""CI features: build --check, index.json, shards, ONNX test data, JUnit XML, the example workflow."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, SHIPPED
from onnx import numpy_helper

from rnnexport.artifacts.index import in_shard
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.verification.cases import make_cases

SMALL = [p for p in SHIPPED if p.stem != "lstm_large"]
CONFIG_PATHS = {p.stem: p for p in SHIPPED}
QUICK = ["--cases", "example,seq1,ragged,streaming", "--providers", "CPUExecutionProvider", "--record"]


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def built(tmp_path):
    out = tmp_path / "artifacts"
    assert _invoke("build", *SMALL, "--out", out, "-q").exit_code == 0
    return out


def test_check_passes_on_a_fresh_build_and_writes_nothing(built):
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*")}
    result = _invoke("build", *SMALL, "--out", built, "--check")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"up to date: {p.stem}" for p in SMALL]
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*")} == before


def test_check_names_stale_and_missing_artifacts(built, tmp_path):
    edited = tmp_path / "gru_2layer.toml"
    edited.write_text(SHIPPED[0].read_text().replace("seed = 1", "seed = 2"))
    result = _invoke("build", edited, SMALL[1], SHIPPED[-3], "--out", built, "--check")
    assert result.exit_code == 1
    assert "differs: gru_2layer" in result.output and f"up to date: {SMALL[1].stem}" in result.output
    assert "✗ gru_2layer: model.onnx differs from a fresh build" in result.output
    assert "✗ gru_2layer: the config changed since the artifact was built" in result.output
    assert f"✗ lstm_large: no artifact at {built / 'lstm_large'}" in result.output


def test_index_lists_every_artifact_and_takes_verdicts_from_verify(built):
    index = json.loads((built / "index.json").read_text())
    assert [a["name"] for a in index["artifacts"]] == [p.stem for p in SMALL]
    first = index["artifacts"][0]
    manifest = json.loads((built / first["name"] / "manifest.json").read_text())
    assert first["config_sha256"] == load_config(SMALL[0]).sha256()
    assert first["model_sha256"] == manifest["files"]["model.onnx"]["sha256"]
    assert (first["verified"], first["passed"], first["worst_drift"]) == (False, None, None)
    assert _invoke("verify", built / first["name"], *QUICK).exit_code == 0
    index = json.loads((built / "index.json").read_text())
    verified = index["artifacts"][0]
    assert verified["verified"] and verified["passed"] and 0 < verified["worst_drift"] < 1e-5
    assert not index["artifacts"][1]["verified"]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_partition_the_configs(n):
    names = [p.stem for p in SHIPPED] + [f"model_{i}" for i in range(40)]
    shards = [{name for name in names if in_shard(name, (k, n))} for k in range(1, n + 1)]
    assert set().union(*shards) == set(names)
    assert sum(len(s) for s in shards) == len(names)
    if n > 1:
        assert all(shards), "a shard of 48 names should not be empty"


def test_cli_shards_build_each_config_once(tmp_path):
    seen = []
    for k in (1, 2, 3):
        out = tmp_path / f"shard{k}"
        assert _invoke("build", *SMALL, "--out", out, "--shard", f"{k}/3", "-q").exit_code == 0
        seen += sorted(p.name for p in out.iterdir() if p.is_dir()) if out.exists() else []
    assert sorted(seen) == sorted(p.stem for p in SMALL)


@pytest.mark.parametrize("shard", ["0/2", "3/2", "x", "1/0"])
def test_bad_shard_is_bad_input(tmp_path, shard):
    result = _invoke("build", SMALL[0], "--out", tmp_path / "out", "--shard", shard)
    assert (result.exit_code, result.output) == (
        2, f"Error: --shard {shard!r}: expected K/N with 1 <= K <= N, for example 2/4\n")
    assert not (tmp_path / "out").exists()


def test_exported_test_data_round_trips_and_replays(built, tmp_path):
    name = "gru_ragged_batch_first"
    data = tmp_path / "onnx-test-data"
    assert _invoke("verify", built / name, *QUICK, "--export-test-data", data).exit_code == 0
    folder = data / name
    assert (folder / "model.onnx").read_bytes() == (built / name / "model.onnx").read_bytes()
    sets = sorted(folder.glob("test_data_set_*"))
    cases = [c for c in make_cases(load_config(CONFIG_PATHS[name]), names=("example", "seq1", "ragged"))]
    assert len(sets) == len(cases) == 3  # the streaming case needs several calls and is left out
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for data_set, case in zip(sets, cases):
        inputs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data_set.glob("input_*.pb"))]
        names = [onnx.load_tensor(str(p)).name for p in sorted(data_set.glob("input_*.pb"))]
        assert names == ["input", "h0", "sequence_lens"]
        assert all(np.array_equal(a, case.feeds[n]) for a, n in zip(inputs, names))
        expected = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data_set.glob("output_*.pb"))]
        actual = session.run(None, dict(zip(names, inputs)))
        assert len(expected) == 2 and all(e.dtype == np.float32 for e in expected)
        assert max(float(np.abs(a - e).max()) for a, e in zip(actual, expected)) < 1e-5


def test_junit_report_has_a_case_per_runner_and_case(built, tmp_path):
    junit = tmp_path / "junit.xml"
    result = _invoke("verify", built / "gru_2layer", "--cases", "example,seq1", "--junit", junit)
    assert result.exit_code == 0
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    runners = {c.get("classname").split(".", 1)[1] for c in cases}
    assert {"torch-float32-cpu", "ort-cpu", "ort-cuda"} <= runners
    assert len(cases) == 2 * len(runners) and suite.get("tests") == str(len(cases))
    passed = [c for c in cases if c.get("classname").endswith("ort-cpu")]
    assert [c.get("name") for c in passed] == ["example", "seq1"] and not passed[0].findall("failure")
    assert suite.get("failures") == "0"


def test_junit_marks_drift_as_failure(built, tmp_path):
    model = onnx.load(built / "gru_2layer" / "model.onnx")
    r = next(t for t in model.graph.initializer if t.name == "R_0")
    r.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(r) * 1.01, "R_0"))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, broken)
    junit = tmp_path / "junit.xml"
    result = _invoke("verify", broken, "--config", SHIPPED[0], "--weights", built / "gru_2layer" / "weights.pt",
                     "--cases", "example", "--providers", "CPUExecutionProvider", "--junit", junit)
    assert result.exit_code == 1
    failure = ET.parse(junit).getroot().find(".//testcase[@classname='gru_2layer.ort-cpu']/failure")
    assert failure is not None and failure.get("message").startswith("ort-cpu: example/")


def _cli_lines(run: str) -> list[str]:
    return [line.strip() for line in run.replace(">\n", "").splitlines() if line.strip().startswith("rnnexport ")]


def test_example_workflow_is_valid_and_names_real_commands():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "artifacts.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    commands = [" ".join(s["run"].split()) for s in steps if "run" in s and "rnnexport " in s["run"]]
    assert len(commands) >= 5
    for command in commands:
        args = shlex.split(command.replace("${{ matrix.shard }}", "1/2"))[1:]
        sub = main.get_command(None, args[0])
        assert sub is not None, command
        sub.make_context(args[0], args[1:])  # raises on an unknown option or a bad value
    assert any("--check" in c for c in commands) and any("--junit" in c for c in commands)


def test_ci_script_checks_the_build():
    script = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in script and "--check" in script
