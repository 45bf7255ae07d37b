"""A self-contained HTML page for one or more ``VerifyReport``s: no network, images inline as PNG.

Plots need matplotlib (``pip install rnnexport[plots]``); without it the page says so and keeps the tables.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from .drift import HISTOGRAM_EDGES
from .report import HEADER, environment, runner_row
from .verify import Tolerances, VerifyReport

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #1d2330; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
.banner { padding: .8em 1.2em; border-radius: 6px; font-size: 1.2em; font-weight: 600; }
.pass { background: #dff5e3; color: #11632a; } .fail { background: #fde2e1; color: #8c1d18; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #d5d9e0; padding: .25em .6em; }
th { background: #f2f4f7; text-align: left; } td.num { font-family: ui-monospace, monospace; text-align: right; }
td.bad { background: #fde2e1; } td.na { color: #6b7280; } img { max-width: 100%; }
.note { color: #6b7280; }
"""
# Lets a browser test (and a curious reader) see that every image decoded: the page marks its body.
SELF_CHECK = """
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.imagesDecoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = imgs.length;
});
"""


def _plt() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _curve_plot(plt: Any, report: VerifyReport) -> str | None:
    """Per-timestep max |Δ| of ``output`` for every runner, on the longest case, log scale."""
    ran = [r for r in report.runners if r.status == "ok" and r.drift]
    if not ran:
        return None
    case = max(ran[0].drift, key=lambda c: len(ran[0].drift[c]["output"].per_step or ()))
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for r in ran:
        curve = np.asarray(r.drift[case]["output"].per_step or (), dtype=np.float64)
        ax.plot(np.arange(len(curve)), np.maximum(curve, 1e-12), label=r.name, linewidth=1)
    drift = ran[0].drift[case]["output"]
    allowed = report.tolerances.cpu.atol + report.tolerances.cpu.rtol * drift.expected_max_abs
    ax.axhline(allowed, color="#8c1d18", linestyle="--", linewidth=1, label="allowed (CPU)")
    ax.set_yscale("log")
    ax.set(xlabel="time step", ylabel="max |Δ| vs float64 oracle", title=f"{report.name}: output, case '{case}'")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def _histogram_plot(plt: Any, report: VerifyReport) -> str | None:
    """Distribution of |Δ| over every element of every case and output, per runner (log bins)."""
    ran = [r for r in report.runners if r.status == "ok" and r.drift]
    if not ran:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.0))
    edges = np.array([1e-13, *HISTOGRAM_EDGES, 1e3])
    for r in ran:
        counts = np.sum([d.histogram for outs in r.drift.values() for d in outs.values()], axis=0)
        ax.stairs(counts, edges, label=r.name)
    ax.set_xscale("log")
    ax.set(xlabel="|Δ| vs float64 oracle (0 counted in the first bin)", ylabel="elements", title="error histogram")
    ax.legend(fontsize=8)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        if len(row) < len(header):  # a runner that did not run: its name and why, across the row
            span = len(header) - 1
            cells = f'<td>{html.escape(row[0])}</td><td class="na" colspan="{span}">{html.escape(row[1])}</td>'
        else:
            cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _case_grid(report: VerifyReport, tolerances: Tolerances) -> str:
    """Runners × cases: worst |Δ| vs oracle, failing cells marked."""
    ran = [r for r in report.runners if r.status == "ok"]
    failing = {(p.runner, p.case) for p in report.problems(tolerances)}
    head = "<th>case</th>" + "".join(f"<th>{html.escape(r.name)}</th>" for r in ran)
    rows = []
    for case in report.cases:
        cells = []
        for r in ran:
            drift = r.drift.get(case["name"])
            value = f"{max(d.max_abs for d in drift.values()):.2e}" if drift else "—"
            cls = "num bad" if (r.name, case["name"]) in failing else "num"
            cells.append(f'<td class="{cls}">{value}</td>')
        rows.append(f"<tr><td>{html.escape(case['name'])}</td>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _section(report: VerifyReport, tolerances: Tolerances, plt: Any | None, strict: bool, require: tuple) -> str:
    failures = report.failures(tolerances, strict, require)
    failed = {f.split(":", 1)[0] for f in failures}
    verdict = "PASS: safe to ship, every check within tolerance" if not failures else "FAIL: do not ship"
    parts = [f'<h1>{html.escape(report.name)}</h1>',
             f'<div class="banner {"pass" if not failures else "fail"}">{html.escape(verdict)}</div>',
             f'<p class="note">{len(report.cases)} cases against {html.escape(report.oracle["name"])}; '
             f'model sha256 {report.model_sha256[:16]}; {report.seconds:.1f} s.</p>',
             "<h2>Runners</h2>",
             _table(HEADER, [runner_row(r, report, tolerances, failed) for r in report.runners]),
             "<h2>Worst |Δ| per runner and case</h2>", _case_grid(report, tolerances)]
    if failures:
        parts.append("<h2>Failures</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in failures[:50]) + "</ul>")
    if report.skipped_cases:
        parts.append('<p class="note">Skipped cases: ' + html.escape(
            "; ".join(f"{k} ({v})" for k, v in report.skipped_cases.items())) + "</p>")
    parts.append("<h2>Error along the sequence</h2>")
    if plt is None:
        parts.append('<p class="note">Plots need matplotlib: pip install "rnnexport[plots]".</p>')
    else:
        plots = (("per-timestep error", _curve_plot(plt, report)), ("histogram", _histogram_plot(plt, report)))
        for title, image in plots:
            if image:
                parts.append(f'<img alt="{title}" src="data:image/png;base64,{image}">')
    parts.append("<h2>Environment</h2>" + _table(("what", "value"), environment(report)))
    return "\n".join(parts)


def render_html(reports: list[VerifyReport], strict_placement: bool = False, require: tuple[str, ...] = ()) -> str:
    """One page for every report, verdict first."""
    plt = _plt()
    ok = all(r.passed(strict_placement=strict_placement, require=require) for r in reports)
    title = f"rnnexport verify: {'PASS' if ok else 'FAIL'} ({len(reports)} model{'s' if len(reports) != 1 else ''})"
    body = "\n<hr>\n".join(_section(r, r.tolerances, plt, strict_placement, require) for r in reports)
    if len(reports) > 1:
        body = f'<div class="banner {"pass" if ok else "fail"}">{html.escape(title)}</div>\n' + body
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script>{SELF_CHECK}</script></head>\n<body>\n{body}\n</body></html>\n")
