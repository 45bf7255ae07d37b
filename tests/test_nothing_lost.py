"""Nothing lost, ever: folders that are not ours survive, reports match their model, and the inputs this
round's review found each give one Error: line, exit 2 (3 for a runtime), nothing written.

Expectations are written by hand: the exit code and the words of each error line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import SHIPPED, tree_snapshot

from rnnexport.artifacts.build import build_artifact
from rnnexport.artifacts.folders import STAGING_MARK, STAGING_TEXT, TMP_PREFIX, load_artifact
from rnnexport.cli import main
from rnnexport.config import load_config

GRU = SHIPPED[0]
BASE = 'cell = "gru"\ninput_size = 4\nhidden_size = 8\n'


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _user_folder(path: Path) -> dict[str, bytes]:
    (path / "src").mkdir(parents=True)
    (path / "src" / "main.py").write_text("print('my work')\n")
    (path / "notes.txt").write_text("do not delete\n")
    return tree_snapshot(path)


def test_build_never_replaces_a_folder_that_is_not_an_artifact(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "src.toml").write_text(f'name = "src"\n{BASE}')
    before = _user_folder(tmp_path / "src")
    code, output = _run("build", configs, "--out", tmp_path)
    assert (code, output) == (2, f"Error: {tmp_path / 'src'}: exists and is not an rnnexport artifact; refusing to "
                                 "replace it (move it away, or choose another --out)\n")
    assert tree_snapshot(tmp_path / "src") == before
    assert not (tmp_path / "index.json").exists()


def test_a_config_named_like_its_own_folder_cannot_replace_it(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "configs.toml").write_text(BASE)
    before = tree_snapshot(configs)
    assert _run("build", configs, "--out", tmp_path)[0] == 2
    assert tree_snapshot(configs) == before


def test_export_test_data_never_replaces_a_user_folder(tmp_path):
    artifact = build_artifact(load_config(GRU), tmp_path / "out")
    before = _user_folder(tmp_path / "data" / "gru_2layer")
    code, output = _run("verify", artifact, "--cases", "example", "--export-test-data", tmp_path / "data")
    assert code == 2 and output.startswith(f"Error: {tmp_path / 'data' / 'gru_2layer'}: exists and is not ONNX test "
                                           "data written by rnnexport")
    assert tree_snapshot(tmp_path / "data" / "gru_2layer") == before
    assert not (artifact / "report.json").exists()  # refused before any work
    assert _run("verify", artifact, "--cases", "example", "--export-test-data", tmp_path / "fresh")[0] == 0
    assert _run("verify", artifact, "--cases", "example", "--export-test-data", tmp_path / "fresh")[0] == 0


def test_build_over_an_artifact_still_works_and_cleans_a_killed_verify(tmp_path):
    artifact = build_artifact(load_config(GRU), tmp_path)
    left = artifact / f"{TMP_PREFIX}999999999-out-x"  # pid 999999999: a process that is gone
    left.mkdir()
    (left / STAGING_MARK).write_text(STAGING_TEXT)
    (left / "0-report.json").write_bytes(b"left by a killed verify")
    assert _run("verify", artifact, "--cases", "example", "--record")[0] == 0
    assert not list(artifact.glob(f"{TMP_PREFIX}*"))
    assert _run("build", GRU, "--out", tmp_path)[0] == 0


def test_a_users_file_named_like_a_staging_folder_is_kept(tmp_path):
    """Only folders that carry rnnexport's mark inside are ever removed as leftovers."""
    artifact = build_artifact(load_config(GRU), tmp_path)
    notes = tmp_path / f"{TMP_PREFIX}999999999-notes"
    notes.write_text("mine")
    lookalike = tmp_path / f"{TMP_PREFIX}999999999-out-y"
    lookalike.mkdir()
    (lookalike / "data.txt").write_text("also mine")
    assert _run("verify", artifact, "--cases", "example", "--record", "--json", tmp_path / "all.json")[0] == 0
    assert _run("build", GRU, "--out", tmp_path)[0] == 0
    assert notes.read_text() == "mine" and (lookalike / "data.txt").read_text() == "also mine"


RACE = r"""
import sys
from pathlib import Path
from rnnexport.config import load_config
from rnnexport.jobs import VerifyOptions, verify_targets
from rnnexport.artifacts.targets import load_targets
try:
    verify_targets(load_targets([Path(sys.argv[1])]), VerifyOptions(runtimes=("torch", "ort"), long_seq=int(sys.argv[2]),
                                                                         record=True))
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.slow
def test_verify_during_a_rebuild_never_reports_on_a_model_it_did_not_verify(tmp_path):
    cfg_path = tmp_path / "m.toml"
    seeds = [1, 2, 3, 4, 5, 6]
    cfg_path.write_text(f'name = "m"\n{BASE}seed = 0\n')
    build_artifact(load_config(cfg_path), tmp_path / "out")
    artifact = tmp_path / "out" / "m"
    for seed in seeds:
        verifier = subprocess.Popen([sys.executable, "-c", RACE, str(artifact), "20000"], stdout=subprocess.PIPE,
                                    text=True)
        cfg_path.write_text(f'name = "m"\n{BASE}seed = {seed}\n')
        build_artifact(load_config(cfg_path), tmp_path / "out")  # replaces the model while it is verified
        verifier.communicate(timeout=300)
        manifest = json.loads((artifact / "manifest.json").read_text())
        model_sha = manifest["files"]["model.onnx"]["sha256"]
        report = artifact / "report.json"
        assert not report.exists() or json.loads(report.read_text())["model_sha256"] == model_sha
        from rnnexport.artifacts.index import write_index

        entry = json.loads(write_index(tmp_path / "out").read_text())["artifacts"][0]
        assert entry["model_sha256"] == model_sha
        assert not entry["verified"] or json.loads(report.read_text())["model_sha256"] == model_sha


def test_every_output_path_is_checked_before_any_work(tmp_path):
    artifact = build_artifact(load_config(GRU), tmp_path / "out")
    (tmp_path / "file").write_text("x")
    before = tree_snapshot(tmp_path)
    cases = [
        (["--json", tmp_path], f"--json {tmp_path}: is a folder; expected a file name"),
        (["--html", tmp_path], f"--html {tmp_path}: is a folder; expected a file name"),
        (["--json", tmp_path / "missing" / "sub" / "x.json"],
         f"--json {tmp_path / 'missing' / 'sub' / 'x.json'}: the folder {tmp_path / 'missing' / 'sub'} does not exist"),
        (["--export-test-data", tmp_path / "file"], f"--export-test-data {tmp_path / 'file'}: is a file; expected a folder"),
    ]
    for args, message in cases:
        assert _run("verify", artifact, "--cases", "example", *args) == (2, f"Error: {message}\n")
    assert tree_snapshot(tmp_path) == before


def _write(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def _external_data_model(tmp: Path, location: str) -> Path:
    model = onnx.load(build_artifact(load_config(GRU), tmp / "a") / "model.onnx")
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    onnx.save(model, tmp / "m.onnx")
    return tmp / "m.onnx"


def _huge_initializer(tmp: Path) -> Path:
    model = onnx.load(build_artifact(load_config(GRU), tmp / "a") / "model.onnx")
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    del tensor.dims[:]
    tensor.dims.extend([1 << 29])
    onnx.save(model, tmp / "m.onnx")
    return tmp / "m.onnx"


def _checkpoint(tmp: Path, state: dict) -> Path:
    torch.save(state, tmp / "w.pt")
    return tmp / "w.pt"


def _gru_state() -> dict:
    return dict(torch.nn.GRU(16, 32, 2).state_dict())


# (id, setup(tmp) -> CLI args, expected line after "Error: " with {tmp}, exit code)
CATALOGUE = [
    ("config_named_index_json", lambda t: ["build", _write(t, "c.toml", f'name = "index.json"\n{BASE}'), "--out", t / "o"],
     "{tmp}/c.toml: key 'name': 'index.json' is not allowed; expected a name other than those of the files rnnexport "
     "writes (index.json, model.onnx, weights.pt, manifest.json, report.json, report.md, inputs.npz, "
     "model.fp16-weights.onnx, model.int8-dynamic.onnx)", 2),
    ("config_rtol_inf", lambda t: ["build", _write(t, "c.toml", BASE + "[tolerance]\nrtol = inf\n"), "--out", t / "o"],
     "{tmp}/c.toml: key 'tolerance.rtol': inf is not allowed; expected a finite, non-negative number", 2),
    ("config_fifo", lambda t: (os.mkfifo(t / "c.toml"), ["build", t / "c.toml", "--out", t / "o"])[1],
     "{tmp}/c.toml: not a regular file (a device, a pipe or a socket); expected a .toml file", 2),
    ("config_dev_zero", lambda t: ((t / "c.toml").symlink_to("/dev/zero"), ["build", t / "c.toml", "--out", t / "o"])[1],
     "{tmp}/c.toml: not a regular file (a device, a pipe or a socket); expected a .toml file", 2),
    ("verify_atol_nan", lambda t: ["verify", GRU, "--atol", "nan"], "--atol nan: expected a finite, non-negative number", 2),
    ("verify_rtol_overflow", lambda t: ["verify", GRU, "--rtol", "1e400"],
     "--rtol inf: expected a finite, non-negative number", 2),
    ("verify_long_seq_huge", lambda t: ["verify", GRU, "--long-seq", "1000000000000"],
     "Invalid value for '--long-seq': 1000000000000 is not in the range 1<=x<=100000. (rnnexport verify --help)", 2),
    ("usage_one_line", lambda t: ["build"], "Missing argument 'PATHS...'. (rnnexport build --help)", 2),
    ("shape_too_large", lambda t: ["verify", GRU, "--shape", "seq=1000000,batch=65536"],
     "--shape 'seq=1000000,batch=65536': expected seq=N,batch=M with 1 ≤ N ≤ 1000000, 1 ≤ M ≤ 65536 and N × M ≤ "
     "10,000,000 (the oracle's outputs must fit in memory)", 2),
    ("shape_twice", lambda t: ["verify", GRU, "--shape", "seq=3,batch=2,seq=4"],
     "--shape 'seq=3,batch=2,seq=4': expected seq=N,batch=M (for example seq=300,batch=7)", 2),
    ("shape_junk", lambda t: ["verify", GRU, "--shape", "seq=3,batch=2,junk"],
     "--shape 'seq=3,batch=2,junk': expected seq=N,batch=M (for example seq=300,batch=7)", 2),
    ("shard_empty", lambda t: ["build", GRU, "--out", t / "o", "--shard", ""],
     "--shard '': expected K/N with 1 <= K <= N, for example 2/4", 2),
    ("bench_rounds_huge", lambda t: ["bench", GRU, "--rounds", str(10**12)],
     f"Invalid value for '--rounds': {10**12} is not in the range 3<=x<=1000. (rnnexport bench --help)", 2),
    ("cases_none_apply", lambda t: ["verify", GRU, "--cases", "ragged"],
     "gru_2layer: none of the chosen cases applies (ragged: no sequence_lens input)", 2),
    ("verify_symlinked_artifact",
     lambda t: ((t / "link").symlink_to(build_artifact(load_config(GRU), t / "out")), ["verify", t / "link"])[1],
     "{tmp}/link: is a symbolic link; verify an artifact folder itself, not a link to one", 2),
    ("manifest_schema_true", lambda t: _manifest_edit(t, schema_version=True),
     "{tmp}/out/gru_2layer/manifest.json: schema_version True is not supported; this rnnexport reads 1", 2),
    ("lint_external_absolute", lambda t: ["lint", _external_data_model(t, "/etc/passwd")],
     "{tmp}/m.onnx: initializer 'W_0' keeps its data at '/etc/passwd', outside the model's folder; only files beside "
     "the model are read", 2),
    ("lint_external_parent", lambda t: ["lint", _external_data_model(t, "../x.bin")],
     "{tmp}/m.onnx: initializer 'W_0' keeps its data at '../x.bin', outside the model's folder; only files beside "
     "the model are read", 2),
    ("lint_external_missing", lambda t: ["lint", _external_data_model(t, "w.bin")],
     "{tmp}/m.onnx: initializer 'W_0': external data file 'w.bin' is missing", 2),
    ("lint_huge_initializer", lambda t: ["lint", _huge_initializer(t)],
     "{tmp}/m.onnx: initializer 'W_0' declares 536,870,912 elements (dims [536870912]) but holds 0", 2),
    ("checkpoint_colliding_keys", lambda t: ["init", "--from-checkpoint",
                                             _checkpoint(t, {"a": _gru_state(), "a.weight_ih_l0": torch.zeros(3)})],
     "{tmp}/w.pt: the key 'a.weight_ih_l0' appears twice once nested dicts are flattened (a key with dots beside a "
     "nested dict of the same path)", 2),
    ("weights_complex", lambda t: _verify_with(t, {**_gru_state(), "weight_ih_l0": torch.zeros(96, 16, dtype=torch.complex64)}),
     "{tmp}/w.pt: weight_ih_l0 is torch.complex64; complex weights cannot be exported", 2),
    ("weights_int", lambda t: _verify_with(t, {**_gru_state(), "bias_hh_l1": torch.zeros(96, dtype=torch.int64)}),
     "{tmp}/w.pt: bias_hh_l1 is torch.int64, not a floating-point weight", 2),
    ("init_incomplete_bidirectional", lambda t: ["init", "--from-checkpoint", _checkpoint(
        t, {k: v for k, v in torch.nn.GRU(3, 4, 2, bidirectional=True).state_dict().items()
            if k != "weight_hh_l1_reverse"})],
     "{tmp}/w.pt: incomplete recurrent weights under '(top level)': missing weight_hh_l1_reverse", 2),
    ("replayed_bad_case_name", lambda t: _replay(t, "a|b"),
     "{tmp}/in.npz: case name 'a|b' is not allowed; expected letters, digits, '.', '_' or '-'", 2),
]


def _manifest_edit(tmp: Path, **changes) -> list:
    artifact = build_artifact(load_config(GRU), tmp / "out")
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest.update(changes)
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    return ["verify", artifact]


def _verify_with(tmp: Path, state: dict) -> list:
    artifact = build_artifact(load_config(GRU), tmp / "out")
    return ["verify", artifact / "model.onnx", "--config", GRU, "--weights", _checkpoint(tmp, state)]


def _replay(tmp: Path, name: str) -> list:
    artifact = build_artifact(load_config(GRU), tmp / "out")
    np.savez(tmp / "in.npz", **{f"{name}/input": np.zeros((3, 2, 16), np.float32)})
    return ["verify", artifact, "--inputs", tmp / "in.npz"]


@pytest.mark.parametrize("case", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_of_this_round(tmp_path, case):
    _, setup, message, code = case
    args = setup(tmp_path)
    before = tree_snapshot(tmp_path) if not (tmp_path / "c.toml").is_fifo() else None
    assert _run(*args) == (code, f"Error: {message.format(tmp=tmp_path)}\n")
    if before is not None:
        assert tree_snapshot(tmp_path) == before


def test_a_model_with_external_data_beside_it_verifies(tmp_path):
    artifact = build_artifact(load_config(GRU), tmp_path / "a")
    model = onnx.load(artifact / "model.onnx")
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    code, output = _run("verify", tmp_path / "ext.onnx", "--config", GRU, "--weights", artifact / "weights.pt",
                        "--cases", "example")
    assert code == 0, output
    assert _run("lint", tmp_path / "ext.onnx")[0] == 0


def test_library_warnings_stay_off_stderr(tmp_path):
    torch.save({"w": RunsCode()}, tmp_path / "w.pt")
    result = subprocess.run([sys.executable, "-m", "rnnexport", "init", "--from-checkpoint", str(tmp_path / "w.pt")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"Error: {tmp_path / 'w.pt'}: refused: not a plain weights file; loading it "
                                          "would run code (it references print). Save the model's state_dict() instead"]


class RunsCode:
    def __reduce__(self):
        return (print, ("this would run on load",))


KILLED_AFTER_SWAP = r"""
import os, signal, sys
from pathlib import Path
import rnnexport.artifacts.build as build
from rnnexport.config import load_config
from rnnexport.artifacts.build import BuildOptions, build_configs

real, calls = build.write_index, []
def write_index(out):
    calls.append(out)
    if len(calls) == 2:  # the rewrite right after the artifact was swapped in
        os.kill(os.getpid(), signal.SIGKILL)
    return real(out)
build.write_index = write_index
list(build_configs([load_config(Path(sys.argv[1]))], BuildOptions(out=Path(sys.argv[2]))))
"""


def _index_entry(out: Path, name: str) -> dict:
    return next(e for e in json.loads((out / "index.json").read_text())["artifacts"] if e["name"] == name)


def _manifest_model_sha(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]


@pytest.mark.parametrize("repair", ["build", "verify"])
def test_an_index_left_stale_by_a_kill_just_after_the_swap_is_repaired_by_the_next_run(tmp_path, repair):
    out, cfg_path = tmp_path / "out", tmp_path / "m.toml"
    cfg_path.write_text(f'name = "m"\n{BASE}seed = 0\n')
    assert _run("build", cfg_path, SHIPPED[1], "--out", out)[0] == 0
    cfg_path.write_text(f'name = "m"\n{BASE}seed = 1\n')
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_SWAP, str(cfg_path), str(out)])
    assert killed.returncode == -9
    new_sha = _manifest_model_sha(out / "m")
    assert _index_entry(out, "m")["model_sha256"] != new_sha  # the window this test is about
    other = out / load_config(SHIPPED[1]).name
    if repair == "build":
        assert _run("build", SHIPPED[1], "--out", out)[0] == 0
    else:
        assert _run("verify", other, "--cases", "example", "--runtimes", "torch,ort", "--record")[0] == 0
    assert _index_entry(out, "m")["model_sha256"] == new_sha
    assert _index_entry(out, other.name)["model_sha256"] == _manifest_model_sha(other)


def _limited_file_size(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # the kernel refuses longer writes: a full disk
    return apply


@pytest.mark.parametrize("command", ["build", "verify"])
def test_a_full_disk_is_one_error_line_and_leaves_every_file_as_it_was(tmp_path, command):
    out = tmp_path / "out"
    artifact = build_artifact(load_config(GRU), out)
    args = ["verify", artifact, "--cases", "example,long", "--long-seq", "64", "--runtimes", "torch,ort", "--record",
            "--html", tmp_path / "report.html", "--export-test-data", tmp_path / "data"]
    assert _run(*args)[0] == 0
    report_files = max(len(p.read_bytes()) for p in artifact.iterdir() if p.name.startswith(("report", "inputs")))
    limit = report_files + 4096
    # the artifact's reports fit under the limit, the HTML does not: the reports would be written, then not
    assert len((tmp_path / "report.html").read_bytes()) > limit
    before = tree_snapshot(tmp_path)
    if command == "build":
        args, limit = ["build", GRU, "--out", out, "--reseed"], 4096
    else:
        args += ["--seed", "3"]
    result = subprocess.run(["rnnexport", *map(str, args)], preexec_fn=_limited_file_size(limit),
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: ") and errors[0].endswith("cannot write: File too large")
    assert command == "build" or errors[0].startswith(f"Error: {tmp_path / 'report.html'}: ")
    assert tree_snapshot(tmp_path) == before
    assert not [p for p in tmp_path.rglob(".rnnexport-tmp-*")]


KILLED_AT_COMMIT_STEP = r"""
import os, shutil, signal, sys
import rnnexport.artifacts.folders as folders
from rnnexport.cli import main

step, steps, committing = int(sys.argv[1]), [0], [False]
def counted(fn):
    def call(*args, **kwargs):
        if committing[0]:
            steps[0] += 1
            if steps[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return call
exit_staged = folders.StagedWrites.__exit__
def commit(self, *exc):
    committing[0] = True
    return exit_staged(self, *exc)
folders.StagedWrites.__exit__ = commit
os.replace, os.rename, shutil.rmtree = counted(os.replace), counted(os.rename), counted(shutil.rmtree)
folders._exchange = counted(folders._exchange)
try:
    main(sys.argv[2:])
finally:
    print("steps", steps[0], file=sys.stderr)
"""


@pytest.mark.slow
def test_a_sigkill_at_each_step_of_verifys_commit_leaves_every_output_folder_whole(tmp_path):
    """Kill verify at each rename or removal of its final commit: each output folder is then the old or the
    new one, whole, and the next verify leaves no staging behind."""
    artifact = build_artifact(load_config(GRU), tmp_path / "out")
    outputs = {"data": tmp_path / "data", "golden": tmp_path / "golden"}
    args = [str(artifact), "--record", "--export-test-data", str(outputs["data"]), "--save-golden",
            str(outputs["golden"]), "--json", str(tmp_path / "all.json")]

    def run(step: int, cases: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", KILLED_AT_COMMIT_STEP, str(step), "verify", *args, "--cases",
                               cases], capture_output=True, text=True)

    def contents(folder: Path) -> dict[str, object]:
        """.npz by their arrays (a zip stamps the time it was written), golden.json without the oracle's time."""
        found: dict[str, object] = {}
        for name, data in tree_snapshot(folder).items():
            if name.endswith(".npz"):
                found[name] = {k: v.tobytes() for k, v in np.load(folder / name).items()}
            elif name == "golden.json":
                found[name] = {**json.loads(data), "oracle": None}
            else:
                found[name] = data
        return found

    def folders() -> dict[str, dict[str, object]]:
        return {kind: contents(path / "gru_2layer") for kind, path in outputs.items()}

    assert run(0, "example,seq1").returncode == 0
    new = folders()
    first = run(0, "example")
    assert first.returncode == 0
    old = folders()
    assert all(old[kind] != new[kind] for kind in outputs)
    kept = tmp_path / "kept"
    for kind, path in outputs.items():
        shutil.copytree(path / "gru_2layer", kept / kind)
    total = int(first.stderr.split()[-1])
    assert total >= 8, first.stderr  # files, folder exchanges and staging removals
    outcomes = set()
    for step in range(1, total + 1):
        killed = run(step, "example,seq1")
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)
        now = folders()
        for kind in outputs:
            assert now[kind] in (old[kind], new[kind]), (step, kind)
            outcomes.add((kind, "old" if now[kind] == old[kind] else "new"))
        load_artifact(artifact)  # whole and untampered
        json.loads((tmp_path / "all.json").read_text())
        for kind, path in outputs.items():  # the old outputs again for the next step; leftovers stay
            shutil.rmtree(path / "gru_2layer")
            shutil.copytree(kept / kind, path / "gru_2layer")
    assert {("data", "old"), ("data", "new"), ("golden", "old"), ("golden", "new")} <= outcomes
    final = run(0, "example,seq1")
    assert final.returncode == 0, final.stderr
    assert folders() == new
    assert not list(tmp_path.rglob(f"{TMP_PREFIX}*"))


KILLED_AT_THE_MARK = r"""
import os, pathlib, signal, sys
from rnnexport.artifacts.folders import STAGING_MARK
from rnnexport.cli import main

unlink = pathlib.Path.unlink
def unlink_or_die(self, *args, **kwargs):
    if self.name == STAGING_MARK:  # the last thing removed: everything else of the staging folder is gone
        os.kill(os.getpid(), signal.SIGKILL)
    return unlink(self, *args, **kwargs)
pathlib.Path.unlink = unlink_or_die
main(sys.argv[1:])
"""


def test_a_kill_while_staging_is_removed_leaves_what_the_next_run_removes(tmp_path):
    """The mark goes last: a kill during the clean-up leaves a marked folder, never an unmarked one no run
    would touch again; an empty staging folder (a kill before the mark was written) does not stop a build."""
    artifact = build_artifact(load_config(GRU), tmp_path / "out")
    args = ["verify", str(artifact), "--cases", "example", "--export-test-data", str(tmp_path / "data")]
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_THE_MARK, *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    left = list(tmp_path.rglob(f"{TMP_PREFIX}*"))
    assert left and all((p / STAGING_MARK).is_file() for p in left)
    (artifact / f"{TMP_PREFIX}999999999-out-abc").mkdir()
    assert _run(*args)[0] == 0
    assert _run("build", GRU, "--out", tmp_path / "out")[0] == 0
    assert not list(tmp_path.rglob(f"{TMP_PREFIX}*"))
