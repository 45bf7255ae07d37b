"""Render a ``VerifyReport``: a compact terminal table, and report.json + inputs.npz on disk."""

from __future__ import annotations

from pathlib import Path

from .artifacts import write_bytes_atomic, write_json_atomic, write_text_atomic
from .cases import cases_to_npz
from .formulations import FormulationsReport
from .verify import RunnerResult, Tolerances, VerifyReport

REPORT_FILE, INPUTS_FILE, MARKDOWN_FILE = "report.json", "inputs.npz", "report.md"
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
    ratio = report.error_ratios().get(result.name)
    return f"{ratio:.2g}×" if ratio is not None else "—"


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
                require: tuple[str, ...] = (), verbose: bool = False) -> str:
    """The terminal summary: a verdict line, one row per runner, skipped cases and failures; ``verbose``
    adds the worst |Δ| of every runner in every case."""
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
    for case in report.cases:
        if case.get("nonfinite_inputs"):
            lines.append(f"  ⚠ case {case['name']}: the inputs hold {case['nonfinite_inputs']} NaN/Inf values; "
                         "outputs are compared where both sides are finite")
    if report.skipped_cases:
        lines.append("  skipped: " + "; ".join(f"{k} ({v})" for k, v in report.skipped_cases.items()))
    for problem in failures[:8]:
        lines.append(f"  ✗ {problem}")
    if len(failures) > 8:
        lines.append(f"  ✗ … and {len(failures) - 8} more (see report.json)")
    if verbose:
        lines += _aligned(*_case_rows(report))
    return "\n".join(lines)


def write_report(report: VerifyReport, folder: Path, strict_placement: bool = False,
                 require: tuple[str, ...] = ()) -> None:
    """``report.json`` (versioned), ``report.md`` and ``inputs.npz`` (every case's feeds) into ``folder``,
    each written atomically."""
    write_bytes_atomic(folder / INPUTS_FILE, cases_to_npz(report.inputs))
    write_json_atomic(folder / REPORT_FILE, report.to_dict())
    write_text_atomic(folder / MARKDOWN_FILE, render_markdown(report, strict_placement=strict_placement,
                                                              require=require))


def environment(report: VerifyReport) -> list[tuple[str, str]]:
    """(what, value) pairs: versions, threads, providers and TF32 settings of the runners that ran."""
    from .pipeline import versions

    rows = [(k, v) for k, v in versions().items()]
    rows.append(("oracle", f"{report.oracle['name']} ({report.oracle['threads']} threads)"))
    for r in report.runners:
        if r.status == "ok":
            settings = ", ".join(f"{k}={v}" for k, v in r.settings.items() if k not in ("onnxruntime",))
            rows.append((r.name, settings))
    return rows


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: VerifyReport, tolerances: Tolerances | None = None, strict_placement: bool = False,
                    require: tuple[str, ...] = ()) -> str:
    """A summary for people and CI job summaries (GitHub's step summary accepts it as is)."""
    tolerances = tolerances or report.tolerances
    failures = report.failures(tolerances, strict_placement, require)
    failed = {f.split(":", 1)[0] for f in failures}
    verdict = "✅ PASS" if not failures else "❌ FAIL"
    lines = [f"## {report.name}: {verdict}", "",
             f"{len(report.cases)} cases against `{report.oracle['name']}`, model sha256 `{report.model_sha256[:16]}`, "
             f"{report.seconds:.1f} s.", "",
             "| " + " | ".join(_md_escape(h) for h in HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in report.runners:
        row = runner_row(r, report, tolerances, failed)
        cells = row if len(row) == len(HEADER) else (row[0], _md_escape(row[1]), "", "", "", "", "—")
        lines.append("| " + " | ".join(f"`{c}`" if i == 3 and c else c for i, c in enumerate(cells)) + " |")
    if report.skipped_cases:
        lines += ["", "Skipped cases: " + "; ".join(f"`{k}` ({v})" for k, v in report.skipped_cases.items()) + "."]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {_md_escape(f)}" for f in failures[:20]]
        if len(failures) > 20:
            lines.append(f"- … and {len(failures) - 20} more (see report.json)")
    lines += ["", "<details><summary>Worst |Δ| per runner and case</summary>", "", *_case_table(report), "",
              "</details>", "", "<details><summary>Environment</summary>", "",
              "| what | value |", "|---|---|", *[f"| {k} | {_md_escape(v)} |" for k, v in environment(report)],
              "", "</details>", ""]
    return "\n".join(lines)


def _case_rows(report: VerifyReport) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows of a cases × runners table of worst |Δ| vs the oracle."""
    ran = [r for r in report.runners if r.status == "ok"]
    rows = [(case["name"], *(f"{max(d.max_abs for d in r.drift[case['name']].values()):.2e}"
                             if case["name"] in r.drift else "—" for r in ran)) for case in report.cases]
    return ("case", *(r.name for r in ran)), rows


def _case_table(report: VerifyReport) -> list[str]:
    header, rows = _case_rows(report)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _aligned(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]


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
    return "\n".join([head, *_aligned(header, rows)] + [f"  {n}" for n in notes])
