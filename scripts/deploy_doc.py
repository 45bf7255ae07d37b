"""Write docs/deploy.md: which runtime runs which artifact, and how far from the float64 oracle.

Every shipped config, plus the other forms a deployer can build (a masked bidirectional graph with
reverse = "GatherElements"; a ragged graph that hands sequence_lens to its recurrent nodes), verified on every
case against PyTorch float64 with ONNX Runtime (CPU), OpenVINO (CPU, f32 and its default precision), tract and
IREE.
A cell holds the worst |Δ| over every case and output, or why the runtime failed, in the words verify prints.
Numbers are drift, not time, so a loaded machine does not change them.

Usage: python scripts/deploy_doc.py      (needs openvino, tract and IREE, all in the dev extra)
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from rnnexport._version import versions  # noqa: E402
from rnnexport.artifacts.build import export_config  # noqa: E402
from rnnexport.config import ModelConfig, load_configs  # noqa: E402
from rnnexport.verification.cases import Case  # noqa: E402
from rnnexport.verification.engine import verify  # noqa: E402
from rnnexport.verification.results import RunnerResult  # noqa: E402

RUNNERS = {"ort-cpu": "ONNX Runtime", "openvino-cpu-f32": "OpenVINO f32", "openvino-cpu-default": "OpenVINO default",
           "tract-cpu": "tract", "iree-cpu": "IREE"}
OUT = ROOT / "docs" / "deploy.md"


def forms(configs: list[ModelConfig]) -> list[tuple[str, ModelConfig]]:
    """(what the row is, its config): each shipped config as built, then the other forms."""
    rows = [(f"`{cfg.name}`", cfg) for cfg in configs]
    by_name = {cfg.name: cfg for cfg in configs}
    bidir = by_name["gru_bidir_nobias_ragged"]
    rows.append(('`gru_bidir_nobias_ragged`, reverse = "GatherElements"',
                 dataclasses.replace(bidir, reverse="GatherElements")))
    ragged = by_name["gru_ragged_batch_first"]
    rows.append(("`gru_ragged_batch_first`, variable_lengths = true (sequence_lens on the nodes)",
                 ragged.with_variable_lengths(True)))
    return rows


def cell(result: RunnerResult | None, failed: bool) -> str:
    if result is None:
        return "—"
    if result.status != "ok":
        return f"✗ {result.status}: {_short(result.reason or '')}"
    worst = result.worst()
    if worst is None:
        return "no case ran"
    case, output, drift = worst
    if not failed:
        return f"{drift.max_abs:.1e}"
    hint = result.hints.get(case, {}).get(output) or next(
        (h for hints in result.hints.values() for h in hints.values()), None)
    if result.case_errors:
        return (f"✗ {', '.join(result.case_errors)} failed to run: {_short(next(iter(result.case_errors.values())))}"
                f"; worst |Δ| of the others {drift.max_abs:.1e} ({case}/{output})")
    return f"✗ {drift.max_abs:.2g} ({case}/{output})" + (f": {_short(hint)}" if hint else "")


def _short(text: str) -> str:
    """The first clause of a reason: what failed, without the runtime's own message."""
    text = text.removeprefix("could not load the model: ")
    for end in (" (tract:", "; IREE cannot compile", " (error:"):  # the runtime's own message
        text = text.split(end)[0]
    for end in ("; build with", "; rebuild with", ": its ", ": the runtime does not"):
        text = text.split(end)[0]
    return text.replace("|", "\\|")


def measure(cfg: ModelConfig) -> tuple[dict[str, RunnerResult], set[str], str]:
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",),
                    runtimes=("ort", "openvino", "tract", "iree"))
    verdict = report.judge()
    tol = report.tolerances.for_runner("cpu")
    return {r.name: r for r in report.runners}, verdict.failed_runners(), f"{tol.atol:g} / {tol.rtol:g}"


def long_padding(cfg: ModelConfig, steps: int = 1000) -> dict[str, float]:
    """runner → worst |Δ| of ``c_n`` on one case of ``steps`` steps with lengths 1, ``steps`` and half of it: a masked
    LSTM keeps a row's cell state through its padded steps by saturating the forget gate to 1."""
    rng = np.random.default_rng(0)
    feeds = {"input": rng.standard_normal((steps, 3, cfg.input_size)).astype(np.float32),
             "sequence_lens": np.array([1, steps, steps // 2], np.int32)}
    module, model = export_config(cfg)
    case = Case("long_padding", feeds, f"{steps} steps, lengths 1, {steps}, {steps // 2}")
    report = verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",), runtimes=("ort", "tract"),
                    cases=[case])
    return {r.name: r.drift[case.name]["c_n"].max_abs for r in report.runners if r.status == "ok"}


def render(rows: list[tuple[str, dict[str, RunnerResult], set[str], str]], padding: dict[str, float]) -> str:
    found = versions()
    tract = next((r.settings.get("tract") for _, results, _, _ in rows for r in results.values()
                  if r.name == "tract-cpu" and r.settings), "not installed")
    iree = next((r.settings.get("iree") for _, results, _, _ in rows for r in results.values()
                 if r.name == "iree-cpu" and r.settings), "not installed")
    lines = [
        "# Deploy table: which runtime runs which artifact",
        "",
        "*Generated by `python scripts/deploy_doc.py`; do not edit by hand. Every number below is measured by "
        "that run.*",
        "",
        "Every shipped config and the other forms a deployer can build, verified on every case (`example`,",
        "`seq1`, `batch1`, `long` at 1,024 steps, `other_batch`, `saturating`, `tiny`, and `zero_state`, `ragged`,",
        "`streaming` where they apply) against PyTorch float64. A cell is the worst |Δ| over every case and output",
        "where the runner passes, else ✗ and why, in the words `rnnexport verify` prints. OpenVINO default computes",
        "in the CPU's own precision (bf16 on CPUs with AVX512-BF16 or AMX) and is judged at that precision's",
        "tolerance. Back to [verify](verify.md).",
        "",
        "Regenerate: `python scripts/deploy_doc.py` (needs openvino, tract and IREE: `pip install -e '.[dev]'`). "
        f"Measured with onnxruntime {found.get('onnxruntime')}, openvino {found.get('openvino')}, tract {tract}, IREE "
        f"{iree} (llvm-cpu, this CPU), torch {found.get('torch')}, on {platform.machine()} {platform.system()}.",
        "",
        "| artifact | tolerance (atol / rtol) | " + " | ".join(RUNNERS.values()) + " |",
        "|---|---|" + "---|" * len(RUNNERS),
    ]
    for label, results, failed, tol in rows:
        cells = [cell(results.get(name), name in failed) for name in RUNNERS]
        lines.append(f"| {label} | {tol} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "What the failures mean, and what to do:",
        "",
        "- **tract and ReverseSequence**: masked bidirectional graphs reverse each row within its length with",
        "  ReverseSequence, which tract 0.23 lacks. Build with `reverse = \"GatherElements\"` (see",
        "  [configs](configs.md)): the same permutation from indices computed from `sequence_lens`, bit-identical",
        "  outputs on ONNX Runtime, and it runs on tract.",
        "- **tract and the ReLU RNN**: tract computes Tanh whatever an RNN node's `activations` say. verify",
        "  measures it (tract's outputs equal this graph with Tanh, run on ONNX Runtime) and says so; no export",
        "  of a ReLU RNN as a native node runs right on tract 0.23.",
        "- **sequence_lens on the nodes**: tract refuses it (\"Non constant seq_len is not supported\") and OpenVINO's",
        "  ONNX frontend ignores it (outputs past a row's length are not zero). `variable_lengths = \"masked\"` runs",
        "  on all three.",
        "- **tract and long padding in a masked LSTM**: a masked LSTM keeps a row's cell state through its padded",
        "  steps by driving the forget gate's pre-activation to +1e4, and tract's Sigmoid stops at 1 − 4.8e-7",
        "  (measured on a Sigmoid node), so `c_n` decays a little per padded step. On `lstm_dropout_ragged`",
        "  with 1,000 steps and lengths 1, 1000 and",
        f"  500: worst |Δ| of `c_n` {padding.get('tract-cpu', float('nan')):.1e} on tract, "
        f"{padding.get('ort-cpu', float('nan')):.1e} on ONNX Runtime (tolerance 1e-05).",
        "  Within the shipped cases (at most 21 padded steps) it stays within tolerance.",
        "- **IREE**: `iree-import-onnx` and `iree-compile` (llvm-cpu, this CPU) run in processes of their own;",
        "  IREE lowers LSTMs with dynamic seq and batch, and GRUs and Tanh RNNs only at fixed shapes, so those are",
        "  compiled once per case shape (seconds each). A masked ragged GRU does not compile at one time step",
        "  (`seq1`, and `streaming`'s one-step chunk). It lowers no RNN with ReLU, and it ignores `sequence_lens`",
        "  (every row runs to the end): verify measures that (its outputs equal this graph run at the full length",
        "  on ONNX Runtime) and says so. `variable_lengths = \"masked\"` runs there.",
        "- tract runs in a child process: where it aborts (a Rust panic; on a symbolic batch it does for most of",
        "  these graphs, which is why rnnexport gives it each case's shapes) the crash is the tract runner's",
        "  failure, `crashed: SIGABRT: <the panic message>`, and the other runners' results stand.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    rows = []
    configs = load_configs([ROOT / "configs"])
    for label, cfg in forms(configs):
        print(f"measuring {label}", file=sys.stderr)
        rows.append((label, *measure(cfg)))
    padding = long_padding(next(c for c in configs if c.name == "lstm_dropout_ragged"))
    OUT.write_text(render(rows, padding))
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
