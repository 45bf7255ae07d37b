"""The ``rnnexport`` command: a thin shell over the library. Exit codes:

0 success · 1 drift over tolerance · 2 bad input (nothing written) · 3 a runtime failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import load_configs
from .errors import RnnExportError


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


@contextmanager
def _progress(items: list[Any], label: str, quiet: bool = False) -> Iterator[Iterable[Any]]:
    """A progress bar on a terminal with several items; a plain iteration (one line per item) otherwise."""
    if quiet or len(items) < 2 or not sys.stderr.isatty():
        yield items
        return
    with click.progressbar(items, label=label, file=sys.stderr, item_show_func=lambda c: c and c.name) as bar:
        yield bar


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True,
              help="Folder that receives one artifact folder per config.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def build(paths: tuple[Path, ...], out: Path, quiet: bool) -> None:
    """Build an artifact (model.onnx, weights.pt, manifest.json) for each config.

    PATHS are config files or folders of them. Every config is validated before anything is written.
    """
    from .pipeline import build_artifact

    configs = load_configs(list(paths))
    with _progress(configs, "building", quiet) as items:
        for cfg in items:
            start = time.perf_counter()
            folder = build_artifact(cfg, out)
            if not quiet:
                size = (folder / "model.onnx").stat().st_size
                click.echo(f"built {cfg.name}: {folder} ({cfg.num_layers} × {cfg.cell}, opset {cfg.opset}, "
                           f"{size / 1024:.1f} KiB) in {time.perf_counter() - start:.2f} s")
