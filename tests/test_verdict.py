"""One pass rule, one verdict: tolerances per runner, policies, the marks renderers draw from a verdict."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import rnnexport
from rnnexport.config import Tolerance
from rnnexport.report.html import render_html
from rnnexport.verification.drift import OutputDrift
from rnnexport.verification.engine import RunnerResult, VerifyReport
from rnnexport.verification.verdict import CUDA_TOLERANCE, Policy, Tolerances, judge


def _drift(max_abs: float, expected: float = 1.0) -> OutputDrift:
    return OutputDrift(max_abs, max_abs, max_abs, max_abs, expected, (0, 0, 0), 0, 0)


def _result(name: str, device: str, error: float, **kw) -> RunnerResult:
    return RunnerResult(name, "onnxruntime", device, drift={"example": {"output": _drift(error)}}, **kw)


def _report(*runners: RunnerResult) -> VerifyReport:
    return VerifyReport("m", "0" * 64, {}, Tolerances(), [{"name": "example"}], {}, list(runners),
                        {"name": "torch-float64-oracle", "threads": 1})


def test_tolerances_shorthand_and_the_cuda_floor():
    assert Tolerances(atol=1e-4).cpu == Tolerance(1e-4, 1e-5) == Tolerances(atol=1e-4).cuda
    merged = Tolerances(Tolerance(1e-6, 1e-3))
    assert merged.cuda == Tolerance(CUDA_TOLERANCE.atol, 1e-3)  # at least CUDA's, or the config's if larger
    assert rnnexport.Tolerance is Tolerance and rnnexport.Tolerances is Tolerances
    with pytest.raises(ValueError, match="finite, non-negative"):
        Tolerances(atol=float("nan"))


def test_a_cuda_runner_is_judged_at_the_cuda_tolerance_everywhere():
    error = 5e-5  # over the CPU tolerance (2e-5 at max|oracle| 1), under CUDA's (2e-4)
    report = _report(_result("ort-cpu", "cpu", error), _result("ort-cuda", "cuda", error))
    verdict = report.judge()
    assert verdict.failed_runners() == {"ort-cpu"} and verdict.exit_code == 1
    html = render_html([(report, verdict)])
    assert html.count('class="num bad"') == 1  # the CPU cell only
    assert html.index('class="num bad"') < html.index('class="num">5.00e-05')


def test_marks_come_from_the_problems_runner_not_its_sentence():
    report = _report(_result("ort-cpu", "cpu", 1.0), _result("ort-cpu-2", "cpu", 0.0))
    verdict = report.judge()
    problem = verdict.problems[0]
    forged = verdict.__class__(verdict.policy, verdict.tolerances,
                               (problem._replace(text="ort-cpu-2: a sentence naming another runner"),),
                               verdict.checked, verdict.unchecked)
    assert forged.failed_runners() == {"ort-cpu"}
    assert render_html([(report, forged)]).count('class="num bad"') == 1


def test_strict_placement_and_required_runners():
    fell_back = _result("ort-cuda", "cuda", 0.0, fallbacks={"gru_l0": "CPUExecutionProvider"})
    missing = RunnerResult("ort-tensorrt", "onnxruntime", "cuda", status="not available", reason="no TensorRT",
                           settings={"provider": "TensorrtExecutionProvider"})
    report = _report(fell_back, missing)
    assert report.judge().passed
    strict = report.judge(Policy(strict_placement=True))
    assert strict.failures() == ["ort-cuda: recurrent nodes fell back to another provider: gru_l0 on "
                                 "CPUExecutionProvider"] and strict.exit_code == 1
    required = report.judge(Policy(require=("TensorrtExecutionProvider",)))
    assert required.exit_code == 3 and required.failures() == ["ort-tensorrt: not available: no TensorRT"]


def test_error_ratios_with_zero_errors():
    torch_result = RunnerResult("torch-float32-cpu", "torch", "cpu", drift={"example": {"output": _drift(1e-7)}})
    exact = _result("ort-cpu", "cpu", 0.0)
    assert _report(torch_result, exact).error_ratios() == {"ort-cpu": 0.0}
    zero_torch = RunnerResult("torch-float32-cpu", "torch", "cpu", drift={"example": {"output": _drift(0.0)}})
    assert _report(zero_torch, _result("ort-cpu", "cpu", 1e-7)).error_ratios() == {}  # no finite ratio


def test_judge_is_the_one_rule():
    tol = Tolerance(1e-5, 1e-5)
    assert tol.allows(2e-5, 1.0) and not tol.allows(2.01e-5, 1.0)
    verdict = judge([_result("ort-cpu", "cpu", 2.01e-5)], Tolerances(tol), Policy())
    assert verdict.failures() == ["ort-cpu: example/output: max |Δ| 2.01e-05 > atol 1e-05 + rtol 1e-05 × 1"]


def test_str_of_a_report_is_its_summary():
    module = torch.nn.GRU(3, 4).eval()
    report = rnnexport.verify(module, rnnexport.export_onnx(module), case_names=("example",), runtimes=("torch", "ort"))
    assert str(report).startswith("model: PASS (1 case against torch-float64-oracle")


def test_help_does_not_import_torch_and_cli_module_runs():
    code = "import sys; from rnnexport.cli import main; sys.argv=['rnnexport', '--help']\ntry: main()\n" \
           "except SystemExit: pass\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Exit codes: 0 success" in result.stdout and result.stdout.strip().endswith("False")
    module = subprocess.run([sys.executable, "-m", "rnnexport.cli", "--version"], capture_output=True, text=True)
    assert module.stdout == f"rnnexport, version {rnnexport.__version__}\n"


def test_every_case_the_cli_offers_is_made():
    """`--cases` offers contract.CASE_NAMES: a config with every optional input makes exactly those, in order."""
    from rnnexport.config import parse_config
    from rnnexport.contract import CASE_NAMES
    from rnnexport.verification.cases import make_cases

    cfg = parse_config({"name": "m", "cell": "lstm", "input_size": 3, "hidden_size": 4,
                        "inputs": {"initial_state": True, "variable_lengths": "masked"}}, "test")
    assert tuple(c.name for c in make_cases(cfg)) == CASE_NAMES
    node_form = cfg.with_variable_lengths(True)  # ragged_saturating stresses the masked graph's padding alone
    assert tuple(c.name for c in make_cases(node_form)) == tuple(n for n in CASE_NAMES if n != "ragged_saturating")


def test_an_explicit_tolerance_judges_every_runner_unless_the_floors_are_asked_for():
    """report.judge(Tolerances(atol=1e-6, rtol=0)) must not let a bf16 runner off by 1e-2 pass under bf16's floor;
    the config's own tolerance keeps the floors; report.json says which rule judged each runner."""
    bf16 = _result("openvino-cpu-default", "cpu", 1e-2, precision="bf16")
    f32 = _result("ort-cpu", "cpu", 1e-7)
    report = _report(f32, bf16)
    assert report.judge().passed  # the config's tolerance: bf16 judged at its floor (3e-2)
    strict = report.judge(Tolerances(atol=1e-6, rtol=0.0))
    assert not strict.passed and [p.runner for p in strict.problems] == ["openvino-cpu-default"]
    assert report.judge(Tolerances(atol=1e-6, rtol=0.0, precision_floors=True)).passed
    rules = {r["name"]: r["judged_at"] for r in report.to_dict(strict)["runners"]}
    assert rules["openvino-cpu-default"] == {"atol": 1e-6, "rtol": 0.0, "rule": "the given tolerance"}
    floored = {r["name"]: r["judged_at"]["rule"] for r in report.to_dict()["runners"]}
    assert floored == {"ort-cpu": "the given tolerance", "openvino-cpu-default": "the bf16 floor (PRECISION_TOLERANCE)"}
