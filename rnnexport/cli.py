"""The ``rnnexport`` command: a thin shell over the library. Exit codes:

0 success · 1 drift over tolerance · 2 bad input (nothing written) · 3 a runtime failed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cases import CASE_NAMES, LONG_SEQ
from .config import load_configs
from .exporters import EXPORTERS
from .errors import ProviderUnavailable, RnnExportError


class _Group(click.Group):
    """Turns library errors into one ``Error: …`` line and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RnnExportError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnexport")
def main() -> None:
    """Export stacked GRU/LSTM/RNN models from PyTorch to ONNX and measure how far they drift."""


class _Progress:
    """Iterates ``items``. On a terminal, with several items, it shows a progress bar and holds what
    ``say`` is given until the bar is done; elsewhere each line is printed as its item finishes, so CI
    logs stay readable."""

    def __init__(self, items: list[Any], label: str, name: Callable[[Any], str], bar: bool = True):
        self.items, self.label, self.name = items, label, name
        self.bar = bar and len(items) > 1 and sys.stderr.isatty()
        self.held: list[str] = []

    def __iter__(self) -> Iterator[Any]:
        if not self.bar:
            yield from self.items
            return
        show = lambda item: item and self.name(item)  # noqa: E731
        with click.progressbar(self.items, label=self.label, file=sys.stderr, item_show_func=show) as bar:
            yield from bar
        for line in self.held:
            click.echo(line)

    def say(self, text: str) -> None:
        if self.bar:
            self.held.append(text)
        else:
            click.echo(text)


SHARD_HELP = "Only the configs of shard K of N (a stable split by name), for a CI matrix of N jobs."


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True,
              help="Folder that receives one artifact folder per config.")
@click.option("--check", is_flag=True,
              help="Write nothing: rebuild in memory and compare with --out byte for byte; exit 1 on any difference.")
@click.option("--shard", metavar="K/N", help=SHARD_HELP)
@click.option("--exporter", type=click.Choice(EXPORTERS), default="native", show_default=True,
              help="rnnexport's own writer, or PyTorch's exporters for comparison.")
@click.option("--weights", type=click.Path(path_type=Path),
              help="Take the weights from this state_dict or checkpoint (one config only) instead of the seed.")
@click.option("--prefix", help="Key prefix of the recurrent module in --weights (e.g. encoder.rnn.); found if alone.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("-v", "--verbose", is_flag=True, help="Also print each model's inputs, outputs and op counts.")
def build(paths: tuple[Path, ...], out: Path, check: bool, shard: str | None, exporter: str, weights: Path | None,
          prefix: str | None, quiet: bool, verbose: bool) -> None:
    """Build an artifact (model.onnx, weights.pt, manifest.json) for each config.

    PATHS are config files or folders of them. Every config is validated before anything is written;
    --out/index.json lists every artifact afterwards. With --weights, the config gives the architecture
    and the file (a state_dict, or a checkpoint with the module under --prefix) the weights.
    """
    from .ci import check_artifact, in_shard, parse_shard, write_index
    from .pipeline import build_artifact

    part = parse_shard(shard) if shard else None
    configs = [c for c in load_configs(list(paths)) if in_shard(c.name, part)]
    if weights and len(configs) != 1:
        raise RnnExportError(f"--weights takes exactly one config; {len(configs)} were given")
    problems = []
    progress = _Progress(configs, "checking" if check else "building", lambda cfg: cfg.name, bar=not quiet)
    for cfg in progress:
        start = time.perf_counter()
        if check:
            found = check_artifact(cfg, out)
            problems += found
            if not quiet:
                progress.say(f"{'differs' if found else 'up to date'}: {cfg.name}")
            continue
        folder = build_artifact(cfg, out, exporter=exporter, weights=weights, prefix=prefix)
        size = (folder / "model.onnx").stat().st_size
        if not quiet:
            progress.say(f"built {cfg.name}: {folder} ({cfg.num_layers} × {cfg.cell}, opset {cfg.opset}, "
                         f"{size / 1024:.1f} KiB) in {time.perf_counter() - start:.2f} s")
        if verbose and not quiet:
            from .inspection import inspect_path, render_inspect

            progress.say(render_inspect(inspect_path(folder)))
    if check:
        for problem in problems:
            click.echo(f"✗ {problem}", err=True)
        sys.exit(1 if problems else 0)
    if configs:
        write_index(out)


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    """Accept both ``--x a --x b`` and ``--x a,b``."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config of a bare MODEL.onnx.")
@click.option("--weights", type=click.Path(path_type=Path), help="state_dict or checkpoint of a bare MODEL.onnx.")
@click.option("--prefix", help="Key prefix of the recurrent module in --weights; found if alone.")
@click.option("--providers", multiple=True, metavar="NAMES",
              help="ONNX Runtime providers to run (comma-separated). Default: CPU and CUDA (and TensorRT if present).")
@click.option("--require", multiple=True, metavar="NAMES",
              help="Providers or runners that must be available; a missing one exits 3.")
@click.option("--cases", "case_names", multiple=True, metavar="NAMES",
              help=f"Cases to run (comma-separated; default all that apply): {', '.join(CASE_NAMES)}.")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance (overrides the config's, CPU and CUDA).")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance, times max|oracle| per output.")
@click.option("--strict-placement", is_flag=True, help="Fail when a recurrent node falls back to another provider.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the input cases.")
@click.option("--inputs", "inputs_path", type=click.Path(path_type=Path),
              help="Replay the cases saved in an inputs.npz (instead of generating them).")
@click.option("--long-seq", type=click.IntRange(min=1), default=LONG_SEQ, show_default=True,
              help="Steps of the 'long' case.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write every report as one JSON file.")
@click.option("--html", "html_path", type=click.Path(path_type=Path),
              help="Write a self-contained HTML report with drift plots (plots need rnnexport[plots]).")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path),
              help="Write a JUnit XML report (one test case per config × runner × case).")
@click.option("--export-test-data", "test_data", type=click.Path(path_type=Path),
              help="Write each model and its cases in ONNX's test-case layout (input_K.pb, output_K.pb).")
@click.option("--shard", metavar="K/N", help=SHARD_HELP)
@click.option("-q", "--quiet", is_flag=True, help="Print only the verdict lines.")
@click.option("-v", "--verbose", is_flag=True, help="Also print the worst drift of every runner in every case.")
def verify(paths, config_path, weights, prefix, providers, require, case_names, atol, rtol, strict_placement, seed,
           inputs_path, long_seq, json_path, html_path, junit_path, test_data, shard, quiet, verbose) -> None:
    """Run the same inputs through PyTorch and ONNX Runtime and measure drift against a float64 oracle.

    PATHS are artifact folders (their manifest is checked first), folders of artifacts or configs, config
    files (built in memory), or MODEL.onnx with --config and --weights. An artifact folder receives
    report.json, report.md and inputs.npz. Exit 0 when every check is within tolerance, 1 on drift, 2 on bad input,
    3 when a runtime failed or a required provider is missing.
    """
    from .artifacts import write_json_atomic, write_text_atomic
    from .cases import load_cases
    from .ci import in_shard, junit_xml, parse_shard
    from .report import render_text
    from .targets import load_targets

    providers, require, case_names = _split(providers), _split(require), _split(case_names)
    _check_names(providers, require, case_names)
    _check_required(require)
    part = parse_shard(shard) if shard else None
    codes, reports = [], []
    targets = [t for t in load_targets(list(paths), config_path, weights, prefix) if in_shard(t.cfg.name, part)]
    progress = _Progress(targets, "verifying", lambda target: target.cfg.name, bar=not quiet)
    for target in progress:
        cases = load_cases(inputs_path, target.cfg) if inputs_path else None
        report = _verify_one(target, providers, case_names, atol, rtol, seed, long_seq, strict_placement, require,
                             test_data, cases)
        text = render_text(report, strict_placement=strict_placement, require=require, verbose=verbose)
        progress.say(text.splitlines()[0] if quiet else text)
        reports.append(report)
        failed = report.runtime_failed(require)
        codes.append(3 if failed else 0 if report.passed(strict_placement=strict_placement, require=require) else 1)
    if json_path:
        write_json_atomic(json_path, {"schema_version": 1, "reports": [r.to_dict() for r in reports]})
    if html_path:
        from .report_html import render_html

        write_text_atomic(html_path, render_html(reports, strict_placement, require))
    if junit_path:
        write_text_atomic(junit_path, junit_xml(reports, strict_placement, require))
    sys.exit(max(codes, default=0))


def _verify_one(target, providers, case_names, atol, rtol, seed, long_seq, strict_placement, require, test_data,
                cases=None):
    """Verify one target; an artifact folder gets report.json/.md and inputs.npz, and its index is renewed."""
    from .ci import export_test_data, write_index
    from .report import write_report
    from .verify import tolerances_for, verify

    report = verify(target.module, target.model, cfg=target.cfg, providers=providers or None,
                    case_names=case_names or None, tolerances=tolerances_for(target.cfg, atol, rtol), seed=seed,
                    long_seq=long_seq, cases=cases)
    if target.folder:
        write_report(report, target.folder, strict_placement, require)
        write_index(target.folder.parent)
    if test_data:
        export_test_data(target, report.inputs, test_data)
    return report


def _check_names(providers: tuple[str, ...], require: tuple[str, ...], case_names: tuple[str, ...]) -> None:
    import onnxruntime

    known = onnxruntime.get_all_providers()
    for name in providers + tuple(r for r in require if not r.startswith(("torch-", "ort-"))):
        if name not in known:
            raise RnnExportError(f"unknown provider {name!r}; known: {', '.join(known)}")
    for name in case_names:
        if name not in CASE_NAMES:
            raise RnnExportError(f"unknown case {name!r}; known: {', '.join(CASE_NAMES)}")


def _check_required(require: tuple[str, ...]) -> None:
    """Fail before any work when a required provider cannot be used here (exit 3)."""
    import torch

    from .runtimes import provider_status

    for name in require:
        if name == "torch-float32-cuda" and not torch.cuda.is_available():
            raise ProviderUnavailable(f"required runner {name} is not available: "
                                      f"torch {torch.__version__} sees no CUDA device")
        reason = None if name.startswith(("torch-", "ort-")) else provider_status(name)
        if reason:
            raise ProviderUnavailable(f"required provider {name} is not available: {reason}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed forward passes per formulation (the median is shown).")
@click.option("--markdown", is_flag=True, help="Print Markdown tables (as in docs/formulations.md).")
def formulations(paths: tuple[Path, ...], repeats: int, markdown: bool) -> None:
    """Show that every formulation of a config's stacked RNN computes the same function.

    native (nn.GRU/LSTM/RNN, num_layers=N), stacked (N single-layer modules), layer_major and time_major
    (cell loops in the two orders) and scripted (TorchScript): max |Δ| from native and from the float64
    oracle on the example shape, time per forward pass, and the sha256 of the exported graph. Exit 0 when
    all agree within the config's tolerance and export the same bytes, 1 otherwise.
    """
    from .formulations import compare_formulations
    from .report import render_formulations

    codes = []
    for cfg in load_configs(list(paths)):
        report = compare_formulations(cfg, repeats=repeats)
        click.echo(render_formulations(report, cfg.tolerance.atol, cfg.tolerance.rtol, markdown) + "\n")
        codes.append(0 if report.passed(cfg.tolerance.atol, cfg.tolerance.rtol) else 1)
    sys.exit(max(codes))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the summary.")
def inspect(path: Path, as_json: bool) -> None:
    """Summarise MODEL.onnx or an artifact folder: cell, layers, sizes, directions, opset, inputs and
    outputs with their dims, op counts, size, sha256, metadata and (for a folder) the manifest check."""
    from .inspection import inspect_path, render_inspect

    info = inspect_path(path)
    click.echo(json.dumps(info, indent=2) if as_json else render_inspect(info))


@main.command()
@click.option("--from-checkpoint", "checkpoint", type=click.Path(path_type=Path), required=True,
              help="A state_dict or checkpoint holding an nn.GRU, nn.LSTM or nn.RNN.")
@click.option("--prefix", help="Key prefix of the recurrent module (e.g. encoder.rnn.); found if alone.")
@click.option("--name", help="The config's name (default: the checkpoint's file stem).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Write the config here (default: print it).")
def init(checkpoint: Path, prefix: str | None, name: str | None, out_path: Path | None) -> None:
    """Write a config from a checkpoint: cell, sizes, layers, directions and bias come from the weights'
    keys and shapes; what cannot be known (batch_first, tanh or relu) is marked in the file."""
    from .artifacts import write_text_atomic
    from .checkpoints import config_toml, infer_config, load_tensors, select_module
    from .config import parse_config

    found, state = select_module(load_tensors(checkpoint), prefix, str(checkpoint))
    raw, notes = infer_config(state, str(checkpoint))
    name = name or checkpoint.stem
    parse_config({"name": name, **raw}, f"--name {name!r}")  # the same checks a config file gets
    text = config_toml(name, raw, notes, f"{checkpoint.name}" + (f" (prefix {found!r})" if found else ""))
    if out_path is None:
        click.echo(text, nl=False)
        return
    if out_path.exists():
        raise RnnExportError(f"{out_path}: already exists; choose another --out or remove it")
    write_text_atomic(out_path, text)
    summary = f"{raw['num_layers']} × {raw['cell']}, hidden {raw['hidden_size']}"
    click.echo(f"wrote {out_path}: {summary}; " + "; ".join(notes))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Also check the graph against this config (one recurrent node per layer).")
def lint(path: Path, config_path: Path | None) -> None:
    """Check any ONNX file for what breaks recurrent models in deployment: recurrent nodes present (one per
    layer), no Loop/Scan or per-step unroll, GRU linear_before_reset=1, layout=0, default activations,
    dynamic seq and batch dims, weights as initializers. One line per finding; exit 1 on any error."""
    from .config import load_config
    from .lint import has_errors, lint_model
    from .verify import load_model_bytes

    layers = load_config(config_path).num_layers if config_path else None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RnnExportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    findings = lint_model(load_model_bytes(data, str(path)), layers)
    for finding in findings:
        click.echo(f"{path}: {finding}")
    errors = sum(f.level == "error" for f in findings)
    click.echo(f"{path}: {errors} error(s), {len(findings) - errors} warning(s)")
    sys.exit(1 if has_errors(findings) else 0)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rounds", type=click.IntRange(min=3), default=7, show_default=True, help="Timed rounds per runner.")
@click.option("--exporters", multiple=True, metavar="NAMES",
              help=f"Exporters to compare (comma-separated; default all): {', '.join(EXPORTERS)}.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write every measurement as JSON.")
def bench(paths: tuple[Path, ...], rounds: int, exporters: tuple[str, ...], json_path: Path | None) -> None:
    """Measure, as ratios within one run: export time of each exporter, PyTorch eager vs ONNX Runtime on our
    graph (1 thread and all cores) and on torch.onnx's graphs, per shape class (example, one streaming step,
    a large batch, a long sequence), the share of this machine's float32 GEMM peak, and verification time.

    PATHS are configs or artifact folders; an artifact's manifest receives the fastest ONNX Runtime
    settings per shape class (runtime_recommendation).
    """
    from .artifacts import MANIFEST_FILE, write_json_atomic
    from .bench import CORES, bench_config, gemm_peak, render_bench
    from .targets import load_targets

    exporters = _split(exporters) or EXPORTERS
    unknown = [e for e in exporters if e not in EXPORTERS]
    if unknown:
        raise RnnExportError(f"unknown exporter {unknown[0]!r}; known: {', '.join(EXPORTERS)}")
    targets = load_targets(list(paths))
    peaks = {1: gemm_peak(1), CORES: gemm_peak(CORES)}
    click.echo(f"float32 GEMM peak: {peaks[1]:.0f} GFLOP/s on 1 thread, {peaks[CORES]:.0f} on {CORES}")
    results = []
    for target in targets:
        result = bench_config(target.cfg, rounds, exporters)
        results.append(result.to_dict())
        click.echo(render_bench(result, peaks))
        if target.folder:
            manifest = json.loads((target.folder / MANIFEST_FILE).read_text())
            manifest["runtime_recommendation"] = result.recommendation
            write_json_atomic(target.folder / MANIFEST_FILE, manifest)
    if json_path:
        write_json_atomic(json_path, {"schema_version": 1, "cores": CORES, "gemm_peak_gflops": peaks,
                                      "configs": results})
