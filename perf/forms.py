"""The forms of the step side by side, and the kernel targets they are held to: pure functions on results.

Per size, backend and dtype: the tutorial's code, the allocating ``train_step``, the
``workspace_step`` (every stage in its out= form) and its CUDA graph (``graph_step``), each with its
share of the same run's peak matmul rate and its ratio to the step's matmul floor (the time its five
matmuls take at that rate: the physical limit of this step on the machine); each step against the
sum of the stages it calls; each stage's share of its roofline. Plain dataclasses in and out,
nothing rendered here, no file read, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kernels.problem import MATMUL_STAGES, STAGES, STEP_FORMS, Problem

from .cases import OUT_FORMS, PROBES, roofline_probe

# The kernel targets (issue 14): the workspace step against the sum of its stages' out= forms; every
# elementwise out= form at the memory-bound size against the copy bandwidth; the step at compute
# against its matmul floor.
WORKSPACE_OVER_OUT_STAGES_MAX = 1.05
OUT_STAGE_COPY_SHARE_MIN = 0.50
STEP_OVER_MATMUL_FLOOR_MAX = 1.15


@dataclass(frozen=True)
class Measured:
    """One benchmark of a run: what it timed (extra_info) and its median seconds per call."""

    stage: str                      # a stage, an out= form ("relu_out"), a step form or a roofline probe
    backend: str
    dtype: str
    size: str                       # the preset's name, or NxD_inxHxD_out (the probe's own name for a probe)
    median_s: float
    flops: float | None = None      # per call, as recorded
    bytes: float | None = None      # per call, as recorded
    shape: tuple[int, int, int, int] | None = None   # (N, D_in, H, D_out)


@dataclass(frozen=True)
class Peaks:
    """The roofline of one backend and dtype, measured in the same run."""

    matmul_gflops: float | None
    copy_gbps: float | None


@dataclass(frozen=True)
class Form:
    """One form of the step at one size, backend and dtype."""

    name: str                       # one of STEP_FORMS
    median_s: float
    share: float | None             # achieved GFLOP/s over peak_matmul (the report's share for a step)
    over_floor: float | None        # median over the matmul floor (1.0: as fast as its matmuls can be)


@dataclass(frozen=True)
class StepForms:
    """Every form of the step measured at one size, backend and dtype, and the stage sums they compare with."""

    size: str
    backend: str
    dtype: str
    forms: tuple[Form, ...]         # in STEP_FORMS order, those measured
    matmul_floor_s: float | None    # the five matmuls' FLOPs at the same run's peak matmul rate
    stage_sum_s: float | None       # the ten allocating stages' medians summed (sgd_update counts both weights)
    out_stage_sum_s: float | None   # the same of the ten out= forms

    def form(self, name: str) -> Form | None:
        return next((f for f in self.forms if f.name == name), None)

    @property
    def train_over_stages(self) -> float | None:
        """train_step over the sum of its stages (issue 6's target: at most 1.10)."""
        return _ratio(self.form("train_step"), self.stage_sum_s)

    @property
    def workspace_over_out_stages(self) -> float | None:
        """workspace_step over the sum of its stages' out= forms (target: at most WORKSPACE_OVER_OUT_STAGES_MAX)."""
        return _ratio(self.form("workspace_step"), self.out_stage_sum_s)


@dataclass(frozen=True)
class StageShare:
    """One stage (allocating or out= form) at one size, backend and dtype: its share of its roofline."""

    size: str
    backend: str
    dtype: str
    stage: str
    median_s: float
    probe: str                      # peak_matmul (by FLOP rate) or peak_copy (by bytes moved)
    share: float | None


def peaks_of(results: Iterable[Measured]) -> dict[tuple[str, str], Peaks]:
    """(backend, dtype) -> the roofline probes among ``results`` (the fastest, where one ran twice)."""
    best: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        if r.stage not in PROBES:
            continue
        work = r.flops if r.stage == "peak_matmul" else r.bytes
        if work and r.median_s > 0:
            rates = best.setdefault((r.backend, r.dtype), {})
            rates[r.stage] = max(work / r.median_s / 1e9, rates.get(r.stage, 0.0))
    return {key: Peaks(rates.get("peak_matmul"), rates.get("peak_copy")) for key, rates in best.items()}


def matmul_flops(shape: tuple[int, int, int, int]) -> int:
    """FLOPs of the step's five matmuls at ``shape``, by the kernels' model."""
    problem = Problem(*shape)
    return sum(problem.flops(stage) for stage in MATMUL_STAGES)


def step_forms(results: Iterable[Measured], peaks: Mapping[tuple[str, str], Peaks]) -> list[StepForms]:
    """One StepForms per (size, backend, dtype) with at least one form of the step, in the order first seen."""
    groups = _by_point(results)
    rows = []
    for (size, backend, dtype), by_stage in groups.items():
        measured = [by_stage[name] for name in STEP_FORMS if name in by_stage]
        if not measured:
            continue
        peak = peaks.get((backend, dtype), Peaks(None, None)).matmul_gflops
        shape = next((r.shape for r in by_stage.values() if r.shape), None)
        floor = matmul_flops(shape) / (peak * 1e9) if shape and peak else None
        forms = tuple(Form(r.stage, r.median_s, _share(r.flops, r.median_s, peak), _ratio_s(r.median_s, floor))
                      for r in measured)
        rows.append(StepForms(size, backend, dtype, forms, floor, _sum(by_stage, STAGES), _sum(by_stage, OUT_FORMS)))
    return rows


def stage_shares(results: Iterable[Measured], peaks: Mapping[tuple[str, str], Peaks]) -> list[StageShare]:
    """Every stage and out= form among ``results`` with its share of the same run's roofline."""
    rows = []
    for r in results:
        probe = roofline_probe(r.stage)
        if probe is None or r.stage in STEP_FORMS:
            continue
        peak = peaks.get((r.backend, r.dtype), Peaks(None, None))
        if probe == "peak_matmul":
            share = _share(r.flops, r.median_s, peak.matmul_gflops)
        else:
            share = _share(r.bytes, r.median_s, peak.copy_gbps)
        rows.append(StageShare(r.size, r.backend, r.dtype, r.stage, r.median_s, probe, share))
    return rows


def from_benchmarks(data: Mapping) -> list[Measured]:
    """The perf benchmarks of one pytest-benchmark JSON document (already parsed); others are left out."""
    found = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        median = (bench.get("stats") or {}).get("median") or info.get("median_s")
        if not (info.get("stage") and info.get("backend") and median):
            continue
        shape = info.get("shape")
        found.append(Measured(
            stage=info["stage"], backend=info["backend"], dtype=info.get("dtype", "float32"), size=info.get("size", ""),
            median_s=float(median), flops=info.get("flops"), bytes=info.get("bytes"),
            shape=tuple(shape[k] for k in ("N", "D_in", "H", "D_out")) if isinstance(shape, dict) else None,
        ))
    return found


def _by_point(results: Iterable[Measured]) -> dict[tuple[str, str, str], dict[str, Measured]]:
    groups: dict[tuple[str, str, str], dict[str, Measured]] = {}
    for r in results:
        if r.stage not in PROBES:
            groups.setdefault((r.size, r.backend, r.dtype), {})[r.stage] = r
    return groups


def _sum(by_stage: Mapping[str, Measured], stages: Iterable[str]) -> float | None:
    """The medians of ``stages`` summed, if every one was measured."""
    found = [by_stage.get(stage) for stage in stages]
    return sum(r.median_s for r in found) if all(found) else None


def _share(work: float | None, median_s: float, peak_per_s: float | None) -> float | None:
    """(work / median) / peak, with work in FLOPs or bytes and the peak in G per second."""
    return work / median_s / 1e9 / peak_per_s if work and median_s > 0 and peak_per_s else None


def _ratio(form: Form | None, total_s: float | None) -> float | None:
    return form.median_s / total_s if form and total_s else None


def _ratio_s(median_s: float, total_s: float | None) -> float | None:
    return median_s / total_s if total_s else None
