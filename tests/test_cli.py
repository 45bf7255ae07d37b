"""The command line: help on every command, version, and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from rnnexport import __version__
from rnnexport.cli import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert (result.exit_code, result.output) == (0, f"rnnexport, version {__version__}\n")


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: main {command} [OPTIONS]")
    summary = main.commands[command].help.split("\n")[0]
    assert summary in " ".join(result.output.split())  # click wraps long lines


def test_usage_error_exits_2():
    result = CliRunner().invoke(main, ["build"])
    assert result.exit_code == 2
    assert "Error: Missing argument 'PATHS...'." in result.output


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "rnnexport", "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("Usage: rnnexport [OPTIONS] COMMAND [ARGS]...")
