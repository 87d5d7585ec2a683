"""One ``pytest perf`` run: its settings and state, and what it does, step by step.

choose and check the baseline (``configure``), take the collection (``collected``), measure in
processes before the tests (``measure_selection``), run each test body (``run``: check, time or
take what the processes measured, judge, record), save (``save``), decide the exit code
(``finish``) and report (``report``). ``perf.plugin``'s hooks only call these methods.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import sys
from dataclasses import dataclass, field

import pytest

import kernels

from . import (
    cli,
    command,
    confirm,
    counting,
    gate,
    machine,
    measured,
    pb,
    processes,
    render,
    results,
    revisions,
    roofline,
    summary,
    zygote,
)
from .baseline import SavedGate, check_comparable, choose, pooled, since_last_step
from .callgrind import valgrind_problem
from .cases import Bound, Case, bind
from .counting import CountingZygotes
from .counting import serve as serve_counts
from .errors import BaselineError, MeasureError, UsageError
from .measure import Plan
from .measured import Measured, ProcessResult, Strategy
from .options import Settings, settings
from .params import case_of, threshold_for
from .processes import Budget, ForkedProcesses, FreshProcesses, serve_times
from .progress import Progress
from .statistic import median
from .timers import timer_for

# Exit codes of `pytest perf` beyond pytest's own (0 pass, 1 failed, 2 interrupted, 3 internal
# error, 4 usage error, 5 nothing collected): 1 is kept for regressions alone.
EXIT_ENVIRONMENT = 6   # the run could not be saved, a report not written, a child process failed
EXIT_CHECK_FAILED = cli.CHECK_FAILED  # a test failed that is not a regression: a kernel's wrong result, an error
REGRESSED_MARK = ("perf_verdict", "regressed")  # on the report of a benchmark the gate failed
HISTORY_SPAN = 50  # saved runs --perf-baseline-window steps reads to find each benchmark's last step


@dataclass
class PerfSession:
    """This run's configuration and state: what runs, what was measured, what the gate decided."""

    settings: Settings
    threads: dict[str, int]
    config: pytest.Config
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
    in_processes: dict[str, Measured] | None = None                  # measured by child processes, when used
    verdicts: dict[str, gate.Comparison] = field(default_factory=dict)  # decided on processes, before the tests
    threshold_source: str = ""            # set when --benchmark-compare-fail gave the threshold
    counted_path: dict[str, str] = field(default_factory=dict)       # the code path the counting processes ran
    shown: dict[str, tuple[Case, float, dict]] = field(default_factory=dict)  # name -> (case, the gate's value, extra_info)
    deselected: set[str] = field(default_factory=set)                # node ids -k/-m left out

    @classmethod
    def configure(cls, config: pytest.Config) -> PerfSession:
        """The run's settings checked, threads pinned, the fingerprint taken (a zygote takes none: it only
        measures), the compare options taken over."""
        s = settings(config)
        if zygote.serving():  # a numpy zygote under valgrind never imports torch
            torch_needed = any(not name.startswith("numpy") for name in s.backends or ["torch"])
            return cls(s, machine.pin_threads(s.threads, import_torch=torch_needed), config)
        if s.metric.counted:
            why = valgrind_problem()  # this process starts the counting ones: valgrind must run here
            if why:
                raise pytest.UsageError(why)
        perf = cls(s, machine.pin_threads(s.threads), config)
        _ = perf.fingerprint  # taken now, threads pinned, before anything the run loads could change what it lists
        perf._take_over_compare_fail()
        return perf

    @functools.cached_property
    def fingerprint(self) -> dict[str, object]:
        """This machine's fingerprint, taken once (threads are pinned by then): saving, comparing
        and the drift history all need it, and on a GPU machine it runs nvidia-smi."""
        return machine.fingerprint()

    def saved_fingerprint(self) -> dict[str, object]:
        """The fingerprint this run saves: a counted run's code path is the one its counting processes ran."""
        if self.counted_path:
            return {**self.fingerprint, "code_path": self.counted_path}
        return self.fingerprint

    # ------------------------------------------------------------------ the baseline

    def _take_over_compare_fail(self) -> None:
        """``--benchmark-compare-fail=median:10%`` sets the gate's threshold; the gate does the rest.

        pytest-benchmark's own check compares one statistic of one run with no statistics and ends
        the run with a traceback and every test passed; ours fails the regressed tests instead.
        """
        checks = self.config.getoption("benchmark_compare_fail", None)
        if not checks:
            return
        if not pb.compare_option(self.config):
            raise pytest.UsageError("--benchmark-compare-fail needs --benchmark-compare (the saved run to compare against)")
        for check in checks:
            if type(check).__name__ != "PercentageRegressionCheck":
                raise pytest.UsageError(f"--benchmark-compare-fail={check.field}:{check.threshold}: the gate takes a "
                                        f"percentage, e.g. --benchmark-compare-fail=median:10%")
        strictest = min(checks, key=lambda c: c.threshold)
        self.settings = dataclasses.replace(self.settings, threshold=strictest.threshold / 100)
        self.config.option.benchmark_compare_fail = None
        self.threshold_source = (f"{strictest.threshold:g}% from --benchmark-compare-fail "
                                 f"(the gate compares medians statistically, whatever the statistic named)")

    def choose_baseline(self) -> None:
        """Resolve and validate what --benchmark-compare names, before pytest-benchmark loads it.

        A named baseline that is missing, unreadable, invalid, foreign or of another metric is a
        one-line usage error; bare --benchmark-compare takes the newest saved run that loads, and with
        none at all gates nothing (a first run). pytest-benchmark then loads exactly the file chosen.
        """
        spec = pb.compare_option(self.config)
        if spec is None:
            return
        self.compare_asked = True
        storage = pb.open_storage(self.config)
        if not pb.is_file_storage(storage):
            raise pytest.UsageError("--benchmark-compare: the gate reads baselines from file storage only "
                                    "(--benchmark-storage=file://PATH)")
        self.storage = str(pb.folder_of(storage))
        s = self.settings
        ignore = ("code_path",) if s.metric.counted else ()  # a counted run's is known once its zygotes report it
        try:
            files = pb.saved_files(storage) if spec is True else pb.query(storage, spec)
            # Across a stack change, software fields are not asked to match (the hardware still is).
            stack = machine.STACK if s.stack_change else ()
            # A window of steps reads the whole history of this machine: its steps say where each benchmark's starts.
            span = HISTORY_SPAN if s.baseline_window == "steps" else s.history
            choice = choose(spec, files, self.storage, fingerprint=self.fingerprint, metric=s.metric,
                            allow_foreign=s.allow_foreign_baseline, history=span,
                            across_commits=s.baseline_window != "code", ignore=(*ignore, *stack))
            warnings = list(choice.warnings)
            if choice.newest is not None:
                warnings.append(check_comparable(choice.newest, self.fingerprint, s.metric, s.allow_foreign_baseline,
                                                 ignore, stack_change=s.stack_change))
        except ValueError as exc:  # a spec pytest-benchmark's storage cannot read as a file, number or glob
            raise pytest.UsageError(f"--benchmark-compare={spec}: {exc}") from None
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.warnings += [w for w in warnings if w]
        pb.set_compare(self.config, choice.newest.source if choice.newest is not None else None)
        if choice.newest is not None:
            base = since_last_step(choice.runs, s.history) if s.baseline_window == "steps" else pooled(choice.runs)
            self.gate = SavedGate(base, s.threshold, s.alpha, threshold_source=self.threshold_source,
                                  processes=s.processes, runs=choice.runs, window=s.baseline_window)

    def judge(self, name: str, samples: list[float], note: str = "") -> gate.Comparison | None:
        return None if self.gate is None else self.gate.judge(name, samples, note)

    # ------------------------------------------------------------------ the collection

    def collected_items(self, items: list[pytest.Item]) -> None:
        """Each benchmark's group order and threshold."""
        for item in items:
            case = case_of(item)
            if case is not None:
                self.group_order.setdefault(case.group, len(self.group_order))
                self.thresholds[item.nodeid] = threshold_for(item, case, self.settings)

    def collection_finished(self, items: list[pytest.Item]) -> None:
        """What runs: the benchmarks left after -k/-m deselection (the m of the gate's correction)."""
        self.collected = [item.nodeid for item in items if case_of(item) is not None]
        if self.gate is None:
            return
        self.gate.thresholds = self.thresholds
        self.gate.select(self.collected)
        saved = list(results.readable_runs(results.saved_files(self.storage)))  # its bound depends on m, known only now
        self.gate.load_history(saved, self.fingerprint, self.settings.metric, self.settings.history)

    # ------------------------------------------------------------------ measuring in processes

    def _log(self, line: str) -> None:
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(f"perf: {line}")

    def _warn(self, line: str) -> None:
        """A warning on a line of its own (never glued to pytest's progress dots)."""
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.ensure_newline()
            terminal.write_line(f"perf: warning: {line}", yellow=True)

    def _strategy(self, cases: dict[str, Case]) -> Strategy:
        s, args = self.settings, self.config.invocation_params.args
        passed = [*command.passed_through(args), *s.child_args()]
        rootdir, cwd = self.config.rootpath, self.config.invocation_params.dir
        if s.metric.counted:
            return CountingZygotes(s.processes, s.metric, rootdir, passed, check_path=self._check_code_path)
        budget = Budget(*pb.config_limits(self.config))
        on_cpu = all(kernels.backend(c.backend).device_name == "cpu" for c in cases.values())
        if s.launch == "fork" or (s.launch == "auto" and on_cpu):
            return ForkedProcesses(s.processes, budget, passed, rootdir, cwd, s.threads)
        return FreshProcesses(s.processes, budget, passed, rootdir, cwd, s.threads)

    def _progress(self, steps: int, label: str) -> Progress:
        """A live bar where the output is a terminal and pytest is not quiet; one line per step elsewhere."""
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        isatty = getattr(terminal, "isatty", False)  # a callable in pytest 8.4 and later, a bool before
        live = terminal is not None and bool(isatty() if callable(isatty) else isatty) and self.config.get_verbosity() >= 0
        return Progress(steps, label, self._log, live=live)

    def _check_code_path(self, path: dict[str, str]) -> None:
        """A counted baseline is compared only with counts of the same code path (BaselineError otherwise)."""
        self.counted_path.update(path)
        saved = (self.gate.baseline.fingerprint or {}).get("code_path") if self.gate is not None else None
        if saved is None:
            return
        changes = machine.differences({"code_path": saved}, {"code_path": {**saved, **self.counted_path}})
        if changes and not self.settings.allow_foreign_baseline:
            raise BaselineError(f"the baseline {self.gate.baseline.source} was counted on another code path "
                                f"({'; '.join(changes)}): save a new one here with --benchmark-autosave, or compare "
                                "anyway with --perf-allow-foreign-baseline")

    def measure_selection(self, session: pytest.Session) -> None:
        """With --perf-processes P > 1, or a counted metric: every selected benchmark measured (counted) in P
        processes, and judged on them, before the test bodies run (they check correctness and record what the
        processes measured). A failed process ends the run: one line, exit code 6. In a zygote: serve."""
        s = self.settings
        cases = {i.nodeid: case_of(i) for i in session.items if case_of(i) is not None and not i.get_closest_marker("skip")}
        if zygote.serving():
            if zygote.serving() == "count":
                serve_counts(cases)
            else:
                serve_times(cases, s.timer)
            session.items[:] = []  # a zygote runs no test itself
            return
        bs = pb.session(self.config)
        wanted = s.metric.counted or (s.processes > 1 and not processes.is_child())
        if not wanted or bs is None or bs.disabled or self.config.option.collectonly or not cases:
            return
        strategy = self._strategy(cases)
        if s.metric.counted:
            self._log(f"counting {len(cases)} benchmarks under valgrind, {s.processes} fresh process(es) each, "
                      "one zygote per backend")
            dropped = counting.left_out()
            if dropped:  # said, never silent: they only name the session, and would move the counts
                self._log(f"counting without the session's variables {', '.join(dropped)} (docs/method.md)")
            if s.threads > 1:
                self._log(f"counting runs one thread a pool: --perf-threads {s.threads} applies to timed runs only")
        else:
            how = "a zygote each" if isinstance(strategy, ForkedProcesses) else "fresh"
            self._log(f"measuring {len(cases)} benchmarks in {s.processes} processes ({how}), one after the other")
        try:
            with self._progress(len(cases) * strategy.processes, "measuring") as progress:
                self.in_processes = strategy.measure(cases, progress)
            again = self._judge_processes()
            if self.gate is not None:
                self.gate.machine_state = tuple(self.gate.probe_changes(self.in_processes))
            if again and not self._confirm_by_ab(again):
                self._log(f"{len(again)} undecided or regressed: {'counting' if s.metric.counted else 'measuring'} them "
                          f"in {s.processes} more processes")
                with self._progress(len(again) * strategy.processes, "again") as progress:
                    more = strategy.measure({name: cases[name] for name in again}, progress, label="again")
                for name, m in more.items():
                    self.in_processes[name].per_process += m.per_process
                self._judge_processes(again, note=f"measured again in {s.processes} more processes",
                                      evidence="re-measured processes")
        except BaselineError as exc:
            pytest.exit(f"perf: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        except MeasureError as exc:
            pytest.exit(f"perf: {exc}", returncode=EXIT_ENVIRONMENT)

    def _judge_processes(self, names: list[str] | None = None, note: str = "", evidence: str = "saved processes") -> list[str]:
        """Judge ``names`` (default: all) on their processes; the ones to confirm: gate.undecided, and a
        regression seen by one set of processes (the process rule has no significance test to guard it)."""
        if self.gate is None or self.in_processes is None:
            return []
        for name in names if names is not None else list(self.in_processes):
            m = self.in_processes[name]
            verdict = self.gate.judge_processes(name, m.values(), m.samples, note=note)
            self.verdicts[name] = verdict.decided_by(evidence) if verdict is not None else None
        return [n for n, v in self.verdicts.items() if v is not None and (gate.undecided(v) or v.verdict == gate.REGRESSED)]

    def _confirm_by_ab(self, names: list[str]) -> bool:
        """Suspects decided by an interleaved A/B of the baseline's own commit against this run's code; False
        (and the reason in the report's header) where that cannot be, to be confirmed as processes."""
        s = self.settings
        if s.metric.counted or s.confirm != "ab":
            return False
        why = confirm.unavailable(self.config.rootpath, self.gate.commit, self.gate.baseline.dirty)
        if not why and machine.differences(self.gate.baseline.fingerprint or {}, self.fingerprint):
            why = ("the baseline ran on another machine or software stack: an A/B here would measure both sides "
                   "on this one")
        if why:
            self.gate.confirmation = f"measured again in more processes: {why}"
            return False
        self._log(f"{len(names)} undecided or regressed: an A/B of them against the baseline's commit "
                  f"{self.gate.commit[:12]}")
        try:
            done = confirm.by_ab(names, repo=self.config.rootpath, rootdir=self.config.rootpath, commit=self.gate.commit,
                                 base_args=confirm.baseline_plugins(self.gate.baseline.header.get("command")),
                                 head_args=command.passed_through(self.config.invocation_params.args),
                                 settings_args=s.child_args(), metric=s.metric, threshold=s.threshold,
                                 thresholds={n: self.thresholds.get(n, s.threshold) for n in names}, log=self._log,
                                 progress=self._progress)
        except UsageError as exc:  # the baseline's commit does not run here (another environment, a broken tree)
            self.gate.confirmation = f"measured again in more processes: the A/B against the baseline's commit " \
                                     f"failed ({str(exc).splitlines()[0][:300]})"
            return False
        self.gate.confirmation = done.how
        for name in names:
            if name in done.verdicts:
                self.verdicts[name] = done.verdicts[name]
        return True

    # ------------------------------------------------------------------ a test body

    def run(self, case: Case, benchmark, item: pytest.Item) -> None:
        """The body of every perf test: check the result, time it (or take what the processes measured),
        judge it, record it."""
        pb.mark_used(benchmark)  # a failed check measures nothing, on purpose
        bound = _checked(case)
        if benchmark.disabled:  # under xdist or --benchmark-disable: one call as a smoke test
            bound.target(*(bound.setup()[0] if bound.setup else bound.args))
            return
        timer = timer_for(bound.backend, self.settings.timer)
        name = benchmark.fullname
        per_process, counts = [], {}
        if self.in_processes is not None:  # measured (or counted) and judged in fresh processes
            m = self.in_processes.get(name)
            if m is None:
                pytest.fail(f"{case.id}: none of the processes measured it (see their lines above)", pytrace=False)
            samples, iterations, verdict = m.samples, 1, self.verdicts.get(name)
            per_process, counts = m.processes, m.counted()
        else:
            plan = Plan(bound, timer, *pb.limits(benchmark))
            samples, iterations = plan.measure(), plan.iterations
            verdict = self.judge(name, samples)
            if verdict is not None and gate.undecided(verdict):
                # Undecided: measured again, twice as many rounds, and decided on all of them.
                samples += plan.measure(2 * plan.rounds)
                verdict = self.judge(name, samples, note=f"measured again, {2 * plan.rounds} more rounds")
        pb.record(benchmark, samples, timer, iterations=iterations, group=case.group)
        benchmark.extra_info.update(extra_info(case, bound, self.settings, self.threads, median(samples),
                                               pb.timer_name(benchmark)))
        if per_process:
            benchmark.extra_info["processes"] = [dataclasses.asdict(p) for p in per_process]
        benchmark.extra_info.update(counts)  # per call: instructions, branches, mispredicts, cache misses, cycles
        value = min(m.values()) if per_process and not self.settings.metric.counted else median(samples)
        self.shown[name] = (case, value, dict(benchmark.extra_info))
        if processes.results_file():  # a child of FreshProcesses: its parent reads this
            measured.append(processes.results_file(), ProcessResult(name, tuple(samples), iterations))
        self._finished(name, samples, verdict, item)

    def _finished(self, name: str, samples: list[float], verdict: gate.Comparison | None, item: pytest.Item) -> None:
        """A benchmark is measured: keep its samples and verdict; a regression fails its test."""
        self.measured[name] = samples
        if verdict is None:
            return
        self.comparisons.append(verdict)
        if verdict.verdict == gate.REGRESSED:
            item.user_properties.append(REGRESSED_MARK)
            pytest.fail(render.regression_line(verdict, self.settings.metric), pytrace=False)

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        processes.note_progress(nodeid)  # in a child: which benchmark a crash happened in

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Every failed test (under xdist, as the controller receives it), and whether the gate failed it."""
        if report.failed:
            self.failed[report.nodeid] = REGRESSED_MARK in report.user_properties

    # ------------------------------------------------------------------ saving

    def update_json(self, output_json: dict) -> None:
        """The run's command and settings in its ``perf`` header; each stage's share of its roofline."""
        s = self.settings
        output_json["perf"] = {
            "command": " ".join(["pytest", *self.config.invocation_params.args]),
            "backends": list(s.backends) or kernels.available_backends(),
            "sizes": [p.name for p in s.sizes],
            "dtypes": list(s.dtypes),
            "threads": self.threads,
            "timer": s.timer,
            "metric": s.metric.value,
            "sources": revisions.sources_digest(self.config.rootpath),  # what "the same code" means without git
        }
        if self.failed:
            output_json["perf"]["failed tests"] = sorted(self.failed)  # saved only with --perf-save-failed
        roofline.add_shares([b.get("extra_info", {}) for b in output_json["benchmarks"]], machine.last_level_cache())

    def save(self, bs, output_json: dict, name: str) -> None:
        """Save a run whole or not at all, under the next free number, never replacing a file (results.save_new).
        SIGTERM waits until the file is complete; a failure is said at the end and the run's exit code says so."""
        folder = pb.storage_folder(bs)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _sigterm_deferred():
                path = results.save_new(folder, name, pb.dumps(output_json))
        except (OSError, results.ResultsError) as exc:
            self.errors.append(f"the run could not be saved in {folder}: {getattr(exc, 'strerror', None) or exc}")
            return
        pb.info(bs, f"Saved benchmark data in: {path}")

    def take_over_tables(self, bs) -> None:
        """pytest-benchmark's own tables give way to the summary, unless --perf-stock-tables asks for them; for
        counts they lose the OPS column (their header still says 'time': the run says what the values are)."""
        if not self.settings.stock_tables:
            pb.hide_tables(bs)
        elif self.settings.metric.counted:
            pb.drop_column(bs, "ops")
            self._log(f"pytest-benchmark's tables below head their values 'time' in 's': they are {self.settings.metric.unit}")

    def withhold_save(self, session: pytest.Session, exitstatus: int) -> None:
        """A partial or failed run is not saved: it must never become the baseline the next compare picks."""
        bs = pb.session(self.config)
        if bs is None or not pb.wants_save(bs):
            return
        stopped = (exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or session.shouldstop
                   or session.shouldfail)
        if stopped:
            pb.cancel_save(bs)
            why = ("interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED else
                   f"stopped early ({stopped if isinstance(stopped, str) else f'exit status {exitstatus}'})")
            self._warn(f"not saving benchmark data: the run was {why}")
        elif self.failed and not self.settings.save_failed:
            pb.cancel_save(bs)
            self._warn(f"not saving benchmark data: {len(self.failed)} test(s) failed, and a failed run must not become a "
                       "baseline (--perf-save-failed saves it anyway, marked in its 'perf' header)")

    # ------------------------------------------------------------------ the end

    def finish(self, session: pytest.Session) -> None:
        """The exit code (1 for regressions alone) and every environment failure, one line each."""
        if session.exitstatus == pytest.ExitCode.TESTS_FAILED and not all(self.failed.values()):
            session.exitstatus = EXIT_CHECK_FAILED
        for error in self.errors:
            print(f"perf: error: {error}", file=sys.stderr)
        if self.errors and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, EXIT_CHECK_FAILED):
            session.exitstatus = EXIT_ENVIRONMENT

    def report(self, tr) -> None:
        """The summary (one grid per size, the roofline, the gate's decisions, the verdict last) and the reports
        --perf-report-json/-md ask for (written with no baseline too)."""
        bs = pb.session(self.config)
        if bs is None or bs.disabled:
            return
        rows, meta = self._verdicts()
        summarized = bool(self.shown) and not self.settings.stock_tables
        if summarized:
            tr.section("perf")
            for line in self._summary(rows, meta):
                tr.write_line(line)
        if not self.compare_asked:
            return
        if not summarized or self.config.get_verbosity() > 0:  # every benchmark's row: -v
            tr.section("perf gate")
            text = render.to_text(rows, meta) if self.gate is not None else meta["gated"]
            for line in text.splitlines():
                tr.write_line(line)
        s = self.settings
        try:
            if s.report_json:
                results.write_json(s.report_json, render.verdict_report(rows, meta))
            if s.report_md:
                with open(s.report_md, "a", encoding="utf8") as fh:
                    fh.write(render.to_markdown(rows, meta))
        except OSError as exc:
            self.errors.append(f"the gate's report could not be written: {exc.strerror or exc} ({exc.filename})")

    def _verdicts(self) -> tuple[list[gate.Comparison], dict]:
        """Every benchmark's verdict (NEW and MISSING rows too), and how they were decided."""
        if self.gate is None:
            if not self.compare_asked:
                return [], {}
            nothing = (f"No baseline to compare with in {self.storage}: nothing was gated. "
                       "Save one first: pytest perf --benchmark-autosave (or --benchmark-save=NAME).")
            return [], {"mode": "saved baseline", "baseline": "none", "gated": nothing}
        return [*self.comparisons, *self.gate.unmatched(self.measured, self.collected)], self.gate.meta(self.threads)

    def _summary(self, rows: list[gate.Comparison], meta: dict) -> list[str]:
        s = self.settings
        if s.metric.counted:
            label = f"the mean of {s.processes} counted process(es)" if s.processes > 1 else "counted once"
        elif self.in_processes is not None:
            label = f"the fastest of {s.processes} processes' minima"
        else:
            label = "the median of one process's rounds"
        gated = self.compare_asked and self.gate is not None
        lines = summary.of_run(self.shown, s.metric, rows if gated else None, meta, self.deselected, label,
                               machine.last_level_cache())
        return [*lines, "", meta["gated"]] if self.compare_asked and self.gate is None else lines


def _checked(case: Case) -> Bound:
    """The case made runnable, its result verified against the float64 reference first: a fast wrong
    kernel fails its benchmark and is never timed (never recorded, in a child of FreshProcesses,
    whose parent checks before it records)."""
    bound = bind(case)
    why = None if processes.checked_by_parent() else bound.check()
    if why:
        pytest.fail(f"{case.id}: {case.backend} computes {case.stage} wrongly: {why}", pytrace=False)
    return bound


def extra_info(case: Case, bound: Bound, s: Settings, threads: dict, median_s: float, timer: str) -> dict:
    """What a saved benchmark says of itself beside its samples: what ran, its work model, and its rates."""
    p = case.problem
    flops, nbytes = p.flops(case.stage), p.bytes(case.stage)
    info = {"stage": case.stage, "backend": case.backend, "device": bound.backend.device_name, "dtype": p.dtype,
            "size": p.name, "shape": {"N": p.N, "D_in": p.D_in, "H": p.H, "D_out": p.D_out}, "metric": s.metric.value,
            "flops": flops, "bytes": nbytes, "threads": threads}
    if not s.metric.counted:  # rates are of time; a count has none
        info.update({"median_s": median_s, "gflops": flops / median_s / 1e9, "gbps": nbytes / median_s / 1e9,
                     "timer": timer})
    return info


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


@dataclass(frozen=True)
class Runnable:
    """What a perf test body calls: ``stage_case.run(benchmark)``."""

    case: Case
    session: PerfSession
    item: pytest.Item

    def run(self, benchmark) -> None:
        self.session.run(self.case, benchmark, self.item)
