"""The formulations table, for the terminal and for docs/formulations.md."""

from __future__ import annotations

from rnnexport.config import Tolerance
from rnnexport.formulations.compare import FormulationResult, FormulationsReport, measured
from rnnexport.report.text import aligned


def _time(result: FormulationResult) -> str:
    """Milliseconds per forward pass, with the spread, marked noisy as bench marks it."""
    spread = f" ±{result.spread:.0%}" if result.spread is not None else ""
    return f"{measured(result.seconds, result) * 1e3:.2f}{spread}" + (" (noisy)" if result.noisy else "")


def render_formulations(report: FormulationsReport, tol: Tolerance, markdown: bool = False) -> str:
    """A table of formulations: max |Δ| from native and from the float64 oracle, time, exported sha256."""
    ok = report.passed(tol)
    shape = f"seq {report.shape['seq_len']}, batch {report.shape['batch']}"
    head = (f"{report.config}: {'all formulations agree' if ok else 'FORMULATIONS DISAGREE'} "
            f"(example {shape}; allowed |Δ| {tol.allowed(report.expected_max_abs):.1e})")
    header = ("formulation", "max |Δ| vs native", "max |Δ| vs float64", "ms / forward", "model.onnx sha256")
    rows = [(r.name, f"{r.max_abs_vs_native:.1e}", f"{r.max_abs_vs_oracle:.1e}", _time(r),
             measured(r.onnx_sha256, r)[:16]) for r in report.results if r.status == "ok"]
    notes = [f"{r.name}: {r.status}: {r.reason}" for r in report.results if r.status != "ok"]
    if report.speedup():
        notes.append(f"layer_major runs {report.speedup():.2f}× as fast as time_major")
    elif any(r.noisy for r in report.results if r.name in ("layer_major", "time_major")):
        notes.append("layer_major against time_major: not compared, their timings stayed noisy (a busy machine)")
    if report.dropout:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in report.dropout.items())
        notes.append(f"dropout (training mode, one fixed set of masks), max |Δ| from layer_major: {diffs}")
    if markdown:
        cells = [h.replace("|", "\\|") for h in header]
        lines = [f"**{head}**", "", "| " + " | ".join(cells) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(f"`{c}`" if i in (0, 4) else c for i, c in enumerate(row)) + " |" for row in rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in notes])
    return "\n".join([head, *aligned(header, rows)] + [f"  {n}" for n in notes])
