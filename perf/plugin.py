"""The pytest plugin behind ``pytest perf``: loaded by the root conftest.py.

It owns everything the one-line benchmark bodies do not say: which cases run, threads,
timers, the machine fingerprint, the baseline and the gate's verdicts.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

import kernels
from kernels import tutorial

from . import gate, history, machine, measure
from .cases import OUT_FORMS, PROBES, Case, free_memory, memory_needed, probe_problem
from .options import Settings, add_options, settings

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


@dataclass
class PerfSession:
    settings: Settings
    threads: dict[str, int]
    threshold_override: str = ""          # set when --benchmark-compare-fail gave the threshold
    baseline: dict[str, dict] | None = None
    baseline_path: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    comparisons: list[gate.Comparison] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    measured: dict[str, list[float]] = field(default_factory=dict)   # name -> samples, of every benchmark timed
    group_order: dict[str, int] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)   # name -> run-to-run drift floor
    history_runs: int = 0

    @functools.cached_property
    def fingerprint(self) -> dict[str, object]:
        """This machine's fingerprint, taken once (threads are pinned by then): saving, comparing
        and the drift history all need it, and on a GPU machine it runs nvidia-smi."""
        return machine.fingerprint()

    @property
    def compared(self) -> int:
        """How many benchmarks of this run have a baseline entry: the m of the Bonferroni split."""
        return sum(name in (self.baseline or {}) for name in self.collected) or 1

    def judge(self, name: str, samples: list[float], confirmed: int = 0) -> gate.Comparison | None:
        if self.baseline is None or name not in self.baseline:
            return None
        base = self.baseline[name]["stats"].get("data")
        threshold = self.thresholds.get(name, self.settings.threshold)
        drift_note = ""
        if self.drift.get(name, 0) > threshold:
            threshold = self.drift[name]
            drift_note = f"threshold raised to the run-to-run drift {threshold:.1%} of {self.history_runs} saved runs"
        if not base:
            return gate.Comparison(name, gate.INCONCLUSIVE, threshold, n_current=len(samples),
                                   note="the baseline kept no raw samples: save it with --benchmark-save-data")
        result = gate.compare_unpaired(name, base, samples, threshold, alpha=self.settings.alpha, tests=self.compared)
        notes = [f"measured again, {confirmed} more rounds" if confirmed else "", drift_note, result.note]
        return gate.Comparison(**{**result.__dict__, "note": "; ".join(n for n in notes if n)})

    def record(self, comparison: gate.Comparison) -> None:
        self.comparisons.append(comparison)

    @staticmethod
    def describe(c: gate.Comparison) -> str:
        return (f"{c.name}: REGRESSED by {c.ratio - 1:+.1%} (interval {c.ci_low - 1:+.1%} .. {c.ci_high - 1:+.1%}), "
                f"median {c.baseline_median * 1e6:.4g} us -> {c.current_median * 1e6:.4g} us, "
                f"threshold {c.threshold:.1%}, p={c.p_value:.2g}")

    def meta(self) -> dict:
        if self.history_runs >= 3:
            drift = f"thresholds raised to the run-to-run drift of {self.history_runs} saved runs where larger"
        else:
            drift = (f"UNKNOWN: {self.history_runs} saved run(s) of this machine; save at least 3 "
                     "(pytest perf --benchmark-autosave), or use python -m perf.ab on a shared machine")
        return {
            "mode": "saved baseline",
            "baseline": self.baseline_path,
            "run-to-run drift": drift,
            "alpha": self.settings.alpha,
            "control": f"Bonferroni over {self.compared} compared benchmarks (alpha/m per benchmark)",
            "threshold": self.threshold_override or f"{self.settings.threshold:.1%} (ini perf_thresholds and "
                                                     "perf_threshold markers override; raised to the baseline's noise floor)",
            "threads": self.threads,
        }


def perf_session(config: pytest.Config) -> PerfSession:
    return config.stash[SESSION]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perf_threshold(value): the gate's threshold for this benchmark, e.g. '25%'")
    s = settings(config)
    threads = machine.pin_threads(s.threads)
    session = PerfSession(s, threads)
    config.stash[SESSION] = session
    _take_over_compare_fail(config, session)


def _take_over_compare_fail(config: pytest.Config, session: PerfSession) -> None:
    """``--benchmark-compare-fail=median:10%`` sets the gate's threshold; the gate does the rest.

    pytest-benchmark's own check compares one statistic of one run with no statistics and ends
    the run with a traceback and every test passed; ours fails the regressed tests instead.
    """
    checks = config.getoption("benchmark_compare_fail", None)
    if not checks:
        return
    if not config.getoption("benchmark_compare", None):
        raise pytest.UsageError("--benchmark-compare-fail needs --benchmark-compare (the saved run to compare against)")
    for check in checks:
        if type(check).__name__ != "PercentageRegressionCheck":
            raise pytest.UsageError(f"--benchmark-compare-fail={check.field}:{check.threshold}: the gate takes a "
                                    f"percentage, e.g. --benchmark-compare-fail=median:10%")
    strictest = min(checks, key=lambda c: c.threshold)
    session.settings = Settings(**{**session.settings.__dict__, "threshold": strictest.threshold / 100})
    session.threshold_override = (f"{strictest.threshold:g}% from --benchmark-compare-fail "
                                  f"(the gate compares medians statistically, whatever the statistic named)")
    config.option.benchmark_compare_fail = None


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = perf_session(config)
    backends = ", ".join(s.settings.backends) or f"available ({', '.join(kernels.available_backends())})"
    return [f"perf: backends {backends}; sizes {', '.join(p.name for p in s.settings.sizes)}; "
            f"dtypes {', '.join(s.settings.dtypes)}; threads {s.threads}; timer {s.settings.timer}"]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # The momentary clock differs run to run and would make every baseline look foreign.
    for key in ("hz_actual", "hz_actual_friendly"):
        machine_info.get("cpu", {}).pop(key, None)
    machine_info["perf_fingerprint"] = perf_session(config).fingerprint


def pytest_benchmark_compare_machine_info(config: pytest.Config, benchmarksession, machine_info: dict,
                                          compared_benchmark: dict) -> None:
    saved = compared_benchmark.get("machine_info", {}).get("perf_fingerprint")
    if saved == machine_info.get("perf_fingerprint"):
        return
    if saved is None:
        what = "has no machine fingerprint"
    else:
        changes = "; ".join(machine.differences(saved, machine_info["perf_fingerprint"]))
        what = f"was recorded on a different machine ({changes})"
    if not perf_session(config).settings.allow_foreign_baseline:
        raise pytest.UsageError(f"the baseline {what}; save a new one here with --benchmark-autosave, "
                                f"or compare anyway with --perf-allow-foreign-baseline")
    if benchmarksession is not None:
        benchmarksession.logger.warning(f"Comparing anyway (--perf-allow-foreign-baseline): the baseline {what}.")
    # Said once, in one line: pytest-benchmark's own warning would print both machine_info dicts
    # (and fails on a storage outside the working directory). Only the copy in memory changes.
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
                    reason = reason or _cannot_run(case, b)
                    marks = [pytest.mark.skip(reason=reason)] if reason else []
                    params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@functools.cache
def _open(name: str, dtype: str) -> tuple[kernels.Backend | None, str]:
    try:
        return kernels.backend(name, dtype), ""
    except kernels.KernelError as exc:
        return None, str(exc)


def _cannot_run(case: Case, b: kernels.Backend) -> str:
    if case.stage == "tutorial_step" and b.raw.FAMILY not in tutorial.STEPS:
        return f"the tutorial has no code for {b.raw.FAMILY}"
    if case.stage in PROBES:
        return ""
    free, needed = free_memory(b), memory_needed(case.problem)
    if free is not None and needed > free:
        return f"{case.problem.name} needs about {needed / 2**30:.1f} GiB on {b.device_name}, {free / 2**30:.1f} GiB free"
    return ""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, stages in KINDS.items():
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, cases(metafunc.config, stages), indirect=True)


class Runnable:
    """What a perf test body calls: ``stage_case.run(benchmark)``."""

    def __init__(self, case: Case, session: PerfSession) -> None:
        self.case = case
        self.session = session

    def run(self, benchmark) -> None:
        measure.run(benchmark, self.case, self.session)


def _runnable(request: pytest.FixtureRequest) -> Runnable:
    """Every case fixture (``stage_case``, ``step_case``, ...): its parametrized Case, bound to the session."""
    return Runnable(request.param, perf_session(request.config))


(stage_case, step_case, tutorial_case, roofline_case, stage_out_case, workspace_case,
 graph_case) = (pytest.fixture(name=name)(_runnable) for name in KINDS)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """The run's command and settings; each stage's share of its roofline measured in this run
    (matmuls and steps of peak_matmul, the rest of peak_copy)."""
    s = perf_session(config).settings
    output_json["perf"] = {
        "command": " ".join(["pytest", *config.invocation_params.args]),
        "backends": list(s.backends) or kernels.available_backends(),
        "sizes": [p.name for p in s.sizes],
        "dtypes": list(s.dtypes),
        "threads": perf_session(config).threads,
        "timer": s.timer,
    }
    runs = [b.get("extra_info", {}) for b in output_json["benchmarks"]]
    peaks = {(e["stage"], e["backend"], e["dtype"]): e for e in runs if e.get("stage") in PROBES}
    for info in runs:
        stage = info.get("stage")
        if stage is None or stage in PROBES:
            continue
        matmul = stage in kernels.MATMUL_STAGES or stage in ("train_step", "tutorial_step")
        peak = peaks.get(("peak_matmul" if matmul else "peak_copy", info["backend"], info["dtype"]))
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
    bs = getattr(session.config, "_benchmarksession", None)
    if perf.baseline is not None and bs is not None:
        _load_history(session.config, bs, perf)  # its bound depends on m, known only now


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    bs = getattr(config, "_benchmarksession", None)
    if bs is None:
        return
    _make_saves_atomic(bs.storage)
    perf = perf_session(config)
    if bs.compare and bs.compared_mapping:
        path, mapping = list(bs.compared_mapping.items())[-1]
        perf.baseline, perf.baseline_path = mapping, str(path)


def _load_history(config: pytest.Config, bs, perf: PerfSession) -> None:
    """The last ``perf_history`` saved runs of this fingerprint: how far unchanged code drifts here."""
    keep = int(config.getini("perf_history") or 5)
    current = perf.fingerprint
    runs = [data for _, data in bs.storage.load()
            if data.get("machine_info", {}).get("perf_fingerprint") == current][-keep:]
    perf.history_runs = len(runs)
    perf.drift = history.drift_floors(history.run_medians(runs), alpha=perf.settings.alpha, tests=perf.compared)


def _make_saves_atomic(storage) -> None:
    """Saved runs are written whole or not at all, and never replace an existing file."""
    if not hasattr(storage, "get") or not hasattr(storage, "save"):
        return
    from pytest_benchmark.utils import safe_dumps

    def save(output_json: dict, save_name: str) -> None:
        target = Path(storage.get(f"{storage._next_num}_{save_name}.json"))
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".json")
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # as an ordinary save would be, not mkstemp's 0600
            with os.fdopen(fd, "wb") as fh:
                fh.write(safe_dumps(output_json, ensure_ascii=True, indent=4).encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, target)  # fails if the name exists: nothing saved is ever replaced
        finally:
            os.unlink(tmp)
        storage.logger.info(f"Saved benchmark data in: {target}")

    storage.save = save


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    bs = getattr(session.config, "_benchmarksession", None)
    stopped = exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail
    if bs is not None and stopped and (bs.save or bs.autosave):
        # A partial run must never become the baseline the next --benchmark-compare picks.
        bs.save = bs.autosave = None
        why = "interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED else f"stopped early ({stopped})"
        bs.logger.warning(f"Not saving benchmark data: the run was {why}.")
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks, group_by):
    """Groups in execution order (size, then stage), not alphabetical, when grouped by group."""
    outcome = yield
    order = perf_session(config).group_order
    if group_by == "group":
        outcome.force_result(sorted(outcome.get_result(), key=lambda g: order.get(g[0], len(order))))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = perf_session(config)
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or not bs.compare or bs.disabled:
        return
    tr = terminalreporter
    tr.section("perf gate")
    if session.baseline is None:
        tr.write_line(f"No baseline to compare with in {bs.storage}: nothing was gated. "
                      "Save one first: pytest perf --benchmark-autosave (or --benchmark-save=NAME).")
        return
    rows = list(session.comparisons)
    rows += [gate.new_benchmark(n, samples, session.thresholds.get(n, session.settings.threshold))
             for n, samples in session.measured.items() if n not in session.baseline]
    rows += [gate.missing_benchmark(n, bench["stats"].get("data") or [], session.settings.threshold)
             for n, bench in session.baseline.items() if n not in session.collected]
    meta = session.meta()
    for line in gate.to_text(rows, meta).splitlines():
        tr.write_line(line)
    if session.settings.report_json:
        Path(session.settings.report_json).write_text(json.dumps(gate.to_json(rows, meta), indent=2))
    if session.settings.report_md:
        with open(session.settings.report_md, "a", encoding="utf8") as fh:
            fh.write(gate.to_markdown(rows, meta))
