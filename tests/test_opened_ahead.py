"""Runners opened ahead on a second thread (verify's default, ``--threads auto``): the same report as one thread
gives, each runner opened on that thread and closed once, no more model ahead than ``AHEAD_BYTES`` allows, and
nothing left open when a run stops midway. Real ONNX Runtime and OpenVINO runners throughout."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import signal
import threading
import time
import weakref
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHIPPED

from rnnexport.artifacts.build import export_config
from rnnexport.cli import main
from rnnexport.config import load_config
from rnnexport.errors import ConfigError, RunnerFailed
from rnnexport.jobs import VerifyOptions
from rnnexport.verification import engine
from rnnexport.verification.cases import make_cases
from rnnexport.verification.engine import run_engine, runtime_specs, thread_plan, tolerances_for
from rnnexport.verification.runners import OpenedAhead, RunnerSpec
from rnnexport.verification.runners.ort_runner import CPU
from rnnexport.verification.runners.torch_runner import Float64Oracle

GRU = next(p for p in SHIPPED if p.stem == "gru_2layer")


class _Watched:
    """A real runner whose closing is written to ``events``; entering it gives the runner itself."""

    def __init__(self, runner: Any, events: list):
        self.runner, self.events = runner, events

    def __enter__(self) -> Any:
        return self.runner.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.events.append(("close", self.runner.name, threading.get_ident()))
        self.runner.__exit__(*exc)


class _Opener:
    """A spec's ``open`` that writes each opening, and the thread it ran on, to ``events``."""

    def __init__(self, spec, events: list):
        self.spec, self.events = spec, events

    def __call__(self) -> _Watched:
        runner = self.spec.open()
        self.events.append(("open", runner.name, threading.get_ident()))
        return _Watched(runner, self.events)


class _Broken:
    """A runner that stops the run: an error no runner is expected to raise."""

    name, kind, device, precision, settings = "broken", "onnxruntime", "cpu", "float32", {}

    def __enter__(self) -> _Broken:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def infer(self, feeds):
        raise KeyError("a bug in a runner")


def _setup(events: list):
    cfg = load_config(GRU)
    module, model = export_config(cfg)
    data = model.SerializeToString()
    specs = [dataclasses.replace(s, open=_Opener(s, events)) for s in runtime_specs(data, (CPU,), ("ort", "openvino"))]
    return cfg, module, data, specs, make_cases(cfg, 0, ("example", "long"), 300)


def _numbers(report) -> str:
    """The report without its timings: what the runners computed and how far it drifted."""
    data = report.to_dict()
    data.pop("seconds")
    data["oracle"].pop("run_seconds")
    for runner in data["runners"]:
        runner.pop("run_seconds")
    return json.dumps(data, sort_keys=True, default=str)


class _WaitingOracle:
    """The float64 oracle, which before its first case waits (30 s at most) until ``count`` runners have opened,
    then ``linger`` seconds more, and writes to ``seen`` how many had opened: what opened while the oracle ran."""

    name, settings = "torch-float64-oracle", {}

    def __init__(self, module, events: list, count: int, linger: float = 0.0):
        self.oracle, self.events, self.count, self.linger = Float64Oracle(module), events, count, linger
        self.seen: int | None = None

    def _opened(self) -> int:
        return sum(what == "open" for what, _, _ in self.events)

    def expected(self, case):
        if self.seen is None:
            deadline = time.monotonic() + 30
            while self._opened() < self.count and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(self.linger)
            self.seen = self._opened()
        return self.oracle.expected(case)


def test_runners_opened_ahead_compute_the_same_report_on_a_second_thread():
    """The shipped model's three runners are all opened while the oracle runs."""
    reports, events = {}, {}
    for ahead in (False, True):
        events[ahead] = recorded = []
        cfg, module, data, specs, cases = _setup(recorded)
        oracle = _WaitingOracle(module, recorded, 3 if ahead else 0)
        reports[ahead] = run_engine(cfg.name, data, oracle, cases, specs, config=cfg.to_dict(),
                                    tolerances=tolerances_for(cfg), ahead=ahead)
        assert oracle.seen == (3 if ahead else 0)
    assert _numbers(reports[True]) == _numbers(reports[False])
    assert reports[True].passed(), reports[True].failures()
    main_thread = threading.get_ident()
    for ahead, recorded in events.items():
        opened = [name for what, name, _ in recorded if what == "open"]
        closed = [name for what, name, _ in recorded if what == "close"]
        assert opened == closed == ["ort-cpu", "openvino-cpu-f32", "openvino-cpu-default"]
        assert {thread != main_thread for what, _, thread in recorded if what == "open"} == {ahead}


def test_no_more_model_is_opened_ahead_than_allowed(monkeypatch):
    """With room for one model ahead, one runner is opened while the oracle runs (given time for more), and no
    more than the runner in use and the next one are open at once."""
    events: list = []
    cfg, module, data, specs, cases = _setup(events)
    monkeypatch.setattr(engine, "AHEAD_BYTES", len(data))
    oracle = _WaitingOracle(module, events, 1, linger=0.5)
    run_engine(cfg.name, data, oracle, cases, specs, config=cfg.to_dict(), tolerances=tolerances_for(cfg), ahead=True)
    assert oracle.seen == 1
    alive, most = set(), 0
    for what, name, _ in events:
        (alive.add if what == "open" else alive.remove)(name)
        most = max(most, len(alive))
    assert most <= 2 and not alive


def test_a_run_stopped_midway_leaves_no_runner_open():
    """A runner raising what no runner should stops the run; the runners opened ahead of it are closed, and the
    one being opened when it stopped is waited for and closed too."""
    events: list = []
    cfg, module, data, specs, cases = _setup(events)
    broken = dataclasses.replace(specs[0], name="broken", open=_Broken)
    with pytest.raises(KeyError, match="a bug in a runner"):
        run_engine(cfg.name, data, Float64Oracle(module), cases, [specs[0], broken, *specs[1:]],
                   config=cfg.to_dict(), tolerances=tolerances_for(cfg), ahead=True)
    opened = sorted(name for what, name, _ in events if what == "open")
    assert opened == sorted(name for what, name, _ in events if what == "close")
    assert "ort-cpu" in opened


class _Fake:
    """A runner that takes ``delay`` seconds to open (on whatever thread opens it), writing its opening and closing
    to ``events``. The real runtimes' runners are tested above; this one makes the timing of an interruption sure."""

    kind, device, precision, settings = "onnxruntime", "cpu", "float32", {}

    def __init__(self, name: str, events: list, delay: float = 0.0):
        time.sleep(delay)
        self.name, self.events = name, events
        events.append(("open", name))

    def __enter__(self) -> _Fake:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.events.append(("close", self.name))


def _fakes(events: list, delays: tuple[float, ...]) -> list[RunnerSpec]:
    return [RunnerSpec(f"r{i}", "onnxruntime", "cpu", functools.partial(_Fake, f"r{i}", events, delay))
            for i, delay in enumerate(delays)]


def test_ctrl_c_while_a_runner_is_awaited_leaves_nothing_open():
    """Ctrl-C lands while the first runner is still opening (0.1 s into its 0.5 s): it is closed once ready, and the
    one queued behind it is never opened."""
    events: list = []

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt), OpenedAhead(_fakes(events, (0.5, 0.0)), 2) as specs:
            specs[0].open()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert events == [("open", "r0"), ("close", "r0")]


def test_a_runner_taken_is_the_callers_alone():
    """Once taken, OpenedAhead keeps no reference to a runner: closed by the caller, it is gone before the run ends."""
    events: list = []
    with OpenedAhead(_fakes(events, (0.0, 0.0)), 2) as specs:
        with specs[0].open() as runner:
            gone = weakref.ref(runner)
        del runner
        gc.collect()
        assert gone() is None
    assert sorted(events) == [("close", "r0"), ("close", "r1"), ("open", "r0"), ("open", "r1")]


def test_a_runner_that_fails_to_close_does_not_keep_the_others_open():
    events: list = []

    class Stubborn(_Fake):
        def __exit__(self, *exc: Any) -> None:
            raise OSError("cannot close")

    specs = [RunnerSpec("r0", "onnxruntime", "cpu", functools.partial(Stubborn, "r0", events)),
             *_fakes(events, (0.0, 0.0, 0.0))[1:]]
    with pytest.raises(OSError, match="cannot close"):
        with OpenedAhead(specs, 3):
            deadline = time.monotonic() + 30
            while len(events) < 3 and time.monotonic() < deadline:  # all three opened, none taken
                time.sleep(0.01)
    assert ("close", "r1") in events and ("close", "r2") in events


def test_a_failure_to_close_gives_way_to_the_error_already_on_its_way():
    events: list = []

    class Stubborn(_Fake):
        def __exit__(self, *exc: Any) -> None:
            raise OSError("cannot close")

    specs = [RunnerSpec("r0", "onnxruntime", "cpu", functools.partial(Stubborn, "r0", events))]
    with pytest.raises(KeyboardInterrupt):
        with OpenedAhead(specs, 1):
            while not events:
                time.sleep(0.01)
            time.sleep(0.05)  # its done callback has run: ready when the run ends
            raise KeyboardInterrupt


@pytest.mark.parametrize("threads, plan", [(1, (1, False)), (0, (0, True)), (4, (4, True)), (np.int64(2), (2, True))])
def test_one_thread_opens_nothing_ahead(threads, plan):
    assert thread_plan(threads) == plan
    assert thread_plan("auto")[0] == 1


@pytest.mark.parametrize("threads", [-1, 1025, "two", "AUTO", 1.5, True, None, np.array([1, 2])],
                         ids=lambda t: repr(t))
def test_threads_other_than_auto_or_a_count_are_refused(threads):
    """By the engine, and by the jobs' options before any work."""
    for check in (lambda: thread_plan(threads), VerifyOptions(threads=threads).check):
        with pytest.raises(ConfigError, match=r"expected 'auto' or a whole number from 0 to 1024"):
            check()


def test_the_cli_takes_auto_or_a_count_of_threads(tmp_path):
    """auto in any case (the help shows AUTO|N); counts in ASCII digits only."""
    result = CliRunner().invoke(main, ["verify", str(GRU), "--runtimes", "ort", "--cases", "example",
                                       "--threads", "AUTO", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())["reports"][0]
    assert report["oracle"]["threads"] == 1
    for bad in ("two", "1_0", "\u0662", "-1", "1025", "1.5", "", "9" * 5000):
        result = CliRunner().invoke(main, ["verify", str(GRU), "--threads", bad])
        assert result.exit_code == 2, bad
        assert f"{bad!r} is neither 'auto' nor a whole number from 0 to 1024." in result.output


class _Signalling:
    """A real runner (what ``opened`` gives when entered) that sets ``ran`` once it has run a case."""

    def __init__(self, opened: Any, ran: threading.Event):
        self.opened, self.ran = opened, ran

    def __enter__(self) -> _Signalling:
        self.runner = self.opened.__enter__()
        self.name, self.kind, self.device = self.runner.name, self.runner.kind, self.runner.device
        self.precision, self.settings = self.runner.precision, self.runner.settings
        return self

    def __exit__(self, *exc: Any) -> None:
        self.opened.__exit__(*exc)

    def infer(self, feeds):
        outputs = self.runner.infer(feeds)
        self.ran.set()
        return outputs


class _RecordingOracle:
    """The float64 oracle, writing the thread of each case to ``threads``. ``wait``: before the case ``at`` it waits
    (``timeout`` seconds at most) for a runner to have run; ``fail``: that case raises instead."""

    name, settings = "torch-float64-oracle", {}

    def __init__(self, module, at: str, wait: threading.Event | None = None, fail: bool = False,
                 timeout: float = 30):
        self.oracle, self.at, self.wait, self.fail, self.timeout = Float64Oracle(module), at, wait, fail, timeout
        self.threads: dict[str, int] = {}
        self.waited: bool | None = None

    def expected(self, case):
        self.threads[case.name] = threading.get_ident()
        if case.name == self.at and self.wait is not None:
            self.waited = self.wait.wait(self.timeout)
        if case.name == self.at and self.fail:
            raise ValueError("the oracle's own failure")
        return self.oracle.expected(case)


def _oracle_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rnnexport-oracle")]


def test_the_oracle_computes_beside_the_runners_and_the_report_is_the_same():
    """With the oracle ahead, its cases are computed on a thread of their own, and a runner runs before the oracle's
    last case is done (it waits for one: one thread would have waited 30 s in vain); the numbers are those of a run
    on one thread."""
    reports = {}
    for ahead in (False, True):
        cfg, module, data, specs, cases = _setup([])
        ran = threading.Event()
        specs = [dataclasses.replace(s, open=functools.partial(lambda s: _Signalling(s.open(), ran), s))
                 for s in specs]
        oracle = _RecordingOracle(module, cases[-1].name, wait=ran if ahead else None)
        reports[ahead] = run_engine(cfg.name, data, oracle, cases, specs, config=cfg.to_dict(),
                                    tolerances=tolerances_for(cfg), ahead=ahead, oracle_ahead=ahead)
        threads = set(oracle.threads.values())
        assert len(threads) == 1 and (threading.get_ident() in threads) is not ahead
        assert oracle.waited is (True if ahead else None)
        assert not _oracle_threads()
        assert reports[ahead].oracle["run_seconds"] > 0
    assert _numbers(reports[True]) == _numbers(reports[False])


def test_long_cases_have_the_oracle_computed_first_on_the_callers_thread(monkeypatch):
    """Cases whose inputs exceed ``ORACLE_AHEAD_BYTES`` in all keep the oracle's peak away from the runners'."""
    cfg, module, data, specs, cases = _setup([])
    monkeypatch.setattr(engine, "ORACLE_AHEAD_BYTES", sum(v.nbytes for c in cases for v in c.feeds.values()) - 1)
    oracle = _RecordingOracle(module, cases[-1].name)
    run_engine(cfg.name, data, oracle, cases, specs, config=cfg.to_dict(), tolerances=tolerances_for(cfg),
               ahead=True, oracle_ahead=True)
    assert set(oracle.threads.values()) == {threading.get_ident()}


@pytest.mark.parametrize("runners", ["run", "fail every case"])
def test_the_oracles_own_failure_is_raised_and_leaves_no_thread(runners):
    """Raised from the oracle's thread as it was raised, also where no runner asked for that case's outputs."""
    cfg, module, data, specs, cases = _setup([])
    if runners == "fail every case":
        specs = [dataclasses.replace(specs[0], name="broken", open=_Failing)]
    oracle = _RecordingOracle(module, cases[-1].name, fail=True)
    with pytest.raises(ValueError, match="the oracle's own failure"):
        run_engine(cfg.name, data, oracle, cases, specs, config=cfg.to_dict(), tolerances=tolerances_for(cfg),
                   ahead=True, oracle_ahead=True)
    assert not _oracle_threads()


def test_a_run_stopped_midway_drops_the_oracles_cases_not_begun_and_waits_for_the_one_it_computes():
    cfg, module, data, specs, cases = _setup([])
    specs = [dataclasses.replace(specs[0], name="broken", open=_Broken)]
    oracle = _RecordingOracle(module, cases[0].name, wait=threading.Event(), timeout=1)  # busy for 1 s
    with pytest.raises(KeyError, match="a bug in a runner"):
        run_engine(cfg.name, data, oracle, cases, specs, config=cfg.to_dict(), tolerances=tolerances_for(cfg),
                   ahead=True, oracle_ahead=True)
    assert not _oracle_threads() and oracle.waited is False
    assert list(oracle.threads) == [cases[0].name]


class _Failing(_Broken):
    """A runner every case of which fails as a runtime's refusal does (reported, not raised)."""

    def infer(self, feeds):
        raise RunnerFailed(self.name, "this runtime refuses every case")


def test_verify_at_auto_threads_has_the_oracle_ahead_and_the_same_numbers():
    cfg = load_config(GRU)
    module, model = export_config(cfg)
    reports = {t: engine.verify(module, model, cfg=cfg, runtimes=("torch", "ort"), providers=(CPU,), threads=t)
               for t in (1, "auto")}
    assert _numbers(reports["auto"]) == _numbers(reports[1])
    assert not _oracle_threads()


def test_a_worker_thread_computes_at_the_callers_torch_threads_to_the_bit():
    """A new thread ran the float64 oracle with more BLAS threads than the caller's one, rounding differently
    (5.6e-17 on this case, torch 2.13 on 2 cores); the workers of verify take the caller's thread count."""
    from rnnexport.verification.runners import worker_pool
    from rnnexport.verification.runners.torch_runner import torch_threads

    cfg = load_config(next(p for p in SHIPPED if p.stem == "rnn_tanh_nobias"))
    module, _ = export_config(cfg)
    case = next(c for c in make_cases(cfg, 0) if c.name == "batch1")
    with torch_threads(1):
        oracle = Float64Oracle(module)
        here = oracle.expected(case)
        pool = worker_pool("rnnexport-test")
        there = pool.submit(oracle.expected, case).result()
        pool.shutdown()
    assert here.keys() == there.keys()
    for name in here:
        assert np.array_equal(here[name], there[name]), name


def _resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(engine._malloc_trim() is None, reason="the C library here has no malloc_trim (glibc only)")
def test_memory_freed_after_a_large_case_leaves_the_process_and_a_small_cases_is_left_alone():
    """``release_freed``: 64 MiB of freed 64 KiB blocks (below glibc's mmap threshold, so on the heap, between live
    ones) stay resident after a small case and leave the process after a case of ``RELEASE_BYTES``."""
    small = engine.Case("small", {"input": np.zeros(4, np.float32)}, "small")
    large = engine.Case("large", {"input": np.zeros(engine.RELEASE_BYTES, np.uint8)}, "large")
    blocks = [np.ones(8192) for _ in range(2048)]
    del blocks[::2]
    before = _resident()
    engine.release_freed(small)
    assert before - _resident() < 8 << 20
    engine.release_freed(large)
    assert before - _resident() >= 48 << 20
    del blocks
