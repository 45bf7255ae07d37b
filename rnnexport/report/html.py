"""A self-contained HTML page for one or more ``VerifyReport``s: no network, images inline as PNG.

Plots need matplotlib (``pip install rnnexport[plots]``); without it the page says so and keeps the tables.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnexport.contract import OUTPUT
from rnnexport.report.text import DEPLOY_HEADER, HEADER, count, deploy_rows, environment, localisation_lines, runner_row
from rnnexport.verification.drift import HISTOGRAM_EDGES
from rnnexport.verification.engine import VerifyReport
from rnnexport.verification.verdict import Verdict

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


LINE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))


def allowed_by_runner(report: VerifyReport, verdict: Verdict) -> dict[str, str]:
    """runner → the error its tolerance allows at its worst cell, formatted as the runner table's "allowed" column
    shows it: the plot draws these very values."""
    found = {}
    for r in report.runners:
        worst = r.worst() if r.status == "ok" else None
        if worst is not None:
            tolerance = verdict.tolerances.for_runner(r.device, r.precision)
            found[r.name] = f"{tolerance.allowed(worst[2].expected_max_abs):.1e}"
    return found


def _curve_plot(plt: Any, report: VerifyReport, verdict: Verdict) -> tuple[str, str] | None:
    """Per-timestep max |Δ| of ``output`` for every runner on the longest case, log scale, with the error each
    runner's tolerance allows at its worst cell (the table's "allowed"): one line per distinct value, in the colour of
    its first runner's curve and a style of its own. Returns the PNG and a caption listing those lines."""
    ran = [r for r in report.runners if r.status == "ok" and r.drift]
    if not ran:
        return None
    case = max(ran[0].drift, key=lambda c: len(getattr(ran[0].drift[c].get(OUTPUT), "per_step", None) or ()))
    fig, ax = plt.subplots(figsize=(9, 3.4))
    limits = allowed_by_runner(report, verdict)
    allowed: dict[str, tuple[list[str], Any]] = {}
    for r in ran:
        drift = r.drift.get(case, {}).get(OUTPUT)
        if drift is None or not drift.per_step or r.name not in limits:
            continue
        curve = np.asarray(drift.per_step, dtype=np.float64)
        (line,) = ax.plot(np.arange(len(curve)), np.maximum(curve, 1e-12), label=r.name, linewidth=1)
        allowed.setdefault(limits[r.name], ([], line.get_color()))[0].append(r.name)
    if not allowed:  # no runner has a per-step curve (replayed cases without a time axis, say)
        plt.close(fig)
        return None
    captions = []
    for k, (limit, (names, color)) in enumerate(sorted(allowed.items(), key=lambda item: float(item[0]))):
        ax.axhline(float(limit), color=color, linestyle=LINE_STYLES[k % len(LINE_STYLES)], linewidth=1.2,
                   label=f"allowed {limit}: {', '.join(names)}")
        captions.append(f"allowed {limit}: {', '.join(names)}")
    ax.set_yscale("log")
    ax.set(xlabel="time step", ylabel="max |Δ| vs float64 oracle", title=f"{report.name}: output, case '{case}'")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot, never over a curve
    ax.grid(True, which="both", alpha=0.3)
    try:
        return _png(fig), "; ".join(captions)
    finally:
        plt.close(fig)


def _histogram_plot(plt: Any, report: VerifyReport) -> str | None:
    """Distribution of |Δ| over every element of every case and output, per runner (log bins), the x-axis
    spanning the bins that hold data."""
    ran = [r for r in report.runners if r.status == "ok" and r.drift]
    if not ran:
        return None
    edges = np.array([1e-13, *HISTOGRAM_EDGES, 1e3])
    counts = {r.name: np.sum([d.histogram for outs in r.drift.values() for d in outs.values() if d.histogram], axis=0)
              for r in ran if any(d.histogram for outs in r.drift.values() for d in outs.values())}
    if not counts:
        return None
    used = np.flatnonzero(np.sum(list(counts.values()), axis=0))
    if not used.size:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.0))
    for name, c in counts.items():
        ax.stairs(c, edges, label=name)
    ax.set_xscale("log")
    ax.set_xlim(edges[used[0]], edges[used[-1] + 1])
    ax.set(xlabel="|Δ| vs float64 oracle (0 counted in the first bin)", ylabel="elements", title="error histogram")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
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


def _case_grid(report: VerifyReport, verdict: Verdict) -> str:
    """Runners × cases: worst |Δ| vs oracle, failing cells marked (a problem of the whole runner marks
    every case of it)."""
    ran = [r for r in report.runners if r.status == "ok"]
    failing = verdict.failing_cells()
    head = "<th>case</th>" + "".join(f"<th>{html.escape(r.name)}</th>" for r in ran)
    rows = []
    for case in report.cases:
        cells = []
        for r in ran:
            drift = r.drift.get(case["name"])
            value = f"{max(d.max_abs for d in drift.values()):.2e}" if drift else "—"
            bad = (r.name, case["name"]) in failing or (r.name, None) in failing
            cells.append(f'<td class="{"num bad" if bad else "num"}">{value}</td>')
        rows.append(f"<tr><td>{html.escape(case['name'])}</td>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def banner_words(verdict: Verdict) -> str:
    """The verdict and what it covers: which runners were checked and which could not run here."""
    if not verdict.passed:
        return f"FAIL: do not ship ({len(verdict.problems)} failed check{'s' if len(verdict.problems) != 1 else ''})"
    text = f"PASS on {', '.join(verdict.checked)}"
    if verdict.unchecked:
        text += f"; not checked here: {', '.join(verdict.unchecked)}"
    return text


def _section(report: VerifyReport, verdict: Verdict, plt: Any | None, anchor: str) -> str:
    failures = verdict.failures()
    parts = [f'<h1 id="{anchor}">{html.escape(report.name)}</h1>',
             f'<div class="banner {"pass" if verdict.passed else "fail"}">{html.escape(banner_words(verdict))}</div>',
             f'<p class="note">{count(len(report.cases), "case")} against {html.escape(report.oracle["name"])}; '
             f'model sha256 {report.model_sha256[:16]}; {report.seconds:.1f} s.</p>',
             "<h2>Runners</h2>",
             _table(HEADER, [runner_row(r, report, verdict) for r in report.runners]),
             "<h2>Worst |Δ| per runner and case</h2>", _case_grid(report, verdict)]
    deploy = deploy_rows(report)
    if deploy:
        parts += ["<h2>Deploy options</h2>", _table(DEPLOY_HEADER, deploy)]
    if failures:
        parts.append("<h2>Failures</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in failures[:50]) + "</ul>")
    located = localisation_lines(report)
    if located:
        parts.append("<h2>Where and why</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in located) + "</ul>")
    if report.skipped_cases:
        parts.append('<p class="note">Skipped cases: ' + html.escape(
            "; ".join(f"{k} ({v})" for k, v in report.skipped_cases.items())) + "</p>")
    parts.append("<h2>Error along the sequence</h2>")
    if plt is None:
        parts.append('<p class="note">Plots need matplotlib: pip install "rnnexport[plots]".</p>')
    else:
        curve = _curve_plot(plt, report, verdict)
        if curve:
            parts.append(f'<figure><img alt="per-timestep error" src="data:image/png;base64,{curve[0]}">'
                         f'<figcaption class="allowed">{html.escape(curve[1])}</figcaption></figure>')
        histogram = _histogram_plot(plt, report)
        if histogram:
            parts.append(f'<img alt="histogram" src="data:image/png;base64,{histogram}">')
    return "\n".join(parts)


def render_html(judged: list[tuple[VerifyReport, Verdict]]) -> str:
    """One page for every (report, verdict): verdict first, a table of contents when there are several
    models, and the environment once at the end."""
    plt = _plt()
    ok = all(v.passed for _, v in judged)
    count = f"{len(judged)} model{'s' if len(judged) != 1 else ''}"
    title = f"rnnexport verify: {'PASS' if ok else 'FAIL'} ({count})"
    anchors = [f"model-{i}" for i in range(len(judged))]
    sections = [_section(r, v, plt, a) for (r, v), a in zip(judged, anchors)]
    head = ""
    if len(judged) > 1:
        items = "".join(f'<li><a href="#{a}">{html.escape(r.name)}</a>: {"PASS" if v.passed else "FAIL"}</li>'
                        for (r, v), a in zip(judged, anchors))
        banner = f'<div class="banner {"pass" if ok else "fail"}">{html.escape(title)}</div>'
        head = f'{banner}\n<ul class="toc">{items}</ul>\n'
    env = "<h2>Environment</h2>" + _table(("what", "value"), environment(judged[0][0])) if judged else ""
    body = head + "\n<hr>\n".join(sections) + "\n" + env
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script>{SELF_CHECK}</script></head>\n<body>\n{body}\n</body></html>\n")
