"""Render a judged ``VerifyReport``: a compact terminal table, report.md, and report.json + inputs.npz on disk.

Every renderer takes the report and its ``Verdict``, judged once by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rnnexport.contract import OUTPUT
from rnnexport.verification.drift import OutputDrift
from rnnexport.verification.verdict import Verdict

if TYPE_CHECKING:  # the report module renders what verification.engine measured; the engine imports it for str()
    from rnnexport.verification.engine import RunnerResult, VerifyReport

def count(n: int, noun: str) -> str:
    """``1 case``, ``2 cases``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


HEADER = ("runner", "precision", "worst |Δ| vs oracle", "allowed", "passes at atol", "where", "growth",
          "vs torch f32 (worst cell)", "verdict")


def _where(case: str, output: str, index: tuple[int, ...]) -> str:
    return f"{case}/{output}[{','.join(map(str, index))}]"


def growth_ratio(result: RunnerResult) -> float | None:
    """Error growth along the longest sequence: mean error in its last quarter over its first."""
    curves = {c: outs[OUTPUT] for c, outs in result.drift.items() if OUTPUT in outs}
    longest = max(curves, key=lambda c: len(curves[c].per_step or ()), default=None)
    return curves[longest].growth_ratio if longest else None


def _error_ratio(result: RunnerResult, report: VerifyReport) -> str:
    """The runner's worst error over PyTorch float32's own error at the same case and output, and the largest
    such ratio over every cell, with its cell."""
    ratio = report.error_ratios().get(result.name)
    cell = report.cell_error_ratios().get(result.name)
    shown = f"{ratio:.2g}×" if ratio is not None else "—"
    return shown + (f" ({cell['ratio']:.2g}× {cell['case']}/{cell['output']})" if cell else "")


def _min_atol(result: RunnerResult, report: VerifyReport, verdict: Verdict) -> str:
    """The smallest atol (at the configured rtol) that would pass every output of the runner."""
    needed = report.min_passing(verdict.tolerances).get(result.name)
    return f"{max(o['atol'] for o in needed.values()):.1e}" if needed else "—"


def _shown(drift: OutputDrift) -> str:
    if drift.shape_mismatch:
        return "wrong shape"
    return f"{drift.max_abs:.2e}" + (f" ({drift.nonfinite_mismatches} NaN/Inf)" if drift.nonfinite_mismatches else "")


def runner_row(result: RunnerResult, report: VerifyReport, verdict: Verdict) -> tuple:
    """The runner's cells under ``HEADER``, or (name, why it did not run)."""
    if result.status != "ok":
        return (result.name, f"{result.status}: {result.reason}")
    worst = result.worst()
    if worst is None:
        return (result.name, "no cases run")
    case, output, drift = worst
    allowed = verdict.tolerances.for_runner(result.device, result.precision).allowed(drift.expected_max_abs)
    verdict_word = "FAIL" if result.name in verdict.failed_runners() else (
        "pass (fallback)" if result.fallbacks else "pass")
    growth = growth_ratio(result)
    return (result.name, result.precision, _shown(drift), f"{allowed:.1e}", _min_atol(result, report, verdict),
            _where(case, output, drift.worst_index), f"×{growth:.2g}" if growth else "—", _error_ratio(result, report),
            verdict_word)


DEPLOY_HEADER = ("deploy option", "precision", "file", "worst |Δ| vs oracle", "growth (longest case)",
                 "latency vs ort-cpu float32")


def deploy_rows(report: VerifyReport) -> list[tuple[str, ...]]:
    """One row per runtime runner that ran, to pick speed against accuracy: the precision it computed in, the
    file it deployed, its worst error (also as a share of max|oracle| there), the error's growth along the
    longest case, and its latency from ``bench`` (per shape class) when bench has measured this artifact.
    Empty when every runtime computed in float32 (the runner table says it all then)."""
    ran = [(r, worst) for r in report.runners if r.status == "ok" and r.kind != "torch" and (worst := r.worst())]
    if all(r.precision == "float32" for r, _ in ran):
        return []
    rows: list[tuple[str, ...]] = []
    for r, (_, _, drift) in ran:
        share = f" ({100 * drift.max_abs / drift.expected_max_abs:.2g}%)" if drift.expected_max_abs else ""
        growth = growth_ratio(r)
        latency = report.latency.get(r.name)
        rows.append((r.name, r.precision, f"{r.model_bytes / 1024:.1f} KiB" if r.model_bytes else "—",
                     _shown(drift) + share, f"×{growth:.2g}" if growth else "—",
                     ", ".join(f"{shape} ×{ratio:.2g}" + (" (noisy)" if shape in report.latency_noisy.get(r.name, [])
                                                          else "") for shape, ratio in latency.items()) if latency
                     else "— (rnnexport bench)"))
    return rows


def verdict_line(report: VerifyReport, verdict: Verdict) -> str:
    return (f"{report.name}: {'PASS' if verdict.passed else 'FAIL'} ({count(len(report.cases), 'case')} against "
            f"{report.oracle['name']}, {report.seconds:.1f} s)")


def render_text(report: VerifyReport, verdict: Verdict, verbose: bool = False) -> str:
    """The terminal summary: a verdict line, one row per runner that ran (or failed), one line for the runners
    that could not run here (grouped by reason), notes, failures and where they are; ``verbose`` adds the columns
    that matter when tuning tolerances (the smallest passing atol, the error as a multiple of PyTorch float32's)
    and the worst |Δ| of every runner in every case."""
    failures = verdict.failures()
    lines = [verdict_line(report, verdict)]
    keep = [i for i, h in enumerate(HEADER) if verbose or h not in VERBOSE_COLUMNS]
    ran = [r for r in report.runners if r.status not in ("not available", "not applicable")]
    rows = [tuple(HEADER[i] for i in keep)] + [_pick(runner_row(r, report, verdict), keep) for r in ran]
    full = [r for r in rows if len(r) == len(keep)]
    widths = [max(len(r[i]) for r in (rows if i == 0 else full)) for i in range(len(keep))]
    for row in rows:
        if len(row) == len(keep):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        else:  # a runner that failed to load: its name and why
            lines.append(f"  {row[0].ljust(widths[0])}  {row[1]}")
    lines += unavailable_lines(report)
    deploy = deploy_rows(report)
    if deploy:
        lines += ["  deploy options:"] + aligned(DEPLOY_HEADER, deploy, indent="    ")
    lines += notes(report)
    for problem in failures[:8]:
        lines.append(f"  ✗ {problem}")
    if len(failures) > 8:
        lines.append(f"  ✗ … and {len(failures) - 8} more (see report.json)")
    lines += [f"  ↳ {line}" for line in localisation_lines(report)]
    if verbose:
        lines += aligned(*case_rows(report))
    return "\n".join(lines)


VERBOSE_COLUMNS = ("passes at atol", "vs torch f32 (worst cell)")


def _pick(row: tuple, keep: list[int]) -> tuple:
    return row if len(row) == 2 else tuple(row[i] for i in keep)


def unavailable_lines(report: VerifyReport) -> list[str]:
    """One line for the runners that could not run here, grouped by the reason (which carries the install hint)."""
    lines = []
    for status, words in (("not available", "not available here"), ("not applicable", "not for this model")):
        reasons: dict[str, list[str]] = {}
        for r in report.runners:
            if r.status == status:
                reasons.setdefault(r.reason or "", []).append(r.name)
        if reasons:
            lines.append(f"  {words}: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in reasons.items()))
    return lines


def localisation_lines(report: VerifyReport) -> list[str]:
    """Per failing (or, with --per-layer, every) runtime runner: where the error starts and the likely bug."""
    lines = []
    for r in report.runners:
        found = r.localisation
        if found is None:
            continue
        lines.append(f"{r.name}: {found.summary()}")
        if found.diagnosis:
            lines.append(f"{r.name}: diagnosis: {found.diagnosis}")
    return lines


def notes(report: VerifyReport) -> list[str]:
    """Fallbacks, non-finite inputs, a model other than the golden outputs' and skipped cases, one line each."""
    lines = []
    for r in report.runners:
        if r.fallbacks:
            nodes = ", ".join(f"{n} → {p}" for n, p in r.fallbacks.items())
            lines.append(f"  {r.name}: recurrent nodes ran on another provider: {nodes}")
    for case in report.cases:
        if case.get("nonfinite_inputs"):
            lines.append(f"  ⚠ case {case['name']}: the inputs hold {case['nonfinite_inputs']} NaN/Inf values; a "
                         "runtime must propagate them where PyTorch does (a hidden NaN fails), and finite elements "
                         "are compared as usual")
    saved = report.oracle.get("golden_model_sha256")
    if saved and saved != report.model_sha256:
        lines.append(f"  note: this model (sha256 {report.model_sha256[:12]}…) is not the one the golden outputs were "
                     f"saved from ({saved[:12]}…): the comparison says whether it computes the same")
    if report.skipped_cases:
        lines.append("  skipped: " + "; ".join(f"{k} ({v})" for k, v in report.skipped_cases.items()))
    return lines


def environment(report: VerifyReport) -> list[tuple[str, str]]:
    """(what, value) pairs: versions, threads, providers and precision settings of the runners that ran."""
    from rnnexport._version import versions

    rows = [(k, v) for k, v in versions().items()]
    rows.append(("oracle", f"{report.oracle['name']} ({report.oracle['threads']} threads)"))
    for r in report.runners:
        if r.status == "ok":
            settings = ", ".join(f"{k}={v}" for k, v in r.settings.items() if k not in ("onnxruntime", "openvino"))
            rows.append((r.name, settings))
    return rows


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: VerifyReport, verdict: Verdict) -> str:
    """A summary for people and CI job summaries (GitHub's step summary accepts it as is)."""
    failures = verdict.failures()
    mark = "✅ PASS" if verdict.passed else "❌ FAIL"
    lines = [f"## {_md_escape(report.name)}: {mark}", "",
             f"{count(len(report.cases), 'case')} against `{report.oracle['name']}`, model sha256 "
             f"`{report.model_sha256[:16]}`, {report.seconds:.1f} s.", "",
             "| " + " | ".join(_md_escape(h) for h in HEADER) + " |", "|" + "---|" * len(HEADER)]
    where = HEADER.index("where")
    for r in report.runners:
        row = runner_row(r, report, verdict)
        cells = row if len(row) == len(HEADER) else (row[0], _md_escape(row[1]), *[""] * (len(HEADER) - 3), "—")
        lines.append("| " + " | ".join(f"`{c}`" if i == where and c else c for i, c in enumerate(cells)) + " |")
    deploy = deploy_rows(report)
    if deploy:
        lines += ["", "Deploy options (precision against speed):", "",
                  "| " + " | ".join(_md_escape(h) for h in DEPLOY_HEADER) + " |", "|" + "---|" * len(DEPLOY_HEADER)]
        lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in deploy]
    if report.skipped_cases:
        lines += ["", "Skipped cases: " + "; ".join(f"`{k}` ({v})" for k, v in report.skipped_cases.items()) + "."]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {_md_escape(f)}" for f in failures[:20]]
        if len(failures) > 20:
            lines.append(f"- … and {len(failures) - 20} more (see report.json)")
    located = localisation_lines(report)
    if located:
        lines += ["", "Where and why:", ""] + [f"- {_md_escape(line)}" for line in located]
    header, rows = case_rows(report)
    table = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(map(_md_escape, r)) + " |" for r in rows]
    lines += ["", "<details><summary>Worst |Δ| per runner and case</summary>", "", *table, "",
              "</details>", "", "<details><summary>Environment</summary>", "",
              "| what | value |", "|---|---|", *[f"| {k} | {_md_escape(v)} |" for k, v in environment(report)],
              "", "</details>", ""]
    return "\n".join(lines)


def case_rows(report: VerifyReport) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows of a cases × runners table of worst |Δ| vs the oracle."""
    ran = [r for r in report.runners if r.status == "ok"]
    rows = [(case["name"], *(f"{max(d.max_abs for d in r.drift[case['name']].values()):.2e}"
                             if case["name"] in r.drift else "—" for r in ran)) for case in report.cases]
    return ("case", *(r.name for r in ran)), rows


def aligned(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
