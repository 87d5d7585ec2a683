"""The forms of the step side by side, and the kernel targets they are held to: pure functions on results.

Per size, backend and dtype: the tutorial's code, the allocating ``train_step``, the
``workspace_step`` (every stage in its out= form) and its CUDA graph (``graph_step``), each with its
share of the same run's peak matmul rate and its ratio to the step's matmul floor (the time its five
matmuls take at that rate: the physical limit of this step on the machine); each step against the
sum of the stages it calls; each stage's share of its roofline; issue 14's targets judged on them.

Shares are the ones the plugin recorded (``extra_info.peak_share``: achieved rate over the probe of
the same run), never recomputed here, so a merge of several files still sets each benchmark against
its own run's roofline. The peak matmul rate behind a step's floor is read back from that share.
The input is anything with a ``Measurement``'s fields: ``perf.report``'s entries, or ``from_run``
over a ``perf.results.Run``. Nothing rendered here, no file read, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kernels.errors import KernelError
from kernels.problem import MATMUL_STAGES, STAGES, STEP_FORMS, Problem

from .cases import OUT_FORMS, PROBES, base_stage, roofline_probe
from .metric import Metric
from .results import Run

CPU_BACKENDS = ("numpy", "torch-cpu")
# The suite's own forms of the step; the tutorial's code is shown beside them but held to no target.
SUITE_STEPS = tuple(s for s in STEP_FORMS if s != "tutorial_step")
ELEMENTWISE_OUT_FORMS = tuple(s for s in OUT_FORMS if base_stage(s) not in MATMUL_STAGES)


class Measurement(Protocol):
    """What this module reads of one benchmark (``perf.report``'s Entry and ``RunEntry`` both have it)."""

    @property
    def stage(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def size(self) -> str: ...
    @property
    def median(self) -> float: ...
    @property
    def flops(self) -> float | None: ...
    @property
    def shape(self) -> tuple[int, int, int, int] | None: ...
    @property
    def peak_share(self) -> float | None: ...


@dataclass(frozen=True)
class RunEntry:
    """One benchmark of a run: what it timed, its median per call and its share of the run's roofline."""

    stage: str                      # a stage, an out= form ("relu_out"), a step form or a roofline probe
    backend: str
    dtype: str
    size: str                       # the preset's name, or NxD_inxHxD_out (the probe's own name for a probe)
    median: float                   # seconds per call
    flops: float | None = None      # per call, as recorded
    shape: tuple[int, int, int, int] | None = None   # (N, D_in, H, D_out)
    peak_share: float | None = None   # of the same run's probe (roofline_probe(stage)), as the plugin recorded it


@dataclass(frozen=True)
class Target:
    """One kernel target: a ratio held at or under ``limit``, or a share at or over it, where it is set."""

    what: str
    subjects: tuple[str, ...]       # the forms or stages it judges
    limit: float
    at_most: bool                   # True: value <= limit (a ratio of times); False: value >= limit (a share)
    sizes: tuple[str, ...] = ()     # the sizes it is set at; () = every size
    backends: tuple[str, ...] = ()  # the backends it is set for; () = every backend
    every: bool = False             # every subject must be measured at a point (else one is enough: "the step")

    def applies(self, size: str, backend: str) -> bool:
        return (not self.sizes or size in self.sizes) and (not self.backends or backend in self.backends)

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


# Issue 6's target, and issue 14's three: the workspace step against the sum of its stages' out= forms;
# every elementwise out= form at the memory-bound size (gpu: 64 MiB arrays on a CPU) against the copy
# bandwidth; the suite's forms of the step at compute against their matmul floor.
TRAIN_OVER_STAGES = Target("train_step / sum of its stages", ("train_step",), 1.10, True)
WORKSPACE_OVER_OUT_STAGES = Target("workspace_step / sum of its stages' out= forms", ("workspace_step",), 1.05, True,
                                   ("seed", "compute"), CPU_BACKENDS)
OUT_STAGE_COPY_SHARE = Target("elementwise out= form, share of peak_copy", ELEMENTWISE_OUT_FORMS, 0.50, False,
                              ("gpu",), CPU_BACKENDS, every=True)
STEP_OVER_MATMUL_FLOOR = Target("step / its matmul floor", SUITE_STEPS, 1.15, True, ("compute",), CPU_BACKENDS)
ISSUE_14_TARGETS = (WORKSPACE_OVER_OUT_STAGES, OUT_STAGE_COPY_SHARE, STEP_OVER_MATMUL_FLOOR)


@dataclass(frozen=True)
class Form:
    """One form of the step at one size, backend and dtype."""

    name: str                       # one of STEP_FORMS
    median: float
    share: float | None             # of the same run's peak_matmul, as recorded
    floor: float | None             # seconds: its five matmuls' FLOPs at that run's peak matmul rate

    @property
    def over_floor(self) -> float | None:
        """median over the matmul floor (1.0: as fast as its matmuls can be)."""
        return self.median / self.floor if self.floor else None


@dataclass(frozen=True)
class StepForms:
    """Every form of the step measured at one size, backend and dtype, and the stage sums they compare with."""

    size: str
    backend: str
    dtype: str
    forms: tuple[Form, ...]         # in STEP_FORMS order, those measured
    stage_sum: float | None         # the ten allocating stages' medians summed (sgd_update counts both weights)
    out_stage_sum: float | None     # the same of the ten out= forms

    def form(self, name: str) -> Form | None:
        return next((f for f in self.forms if f.name == name), None)

    @property
    def matmul_floor(self) -> float | None:
        """The floor of the first form that has one (the forms of one run share it)."""
        return next((f.floor for f in self.forms if f.floor), None)

    @property
    def train_over_stages(self) -> float | None:
        """train_step over the sum of its stages (TRAIN_OVER_STAGES)."""
        return _ratio(self.form("train_step"), self.stage_sum)

    @property
    def workspace_over_out_stages(self) -> float | None:
        """workspace_step over the sum of its stages' out= forms (WORKSPACE_OVER_OUT_STAGES)."""
        return _ratio(self.form("workspace_step"), self.out_stage_sum)


@dataclass(frozen=True)
class StageShare:
    """One stage (allocating or out= form) at one size, backend and dtype: its share of its roofline."""

    size: str
    backend: str
    dtype: str
    stage: str
    median: float
    probe: str                      # peak_matmul (by FLOP rate) or peak_copy (by bytes moved)
    share: float | None             # as recorded


@dataclass(frozen=True)
class Check:
    """One target judged at one point: what was measured there and whether it meets the target."""

    target: Target
    size: str
    backend: str
    dtype: str
    subject: str                    # the form or stage judged ("workspace_step", "relu_out")
    value: float

    @property
    def met(self) -> bool:
        return self.target.met(self.value)


def matmul_flops(shape: tuple[int, int, int, int]) -> int:
    """FLOPs of the step's five matmuls at ``shape``, by the kernels' model."""
    problem = Problem(*shape)
    return sum(problem.flops(stage) for stage in MATMUL_STAGES)


def matmul_floor(r: Measurement) -> float | None:
    """Seconds the five matmuls of ``r``'s step take at the peak matmul rate of ``r``'s own run.

    That rate is read back from the recorded share: achieved FLOP/s (FLOPs / median) over peak_share.
    """
    if not (r.shape and r.flops and r.peak_share and r.median > 0):
        return None
    try:
        work = matmul_flops(r.shape)
    except (KernelError, ValueError, TypeError):
        return None
    return work * r.median * r.peak_share / r.flops


def step_forms(results: Iterable[Measurement]) -> list[StepForms]:
    """One StepForms per (size, backend, dtype) with at least one form of the step, in the order first seen."""
    rows = []
    for (size, backend, dtype), by_stage in _by_point(results).items():
        measured = [by_stage[name] for name in STEP_FORMS if name in by_stage]
        if not measured:
            continue
        forms = tuple(Form(r.stage, r.median, r.peak_share, matmul_floor(r)) for r in measured)
        rows.append(StepForms(size, backend, dtype, forms, _sum(by_stage, STAGES), _sum(by_stage, OUT_FORMS)))
    return rows


def stage_shares(results: Iterable[Measurement]) -> list[StageShare]:
    """Every stage and out= form among ``results`` with its recorded share of its roofline."""
    return [StageShare(r.size, r.backend, r.dtype, r.stage, r.median, probe, r.peak_share)
            for r in results if (probe := roofline_probe(r.stage)) is not None and r.stage not in STEP_FORMS]


def checks(rows: Iterable[StepForms], shares: Iterable[StageShare],
           targets: Sequence[Target] = ISSUE_14_TARGETS) -> list[Check]:
    """Each of ``targets`` judged wherever it is set and its value was measured."""
    found = []
    for row in rows:
        values = {TRAIN_OVER_STAGES: [("train_step", row.train_over_stages)],
                  WORKSPACE_OVER_OUT_STAGES: [("workspace_step", row.workspace_over_out_stages)],
                  STEP_OVER_MATMUL_FLOOR: [(f.name, f.over_floor) for f in row.forms]}
        found += [Check(t, row.size, row.backend, row.dtype, subject, v) for t in targets for subject, v in values.get(t, ())
                  if v is not None and subject in t.subjects and t.applies(row.size, row.backend)]
    if OUT_STAGE_COPY_SHARE in targets:
        found += [Check(OUT_STAGE_COPY_SHARE, s.size, s.backend, s.dtype, s.stage, s.share) for s in shares
                  if s.share is not None and s.stage in OUT_STAGE_COPY_SHARE.subjects
                  and OUT_STAGE_COPY_SHARE.applies(s.size, s.backend)]
    return found


def unmeasured(target: Target, judged: Iterable[Check]) -> list[tuple[str, str]]:
    """The (size, backend) pairs the target is set at that ``judged`` does not cover (with ``every``: not wholly)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for c in judged:
        if c.target == target:
            seen.setdefault((c.size, c.backend), set()).add(c.subject)
    need = set(target.subjects) if target.every else set()
    return [(size, backend) for size in target.sizes for backend in target.backends
            if (size, backend) not in seen or not need <= seen[(size, backend)]]


def from_run(run: Run) -> list[RunEntry]:
    """The timed stages, steps and probes of one run (as ``perf.results`` validated it); the rest left out."""
    found = []
    for r in run.results.values():
        if r.metric is not Metric.TIME or not (r.stage and r.backend) or r.median is None:
            continue
        found.append(RunEntry(r.stage, r.backend, r.text("dtype"), r.text("size"), r.median, r.number("flops"),
                              r.shape, r.number("peak_share")))
    return found


def _by_point(results: Iterable[Measurement]) -> dict[tuple[str, str, str], dict[str, Measurement]]:
    groups: dict[tuple[str, str, str], dict[str, Measurement]] = {}
    for r in results:
        if r.stage not in PROBES:
            groups.setdefault((r.size, r.backend, r.dtype), {})[r.stage] = r
    return groups


def _sum(by_stage: Mapping[str, Measurement], stages: Iterable[str]) -> float | None:
    """The medians of ``stages`` summed, if every one was measured."""
    found = [by_stage.get(stage) for stage in stages]
    return sum(r.median for r in found) if all(found) else None


def _ratio(form: Form | None, total: float | None) -> float | None:
    return form.median / total if form and total else None
