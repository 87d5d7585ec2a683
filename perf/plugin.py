"""The pytest plugin behind ``pytest perf``, loaded by the root conftest.py: hooks over a ``PerfSession``.

Each hook hands its moment of the run to the session object (``perf.session``), which holds the
run's state and does the work; parametrization is ``perf.params``, options ``perf.options``.
"""

from __future__ import annotations

import functools

import pytest

import kernels

from . import pb
from .options import add_options
from .params import KINDS, cases
from .session import PerfSession, Runnable

SESSION = pytest.StashKey[PerfSession]()


def perf_session(config: pytest.Config) -> PerfSession:
    return config.stash[SESSION]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perf_threshold(value): the gate's threshold for this benchmark, e.g. '25%'")
    perf = config.stash[SESSION] = PerfSession.configure(config)
    config.pluginmanager.register(perf, "perf-session")
    perf.choose_baseline()


def pytest_report_header(config: pytest.Config) -> list[str]:
    s, threads = perf_session(config).settings, perf_session(config).threads
    backends = ", ".join(s.backends) or f"available ({', '.join(kernels.available_backends())})"
    return [f"perf: backends {backends}; sizes {', '.join(p.name for p in s.sizes)}; dtypes {', '.join(s.dtypes)}; "
            f"threads {threads}; timer {s.timer}; metric {s.metric}"]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # The momentary clock differs run to run and would make every baseline look foreign.
    for key in ("hz_actual", "hz_actual_friendly"):
        machine_info.get("cpu", {}).pop(key, None)
    machine_info["perf_fingerprint"] = perf_session(config).saved_fingerprint()


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_compare_machine_info(config: pytest.Config, benchmarksession, machine_info: dict,
                                          compared_benchmark: dict) -> None:
    """The suite's fingerprint is the rule, and the baseline passed it (``PerfSession.choose_baseline``):
    pytest-benchmark's own check, which compares host names too and prints both dicts (and crashes for a
    storage outside the working directory), sees equal machine_info. Only the copy in memory changes."""
    compared_benchmark["machine_info"] = machine_info


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, stages in KINDS.items():
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, cases(perf_session(metafunc.config).settings, stages), indirect=True)


def _runnable(request: pytest.FixtureRequest) -> Runnable:
    """Every case fixture (``stage_case``, ``step_case``, ...): its parametrized Case, bound to the session."""
    return Runnable(request.param, perf_session(request.config), request.node)


(stage_case, step_case, tutorial_case, roofline_case, stage_out_case, workspace_case,
 graph_case) = (pytest.fixture(name=name)(_runnable) for name in KINDS)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    perf_session(config).update_json(output_json)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    perf_session(config).collected_items(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    perf_session(session.config).collection_finished(session.items)


def pytest_sessionstart(session: pytest.Session) -> None:
    perf = perf_session(session.config)
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    for warning in perf.warnings:  # said in every verbosity, before the tests run
        if terminal is not None:
            terminal.write_line(f"perf: warning: {warning}", yellow=True)
    bs = pb.session(session.config)
    if bs is not None:
        pb.replace_save(bs, functools.partial(perf.save, bs))
        perf.take_over_tables(bs)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtestloop(session: pytest.Session):
    perf_session(session.config).measure_selection(session)
    return (yield)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    perf_session(session.config).withhold_save(session, exitstatus)  # before pytest-benchmark saves
    yield
    perf_session(session.config).finish(session)  # after every report is written


@pytest.hookimpl(hookwrapper=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks, group_by):
    """Groups in execution order (size, then stage), not alphabetical, when grouped by group."""
    outcome = yield
    order = perf_session(config).group_order
    if group_by == "group":
        outcome.force_result(sorted(outcome.get_result(), key=lambda g: order.get(g[0], len(order))))


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        perf_session(items[0].config).deselected.update(item.nodeid for item in items)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    perf_session(config).report(terminalreporter)
