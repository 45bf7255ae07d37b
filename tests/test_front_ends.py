"""One engine, three front-ends: `verify ARTIFACT`, `verify ARTIFACT --golden DIR` and `export-model FACTORY` accept
the same run and report options and give the same exit codes (README: exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import HAS_CUDA_EP, SHIPPED, tree_snapshot
from test_whole_models import FACTORY

import rnnexport
from rnnexport.artifacts.build import build_artifact
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.errors import ConfigError
from rnnexport.export.whole_model import export_model

FRONT_ENDS = ("artifact", "golden", "whole-model")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two artifacts with golden outputs, and a whole model's factory with an exported file of it."""
    root = tmp_path_factory.mktemp("front_ends")
    for name in ("gru_2layer", "rnn_tanh_nobias"):
        build_artifact(load_config(next(p for p in SHIPPED if p.stem == name)), root / "art")
    saved = CliRunner().invoke(main, ["verify", str(root / "art"), "--runtimes", "ort", "--cases", "example,seq1",
                                      "--save-golden", str(root / "golden"), "-q"])
    assert saved.exit_code == 0, saved.output
    (root / "factories.py").write_text(FACTORY)
    sys.path.insert(0, str(root))
    try:
        import factories
    finally:
        sys.path.remove(str(root))
    made = factories.tagger()
    proto = export_model(made.model, made.example_inputs, dynamic_shapes=made.dynamic_shapes,
                         input_names=made.input_names, output_names=made.output_names)
    (root / "tagger.onnx").write_bytes(proto.SerializeToString())
    return root


def _command(front_end: str, root: Path, out: Path) -> list[str]:
    if front_end == "artifact":
        return ["verify", str(root / "art" / "gru_2layer"), "--runtimes", "torch,ort", "--cases", "example,seq1"]
    if front_end == "golden":
        return ["verify", str(root / "art" / "gru_2layer"), "--golden", str(root / "golden"), "--runtimes", "ort"]
    return ["export-model", "factories:tagger", "--onnx", str(root / "tagger.onnx"), "--out", str(out),
            "--runtimes", "ort", "--cases", "example,seq1"]


def _run(front_end: str, root: Path, tmp_path: Path, *extra: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(root)  # export-model imports the factory from the current folder
    torch.manual_seed(0)
    return CliRunner().invoke(main, [*_command(front_end, root, tmp_path / "out"), *extra])


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_each_front_end_passes_and_writes_json_junit_and_html_together(front_end, setup, tmp_path, monkeypatch):
    files = [tmp_path / "all.json", tmp_path / "j.xml", tmp_path / "r.html"]
    result = _run(front_end, setup, tmp_path, "--json", str(files[0]), "--junit", str(files[1]), "--html",
                  str(files[2]), "--threads", "1", "--strict-placement", "--require", "ort-cpu", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    report = json.loads(files[0].read_text())["reports"][0]
    assert report["passed"] and [c["name"] for c in report["cases"]] == ["example", "seq1"]
    ort = next(r for r in report["runners"] if r["name"] == "ort-cpu")
    assert ort["status"] == "ok" and ort["settings"]["intra_op_num_threads"] == 1
    ran = [r for r in report["runners"] if r["status"] == "ok"]
    cases = ET.parse(files[1]).getroot().findall(".//testcase")
    assert len(cases) == len(report["runners"]) * 2  # every runner × case, skipped where a runner could not run
    assert sum(c.find("skipped") is None for c in cases) == len(ran) * 2
    assert files[2].read_text().startswith("<!doctype html>") and report["name"] in files[2].read_text()


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_each_front_end_exits_1_on_drift_over_an_explicit_tolerance(front_end, setup, tmp_path, monkeypatch):
    result = _run(front_end, setup, tmp_path, "--atol", "1e-12", "--rtol", "0", monkeypatch=monkeypatch)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output.splitlines()[0]


@pytest.mark.skipif(HAS_CUDA_EP, reason="needs a machine without ONNX Runtime's CUDA provider")
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_each_front_end_exits_3_when_a_required_provider_is_missing(front_end, setup, tmp_path, monkeypatch):
    before = tree_snapshot(setup)
    result = _run(front_end, setup, tmp_path, "--require", "CUDAExecutionProvider", "--json", str(tmp_path / "a.json"),
                  monkeypatch=monkeypatch)
    assert result.exit_code == 3, result.output
    assert result.output.startswith("Error: required provider CUDAExecutionProvider is not available")
    assert tree_snapshot(setup) == before and not list(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize("front_end", FRONT_ENDS)
@pytest.mark.parametrize("option, words", [
    (["--require", "bogus-runner"], "--require bogus-runner: no runner has that name"),
    (["--json", "{same}", "--junit", "{same}"], "the same path as --json"),
    (["--require", "openvino-cpu-f32"], "the runner families run here"),
    (["--require", "ort-cpu-float16"], "--require ort-cpu-float16: no runner has that name"),
    (["--cases", ""], "--cases '': expected names, comma-separated"),
    (["--require", "x,"], "--require 'x,': expected names, comma-separated"),
    (["--html", "missing/r.html"], "the folder missing does not exist"),
    (["--cases", "nonesuch"], "unknown case 'nonesuch'"),
    (["--providers", "NoSuchExecutionProvider"], "unknown provider 'NoSuchExecutionProvider'"),
])
def test_each_front_end_refuses_bad_options_before_any_work(front_end, option, words, setup, tmp_path, monkeypatch):
    before = tree_snapshot(setup)
    option = [o.replace("{same}", str(tmp_path / "same.out")) for o in option]
    result = _run(front_end, setup, tmp_path, *option, monkeypatch=monkeypatch)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and words in result.output and len(result.output.splitlines()) == 1
    assert tree_snapshot(setup) == before and not list(tmp_path.iterdir())


@pytest.mark.parametrize("golden", [False, True])
def test_shards_of_verify_cover_every_artifact_once_with_and_without_golden(golden, setup, tmp_path):
    names = []
    for k in (1, 2):
        command = ["verify", str(setup / "art"), "--runtimes", "ort", "--shard", f"{k}/2", "--cases", "example",
                   "--json", str(tmp_path / f"{k}.json")]
        command += ["--golden", str(setup / "golden")] if golden else []
        assert CliRunner().invoke(main, command).exit_code == 0
        names += [r["name"] for r in json.loads((tmp_path / f"{k}.json").read_text())["reports"]]
    assert sorted(names) == ["gru_2layer", "rnn_tanh_nobias"]


@pytest.mark.parametrize("option", [["--per-layer"], ["--save-golden", "g2"], ["--export-test-data", "td"]])
def test_golden_refuses_what_it_cannot_do_and_export_model_does_not_offer_it(option, setup, tmp_path, monkeypatch):
    result = _run("golden", setup, tmp_path, *option, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and f"{option[0]} does not go with --golden" in result.output, result.output
    result = _run("whole-model", setup, tmp_path, *option, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and f"No such option '{option[0]}'" in result.output, result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("front_end", FRONT_ENDS)
@pytest.mark.parametrize("flag, victim", [("--junit", "art/gru_2layer/model.onnx"), ("--json", "factories.py"),
                                          ("--html", "golden/gru_2layer/golden.json"), ("--junit", "tagger.onnx")])
def test_no_output_replaces_a_file_rnnexport_did_not_write(front_end, flag, victim, setup, tmp_path, monkeypatch):
    before = tree_snapshot(setup)
    result = _run(front_end, setup, tmp_path, flag, str(setup / victim), monkeypatch=monkeypatch)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {flag} {setup / victim}: ") and len(result.output.splitlines()) == 1
    assert tree_snapshot(setup) == before and not list(tmp_path.iterdir())


def test_an_output_rnnexport_wrote_is_replaced_on_the_next_run(setup, tmp_path, monkeypatch):
    for _ in range(2):
        result = _run("artifact", setup, tmp_path, "--junit", str(tmp_path / "j.xml"), monkeypatch=monkeypatch)
        assert result.exit_code == 0, result.output


def test_a_required_variant_runner_without_its_file_exits_3_before_any_work(setup, tmp_path, monkeypatch):
    before = tree_snapshot(setup)
    for front_end in FRONT_ENDS:
        result = _run(front_end, setup, tmp_path, "--require", "ort-cpu-int8-dynamic", monkeypatch=monkeypatch)
        assert result.exit_code == 3 and "no model here has a int8-dynamic variant" in result.output, result.output
    assert tree_snapshot(setup) == before and not list(tmp_path.iterdir())


def test_export_model_runs_pytorch_as_verify_does(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    result = CliRunner().invoke(main, ["export-model", "factories:tagger", "--onnx", "tagger.onnx", "--out",
                                       str(tmp_path / "o"), "--cases", "example,seq1", "--require", "torch-float32-cpu",
                                       "--shape", "seq=4,batch=2", "-q"])
    assert result.exit_code == 0 and result.output.startswith("Tagger: PASS (3 cases against"), result.output


def test_golden_refuses_a_shape_a_seed_and_a_config(setup, tmp_path, monkeypatch):
    assert "--shape does not go with --golden" in _run("golden", setup, tmp_path, "--shape", "seq=3,batch=2",
                                                       monkeypatch=monkeypatch).output
    assert "--seed and --long-seq do not go with --golden" in _run("golden", setup, tmp_path, "--seed", "3",
                                                                     monkeypatch=monkeypatch).output
    result = CliRunner().invoke(main, ["verify", str(next(p for p in SHIPPED if p.stem == "gru_2layer")), "--golden",
                                       str(setup / "golden")])
    assert result.exit_code == 2 and "a config; --golden compares artifact folders and .onnx files" in result.output


def test_export_model_refuses_an_onnx_file_of_another_model(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    result = CliRunner().invoke(main, ["export-model", "factories:tagger", "--onnx",
                                       str(setup / "art" / "gru_2layer" / "model.onnx"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is it a file of this model?" in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_the_api_refuses_names_that_would_run_nothing(setup):
    module = torch.nn.GRU(3, 4)
    model = rnnexport.export_onnx(module)
    for kwargs, words in (({"case_names": ("bogus",)}, "unknown case 'bogus'"),
                          ({"runtimes": ("bogus",)}, "unknown runtime 'bogus'")):
        with pytest.raises(ConfigError, match=words):
            rnnexport.verify(module, model, **kwargs)
    report = rnnexport.verify(module, model, case_names=("ragged",), runtimes=("ort",))
    assert not report.passed() and "no case ran" in report.failures()[0]


def test_no_front_end_runs_without_an_onnx_runtime(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    for command in (["verify", "art/gru_2layer"], ["verify", "art/gru_2layer", "--golden", "golden"],
                    ["export-model", "factories:tagger", "--onnx", "tagger.onnx", "--out", str(tmp_path / "o")]):
        result = CliRunner().invoke(main, [*command, "--runtimes", "torch"])
        assert result.exit_code == 2 and "runs no ONNX runtime, so nothing would check" in result.output, command


def test_a_what_if_run_leaves_the_record_byte_for_byte(setup, tmp_path):
    """verify --cases example --atol 1e-9 on an artifact: report.json, report.md, inputs.npz and index.json stay as
    the full run wrote them; the results go to --json; --record writes them, marked what_if."""
    art = setup / "art"
    assert CliRunner().invoke(main, ["verify", str(art / "rnn_tanh_nobias"), "--runtimes", "torch,ort,openvino"]
                              ).exit_code == 0
    before = tree_snapshot(art)
    result = CliRunner().invoke(main, ["verify", str(art / "rnn_tanh_nobias"), "--cases", "example", "--atol", "1e-9",
                                       "--rtol", "0", "--json", str(tmp_path / "what_if.json")])
    assert result.exit_code == 1 and "note: a what-if run (--cases, --atol, --rtol)" in result.output
    assert tree_snapshot(art) == before
    assert not json.loads((tmp_path / "what_if.json").read_text())["reports"][0]["passed"]
    recorded = CliRunner().invoke(main, ["verify", str(art / "rnn_tanh_nobias"), "--cases", "example", "--record"])
    assert recorded.exit_code == 0
    report = json.loads((art / "rnn_tanh_nobias" / "report.json").read_text())
    assert report["what_if"] == ["--cases"] and [c["name"] for c in report["cases"]] == ["example"]


WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; sys.argv = ['rnnexport'] + sys.argv[1:]\n"
                 "from rnnexport.cli import main\nmain()")


def test_a_machine_without_pytorch_runs_golden_inspect_and_lint_and_says_what_needs_it(setup):
    """docs/ci.md: torch blocked from importing, as on a deploy host without it."""
    def run(*args):
        return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=setup, capture_output=True, text=True)

    for args in (["verify", "art/gru_2layer", "--golden", "golden"], ["inspect", "art/"],
                 ["lint", "art/", "--no-run"]):
        result = run(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    for command in ("build", "verify"):
        result = run(command, str(next(p for p in SHIPPED if p.stem == "gru_2layer")))
        assert result.returncode == 2 and result.stderr.splitlines() == [
            f"Error: rnnexport {command} needs PyTorch, which is not installed here (pip install 'torch>=2.2,<3'); "
            "without it, inspect, lint --no-run and verify --golden work"]
