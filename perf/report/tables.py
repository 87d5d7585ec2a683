"""The report's tables, pure functions of merged entries: one table per size, dtype and metric, speedups
against a baseline backend, share of peak as recorded, and where a GPU overtakes the CPU."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kernels.errors import KernelError
from kernels.problem import DEFAULT_DTYPE, STAGES, Problem

from .. import forms
from ..cases import OUT_FORMS, PROBES, STEPS
from ..metric import Metric
from .load import Entry, Merged, Source

DEFAULT_BASELINE = "numpy"
STEP = "train_step"  # the stage the size sweep and the crossover are judged on
NEW_FORMS = ("workspace_step", "graph_step")
BACKEND_ORDER = ("numpy", "torch-cpu", "torch-cuda", "torch-mps")  # columns: CPU first, then GPUs


@dataclass(frozen=True)
class Cell:
    result: Entry
    speedup: float | None   # baseline median / this median: > 1 means faster (or fewer counted) than the baseline
    share: float | None     # fraction of the backend's peak (matmul rate or copy bandwidth), time only


@dataclass(frozen=True)
class Table:
    """One size, dtype and metric: stages down (execution order, steps last), backends across."""

    size: str
    dtype: str
    shape: tuple[int, int, int, int] | None
    step_flops: float | None   # FLOPs of one train_step at this size: the order of sizes
    stages: tuple[str, ...]
    backends: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]   # (stage, backend) -> cell
    baseline: str
    metric: Metric = Metric.TIME

    def cell(self, stage: str, backend: str) -> Cell | None:
        return self.cells.get((stage, backend))

    @property
    def sources(self) -> list[Source]:
        seen: dict[int, Source] = {}
        for c in self.cells.values():
            seen.setdefault(c.result.source.index, c.result.source)
        return [seen[i] for i in sorted(seen)]


def order_stages(stages: Iterable[str]) -> list[str]:
    """The stages in execution order, then their out= forms in the same order (a block of their own), then
    stages this version does not know (by name), then the forms of the whole step (perf.cases.STEPS order)."""
    rank = ({s: (0, i) for i, s in enumerate(STAGES)} | {s: (1, i) for i, s in enumerate(OUT_FORMS)}
            | {s: (3, i) for i, s in enumerate(STEPS)})
    return sorted(set(stages), key=lambda s: (rank.get(s, (2, 0)), s))


def order_backends(backends: Iterable[str]) -> list[str]:
    """numpy, torch-cpu, torch-cuda (then torch-cuda:1, ...), torch-mps, then any other by name."""
    def rank(b: str) -> tuple[int, str]:
        family = b.split(":")[0]
        return (BACKEND_ORDER.index(family) if family in BACKEND_ORDER else len(BACKEND_ORDER), b)

    return sorted(set(backends), key=rank)


def step_flops(results: Iterable[Entry]) -> float | None:
    """FLOPs of one train_step at these entries' size: as recorded, else from the shape by the kernels' model."""
    results = list(results)
    for r in results:
        if r.stage == STEP and r.flops:
            return r.flops
    for r in results:
        if r.shape:
            try:
                return float(Problem(*r.shape).flops(STEP))
            except (KernelError, ValueError, TypeError):
                pass
    return None


def build_tables(merged: Merged, baseline: str = DEFAULT_BASELINE) -> list[Table]:
    """One table per (size, dtype, metric): time first, then by train_step FLOPs (then name); no roofline probes."""
    groups: dict[tuple[str, str, Metric], dict[tuple[str, str], Entry]] = defaultdict(dict)
    for (size, dtype, backend, stage, metric), r in merged.results.items():
        if stage not in PROBES:
            groups[(size, dtype, metric)][(stage, backend)] = r
    tables = []
    for (size, dtype, metric), results in groups.items():
        cells = {}
        for (stage, backend), r in results.items():
            base = results.get((stage, baseline))
            cells[(stage, backend)] = Cell(r, base.median / r.median if base else None,
                                           r.peak_share if metric is Metric.TIME else None)
        shape = next((r.shape for r in results.values() if r.shape), None)
        tables.append(Table(size, dtype, shape, step_flops(results.values()),
                            tuple(order_stages(s for s, _ in results)), tuple(order_backends(b for _, b in results)),
                            cells, baseline, metric))
    work: dict[str, float] = {}  # a size's place: its smallest train_step FLOPs over dtypes, so dtypes stay together
    for t in tables:
        if t.step_flops is not None:
            work[t.size] = min(work.get(t.size, t.step_flops), t.step_flops)
    tables.sort(key=lambda t: (list(Metric).index(t.metric), t.size not in work, work.get(t.size, 0.0), t.size,
                               t.dtype != DEFAULT_DTYPE, t.dtype))
    return tables


def step_forms(t: Table) -> dict[str, forms.StepForms]:
    """backend -> the forms of the step in this table, with the sums of the stages each calls (perf.forms)."""
    return {row.backend: row for row in forms.step_forms(c.result for c in t.cells.values())}


def shows_forms(t: Table) -> bool:
    """A time table holding what issue 14 added (the workspace step, its graph, out= forms): it gets a forms table.

    Counted tables get none: shares and floors are rates of time, and the stage table already sets the forms'
    counts side by side.
    """
    return t.metric is Metric.TIME and any(s in NEW_FORMS or s in OUT_FORMS for s in t.stages)


# --------------------------------------------------------------------------- crossover


def device_kind(device: str) -> str:
    """'cpu', 'gpu' (cuda, mps, ...) or '?' for a device this report cannot place."""
    family = device.split(":")[0].lower()
    if family == "cpu":
        return "cpu"
    return "?" if family in ("", "?") else "gpu"


def kind(table: Table, backend: str) -> str:
    """The device kind of a backend's column."""
    return device_kind(next(c.result.device for (_, b), c in table.cells.items() if b == backend))


@dataclass(frozen=True)
class Race:
    """train_step at one size: a GPU backend against the fastest CPU backend there."""

    size: str
    flops: float | None
    gpu: float            # seconds
    cpu_backend: str
    cpu: float            # seconds

    @property
    def gpu_faster(self) -> bool:
        return self.gpu < self.cpu


@dataclass(frozen=True)
class Crossover:
    """Where one GPU backend overtakes the CPU: ``races[index]`` is the smallest size from which it is faster
    at every larger size measured; ``index`` is None when it is not faster even at the largest."""

    backend: str
    dtype: str
    races: tuple[Race, ...]   # every size where both were measured, by train_step FLOPs
    index: int | None

    @property
    def at(self) -> Race | None:
        return None if self.index is None else self.races[self.index]

    @property
    def below(self) -> Race | None:
        """The size just below the crossover, where the GPU was still slower (None: faster from the smallest)."""
        return self.races[self.index - 1] if self.index else None


def crossovers(tables: Sequence[Table], stage: str = STEP) -> list[Crossover]:
    """For each GPU backend and dtype, the smallest size from which it beats the fastest CPU backend for good (in time)."""
    timed = [t for t in tables if t.metric is Metric.TIME]
    found = []
    for dtype in dict.fromkeys(t.dtype for t in timed):
        same = [t for t in timed if t.dtype == dtype and t.step_flops is not None]
        gpus = order_backends(b for t in same for b in t.backends if t.cell(stage, b) and kind(t, b) == "gpu")
        for gpu in gpus:
            races = []
            for t in same:
                mine = t.cell(stage, gpu)
                cpus = [(c.result.median, b) for b in t.backends if (c := t.cell(stage, b)) and kind(t, b) == "cpu"]
                if mine and cpus:
                    cpu_median, cpu_backend = min(cpus)
                    races.append(Race(t.size, t.step_flops, mine.result.median, cpu_backend, cpu_median))
            if not races:
                continue
            index = len(races)
            while index > 0 and races[index - 1].gpu_faster:
                index -= 1
            found.append(Crossover(gpu, dtype, tuple(races), None if index == len(races) else index))
    return found
