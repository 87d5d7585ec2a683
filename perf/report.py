"""Tables and figures from perf-suite results: time per stage by backend, speedups, share of peak, GPU crossover.

    python -m perf.report RESULTS.json [MORE.json ...] [--out DIR] [--baseline-backend numpy]

Reads the pytest-benchmark JSON that ``pytest perf`` writes (``--benchmark-json=PATH``, or a saved
``.benchmarks/<machine>/NNNN_*.json``): each benchmark's ``extra_info`` (stage, backend, device, size,
dtype, shape, flops, bytes, ...) and the run's ``machine_info.perf_fingerprint``. Several files merge
into one report; where two hold the same size, dtype, backend and stage, the file named later on the
command line wins and the report says so. Writes DIR/report.md (also printed on stdout), one
DIR/stages-<size>.png per size and DIR/step-vs-size.png.

Layers, each usable alone: ``load`` and ``merge`` (JSON -> results), ``build_tables``, ``crossovers``
and ``render_markdown`` (pure functions of those results), then the figures (matplotlib's Agg canvas,
no pyplot state) and ``main``. Bad input is a ``ReportError`` with a one-line message; the command
prints it as ``error: ...`` and exits 2. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernels.errors import KernelError
from kernels.problem import DEFAULT_DTYPE, MATMUL_STAGES, STAGES, Problem

from .cases import PROBES, STEPS

DEFAULT_OUT = "docs/results/report"
DEFAULT_BASELINE = "numpy"
NOISY_IQR = 0.10  # a cell is marked noisy when its IQR exceeds this fraction of its median
STEP = "train_step"  # the stage the size sweep and the crossover are judged on
_BACKEND_ORDER = ("numpy", "torch-cpu", "torch-cuda", "torch-mps")  # columns: CPU first, then GPUs
_COLORS = {"numpy": "tab:blue", "torch-cpu": "tab:orange", "torch-cuda": "tab:green", "torch-cuda:1": "tab:olive",
           "torch-mps": "tab:red"}
_SPARE_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:cyan", "tab:gray")

Key = tuple[str, str, str, str]  # (size, dtype, backend, stage)


class ReportError(Exception):
    """Bad input to the report (a file, its contents, an option); the message is one line."""


# --------------------------------------------------------------------------- loading and merging


@dataclass(frozen=True, eq=False)
class Source:
    """One results file: where it is, when it was measured, and on what."""

    path: str
    index: int          # position on the command line: a later file wins a merge
    datetime: str
    commit: str
    fingerprint: dict   # machine_info.perf_fingerprint, completed from machine_info where it lacks a field


@dataclass(frozen=True, eq=False)
class Result:
    """One benchmark of one file: a stage (or step, or roofline probe) of one backend at one size."""

    stage: str
    backend: str
    device: str
    size: str
    dtype: str
    shape: tuple[int, int, int, int] | None   # (N, D_in, H, D_out)
    median: float                             # seconds per call
    iqr: float | None
    flops: float | None                       # per call
    bytes: float | None                       # per call
    gflops: float | None                      # achieved, as recorded (or flops / median)
    gbps: float | None                        # achieved, as recorded (or bytes / median)
    peak_share: float | None                  # as recorded in extra_info, else None
    source: Source
    fullname: str = ""

    @property
    def key(self) -> Key:
        return (self.size, self.dtype, self.backend, self.stage)

    @property
    def noisy(self) -> bool:
        return self.iqr is not None and self.iqr > NOISY_IQR * self.median


@dataclass(frozen=True)
class Loaded:
    source: Source
    results: list[Result]
    notes: list[str]


@dataclass
class Merged:
    """Every file's results merged: one result per (size, dtype, backend, stage), the later file's."""

    results: dict[Key, Result]
    sources: list[Source]
    # (source index, backend, device, dtype) -> {"peak_matmul": GFLOP/s, "peak_copy": GB/s}, from every file
    peaks: dict[tuple[int, str, str, str], dict[str, float]]
    replaced: list[tuple[Result, Result]] = field(default_factory=list)   # (dropped, kept)
    notes: list[str] = field(default_factory=list)


def load(path: str | Path, index: int = 0) -> Loaded:
    """Read one pytest-benchmark JSON file; ReportError when it is missing, not such JSON, or holds no perf results."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{shown}: is a directory, not a results file") from None
    except UnicodeDecodeError:
        raise ReportError(f"{shown}: not pytest-benchmark JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise ReportError(f"{shown}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{shown}: not pytest-benchmark JSON (invalid JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError(f"{shown}: not pytest-benchmark JSON (no 'benchmarks' list at the top level)")
    if not data["benchmarks"]:
        raise ReportError(f"{shown}: holds no benchmarks")
    machine_info = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    source = Source(shown, index, _text(data.get("datetime")), _commit(data.get("commit_info")), _fingerprint(machine_info))
    results: list[Result] = []
    unannotated = unusable = 0
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        if not (isinstance(info, dict) and _text(info.get("stage")) and _text(info.get("backend"))):
            unannotated += 1
            continue
        result = _result(bench, info, source)
        if result is None:
            unusable += 1
        else:
            results.append(result)
    total = len(data["benchmarks"])
    if not results and unusable:
        raise ReportError(f"{shown}: none of its {total} benchmarks has a usable median time (stats.median)")
    if not results:
        raise ReportError(f"{shown}: none of its {total} benchmarks has extra_info with a stage and backend "
                          "(write results with the perf suite: pytest perf --benchmark-json=PATH)")
    notes = []
    if unannotated:
        notes.append(f"{shown}: skipped {unannotated} of {total} benchmarks without extra_info stage and backend")
    if unusable:
        notes.append(f"{shown}: skipped {unusable} of {total} benchmarks without a usable median time")
    return Loaded(source, results, notes)


def merge(loaded: Sequence[Loaded]) -> Merged:
    """One result per (size, dtype, backend, stage): the file later in ``loaded`` wins, and each replacement is kept."""
    merged = Merged({}, [item.source for item in loaded], {})
    shapes: dict[str, Result] = {}  # size name -> the first result that gave it a shape
    for item in loaded:
        merged.notes.extend(item.notes)
        for r in item.results:
            first = shapes.setdefault(r.size, r) if r.shape and r.stage not in PROBES else r
            if first.shape != r.shape:
                merged.notes.append(f"size {r.size!r} is {_shape_text(first.shape)} in {first.source.path} but "
                                    f"{_shape_text(r.shape)} in {r.source.path}: its table mixes two problems")
                shapes[r.size] = r  # one note per change of shape, not per result
            old = merged.results.get(r.key)
            if old is not None:
                merged.replaced.append((old, r))
            merged.results[r.key] = r
            if r.stage in PROBES:
                rate = r.gflops if r.stage == "peak_matmul" else r.gbps
                if rate:
                    peaks = merged.peaks.setdefault((r.source.index, r.backend, r.device, r.dtype), {})
                    peaks[r.stage] = max(rate, peaks.get(r.stage, 0.0))
    return merged


def _result(bench: dict, info: dict, source: Source) -> Result | None:
    stats = bench.get("stats") if isinstance(bench.get("stats"), dict) else {}
    median = _positive(stats.get("median")) or _positive(info.get("median_s"))
    if median is None:
        return None
    backend = info["backend"]
    shape = _shape(info.get("shape"))
    flops, nbytes = _positive(info.get("flops")), _positive(info.get("bytes"))
    return Result(
        stage=info["stage"],
        backend=backend,
        device=_text(info.get("device")) or _guess_device(backend),
        size=_text(info.get("size")) or ("x".join(map(str, shape)) if shape else "?"),
        dtype=_text(info.get("dtype")) or "?",
        shape=shape,
        median=median,
        iqr=_number(stats.get("iqr")),
        flops=flops,
        bytes=nbytes,
        gflops=_positive(info.get("gflops")) or (flops / median / 1e9 if flops else None),
        gbps=_positive(info.get("gbps")) or (nbytes / median / 1e9 if nbytes else None),
        peak_share=_positive(info.get("peak_share")),
        source=source,
        fullname=_text(bench.get("fullname")),
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _positive(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _shape(value: object) -> tuple[int, int, int, int] | None:
    if not isinstance(value, dict):
        return None
    dims = [value.get(k) for k in ("N", "D_in", "H", "D_out")]
    if all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        return tuple(dims)  # type: ignore[return-value]
    return None


def _guess_device(backend: str) -> str:
    for kind in ("cpu", "cuda", "mps"):
        if kind in backend:
            return kind
    return "cpu" if backend == "numpy" else "?"


def _commit(info: object) -> str:
    if not isinstance(info, dict) or not _text(info.get("id")) or info.get("id") == "unversioned":
        return ""
    return _text(info.get("id"))[:10] + (" (dirty)" if info.get("dirty") else "")


def _fingerprint(machine_info: dict) -> dict:
    fp = dict(machine_info.get("perf_fingerprint") or {}) if isinstance(machine_info.get("perf_fingerprint"), dict) else {}
    cpu = machine_info.get("cpu") if isinstance(machine_info.get("cpu"), dict) else {}
    if not fp.get("cpu") and _text(cpu.get("brand_raw")):
        fp["cpu"] = cpu["brand_raw"]
    if not fp.get("cpus") and isinstance(cpu.get("count"), int):
        fp["cpus"] = cpu["count"]
    if not fp.get("python") and _text(machine_info.get("python_version")):
        fp["python"] = machine_info["python_version"]
    return fp


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Cell:
    result: Result
    speedup: float | None   # baseline median / this median: > 1 means faster than the baseline backend
    share: float | None     # fraction of the backend's peak (matmul rate or copy bandwidth)


@dataclass(frozen=True)
class Table:
    """One size and dtype: stages down (execution order, steps last), backends across."""

    size: str
    dtype: str
    shape: tuple[int, int, int, int] | None
    step_flops: float | None   # FLOPs of one train_step at this size: the order of sizes
    stages: tuple[str, ...]
    backends: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]   # (stage, backend) -> cell
    baseline: str

    def cell(self, stage: str, backend: str) -> Cell | None:
        return self.cells.get((stage, backend))

    @property
    def sources(self) -> list[Source]:
        seen: dict[int, Source] = {}
        for c in self.cells.values():
            seen.setdefault(c.result.source.index, c.result.source)
        return [seen[i] for i in sorted(seen)]


def order_stages(stages: Iterable[str]) -> list[str]:
    """Execution order; stages this version does not know next (by name); train_step and tutorial_step last."""
    rank = {s: (0, i) for i, s in enumerate(STAGES)} | {s: (2, i) for i, s in enumerate(STEPS)}
    return sorted(set(stages), key=lambda s: (rank.get(s, (1, 0)), s))


def order_backends(backends: Iterable[str]) -> list[str]:
    """numpy, torch-cpu, torch-cuda (then torch-cuda:1, ...), torch-mps, then any other by name."""
    def rank(b: str) -> tuple[int, str]:
        family = b.split(":")[0]
        return (_BACKEND_ORDER.index(family) if family in _BACKEND_ORDER else len(_BACKEND_ORDER), b)

    return sorted(set(backends), key=rank)


def roofline(stage: str) -> str | None:
    """The probe a stage is measured against: matmuls and whole steps by FLOP rate, elementwise stages by bandwidth."""
    if stage in MATMUL_STAGES or stage in STEPS:
        return "peak_matmul"
    if stage in STAGES:
        return "peak_copy"
    return None


def share_of_peak(result: Result, peaks: dict[tuple[int, str, str, str], dict[str, float]]) -> float | None:
    """The recorded extra_info.peak_share, else achieved rate / the peak of the same file, backend, device and dtype."""
    if result.peak_share is not None:
        return result.peak_share
    probe = roofline(result.stage)
    peak = peaks.get((result.source.index, result.backend, result.device, result.dtype), {}).get(probe or "")
    rate = result.gflops if probe == "peak_matmul" else result.gbps
    return rate / peak if peak and rate else None


def step_flops(results: Iterable[Result]) -> float | None:
    """FLOPs of one train_step at these results' size: as recorded, else from the shape by the kernels' model."""
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
    """One table per (size, dtype), ordered by train_step FLOPs (then name); roofline probes are not in them."""
    groups: dict[tuple[str, str], dict[tuple[str, str], Result]] = defaultdict(dict)
    for (size, dtype, backend, stage), r in merged.results.items():
        if stage not in PROBES:
            groups[(size, dtype)][(stage, backend)] = r
    tables = []
    for (size, dtype), results in groups.items():
        cells = {}
        for (stage, backend), r in results.items():
            base = results.get((stage, baseline))
            cells[(stage, backend)] = Cell(r, base.median / r.median if base else None, share_of_peak(r, merged.peaks))
        shape = next((r.shape for r in results.values() if r.shape), None)
        tables.append(Table(size, dtype, shape, step_flops(results.values()),
                            tuple(order_stages(s for s, _ in results)), tuple(order_backends(b for _, b in results)),
                            cells, baseline))
    work: dict[str, float] = {}  # a size's place: its smallest train_step FLOPs over dtypes, so dtypes stay together
    for t in tables:
        if t.step_flops is not None:
            work[t.size] = min(work.get(t.size, t.step_flops), t.step_flops)
    tables.sort(key=lambda t: (t.size not in work, work.get(t.size, 0.0), t.size, t.dtype != DEFAULT_DTYPE, t.dtype))
    return tables


# --------------------------------------------------------------------------- crossover


def device_kind(device: str) -> str:
    """'cpu', 'gpu' (cuda, mps, ...) or '?' for a device this report cannot place."""
    family = device.split(":")[0].lower()
    if family == "cpu":
        return "cpu"
    return "?" if family in ("", "?") else "gpu"


def _kind(table: Table, backend: str) -> str:
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
    """For each GPU backend and dtype, the smallest size from which it beats the fastest CPU backend for good."""
    found = []
    for dtype in dict.fromkeys(t.dtype for t in tables):
        same = [t for t in tables if t.dtype == dtype and t.step_flops is not None]
        gpus = order_backends(b for t in same for b in t.backends if t.cell(stage, b) and _kind(t, b) == "gpu")
        for gpu in gpus:
            races = []
            for t in same:
                mine = t.cell(stage, gpu)
                cpus = [(c.result.median, b) for b in t.backends if (c := t.cell(stage, b)) and _kind(t, b) == "cpu"]
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


# --------------------------------------------------------------------------- text


def human_time(seconds: float, keep_zeros: bool = True) -> str:
    """3 significant digits in s, ms, µs or ns: 0.000139768 -> '140 µs', 0.004 -> '4.00 ms' ('4 ms' without keep_zeros)."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        value = float(f"{seconds / scale:.3g}")
        if value >= 1 or unit == "ns":
            return (f"{value:#.3g}".rstrip(".") if keep_zeros else f"{value:.3g}") + f" {unit}"
    raise AssertionError("unreachable")


def format_speedup(ratio: float) -> str:
    """0.0052 -> '0.0052x', 0.8 -> '0.80x', 2 -> '2.00x', 45.5 -> '45.5x', 150.2 -> '150x'."""
    if ratio < 1:
        return f"{ratio:#.2g}x"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x"


def format_share(share: float) -> str:
    """A fraction of peak as a percentage: 0.5 -> '50%', 0.034 -> '3.4%', below 0.01% -> '<0.01%'."""
    percent = 100 * share
    if percent < 0.01:
        return "<0.01%"
    return f"{percent:.2g}%" if percent < 10 else f"{percent:.0f}%"


def format_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 1000 else f"{value:.3g} {unit}"


def format_cell(cell: Cell | None, baseline_column: bool) -> str:
    """'140 µs · 1.52x · 12% peak' ('†' after the time when noisy); the baseline's own column has no speedup."""
    if cell is None:
        return "—"
    parts = [human_time(cell.result.median) + (" †" if cell.result.noisy else "")]
    if cell.speedup is not None and not baseline_column:
        parts.append(format_speedup(cell.speedup))
    if cell.share is not None:
        parts.append(f"{format_share(cell.share)} peak")
    return " · ".join(parts)


def describe_machine(fp: dict, short: bool = False) -> str:
    """'AMD EPYC, 2 CPUs; GPU: ...; numpy 2.4.6 (openblas ...), torch 2.13.0+cpu; threads ...' from a fingerprint."""
    cpu = str(fp.get("cpu") or "unknown CPU")
    if fp.get("cpus"):
        cpu += f" ({fp['cpus']} CPUs)"
    gpus = [str(g) for g in fp.get("gpus") or []]
    hardware = cpu + (f" + {', '.join(dict.fromkeys(gpus))}" if gpus else "")
    libraries = []
    if fp.get("numpy"):
        blas = ", ".join(map(str, fp.get("blas") or []))
        libraries.append(f"numpy {fp['numpy']}" + (f" ({blas})" if blas and not short else ""))
    if fp.get("torch"):
        libraries.append(f"torch {fp['torch']}")
    if fp.get("cuda") and not short:
        libraries.append(f"CUDA {fp['cuda']}" + (f", driver {fp['gpu_driver']}" if fp.get("gpu_driver") else ""))
    if fp.get("python") and not short:
        libraries.append(f"Python {fp['python']}")
    threads = fp.get("threads") if isinstance(fp.get("threads"), dict) else {}
    counts = set(threads.values())
    if len(counts) == 1:
        n = counts.pop()
        libraries.append(f"{n} thread{'s' if n != 1 else ''}" + ("" if short else f" ({', '.join(threads)})"))
    elif threads:
        libraries.append("threads " + ", ".join(f"{k}={v}" for k, v in threads.items()))
    return "; ".join([hardware, ", ".join(libraries)] if libraries else [hardware])


def gpu_name(result: Result) -> str | None:
    """The name of the CUDA device a result ran on, from its file's fingerprint ('cuda:1' -> gpus[1])."""
    family, _, index = result.device.partition(":")
    gpus = result.source.fingerprint.get("gpus") or []
    i = int(index) if index.isdigit() else 0
    return str(gpus[i]) if family == "cuda" and i < len(gpus) else None


def device_label(result: Result) -> str:
    """The device a result ran on, with the GPU's name where known: 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    name = gpu_name(result)
    return f"{result.device} ({name})" if name else result.device


def _shape_text(shape: tuple[int, int, int, int] | None) -> str:
    return "×".join(map(str, shape)) if shape else "shape unknown"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(merged: Merged, tables: Sequence[Table], races: Sequence[Crossover], *,
                    figures: Sequence[str] = (), command: str = "") -> str:
    """The whole report as Markdown: sources and machines, one table per size, peaks, crossovers, figures."""
    lines = ["# Performance report: time per call, by stage and backend", ""]
    if command:
        lines += [f"Made by `{command}`.", ""]
    lines += ["## Sources", ""]
    for s in merged.sources:
        when = ", ".join(x for x in (s.datetime.replace("T", " ")[:19], f"commit {s.commit}" if s.commit else "") if x)
        lines.append(f"{s.index + 1}. `{s.path}`" + (f" ({when})" if when else "") + f": {describe_machine(s.fingerprint)}")
    if len(merged.sources) > 1:
        lines += ["", "Where files overlap (same size, dtype, backend and stage), the file named later wins."]
    lines += _replacements(merged.replaced)
    lines += [f"- note: {n}" for n in merged.notes]
    lines += ["", "| backend | device | results from |", "|---|---|---|"]
    for backend in order_backends(r.backend for r in merged.results.values()):
        rs = [r for r in merged.results.values() if r.backend == backend]
        devices = ", ".join(dict.fromkeys(device_label(r) for r in rs))
        files = ", ".join(f"`{s}`" for s in dict.fromkeys(r.source.path for r in sorted(rs, key=lambda r: r.source.index)))
        lines.append(f"| {_md(backend)} | {_md(devices)} | {_md(files)} |")
    baseline = tables[0].baseline if tables else DEFAULT_BASELINE
    lines += ["", f"Each cell: median time per call · speedup vs {baseline} at the same stage (> 1: faster; none in "
              f"{baseline}'s own column) · share of peak where known (matmul stages and whole steps: achieved GFLOP/s of "
              "the backend's peak_matmul rate; elementwise stages: achieved GB/s of its peak_copy bandwidth). "
              f"† noisy: IQR above {NOISY_IQR:.0%} of the median. — not measured."]
    for t in tables:
        lines += ["", _heading(t), ""]
        lines.append("| stage | " + " | ".join(_md(b) for b in t.backends) + " |")
        lines.append("|---|" + "---|" * len(t.backends))
        for stage in t.stages:
            row = [format_cell(t.cell(stage, b), b == t.baseline) for b in t.backends]
            lines.append(f"| {_md(stage)} | " + " | ".join(_md(c) for c in row) + " |")
        if t.baseline not in t.backends:
            lines += ["", f"No {baseline} results at this size: no speedups."]
        ratios = [(b, c.result.median / s.result.median) for b in t.backends
                  if (c := t.cell("tutorial_step", b)) and (s := t.cell(STEP, b))]
        if ratios:
            lines += ["", "tutorial_step (the tutorial's own code) against train_step, time ratio (> 1: the tutorial's code "
                      "is slower): " + ", ".join(f"{b} {r:.2f}x" for b, r in ratios) + "."]
        sums = [(b, s.result.median / total) for b in t.backends
                if (s := t.cell(STEP, b)) and (total := stage_sum(t, b))]
        if sums:
            lines += ["", "train_step against the sum of its stages' medians (target: at most 1.10x): "
                      + ", ".join(f"{b} {r:.2f}x" for b, r in sums) + "."]
    lines += _peaks(merged)
    lines += _crossover_lines(races, tables)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def stage_sum(t: Table, backend: str) -> float | None:
    """The sum of the medians of every stage of a step (sgd_update counts both weights), if all were measured."""
    cells = [t.cell(stage, backend) for stage in STAGES]
    return sum(c.result.median for c in cells) if all(cells) else None


def _heading(t: Table) -> str:
    work = f", {t.step_flops / 1e9:.3g} GFLOP per train_step" if t.step_flops else ""
    return f"## {t.size}: N×D_in×H×D_out = {_shape_text(t.shape)}, {t.dtype}{work}"


def _replacements(replaced: Sequence[tuple[Result, Result]]) -> list[str]:
    grouped: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for old, new in replaced:
        what = f"{new.backend} @ {new.size}" + ("" if new.dtype == DEFAULT_DTYPE else f" {new.dtype}")
        grouped[(old.source.path, new.source.path)][what] += 1
    lines = []
    for (old, new), whats in grouped.items():
        listed = ", ".join(f"{w} ({n} result{'s' if n != 1 else ''})" for w, n in whats.items())
        if old == new:
            lines.append(f"- `{new}` holds some results twice; the later entry is kept: {listed}")
        else:
            lines.append(f"- `{new}` replaces `{old}` for {listed}")
    return lines


def _peaks(merged: Merged) -> list[str]:
    if not merged.peaks:
        return []
    paths = {s.index: s.path for s in merged.sources}
    lines = ["", "## Peak rates (roofline probes)", "", "| backend | device | dtype | peak matmul | copy bandwidth | from |",
             "|---|---|---|---|---|---|"]
    columns = order_backends(b for (_, b, _, _) in merged.peaks)
    for (index, backend, device, dtype), rates in sorted(merged.peaks.items(),
                                                         key=lambda kv: (columns.index(kv[0][1]), kv[0])):
        matmul = format_rate(rates["peak_matmul"], "GFLOP/s") if "peak_matmul" in rates else "—"
        copy = format_rate(rates["peak_copy"], "GB/s") if "peak_copy" in rates else "—"
        lines.append(f"| {_md(backend)} | {_md(device)} | {dtype} | {matmul} | {copy} | `{_md(paths[index])}` |")
    return lines


def _crossover_lines(races: Sequence[Crossover], tables: Sequence[Table]) -> list[str]:
    if not any(t.cell(STEP, b) for t in tables for b in t.backends):
        return []
    lines = ["", f"## When does the GPU win? ({STEP}, by problem size)", ""]
    if not races:
        if not any(_kind(t, b) == "gpu" for t in tables for b in t.backends):
            return lines + ["No GPU results in these files: nothing to set against the CPU."]
        return lines + ["No GPU backend has train_step results at a size where a CPU backend has them: no crossover to find."]
    for x in races:
        name = x.backend + ("" if x.dtype == DEFAULT_DTYPE else f" ({x.dtype})")
        at = x.at
        if at is None:
            last = x.races[-1]
            lines.append(f"- {name} does not overtake the fastest CPU backend at the {len(x.races)} size(s) measured; "
                         f"at the largest, {last.size}: {human_time(last.gpu)} vs {human_time(last.cpu)} "
                         f"({last.cpu_backend}), {format_speedup(last.cpu / last.gpu)}.")
            continue
        where = (f"from {at.size}" + (f" ({at.flops / 1e9:.3g} GFLOP per step)" if at.flops else "") +
                 f": {human_time(at.gpu)} vs {human_time(at.cpu)} ({at.cpu_backend}), {format_speedup(at.cpu / at.gpu)}")
        below = x.below
        if below is None:
            lines.append(f"- {name} is faster than the fastest CPU backend at every size measured, {where}.")
        else:
            lines.append(f"- {name} overtakes the fastest CPU backend {where}; at {below.size} it was still slower: "
                         f"{human_time(below.gpu)} vs {human_time(below.cpu)} ({below.cpu_backend}).")
    return lines


# --------------------------------------------------------------------------- figures


def figure_names(tables: Sequence[Table]) -> list[str]:
    """File names of the figures, in order: stages-<size>[-<dtype>].png per table, then step-vs-size.png."""
    names = [_stage_figure(t) for t in tables]
    if any(t.step_flops and t.cell(STEP, b) for t in tables for b in t.backends):
        names.append("step-vs-size.png")
    return names


def _stage_figure(t: Table) -> str:
    label = t.size + ("" if t.dtype == DEFAULT_DTYPE else f"-{t.dtype}")
    return f"stages-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}.png"


def backend_colors(backends: Iterable[str]) -> dict[str, str]:
    colors, spare = {}, iter(_SPARE_COLORS * 4)
    for b in order_backends(backends):
        colors[b] = _COLORS.get(b) or next(spare, "black")
    return colors


def _machines(sources: Iterable[Source]) -> str:
    return " | ".join(dict.fromkeys(describe_machine(s.fingerprint, short=True) for s in sources))


def _footnote(sources: Iterable[Source], width_in: float) -> str:
    sources = list(sources)
    files = "; ".join(f"{Path(s.path).name} ({s.datetime.replace('T', ' ')[:16]})" if s.datetime else Path(s.path).name
                      for s in sources)
    return textwrap.fill(f"Machine: {_machines(sources)}. Data: {files}. Median over all rounds of each benchmark.",
                         width=int(width_in * 72 / 4.4))  # about 4.4 points per character at 7 points


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _add_footnote(fig, text: str) -> None:
    """Small grey text along the bottom-left edge; as a supxlabel, the layout makes room for it."""
    fig.supxlabel(text, x=0.005, ha="left", fontsize=7, color="0.35", multialignment="left")


def _time_axis(ax, values: Sequence[float]) -> None:
    """Log-scale y with ticks in human units (1 µs, 10 µs, ...); 1-2-5 ticks when the range is under 3 decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(values), max(values)
    ax.set_yscale("log")
    ax.set_ylim(lo / 2, hi * 2.5)
    subs = (1.0,) if hi / lo > 10**2.5 else (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human_time(v, keep_zeros=False) if v > 0 else ""))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_stages(table: Table, path: Path) -> None:
    """Grouped bars: median time per stage (x, execution order, steps last) per backend, log-scale time."""
    fig = _new_figure(12, 6)
    ax = fig.add_subplot()
    colors = backend_colors(table.backends)
    width = 0.8 / len(table.backends)
    values = [c.result.median for c in table.cells.values()]
    several = _several_machines(table.sources)
    for i, backend in enumerate(table.backends):
        xs, ys = [], []
        for j, stage in enumerate(table.stages):
            if (c := table.cell(stage, backend)) is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(c.result.median)
        first = next(c.result for (_, b), c in table.cells.items() if b == backend)
        ax.bar(xs, ys, width=width * 0.92, color=colors[backend], label=_legend_label(first, several), zorder=2)
    _time_axis(ax, values)
    ax.set_xticks(range(len(table.stages)), table.stages, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(table.stages) - 0.4)
    steps = [j for j, s in enumerate(table.stages) if s in STEPS]
    if steps and steps[0] > 0:
        ax.axvline(steps[0] - 0.5, color="0.4", ls=":", lw=1)
        ax.text(steps[0] - 0.45, 0.98, "whole step", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.3")
    ax.grid(axis="y", which="major", color="0.85", zorder=0)
    ax.grid(axis="y", which="minor", color="0.93", zorder=0)
    ax.set_xlabel("stage (execution order)")
    ax.set_ylabel("median time per call (log scale)")
    ax.legend(title="backend", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"Time per stage, {table.size} (N×D_in×H×D_out = {_shape_text(table.shape)}, {table.dtype})",
                 fontweight="bold")
    ax.set_title(_machines(table.sources), fontsize=9, color="0.25")
    _add_footnote(fig, _footnote(table.sources, 12))
    fig.savefig(path)


def _legend_label(result: Result, several_machines: bool) -> str:
    """The backend, with its GPU's name, or its CPU's when the figure mixes machines: 'torch-cuda\n(NVIDIA H100)'."""
    name = gpu_name(result)
    if name is None and several_machines and device_kind(result.device) == "cpu":
        name = result.source.fingerprint.get("cpu")
    return f"{result.backend}\n({name})" if name else result.backend


def _several_machines(sources: Iterable[Source]) -> bool:
    return len({describe_machine(s.fingerprint) for s in sources}) > 1


def plot_step_vs_size(tables: Sequence[Table], races: Sequence[Crossover], path: Path) -> None:
    """train_step median time against GFLOP per step, log-log, one line per backend (tutorial_step dashed),
    with a dashed vertical line where each GPU backend overtakes the fastest CPU backend."""
    sized = [t for t in tables if t.step_flops]
    dtypes = list(dict.fromkeys(t.dtype for t in sized))
    backends = order_backends(b for t in sized for b in t.backends)
    colors = backend_colors(backends)
    never = {(x.backend, x.dtype) for x in races if x.at is None}
    srcs = {s.index: s for t in sized for s in t.sources}
    sources = [srcs[i] for i in sorted(srcs)]
    several = _several_machines(sources)
    fig = _new_figure(11, 6.5)
    ax = fig.add_subplot()
    times, styles = [], {d: s for d, s in zip(dtypes, ("-", "-.", ":", "--"))}
    for stage in STEPS:
        for dtype in dtypes:
            for backend in backends:
                cells = [(t, c) for t in sized if t.dtype == dtype and (c := t.cell(stage, backend))]
                if not cells:
                    continue
                pts = [(t.step_flops / 1e9, c.result.median, _kind(t, backend)) for t, c in cells]
                label = backend if stage != STEP else _legend_label(cells[0][1].result, several)
                label += "" if len(dtypes) == 1 else f" {dtype}"
                if stage != STEP:
                    label += ", tutorial's code"
                elif (backend, dtype) in never:
                    label += "\n(never overtakes the CPU here)"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[backend], lw=1.2 if stage != STEP else 2,
                        ls="--" if stage != STEP else styles.get(dtype, "-"), alpha=0.7 if stage != STEP else 1,
                        marker="s" if pts[0][2] == "gpu" else "o", ms=4 if stage != STEP else 6, label=label, zorder=3)
                times += [p[1] for p in pts]
    flops = sorted({t.step_flops / 1e9 for t in sized})
    _time_axis(ax, times)
    ax.set_xscale("log")
    ax.set_xlim(flops[0] / 2, flops[-1] * 2)
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    top = ax.secondary_xaxis("top")
    names = {}
    for t in sized:
        names.setdefault(t.step_flops / 1e9, t.size)
    top.set_xticks(list(names), list(names.values()), fontsize=8, rotation=30 if len(names) > 6 else 0)
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("size", fontsize=8, color="0.3", labelpad=2)
    for k, x in enumerate(r for r in races if r.at):
        _mark_crossover(ax, x, colors[x.backend], k, flops)
    ax.grid(which="major", color="0.85", zorder=0)
    ax.set_xlabel(f"work per step ({STEP} GFLOP, log scale)")
    ax.set_ylabel(f"median time per {STEP} (log scale)")
    ax.legend(title="backend", loc="upper left", fontsize=9)
    fig.suptitle(f"{STEP} time against problem size" + (f" ({dtypes[0]})" if len(dtypes) == 1 else ""), fontweight="bold")
    ax.set_title(_machines(sources), fontsize=9, color="0.25", pad=10)
    _add_footnote(fig, _footnote(sources, 11))
    fig.savefig(path)


def _mark_crossover(ax, x: Crossover, color: str, k: int, flops: Sequence[float]) -> None:
    """A dashed vertical line at the crossover size and a labelled arrow to the GPU's point; labels stack upwards
    from the bottom of the axes, on the side of the line with more room."""
    at = x.at
    gflop = at.flops / 1e9
    ax.axvline(gflop, color=color, ls="--", lw=1.2, zorder=1)
    right_half = math.log(gflop / flops[0]) > 0.6 * math.log(max(flops[-1] / flops[0], 1.0001))
    text = f"{x.backend} is faster than the CPU from the smallest size"
    if x.below:
        times = f"{human_time(at.gpu)} vs {human_time(at.cpu)}"
        text = f"{x.backend} overtakes {at.cpu_backend} (the fastest CPU) at {at.size}: {times}"
    ax.annotate(text, xy=(gflop, at.gpu), xytext=(gflop / 1.25 if right_half else gflop * 1.25, 0.03 + 0.08 * k),
                textcoords=ax.get_xaxis_transform(), ha="right" if right_half else "left", va="bottom", fontsize=8,
                color=color, bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "alpha": 0.9},
                arrowprops={"arrowstyle": "->", "color": color, "shrinkA": 0, "shrinkB": 4}, zorder=4)


def write_figures(tables: Sequence[Table], races: Sequence[Crossover], out: Path) -> list[Path]:
    """Every figure of ``figure_names``, written into ``out``; returns their paths."""
    written = []
    for t in tables:
        path = out / _stage_figure(t)
        plot_stages(t, path)
        written.append(path)
    if "step-vs-size.png" in figure_names(tables):
        path = out / "step-vs-size.png"
        plot_step_vs_size(tables, races, path)
        written.append(path)
    return written


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m perf.report",
                description="Tables and figures from perf-suite results (pytest-benchmark JSON written by pytest perf).")
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="results files; where two hold the same size, dtype, backend and stage, the later one wins")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"folder for report.md and the PNG figures (default: {DEFAULT_OUT})")
    p.add_argument("--baseline-backend", default=None, metavar="NAME",
                   help=f"the backend speedups are computed against (default: {DEFAULT_BASELINE})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    baseline = args.baseline_backend or DEFAULT_BASELINE
    try:
        merged = merge([load(path, i) for i, path in enumerate(args.results)])
        tables = build_tables(merged, baseline)
        if not tables:
            raise ReportError("the results hold only roofline probes: no stage or step to report")
        backends = {b for t in tables for b in t.backends}
        if baseline not in backends:
            if args.baseline_backend:
                raise ReportError(f"--baseline-backend {baseline!r} is in none of the results; they hold "
                                  f"{', '.join(order_backends(backends))}")
            merged.notes.append(f"no {baseline} results: no speedups (choose another with --baseline-backend)")
        races = crossovers(tables)
        names = figure_names(tables)
        text = render_markdown(merged, tables, races, figures=names,
                               command=shlex.join(["python", "-m", "perf.report", *argv]))
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.md").write_text(text, encoding="utf-8")
            written = write_figures(tables, races, out)
        except OSError as exc:
            raise ReportError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    for note in merged.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out / 'report.md'} and {len(written)} figure(s): {', '.join(p.name for p in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
