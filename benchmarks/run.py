"""Write benchmarks/RESULTS.md: `rnnexport bench` on every shipped config, the targets checked as ratios.

Usage: python benchmarks/run.py [--rounds N]      (about 15 minutes on 2 cores; needs onnxscript)
       python benchmarks/run.py --render-only     (rewrite RESULTS.md from benchmarks/results.json)

A run compares its runtime medians with the results.json it replaces, when that came from the same machine: how
often two consecutive runs agree is one of the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def _ms(t: dict) -> str:
    return f"{t['median_ms']:.3g} ms ±{t['spread']:.0%}" + (" (noisy)" if t.get("noisy") else "")


def _ours(timings: dict, threads: int) -> dict | None:
    """ONNX Runtime on our graph at ``threads``: the faster of full and basic optimisation."""
    found = [timings.get(f"ort-cpu@{threads}t"), timings.get(f"ort-cpu-basic@{threads}t")]
    found = [t for t in found if isinstance(t, dict)]
    return min(found, key=lambda t: t["median_ms"]) if found else None


def export_rows(configs: list[dict]) -> list[str]:
    rows = ["| config | native | torch-script | torch-dynamo | script / native (target ≥ 3) | "
            "dynamo / native (target ≥ 25) |", "|---|---|---|---|---|---|"]
    for c in configs:
        native, script, dynamo = (c["export_ms"][k] for k in ("native", "torch-script", "torch-dynamo"))
        cells = [f"{_t(x):.1f} ms" + (" (noisy)" if x.get("noisy") else "") if _t(x) is not None else "cannot export"
                 for x in (native, script, dynamo)]
        ratios = [f"{_t(x) / _t(native):.1f}× {'✓' if _t(x) / _t(native) >= goal else '✗'}"
                  + (" (noisy)" if x.get("noisy") or native.get("noisy") else "") if _t(x) else "—"
                  for x, goal in ((script, 3), (dynamo, 25))]
        rows.append(f"| `{c['name']}` | " + " | ".join(cells + ratios) + " |")
    return rows


def runtime_rows(configs: list[dict], peaks: dict, bandwidth: dict, threads: list[int]) -> list[str]:
    """Eager against our graph and against the torch-script graph, at equal thread counts, and our graph
    against this machine's floor for the call (``bench.floor_ms``)."""
    from rnnexport.bench import floor_ms

    rows = ["| config | shape | threads | eager | ours | eager / ours | torch-script graph | "
            "ours / torch-script (≤ 1 + spread) | GFLOP/s (% of GEMM peak) | floor (what sets it): ours over it |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in configs:
        for shape, timings in c["runtime"].items():
            for t in threads:
                eager, ours = timings[f"torch-eager@{t}t"], _ours(timings, t)
                script = timings.get(f"ort-torch-script@{t}t")
                gflops = c["flops"][shape] / ours["median_ms"] / 1e6
                floor, bound = floor_ms(c["flops"][shape], c["weight_bytes"], peaks[str(t)], bandwidth[str(t)])
                if isinstance(script, dict):
                    ratio = ours["median_ms"] / script["median_ms"]
                    vs = f"{ratio:.2f} {'✓' if ratio <= 1 + max(ours['spread'], script['spread']) else '✗'}"
                else:
                    vs = "—"
                rows.append(f"| `{c['name']}` | {shape} | {t} | {_ms(eager)} | {_ms(ours)} | "
                            f"{eager['median_ms'] / ours['median_ms']:.1f} | "
                            f"{_ms(script) if isinstance(script, dict) else '—'} | {vs} | "
                            f"{gflops:.1f} ({gflops / peaks[str(t)]:.0%}) | {floor:.3g} ms ({bound}): "
                            f"×{ours['median_ms'] / floor:.3g} |")
    return rows


DEPLOY = ("ort-cpu", "ort-cpu-fp16-weights", "ort-cpu-int8-dynamic", "openvino-cpu-f32", "openvino-cpu-default",
          "ort-cpu-sequence_lens", "ort-cpu-masked")


def deploy_rows(configs: list[dict], cores: int) -> list[str]:
    """Per config and runner at all cores: precision, then per shape class latency × ort-cpu and worst |Δ|."""
    shapes = list(configs[0]["runtime"])
    rows = ["| config | runner | precision | " + " | ".join(f"{s}: × ort-cpu, worst \\|Δ\\|" for s in shapes) + " |",
            "|---|---|---|" + "---|" * len(shapes)]
    for c in configs:
        for runner in DEPLOY:
            key = f"{runner}@{cores}t"
            if not any(isinstance(c["runtime"][s].get(key), dict) for s in shapes):
                continue
            cells = []
            for s in shapes:
                mine, ref = c["runtime"][s].get(key), c["runtime"][s].get(f"ort-cpu@{cores}t")
                cells.append(f"×{mine['median_ms'] / ref['median_ms']:.2f}{' (noisy)' if mine.get('noisy') else ''}, "
                             f"{c['drift'][s][key]:.1e}" if isinstance(mine, dict) else "—")
            rows.append(f"| `{c['name']}` | {runner} | {c['precision'].get(runner, '?')} | " + " | ".join(cells) + " |")
    return rows


def verify_pairs(runs: dict[str, list[dict]]) -> list[tuple[float, float]]:
    """For each pair of verify runs made back to back (``--threads 1``, then the default): the default's wall time
    over the model execution timed at one thread (where no runner opens beside the calls and slows them), and over
    one thread's wall time. A pair meets one state of a shared machine; runs apart may not."""
    return [(auto["wall_seconds"] / one["execution_seconds"], auto["wall_seconds"] / one["wall_seconds"])
            for one, auto in zip(runs["1"], runs["auto"])]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def verify_rows(configs: list[dict], runs: dict[str, list[dict]], variants: dict | None) -> list[str]:
    pairs = verify_pairs(runs)
    ratios, speeds = [r for r, _ in pairs], [s for _, s in pairs]
    one, auto = ({k: _median([r[k] for r in runs[t]]) for k in ("wall_seconds", "cpu_seconds", "execution_seconds")}
                 for t in ("1", "auto"))
    rows = [f"`rnnexport verify` of the {len(runs['1'][0]['configs'])} artifacts in one process, timed from outside as "
            f"a user runs it, {len(pairs)} times at `--threads 1` and at the default threads (`auto`: one thread per "
            f"runtime, runners opened on a second one), alternated. Medians: at `--threads 1` {one['wall_seconds']:.1f}"
            f" s wall ({one['cpu_seconds']:.1f} s CPU), of which the oracle's and the runners' calls take "
            f"{one['execution_seconds']:.1f} s; at the default {auto['wall_seconds']:.1f} s wall "
            f"({auto['cpu_seconds']:.1f} s CPU). Per pair run back to back, the default's wall time over the calls "
            f"at one thread: **×{_median(ratios):.3f}** median, ×{min(ratios):.2f}–{max(ratios):.2f} (target ≤ ×1.5: "
            f"**{'met' if _median(ratios) <= 1.5 else 'missed'}**); over one thread's wall time: "
            f"{_median(speeds):.2f} median, {min(speeds):.2f}–{max(speeds):.2f}."
            + (f" Built with the fp16-weights and int8-dynamic variants, at the default threads: "
               f"{variants['wall_seconds']:.1f} s wall against {variants['execution_seconds']:.1f} s of calls in the "
               f"same run, ×{variants['ratio']:.2f}." if variants else ""), "",
            "| config | nodes at seq N / 10N | file / raw weights (target ≤ 1%) |", "|---|---|---|"]
    for c in configs:
        nodes = list(c["nodes_by_seq"].values())
        extra = c["file_bytes"] - c["weight_bytes"]
        excess = extra / c["weight_bytes"]
        rows.append(f"| `{c['name']}` | {nodes[0]} / {nodes[1]} {'✓' if nodes[0] == nodes[1] else '✗'} | "
                    f"+{extra} B, +{excess:.2%} {'✓' if excess <= 0.01 else '✗'} |")
    return rows


def memory_rows(memory: list[dict], configs: list[dict]) -> list[str]:
    """Peak memory of verify with a long case added, against the case's float32 outputs and each runtime alone."""
    if not memory:
        return ["Not measured in this run."]
    left = [f"`{c['name']}`" for c in configs if c["name"] not in {m["name"] for m in memory}]
    runtimes = list(memory[0]["runtime_mib"])
    rows = ["| config | case | outputs (float32) | verify's peak increase | "
            + " | ".join(f"{r} alone" for r in runtimes) + " | verify beyond the largest runtime (target ≤ 5×) |",
            "|---|---|---|---|" + "---|" * len(runtimes) + "---|"]
    for m in memory:
        out = m["output_bytes"] / 2**20
        kept = m["verify_mib"] - max(m["runtime_mib"].values())
        rows.append(f"| `{m['name']}` | seq {m['seq']}, batch {m['batch']} | {out:.0f} MiB | "
                    f"{m['verify_mib']:.0f} MiB ({m['verify_mib'] / out:.1f}×) | "
                    + " | ".join(f"{v:.0f} MiB ({v / out:.1f}×)" for v in m["runtime_mib"].values())
                    + f" | {kept:.0f} MiB ({kept / out:.1f}×) {'✓' if kept / out <= 5 else '✗'} |")
    if left:
        rows += ["", f"Not measured: {', '.join(left)}, over {MEMORY_HIDDEN} hidden units, whose float64 oracle alone "
                 f"takes minutes at {MEMORY_SEQ:,} steps."]
    return rows


def _all_timings(configs: list[dict]):
    for c in configs:
        for shape, timings in c["runtime"].items():
            for key, t in timings.items():
                if isinstance(t, dict):
                    yield c, shape, key, t


AGREE = 0.2  # two runs' medians of one figure agree when they differ by less than this fraction of the smaller
AGREE_SHARE = 0.9  # the share of the figures trusted in both runs that must agree


def agreement(previous: dict, current: dict) -> dict:
    """How the runtime medians of ``current`` compare with ``previous`` (two results.json): of the figures neither
    run marks noisy, how many differ by less than ``AGREE``; or, where the two cannot be compared, ``reason``
    saying why (another machine or library versions, another schema, no figure trusted in both)."""
    if previous.get("machine") != current.get("machine"):
        return {"reason": f"the run before was on another machine or library versions ({previous.get('machine')})"}
    if previous.get("schema_version") != current.get("schema_version"):
        return {"reason": f"the run before wrote results.json schema {previous.get('schema_version')}, this one "
                          f"{current.get('schema_version')}"}
    before = {(c["name"], shape, key): t for c, shape, key, t in _all_timings(previous.get("configs", []))}
    trusted = [(before[(c["name"], shape, key)]["median_ms"], t["median_ms"])
               for c, shape, key, t in _all_timings(current["configs"])
               if (c["name"], shape, key) in before and not t.get("noisy")
               and not before[(c["name"], shape, key)].get("noisy")]
    if not trusted:
        return {"reason": "no runtime median is trusted in both runs"}
    agree = sum(abs(a - b) < AGREE * min(a, b) for a, b in trusted)
    return {"trusted_in_both": len(trusted), "agree": agree, "previous_measured": previous.get("measured")}


def targets(configs: list[dict], peaks: dict, threads: list[int], runs: dict[str, list[dict]],
            repeat: dict | None = None, memory: list[dict] | None = None) -> list[str]:
    """One line per target: met or missed, with the measured ratio; every name and number in it is read from the
    results, none is written here."""
    pairs = verify_pairs(runs)
    ratios, speeds = [r for r, _ in pairs], [s for _, s in pairs]
    export = [(c["name"], c["export_ms"]) for c in configs if _t(c["export_ms"]["torch-script"])]
    script_name, script = min(((n, _t(e["torch-script"]) / _t(e["native"])) for n, e in export), key=lambda x: x[1])
    dynamo = [_t(e["torch-dynamo"]) / _t(e["native"]) for _, e in export if _t(e["torch-dynamo"])]
    refused = [c["name"] for c in configs if not _t(c["export_ms"]["torch-script"])]
    runtime = []
    for c in configs:
        for timings in c["runtime"].values():
            for t in threads:
                ours, theirs = _ours(timings, t), timings.get(f"ort-torch-script@{t}t")
                if isinstance(theirs, dict):
                    runtime.append((ours["median_ms"] / theirs["median_ms"], 1 + max(ours["spread"], theirs["spread"]),
                                    bool(ours.get("noisy") or theirs.get("noisy"))))
    eager = [(f"{c['name']}, {k}", c["runtime"]["example"][k]["median_ms"] / a["median_ms"] - 1,
              bool(a.get("noisy") or c["runtime"]["example"][k].get("noisy")))
             for c in configs for k, a in c["eager_alone"].items() if isinstance(c["runtime"]["example"].get(k), dict)]
    worst_eager = max(eager, key=lambda e: abs(e[1]))
    missed_eager = [f"`{name}` {change:+.0%}" + _noisy(n) for name, change, n in eager if abs(change) > 0.2]
    shares = [(c["flops"][s] / t["median_ms"] / 1e6 / peaks[k.rsplit("@", 1)[1][:-1]], f"{c['name']}, {s}, {k}",
               bool(t.get("noisy")))
              for c, s, k, t in _all_timings(configs)
              if c["precision"].get(k.rsplit("@", 1)[0], "float32") in ("float32", "fp16-weights")]
    top, top_name, top_noisy = max(shares)
    noisy = sum(t.get("noisy", False) for *_, t in _all_timings(configs))
    slowed = sum(t.get("slowed", False) for *_, t in _all_timings(configs))
    differed = sum(bool(t.get("noisy")) and abs(t["passes"][0] - t["passes"][1]) >= 0.2 * min(t["passes"])
                   for *_, t in _all_timings(configs) if len(t.get("passes", ())) == 2)
    worst_runtime = max(runtime, key=lambda r: r[0]) if runtime else (0.0, 0.0, False)
    total = sum(1 for _ in _all_timings(configs))
    small = [c for c in configs if c["file_bytes"] / c["weight_bytes"] - 1 > 0.01]
    names = [f"`{c['name']}`" for c in small]
    largest = max(configs, key=lambda c: c["file_bytes"] - c["weight_bytes"])
    extra = largest["file_bytes"] - largest["weight_bytes"]
    nodes = all(len(set(c["nodes_by_seq"].values())) == 1 for c in configs)
    dynamo_text = (f"≥ 25× faster than `dynamo=True`: **{'met' if min(dynamo) >= 25 else 'missed'}**, smallest ratio "
                   f"{min(dynamo):.0f}×" if dynamo else "`dynamo=True` not measured")
    noisy_export = [c["name"] for c in configs if any(isinstance(c["export_ms"][k], dict)
                                                      and c["export_ms"][k].get("noisy")
                                                      for k in ("native", "torch-script"))]
    return [
        f"- Eager PyTorch inside `bench` within 20% of eager timed alone (no cross-talk between runners): "
        f"**{'met' if abs(worst_eager[1]) <= 0.2 else 'missed'}**, largest change {worst_eager[1]:+.0%} "
        f"(`{worst_eager[0]}`{_noisy(worst_eager[2])}); within 20% in {len(eager) - len(missed_eager)} of "
        f"{len(eager)} (config, thread count) pairs"
        + (f", missed in {', '.join(missed_eager)}." if missed_eager else "."),
        f"- No float32 runner above the measured float32 GEMM peak: **{'met' if top <= 1 else 'missed'}**, "
        f"highest {top:.0%} (`{top_name}`{_noisy(top_noisy)}; int8 and bf16 runners have kernels with peaks of "
        "their own and are not held to it).",
        f"- Runtime medians trusted (two passes within 20%, the machine within 20% of its best speed): "
        f"{total - noisy} of {total}" + (f"; the other {noisy} are marked *(noisy)*: {differed} whose passes "
                                         f"still differed after up to 3× the rounds, {slowed} measured while the "
                                         "machine ran slower (a figure may be both)." if noisy else "."),
        f"- Native export ≥ 3× faster than `dynamo=False`: **{'met' if script >= 3 else 'missed'}**, smallest "
        f"ratio {script:.1f}× (`{script_name}`"
        + (", a noisy figure" if script_name in noisy_export else "") + f"); {dynamo_text}."
        + (f" Not exported by `dynamo=False`: {', '.join(f'`{n}`' for n in refused)}." if refused else ""),
        f"- Our graph's ONNX Runtime latency no worse than the torch-script graph's beyond the spread, at equal "
        f"threads: **{'met' if all(r <= lim for r, lim, _ in runtime) else 'missed'}**, met in "
        f"{sum(r <= lim for r, lim, _ in runtime)} of {len(runtime)} (config, shape, threads) triples; worst ratio "
        f"{worst_runtime[0]:.2f}{_noisy(worst_runtime[2])}.",
        f"- `rnnexport verify` of every artifact within 1.5× of its model execution: "
        f"**{'met' if _median(ratios) <= 1.5 else 'missed'}**, ×{_median(ratios):.3f} (the median of {len(pairs)} "
        f"pairs, ×{min(ratios):.2f}–{max(ratios):.2f}: the default's wall time over the calls at one thread); the "
        f"default no slower than `--threads 1`: **{'met' if _median(speeds) <= 1 else 'missed'}**, "
        f"{_median(speeds):.2f} of its wall time ({min(speeds):.2f}–{max(speeds):.2f}).",
        _repeat_line(repeat),
        f"- Node count independent of sequence length: **{'met' if nodes else 'missed'}**.",
        f"- File size within 1% of the raw weight bytes: **{'met' if not small else 'missed'}**"
        + (f", missed for {', '.join(names)}" if small else "")
        + f": the graph and its metadata add {extra} bytes at most (`{largest['name']}`), more than 1% of any model "
        f"under {extra * 100 / 1024:.0f} KiB of weights.",
        *_memory_line(memory or []),
    ]


def _noisy(noisy: bool) -> str:
    return ", a noisy figure" if noisy else ""


def _repeat_line(repeat: dict | None) -> str:
    goal = (f"- Two consecutive runs agree within {AGREE:.0%} on ≥ {AGREE_SHARE:.0%} of the runtime medians trusted "
            "in both")
    if not repeat:
        return goal + ": not measured (no earlier `results.json` to compare with)."
    if "reason" in repeat:
        return goal + f": not measured ({repeat['reason']})."
    share = repeat["agree"] / repeat["trusted_in_both"]
    when = f" (measured {repeat['previous_measured']})" if repeat.get("previous_measured") else ""
    return (f"{goal}: **{'met' if share >= AGREE_SHARE else 'missed'}**, {repeat['agree']} of "
            f"{repeat['trusted_in_both']} ({share:.0%}) against the run before this one{when}.")


def _memory_line(memory: list[dict]) -> list[str]:
    if not memory:
        return []
    times = [((m["verify_mib"] - max(m["runtime_mib"].values())) * 2**20 / m["output_bytes"], m["name"])
             for m in memory]
    worst, name = max(times)
    whole = [m["verify_mib"] * 2**20 / m["output_bytes"] for m in memory]
    alone = max(v * 2**20 / m["output_bytes"] for m in memory for v in m["runtime_mib"].values())
    return [f"- Memory of verify at {MEMORY_SEQ:,} steps beyond the largest runtime's own ≤ 5× the float32 outputs: "
            f"**{'met' if worst <= 5 else 'missed'}**, at most {worst:.1f}× (`{name}`; {len(memory)} configs). "
            f"verify's whole increase is {min(whole):.1f}–{max(whole):.1f}× the outputs, of which the runtimes "
            f"themselves need up to {alone:.1f}× to run the case once, as a deployment does."]


MEMORY_SEQ, MEMORY_BATCH = 100_000, 4
MEMORY_HIDDEN = 128  # larger models are left out: their float64 oracle alone takes minutes at MEMORY_SEQ steps


def measure_memory(folder: Path) -> list[dict]:
    """``bench.verify_memory`` of every artifact in ``folder`` up to ``MEMORY_HIDDEN`` hidden units."""
    from rnnexport.artifacts.folders import load_artifact
    from rnnexport.bench import verify_memory

    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        if load_artifact(path).config.hidden_size <= MEMORY_HIDDEN:
            run = verify_memory(path, MEMORY_SEQ, MEMORY_BATCH)
            found.append(dataclasses.asdict(run))
            print(f"memory: {run.name}: verify +{run.verify_mib:.0f} MiB, runtimes {run.runtime_mib}", flush=True)
    return found


VERIFY_RUNS = 5  # pairs of verify runs, one at --threads 1 and one at the default, back to back


def time_verify_both(folder: Path, report: Path) -> dict[str, list[dict]]:
    """``rnnexport verify FOLDER`` at ``--threads 1`` and at the default threads (auto), ``VERIFY_RUNS`` times each,
    alternated so that each pair meets one state of the machine: threads → the runs (``bench.VerifyRun``), in order."""
    from rnnexport.bench import time_verify

    runs: dict[str, list[dict]] = {"1": [], "auto": []}
    for _ in range(VERIFY_RUNS):
        for threads, found in runs.items():
            run = time_verify([folder], report, threads)
            found.append(dataclasses.asdict(run) | {"ratio": run.ratio})
    return runs


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
            memory = measure_memory(out)
            shipped = time_verify_both(out, Path(tmp) / "verify.json")  # the artifacts as README's job builds them
            assert _run("build", "configs/", "--out", str(out), "-q", "--variants", "fp16-weights,int8-dynamic",
                        ).returncode == 0
            bench = _run("bench", str(out), "--rounds", str(args.rounds), "--json", str(Path(tmp) / "bench.json"))
            if bench.returncode:
                sys.exit(bench.stderr)
            data = json.loads((Path(tmp) / "bench.json").read_text())
        data.update(rounds=args.rounds, machine=_machine(), memory=memory, verify_runs=shipped,
                    verify_with_variants=data.pop("verify"),
                    measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        if raw.is_file():
            data["repeat"] = agreement(json.loads(raw.read_text()), data)
        raw.write_text(json.dumps(data, indent=1) + "\n")
    data = json.loads(raw.read_text())
    write_results(data)


def write_results(data: dict) -> None:
    peaks, cores, configs = data["gemm_peak_gflops"], data["cores"], data["configs"]
    threads = sorted({1, cores})
    rounds = data["rounds"]
    lines = [
        "# Benchmarks", "",
        "*Generated by `python benchmarks/run.py` (which builds the shipped configs with the fp16-weights and "
        "int8-dynamic variants and runs `rnnexport bench` on them); do not edit by hand.*", "",
        f"Machine: {data['machine']}. Float32 GEMM peak measured in the same run (`torch.mm`, best of 1024², 2048² "
        f"and 4096² over several rounds): {peaks['1']:.0f} GFLOP/s on 1 thread, {peaks[str(cores)]:.0f} GFLOP/s on "
        f"{cores}; copy bandwidth (256 MiB read and written, `Tensor.copy_`): "
        + ", ".join(f"{b:.1f} GB/s on {t}" for t, b in data["copy_bandwidth_gbps"].items())
        + ". A call's floor is the longer of its FLOPs at the GEMM peak and its weights read once at that "
        "bandwidth. Raw numbers: `results.json`.", "",
        "**How to read.** The machine is shared and noisy: compare ratios within a table, never absolute times "
        f"across runs. Each time is the median of individually timed calls over {rounds} interleaved rounds, ± "
        "the spread (p90 − p10) / median; the even and the odd rounds make two passes, and a figure whose passes "
        "differ by 20% or more gets up to 3× the rounds and is marked *(noisy)* if they still do. Two fixed "
        "probes are timed at the start of every round, a matrix product on every core and a read of 16 MiB"
        + (" ({:.0f} µs and {:.0f} µs at their best in this run)".format(*(data["probe_ms"][k] * 1e3 for k in (
            "compute_ms", "memory_ms"))) if "probe_ms" in data else "")
        + ": a figure measured while either ran 20% or more slower is marked *(noisy)* too, since a machine "
        "slowed for minutes gives two passes that agree with each other and not with the next run. Every "
        "runner is measured at 1 thread and at all cores, and every ratio compares equal thread counts. ONNX "
        "Runtime's threads do not spin between calls, and eager PyTorch is also timed alone to show whether the "
        "other runners slow it down.", "",
        "## Targets", "", *targets(configs, peaks, threads, data["verify_runs"], data.get("repeat"),
                                   data.get("memory")), "",
        "## Export time (module → serialized ONNX)", "", *export_rows(configs), "",
        "## Runtime", "",
        "Shape classes: `example` (the config's), `stream` (one step, batch 1), `large_batch` (batch 64), `long` "
        "(512 steps, batch 1). *Ours* is the faster of ONNX Runtime's basic and full graph optimisation on our "
        "graph. The torch-dynamo graphs run only at the example's sequence length, so they are left out here "
        "(see docs/exporters.md).", "", *runtime_rows(configs, peaks, data["copy_bandwidth_gbps"], threads), "",
        "## Deploy matrix", "",
        f"At all cores ({cores}): each runtime and precision with its latency as a ratio to ONNX Runtime float32 "
        "on our graph (`ort-cpu`, same threads) and its worst |Δ| against the float64 oracle on the same inputs, "
        "so speed can be weighed against accuracy in one table. `ort-cpu-sequence_lens` is the `sequence_lens` "
        "form of a masked ragged model: the price of the portable masked graph.", "",
        *deploy_rows(configs, cores), "",
        "## Verification and graph size", "",
        *verify_rows(configs, data["verify_runs"], data.get("verify_with_variants")), "",
        f"## Memory of verify at {MEMORY_SEQ:,} steps", "",
        "Peak resident memory of `rnnexport verify ARTIFACT --cases example --shape seq=…,batch=…` over the same "
        "command without `--shape`, each a process of its own, beside the float32 size of that case's outputs; and "
        "the same increase for each runtime alone running the case once, as a deployment does. What verify holds "
        "beyond the largest runtime's own need is the oracle's float64 outputs, PyTorch float32's and one runner's "
        "at a time.", "", *memory_rows(data.get("memory", []), configs), "",
        "## Reproduce", "", "```sh", "pip install -c constraints.txt -e '.[dev]'", "python benchmarks/run.py",
        "```", "",
    ]
    (ROOT / "benchmarks" / "RESULTS.md").write_text("\n".join(lines))
    print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
