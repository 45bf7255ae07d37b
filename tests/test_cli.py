"""The command line: help on every command, version, and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import SHIPPED

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


@pytest.mark.parametrize(("args", "code"), [(["verify", "--help"], 0), (["verify", "no-such-folder"], 2)])
def test_the_command_exits_with_its_code_after_exit_handlers_and_with_its_output_whole(args, code):
    """``rnnexport`` leaves without the interpreter's teardown (``cli.exit_now``): what an exit owes still happens
    (a library's atexit handler runs, piped output arrives whole and in order) and the code is the command's, as
    when the interpreter exits the usual way."""
    script = ("import atexit, sys; atexit.register(lambda: print('exit handler ran')); "
              "sys.argv = ['rnnexport', *sys.argv[1:]]; from rnnexport.cli import main, run; {}")
    fast, usual = (subprocess.run([sys.executable, "-c", script.format(call), *args], capture_output=True, text=True)
                   for call in ("run()", "main(prog_name='rnnexport')"))
    assert fast.returncode == usual.returncode == code
    assert (fast.stdout, fast.stderr) == (usual.stdout, usual.stderr) and fast.stdout.endswith("exit handler ran\n")
    assert (fast.stderr.startswith("Error: ") if code else fast.stdout.startswith("Usage: rnnexport verify"))


def test_the_command_exits_with_its_code_where_stdout_was_closed():
    """Python sets sys.stdout to None when the process starts with it closed (``>&-``): nothing to flush."""
    done = subprocess.run(["bash", "-c", f"'{sys.executable}' -m rnnexport verify --help >&-"], capture_output=True,
                          text=True)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("option", ["--require", "--providers"])
def test_an_onnx_runtime_provider_without_ort_among_the_runtimes_is_refused_before_any_work(option):
    result = CliRunner().invoke(main, ["verify", str(next(p for p in SHIPPED if p.stem == "rnn_tanh_nobias")), "--runtimes", "openvino", option,
                                       "CPUExecutionProvider"])
    assert result.exit_code == 2
    assert result.output == ("Error: provider CPUExecutionProvider is ONNX Runtime's, and the runner families run "
                             "here (openvino) leave out ort\n")
