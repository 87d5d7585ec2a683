"""Results files -> the report's entries: each file through ``perf.results.load_run``, then merged.

A benchmark is read as the suite writes it (``perf.measure.annotate`` and
``plugin.pytest_benchmark_update_json``): one without the suite's extra_info was not written by
this suite and is skipped with a note; a field of the wrong type is a one-line ResultsError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cases import PROBES
from ..errors import ResultsError
from ..metric import Metric
from ..results import Result, load_run

NOISY_IQR = 0.10  # a cell is marked noisy when its IQR exceeds this fraction of its median
NAMES = ("stage", "backend", "device", "dtype", "size")   # annotate() writes them for every case
NUMBERS = ("flops", "bytes", "gflops", "gbps", "peak_share")  # 0 (a probe's other rate) reads as absent

Key = tuple[str, str, str, str, Metric]  # (size, dtype, backend, stage, metric)


@dataclass(frozen=True, eq=False)
class Source:
    """One results file: where it is, when it was measured, and on what."""

    path: str
    index: int          # position on the command line: a later file wins a merge
    datetime: str
    commit: str
    fingerprint: Mapping[str, object]   # machine_info.perf_fingerprint ({} when the file has none)


@dataclass(frozen=True, eq=False)
class Entry:
    """One benchmark of one file: a stage (or step, or roofline probe) of one backend at one size."""

    stage: str
    backend: str
    device: str
    dtype: str
    size: str
    metric: Metric
    shape: tuple[int, int, int, int] | None   # (N, D_in, H, D_out)
    median: float                             # per call: seconds, or a count for a counted metric
    iqr: float | None
    flops: float | None                       # per call
    bytes: float | None                       # per call
    gflops: float | None                      # achieved, as recorded
    gbps: float | None                        # achieved, as recorded
    peak_share: float | None                  # of this run's roofline probe, as the plugin recorded it
    source: Source
    fullname: str
    in_cache: bool = False                    # a memory-bound benchmark whose data fits in the cache (roofline.add_shares)

    @property
    def key(self) -> Key:
        return (self.size, self.dtype, self.backend, self.stage, self.metric)

    @property
    def noisy(self) -> bool:
        return self.iqr is not None and self.iqr > NOISY_IQR * self.median


@dataclass(frozen=True)
class Loaded:
    source: Source
    results: list[Entry]
    notes: list[str]


@dataclass
class Merged:
    """Every file's entries merged: one per (size, dtype, backend, stage, metric), the later file's."""

    results: dict[Key, Entry]
    sources: list[Source]
    # (source index, backend, device, dtype) -> {"peak_matmul": GFLOP/s, "peak_copy": GB/s}: the time probes of every file
    peaks: dict[tuple[int, str, str, str], dict[str, float]]
    replaced: list[tuple[Entry, Entry]] = field(default_factory=list)   # (dropped, kept)
    notes: list[str] = field(default_factory=list)


def load(path: str | Path, index: int = 0) -> Loaded:
    """One results file; ResultsError when it cannot be read, is damaged, or holds no benchmark of this suite."""
    shown = str(path)
    run = load_run(path)
    if not run.results:
        raise ResultsError(f"{shown}: holds no benchmarks")
    source = Source(shown, index, run.datetime, run.commit, run.fingerprint or {})
    entries = [_entry(r, f"{shown}: benchmarks[{i}] ({r.name}).extra_info", source)
               for i, r in enumerate(run.results.values()) if all(r.info.get(k) is not None for k in NAMES)]
    total, skipped = len(run.results), len(run.results) - len(entries)
    if not entries:
        raise ResultsError(f"{shown}: none of its {total} benchmarks has the extra_info this suite writes "
                           f"({', '.join(NAMES)}): write results with pytest perf --benchmark-json=PATH")
    notes = [f"{shown}: skipped {skipped} of {total} benchmarks without extra_info {', '.join(NAMES)} "
             "(not written by this suite)"] if skipped else []
    return Loaded(source, entries, notes)


def _entry(r: Result, where: str, source: Source) -> Entry:
    for key in NAMES:
        if not r.text(key):
            raise ResultsError(f"{where}.{key}: expected a non-empty string, got {r.info[key]!r:.40}")
    for key in NUMBERS:
        if r.info.get(key) is not None and (r.number(key) is None or r.number(key) < 0):
            raise ResultsError(f"{where}.{key}: expected a number >= 0, got {r.info[key]!r:.40}")
    if r.info.get("shape") is not None and r.shape is None:
        raise ResultsError(f"{where}.shape: expected an object of positive integers N, D_in, H, D_out, "
                           f"got {r.info['shape']!r:.60}")
    return Entry(**{k: r.text(k) for k in NAMES}, metric=r.metric, shape=r.shape, median=r.median, iqr=r.iqr,
                 **{k: r.number(k) or None for k in NUMBERS}, source=source, fullname=r.name,
                 in_cache=r.info.get("in_cache") is True)


def merge(loaded: Sequence[Loaded]) -> Merged:
    """One entry per (size, dtype, backend, stage, metric): the file later in ``loaded`` wins, and each replacement is kept."""
    merged = Merged({}, [item.source for item in loaded], {})
    shapes: dict[str, Entry] = {}  # size name -> the first entry that gave it a shape
    for item in loaded:
        merged.notes.extend(item.notes)
        for r in item.results:
            first = shapes.setdefault(r.size, r) if r.shape and r.stage not in PROBES else r
            if first.shape != r.shape:
                merged.notes.append(f"size {r.size!r} is {shape_text(first.shape)} in {first.source.path} but "
                                    f"{shape_text(r.shape)} in {r.source.path}: its table mixes two problems")
                shapes[r.size] = r  # one note per change of shape, not per entry
            old = merged.results.get(r.key)
            if old is not None:
                merged.replaced.append((old, r))
            merged.results[r.key] = r
            rate = r.gflops if r.stage == "peak_matmul" else r.gbps if r.stage == "peak_copy" else None
            if rate and r.metric is Metric.TIME:
                peaks = merged.peaks.setdefault((r.source.index, r.backend, r.device, r.dtype), {})
                peaks[r.stage] = max(rate, peaks.get(r.stage, 0.0))
    return merged


def shape_text(shape: tuple[int, int, int, int] | None) -> str:
    return "×".join(map(str, shape)) if shape else "shape unknown"
