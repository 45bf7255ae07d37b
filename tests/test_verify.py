"""The verifier: it passes good exports, and it has teeth: every broken export fails with exit 1."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import HAS_CUDA_EP, SHIPPED
from onnx import numpy_helper

import rnnexport
from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.verification import drift as drift_module
from rnnexport.verification.cases import load_cases, make_cases
from rnnexport.verification.drift import HISTOGRAM_EDGES, OutputDrift

CONFIG = {p.stem: p for p in SHIPPED}
QUICK = "example,seq1,other_batch,ragged,streaming"


def _initializer(model: onnx.ModelProto, name: str) -> tuple[onnx.TensorProto, np.ndarray]:
    names = {t.name for t in model.graph.initializer}
    name = name if name in names else name.replace("_", "_l")  # masked ragged graphs: W_l0, W_l0_reverse
    tensor = next(t for t in model.graph.initializer if t.name == name)
    return tensor, numpy_helper.to_array(tensor).copy()


def _set(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    tensor, _ = _initializer(model, name)
    tensor.CopyFrom(numpy_helper.from_array(array.astype(np.float32), tensor.name))


def _swap_blocks(name: str, axis: int, gates: int):
    def mutate(model):
        _, a = _initializer(model, name)
        blocks = np.split(a, gates, axis=axis)
        blocks[0], blocks[1] = blocks[1], blocks[0]
        _set(model, name, np.concatenate(blocks, axis=axis))
    return mutate


def _drop_recurrence_bias(model):
    _, b = _initializer(model, "B_0")
    b[:, b.shape[1] // 2:] = 0
    _set(model, "B_0", b)


def _transpose_r(model):
    _, r = _initializer(model, "R_0")
    hidden = r.shape[2]
    blocks = [blk.transpose(0, 2, 1) for blk in np.split(r, r.shape[1] // hidden, axis=1)]
    _set(model, "R_0", np.concatenate(blocks, axis=1))


def _swap_directions(model):
    names = {t.name for t in model.graph.initializer}
    for name in {"W_0", "R_0", "B_0"} & names:
        _, a = _initializer(model, name)
        _set(model, name, a[::-1])
    for kind in {"W", "R", "B"} & {n.split("_")[0] for n in names if n.endswith("_l0_reverse")}:
        _, forward = _initializer(model, f"{kind}_l0")  # masked: each direction is its own node
        _, backward = _initializer(model, f"{kind}_l0_reverse")
        _set(model, f"{kind}_l0", backward)
        _set(model, f"{kind}_l0_reverse", forward)


def _linear_before_reset_0(model):
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    next(a for a in node.attribute if a.name == "linear_before_reset").i = 0


def _exchange_layers(model):
    for kind in ("W", "R", "B"):
        _, one = _initializer(model, f"{kind}_1")
        _, two = _initializer(model, f"{kind}_2")
        _set(model, f"{kind}_1", two)
        _set(model, f"{kind}_2", one)


def _nan_weight(model):
    _, r = _initializer(model, "R_0")
    r[0, 0, 0] = np.nan
    _set(model, "R_0", r)


# (config, mutation): each must fail verification.
MUTATIONS = {
    "swapped_gates_in_W": ("lstm_dropout_ragged", _swap_blocks("W_0", 1, 4)),
    "swapped_gates_in_R": ("gru_2layer", _swap_blocks("R_0", 1, 3)),
    "swapped_gates_in_bias": ("gru_ragged_batch_first", _swap_blocks("B_0", 1, 6)),
    "dropped_recurrence_bias": ("gru_2layer", _drop_recurrence_bias),
    "R_transposed": ("rnn_tanh_nobias", _transpose_r),
    "directions_swapped": ("gru_bidir_nobias_ragged", _swap_directions),
    "gru_linear_before_reset_0": ("gru_2layer", _linear_before_reset_0),
    "layers_exchanged": ("lstm_3layer_bidir", _exchange_layers),
    "nan_in_weights": ("rnn_relu_batch_first", _nan_weight),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_broken_export_fails_with_exit_1(tmp_path, mutation):
    config_name, mutate = MUTATIONS[mutation]
    artifact = build_artifact(load_config(CONFIG[config_name]), tmp_path)
    model = onnx.load(artifact / "model.onnx")
    mutate(model)
    broken = tmp_path / "broken.onnx"
    onnx.save(model, broken)
    args = ["verify", str(broken), "--config", str(CONFIG[config_name]), "--weights", str(artifact / "weights.pt"),
            "--providers", "CPUExecutionProvider", "--cases", QUICK]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"{config_name}: FAIL")
    assert "ort-cpu" in result.output.split("✗", 1)[1]
    # the same file unbroken passes
    args[1] = str(artifact / "model.onnx")
    assert CliRunner().invoke(main, args).exit_code == 0


def test_nan_on_one_side_is_counted_not_hidden():
    expected = np.ones((3, 2, 4))
    actual = expected.copy()
    actual[1, 0, 2] = np.nan
    drift = OutputDrift.from_arrays(expected, actual, time_axis=0)
    assert drift.nonfinite_mismatches == 1 and drift.max_abs == 0.0
    both = expected.copy()
    both[1, 0, 2] = np.nan
    assert OutputDrift.from_arrays(both, both.copy()).nonfinite_mismatches == 0


def test_drift_numbers_and_per_step_curve():
    expected = np.zeros((8, 1, 2))
    actual = expected.copy()
    actual[:, 0, 1] = np.arange(8) * 1e-6  # error grows linearly along the sequence
    actual[5, 0, 0] = -3e-6
    drift = OutputDrift.from_arrays(expected, actual, time_axis=0)
    assert drift.max_abs == pytest.approx(7e-6) and drift.worst_index == (7, 0, 1)
    assert drift.per_step == pytest.approx([0, 1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6, 7e-6])
    assert drift.growth_slope == pytest.approx(1e-6)
    assert drift.growth_ratio == pytest.approx(6.5 / 0.5)
    assert drift.rms == pytest.approx(np.sqrt(((np.arange(8) * 1e-6) ** 2).sum() / 16 + 9e-12 / 16))


def test_an_output_beyond_float64_counts_as_the_infinity_it_becomes():
    """A long double output is compared as float64, as every other non-float64 one: 1e400 is infinite there."""
    actual = np.array([np.longdouble("1e400"), np.longdouble("-1e4000")])
    if not np.isfinite(actual).all():
        pytest.skip(f"this platform's long double is float64 ({np.finfo(np.longdouble).max:.3g} at most)")
    drift = OutputDrift.from_arrays(np.array([1.0, 2.0]), actual)
    assert (drift.nonfinite_mismatches, drift.nonfinite_introduced, drift.max_abs) == (2, 2, 0.0)


@pytest.mark.parametrize("small", [0, 10**9], ids=["octaves", "searchsorted"])
def test_histogram_bins_as_searchsorted_does_with_nonfinite_elements_in_no_bin(monkeypatch, small):
    """Either way of counting (by octaves for many errors, by a search for a few) bins as the search does."""
    monkeypatch.setattr(drift_module, "SMALL_HISTOGRAM", small)
    rng = np.random.default_rng(3)
    edges = np.array(HISTOGRAM_EDGES)
    errors = np.concatenate([
        10.0 ** rng.uniform(-16, 4, 5000),  # every bin and beyond both ends
        edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf),  # on and beside each edge
        [0.0, -0.0, 5e-324, 1e30],  # zero (either sign), a subnormal, a huge one
    ])
    expected = rng.standard_normal(errors.size)
    actual = expected + errors * rng.choice([-1.0, 1.0], errors.size)
    measured = np.abs(actual - expected)  # what the drift sees, after float64 rounding
    actual[:3], expected[3] = np.nan, np.inf  # in no bin
    drift = OutputDrift.from_arrays(expected, actual)
    want = np.bincount(np.searchsorted(edges, measured[4:], side="right"), minlength=edges.size + 1)
    assert list(drift.histogram) == want.tolist() and sum(drift.histogram) == errors.size - 4
    assert drift.nonfinite_mismatches == 4 and drift.nonfinite_introduced == 3

def test_cli_verify_artifacts_writes_report_and_inputs(tmp_path):
    out = tmp_path / "artifacts"
    names = ["gru_ragged_batch_first", "lstm_3layer_bidir"]
    assert CliRunner().invoke(main, ["build", *[str(CONFIG[n]) for n in names], "--out", str(out)]).exit_code == 0
    result = CliRunner().invoke(main, ["verify", str(out), "--json", str(tmp_path / "all.json")])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines() if "PASS" in line] == names
    report = json.loads((out / names[0] / "report.json").read_text())
    assert report["schema_version"] == 1 and report["passed"] and report["failures"] == []
    assert str(tmp_path) not in (out / names[0] / "report.json").read_text()
    runners = {r["name"]: r for r in report["runners"]}
    assert runners["ort-cpu"]["status"] == "ok"
    assert runners["ort-cpu"]["settings"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert set(runners["ort-cpu"]["drift"]) == {"example", "seq1", "batch1", "long", "other_batch", "saturating",
                                                 "tiny", "zero_state", "ragged", "ragged_saturating", "streaming"}
    worst = max(d["max_abs"] for outs in runners["ort-cpu"]["drift"].values() for d in outs.values())
    assert 0 < worst < 1e-5
    curve = runners["ort-cpu"]["drift"]["long"]["output"]["per_step"]
    assert curve["stride"] == 4 and len(curve["max_abs"]) == 256
    cfg = load_config(CONFIG[names[0]])
    saved = {c.name: c for c in load_cases(out / names[0] / "inputs.npz", cfg)}
    for case in make_cases(cfg):
        assert saved[case.name].feeds.keys() == case.feeds.keys() and saved[case.name].chunks == case.chunks
        assert all(np.array_equal(saved[case.name].feeds[k], v) for k, v in case.feeds.items())
    combined = json.loads((tmp_path / "all.json").read_text())
    assert [r["name"] for r in combined["reports"]] == names


def test_streaming_equals_the_whole_sequence_run():
    cfg = load_config(CONFIG["gru_ragged_batch_first"])
    module, model = export_config(cfg)
    report = rnnexport.verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",), case_names=("streaming",))
    assert report.cases[0]["chunks"] == [18, 1, 35]
    drift = {r.name: r.drift["streaming"]["output"].max_abs for r in report.runners if r.status == "ok"}
    assert set(drift) == {"torch-float32-cpu", "ort-cpu", "openvino-cpu-f32", "openvino-cpu-default"}
    assert max(d for name, d in drift.items() if name != "openvino-cpu-default") < 1e-5


def test_python_api_with_a_users_module_and_tighter_tolerance():
    module = torch.nn.GRU(6, 10, num_layers=3).eval()
    model = rnnexport.export_onnx(module, initial_state=True)
    report = rnnexport.verify(module, model, providers=("CPUExecutionProvider",), case_names=("example", "long"))
    assert report.passed(), report.failures()
    assert [c["name"] for c in report.cases] == ["example", "long"]
    strict = rnnexport.Tolerances(cpu=rnnexport.config.Tolerance(atol=1e-12, rtol=0.0))
    assert not report.passed(strict)
    assert report.failures(strict)[0].startswith("torch-float32-cpu: example/output: max |Δ|")


def test_cases_are_deterministic_and_independent():
    cfg = load_config(CONFIG["gru_ragged_batch_first"])
    first, again = make_cases(cfg, seed=3), make_cases(cfg, seed=3)
    only_ragged = make_cases(cfg, seed=3, names=("ragged",))
    assert all(np.array_equal(a.feeds[k], b.feeds[k]) for a, b in zip(first, again) for k in a.feeds)
    ragged = next(c for c in first if c.name == "ragged")
    assert np.array_equal(ragged.feeds["input"], only_ragged[0].feeds["input"])
    lengths = ragged.feeds["sequence_lens"]
    assert lengths.dtype == np.int32 and 1 in lengths and cfg.example.seq_len in lengths
    assert list(lengths) not in (sorted(lengths), sorted(lengths, reverse=True))
    long = next(c for c in first if c.name == "long")
    assert long.seq_len >= 1024
    saturating = next(c for c in first if c.name == "saturating")
    assert 7 < np.abs(saturating.feeds["input"]).mean() < 9  # E|N(0, 10²)| = 10·sqrt(2/π) ≈ 7.98


def test_missing_required_provider_exits_3(tmp_path):
    artifact = build_artifact(load_config(CONFIG["gru_2layer"]), tmp_path)
    result = CliRunner().invoke(main, ["verify", str(artifact), "--cases", "example",
                                       "--require", "CUDAExecutionProvider"])
    if HAS_CUDA_EP:
        pytest.skip("this machine has the CUDA provider")
    assert (result.exit_code, result.output) == (3, "Error: required provider CUDAExecutionProvider is not "
                                                 f"available: this onnxruntime {ort.__version__} was built without "
                                                 "it (install onnxruntime-gpu)\n")
    assert not (artifact / "report.json").exists()


def test_unknown_provider_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["verify", str(CONFIG["gru_2layer"]), "--providers", "FooExecutionProvider"])
    assert result.exit_code == 2
    assert result.output == f"Error: unknown provider 'FooExecutionProvider'; known: {', '.join(ort.get_all_providers())}\n"


def test_tampered_artifact_is_bad_input(tmp_path):
    artifact = build_artifact(load_config(CONFIG["gru_2layer"]), tmp_path)
    with open(artifact / "model.onnx", "ab") as f:
        f.write(b"x")
    result = CliRunner().invoke(main, ["verify", str(artifact)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {artifact / 'model.onnx'}: sha256 ")
    assert not (artifact / "report.json").exists()


@pytest.mark.parametrize("payload", [b"not onnx at all", None], ids=["garbage", "truncated"])
def test_bad_onnx_file_is_bad_input(tmp_path, payload):
    artifact = build_artifact(load_config(CONFIG["gru_2layer"]), tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(payload or (artifact / "model.onnx").read_bytes()[:5000])
    result = CliRunner().invoke(main, ["verify", str(bad), "--config", str(CONFIG["gru_2layer"]),
                                       "--weights", str(artifact / "weights.pt")])
    assert (result.exit_code, result.output) == (2, f"Error: {bad}: not an ONNX model (it does not parse)\n")


def test_onnx_whose_inputs_do_not_match_the_config(tmp_path):
    artifact = build_artifact(load_config(CONFIG["gru_2layer"]), tmp_path)
    ragged = CONFIG["gru_ragged_batch_first"]
    result = CliRunner().invoke(main, ["verify", str(artifact / "model.onnx"), "--config", str(ragged),
                                       "--weights", str(artifact / "weights.pt")])
    assert result.exit_code == 2
    assert result.output == (f"Error: {artifact / 'model.onnx'}: graph inputs ['input'] do not match the config, "
                             "which expects ['input', 'h0', 'sequence_lens']\n")


@pytest.mark.cuda
def test_cuda_verification_of_every_shipped_config(tmp_path):
    out = tmp_path / "artifacts"
    assert CliRunner().invoke(main, ["build", str(SHIPPED[0].parent), "--out", str(out)]).exit_code == 0
    result = CliRunner().invoke(main, ["verify", str(out), "--require", "CUDAExecutionProvider"])
    assert result.exit_code == 0, result.output
    for path in SHIPPED:
        report = json.loads((out / path.stem / "report.json").read_text())
        cuda = next(r for r in report["runners"] if r["name"] == "ort-cuda")
        assert cuda["status"] == "ok" and cuda["drift"]


def test_drift_memory_does_not_grow_with_the_sequence():
    import tracemalloc

    rng = np.random.default_rng(0)
    expected = rng.standard_normal((20000, 2, 64))  # 20 MB as float64
    actual = (expected + rng.standard_normal(expected.shape) * 1e-7).astype(np.float32)
    tracemalloc.start()
    drift = OutputDrift.from_arrays(expected, actual, time_axis=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 6 * 2**20, peak  # a few 512-step windows, not a copy of the output
    whole = OutputDrift.from_arrays(expected, actual, time_axis=0, chunk_steps=20000)
    # streaming changes nothing but memory (and the summation order of the mean)
    assert drift.mean_abs == pytest.approx(whole.mean_abs, rel=1e-12)
    assert dataclasses.replace(drift, mean_abs=whole.mean_abs) == whole
    assert len(drift.per_step) == 20000


def test_placement_is_read_from_the_profiler():
    """On CPU every recurrent node stays on CPU; the same reading finds fallbacks on other providers."""
    from rnnexport.verification.runners.ort_runner import OrtRunner

    cfg = load_config(CONFIG["lstm_3layer_bidir"])
    module, model = export_config(cfg)
    with OrtRunner(model.SerializeToString(), check_placement=True) as runner:
        runner.infer(make_cases(cfg, names=("example",))[0].feeds)
        assert runner.placement == {f"lstm_l{i}": "CPUExecutionProvider" for i in range(3)}
        assert runner.fallbacks() == {}


def test_report_json_summarises_each_runner(tmp_path):
    cfg = load_config(CONFIG["gru_2layer"])
    module, model = export_config(cfg)
    report = rnnexport.verify(module, model, cfg=cfg, providers=("CPUExecutionProvider",), case_names=("example",))
    data = json.loads(json.dumps(report.to_dict()))
    ort_cpu = next(r for r in data["runners"] if r["name"] == "ort-cpu")
    assert ort_cpu["worst"]["case"] == "example" and ort_cpu["worst"]["max_abs"] > 0
    ratio = data["error_ratio_to_torch_float32"]["ort-cpu"]
    torch_cpu = next(r for r in data["runners"] if r["name"] == "torch-float32-cpu")
    own = torch_cpu["drift"]["example"][ort_cpu["worst"]["output"]]["max_abs"]
    assert ratio == pytest.approx(ort_cpu["worst"]["max_abs"] / own)


def test_a_masked_lstm_whose_padding_flag_is_weakened_fails_only_the_ragged_saturating_case(tmp_path):
    """The masked graph's padding flag (a ±1e4 W column: forget gate to 1, input gate to 0 on padded steps)
    weakened to ±30 in a built artifact: |x| ≈ 1 and the saturating case without padding pass it, the ragged case
    at saturating inputs does not."""
    cfg = load_config(CONFIG["lstm_dropout_ragged"])
    assert cfg.inputs.variable_lengths == "masked"
    artifact = build_artifact(cfg, tmp_path)
    broken = onnx.load(artifact / "model.onnx")
    weakened = 0
    for tensor in broken.graph.initializer:
        w = numpy_helper.to_array(tensor)
        if tensor.name.startswith("W_") and w.ndim == 3 and np.abs(w[..., -1]).max() >= 1e3:
            w = w.copy()
            w[..., -1] = np.sign(w[..., -1]) * 30.0
            tensor.CopyFrom(numpy_helper.from_array(w, tensor.name))
            weakened += 1
    assert weakened == cfg.num_layers * cfg.num_directions
    module = export_config(cfg)[0]
    names = tuple(c.name for c in make_cases(cfg))
    assert "ragged_saturating" in names
    report = rnnexport.verify(module, broken, cfg=cfg, runtimes=("ort",), providers=("CPUExecutionProvider",))
    failing_cases = {case for runner, case in report.judge().failing_cells()}
    assert failing_cases == {"ragged_saturating"}, report.judge().failures()
    ort_cpu = next(r for r in report.runners if r.name == "ort-cpu")
    drift = ort_cpu.drift["ragged_saturating"]
    assert drift["c_n"].max_abs > 0.1
    assert [f.split(": ")[:2] for f in report.judge().failures()] == [["ort-cpu", "ragged_saturating/c_n"]]
    # c_n alone fails: localisation compares each node's Y_c too, and finds it in the first layer
    assert ort_cpu.localisation.summary().startswith("first failing: layer 0, forward direction, Y_c (max |Δ| ")
    assert ort_cpu.localisation.diagnosis == ("layer 0, forward direction: the padding flag's W column holds up to ±30 "
                                              "where the masked graph needs ±10000: the gates are not held through "
                                              "the padded steps")
    clean = rnnexport.verify(module, onnx.load(artifact / "model.onnx"), cfg=cfg, runtimes=("ort",),
                             providers=("CPUExecutionProvider",), case_names=("ragged_saturating",))
    assert clean.judge().passed, clean.judge().failures()


def test_a_scalar_output_is_compared_as_any_other():
    drift = OutputDrift.from_arrays(np.array(1.0), np.array(2.5, dtype=np.float32))
    assert (drift.max_abs, drift.worst_index, sum(drift.histogram)) == (1.5, (), 1)


GPU_LISTED = """
import shutil, sys
from pathlib import Path
import onnxruntime
from rnnexport.cli import main
from rnnexport.verification.runners import ort_runner

# onnxruntime-gpu's listing, simulated (this is the CPU build); ONNX Runtime's library folder, a copy of it whose
# TensorRT provider does not load (or, with "loads", one that does): the loading and the CLI run for real.
listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
onnxruntime.get_available_providers = lambda: listed
capi = Path(sys.argv[1])
bridge = ort_runner.CAPI / "libonnxruntime_providers_shared.so"
shutil.copy(bridge, capi / bridge.name)
provider = capi / "libonnxruntime_providers_tensorrt.so"
shutil.copy(bridge, provider) if sys.argv[3] == "loads" else provider.write_bytes(b"not a shared library")
ort_runner.CAPI = capi
try:
    main(["verify", sys.argv[2], "--runtimes", *sys.argv[4:]])
finally:
    print("GPU provider libraries tried:", ort_runner._library_status.cache_info().currsize)
"""


@pytest.mark.parametrize("library", ["loads", "does_not_load"])
def test_a_gpu_provider_whose_library_does_not_load_says_why(tmp_path, library):
    """onnxruntime-gpu lists TensorRT whether or not libnvinfer is installed (seen on an H200, 2026-11-30): the
    provider's library is loaded first, as ONNX Runtime loads it, so the reason comes before any session. In a
    process of its own: the copy of ONNX Runtime's bridge it loads with global symbols must not meet the real one."""
    import subprocess
    import sys

    from rnnexport.verification.runners.ort_runner import CAPI

    if not (CAPI / "libonnxruntime_providers_shared.so").is_file():
        pytest.skip("this onnxruntime has no libonnxruntime_providers_shared.so (not Linux)")
    artifact = build_artifact(load_config(CONFIG["rnn_tanh_nobias"]), tmp_path)
    (capi := tmp_path / "capi").mkdir()

    def run(*args, runtimes="ort"):
        return subprocess.run([sys.executable, "-c", GPU_LISTED, str(capi), str(artifact), library, runtimes, *args],
                              capture_output=True, text=True, timeout=300)

    required = run("--require", "TensorrtExecutionProvider")
    reason = "libonnxruntime_providers_tensorrt.so does not load here ("
    if library == "loads":  # past the check, the session itself finds no TensorRT in the CPU build
        assert reason not in required.stdout + required.stderr
        return
    assert required.returncode == 3, required.stdout + required.stderr
    assert f"required provider TensorrtExecutionProvider is not available: {reason}" in required.stdout + required.stderr
    assert str(capi) not in required.stdout + required.stderr  # the loader's reason without the path it tried
    shown = run("--providers", "CPUExecutionProvider,TensorrtExecutionProvider")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"not available here: ort-tensorrt ({reason}" in shown.stdout
    assert "EP Error" not in shown.stdout + shown.stderr  # no session was tried
    by_default = run("--cases", "example")
    assert by_default.returncode == 0 and "GPU provider libraries tried: 2" in by_default.stdout, by_default.stdout
    assert "tensorrt" not in by_default.stdout  # left out of the defaults, quietly
    without_ort = run("--cases", "example", runtimes="openvino")  # no ONNX Runtime run: no GPU library loaded
    assert without_ort.returncode == 0 and "GPU provider libraries tried: 0" in without_ort.stdout, without_ort.stdout
