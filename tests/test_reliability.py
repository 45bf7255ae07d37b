"""Crash safety, concurrent builds, long sequences and large batches, and publishable output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, SHIPPED, tree_snapshot

from rnnexport.artifacts.build import build_artifact
from rnnexport.artifacts.folders import TMP_PREFIX, load_artifact, write_artifact
from rnnexport.cli import main
from rnnexport.config import ModelConfig, load_config
from rnnexport.errors import ArtifactError

LARGE = next(p for p in SHIPPED if p.stem == "lstm_large")


def _variant(tmp: Path, seed: int) -> Path:
    """lstm_large under another seed: the same artifact name, different bytes."""
    path = tmp / f"seed{seed}" / "lstm_large.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(LARGE.read_text().replace("seed = 8", f"seed = {seed}"))
    return path


def _visible(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def _wait_for(condition, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the build never reached the point to kill it at")
        time.sleep(0.001)


def _staged(out: Path, name: str = "") -> list[Path]:
    return [p for p in out.glob(f"{TMP_PREFIX}*") if p.is_dir() and "-lstm_large-" in p.name and
            (not name or (p / "lstm_large" / name).exists())]


# Points at which the rewrite is killed: before it writes, while each file is staged, and at once.
KILL_POINTS = {
    "while_starting": lambda out: time.sleep(0.2),
    "staging_created": lambda out: _wait_for(lambda: _staged(out)),
    "model_staged": lambda out: _wait_for(lambda: _staged(out, "model.onnx")),
    "weights_staged": lambda out: _wait_for(lambda: _staged(out, "weights.pt")),
    "manifest_staged": lambda out: _wait_for(lambda: _staged(out, "manifest.json")),
}


@pytest.mark.slow
def test_sigkill_during_a_rewrite_never_leaves_a_broken_artifact(tmp_path):
    out = tmp_path / "out"
    old = build_artifact(load_config(_variant(tmp_path, 8)), out)
    old_files = tree_snapshot(old)
    new_config = _variant(tmp_path, 9)
    outcomes = []
    for point, wait in KILL_POINTS.items():
        process = subprocess.Popen([sys.executable, "-m", "rnnexport", "build", str(new_config), "--out", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait(out)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        artifact = load_artifact(out / "lstm_large")  # raises on a half-written or tampered folder
        files = tree_snapshot(out / "lstm_large")
        outcomes.append((point, "old" if files == old_files else "new"))
        assert artifact.config.seed == (8 if files == old_files else 9), point
        assert _visible(out) in (["lstm_large"], ["index.json", "lstm_large"]), point
        if files != old_files:  # the swap happened: put the old one back for the next point
            build_artifact(load_config(_variant(tmp_path, 8)), out)
    assert ("staging_created", "old") in outcomes  # killed before the swap: the old artifact stands
    # The next build removes what the killed ones left, hidden as it was.
    build_artifact(load_config(_variant(tmp_path, 9)), out)
    assert not list(out.glob(f"{TMP_PREFIX}*"))


@pytest.mark.slow
def test_two_builds_of_the_same_config_at_once(tmp_path):
    out = tmp_path / "out"
    build_artifact(load_config(LARGE), out)
    command = [sys.executable, "-m", "rnnexport", "build", str(LARGE), "--out", str(out), "-q"]
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate()[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    load_artifact(out / "lstm_large")
    assert _visible(out) == ["index.json", "lstm_large"]
    assert not list(out.glob(f"{TMP_PREFIX}*"))


def test_artifact_names_cannot_escape_the_output_folder(tmp_path):
    for name in ("../escape", "/etc/passwd", "a/../../b", ".."):
        cfg = ModelConfig(name=name, cell="gru", input_size=2, hidden_size=2)  # skips validation on purpose
        with pytest.raises(ArtifactError, match="would be written outside"):
            write_artifact(tmp_path / "out", cfg, {}, {})
    assert not (tmp_path / "escape").exists() and _visible(tmp_path) == ["out"]


def test_load_paths_never_unpickle():
    """Every loader in the package refuses pickled code: torch.load with weights_only, np.load without pickle."""
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "rnnexport").rglob("*.py")}
    assert "rnnexport/formulations/modules.py" in sources and "rnnexport/verification/runners/torch_runner.py" in sources
    for name, text in sources.items():
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (name, call)
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (name, call)
        assert "pickle.load" not in text and "pickle.loads" not in text, name
        # the one unpickler of our own builds tensors and plain records, and refuses every other class
        assert "pickle.Unpickler" not in text or name == "rnnexport/export/torchscript.py", name


def test_published_files_hold_no_paths_of_the_building_machine(tmp_path):
    out = tmp_path / "artifacts"
    config = next(p for p in SHIPPED if p.stem == "gru_ragged_batch_first")
    assert CliRunner().invoke(main, ["build", str(config), "--out", str(out)]).exit_code == 0
    extras = ["--json", tmp_path / "all.json", "--html", tmp_path / "r.html", "--junit", tmp_path / "j.xml",
              "--export-test-data", tmp_path / "data", "--cases", "example,ragged", "--record"]
    assert CliRunner().invoke(main, ["verify", str(out), *map(str, extras)]).exit_code == 0
    published = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".html", ".xml")]
    assert len(published) >= 7
    for path in published:
        text = path.read_text()
        for private in (str(tmp_path), str(ROOT), os.path.expanduser("~")):
            assert private not in text, (path.name, private)


@pytest.mark.slow
def test_20000_steps_verify_in_bounded_memory(tmp_path):
    """The verifier keeps one case's outputs and per-step maxima, never every intermediate."""
    config = next(p for p in SHIPPED if p.stem == "gru_2layer")
    code = (
        "import re, sys\n"
        "from rnnexport.cli import main\n"
        "try:\n"
        f"    main(['verify', {str(config)!r}, '--cases', 'long', '--long-seq', sys.argv[1], '-q'])\n"
        "except SystemExit as exit:\n"
        # VmHWM is this process's own peak; ru_maxrss would carry over the forking pytest's peak
        "    hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
        "    print(exit.code, int(hwm) // 1024)\n"
    )
    peaks = {}
    for steps in (1000, 20000):
        result = subprocess.run([sys.executable, "-c", code, str(steps)], capture_output=True, text=True, check=True)
        verdict, exit_code, peak_mib = result.stdout.splitlines()[0], *result.stdout.split()[-2:]
        assert exit_code == "0" and "PASS" in verdict, result.stdout
        peaks[steps] = int(peak_mib)
    # 20x the steps: what grows is the cases' inputs and outputs and PyTorch's and ONNX Runtime's own
    # per-sequence buffers; the verifier's own share is bounded (test_drift_memory_does_not_grow...).
    assert peaks[20000] < 1024, peaks


def test_large_batch_verifies():
    import rnnexport
    from rnnexport.artifacts.build import export_config
    from rnnexport.verification.cases import Case, make_feeds

    cfg = load_config(next(p for p in SHIPPED if p.stem == "lstm_dropout_ragged"))
    module, model = export_config(cfg)
    feeds = make_feeds(cfg, 32, 1024, np.random.default_rng(0), lengths="ragged")
    report = rnnexport.verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",),
                              cases=[Case("batch1024", feeds, "1024 ragged sequences")])
    assert report.passed(), report.failures()
