"""The ``rnnexport`` command: a thin shell over the library (parse → one call → print → exit).

Exit codes: 0 success · 1 drift over tolerance · 2 bad input (nothing written) · 3 a runtime failed.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from rnnexport._version import __version__
from rnnexport.contract import (
    AUTO_THREADS,
    CASE_NAMES,
    DEFAULT_FAMILIES,
    DEFAULT_THREADS,
    EXPORTERS,
    FAMILIES,
    MAX_THREADS,
    WHOLE_MODEL_CASES,
)
from rnnexport.errors import NOTES

if TYPE_CHECKING:  # for annotations only: each command imports what it runs
    from rnnexport.config import ModelConfig

GOLDEN_FAMILIES = ("ort", "openvino")  # what --golden runs by default: the ONNX runtimes, without PyTorch

EXIT_CODES = "Exit codes: 0 success · 1 drift over tolerance · 2 bad input, nothing written · 3 a runtime failed."


class _Threads(click.ParamType):
    """``--threads``: ``auto`` (in any case) or a whole number from 0 to ``MAX_THREADS``, in ASCII digits (what
    ``engine.thread_plan`` takes)."""

    name = "auto|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip()
        if text.lower() == AUTO_THREADS:
            return AUTO_THREADS
        digits = text.lstrip("0") or "0"  # no "1_0", no other scripts' digits, no number int() refuses to read
        if not (text.isascii() and text.isdigit() and len(digits) <= len(str(MAX_THREADS))
                and int(digits) <= MAX_THREADS):
            self.fail(f"{value!r} is neither {AUTO_THREADS!r} nor a whole number from 0 to {MAX_THREADS}.", param, ctx)
        return int(digits)


class _Group(click.Group):
    """Library errors and usage errors become one ``Error: …`` line and their exit code; libraries'
    warnings stay off stderr (what matters is in our own messages)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            command = f" {exc.ctx.command_path.split(' ', 1)[1]}" if exc.ctx and " " in exc.ctx.command_path else ""
            hint = f" (rnnexport{command} --help)" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        sys.exit(code or 0)

    def invoke(self, ctx: click.Context) -> Any:
        from rnnexport.errors import RnnExportError

        try:
            return super().invoke(ctx)
        except RnnExportError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except ModuleNotFoundError as exc:  # a deploy machine without PyTorch (docs/ci.md): say what needs it
            if exc.name not in ("torch", "onnxscript"):
                raise
            command = ctx.invoked_subcommand or "this command"
            click.echo(f"Error: rnnexport {command} needs PyTorch, which is not installed here (pip install "
                       "'torch>=2.2,<3'); without it, inspect, lint --no-run and verify --golden work", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="rnnexport")
def main() -> None:
    """Export stacked GRU/LSTM/RNN models from PyTorch to ONNX and measure how far they drift.

    \b
    Example:
      rnnexport build configs/ && rnnexport verify artifacts/
    """
    for handler in [h for h in NOTES.handlers if isinstance(h, _NoteLines)]:
        NOTES.removeHandler(handler)
    NOTES.addHandler(_NoteLines())
    NOTES.propagate = False


class _NoteLines(logging.Handler):
    """Prints each of the library's notes (``errors.NOTES``) once per command as a ``note:`` line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text not in self.seen:
            self.seen.add(text)
            click.echo(f"note: {text}")


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


def _split(values: tuple[str, ...], flag: str = "") -> tuple[str, ...]:
    """Accept both ``--x a --x b`` and ``--x a,b``; an empty name (``--x ''``, ``--x a,``) is refused."""
    for value in values:
        if not all(v.strip() for v in value.split(",")):
            raise click.UsageError(f"{flag} {value!r}: expected names, comma-separated")
    return tuple(v.strip() for value in values for v in value.split(","))


def _options(*decorators: Callable) -> Callable:
    """Apply a group of click options in the order written."""
    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function
    return apply


PATHS = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
SHARD = click.option("--shard", metavar="K/N",
                     help="Only the configs of shard K of N (a stable split by name), for a CI matrix of N jobs.")
WEIGHTS = _options(
    click.option("--weights", type=click.Path(path_type=Path),
                 help="A state_dict or checkpoint (torch.save, or a TorchScript archive) to take the weights from."),
    click.option("--prefix",
                 help="Key prefix of the recurrent module in --weights (e.g. encoder.rnn); found if alone."))
QUIET_VERBOSE = _options(click.option("-q", "--quiet", is_flag=True, help="Print only verdicts (or nothing)."),
                         click.option("-v", "--verbose", is_flag=True, help="Print more detail."))


def _seconds(value: float) -> str:
    return f"{value * 1e3:.0f} ms" if value < 1 else f"{value:.1f} s"


@main.command()
@PATHS
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True,
              help="Folder that receives one artifact folder per config.")
@click.option("--check", is_flag=True,
              help="Write nothing: rebuild in memory and compare with --out byte for byte; exit 1 on any difference.")
@SHARD
@click.option("--exporter", type=click.Choice(EXPORTERS), default="native", show_default=True,
              help="rnnexport's own writer, or PyTorch's exporters for comparison.")
@WEIGHTS
@click.option("--reseed", is_flag=True,
              help="Allow replacing an artifact built from a weights file with the config's seeded weights.")
@click.option("--variants", multiple=True, metavar="NAMES",
              help="Deployment variants to build beside model.onnx, besides the config's own: fp16-weights, "
                   "int8-dynamic (comma-separated or repeated).")
@QUIET_VERBOSE
def build(paths: tuple[Path, ...], out: Path, check: bool, shard: str | None, exporter: str, weights: Path | None,
          prefix: str | None, reseed: bool, variants: tuple[str, ...], quiet: bool, verbose: bool) -> None:
    """Build an artifact (model.onnx, weights.pt, manifest.json) for each config.

    PATHS are config files or folders of them. Every config is validated before anything is written;
    --out/index.json lists every artifact afterwards. Weights come from the config's [weights] table (a
    file and prefix), from --weights (one config only), or from the config's seed.

    \b
    Examples:
      rnnexport build configs/
      rnnexport build configs/mine.toml --weights ckpt.pt --prefix encoder.rnn
      rnnexport build configs/ --check
      rnnexport build configs/ --variants fp16-weights,int8-dynamic
    """
    from rnnexport.artifacts.build import BuildOptions, build_configs, check_configs
    from rnnexport.artifacts.index import in_shard, parse_shard
    from rnnexport.config import load_configs, parse_variants

    part = parse_shard(shard) if shard is not None else None
    chosen = parse_variants(list(_split(variants, "--variants")), "--variants")
    configs = [c for c in load_configs(list(paths)) if in_shard(c.name, part)]
    options = BuildOptions(out=out, exporter=exporter, weights=weights, prefix=prefix, reseed=reseed,
                           variants=chosen)
    progress = _Progress(configs, "checking" if check else "building", lambda cfg: cfg.name, bar=not quiet)
    if check:
        def say_result(cfg: ModelConfig, found: list[str]) -> None:
            if not quiet:
                progress.say(f"{'differs' if found else 'up to date'}: {cfg.name}")

        problems = check_configs(progress, options, on_result=say_result)
        for problem in problems:
            click.echo(f"✗ {problem}", err=True)
        sys.exit(1 if problems else 0)
    done = []
    for built in build_configs(progress, options):
        done.append(built)
        if not quiet:
            cfg = built.cfg
            progress.say(f"built {cfg.name}: {built.folder} ({cfg.num_layers} × {cfg.cell}, opset {cfg.opset}, "
                         f"{built.model_bytes / 1024:.1f} KiB) in {_seconds(built.seconds)}")
            for note in built.notes:
                progress.say(f"  note: {note}")
        if verbose and not quiet:
            from rnnexport.graph.inspection import inspect_path, render_inspect

            progress.say(render_inspect(inspect_path(built.folder)))
    if not quiet and done:
        size = sum(b.model_bytes for b in done) / 1024
        click.echo(f"summary: built {len(done)} artifact(s) into {out} ({size:.1f} KiB of model.onnx); "
                   f"index: {out / 'index.json'}")


def _run_options(cases: tuple[str, ...]) -> Callable:
    """The options every verifying command takes (verify, export-model), with the case names it offers."""
    return _options(
        click.option("--runtimes", multiple=True, metavar="NAMES",
                     help=f"Runner families to run (comma-separated): {', '.join(FAMILIES)}. Default: "
                          f"{', '.join(DEFAULT_FAMILIES)}."),
        click.option("--providers", multiple=True, metavar="NAMES",
                     help="ONNX Runtime providers to run (comma-separated). Default: CPU and CUDA (and TensorRT if "
                          "present)."),
        click.option("--require", multiple=True, metavar="NAMES",
                     help="Providers or runners that must be available; a missing one exits 3."),
        click.option("--cases", "case_names", multiple=True, metavar="NAMES",
                     help=f"Cases to run (comma-separated; default all that apply): {', '.join(cases)}."),
        click.option("--atol", type=float, help="Absolute tolerance (overrides the config's, CPU and CUDA)."),
        click.option("--rtol", type=float, help="Relative tolerance, times max|oracle| per output."),
        click.option("--strict-placement", is_flag=True,
                     help="Fail when a recurrent node falls back to another provider."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the input cases."),
        click.option("--threads", type=_Threads(), default=DEFAULT_THREADS, show_default=True,
                     help="Threads of PyTorch and of every runtime. auto: one each (fastest on a shared machine), "
                          "the next runners opened on a second core while one runs; N: N each (0: each one's own "
                          "default, all cores); 1 keeps verify to one busy thread."),
        click.option("--shape", "shapes", multiple=True, metavar="seq=N,batch=M",
                     help="Add a case of this shape to the standard set (repeatable)."),
        QUIET_VERBOSE)


REPORT_OPTIONS = _options(
    click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write every report as one JSON file."),
    click.option("--html", "html_path", type=click.Path(path_type=Path),
                 help="Write a self-contained HTML report with drift plots (plots need rnnexport[plots])."),
    click.option("--junit", "junit_path", type=click.Path(path_type=Path),
                 help="Write a JUnit XML report (one test case per model × runner × case)."))


@main.command()
@PATHS
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config of a bare MODEL.onnx.")
@WEIGHTS
@_run_options(CASE_NAMES)
@click.option("--inputs", "inputs_path", type=click.Path(path_type=Path),
              help="Replay the cases saved in an inputs.npz (instead of generating them).")
@click.option("--long-seq", type=click.IntRange(min=1, max=100_000), default=1024, show_default=True,
              help="Steps of the 'long' case.")
@REPORT_OPTIONS
@click.option("--export-test-data", "test_data", type=click.Path(path_type=Path),
              help="Write each model and its cases in ONNX's test-case layout (input_K.pb, output_K.pb).")
@click.option("--save-golden", "save_golden", type=click.Path(path_type=Path),
              help="Save each case's inputs and the oracle's outputs, to compare against later without PyTorch.")
@click.option("--golden", type=click.Path(path_type=Path),
              help="Compare ONNX Runtime and OpenVINO against outputs saved with --save-golden; imports no torch.")
@click.option("--record", is_flag=True,
              help="Write the artifacts' reports and index.json even when --cases, --runtimes, --providers, --atol or "
                   "--rtol narrow the run (the report lists them under what_if); without it such a run leaves them.")
@click.option("--per-layer", is_flag=True,
              help="Compare every recurrent node with PyTorch's layer, also when nothing fails (always on failure).")
@SHARD
def verify(paths: tuple[Path, ...], config_path: Path | None, weights: Path | None, prefix: str | None,
           runtimes: tuple[str, ...], providers: tuple[str, ...], require: tuple[str, ...],
           case_names: tuple[str, ...], atol: float | None, rtol: float | None, strict_placement: bool, seed: int,
           threads: int | str, inputs_path: Path | None, long_seq: int, json_path: Path | None, html_path: Path | None,
           junit_path: Path | None, test_data: Path | None, shapes: tuple[str, ...], save_golden: Path | None,
           golden: Path | None, record: bool, per_layer: bool, shard: str | None, quiet: bool, verbose: bool) -> None:
    """Run the same inputs through PyTorch, ONNX Runtime and OpenVINO and measure drift against a float64 oracle.

    PATHS are artifact folders (their manifest is checked first), folders of artifacts or configs, config
    files (built in memory), or MODEL.onnx with --config and --weights. An artifact folder receives
    report.json, report.md and inputs.npz. Every output is written only once every model has been verified.

    \b
    Examples:
      rnnexport verify artifacts/
      rnnexport verify configs/gru_2layer.toml --runtimes ort,openvino --cases example,long
      rnnexport verify artifacts/ --require CUDAExecutionProvider --strict-placement --json all.json
      rnnexport verify artifacts/gru_2layer --shape seq=300,batch=7 --per-layer
      rnnexport verify artifacts/ --save-golden golden/      (then, on a machine without PyTorch:)
      rnnexport verify artifacts/ --golden golden/
    """
    from rnnexport.artifacts.index import in_shard, parse_shard
    from rnnexport.jobs import Outputs, VerifyOptions, check_names, exit_code, parse_shape, verify_targets
    from rnnexport.report.text import render_text, verdict_line

    families = _split(runtimes, "--runtimes") or (GOLDEN_FAMILIES if golden else DEFAULT_FAMILIES)
    options = VerifyOptions(providers=_split(providers, "--providers"), runtimes=families,
                            case_names=_split(case_names, "--cases"), atol=atol, rtol=rtol, seed=seed,
                            long_seq=long_seq, threads=threads, inputs=inputs_path, strict_placement=strict_placement,
                            require=_split(require, "--require"), per_layer=per_layer, record=record,
                            shapes=tuple(parse_shape(s) for s in shapes))
    check_names(options)
    outputs = Outputs(json=json_path, html=html_path, junit=junit_path, test_data=test_data, golden=save_golden)
    outputs.check()
    part = parse_shard(shard) if shard is not None else None
    if golden is not None:
        from rnnexport.verification.golden import golden_targets

        if config_path or weights or prefix:
            raise click.UsageError("--config, --weights and --prefix do not go with --golden (the golden folder "
                                   "holds the config)")
        found = golden_targets(list(paths), golden)
    else:
        from rnnexport.artifacts.targets import load_targets

        found = load_targets(list(paths), config_path, weights, prefix)
    targets = [t for t in found if in_shard(t.cfg.name, part)]
    if not targets and not quiet:
        click.echo(f"note: shard {shard} holds none of the {len(found)} model(s); nothing to verify")
    progress = _Progress(targets, "verifying", lambda target: target.cfg.name, bar=not quiet)

    def show(report, verdict) -> None:
        progress.say(verdict_line(report, verdict) if quiet else render_text(report, verdict, verbose))

    judged = verify_targets(targets, options, outputs, on_result=show, each=lambda _: progress)
    if not quiet and judged:
        passed = sum(v.passed for _, v in judged)
        folders = sum(1 for t in targets if t.folder) if record or not options.what_if() else 0
        written = [str(p) for p in (json_path, html_path, junit_path, test_data, save_golden) if p]
        click.echo(f"summary: verified {len(judged)} model(s): {passed} passed, {len(judged) - passed} failed"
                   + (f"; report.json in {folders} artifact folder(s)" if folders else "")
                   + (f"; wrote {', '.join(written)}" if written else ""))
    if targets and not any(t.folder or t.golden for t in targets) and not quiet:
        click.echo("note: configs and bare .onnx files are verified in memory, so no report.json was written; build "
                   "them (rnnexport build) and verify the artifact folders to keep one, or pass --json")
    if any(t.folder for t in targets) and options.what_if() and not record and not quiet:
        click.echo(f"note: a what-if run ({', '.join(options.what_if())}): the artifacts' report.json and index.json "
                   "are left as they are; --json, --html and --junit take the results")
    sys.exit(exit_code(judged))


@main.command()
@PATHS
@WEIGHTS
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed forward passes per formulation (the median is shown).")
@click.option("--markdown", is_flag=True, help="Print Markdown tables (as in docs/formulations.md).")
def formulations(paths: tuple[Path, ...], weights: Path | None, prefix: str | None, repeats: int,
                 markdown: bool) -> None:
    """Show that every formulation of a config's stacked RNN computes the same function.

    native (nn.GRU/LSTM/RNN, num_layers=N), stacked (N single-layer modules), layer_major and time_major
    (cell loops in the two orders) and scripted (TorchScript): max |Δ| from native and from the float64
    oracle on the example shape, time per forward pass, and the sha256 of the exported graph. Exit 0 when
    all agree within the config's tolerance and export the same bytes, 1 otherwise. With --weights (one
    config), the formulations hold your own weights.

    \b
    Examples:
      rnnexport formulations configs/gru_2layer.toml
      rnnexport formulations configs/mine.toml --weights ckpt.pt --prefix decoder.cells
    """
    from rnnexport.jobs import compare_configs

    codes = []
    for text, passed in compare_configs(list(paths), weights, prefix, repeats, markdown):
        click.echo(text + "\n")
        codes.append(0 if passed else 1)
    sys.exit(max(codes))


@main.command()
@PATHS
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the summary (a list for several).")
def inspect(paths: tuple[Path, ...], as_json: bool) -> None:
    """Summarise MODEL.onnx files or artifact folders (a folder of them stands for those inside): cell, layers,
    sizes, directions, opset, inputs and outputs with their dims, op counts, size, sha256, metadata and (for a
    folder) the manifest check. Needs no PyTorch.

    \b
    Examples:
      rnnexport inspect artifacts/gru_2layer --json
      rnnexport inspect artifacts/
    """
    from rnnexport.graph.inspection import inspect_path, render_inspect
    from rnnexport.graph.reader import model_paths

    infos = [inspect_path(path) for path in model_paths(list(paths))]
    if as_json:
        click.echo(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
    else:
        click.echo("\n\n".join(render_inspect(info) for info in infos))


@main.command()
@click.option("--from-checkpoint", "checkpoint", type=click.Path(path_type=Path), required=True,
              help="A state_dict or checkpoint holding an nn.GRU/LSTM/RNN, or GRUCell/LSTMCell/RNNCell stack.")
@click.option("--prefix", help="Key prefix of the recurrent module (e.g. encoder.rnn); found if alone.")
@click.option("--name", help="The config's name (default: --out's file stem, else the checkpoint's).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Write the config here (default: print it).")
def init(checkpoint: Path, prefix: str | None, name: str | None, out_path: Path | None) -> None:
    """Write a config from a checkpoint: cell, sizes, layers, directions and bias come from the weights'
    keys and shapes, and a [weights] table points at the file so every build uses it; what cannot be known
    (batch_first, tanh or relu) is marked in the file.

    \b
    Example:
      rnnexport init --from-checkpoint ckpt.pt --prefix encoder.rnn --out configs/mine.toml
    """
    from rnnexport.export.checkpoints import write_init_config

    text, summary = write_init_config(checkpoint, prefix, name, out_path)
    click.echo(text if out_path is None else f"wrote {out_path}: {summary}", nl=out_path is not None)


@main.command()
@PATHS
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Also check the graph against this config (cell, sizes, layers, directions, inputs).")
@click.option("--run/--no-run", default=None,
              help="Run the graph in ONNX Runtime at two sequence lengths and two batch sizes "
                   "[default: when its inputs can be synthesised].")
def lint(paths: tuple[Path, ...], config_path: Path | None, run: bool | None) -> None:
    """Check ONNX files or artifact folders (a folder of them stands for those inside) for what breaks recurrent
    models in deployment: recurrent nodes present (one per layer), no Loop/Scan or per-step unroll, GRU
    linear_before_reset=1, layout=0, default activations, dynamic seq and batch dims, weights as initializers,
    sequence_lens portability, nothing PyTorch cannot express (peepholes, clip, input_forget, …), in every
    subgraph (If/Loop/Scan bodies, functions), with the path of each node. Which inputs are sequences is read
    from the graph, not from names. An artifact folder's variants (model.fp16-weights.onnx, …) are checked too.
    One line per finding; exit 1 on any error. With --no-run it needs no PyTorch.

    \b
    Examples:
      rnnexport lint artifacts/gru_2layer --config configs/gru_2layer.toml
      rnnexport lint artifacts/
      rnnexport lint downloaded.onnx --no-run
    """
    from rnnexport.config import load_config
    from rnnexport.graph.lint import has_errors, lint_path
    from rnnexport.graph.reader import model_paths

    cfg = load_config(config_path) if config_path else None
    failed = False
    for path in model_paths(list(paths)):
        for file, findings in lint_path(path, cfg, run):
            shown = file if file == path else path / file.name
            for finding in findings:
                click.echo(f"{shown}: {finding}")
            errors, warned = (sum(f.level == level for f in findings) for level in ("error", "warning"))
            click.echo(f"{shown}: {errors} error(s), {warned} warning(s)")
            failed = failed or has_errors(findings)
    sys.exit(1 if failed else 0)


@main.command("export-model")
@click.argument("factory")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder that receives model.onnx, report.json and report.md.")
@click.option("--onnx", "onnx_file", type=click.Path(path_type=Path),
              help="Verify this ONNX file of the model (from any exporter) instead of exporting one.")
@_run_options(WHOLE_MODEL_CASES)
@REPORT_OPTIONS
def export_model_command(factory: str, out: Path, onnx_file: Path | None, runtimes: tuple[str, ...],
                         providers: tuple[str, ...], require: tuple[str, ...], case_names: tuple[str, ...],
                         atol: float | None, rtol: float | None, strict_placement: bool, seed: int, threads: int | str,
                         shapes: tuple[str, ...], quiet: bool, verbose: bool, json_path: Path | None,
                         html_path: Path | None, junit_path: Path | None) -> None:
    """Export a whole model (an embedding, convolutions, heads… around GRU/LSTM/RNN layers or their cells) with its
    recurrent layers as native nodes and the rest by torch.onnx's dynamo exporter, then verify it at the standard
    shapes (example, seq 1, batch 1, 10× the steps, another batch) against PyTorch and the float64 oracle.

    FACTORY is package.module:function, importable from the current folder, returning rnnexport.WholeModel.
    The run and report options are verify's.

    \b
    Examples:
      rnnexport export-model mymodels:tagger --out exported/tagger
      rnnexport export-model mymodels:tagger --onnx theirs.onnx --out checked/theirs
      rnnexport export-model mymodels:tagger --out exported/tagger --require ort-cpu --junit junit.xml
    """
    from rnnexport.jobs import Outputs, VerifyOptions, check_names, export_whole_model, parse_shape
    from rnnexport.report.text import render_text, verdict_line

    options = VerifyOptions(providers=_split(providers, "--providers"),
                            runtimes=_split(runtimes, "--runtimes") or DEFAULT_FAMILIES,
                            case_names=_split(case_names, "--cases"), atol=atol, rtol=rtol, seed=seed,
                            threads=threads, strict_placement=strict_placement, require=_split(require, "--require"),
                            shapes=tuple(parse_shape(s) for s in shapes))
    check_names(options, WHOLE_MODEL_CASES)
    outputs = Outputs(json=json_path, html=html_path, junit=junit_path)
    report, verdict = export_whole_model(factory, out, options, outputs, onnx_file)
    click.echo(verdict_line(report, verdict) if quiet else render_text(report, verdict, verbose))
    sys.exit(verdict.exit_code)


@main.command()
@PATHS
@click.option("--rounds", type=click.IntRange(min=3, max=1000), default=7, show_default=True,
              help="Timed rounds per runner (3 to 1000).")
@click.option("--exporters", multiple=True, metavar="NAMES",
              help=f"Exporters to compare (comma-separated; default all): {', '.join(EXPORTERS)}.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write every measurement as JSON.")
def bench(paths: tuple[Path, ...], rounds: int, exporters: tuple[str, ...], json_path: Path | None) -> None:
    """Measure, as ratios within one run: export time of each exporter, PyTorch eager vs ONNX Runtime on our
    graph (1 thread and all cores) and on torch.onnx's graphs, per shape class (example, one streaming step,
    a large batch, a long sequence), the share of this machine's float32 GEMM peak, and verification time.

    PATHS are configs or artifact folders; an artifact's manifest receives the fastest ONNX Runtime
    settings per shape class (runtime_recommendation).

    \b
    Example:
      rnnexport bench configs/gru_2layer.toml --rounds 9 --json bench.json
    """
    from rnnexport.jobs import bench_targets

    for line in bench_targets(list(paths), rounds, _split(exporters, "--exporters") or EXPORTERS, json_path):
        click.echo(line)


def run() -> NoReturn:
    """The ``rnnexport`` console script and ``python -m rnnexport``: ``main``, then ``exit_now`` with its code.
    An error ``main`` does not turn into a code (a bug) leaves through Python's own exit, traceback and all."""
    try:
        main(prog_name="rnnexport")
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            raise
        exit_now(exc.code or 0)
    exit_now(0)


def exit_now(code: int) -> NoReturn:
    """Leave with ``code`` as Python's exit would, without the interpreter's teardown: with PyTorch loaded that
    teardown takes about 0.45 s (measured on ``import torch`` alone), a twentieth of verifying the shipped
    artifacts. What an exit owes still happens, by the interpreter's own calls in its order (``Py_FinalizeEx``):
    thread pools are shut down and other non-daemon threads joined, ``atexit`` handlers run (logging, temporary
    files, coverage), stdout and stderr are flushed; a flush that fails (a reader gone) gives 120, as Python's
    does. Every file rnnexport writes is complete and closed before a command returns. It exits the usual way
    where a profiler or tracer watches (``python -m cProfile`` writes its figures after the teardown began) and
    where this Python lacks those calls (they are not in its documented interface)."""
    shutdown, run_exitfuncs = getattr(threading, "_shutdown", None), getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exitfuncs is None or sys.getprofile() or sys.gettrace():
        sys.exit(code)
    shutdown()
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None where the process was started with it closed
                stream.flush()
        except (OSError, ValueError):  # a closed pipe (BrokenPipeError), or a stream closed already
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    run()
