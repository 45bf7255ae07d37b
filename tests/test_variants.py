"""Deployment variants (fp16-weights, int8-dynamic): built beside model.onnx, verified against the float64
oracle at their own tolerance, and covered by --check, inspect, lint and index.json.

ONNX Runtime really runs every variant; expected sizes and hashes are computed from the files themselves.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import ROOT, SHIPPED

from rnnexport.artifacts.build import build_artifact, export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.export.variants import PRECISION, fp16_weights, make_variant
from rnnexport.verification.engine import verify
from rnnexport.verification.runners.ort_runner import OrtRunner
from rnnexport.verification.runners.torch_runner import Float64Oracle
from rnnexport.verification.verdict import PRECISION_TOLERANCE

CONFIG = {p.stem: p for p in SHIPPED}
LSTMS = [p for p in SHIPPED if load_config(p).cell == "lstm" and p.stem != "lstm_large"]


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _swap_gates(model: onnx.ModelProto, gates: int) -> onnx.ModelProto:
    """The first layer's first two gate blocks of W swapped: the classic exporter bug."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    tensor = next(t for t in broken.graph.initializer if t.name.startswith("W_"))
    blocks = np.split(onnx.numpy_helper.to_array(tensor), gates, axis=1)
    blocks[0], blocks[1] = blocks[1], blocks[0]
    tensor.CopyFrom(onnx.numpy_helper.from_array(np.concatenate(blocks, axis=1), tensor.name))
    return broken


def test_fp16_weights_halves_the_file_and_computes_in_float32():
    cfg = load_config(CONFIG["lstm_3layer_bidir"])
    module, model = export_config(cfg)
    variant = fp16_weights(model)
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert all(t.data_type == onnx.TensorProto.FLOAT16 for t in variant.graph.initializer
               if t.name.endswith("_fp16"))
    assert sum(n.op_type == "Cast" for n in variant.graph.node) == len(floats)
    weight_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in floats)
    saved = len(model.SerializeToString()) - len(variant.SerializeToString())
    assert abs(saved - weight_bytes / 2) < 0.01 * weight_bytes
    # the variant computes exactly the float32 graph with float16-rounded weights
    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    for t in rounded.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(t).astype(np.float16).astype(np.float32), t.name))
    from rnnexport.verification.cases import make_feeds

    feeds = make_feeds(cfg, 37, 3, np.random.default_rng(1))  # not the example's shape
    with OrtRunner(variant.SerializeToString()) as a, OrtRunner(rounded.SerializeToString()) as b:
        got, want = a.infer(feeds), b.infer(feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("path", LSTMS, ids=lambda p: p.stem)
def test_int8_dynamic_quantizes_every_lstm_node(path):
    cfg = load_config(path)
    module, model = export_config(cfg)
    from rnnexport.artifacts.build import variant_files

    made, skipped = variant_files(cfg, module, model, ("int8-dynamic",))
    assert skipped == {}
    quantized = onnx.load_from_string(made["int8-dynamic"])
    ops = [(n.domain, n.op_type) for n in quantized.graph.node]
    assert ops.count(("com.microsoft", "DynamicQuantizeLSTM")) == sum(n.op_type == "LSTM" for n in model.graph.node)
    assert ("", "LSTM") not in ops
    assert len(made["int8-dynamic"]) < 0.45 * len(model.SerializeToString())


@pytest.mark.parametrize("name", ["gru_2layer", "rnn_tanh_nobias"])
def test_int8_dynamic_is_refused_in_one_line_for_cells_onnx_runtime_cannot_quantize(tmp_path, name):
    code, output = _run("build", CONFIG[name], "--out", tmp_path, "--variants", "int8-dynamic")
    assert code == 0, output
    cell = load_config(CONFIG[name]).cell.upper()
    notes = [line for line in output.splitlines() if line.startswith("  note:")]
    assert notes == [f"  note: int8-dynamic: ONNX Runtime's dynamic quantization has no int8 {cell} kernel "
                     "(only LSTM); no variant written"]
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["manifest.json", "model.onnx", "weights.pt"]


@pytest.mark.parametrize("kind,name", [("fp16-weights", "gru_2layer"), ("fp16-weights", "lstm_3layer_bidir"),
                                       ("fp16-weights", "rnn_relu_batch_first"), ("int8-dynamic", "lstm_3layer_bidir"),
                                       ("int8-dynamic", "lstm_dropout_ragged")])
def test_a_gate_swapped_variant_fails_verify_and_the_right_one_passes(kind, name):
    cfg = load_config(CONFIG[name])
    module, model = export_config(cfg)
    gates = {"gru": 3, "lstm": 4}.get(cfg.cell, 1)
    if gates == 1:  # an RNN has one gate: break it by negating W instead
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        w = next(t for t in broken.graph.initializer if t.name.startswith("W_"))
        w.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(w), w.name))
    else:
        broken = _swap_gates(model, gates)
    from rnnexport.artifacts.build import variant_files

    good = variant_files(cfg, module, model, (kind,))[0][kind]
    if kind == "int8-dynamic" and cfg.inputs.variable_lengths == "masked":  # quantized from the sequence_lens form

        seq_cfg = cfg.with_variable_lengths(True)
        broken = _swap_gates(export_config(seq_cfg, module)[1], gates)
    bad = make_variant(broken, kind, cfg.cell)
    runner = f"ort-cpu-{kind}"
    passing = verify(module, model, cfg=cfg, runtimes=("ort",), providers=("CPUExecutionProvider",),
                     variants={kind: good})
    failing = verify(module, model, cfg=cfg, runtimes=("ort",), providers=("CPUExecutionProvider",),
                     variants={kind: bad})
    result = next(r for r in passing.runners if r.name == runner)
    assert result.status == "ok" and result.precision == PRECISION[kind]
    assert passing.judge().passed, passing.judge().failures()
    assert failing.judge().failed_runners() == {runner}


def test_variants_rebuild_byte_identically_and_are_covered_by_check_inspect_lint_and_index(tmp_path):
    out = tmp_path / "out"
    cfg_path = CONFIG["lstm_dropout_ragged"]
    assert _run("build", cfg_path, "--out", out, "--variants", "fp16-weights,int8-dynamic")[0] == 0
    artifact = out / "lstm_dropout_ragged"
    files = {p.name: p.read_bytes() for p in artifact.iterdir()}
    assert {"model.fp16-weights.onnx", "model.int8-dynamic.onnx"} <= set(files)
    manifest = json.loads(files["manifest.json"])
    for name in ("model.fp16-weights.onnx", "model.int8-dynamic.onnx"):
        assert manifest["files"][name] == {"sha256": hashlib.sha256(files[name]).hexdigest(),
                                           "bytes": len(files[name])}
    assert manifest["variants"]["int8-dynamic"] == {"file": "model.int8-dynamic.onnx", "precision": "int8",
                                                    "ragged_inputs": "sequence_lens"}
    assert _run("build", cfg_path, "--out", out, "--variants", "fp16-weights,int8-dynamic")[0] == 0
    assert {p.name: p.read_bytes() for p in artifact.iterdir()} == files  # byte-identical rebuild
    assert _run("build", cfg_path, "--out", out, "--check", "--variants", "fp16-weights,int8-dynamic")[0] == 0
    code, output = _run("build", cfg_path, "--out", out, "--check")  # the variants it was built with are checked
    assert code == 0 and output.splitlines() == [f"up to date: {artifact.name}"], output
    (artifact / "model.fp16-weights.onnx").write_bytes(files["model.fp16-weights.onnx"][:-1] + b"\0")
    code, output = _run("inspect", artifact)
    assert "manifest    problem:" in output and "model.fp16-weights.onnx: sha256" in output
    (artifact / "model.fp16-weights.onnx").write_bytes(files["model.fp16-weights.onnx"])
    code, output = _run("inspect", artifact)
    assert f"variant     int8-dynamic: model.int8-dynamic.onnx, {len(files['model.int8-dynamic.onnx']) / 1024:.1f} KiB" \
        in output
    code, output = _run("lint", artifact, "--config", cfg_path)
    fp16, int8 = artifact / "model.fp16-weights.onnx", artifact / "model.int8-dynamic.onnx"
    assert code == 0 and output.splitlines() == [
        f"{artifact / 'model.onnx'}: 0 error(s), 0 warning(s)",
        f"{fp16}: note: precision: the weights are stored in float16 and cast to float32: verify judges it as "
        "fp16-weights (atol 0.005, rtol 0.005 at least)", f"{fp16}: 0 error(s), 0 warning(s)",
        f"{int8}: note: precision: the graph is quantized (QuantizeLinear/DequantizeLinear nodes or int8 kernels "
        "such as DynamicQuantizeLSTM): "
        "verify judges it as int8 (atol 0.06, rtol 0.06 at least)", f"{int8}: 0 error(s), 0 warning(s)"]
    index = json.loads((out / "index.json").read_text())["artifacts"][0]
    assert index["variants"] == {"fp16-weights": manifest["files"]["model.fp16-weights.onnx"]["sha256"],
                                 "int8-dynamic": manifest["files"]["model.int8-dynamic.onnx"]["sha256"]}


def test_build_then_verify_shows_a_row_per_variant_and_a_line_for_the_missing_int8(tmp_path):
    out = tmp_path / "out"
    names = ["gru_2layer", "lstm_3layer_bidir"]
    assert _run("build", *(CONFIG[n] for n in names), "--out", out, "--variants", "fp16-weights,int8-dynamic")[0] == 0
    code, output = _run("verify", out, "--runtimes", "torch,ort", "--long-seq", "256", "--record")
    assert code == 0, output
    gru_text, lstm_text = output.split("\nlstm_3layer_bidir: ")
    rows = {line.split()[0]: line.split()[1:] for line in lstm_text.splitlines() if line.startswith("  ort-cpu")}
    assert rows["ort-cpu-fp16-weights"][0] == "fp16-weights" and rows["ort-cpu-fp16-weights"][-1] == "pass"
    assert rows["ort-cpu-int8-dynamic"][0] == "int8" and rows["ort-cpu-int8-dynamic"][-1] == "pass"
    folded = next(line for line in gru_text.splitlines() if line.startswith("  not for this model: "))
    assert ("ort-cpu-int8-dynamic (int8-dynamic: ONNX Runtime's dynamic quantization has no int8 GRU kernel (only "
            "LSTM); no variant written)") in folded
    report = json.loads((out / "lstm_3layer_bidir" / "report.json").read_text())
    int8 = next(r for r in report["runners"] if r["name"] == "ort-cpu-int8-dynamic")
    assert int8["status"] == "ok" and int8["precision"] == "int8"
    long = int8["drift"]["long"]["output"]
    assert long["growth_ratio"] is not None and long["per_step"]["max_abs"]
    markdown = (out / "lstm_3layer_bidir" / "report.md").read_text()
    assert "Deploy options (precision against speed):" in markdown
    size = len((out / "lstm_3layer_bidir" / "model.int8-dynamic.onnx").read_bytes())
    assert any(line.startswith("| ort-cpu-int8-dynamic | int8 | ") and f"{size / 1024:.1f} KiB" in line
               for line in markdown.splitlines())
    gru = json.loads((out / "gru_2layer" / "report.json").read_text())
    missing = next(r for r in gru["runners"] if r["name"] == "ort-cpu-int8-dynamic")
    assert missing["status"] == "not applicable" and "no int8 GRU kernel" in missing["reason"]


def test_the_docs_precision_table_is_the_one_the_code_uses():
    readme = (ROOT / "docs" / "verify.md").read_text()
    rows = dict(re.findall(r"^\| `([\w-]+)` \| atol ([\d.e-]+), rtol [\d.e-]+ \|", readme, flags=re.M))
    assert {k: float(v) for k, v in rows.items()} == {k: t.atol for k, t in PRECISION_TOLERANCE.items()}
    rtols = dict(re.findall(r"^\| `([\w-]+)` \| atol [\d.e-]+, rtol ([\d.e-]+) \|", readme, flags=re.M))
    assert {k: float(v) for k, v in rtols.items()} == {k: t.rtol for k, t in PRECISION_TOLERANCE.items()}


def test_variants_in_a_config_are_built_without_the_option(tmp_path):
    cfg_path = tmp_path / "m.toml"
    cfg_path.write_text('cell = "lstm"\ninput_size = 3\nhidden_size = 5\nvariants = ["fp16-weights"]\n')
    artifact = build_artifact(load_config(cfg_path), tmp_path / "out")
    assert (artifact / "model.fp16-weights.onnx").is_file() and not (artifact / "model.int8-dynamic.onnx").exists()
    oracle = Float64Oracle(export_config(load_config(cfg_path))[0])
    feeds = {"input": np.random.default_rng(0).standard_normal((9, 2, 3)).astype(np.float32)}
    with OrtRunner(artifact / "model.fp16-weights.onnx") as runner:
        got = runner.infer(feeds)
    expected = oracle.infer(feeds)
    tol = PRECISION_TOLERANCE["fp16-weights"]
    assert all(tol.allows(float(np.abs(got[k] - expected[k]).max()), float(np.abs(expected[k]).max()))
               for k in expected)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_float16_compute_stays_within_the_f16_tolerance_and_a_gate_swap_does_not(path):
    """ONNX Runtime's CPU provider runs the float16 graph too (upcasting inside its kernels): the graph's own
    rounding of weights, inputs and outputs to float16 is measured here; on a GPU, ort-cuda-float16 runs it."""
    from rnnexport.export.variants import float16_compute
    from rnnexport.verification.cases import make_cases

    cfg = load_config(path)
    module, model = export_config(cfg)
    half = float16_compute(model)
    assert {t.data_type for t in half.graph.initializer if t.data_type in (1, 10)} == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [i.type.tensor_type.elem_type
                                                                        for i in model.graph.input]
    tol = PRECISION_TOLERANCE["f16"]
    oracle = Float64Oracle(module)
    cases = make_cases(cfg, names=("example", "saturating", "other_batch"))
    broken = _swap_gates(model, {"gru": 3, "lstm": 4}.get(cfg.cell, 1)) if cfg.cell in ("gru", "lstm") else None
    with OrtRunner(half.SerializeToString()) as runner:
        for case in cases:
            expected, got = oracle.infer(case.feeds), runner.infer(case.feeds)
            for name in expected:
                err, scale = float(np.abs(got[name] - expected[name]).max()), float(np.abs(expected[name]).max())
                assert tol.allows(err, scale), (case.name, name, err)
    if broken is not None:
        with OrtRunner(float16_compute(broken).SerializeToString()) as runner:
            expected, got = oracle.infer(cases[0].feeds), runner.infer(cases[0].feeds)
        assert not all(tol.allows(float(np.abs(got[k] - expected[k]).max()), float(np.abs(expected[k]).max()))
                       for k in expected)


def test_the_float16_cuda_runner_says_why_it_did_not_run_here():
    from conftest import HAS_CUDA_EP

    cfg = load_config(CONFIG["gru_2layer"])
    module, model = export_config(cfg)
    report = verify(module, model, cfg=cfg, runtimes=("ort",), case_names=("example",))
    half = next(r for r in report.runners if r.name == "ort-cuda-float16")
    if HAS_CUDA_EP:
        assert half.status == "ok" and half.precision == "f16" and report.judge().passed
    else:
        assert half.status == "not available" and "built without it" in half.reason
