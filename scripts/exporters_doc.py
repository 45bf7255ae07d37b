"""Write docs/exporters.md: rnnexport's native writer beside torch.onnx's exporters, on every shipped config.

For each config and backend: export time (median), node count by type, file size, lint findings, and
whether verification passes at shapes other than the example (seq 1, batch 1, a long sequence, another
batch, ragged lengths where the model takes them), on ONNX Runtime's CPU provider.

Usage: python scripts/exporters_doc.py [--repeats N]      (needs onnxscript for torch-dynamo)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import onnxruntime
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rnnexport.artifacts.build import export_config  # noqa: E402
from rnnexport.config import load_configs  # noqa: E402
from rnnexport.errors import ExportError  # noqa: E402
from rnnexport.export.builders import build_model  # noqa: E402
from rnnexport.export.native import op_counts  # noqa: E402
from rnnexport.export.torch_exporters import EXPORTERS, exporter_versions  # noqa: E402
from rnnexport.graph.lint import lint_model  # noqa: E402
from rnnexport.verification.engine import verify  # noqa: E402

OTHER_SHAPES = ("seq1", "batch1", "long", "other_batch", "ragged")
SHORT = {"Transpose": "T", "Reshape": "Rs", "Concat": "C", "Gather": "G", "Constant": "K", "Slice": "Sl",
         "Squeeze": "Sq", "Unsqueeze": "U"}


def measure(cfg, exporter: str, repeats: int) -> dict:
    module = build_model(cfg)
    times, model = [], None
    for _ in range(repeats if exporter != "torch-dynamo" else max(1, repeats // 3)):
        start = time.perf_counter()
        try:
            model = export_config(cfg, module, exporter)[1]
        except ExportError as exc:
            return {"error": str(exc).split(": ", 1)[-1]}
        times.append(time.perf_counter() - start)
    findings = lint_model(model, cfg)
    report = verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",), case_names=OTHER_SHAPES)
    failed_to_run = sorted({c for r in report.runners for c in r.case_errors})
    verdict = ("passes" if report.passed() else
               f"fails to run: {', '.join(failed_to_run)}" if failed_to_run else "drift over tolerance")
    return {
        "seconds": statistics.median(times),
        "nodes": sum(op_counts(model).values()),
        "ops": op_counts(model),
        "bytes": len(model.SerializeToString()),
        "errors": sorted({f.code for f in findings if f.level == "error"}),
        "warnings": sorted({f.code for f in findings if f.level == "warning"}),
        "verify": verdict,
    }


def row(cfg, exporter: str, m: dict, native: dict) -> str:
    if "error" in m:
        return f"| `{cfg.name}` | {exporter} | — | — | — | cannot export: {m['error']} | — |"
    ops = ", ".join(f"{SHORT.get(k, k)} {v}" for k, v in m["ops"].items())
    ratio = "" if exporter == "native" or "seconds" not in native else f" ({m['seconds'] / native['seconds']:.0f}×)"
    lint = ", ".join([f"**{e}**" for e in m["errors"]] + m["warnings"]) or "clean"
    return (f"| `{cfg.name}` | {exporter} | {m['seconds'] * 1e3:.1f} ms{ratio} | {m['nodes']}: {ops} | "
            f"{m['bytes'] / 1024:.0f} KiB | {lint} | {m['verify']} |")


def summary(results: dict) -> list[str]:
    lines = []
    for exporter in EXPORTERS:
        ok = sum(1 for r in results.values() if r[exporter].get("verify") == "passes")
        clean = sum(1 for r in results.values() if "error" not in r[exporter] and not r[exporter]["errors"])
        lines.append(f"- **{exporter}**: verification passes at other shapes for {ok} of {len(results)} configs; "
                     f"lint finds no error in {clean}.")
    wins = []
    for name, r in results.items():
        for exporter in EXPORTERS[1:]:
            m, n = r[exporter], r["native"]
            if "error" in m:
                continue
            if m["nodes"] < n["nodes"]:
                wins.append(f"`{name}`: {exporter} has fewer nodes ({m['nodes']} vs {n['nodes']})")
            if m["bytes"] < n["bytes"]:
                wins.append(f"`{name}`: {exporter} writes a smaller file")
            if m["seconds"] < n["seconds"]:
                wins.append(f"`{name}`: {exporter} exports faster")
    nowhere = "nowhere in these measurements (node count, size, export time)."
    lines.append("- Where a torch exporter wins: " + ("; ".join(wins) if wins else nowhere))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configs = load_configs([ROOT / "configs"])
    results = {}
    for cfg in configs:
        results[cfg.name] = {e: measure(cfg, e, args.repeats) for e in EXPORTERS}
        print(f"measured {cfg.name}", file=sys.stderr)
    lines = [
        "# rnnexport's writer beside torch.onnx's exporters",
        "",
        "*Generated by `python scripts/exporters_doc.py` on the machine named below; do not edit by hand.*",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, onnxscript {exporter_versions()['onnxscript']}. Export time is the median of "
        f"{args.repeats} runs (one for torch-dynamo), with the multiple of native's in brackets. Ops: "
        + ", ".join(f"{v} = {k}" for k, v in SHORT.items()) + ". Lint errors in bold. Verification: "
        f"ONNX Runtime CPU against the float64 oracle on {', '.join(OTHER_SHAPES)} (ragged only where the model "
        "takes sequence_lens) — none of them the shape the model was exported with.",
        "",
        "## Summary",
        "",
        *summary(results),
        "",
        "## Per config",
        "",
        "| config | exporter | export time | nodes | file | lint | verification at other shapes |",
        "|---|---|---|---|---|---|---|",
    ]
    for cfg in configs:
        lines += [row(cfg, e, results[cfg.name][e], results[cfg.name]["native"]) for e in EXPORTERS]
    (ROOT / "docs" / "exporters.md").write_text("\n".join(lines) + "\n")
    print("wrote docs/exporters.md", file=sys.stderr)


if __name__ == "__main__":
    main()
