"""Reports people read: Markdown beside report.json, HTML with plots (opened in a real browser), inspect."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import Tolerance, load_config
from rnnexport.report.html import render_html
from rnnexport.verification.engine import Tolerances, verify

CONFIG = {p.stem: p for p in SHIPPED}
QUICK = ["--cases", "example,long,ragged", "--long-seq", "300", "--record"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """Two verified artifacts and their HTML report."""
    out = tmp_path_factory.mktemp("reports") / "artifacts"
    names = ["gru_ragged_batch_first", "rnn_relu_batch_first"]
    assert CliRunner().invoke(main, ["build", *[str(CONFIG[n]) for n in names], "--out", str(out)]).exit_code == 0
    html = out.parent / "report.html"
    result = CliRunner().invoke(main, ["verify", str(out), *QUICK, "--html", str(html)])
    assert result.exit_code == 0, result.output
    return out, html, names


def test_markdown_report_sits_beside_report_json(verified):
    out, _, names = verified
    text = (out / names[0] / "report.md").read_text()
    assert text.startswith(f"## {names[0]}: ✅ PASS\n")
    assert "| torch-float32-cpu | " in text and "| ort-cpu | " in text
    assert "| ort-cuda | not available: " in text
    assert "<summary>Environment</summary>" in text and "| onnxruntime | " in text
    assert str(out) not in text  # publishable: no paths of this machine


def test_html_is_self_contained_with_verdict_tables_and_plots(verified):
    _, html, names = verified
    text = html.read_text()
    assert text.count('class="banner pass">PASS on torch-float32-cpu, ort-cpu, openvino-cpu-f32, '
                      'openvino-cpu-default; not checked here: torch-float32-cuda, ort-cuda') == 2
    assert text.count('src="data:image/png;base64,') == 4  # a curve and a histogram per model
    assert "http://" not in text and "https://" not in text
    for name in names:
        assert f'">{name}</h1>' in text
    assert "device=cpu, dtype=torch.float32, allow_tf32=False" in text


def test_html_without_matplotlib_says_so_and_keeps_the_tables(monkeypatch):
    cfg = load_config(CONFIG["gru_2layer"])
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",), case_names=("example",))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    text = render_html([(report, report.judge())])
    assert 'Plots need matplotlib: pip install "rnnexport[plots]".' in text
    assert "<img" not in text and "<h2>Runners</h2>" in text


def test_failing_report_shows_the_failure():
    cfg = load_config(CONFIG["gru_2layer"])
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",), case_names=("example",),
                    tolerances=Tolerances(cpu=Tolerance(atol=1e-12, rtol=0.0)))
    text = render_html([(report, report.judge())])
    assert 'class="banner fail">FAIL: do not ship' in text
    assert "<h2>Failures</h2>" in text and 'class="num bad"' in text


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_html_renders_in_headless_chromium(verified, tmp_path):
    _, html, _ = verified
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", html.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="4"' in dom, dom[:500]
    assert 'data-images-decoded="4"' in dom  # every image decoded with a non-zero natural size
    assert "PASS on torch-float32-cpu" in dom


def test_inspect_artifact_and_json(verified):
    out, _, names = verified
    result = CliRunner().invoke(main, ["inspect", str(out / names[1])])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{names[1]}/model.onnx: ") and "opset 9, IR 4" in lines[0]
    assert lines[1] == "  cell        RNN × 3 layers, hidden 24, input 8, forward, activations Relu"
    assert "  input       input [batch, seq, 8]" in lines
    assert "  manifest    ok: every file matches its sha256" in lines
    info = json.loads(CliRunner().invoke(main, ["inspect", str(out / names[0] / "model.onnx"), "--json"]).output)
    assert info["cell"] == ["GRU"] and len(info["layers"]) == 2
    assert info["layers"][0]["linear_before_reset"] == 1 and info["layers"][0]["layout"] == 0
    assert info["inputs"][2] == {"name": "sequence_lens", "dims": ["batch"]}
    assert info["manifest"] is None and info["metadata"]["name"] == names[0]


def test_inspect_reports_a_tampered_manifest(tmp_path):
    artifact = build_artifact(load_config(CONFIG["gru_2layer"]), tmp_path)
    with open(artifact / "weights.pt", "ab") as f:
        f.write(b"\0")
    result = CliRunner().invoke(main, ["inspect", str(artifact)])
    assert result.exit_code == 0
    assert "  manifest    problem: " in result.output and "weights.pt: sha256" in result.output


def test_quiet_and_plain_progress_lines(tmp_path):
    out = tmp_path / "artifacts"
    paths = [str(CONFIG[n]) for n in ("gru_2layer", "rnn_tanh_nobias")]
    result = CliRunner().invoke(main, ["build", *paths, "--out", str(out)])
    assert [line.split(":")[0] for line in result.output.splitlines()] == ["built gru_2layer", "built rnn_tanh_nobias",
                                                                           "summary"]
    assert CliRunner().invoke(main, ["build", *paths, "--out", str(out), "-q"]).output == ""
    result = CliRunner().invoke(main, ["verify", str(out), "-q", "--cases", "example"])
    assert [line.split(" (")[0] for line in result.output.splitlines()] == ["gru_2layer: PASS", "rnn_tanh_nobias: PASS"]


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux's `script` (a pseudo-terminal) is not installed")
def test_progress_bar_on_a_terminal_then_the_results(tmp_path):
    out = tmp_path / "art"
    paths = [str(CONFIG[n]) for n in ("gru_2layer", "rnn_tanh_nobias")]
    assert CliRunner().invoke(main, ["build", *paths, "--out", str(out)]).exit_code == 0
    command = f"{sys.executable} -m rnnexport verify {out} --cases example"
    log = tmp_path / "tty.log"
    subprocess.run(["script", "-qc", command, str(log)], capture_output=True, timeout=120, check=True)
    text = log.read_text(errors="replace")
    bar_end = text.rindex("verifying  [####################################]  100%")
    assert text.index("gru_2layer: PASS") > bar_end and text.index("rnn_tanh_nobias: PASS") > bar_end


def test_each_allowed_line_of_the_plot_is_the_tables_allowed_value(verified):
    """The HTML plot's allowed-error lines are drawn at the runner table's "allowed" values, one per distinct
    value, and the figure's caption names them (the picture itself cannot be read back)."""
    import re

    out, html_path, names = verified
    text = html_path.read_text()
    if "Plots need matplotlib" in text:
        pytest.skip("matplotlib is not installed")
    caption = re.search(r'<figcaption class="allowed">(.*?)</figcaption>', text)[1]
    drawn = {name: value for value, runners in re.findall(r"allowed ([\d.e+-]+): ([^;]+)", caption)
             for name in runners.split(", ")}
    report = json.loads((out / names[0] / "report.json").read_text())
    table = {r["name"]: f"{r['judged_at']['atol'] + r['judged_at']['rtol'] * _expected(r):.1e}"
             for r in report["runners"] if r["status"] == "ok" and r["name"] in drawn}
    assert table and all(drawn[name] == value for name, value in table.items())


def _expected(runner: dict) -> float:
    worst = runner["worst"]
    return runner["drift"][worst["case"]][worst["output"]]["expected_max_abs"]
