"""`rnnexport bench`: what it measures and records. No timing is asserted: these machines are shared."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.artifacts import load_artifact
from rnnexport.bench import CORES, Timing, forward_flops, shape_classes, time_interleaved
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
def test_bench_an_artifact_records_settings_and_ratios(tmp_path):
    out = tmp_path / "art"
    assert CliRunner().invoke(main, ["build", str(TANH), "--out", str(out)]).exit_code == 0
    result = CliRunner().invoke(main, ["bench", str(out / TANH.stem), "--rounds", "3", "--exporters",
                                       "torch-script", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("float32 GEMM peak: ") and lines[1] == TANH.stem
    assert "torch-script" in lines[2] and "torch-dynamo: not measured" in lines[2]
    assert [line.split()[0] for line in lines[4:8]] == list(shape_classes(load_config(TANH)))
    data = json.loads((tmp_path / "b.json").read_text())
    bench = data["configs"][0]
    assert set(data["gemm_peak_gflops"]) == {"1", str(CORES)}
    for shape, timings in bench["runtime"].items():
        assert {"ort-native-1t-basic", "ort-native-1t-all", f"ort-torch-script-{CORES}t"} <= set(timings), shape
    assert bench["nodes_by_seq"]["30"] == bench["nodes_by_seq"]["300"]  # the graph does not grow with seq
    assert 0 < bench["file_bytes"] - bench["weight_bytes"] < 2048  # a fixed graph + metadata overhead
    assert 0 < bench["verify_execution_seconds"] < bench["verify_seconds"]
    manifest = load_artifact(out / TANH.stem).manifest  # still passes its integrity check
    recommendation = manifest["runtime_recommendation"]
    assert set(recommendation) == {"example", "stream", "large_batch", "long"}
    assert all(r["intra_op_num_threads"] in (1, CORES) for r in recommendation.values())


def test_unknown_exporter_is_bad_input():
    result = CliRunner().invoke(main, ["bench", str(TANH), "--exporters", "tf2onnx"])
    assert (result.exit_code, result.output) == (2, "Error: unknown exporter 'tf2onnx'; known: native, torch-dynamo, "
                                                    "torch-script\n")
