"""Render a ``VerifyReport``: a compact terminal table, and report.json + inputs.npz on disk."""

from __future__ import annotations

from pathlib import Path

from .artifacts import write_json_atomic
from .cases import save_cases
from .formulations import FormulationsReport
from .verify import RunnerResult, Tolerances, VerifyReport

REPORT_FILE, INPUTS_FILE = "report.json", "inputs.npz"
HEADER = ("runner", "worst |Δ| vs oracle", "allowed", "where", "growth", "vs torch f32", "verdict")


def _where(case: str, output: str, index: tuple[int, ...]) -> str:
    return f"{case}/{output}[{','.join(map(str, index))}]"


def _growth(result: RunnerResult) -> str:
    """Error growth along the longest sequence: mean error in its last quarter over its first."""
    longest = max(result.drift, key=lambda c: len(result.drift[c]["output"].per_step or ()), default=None)
    ratio = result.drift[longest]["output"].growth_ratio if longest else None
    return f"×{ratio:.2g}" if ratio else "—"


def _vs_float32(result: RunnerResult, report: VerifyReport) -> str:
    """The runner's worst error over PyTorch float32's own error at the same case and output."""
    torch_cpu = next((r for r in report.runners if r.name == "torch-float32-cpu" and r.status == "ok"), None)
    worst = result.worst()
    if result.kind != "onnxruntime" or torch_cpu is None or worst is None:
        return "—"
    case, output, drift = worst
    own = torch_cpu.drift.get(case, {}).get(output)
    return f"{drift.max_abs / own.max_abs:.2g}×" if own and own.max_abs > 0 else "—"


def runner_row(result: RunnerResult, report: VerifyReport, tolerances: Tolerances, failed: set[str]) -> tuple:
    if result.status != "ok":
        return (result.name, f"{result.status}: {result.reason}")
    worst = result.worst()
    if worst is None:
        return (result.name, "no cases run")
    case, output, drift = worst
    tol = tolerances.for_device(result.device)
    allowed = tol.atol + tol.rtol * drift.expected_max_abs
    shown = f"{drift.max_abs:.2e}" + (f" ({drift.nonfinite_mismatches} NaN/Inf)" if drift.nonfinite_mismatches else "")
    verdict = "FAIL" if result.name in failed else ("pass (fallback)" if result.fallbacks else "pass")
    return (result.name, shown, f"{allowed:.1e}", _where(case, output, drift.worst_index), _growth(result),
            _vs_float32(result, report), verdict)


def render_text(report: VerifyReport, tolerances: Tolerances | None = None, strict_placement: bool = False,
                require: tuple[str, ...] = ()) -> str:
    """The terminal summary: a verdict line, one row per runner, skipped cases and failures."""
    tolerances = tolerances or report.tolerances
    failures = report.failures(tolerances, strict_placement, require)
    failed = {f.split(":", 1)[0] for f in failures}
    verdict = "PASS" if not failures else "FAIL"
    lines = [f"{report.name}: {verdict} ({len(report.cases)} cases against {report.oracle['name']}, "
             f"{report.seconds:.1f} s)"]
    rows = [HEADER] + [runner_row(r, report, tolerances, failed) for r in report.runners]
    full = [r for r in rows if len(r) == len(HEADER)]
    widths = [max(len(r[i]) for r in (rows if i == 0 else full)) for i in range(len(HEADER))]
    for row in rows:
        if len(row) == len(HEADER):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        else:  # a runner that did not run: its name and why
            lines.append(f"  {row[0].ljust(widths[0])}  {row[1]}")
    for r in report.runners:
        if r.fallbacks:
            nodes = ", ".join(f"{n} → {p}" for n, p in r.fallbacks.items())
            lines.append(f"  {r.name}: recurrent nodes ran on another provider: {nodes}")
    if report.skipped_cases:
        lines.append("  skipped: " + "; ".join(f"{k} ({v})" for k, v in report.skipped_cases.items()))
    for problem in failures[:8]:
        lines.append(f"  ✗ {problem}")
    if len(failures) > 8:
        lines.append(f"  ✗ … and {len(failures) - 8} more (see report.json)")
    return "\n".join(lines)


def write_report(report: VerifyReport, folder: Path) -> None:
    """``report.json`` (versioned, atomic) and ``inputs.npz`` (every case's feeds) into ``folder``."""
    save_cases(report.inputs, folder / INPUTS_FILE)
    write_json_atomic(folder / REPORT_FILE, report.to_dict())


def render_formulations(report: FormulationsReport, atol: float, rtol: float, markdown: bool = False) -> str:
    """A table of formulations: max |Δ| from native and from the float64 oracle, time, exported sha256."""
    ok = report.passed(atol, rtol)
    shape = f"seq {report.shape['seq_len']}, batch {report.shape['batch']}"
    head = (f"{report.config}: {'all formulations agree' if ok else 'FORMULATIONS DISAGREE'} "
            f"(example {shape}; allowed |Δ| {report.allowed(atol, rtol):.1e})")
    header = ("formulation", "max |Δ| vs native", "max |Δ| vs float64", "ms / forward", "model.onnx sha256")
    rows = [(r.name, f"{r.max_abs_vs_native:.1e}", f"{r.max_abs_vs_oracle:.1e}", f"{r.seconds * 1e3:.2f}",
             r.onnx_sha256[:16]) for r in report.results if r.status == "ok"]
    notes = [f"{r.name}: {r.status}: {r.reason}" for r in report.results if r.status != "ok"]
    if report.speedup():
        notes.append(f"layer_major runs {report.speedup():.2f}× as fast as time_major")
    if report.dropout:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in report.dropout.items())
        notes.append(f"dropout (training mode, one fixed set of masks), max |Δ| from layer_major: {diffs}")
    if markdown:
        cells = [h.replace("|", "\\|") for h in header]
        lines = [f"**{head}**", "", "| " + " | ".join(cells) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(f"`{c}`" if i in (0, 4) else c for i, c in enumerate(row)) + " |" for row in rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in notes])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [head] + ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines + [f"  {n}" for n in notes])
