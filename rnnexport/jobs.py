"""What the commands do, as library calls: verify a list of targets and write every output, or nothing.

    judged = verify_targets(load_targets([Path("artifacts")]), VerifyOptions(), Outputs(html=Path("r.html")))
    sys.exit(exit_code(judged))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime

from rnnexport.artifacts.folders import StagedWrites, sha256_file, write_json_atomic
from rnnexport.artifacts.index import check_index_target, write_index
from rnnexport.artifacts.targets import Target
from rnnexport.config import Tolerance
from rnnexport.contract import (
    CASE_NAMES,
    DEFAULT_THREADS,
    INPUTS_FILE,
    MANIFEST_FILE,
    MARKDOWN_FILE,
    MODEL_FILE,
    REPORT_FILE,
    REPORT_FILES,
    VARIANTS,
)
from rnnexport.errors import ArtifactError, ProviderUnavailable, RnnExportError, RunnerFailed
from rnnexport.graph.reader import read_model
from rnnexport.report.html import render_html
from rnnexport.report.junit import junit_xml
from rnnexport.report.text import render_markdown
from rnnexport.verification.cases import LONG_SEQ, cases_to_npz, load_cases, skipped_cases
from rnnexport.verification.engine import FLOAT16_CUDA, VerifyReport, thread_plan, tolerances_for, verify
from rnnexport.verification.golden import check_golden_target, stage_golden, verify_golden
from rnnexport.verification.runners import DEFAULT_FAMILIES, FAMILIES, TORCH_CPU, TORCH_CUDA
from rnnexport.verification.runners.iree_runner import IREE, iree_status
from rnnexport.verification.runners.openvino_runner import INSTALL, openvino_device_status
from rnnexport.verification.runners.ort_runner import ort_name, provider_status
from rnnexport.verification.runners.tract_runner import TRACT, tract_status
from rnnexport.verification.verdict import Policy, Tolerances, Verdict

Judged = tuple[VerifyReport, Verdict]


@dataclass(frozen=True)
class VerifyOptions:
    """What to run and how to judge it (see ``verify.verify`` and ``verdict.Policy``)."""

    providers: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = DEFAULT_FAMILIES
    case_names: tuple[str, ...] = ()
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    long_seq: int = LONG_SEQ
    threads: int | str = DEFAULT_THREADS  # engine.thread_plan
    inputs: Path | None = None
    strict_placement: bool = False
    require: tuple[str, ...] = ()
    per_layer: bool = False
    shapes: tuple[tuple[int, int], ...] = ()  # (seq, batch) of extra cases
    record: bool = False  # write artifacts' reports even for a what-if run (marked as such)

    def what_if(self) -> list[str]:
        """The options that narrow what the record's run checks (fewer cases, fewer runtimes or providers) or
        change how it is judged (tolerances): such a run leaves artifacts' reports and index.json alone unless
        ``record`` says otherwise, and a report it records lists them under ``what_if``."""
        changed = {"--cases": self.case_names, "--runtimes": not set(DEFAULT_FAMILIES) <= set(self.runtimes),
                   "--providers": self.providers, "--atol": self.atol is not None, "--rtol": self.rtol is not None}
        return [flag for flag, value in changed.items() if value]

    def check(self) -> None:
        for key in ("atol", "rtol"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and 0 <= value <= 1e300):
                raise RnnExportError(f"--{key} {value!r}: expected a finite, non-negative number")
        thread_plan(self.threads)


@dataclass(frozen=True)
class Outputs:
    """Files a verification writes besides each artifact folder's report: one JSON of every report, an
    HTML page, JUnit XML, and ONNX test data folders."""

    json: Path | None = None
    html: Path | None = None
    junit: Path | None = None
    test_data: Path | None = None
    golden: Path | None = None  # --save-golden: the oracle's outputs for later runs without PyTorch

    def check(self) -> None:
        """Refuse, before any work, a path that could not be written or must not be: a folder where a file goes,
        a missing parent, a file where a folder goes, two outputs at one path or one inside another, an output
        inside an artifact folder, and an existing file that is not an earlier output of the same kind (the
        model, a config, a user's source file: rnnexport replaces only what it can prove it wrote)."""
        files = [(flag, path) for flag, path in (("--json", self.json), ("--html", self.html), ("--junit", self.junit))
                 if path is not None]
        folders = [(flag, path) for flag, path in (("--export-test-data", self.test_data),
                                                   ("--save-golden", self.golden)) if path is not None]
        for flag, path in files:
            if path.is_dir():
                raise ArtifactError(f"{flag} {path}: is a folder; expected a file name")
            if not path.parent.is_dir():
                raise ArtifactError(f"{flag} {path}: the folder {path.parent} does not exist")
            if (path.parent / MANIFEST_FILE).is_file():
                raise ArtifactError(f"{flag} {path}: is inside the artifact folder {path.parent}; choose a path "
                                    "outside it")
            if path.exists() and not written_by_rnnexport(path, flag):
                raise ArtifactError(f"{flag} {path}: exists and is not a {flag.removeprefix('--')} file rnnexport "
                                    "wrote; refusing to replace it")
        for flag, folder in folders:
            if folder.exists() and not folder.is_dir():
                raise ArtifactError(f"{flag} {folder}: is a file; expected a folder")
            if not folder.parent.is_dir():
                raise ArtifactError(f"{flag} {folder}: the folder {folder.parent} does not exist")
            if (folder / MANIFEST_FILE).is_file() or (folder.parent / MANIFEST_FILE).is_file():
                raise ArtifactError(f"{flag} {folder}: is an artifact folder or inside one; choose a folder "
                                    "outside it")
        _refuse_overlaps(files + folders, {flag for flag, _ in folders})


def _refuse_overlaps(paths: list[tuple[str, Path]], folders: set[str]) -> None:
    """Two outputs at one path, or one inside an output folder, would replace each other."""
    for i, (flag, path) in enumerate(paths):
        for other_flag, other in paths[i + 1:]:
            a, b = path.resolve(), other.resolve()
            if a == b:
                raise ArtifactError(f"{other_flag} {other}: the same path as {flag}; each output needs its own")
            for (f1, p1, r1), (f2, _, r2) in (((flag, path, a), (other_flag, other, b)),
                                             ((other_flag, other, b), (flag, path, a))):
                if f2 in folders and r1.is_relative_to(r2):
                    raise ArtifactError(f"{f1} {p1}: inside the {f2} folder; each output needs its own place")


def written_by_rnnexport(path: Path, flag: str) -> bool:
    """Whether ``path`` is a file an earlier ``--json``, ``--html`` or ``--junit`` wrote (read as text, never run)."""
    try:
        head = path.read_bytes()[:4096].decode("utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        return False
    if flag == "--html":
        return head.startswith("<!doctype html>") and "rnnexport verify" in head
    if flag == "--junit":
        return head.startswith("<?xml") and '<testsuites name="rnnexport verify"' in head
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and set(data) == {"schema_version", "reports"}


MAX_SHAPE_ELEMENTS = 10_000_000  # steps × rows of one --shape case: its float64 oracle outputs must fit in memory


def parse_shape(text: str) -> tuple[int, int]:
    """``seq=300,batch=7`` (either order; each exactly once, nothing else) → (300, 7); at most
    ``MAX_SHAPE_ELEMENTS`` steps × rows. Raises ``RnnExportError`` otherwise."""
    pieces = [p.split("=", 1) for p in text.replace(" ", "").split(",")]
    usage = f"--shape {text!r}: expected seq=N,batch=M (for example seq=300,batch=7)"
    if any(len(p) != 2 for p in pieces) or sorted(k for k, _ in pieces) != ["batch", "seq"]:
        raise RnnExportError(usage)
    try:
        parts = {k: int(v) for k, v in pieces}
    except ValueError:
        raise RnnExportError(usage) from None
    seq, batch = parts["seq"], parts["batch"]
    if not (1 <= seq <= 1_000_000 and 1 <= batch <= 65536) or seq * batch > MAX_SHAPE_ELEMENTS:
        raise RnnExportError(f"--shape {text!r}: expected seq=N,batch=M with 1 ≤ N ≤ 1000000, 1 ≤ M ≤ 65536 and "
                             f"N × M ≤ {MAX_SHAPE_ELEMENTS:,} (the oracle's outputs must fit in memory)")
    return seq, batch


def verify_targets(targets: list[Target], options: VerifyOptions, outputs: Outputs = Outputs(),
                   on_result: Callable[[VerifyReport, Verdict], None] | None = None,
                   each: Callable[[list[Target]], Iterable[Target]] = iter) -> list[Judged]:
    """Verify every target, judge each report once under the options' policy, then write every output.

    Nothing is written until every target has been verified: artifact folders get report.json, report.md
    and inputs.npz (and their index.json is rebuilt), then the JSON, HTML and JUnit files and the test
    data. A what-if run (``options.what_if()``) writes no report into artifact folders and leaves index.json
    as it is. ``on_result`` is called after each target; ``each`` wraps the loop over them (a progress bar)."""
    options.check()
    outputs.check()
    if any(t.golden for t in targets):
        _check_golden_options(options, outputs)
    check_required_variants(targets, options.require)
    for target in targets:
        if outputs.test_data is not None:
            from rnnexport.report.test_data import check_test_data_target  # torch: the oracle writes test data

            check_test_data_target(outputs.test_data / target.cfg.name)
        if outputs.golden is not None:
            check_golden_target(outputs.golden / target.cfg.name)
        _check_some_case_applies(target, options)
        _check_shapes_fit(target, options)
        if target.folder and (options.record or not options.what_if()):
            check_index_target(target.folder.parent)
    policy = Policy(strict_placement=options.strict_placement, require=options.require)
    judged = []
    for target in each(targets):
        report = _verify_one(target, options)
        verdict = report.judge(policy)
        judged.append((report, verdict))
        if on_result:
            on_result(report, verdict)
    if options.record:
        for report, _ in judged:
            report.what_if = options.what_if()
    write_outputs(targets, judged, outputs, record=options.record or not options.what_if())
    return judged


def _check_golden_options(options: VerifyOptions, outputs: Outputs) -> None:
    """Refuse what a comparison with saved outputs cannot do: it has no PyTorch and its cases are saved."""
    refused = [("--inputs", options.inputs), ("--shape", options.shapes), ("--per-layer", options.per_layer),
               ("--export-test-data", outputs.test_data), ("--save-golden", outputs.golden)]
    for flag, value in refused:
        if value:
            raise RnnExportError(f"{flag} does not go with --golden: the golden outputs fix the cases, and the "
                                 "comparison runs without PyTorch")
    if options.seed != 0 or options.long_seq != LONG_SEQ:
        raise RnnExportError("--seed and --long-seq do not go with --golden: the golden outputs fix the cases")


SHAPE_BYTES_PER_VALUE = 48  # per float of a --shape case's input and output: the float32 feeds, the float64
# oracle's input and outputs, each runner's float32 outputs and a runtime's own buffers (measured: gru_2layer at
# seq=100000, batch=4 peaked 976 MB above the example's run, for 20.8 M values of input and output)


def _check_shapes_fit(target: Target, options: VerifyOptions) -> None:
    """Refuse, before any work, a ``--shape`` case whose inputs and outputs would not fit in half this machine's
    memory (the bound of ``parse_shape`` counts steps × rows whatever the model's sizes)."""
    cfg, memory = target.cfg, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for seq, batch in options.shapes:
        values = seq * batch * (cfg.input_size + cfg.num_directions * cfg.hidden_size)
        if values * SHAPE_BYTES_PER_VALUE > memory / 2:
            raise RnnExportError(f"--shape seq={seq},batch={batch}: {cfg.name}'s inputs and outputs at this shape "
                                 f"need about {values * SHAPE_BYTES_PER_VALUE / 2**30:.0f} GiB to verify, more than "
                                 f"half of this machine's {memory / 2**30:.0f} GiB")


def _check_some_case_applies(target: Target, options: VerifyOptions) -> None:
    if options.inputs or not options.case_names or target.golden:
        return
    skipped = skipped_cases(target.cfg)
    if all(name in skipped for name in options.case_names):
        reasons = "; ".join(f"{n}: {skipped[n]}" for n in options.case_names)
        raise RnnExportError(f"{target.cfg.name}: none of the chosen cases applies ({reasons})")


def _verify_one(target: Target, options: VerifyOptions) -> VerifyReport:
    if target.golden is not None:
        return verify_golden(target.model, target.golden, providers=options.providers or None,
                             runtimes=options.runtimes, threads=options.threads, atol=options.atol, rtol=options.rtol,
                             case_names=options.case_names, variants=target.variants)
    cases = load_cases(options.inputs, target.cfg) if options.inputs else None
    report = verify(target.module, target.model, cfg=target.cfg, providers=options.providers or None,
                    runtimes=options.runtimes, case_names=options.case_names or None,
                    tolerances=tolerances_for(target.cfg, options.atol, options.rtol), seed=options.seed,
                    long_seq=options.long_seq, cases=cases, threads=options.threads, variants=target.variants,
                    per_layer=options.per_layer, shapes=options.shapes)
    report.latency, report.latency_noisy = target.latency, target.latency_noisy
    return report


def write_outputs(targets: list[Target], judged: list[Judged], outputs: Outputs, record: bool = True) -> None:
    """Every output of one run, all or none: each is staged first and they are moved into place together,
    so a full disk leaves every file as it was. index.json, derived from the folders, is rewritten after.
    ``record``: whether artifact folders receive the reports (not for a what-if run)."""
    with StagedWrites() as staged:
        for target, (report, verdict) in zip(targets, judged):
            if target.folder and record:
                stage_report(staged, report, verdict, target.folder)
        _stage_summaries(staged, judged, outputs)
        if outputs.test_data:
            from rnnexport.report.test_data import stage_test_data  # torch: the oracle writes test data

            for target, (report, _) in zip(targets, judged):
                stage_test_data(staged, target, report.inputs, outputs.test_data)
        if outputs.golden:
            for target, (report, _) in zip(targets, judged):
                stage_golden(staged, target, report, outputs.golden)
    parents = []
    for target, (report, _) in zip(targets, judged):
        if target.folder and record:
            _discard_if_rebuilt(report, target.folder)
            parents.append(target.folder.parent)
    for parent in dict.fromkeys(parents):  # once per folder of artifacts: it reads every manifest there
        write_index(parent)


def _stage_summaries(staged: StagedWrites, judged: list[Judged], outputs: Outputs) -> None:
    """The files that summarise every report of a run: one JSON, the HTML page, JUnit XML."""
    if outputs.json:
        staged.add_json(outputs.json, {"schema_version": 1, "reports": [r.to_dict(v) for r, v in judged]},
                        indent=None)
    if outputs.html:
        staged.add_text(outputs.html, render_html(judged))
    if outputs.junit:
        staged.add_text(outputs.junit, junit_xml(judged))


def write_report(report: VerifyReport, verdict: Verdict, folder: Path) -> None:
    """``report.json`` (versioned), ``report.md`` and ``inputs.npz`` into an artifact folder, together."""
    with StagedWrites() as staged:
        stage_report(staged, report, verdict, folder)
    _discard_if_rebuilt(report, folder)


def stage_report(staged: StagedWrites, report: VerifyReport, verdict: Verdict, folder: Path) -> None:
    """Stage the report files of ``folder``, which must still hold the model the report describes."""
    _check_same_model(report, folder)
    staged.add(folder / INPUTS_FILE, cases_to_npz(report.inputs))
    staged.add_json(folder / REPORT_FILE, report.to_dict(verdict), indent=None)
    staged.add_text(folder / MARKDOWN_FILE, render_markdown(report, verdict))


def _discard_if_rebuilt(report: VerifyReport, folder: Path) -> None:
    """When a build replaced the model while the report was written, the report describes another model:
    it is removed again and the run fails."""
    try:
        _check_same_model(report, folder)
    except ArtifactError:
        for name in REPORT_FILES:
            (folder / name).unlink(missing_ok=True)
        raise


def _check_same_model(report: VerifyReport, folder: Path) -> None:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        current = manifest["files"][MODEL_FILE]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        current = None
    if current != report.model_sha256:
        raise ArtifactError(f"{folder}: the artifact was rebuilt while it was being verified; no report was "
                            "written for it (verify it again)")


def exit_code(judged: list[Judged]) -> int:
    """The worst of the verdicts' exit codes: 0 pass, 1 drift, 3 a runtime failed."""
    return max((v.exit_code for _, v in judged), default=0)


def check_names(options: VerifyOptions, known_cases: tuple[str, ...] = CASE_NAMES) -> None:
    """Refuse unknown runner families, providers, cases and required runners, and a required runner or provider
    that cannot run here, before any work (exit 2 for a name, 3 for a missing runner)."""
    known = onnxruntime.get_all_providers()
    for family in options.runtimes:
        if family not in FAMILIES:
            raise RnnExportError(f"unknown runtime {family!r}; known: {', '.join(FAMILIES)}")
    if not any(r != "torch" for r in options.runtimes):
        raise RnnExportError(f"--runtimes {','.join(options.runtimes)} runs no ONNX runtime, so nothing would check "
                             "the model file; add ort, openvino, tract or iree")
    for name in options.providers + tuple(r for r in options.require if r[:1].isupper()):
        if name not in known:
            raise RnnExportError(f"unknown provider {name!r}; known: {', '.join(known)}")
        if "ort" not in options.runtimes:
            raise RnnExportError(f"provider {name} is ONNX Runtime's, and the runner families run here "
                                 f"({', '.join(options.runtimes)}) leave out ort")
    for name in options.case_names:
        if name not in known_cases:
            raise RnnExportError(f"unknown case {name!r}; known: {', '.join(known_cases)}")
    for name in options.require:
        provider = name[:1].isupper()
        reason = provider_status(name) if provider else _runner_status(name, options.runtimes)
        if reason:
            what = "provider" if provider else "runner"
            raise ProviderUnavailable(f"required {what} {name} is not available: {reason}", runner=name, reason=reason)


RUNNER_FORMS = ("torch-float32-cpu", "torch-float32-cuda", "ort-<cpu|cuda|tensorrt>[-<variant>]", FLOAT16_CUDA,
                "openvino-<cpu|gpu…>-<f32|default>", TRACT, IREE)


def _runner_status(name: str, runtimes: tuple[str, ...]) -> str | None:
    """Why a runner named in --require cannot run here (None when it can, or when only running tells). A name
    that no runner has, or one whose family --runtimes leaves out, is refused (exit 2)."""
    family = name.split("-", 1)[0]
    if family not in FAMILIES or not _known_runner(name):
        raise RnnExportError(f"--require {name}: no runner has that name; runners are named "
                             f"{', '.join(RUNNER_FORMS)}")
    if family not in runtimes:
        raise RnnExportError(f"--require {name}: the runner families run here ({', '.join(runtimes)}) leave out "
                             f"{family}")
    if name == TORCH_CUDA:
        import torch  # heavy: only when PyTorch's CUDA runner is required

        return None if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device"
    if family == "ort":
        provider = next(p for p in onnxruntime.get_all_providers() if name.startswith(ort_name(p)))
        return provider_status(provider)
    if family == "openvino":
        try:
            return openvino_device_status(name.split("-")[1].upper())
        except ImportError:
            return f"OpenVINO is not installed ({INSTALL})"
    if family == "tract":
        return tract_status()
    if family == "iree":
        return iree_status()
    return None


def _known_runner(name: str) -> bool:
    if name.startswith("torch-"):
        return name in (TORCH_CPU, TORCH_CUDA)
    if name.startswith("tract-"):
        return name == TRACT
    if name.startswith("iree-"):
        return name == IREE
    if name.startswith("openvino-"):
        parts = name.split("-")
        return len(parts) == 3 and parts[2] in ("f32", "default") and parts[1][:3] in ("cpu", "gpu")
    for provider in onnxruntime.get_all_providers():
        base = ort_name(provider)
        if name == base or name in (f"{base}-{v}" for v in VARIANTS):
            return True
    return name == FLOAT16_CUDA


def check_required_variants(targets: list[Target], require: tuple[str, ...]) -> None:
    """A required variant runner (``ort-cpu-int8-dynamic``, say) that no target has a file for cannot run: exit 3
    before any work, as for a missing provider."""
    for name in require:
        kind = next((v for v in VARIANTS if name.endswith(f"-{v}")), None)
        if kind and not any(isinstance(t.variants.get(kind), bytes) for t in targets):
            reason = f"no model here has a {kind} variant (rnnexport build --variants {kind})"
            raise ProviderUnavailable(f"required runner {name} is not available: {reason}", runner=name, reason=reason)


def compare_configs(paths: list[Path], weights: Path | None, prefix: str | None, repeats: int,
                    markdown: bool) -> Iterable[tuple[str, bool]]:
    """``formulations``: per config, the rendered table and whether every formulation agrees. With
    ``weights`` (one config), the formulations hold those weights."""
    from rnnexport.artifacts.build import WeightsSource
    from rnnexport.config import load_configs
    from rnnexport.formulations import compare_formulations
    from rnnexport.formulations.render import render_formulations

    configs = load_configs(paths)
    if weights and len(configs) != 1:
        raise ArtifactError(f"--weights takes exactly one config; {len(configs)} were given")
    for cfg in configs:
        module = WeightsSource.of(cfg, weights, prefix).load(cfg)[0]
        report = compare_formulations(cfg, repeats=repeats, native=module)
        yield render_formulations(report, cfg.tolerance, markdown), report.passed(cfg.tolerance)


def bench_targets(paths: list[Path], rounds: int, exporters: tuple[str, ...], json_path: Path | None
                  ) -> Iterable[str]:
    """``bench``: lines to print as each measurement finishes; an artifact's manifest receives the
    recommended runtime settings, and ``json_path`` every number."""
    from rnnexport.artifacts.targets import load_targets
    from rnnexport.bench import (
        CORES,
        PEAK_SIZES,
        THREADS,
        bench_config,
        gemm_peak,
        mark_slowed,
        memory_bandwidth,
        peak_problems,
        probe,
        render_bench,
        stage_artifacts,
        time_verify,
    )
    from rnnexport.export.torch_exporters import EXPORTERS

    unknown = [e for e in exporters if e not in EXPORTERS]
    if unknown:
        raise RnnExportError(f"unknown exporter {unknown[0]!r}; known: {', '.join(EXPORTERS)}")
    if json_path is not None:
        Outputs(json=json_path).check()
    targets = load_targets(paths)
    peaks = {t: gemm_peak(t) for t in THREADS}
    yield "float32 GEMM peak (best of {}², several rounds): {}".format(
        "², ".join(map(str, PEAK_SIZES)), ", ".join(f"{p:.0f} GFLOP/s on {t} thread(s)" for t, p in peaks.items()))
    bandwidth = {t: memory_bandwidth(t) for t in THREADS}
    yield "copy bandwidth (256 MiB, read + written): " + ", ".join(f"{b:.1f} GB/s on {t} thread(s)"
                                                                  for t, b in bandwidth.items())
    best = probe(calls=100)  # the machine's speed as the run begins; each round probes it again
    results = []
    for target in targets:
        result = bench_config(target.cfg, rounds, exporters, module=target.module)
        best = mark_slowed([result], best)
        if peak_problems(result, peaks):  # a runner above the peak means the peak was measured low
            peaks = {t: max(peaks[t], gemm_peak(t, rounds=7)) for t in THREADS}
            yield "GEMM peak measured again: " + ", ".join(f"{p:.0f} GFLOP/s on {t}" for t, p in peaks.items())
        results.append(result)
        yield render_bench(result, peaks, bandwidth)
        for problem in peak_problems(result, peaks):
            yield f"  ⚠ {problem}: the GEMM peak is unsound on this machine (figures are not clipped)"
    best = mark_slowed(results, best)  # every figure judged against the run's best speed, which a later one may show
    for target, result in zip(targets, results):
        if target.folder:
            manifest = json.loads((target.folder / MANIFEST_FILE).read_text())
            manifest["runtime_recommendation"] = result.recommendation
            manifest["deploy_latency"] = result.deploy_latency()
            manifest["deploy_latency_noisy"] = result.noisy_latency()
            write_json_atomic(target.folder / MANIFEST_FILE, manifest)
    verified: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="rnnexport-bench-") as folder:  # copies: yours keep their reports
            run = time_verify(stage_artifacts(targets, Path(folder)), Path(folder) / "verify.json")
        verified = {**dataclasses.asdict(run), "ratio": run.ratio}
        yield (f"verify, as a user runs it ({len(run.configs)} artifact(s) in one process): {run.wall_seconds:.1f} s "
               f"wall, {run.cpu_seconds:.1f} s CPU; the oracle's and the runners' calls {run.execution_seconds:.1f} "
               f"s: ×{run.ratio:.2f}")
    except RunnerFailed as exc:  # the measurements above are kept
        yield f"verify, as a user runs it: did not run: {exc.reason}"
    if json_path:
        write_json_atomic(json_path, {"schema_version": 4, "cores": CORES, "gemm_peak_gflops": peaks,
                                      "copy_bandwidth_gbps": bandwidth, "probe_ms": best._asdict(),
                                      "configs": [r.to_dict() for r in results], "verify": verified})


WHOLE_MODEL_FILES = (MODEL_FILE, REPORT_FILE, MARKDOWN_FILE)


def export_whole_model(factory: str, out: Path, options: VerifyOptions = VerifyOptions(),
                       outputs: Outputs = Outputs(), onnx_file: Path | None = None) -> Judged:
    """``export-model``: the factory's model exported (or ``onnx_file`` read) and verified at the standard cases
    and ``options.shapes`` under ``options``; ``out`` receives model.onnx and the reports, and ``outputs`` the
    JSON, HTML and JUnit files, all together once the verification is done (``out`` must be new, empty, or an
    earlier export-model's output). Everything that can be refused is refused before the factory runs."""
    from rnnexport.export.whole_model import export_model, load_factory  # torch
    from rnnexport.verification.whole_model import STANDARD_CASES, verify_model

    options.check()
    outputs.check()
    refused = [("--inputs", options.inputs), ("--per-layer", options.per_layer),
               ("--export-test-data", outputs.test_data), ("--save-golden", outputs.golden)]
    for flag, value in refused:
        if value:
            raise RnnExportError(f"{flag} does not go with export-model")
    unknown = [c for c in options.case_names if c not in STANDARD_CASES]
    if unknown:
        raise RnnExportError(f"unknown case {unknown[0]!r} for a whole model; known: {', '.join(STANDARD_CASES)}")
    check_required_variants([], options.require)  # a whole model has no deployment variants
    _check_whole_model_out(out, outputs)
    made = load_factory(factory)
    proto = read_model(onnx_file)[0] if onnx_file else export_model(
        made.model, made.example_inputs, dynamic_shapes=made.dynamic_shapes, input_names=made.input_names,
        output_names=made.output_names)
    tolerances = Tolerances(made.tolerance or Tolerance(), atol=options.atol, rtol=options.rtol)
    report = verify_model(made.model, proto, made.example_inputs, dynamic_shapes=made.dynamic_shapes,
                          specs=made.specs, tolerance=tolerances, runtimes=options.runtimes,
                          providers=options.providers or None,
                          threads=options.threads, case_names=options.case_names, seed=options.seed,
                          shapes=options.shapes)
    verdict = report.judge(Policy(strict_placement=options.strict_placement, require=options.require))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"{out}: cannot create the folder: {exc.strerror or exc}") from None
    with StagedWrites() as staged:
        staged.add(out / MODEL_FILE, proto.SerializeToString())
        staged.add_json(out / REPORT_FILE, report.to_dict(verdict), indent=None)
        staged.add_text(out / MARKDOWN_FILE, render_markdown(report, verdict))
        _stage_summaries(staged, [(report, verdict)], outputs)
    return report, verdict


def _check_whole_model_out(out: Path, outputs: Outputs) -> None:
    """``out`` must be new, empty, or what an earlier export-model wrote there (a report.json that names the
    model.onnx beside it); it must be a folder that can be made, and hold none of the other outputs. Anything
    else is refused before any work."""
    ancestor = next((a for a in (out, *out.parents) if a.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise ArtifactError(f"{out}: {ancestor} is a file; expected a folder")
    if ancestor is not None and not os.access(ancestor, os.W_OK | os.X_OK):
        raise ArtifactError(f"{out}: {ancestor} cannot be written to")
    for flag, path in (("--json", outputs.json), ("--html", outputs.html), ("--junit", outputs.junit)):
        if path is not None and path.resolve().is_relative_to(out.resolve()):
            raise ArtifactError(f"{flag} {path}: inside the --out folder {out}; each output needs its own place")
    if not out.exists() or not any(out.iterdir()):
        return
    names = {p.name for p in out.iterdir()}
    try:
        report = json.loads((out / REPORT_FILE).read_text())
        ours = isinstance(report, dict) and report.get("model_sha256") == sha256_file(out / MODEL_FILE)
    except (OSError, ValueError):
        ours = False
    if not ours or not names <= set(WHOLE_MODEL_FILES):
        raise ArtifactError(f"{out}: exists and is not an earlier export-model's output (model.onnx with the "
                            "report.json that names it); refusing to write into it")
