"""`rnnexport bench`: what it measures and records. No timing is asserted: these machines are shared."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.artifacts.folders import load_artifact
from rnnexport.bench import (
    THREADS,
    ConfigBench,
    Probe,
    Timing,
    forward_flops,
    gemm_peak,
    mark_slowed,
    peak_problems,
    probe,
    time_interleaved,
)
from rnnexport.cli import main
from rnnexport.config import load_config

TANH = next(p for p in SHIPPED if p.stem == "rnn_tanh_nobias")


def test_flop_count_by_hand():
    cfg = load_config(next(p for p in SHIPPED if p.stem == "gru_2layer"))  # 16 → 32 → 32, GRU: 3 gates
    per_step = 2 * 96 * (16 + 32) + 2 * 96 * (32 + 32)
    assert forward_flops(cfg, 24, 4) == per_step * 24 * 4
    bidir = load_config(next(p for p in SHIPPED if p.stem == "lstm_3layer_bidir"))  # 24 → 2×48 → 2×48 → 2×48
    per_step = 2 * (2 * 192 * (24 + 48)) + 2 * 2 * (2 * 192 * (96 + 48))
    assert forward_flops(bidir, 1, 1) == per_step


def test_interleaved_timing_reports_median_and_spread():
    calls = {"a": lambda: sum(range(1000)), "b": lambda: sum(range(10))}
    timings = time_interleaved(calls, rounds=5)
    assert set(timings) == {"a", "b"}
    assert all(isinstance(t, Timing) and t.median_ms > 0 and t.spread >= 0 for t in timings.values())
    assert Timing.of([1.0, 2.0, 3.0]).median_ms == 2000.0 and Timing.of([1.0, 2.0, 3.0]).spread == 1.0


@pytest.mark.slow
def test_bench_an_artifact_records_a_like_for_like_deploy_matrix(tmp_path):
    out = tmp_path / "art"
    assert CliRunner().invoke(main, ["build", str(TANH), "--out", str(out), "--variants", "fp16-weights"]).exit_code == 0
    result = CliRunner().invoke(main, ["bench", str(out / TANH.stem), "--rounds", "3", "--exporters",
                                       "torch-script", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("float32 GEMM peak (best of 1024², 2048², 4096²")
    assert lines[1].startswith("copy bandwidth (256 MiB, read + written): ") and lines[2] == TANH.stem
    assert "torch-script" in lines[3] and "torch-dynamo: not measured" in lines[3]
    data = json.loads((tmp_path / "b.json").read_text())
    bench = data["configs"][0]
    assert set(data["gemm_peak_gflops"]) == set(data["copy_bandwidth_gbps"]) == {str(t) for t in THREADS}
    # each latency beside its floor: the FLOPs at the GEMM peak or the weights at the copy bandwidth, the longer
    timing = bench["runtime"]["long"]["ort-cpu@1t"]
    arithmetic = bench["flops"]["long"] / data["gemm_peak_gflops"]["1"] / 1e6
    memory = bench["weight_bytes"] / data["copy_bandwidth_gbps"]["1"] / 1e6
    bound = "arithmetic" if arithmetic >= memory else "memory"
    floor = f"×{timing['median_ms'] / max(arithmetic, memory):.3g} its {bound} floor"
    long = lines[next(i for i, line in enumerate(lines) if line.startswith("  long (")):]
    assert floor in next(line for line in long if line.strip().startswith("ort-cpu@1t ")), floor
    runners = {"torch-eager", "ort-cpu", "ort-cpu-basic", "ort-cpu-fp16-weights", "ort-torch-script",
               "openvino-cpu-f32", "openvino-cpu-default", "tract-cpu"}
    for shape, timings in bench["runtime"].items():
        # every runner at every thread count: ratios compare equal thread counts
        assert set(timings) == {f"{r}@{t}t" for r in runners for t in THREADS}, shape
        assert set(bench["drift"][shape]) == set(timings)
        for key, timing in timings.items():
            first, second = timing["passes"]  # even and odd rounds: trusted only when they agree within 20%
            disagree = abs(first - second) >= 0.2 * min(first, second)
            assert timing["rounds"] >= 3 and timing["noisy"] == (disagree or timing["slowed"])
            assert timing["cpu_ms"] > 0 and timing["machine_ms"] > 0 and timing["memory_ms"] > 0
            threads = int(key.rsplit("@", 1)[1][:-1])
            assert timing["median_ms"] / 1e3 * data["gemm_peak_gflops"][str(threads)] * 1e9 >= bench["flops"][shape] \
                or "above the GEMM peak" in result.output
    assert bench["precision"]["ort-cpu-fp16-weights"] == "fp16-weights"
    assert max(bench["drift"]["long"][f"ort-cpu@{t}t"] for t in THREADS) < 1e-5
    assert set(bench["eager_alone"]) == {f"torch-eager@{t}t" for t in THREADS}
    assert any(line.startswith("  torch-eager@1t at the example shape: ") and "in the rotation" in line for line in lines)
    assert bench["nodes_by_seq"]["30"] == bench["nodes_by_seq"]["300"]  # the graph does not grow with seq
    assert 0 < bench["file_bytes"] - bench["weight_bytes"] < 2048  # a fixed graph + metadata overhead
    run = data["verify"]  # `rnnexport verify` of a copy, timed from outside: the user's folder gets no report
    assert run["configs"] == [TANH.stem] and 0 < run["execution_seconds"] < run["wall_seconds"]
    assert run["ratio"] == run["wall_seconds"] / run["execution_seconds"] and run["cpu_seconds"] > 0
    assert lines[-1] == (f"verify, as a user runs it (1 artifact(s) in one process): {run['wall_seconds']:.1f} s wall, "
                         f"{run['cpu_seconds']:.1f} s CPU; the oracle's and the runners' calls "
                         f"{run['execution_seconds']:.1f} s: ×{run['ratio']:.2f}")
    assert not (out / TANH.stem / "report.json").exists()
    manifest = load_artifact(out / TANH.stem).manifest  # still passes its integrity check
    recommendation = manifest["runtime_recommendation"]
    assert set(recommendation) == {"example", "stream", "large_batch", "long"}
    assert all(r["intra_op_num_threads"] in THREADS for r in recommendation.values())
    latency = manifest["deploy_latency"]
    assert latency["ort-cpu"] == {s: 1.0 for s in recommendation}
    assert set(latency) == {"ort-cpu", "ort-cpu-basic", "ort-cpu-fp16-weights", "openvino-cpu-f32",
                            "openvino-cpu-default", "tract-cpu"}
    assert max(bench["drift"]["long"][f"tract-cpu@{t}t"] for t in THREADS) < 1e-5
    verified = CliRunner().invoke(main, ["verify", str(out / TANH.stem), "--cases", "example,long", "--long-seq", "64",
                                         "--runtimes", "ort"])
    fp16 = next(line for line in verified.output.splitlines() if line.startswith("    ort-cpu-fp16-weights"))
    ratio = latency["ort-cpu-fp16-weights"]["example"]
    assert f"example ×{ratio:.2g}" in fp16


def test_timing_takes_more_rounds_while_noisy_and_marks_what_stays_noisy():
    state = {"calls": 0}

    def jumpy():  # every other call (one call per sample: each is over 20 ms) is 4× slower
        state["calls"] += 1
        time.sleep(0.025 if state["calls"] % 2 else 0.1)

    timings = time_interleaved({"steady": lambda: sum(range(20000)), "jumpy": jumpy}, rounds=4)
    jumpy, steady = timings["jumpy"], timings["steady"]
    assert jumpy.rounds == 12 and jumpy.noisy  # the even rounds are all fast, the odd ones all slow
    assert jumpy.passes[1] / jumpy.passes[0] > 3
    assert steady.rounds in (4, 8, 12)
    assert steady.noisy == (abs(steady.passes[0] - steady.passes[1]) >= 0.2 * min(steady.passes))


def test_a_figure_measured_while_the_machine_ran_slower_is_marked_noisy_even_when_its_passes_agree():
    """Each round starts with the machine's probes; a figure is judged against the fastest the machine ran in the
    whole run, which a later config may show, and the recommendations are made again with the new marks."""
    measured = time_interleaved({"spin": lambda: sum(range(20000))}, rounds=4)["spin"]
    assert measured.machine_ms > 0 and measured.memory_ms > 0 and not measured.slowed

    def bench(name: str, compute_ms: float, memory_ms: float) -> ConfigBench:  # both passes alike: they agree
        timing = Timing.of([1e-3] * 8, parity=[0, 1] * 4, machine=[Probe(compute_ms, memory_ms)] * 4)
        return ConfigBench(name, {}, {}, {"example": {"ort-cpu@1t": timing}}, {}, {}, {})

    steady, cache_evicted, core_shared = bench("a", 0.1, 1.0), bench("b", 0.1, 1.3), bench("c", 0.13, 1.0)
    assert mark_slowed([cache_evicted], Probe(0.2, 1.2)) == Probe(0.1, 1.2)  # the faster one wins, per probe
    assert not cache_evicted.timings()[0].noisy  # not yet known to be slowed
    assert mark_slowed([steady, cache_evicted, core_shared], Probe(0.2, 1.2)) == Probe(0.1, 1.0)
    assert [b.timings()[0].slowed for b in (steady, cache_evicted, core_shared)] == [False, True, True]
    assert [b.recommendation["example"]["noisy"] for b in (steady, cache_evicted, core_shared)] == [False, True, True]
    assert all(0 < ms < 1e3 for ms in probe(calls=3))


def test_each_call_is_timed_on_its_own_with_its_cpu_time_beside_it():
    """A call that sleeps 2 ms is 2 ms of wall time and almost no CPU: per call, not an average of a batch."""
    timings = time_interleaved({"sleep": lambda: time.sleep(0.002), "spin": lambda: sum(range(20000))}, rounds=4)
    sleep, spin = timings["sleep"], timings["spin"]
    assert sleep.median_ms >= 2.0 and sleep.cpu_ms < 0.5 * sleep.median_ms
    assert spin.cpu_ms > 0 and spin.rounds >= 4 and len(spin.passes) == 2


def test_a_wrong_shaped_runner_is_a_failure_not_a_crash():
    """A graph whose output comes back with seq and batch swapped (as the dynamo graph of lstm_large returns the
    example's shape at another length): bench records it as a wrong output and times the rest."""
    import numpy as np
    import onnx

    from rnnexport.artifacts.build import export_config
    from rnnexport.bench import Entry, _measure
    from rnnexport.export.builders import build_model
    from rnnexport.verification.runners.ort_runner import OrtRunner

    cfg = load_config(TANH)
    module = build_model(cfg)
    model = export_config(cfg, module)[1]
    output = next(o for o in model.graph.output if o.name == "output")
    inner = "output_before_swap"
    for node in model.graph.node:
        node.output[:] = [inner if o == "output" else o for o in node.output]
    model.graph.node.append(onnx.helper.make_node("Transpose", [inner], ["output"], perm=[1, 0, 2]))
    output.type.tensor_type.shape.ClearField("dim")
    good, bad = (OrtRunner(m.SerializeToString(), threads=1) for m in (export_config(cfg, module)[1], model))
    entries = [Entry("ort-cpu", 1, "float32", good.infer), Entry("swapped", 1, "float32", bad.infer)]
    runtime, drift, _, _ = _measure(cfg, module, entries, {}, rounds=2)
    seq, batch = cfg.example.seq_len, cfg.example.batch
    assert runtime["example"]["swapped@1t"] == (f"wrong output: output has shape [{batch}, {seq}, {cfg.hidden_size}] "
                                                f"where PyTorch gives [{seq}, {batch}, {cfg.hidden_size}]")
    assert isinstance(runtime["example"]["ort-cpu@1t"], Timing) and "swapped@1t" not in drift["example"]
    assert np.isfinite(drift["example"]["ort-cpu@1t"])


def test_peak_is_the_best_of_sizes_and_a_runner_above_it_is_flagged():
    small, large = gemm_peak(1, sizes=(64,), rounds=2), gemm_peak(1, sizes=(64, 512), rounds=2)
    assert large >= small > 0
    result = ConfigBench("m", {"example": 2_000_000_000}, {}, {"example": {"ort-cpu@1t": Timing(1000.0, 0.0, 3)}},
                         {"example": {}}, {}, {}, 1.0, 0.5)
    assert peak_problems(result, {1: 1.5}) == ["m example ort-cpu@1t: 133% of the GEMM peak"]
    assert peak_problems(result, {1: 2.5}) == []


def test_bench_sessions_do_not_spin_between_calls():
    from rnnexport.artifacts.build import export_config
    from rnnexport.verification.runners.ort_runner import OrtRunner

    model = export_config(load_config(TANH))[1]
    assert OrtRunner(model.SerializeToString(), threads=2).settings["allow_spinning"] is False


def test_unknown_exporter_is_bad_input():
    result = CliRunner().invoke(main, ["bench", str(TANH), "--exporters", "tf2onnx"])
    assert (result.exit_code, result.output) == (2, "Error: unknown exporter 'tf2onnx'; known: native, torch-dynamo, "
                                                    "torch-script\n")


def test_a_noisy_median_is_marked_wherever_its_ratio_is_stored_and_shown():
    """Noise is never advice: a ratio resting on a noisy median (its own or the reference's) is listed in
    noisy_latency, which bench writes beside deploy_latency, and verify's deploy table marks it."""
    from rnnexport.bench import CORES, REFERENCE
    from rnnexport.verification.results import RunnerResult, VerifyReport
    from rnnexport.report.text import deploy_rows
    from rnnexport.verification.drift import OutputDrift
    from rnnexport.verification.verdict import Tolerances

    at = f"@{CORES}t"
    runtime = {"example": {REFERENCE + at: Timing(1.0, 0.05, 7), "openvino-cpu-f32" + at: Timing(2.0, 0.9, 21, True),
                           "ort-cpu-int8-dynamic" + at: Timing(0.5, 0.05, 7)},
               "long": {REFERENCE + at: Timing(10.0, 0.5, 21, True), "openvino-cpu-f32" + at: Timing(12.0, 0.05, 7)}}
    bench = ConfigBench("m", {}, {}, runtime, {}, {}, {}, 0.0, 0.0)
    assert bench.noisy_latency() == {"openvino-cpu-f32": ["example", "long"]}
    assert bench.deploy_latency()["ort-cpu-int8-dynamic"] == {"example": 0.5}
    drift = OutputDrift(1e-3, 1e-3, 1e-3, 1e-3, 1.0, (0, 0, 0), 0, 0)
    runner = RunnerResult("openvino-cpu-f32", "openvino", "cpu", precision="bf16", drift={"example": {"output": drift}})
    report = VerifyReport("m", "0" * 64, {}, Tolerances(), [{"name": "example"}], {}, [runner], {"name": "oracle"},
                          latency=bench.deploy_latency(), latency_noisy=bench.noisy_latency())
    shown = deploy_rows(report)[0][-1]
    assert shown == "example ×2 (noisy), long ×1.2 (noisy)"


def test_verify_timing_stages_targets_of_one_name_apart(tmp_path):
    """A config and an artifact of the same name are both verified by bench's timing run, each in a folder of its
    own; the user's artifact gets no report from it."""
    from rnnexport.artifacts.targets import load_targets
    from rnnexport.bench import stage_artifacts, time_verify

    assert CliRunner().invoke(main, ["build", str(TANH), "--out", str(tmp_path / "art")]).exit_code == 0
    targets = load_targets([TANH, tmp_path / "art" / TANH.stem])
    staged = stage_artifacts(targets, tmp_path / "staged")
    assert [p.name for p in staged] == [TANH.stem, TANH.stem] and len(set(staged)) == 2
    run = time_verify(staged, tmp_path / "verify.json")
    assert run.configs == (TANH.stem, TANH.stem) and 0 < run.execution_seconds < run.wall_seconds
    assert not (tmp_path / "art" / TANH.stem / "report.json").exists()


def test_a_processs_peak_memory_is_its_own_whatever_its_parent_holds():
    """Linux starts a child's ru_maxrss at its parent's resident size; the peak is read inside the child instead.
    The parent here holds 400 MB (touched); the child 160 MB more than a child that allocates nothing."""
    import numpy as np

    from rnnexport.bench import peak_mib

    held = np.ones(50_000_000)  # 400 MB, resident
    grow = "import numpy as np, sys; a = np.ones(int(sys.argv[1])); print(a.nbytes)"
    bare, done = peak_mib(["-c", "pass"])
    grown, done = peak_mib(["-c", grow, "20000000"])
    assert done.returncode == 0 and done.stdout == "160000000\n"
    assert bare is not None and grown is not None and bare < held.nbytes / 2**20 / 4
    assert grown - bare == pytest.approx(160e6 / 2**20, rel=0.1)
    assert peak_mib(["-c", "import os; os._exit(0)"])[0] is None  # no exit handlers, no reading
    del held


def test_memory_of_verify_is_measured_beside_each_runtime_verify_runs(tmp_path):
    """Each figure comes from processes of their own (peak resident memory): verify with a long case over verify
    without it, and each of verify's runtimes alone on the long case; OpenVINO at its default precision too."""
    from rnnexport.artifacts.build import build_artifact
    from rnnexport.bench import MEMORY_RUNNERS, run_once, verify_memory

    artifact = build_artifact(load_config(TANH), tmp_path)
    cfg = load_config(TANH)
    run = verify_memory(artifact, 20_000, 2)
    assert run.output_bytes == 20_000 * 2 * cfg.num_directions * cfg.hidden_size * 4
    assert tuple(run.runtime_mib) == MEMORY_RUNNERS == ("ort-cpu", "openvino-cpu-f32", "openvino-cpu-default")
    # 20,000 steps of float32 output are 2.4 MiB: every process grows, and verify (which holds the float64 oracle's
    # outputs and PyTorch float32's beside a runtime's) by more than the runtime that needs the most
    assert all(v > 0 for v in run.runtime_mib.values()), run
    assert run.kept_mib == run.verify_mib - max(run.runtime_mib.values()) and run.kept_mib > 0, run
    with pytest.raises(ValueError, match="'ort' is not one of ort-cpu, openvino-cpu-f32, openvino-cpu-default"):
        run_once(str(artifact), "ort", "1", "1")


def _benchmarks_run():
    import importlib.util

    path = SHIPPED[0].parent.parent / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("benchmarks_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, json.loads((path.parent / "results.json").read_text())


def test_two_runs_agreement_counts_the_figures_trusted_in_both_and_those_within_20_percent():
    """benchmarks/run.py's repeatability figure, on the committed results.json against a copy with every third
    trusted median 30% slower and every fifth marked noisy: the counts follow from those edits."""
    run, previous = _benchmarks_run()
    current = json.loads(json.dumps(previous))
    trusted = [t for *_, t in run._all_timings(current["configs"]) if not t.get("noisy")]
    assert len(trusted) > 100
    for i, t in enumerate(trusted):
        if i % 5 == 0:
            t["noisy"] = True
        elif i % 3 == 0:
            t["median_ms"] *= 1.3
    kept = [i for i in range(len(trusted)) if i % 5]
    found = run.agreement(previous, current)
    assert found["trusted_in_both"] == len(kept)
    assert found["agree"] == sum(1 for i in kept if i % 3)
    assert run.agreement({**previous, "machine": "another"}, current) == {
        "reason": "the run before was on another machine or library versions (another)"}
    older = run.agreement({**previous, "schema_version": 1}, current)
    assert older["reason"].startswith("the run before wrote results.json schema 1, this one ")
    assert "not measured (the run before wrote results.json schema 1" in run._repeat_line(older)
    line = run._repeat_line(found)
    assert f"{found['agree']} of {len(kept)}" in line and ("**met**" in line) is (found["agree"] >= 0.9 * len(kept))
