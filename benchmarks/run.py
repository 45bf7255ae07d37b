"""Write benchmarks/RESULTS.md: `rnnexport bench` on every shipped config, the targets checked as ratios.

Usage: python benchmarks/run.py [--rounds N]      (about 5 minutes on 2 cores; needs onnxscript)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnexport", *args], cwd=ROOT, capture_output=True, text=True)


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    import onnxruntime
    import torch

    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def _t(entry) -> float | None:
    return entry["median_ms"] if isinstance(entry, dict) else None


def _best(timings: dict, prefix: str) -> dict | None:
    found = [v for k, v in timings.items() if k.startswith(prefix) and isinstance(v, dict)]
    return min(found, key=lambda t: t["median_ms"]) if found else None


def export_rows(configs: list[dict]) -> list[str]:
    rows = ["| config | native | torch-script | torch-dynamo | script / native (target ≥ 3) | "
            "dynamo / native (target ≥ 25) |", "|---|---|---|---|---|---|"]
    for c in configs:
        native, script, dynamo = (c["export_ms"][k] for k in ("native", "torch-script", "torch-dynamo"))
        cells = [f"{_t(x):.1f} ms" if _t(x) is not None else "cannot export" for x in (native, script, dynamo)]
        ratios = [f"{_t(x) / _t(native):.1f}× {'✓' if _t(x) / _t(native) >= goal else '✗'}" if _t(x) else "—"
                  for x, goal in ((script, 3), (dynamo, 25))]
        rows.append(f"| `{c['name']}` | " + " | ".join(cells + ratios) + " |")
    return rows


def runtime_rows(configs: list[dict], peaks: dict, cores: int) -> list[str]:
    rows = ["| config | shape | eager | ours, 1 thread | ours, all cores | torch-script graph | eager / ours | "
            "ours / torch-script (≤ 1 + spread) | GFLOP/s (% of GEMM peak) |", "|---|---|---|---|---|---|---|---|---|"]
    for c in configs:
        for shape, timings in c["runtime"].items():
            eager = next(v for k, v in timings.items() if k.startswith("torch-eager"))
            one, many = _best(timings, "ort-native-1t"), _best(timings, f"ort-native-{cores}t")
            ours = min(one, many, key=lambda t: t["median_ms"])
            threads = 1 if ours is one else cores
            script = timings.get(f"ort-torch-script-{cores}t")
            gflops = c["flops"][shape] / ours["median_ms"] / 1e6
            if isinstance(script, dict):
                ratio = ours["median_ms"] / script["median_ms"]
                ok = ratio <= 1 + max(ours["spread"], script["spread"])
                vs = f"{ratio:.2f} {'✓' if ok else '✗'}"
            else:
                vs = "—"
            rows.append(f"| `{c['name']}` | {shape} | {_ms(eager)} | {_ms(one)} | {_ms(many)} | "
                        f"{_ms(script) if isinstance(script, dict) else '—'} | {eager['median_ms'] / ours['median_ms']:.1f} | "
                        f"{vs} | {gflops:.1f} ({gflops / peaks[str(threads)]:.0%}) |")
    return rows


def _ms(t: dict) -> str:
    return f"{t['median_ms']:.3g} ms ±{t['spread']:.0%}"


def verify_rows(configs: list[dict]) -> list[str]:
    rows = ["| config | verify wall time | model execution | overhead (target ≤ 30%) | nodes at seq N / 10N | "
            "file / raw weights (target ≤ 1%) |", "|---|---|---|---|---|---|"]
    for c in configs:
        overhead = 1 - c["verify_execution_seconds"] / c["verify_seconds"]
        nodes = list(c["nodes_by_seq"].values())
        extra = c["file_bytes"] - c["weight_bytes"]
        excess = extra / c["weight_bytes"]
        rows.append(f"| `{c['name']}` | {c['verify_seconds']:.2f} s | {c['verify_execution_seconds']:.2f} s | "
                    f"{overhead:.0%} {'✓' if overhead <= 0.30 else '✗'} | {nodes[0]} / {nodes[1]} "
                    f"{'✓' if nodes[0] == nodes[1] else '✗'} | +{extra} B, +{excess:.2%} "
                    f"{'✓' if excess <= 0.01 else '✗'} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifacts"
        assert _run("build", "configs/", "--out", str(out), "-q").returncode == 0
        start = time.perf_counter()
        verified = _run("verify", str(out), "-q")
        ci_verify = time.perf_counter() - start
        bench = _run("bench", "configs/", "--rounds", str(args.rounds), "--json", str(Path(tmp) / "bench.json"))
        if bench.returncode:
            sys.exit(bench.stderr)
        data = json.loads((Path(tmp) / "bench.json").read_text())
    peaks, cores, configs = data["gemm_peak_gflops"], data["cores"], data["configs"]
    lines = [
        "# Benchmarks", "",
        "*Generated by `python benchmarks/run.py` (which runs `rnnexport bench configs/`); do not edit by hand.*", "",
        f"Machine: {_machine()}. Float32 GEMM peak measured in the same run (`torch.mm`, 1024²): "
        f"{peaks['1']:.0f} GFLOP/s on 1 thread, {peaks[str(cores)]:.0f} GFLOP/s on {cores}. The machine is shared "
        "and noisy: compare ratios within a table, not absolute times across runs. Times are medians over "
        f"{args.rounds} interleaved rounds, ± the spread (p90 − p10) / median.", "",
        f"Verification of every shipped config, as `.ci/run` does it (`rnnexport verify`, all cases, a fresh "
        f"process): **{ci_verify:.1f} s** (target < 60 s; exit code {verified.returncode}).", "",
        "## Export time (module → serialized ONNX)", "", *export_rows(configs), "",
        "## Runtime", "",
        "Shape classes: `example` (the config's), `stream` (one step, batch 1), `large_batch` (batch 64), `long` "
        "(512 steps, batch 1). *Ours* is the faster of ONNX Runtime's basic and full graph optimisation; the torch-"
        "script graph runs on all cores. The torch-dynamo graphs run only at the example's sequence length, so "
        "they are left out here (see docs/exporters.md).", "", *runtime_rows(configs, peaks, cores), "",
        "## Verification and graph size", "", *verify_rows(configs), "",
        "## Reproduce", "", "```sh", "pip install -c constraints.txt -e '.[dev]'", "python benchmarks/run.py", "```", "",
    ]
    (ROOT / "benchmarks" / "RESULTS.md").write_text("\n".join(lines))
    print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
