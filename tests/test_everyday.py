"""The everyday experience: several paths to lint and inspect, --check after a build with variants, words that
say what happened and what to do next."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.cli import main

GRU, LSTM = (next(p for p in SHIPPED if p.stem == name) for name in ("gru_2layer", "lstm_3layer_bidir"))


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("everyday") / "artifacts"
    assert _run("build", GRU, LSTM, "--out", out, "--variants", "fp16-weights,int8-dynamic", "-q")[0] == 0
    return out


def test_lint_and_inspect_take_several_paths_and_folders_of_artifacts(built):
    code, output = _run("lint", built, "--no-run")
    assert code == 0
    for name in ("gru_2layer", "lstm_3layer_bidir"):
        assert f"{built / name}/model.onnx: 0 error(s)" in output
    assert f"{built / 'lstm_3layer_bidir'}/model.int8-dynamic.onnx: 0 error(s)" in output
    code, output = _run("inspect", built / "gru_2layer", built / "lstm_3layer_bidir", "--json")
    assert code == 0 and [info["cell"] for info in json.loads(output)] == [["GRU"], ["LSTM"]]
    code, output = _run("inspect", built)
    assert code == 0 and output.count("  cell        ") == 2
    assert _run("lint", built.parent / "nonesuch")[1] == f"Error: {built.parent / 'nonesuch'}: no such file or folder\n"


def test_inspect_names_an_unavailable_variant_once(built):
    code, output = _run("inspect", built / "gru_2layer")
    line = next(line for line in output.splitlines() if "variant     int8-dynamic" in line)
    assert code == 0 and line.count("int8-dynamic") == 1 and "no int8 GRU kernel" in line


def test_a_plain_check_of_an_artifact_built_with_variants_is_up_to_date(built):
    code, output = _run("build", GRU, LSTM, "--out", built, "--check")
    assert code == 0 and output.splitlines() == ["up to date: gru_2layer", "up to date: lstm_3layer_bidir"]


def test_check_with_a_variant_the_artifact_lacks_says_how_to_build_it(tmp_path):
    assert _run("build", GRU, "--out", tmp_path, "-q")[0] == 0
    code, output = _run("build", GRU, "--out", tmp_path, "--check", "--variants", "fp16-weights")
    assert code == 1 and ("gru_2layer: model.fp16-weights.onnx is missing from the artifact (build it with "
                          "--variants fp16-weights)") in output


def test_verify_says_what_it_did_not_write_and_what_to_build(tmp_path, monkeypatch):
    code, output = _run("verify", GRU, "--runtimes", "ort", "--cases", "example")
    assert code == 0 and "note: configs and bare .onnx files are verified in memory, so no report.json" in output
    monkeypatch.chdir(tmp_path)
    assert _run("verify", "artifacts/") == (
        2, "Error: artifacts: no such file or folder (build the artifacts first: rnnexport build configs/)\n")


def test_a_variant_the_model_cannot_have_is_not_listed_as_unchecked(built, tmp_path):
    """No int8 GRU kernel exists: the HTML banner's 'not checked here' lists only runners this machine lacks."""
    html = tmp_path / "r.html"
    code, output = _run("verify", built / "gru_2layer", "--runtimes", "ort", "--cases", "example", "--html", html)
    assert code == 0 and "  not for this model: ort-cpu-int8-dynamic (" in output
    banner = html.read_text().split("not checked here: ", 1)[1].split("<", 1)[0]
    assert "ort-cuda" in banner and "int8-dynamic" not in banner


def test_weights_that_do_not_fit_are_one_short_line_that_says_how_to_get_a_fitting_config(tmp_path):
    import torch

    torch.save(torch.nn.GRU(5, 8, 3).state_dict(), tmp_path / "ck.pt")
    (tmp_path / "ck.toml").write_text('cell = "gru"\ninput_size = 16\nhidden_size = 32\nnum_layers = 2\n'
                                      '[weights]\nfile = "ck.pt"\n')
    code, output = _run("build", tmp_path / "ck.toml", "--out", tmp_path / "out")
    assert code == 2 and len(output.splitlines()) == 1 and len(output) < 300
    assert output.endswith("; and 9 more (rnnexport init --from-checkpoint ck.pt writes a config that fits them)\n")


def test_verify_runs_every_runtime_at_one_thread_unless_told(tmp_path):
    """One thread by default (on a shared machine the runtimes' own defaults made verify 6× slower); --threads 2
    reaches PyTorch, ONNX Runtime and OpenVINO alike. Read back from what each runner recorded."""
    from rnnexport.artifacts.build import build_artifact
    from rnnexport.config import load_config

    artifact = build_artifact(load_config(SHIPPED[0]), tmp_path)
    for args, threads in (([], 1), (["--threads", "2"], 2)):
        result = CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example", "--json",
                                           str(tmp_path / "r.json"), *args])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "r.json").read_text())["reports"][0]
        assert report["oracle"]["threads"] == threads
        ran = {r["name"]: r["settings"] for r in report["runners"] if r["status"] == "ok"}
        assert ran["torch-float32-cpu"]["threads"] == threads and ran["ort-cpu"]["intra_op_num_threads"] == threads
        assert ran["openvino-cpu-f32"]["threads"] == threads


def test_one_thread_reaches_pytorchs_inter_op_threads_too(tmp_path):
    """PyTorch's inter-op threads can be set once per process, before inter-op work: a fresh verify sets them to
    one, read back from the oracle's settings."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "rnnexport", "verify", str(SHIPPED[0]), "--cases", "example",
                           "--runtimes", "torch,ort", "-q", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())["reports"][0]
    assert report["oracle"]["interop_threads"] == 1
    assert next(r for r in report["runners"] if r["name"] == "torch-float32-cpu")["settings"]["interop_threads"] == 1
