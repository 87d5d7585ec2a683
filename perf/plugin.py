"""The pytest plugin behind ``pytest perf``: loaded by the root conftest.py.

It wires pytest to the suite: which cases run (parametrization), threads, the machine
fingerprint, the saved baseline and the gate's verdicts, atomic saves, reports and exit codes.
The work is done elsewhere: ``measure`` times, ``baseline`` and ``gate`` judge, ``results``
reads and writes, ``render`` formats, ``pb`` is all that touches pytest-benchmark's internals.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import pytest

import kernels
from kernels import tutorial

from . import callgrind, cli, gate, machine, measure, pb, processes, render, results
from .baseline import BaselineError, SavedGate, check_comparable, choose
from .cases import OUT_FORMS, PROBES, Case, probe_problem, roofline_probe
from .options import Settings, add_options, settings
from .results import Metric

SESSION = pytest.StashKey["PerfSession"]()
# fixture -> what its cases time; each is parametrized over backends, sizes (not the probes) and dtypes.
KINDS = {
    "stage_case": tuple(kernels.STAGES),
    "step_case": ("train_step",),
    "tutorial_case": ("tutorial_step",),
    "roofline_case": PROBES,
    "stage_out_case": OUT_FORMS,
    "workspace_case": ("workspace_step",),
    "graph_case": ("graph_step",),
}


# Exit codes of `pytest perf` beyond pytest's own (0 pass, 1 failed, 2 interrupted, 3 internal
# error, 4 usage error, 5 nothing collected): 1 is kept for regressions alone.
EXIT_ENVIRONMENT = 6   # the run could not be saved, a report not written, a child process failed
EXIT_CHECK_FAILED = cli.CHECK_FAILED  # a test failed that is not a regression: a kernel's wrong result, an error
REGRESSED_MARK = ("perf_verdict", "regressed")  # on the report of a benchmark the gate failed


@dataclass
class PerfSession:
    """This run's configuration and state: what runs, what was measured, what the gate decided."""

    settings: Settings
    threads: dict[str, int]
    gate: SavedGate | None = None         # set when --benchmark-compare found a usable baseline
    compare_asked: bool = False           # --benchmark-compare was given (with or without a baseline)
    storage: str = ""
    collected: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    group_order: dict[str, int] = field(default_factory=dict)
    measured: dict[str, list[float]] = field(default_factory=dict)   # name -> samples, of every benchmark timed
    comparisons: list[gate.Comparison] = field(default_factory=list)
    failed: dict[str, bool] = field(default_factory=dict)            # node id -> failed on a regression
    errors: list[str] = field(default_factory=list)                  # environment failures, said at the end
    warnings: list[str] = field(default_factory=list)                # said in the report header
    in_processes: dict[str, processes.Measured] | None = None        # measured by child processes, when used
    verdicts: dict[str, gate.Comparison] = field(default_factory=dict)  # decided on processes, before the tests

    @functools.cached_property
    def fingerprint(self) -> dict[str, object]:
        """This machine's fingerprint, taken once (threads are pinned by then): saving, comparing
        and the drift history all need it, and on a GPU machine it runs nvidia-smi."""
        return machine.fingerprint()

    def judge(self, name: str, samples: list[float], note: str = "") -> gate.Comparison | None:
        return None if self.gate is None else self.gate.judge(name, samples, note)

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        processes.note_progress(nodeid)  # in a child: which benchmark a crash happened in

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Every failed test (under xdist, as the controller receives it), and whether the gate failed it."""
        if report.failed:
            self.failed[report.nodeid] = REGRESSED_MARK in report.user_properties

    def finished(self, name: str, samples: list[float], verdict: gate.Comparison | None, item: pytest.Item) -> None:
        """A benchmark is measured: keep its samples and verdict; a regression fails its test."""
        self.measured[name] = samples
        if verdict is None:
            return
        self.comparisons.append(verdict)
        if verdict.verdict == gate.REGRESSED:
            item.user_properties.append(REGRESSED_MARK)
            pytest.fail(render.regression_line(verdict, self.settings.metric), pytrace=False)


def perf_session(config: pytest.Config) -> PerfSession:
    return config.stash[SESSION]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perf_threshold(value): the gate's threshold for this benchmark, e.g. '25%'")
    s = settings(config)
    if Metric(s.metric).counted:
        why = callgrind.valgrind_problem()  # this process starts the counting ones: valgrind must run here
        if why:
            raise pytest.UsageError(why)
    perf = PerfSession(s, machine.pin_threads(s.threads))
    _ = perf.fingerprint  # taken now, threads pinned, before anything the run loads could change what it lists
    config.stash[SESSION] = perf
    config.pluginmanager.register(perf, "perf-session")
    threshold_source = _take_over_compare_fail(config, perf)
    _choose_baseline(config, perf, threshold_source)


def _take_over_compare_fail(config: pytest.Config, perf: PerfSession) -> str:
    """``--benchmark-compare-fail=median:10%`` sets the gate's threshold; the gate does the rest.

    pytest-benchmark's own check compares one statistic of one run with no statistics and ends
    the run with a traceback and every test passed; ours fails the regressed tests instead.
    """
    checks = config.getoption("benchmark_compare_fail", None)
    if not checks:
        return ""
    if not pb.compare_option(config):
        raise pytest.UsageError("--benchmark-compare-fail needs --benchmark-compare (the saved run to compare against)")
    for check in checks:
        if type(check).__name__ != "PercentageRegressionCheck":
            raise pytest.UsageError(f"--benchmark-compare-fail={check.field}:{check.threshold}: the gate takes a "
                                    f"percentage, e.g. --benchmark-compare-fail=median:10%")
    strictest = min(checks, key=lambda c: c.threshold)
    perf.settings = Settings(**{**perf.settings.__dict__, "threshold": strictest.threshold / 100})
    config.option.benchmark_compare_fail = None
    return (f"{strictest.threshold:g}% from --benchmark-compare-fail "
            f"(the gate compares medians statistically, whatever the statistic named)")


def _choose_baseline(config: pytest.Config, perf: PerfSession, threshold_source: str) -> None:
    """Resolve and validate what --benchmark-compare names, before pytest-benchmark loads it.

    A named baseline that is missing, unreadable, invalid, foreign or of another metric is a
    one-line usage error; bare --benchmark-compare takes the newest saved run that loads, and with
    none at all gates nothing (a first run). pytest-benchmark then loads exactly the file chosen.
    """
    spec = pb.compare_option(config)
    if spec is None:
        return
    perf.compare_asked = True
    storage = pb.open_storage(config)
    if not pb.is_file_storage(storage):
        raise pytest.UsageError("--benchmark-compare: the gate reads baselines from file storage only "
                                "(--benchmark-storage=file://PATH)")
    perf.storage = str(pb.folder_of(storage))
    try:
        files = pb.saved_files(storage) if spec is True else pb.query(storage, spec)
        run, warnings = choose(spec, files, perf.storage)
        if run is not None:
            warnings.append(check_comparable(run, perf.fingerprint, Metric(perf.settings.metric),
                                             perf.settings.allow_foreign_baseline))
    except ValueError as exc:  # a spec pytest-benchmark's storage cannot read as a file, number or glob
        raise pytest.UsageError(f"--benchmark-compare={spec}: {exc}") from None
    except BaselineError as exc:
        raise pytest.UsageError(str(exc)) from None
    perf.warnings += [w for w in warnings if w]
    if run is None:
        pb.set_compare(config, None)
        return
    pb.set_compare(config, run.source)
    s = perf.settings
    perf.gate = SavedGate(run, s.threshold, s.alpha, threshold_source=threshold_source, processes=s.processes)


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = perf_session(config)
    backends = ", ".join(s.settings.backends) or f"available ({', '.join(kernels.available_backends())})"
    return [f"perf: backends {backends}; sizes {', '.join(p.name for p in s.settings.sizes)}; "
            f"dtypes {', '.join(s.settings.dtypes)}; threads {s.threads}; timer {s.settings.timer}; "
            f"metric {s.settings.metric}"]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # The momentary clock differs run to run and would make every baseline look foreign.
    for key in ("hz_actual", "hz_actual_friendly"):
        machine_info.get("cpu", {}).pop(key, None)
    machine_info["perf_fingerprint"] = perf_session(config).fingerprint


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_compare_machine_info(config: pytest.Config, benchmarksession, machine_info: dict,
                                          compared_benchmark: dict) -> None:
    """The suite's fingerprint is the rule, and the baseline passed it (``_choose_baseline``): pytest-benchmark's
    own check, which compares host names too and prints both dicts (and crashes for a storage outside the
    working directory), sees equal machine_info. Only the copy in memory changes."""
    compared_benchmark["machine_info"] = machine_info


def cases(config: pytest.Config, stages: tuple[str, ...]) -> list:
    """pytest params for every (size, stage, backend, dtype); what cannot run here is skipped with the reason."""
    s = perf_session(config).settings
    names = list(s.backends) or kernels.known_backends()
    params = []
    for dtype in s.dtypes:
        sizes = s.sizes if stages != PROBES else (None,)
        for size in sizes:
            for stage in stages:
                for name in names:
                    b, reason = _open(name, dtype)
                    if size is None:
                        problem = probe_problem(stage, b is None or b.device_name == "cpu", dtype)
                    else:
                        problem = size.with_dtype(dtype)
                    case = Case(stage, name, problem)
                    reason = reason or _cannot_run(case, b, Metric(s.metric).counted)
                    marks = [pytest.mark.skip(reason=reason)] if reason else []
                    params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@functools.cache
def _open(name: str, dtype: str) -> tuple[kernels.Backend | None, str]:
    try:
        return kernels.backend(name, dtype), ""
    except kernels.KernelError as exc:
        return None, str(exc)


def _cannot_run(case: Case, b: kernels.Backend, counted: bool = False) -> str:
    if counted:
        why = measure.cannot_count(case, b)
        if why:
            return why
    if case.stage == "tutorial_step" and b.raw.FAMILY not in tutorial.STEPS:
        return f"the tutorial has no code for {b.raw.FAMILY}"
    if case.stage == "graph_step":
        return b.graph_unavailable()  # '' where a CUDA graph can be captured
    if case.stage in PROBES:
        return ""
    try:  # the benchmark's arrays, and the float64 reference check where it shares the device's memory
        b.check_fits(case.problem, check=True)
    except kernels.KernelError as exc:
        return str(exc)
    return ""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, stages in KINDS.items():
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, cases(metafunc.config, stages), indirect=True)


@dataclass(frozen=True)
class Runnable:
    """What a perf test body calls: ``stage_case.run(benchmark)``."""

    case: Case
    session: PerfSession
    item: pytest.Item

    def run(self, benchmark) -> None:
        measure.run(benchmark, self.case, self.session, self.item)


def _runnable(request: pytest.FixtureRequest) -> Runnable:
    """Every case fixture (``stage_case``, ``step_case``, ...): its parametrized Case, bound to the session."""
    return Runnable(request.param, perf_session(request.config), request.node)


(stage_case, step_case, tutorial_case, roofline_case, stage_out_case, workspace_case,
 graph_case) = (pytest.fixture(name=name)(_runnable) for name in KINDS)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """The run's command and settings; each stage's share of its roofline measured in this run
    (matmuls and steps of peak_matmul, the rest of peak_copy)."""
    perf = perf_session(config)
    s = perf.settings
    output_json["perf"] = {
        "command": " ".join(["pytest", *config.invocation_params.args]),
        "backends": list(s.backends) or kernels.available_backends(),
        "sizes": [p.name for p in s.sizes],
        "dtypes": list(s.dtypes),
        "threads": perf.threads,
        "timer": s.timer,
        "metric": s.metric,
    }
    if perf.failed:
        output_json["perf"]["failed tests"] = sorted(perf.failed)  # saved only with --perf-save-failed
    runs = [b.get("extra_info", {}) for b in output_json["benchmarks"]]
    peaks = {(e["stage"], e["backend"], e["dtype"]): e for e in runs if e.get("stage") in PROBES}
    for info in runs:
        stage = info.get("stage")
        if stage is None or stage in PROBES:
            continue
        probe = roofline_probe(stage)
        matmul = probe == "peak_matmul"
        peak = peaks.get((probe, info["backend"], info["dtype"]))
        if peak:
            key = "gflops" if matmul else "gbps"
            info["peak_share"] = info[key] / peak[key]
            info["peak"] = f"{peak[key]:.4g} {'GFLOP/s' if matmul else 'GB/s'} ({peak['stage']})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = perf_session(config)
    s = session.settings
    for item in items:
        case = _case_of(item)
        if case is None:
            continue
        session.group_order.setdefault(case.group, len(session.group_order))
        threshold = s.threshold
        for pattern, value in s.thresholds:
            if gate_match(pattern, case):
                threshold = value
        marker = item.get_closest_marker("perf_threshold")
        if marker and marker.args:
            try:
                threshold = gate.parse_threshold(marker.args[0])
            except gate.GateError as exc:
                raise pytest.UsageError(f"{item.nodeid}: perf_threshold marker: {exc}") from None
        session.thresholds[item.nodeid] = threshold


def gate_match(pattern: str, case: Case) -> bool:
    return fnmatchcase(case.id, pattern) or pattern == case.group or pattern == case.stage


def _case_of(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for fixture in KINDS:
        if fixture in callspec.params:
            return callspec.params[fixture]
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """What runs: the benchmarks left after -k/-m deselection (the m of the gate's correction)."""
    perf = perf_session(session.config)
    perf.collected = [item.nodeid for item in session.items if _case_of(item) is not None]
    if perf.gate is None:
        return
    perf.gate.thresholds = perf.thresholds
    perf.gate.select(perf.collected)
    saved = list(results.readable_runs(results.saved_files(perf.storage)))  # its bound depends on m, known only now
    perf.gate.load_history(saved, perf.fingerprint, Metric(perf.settings.metric), perf.settings.history)


def pytest_sessionstart(session: pytest.Session) -> None:
    perf = perf_session(session.config)
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    for warning in perf.warnings:  # said in every verbosity, before the tests run
        if terminal is not None:
            terminal.write_line(f"perf: warning: {warning}", yellow=True)
    bs = pb.session(session.config)
    if bs is not None:
        pb.replace_save(bs, functools.partial(_save, bs, perf))


def _save(bs, perf: PerfSession, output_json: dict, name: str) -> None:
    """Save a run whole or not at all, under the next free number, never replacing a file (results.save_new).
    SIGTERM waits until the file is complete; a failure is said at the end and the run's exit code says so."""
    folder = pb.storage_folder(bs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _sigterm_deferred():
            path = results.save_new(folder, name, pb.dumps(output_json))
    except (OSError, results.ResultsError) as exc:
        perf.errors.append(f"the run could not be saved in {folder}: {getattr(exc, 'strerror', None) or exc}")
        return
    pb.info(bs, f"Saved benchmark data in: {path}")


@contextlib.contextmanager
def _sigterm_deferred():
    """SIGTERM is held until the block ends (then it takes effect as usual): a save is never cut in half."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtestloop(session: pytest.Session):
    """With --perf-processes P > 1, or a counted metric: every selected benchmark measured (counted) in P
    fresh processes, and judged on them, before the test bodies run (they check correctness and record
    what the processes measured)."""
    perf = perf_session(session.config)
    bs = pb.session(session.config)
    counting = Metric(perf.settings.metric).counted
    timing = perf.settings.processes > 1 and not processes.is_child() and not Metric(perf.settings.metric).counted
    if (counting or timing) and bs is not None and not bs.disabled:
        items = [i for i in session.items if _case_of(i) is not None and not i.get_closest_marker("skip")]
        if items and not session.config.option.collectonly:
            try:
                _measure_in_processes(session.config, perf, items)
            except (processes.ChildError, callgrind.CallgrindError) as exc:
                pytest.exit(f"perf: {exc}", returncode=EXIT_ENVIRONMENT)
    return (yield)


def _measure_in_processes(config: pytest.Config, perf: PerfSession, items: list[pytest.Item]) -> None:
    terminal = config.pluginmanager.get_plugin("terminalreporter")

    def log(line: str) -> None:
        if terminal is not None:
            terminal.write_line(f"perf: {line}")

    rootdir = config.rootpath
    s = perf.settings
    counted = Metric(s.metric).counted
    case_of = {item.nodeid: _case_of(item) for item in items}
    if counted:
        measure_all = functools.partial(processes.count_in_servers, s=s, count=s.processes, rootdir=rootdir,
                                        parent_args=config.invocation_params.args, log=log)
    else:
        run = functools.partial(processes.run_processes, s=s, budget=processes.Budget(*pb.config_limits(config)),
                                count=s.processes, rootdir=rootdir, cwd=config.invocation_params.dir,
                                parent_args=config.invocation_params.args, log=log)

        def measure_all(cases: dict[str, Case], label: str = "process") -> dict[str, processes.Measured]:
            return run([f"{rootdir}/{name}" for name in cases], label=label)

    if counted:
        log(f"counting {len(items)} benchmarks under valgrind, {s.processes} fresh process(es) each, "
            "one zygote per backend")
    else:
        log(f"measuring {len(items)} benchmarks in {s.processes} fresh processes, one after the other")
    perf.in_processes = measure_all(case_of)
    if perf.gate is None:
        return
    for name, m in perf.in_processes.items():
        perf.verdicts[name] = perf.gate.judge_processes(name, m.values(), m.samples)
    # gate.undecided, and a regression seen by one set of processes is confirmed by as many more: the
    # process rule has no significance test to guard it (gate.compare_processes).
    again = [name for name, v in perf.verdicts.items() if v is not None and (gate.undecided(v) or v.verdict == gate.REGRESSED)]
    if not again:
        return
    log(f"{len(again)} undecided or regressed: {'counting' if counted else 'measuring'} them in {s.processes} more "
        "processes")
    for name, m in measure_all({name: case_of[name] for name in again}, label="again").items():
        both = perf.in_processes[name]
        both.per_process += m.per_process
        perf.verdicts[name] = perf.gate.judge_processes(
            name, both.values(), both.samples, note=f"measured again in {len(m.per_process)} more processes")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """Before pytest-benchmark saves: a partial or failed run is not saved. After every report is
    written: the exit code (1 for regressions alone) and any environment failure, in one line each."""
    bs = pb.session(session.config)
    perf = perf_session(session.config)
    stopped = exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or session.shouldstop or session.shouldfail
    if bs is not None and pb.wants_save(bs):
        if stopped:  # a partial run must never become the baseline the next --benchmark-compare picks
            pb.cancel_save(bs)
            why = ("interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED else
                   f"stopped early ({stopped if isinstance(stopped, str) else f'exit status {exitstatus}'})")
            pb.warn(bs, f"Not saving benchmark data: the run was {why}.")
        elif perf.failed and not perf.settings.save_failed:
            pb.cancel_save(bs)
            pb.warn(bs, f"Not saving benchmark data: {len(perf.failed)} test(s) failed, and a failed run must not "
                        "become a baseline (--perf-save-failed saves it anyway, marked in its 'perf' header).")
    yield
    if session.exitstatus == pytest.ExitCode.TESTS_FAILED and not all(perf.failed.values()):
        session.exitstatus = EXIT_CHECK_FAILED
    for error in perf.errors:
        print(f"perf: error: {error}", file=sys.stderr)
    if perf.errors and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, EXIT_CHECK_FAILED):
        session.exitstatus = EXIT_ENVIRONMENT


@pytest.hookimpl(hookwrapper=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks, group_by):
    """Groups in execution order (size, then stage), not alphabetical, when grouped by group."""
    outcome = yield
    order = perf_session(config).group_order
    if group_by == "group":
        outcome.force_result(sorted(outcome.get_result(), key=lambda g: order.get(g[0], len(order))))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    perf = perf_session(config)
    bs = pb.session(config)
    if not perf.compare_asked or bs is None or bs.disabled:
        return
    tr = terminalreporter
    tr.section("perf gate")
    if perf.gate is None:
        nothing = (f"No baseline to compare with in {perf.storage}: nothing was gated. "
                   "Save one first: pytest perf --benchmark-autosave (or --benchmark-save=NAME).")
        tr.write_line(nothing)
        # The reports are still written (a CI step reads them): no rows, and why.
        rows, meta = [], {"mode": "saved baseline", "baseline": "none", "gated": nothing}
    else:
        rows = [*perf.comparisons, *perf.gate.unmatched(perf.measured, perf.collected)]
        meta = perf.gate.meta(perf.threads)
        for line in render.to_text(rows, meta).splitlines():
            tr.write_line(line)
    s = perf.settings
    try:
        if s.report_json:
            results.write_json(s.report_json, results.verdict_report(rows, meta))
        if s.report_md:
            with open(s.report_md, "a", encoding="utf8") as fh:
                fh.write(render.to_markdown(rows, meta))
    except OSError as exc:
        perf.errors.append(f"the gate's report could not be written: {exc.strerror or exc} ({exc.filename})")
