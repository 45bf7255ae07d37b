"""Every snippet in README.md and docs/ runs as written: python blocks from the repository root, sh blocks line by line
in a folder holding what they name (configs/, artifacts/, a checkpoint, a bare model), toml blocks as configs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HAS_CUDA_EP, ROOT, SHIPPED

from rnnexport.config import load_config

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SET_UP = "pip install"  # the README's two set-up commands: .ci/run runs them on a fresh clone


def _blocks() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append(pytest.param(match[1], match[2], id=f"{page.relative_to(ROOT)}:{line}"))
    return found


BLOCKS = _blocks()


def test_the_pages_hold_snippets_of_each_kind():
    kinds = {p.values[0] for p in BLOCKS}
    assert {"python", "sh", "toml"} <= kinds and len(BLOCKS) >= 10


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A folder like a user's: the gru_2layer config built into artifacts/, its model, weights and config as a
    bare MODEL.onnx with --config and --weights, and a checkpoint holding a GRU under encoder.rnn."""
    (tmp_path / "configs").mkdir()
    gru = next(p for p in SHIPPED if p.stem == "gru_2layer")
    shutil.copy(gru, tmp_path / "configs" / gru.name)
    subprocess.run([sys.executable, "-m", "rnnexport", "build", "configs/", "-q"], cwd=tmp_path, check=True)
    for name, target in (("model.onnx", "model.onnx"), ("weights.pt", "w.pt")):
        shutil.copy(tmp_path / "artifacts" / "gru_2layer" / name, tmp_path / target)
    shutil.copy(gru, tmp_path / "c.toml")
    torch.save({"encoder": {"rnn": torch.nn.GRU(16, 32, 2).state_dict()}}, tmp_path / "ckpt.pt")
    return tmp_path


@pytest.mark.parametrize("language, code", BLOCKS)
def test_every_snippet_runs_as_written(language, code, workspace):
    if language == "python":
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    elif language == "toml":
        (workspace / "snippet.toml").write_text(code)
        assert load_config(workspace / "snippet.toml").cell  # parsed and validated, [weights] file included
    elif language == "sh":
        for line in code.strip().splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith(SET_UP):
                continue
            result = subprocess.run(command, shell=True, cwd=workspace, capture_output=True, text=True)
            needs_cuda = "--require CUDAExecutionProvider" in command and not HAS_CUDA_EP
            assert result.returncode == (3 if needs_cuda else 0), (command, result.stdout[-2000:], result.stderr)
    else:
        assert language == "", f"a ```{language} block: add how to run it here"  # plain blocks show output
