"""Which cases the perf tests are parametrized over: every (size, stage, backend, dtype) of the session's
settings, each a ``Case`` whose id is its baseline key; what cannot run here is skipped with the reason."""

from __future__ import annotations

import functools
from fnmatch import fnmatchcase

import pytest

import kernels
from kernels import tutorial

from . import gate
from .cases import OUT_FORMS, PROBES, Case, probe_problem
from .counting import cannot_count
from .options import Settings

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


def cases(s: Settings, stages: tuple[str, ...]) -> list:
    """pytest params for every (size, stage, backend, dtype); what cannot run here is skipped with the reason."""
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
                    reason = reason or cannot_run(case, b, s.metric.counted)
                    marks = [pytest.mark.skip(reason=reason)] if reason else []
                    params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@functools.cache
def _open(name: str, dtype: str) -> tuple[kernels.Backend | None, str]:
    try:
        return kernels.backend(name, dtype), ""
    except kernels.KernelError as exc:
        return None, str(exc)


def cannot_run(case: Case, b: kernels.Backend, counted: bool = False) -> str:
    """Why ``case`` cannot run (or be counted) here; '' where it can."""
    if counted:
        why = cannot_count(case, b)
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


def case_of(item: pytest.Item) -> Case | None:
    """The Case a collected perf test times (None for any other test)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for fixture in KINDS:
        if fixture in callspec.params:
            return callspec.params[fixture]
    return None


def threshold_for(item: pytest.Item, case: Case, s: Settings) -> float:
    """A benchmark's threshold: its perf_threshold marker, else the last ini perf_thresholds line that
    matches it, else the session's."""
    threshold = s.threshold
    for pattern, value in s.thresholds:
        if fnmatchcase(case.id, pattern) or pattern in (case.group, case.stage):
            threshold = value
    marker = item.get_closest_marker("perf_threshold")
    if marker and marker.args:
        try:
            threshold = gate.parse_threshold(marker.args[0])
        except gate.GateError as exc:
            raise pytest.UsageError(f"{item.nodeid}: perf_threshold marker: {exc}") from None
    return threshold
