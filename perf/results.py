"""The results layer: the only code that reads and writes the suite's JSON.

Two documents pass through here:

* a *run*: pytest-benchmark JSON as ``pytest perf`` saves it (``--benchmark-save``,
  ``--benchmark-autosave``, ``--benchmark-json``): ``benchmarks[]`` with ``fullname``,
  ``stats`` (``data``: one value per round, per call) and ``extra_info`` (what the case is,
  which metric, the processes it was measured in), ``machine_info.perf_fingerprint`` and the
  suite's own header ``perf``;
* a *verdict report*: the gate's JSON (``--perf-report-json``, ``python -m perf.ab --json``).

A run is input that anyone can damage, so it is validated on load: anything the suite would
use that is missing, of the wrong type, non-finite or out of range is a ``ResultsError`` whose
one-line message names the file and the field, never a traceback later on. Fields the suite
does not use are left alone. Nothing here imports torch or pytest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ResultsError
from .metric import Metric
from .statistic import DEFAULT, Process
from .statistic import median as median_of

SAMPLES_KEY = "data"  # stats.data: one value per round, per call (kept by --benchmark-save-data)




@dataclass(frozen=True)
class Result:
    """One benchmark of one run: the values of its rounds, what they measure and where they came from."""

    name: str                          # pytest node id (fullname): the baseline key
    metric: Metric
    samples: tuple[float, ...]         # per round, per call; empty when the run kept no raw data
    median: float | None               # stats.median (present even without raw data)
    iqr: float | None
    processes: tuple[Process, ...] = ()   # the processes it was measured in, in order; () = this one only
    info: Mapping[str, object] = field(default_factory=dict)  # extra_info as saved

    def text(self, key: str) -> str:
        value = self.info.get(key)
        return value.strip() if isinstance(value, str) else ""

    def number(self, key: str) -> float | None:
        return _number(self.info.get(key))

    @property
    def stage(self) -> str:
        return self.text("stage")

    @property
    def backend(self) -> str:
        return self.text("backend")

    @property
    def shape(self) -> tuple[int, int, int, int] | None:
        value = self.info.get("shape")
        if not isinstance(value, Mapping):
            return None
        dims = [value.get(k) for k in ("N", "D_in", "H", "D_out")]
        if all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            return tuple(dims)  # type: ignore[return-value]
        return None

    def per_process(self, statistic: str = DEFAULT) -> list[float]:
        """One value per process (``perf.statistic``: min or median); [] when measured in one process only."""
        return [p.value(statistic) for p in self.processes]


@dataclass(frozen=True)
class Run:
    """One saved or written run of ``pytest perf``."""

    source: str                        # the file it was read from
    metric: Metric
    datetime: str
    commit: str                        # short commit id, '(dirty)' appended; '' when unversioned
    fingerprint: Mapping[str, object] | None
    header: Mapping[str, object]       # the suite's "perf" section: command, settings
    results: dict[str, Result]         # by name, in file order
    commit_id: str = ""                # the full commit id; '' when unversioned
    commit_time: str = ""              # the commit's date (ISO 8601, as git gives it); '' when unversioned
    dirty: bool = False                # saved from a working tree with uncommitted changes

    @property
    def complete(self) -> bool:
        """Every benchmark kept its raw samples (what the gate needs)."""
        return bool(self.results) and all(r.samples for r in self.results.values())


# --------------------------------------------------------------------------- reading runs


def read_json(path: str | os.PathLike, what: str = "JSON") -> object:
    """The parsed document at ``path``; ResultsError (one line) when it cannot be read or parsed."""
    shown = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise ResultsError(f"{shown}: is a directory, not a {what} file") from None
    except OSError as exc:
        raise ResultsError(f"{shown}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{shown}: not {what} (not UTF-8 text at byte {exc.start})") from None
    if not text.strip():
        raise ResultsError(f"{shown}: empty file, not {what}")
    try:
        return json.loads(text)  # NaN/Infinity parse; the field checks reject them where they matter
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{shown}: not {what} (invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise ResultsError(f"{shown}: not {what} ({exc})") from None


def load_run(path: str | os.PathLike) -> Run:
    """A validated run from a pytest-benchmark JSON file written by ``pytest perf``."""
    return parse_run(read_json(path, "pytest-benchmark JSON"), str(path))


def parse_run(doc: object, source: str) -> Run:
    """A validated run from a parsed document; ResultsError naming ``source`` and the field."""
    check = _Checker(source)
    if not isinstance(doc, Mapping):
        check.fail("", f"not pytest-benchmark JSON: the top level is {_kind(doc)}, not an object")
    benchmarks = doc.get("benchmarks")
    if not isinstance(benchmarks, list):
        check.fail("benchmarks", "missing or not a list: not pytest-benchmark JSON")
    header = doc.get("perf", {})
    if not isinstance(header, Mapping):
        check.fail("perf", f"expected an object (the suite's header), got {_kind(header)}")
    run_metric = Metric.parse(header.get("metric", Metric.TIME.value), f"{source}: perf.metric")
    machine_info = doc.get("machine_info", {})
    if not isinstance(machine_info, Mapping):
        check.fail("machine_info", f"expected an object, got {_kind(machine_info)}")
    fingerprint = machine_info.get("perf_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, Mapping):
        check.fail("machine_info.perf_fingerprint", f"expected an object, got {_kind(fingerprint)}")
    results: dict[str, Result] = {}
    for i, bench in enumerate(benchmarks):
        result = _parse_result(check, f"benchmarks[{i}]", bench, run_metric)
        if result.name in results:
            check.fail(f"benchmarks[{i}].fullname", f"{result.name!r} appears twice")
        results[result.name] = result
    info = doc.get("commit_info")
    info = info if isinstance(info, Mapping) and _text(info.get("id")) not in ("", "unversioned") else {}
    return Run(source=source, metric=run_metric, datetime=_text(doc.get("datetime")), commit=_commit(info),
               fingerprint=fingerprint, header=header, results=results, commit_id=_text(info.get("id")),
               commit_time=_text(info.get("time")), dirty=bool(info.get("dirty")))


def _parse_result(check: _Checker, where: str, bench: object, run_metric: Metric) -> Result:
    if not isinstance(bench, Mapping):
        check.fail(where, f"expected an object, got {_kind(bench)}")
    name = bench.get("fullname")
    if not isinstance(name, str) or not name.strip():
        check.fail(f"{where}.fullname", "missing or not a non-empty string (the benchmark's id)")
    where = f"{where} ({name})"
    stats = bench.get("stats")
    if not isinstance(stats, Mapping):
        check.fail(f"{where}.stats", f"missing or not an object (got {_kind(stats)})")
    samples = stats.get(SAMPLES_KEY, [])
    if not isinstance(samples, list):
        check.fail(f"{where}.stats.{SAMPLES_KEY}", f"expected a list of numbers, got {_kind(samples)}")
    # Zero is a value a coarse clock can give (the gate drops it with a note); negative or non-finite is damage.
    values = tuple(check.non_negative(f"{where}.stats.{SAMPLES_KEY}[{j}]", v) for j, v in enumerate(samples))
    median = check.non_negative(f"{where}.stats.median", stats["median"]) if stats.get("median") is not None else None
    iqr = check.finite(f"{where}.stats.iqr", stats["iqr"]) if stats.get("iqr") is not None else None
    if median is None and not values:
        check.fail(f"{where}.stats", "neither raw data nor a median")
    info = bench.get("extra_info", {})
    if not isinstance(info, Mapping):
        check.fail(f"{where}.extra_info", f"expected an object, got {_kind(info)}")
    metric = Metric.parse(info.get("metric", run_metric.value), f"{check.source}: {where}.extra_info.metric")
    processes = info.get("processes", [])
    if not isinstance(processes, list):
        check.fail(f"{where}.extra_info.processes", f"expected a list, got {_kind(processes)}")
    procs = tuple(_parse_process(check, f"{where}.extra_info.processes[{k}]", p) for k, p in enumerate(processes))
    if procs and values:
        _check_processes(check, f"{where}.extra_info.processes", procs, values)
    if median is None:
        median = median_of(values)
    return Result(name=name, metric=metric, samples=values, median=median,
                  iqr=iqr, processes=procs, info=info)


def _check_processes(check: _Checker, where: str, procs: Sequence[Process], values: Sequence[float]) -> None:
    """Each process's record must be its share of the rounds: the gate reads the records, and a record that
    disagrees with the rounds (an edited stats, say) would be judged on numbers the run never measured."""
    if sum(p.rounds for p in procs) != len(values):
        check.fail(where, f"their rounds add up to {sum(p.rounds for p in procs)}, but stats.data holds {len(values)} values")
    start = 0
    for k, p in enumerate(procs):
        share = Process.of(values[start:start + p.rounds])
        start += p.rounds
        for field_name in ("min", "median"):
            said, actual = getattr(p, field_name), getattr(share, field_name)
            if not math.isclose(said, actual, rel_tol=1e-9, abs_tol=0.0):
                check.fail(f"{where}[{k}].{field_name}", f"{said!r} is not the {field_name} of its {p.rounds} rounds in "
                                                         f"stats.data ({actual!r}): the record and the rounds disagree")


def _parse_process(check: _Checker, where: str, proc: object) -> Process:
    if not isinstance(proc, Mapping):
        check.fail(where, f"expected an object, got {_kind(proc)}")
    rounds = proc.get("rounds")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        check.fail(f"{where}.rounds", f"expected a positive integer, got {rounds!r:.40}")
    return Process(rounds, check.non_negative(f"{where}.min", proc.get("min")),
                   check.non_negative(f"{where}.median", proc.get("median")))


class _Checker:
    """Field checks that raise one ResultsError naming the file and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str):
        raise ResultsError(f"{self.source}: {where + ': ' if where else ''}{problem}")

    def finite(self, where: str, value: object) -> float:
        number = _number(value)
        if number is None:
            self.fail(where, f"expected a finite number, got {value!r:.40}")
        return number

    def positive(self, where: str, value: object) -> float:
        number = self.finite(where, value)
        if number <= 0:
            self.fail(where, f"expected a positive number, got {value!r:.40}")
        return number

    def non_negative(self, where: str, value: object) -> float:
        number = self.finite(where, value)
        if number < 0:
            self.fail(where, f"expected a number >= 0, got {value!r:.40}")
        return number


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _commit(info: object) -> str:
    if not isinstance(info, Mapping) or not _text(info.get("id")) or info.get("id") == "unversioned":
        return ""
    return _text(info.get("id"))[:10] + (" (dirty)" if info.get("dirty") else "")


# --------------------------------------------------------------------------- saved runs


def saved_files(directory: str | os.PathLike) -> list[Path]:
    """pytest-benchmark's numbered files (NNNN_*.json) in one storage folder, oldest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("[0-9][0-9][0-9][0-9]_*.json") if p.is_file()), key=lambda p: p.name)


def readable_runs(paths: Iterable[str | os.PathLike], skipped: list[str] | None = None) -> Iterator[Run]:
    """The runs of ``paths`` that load; each one that does not is named in ``skipped`` (one line each)."""
    for path in paths:
        try:
            yield load_run(path)
        except ResultsError as exc:
            if skipped is not None:
                skipped.append(str(exc))


# --------------------------------------------------------------------------- writing


def write_json(path: str | os.PathLike, doc: object, *, indent: int | None = 2) -> Path:
    """Write ``doc`` whole or not at all: a temporary file beside ``path``, then one rename.

    Replaces an existing file (reports and outcomes are rewritten by every run); saved runs,
    which must never replace anything, go through ``save_new``. A link, or a path that is no
    regular file (``/dev/stdout``, a pipe), is written into, as ``open`` does: renaming onto it
    would replace the link or the device itself.
    """
    target = Path(path)
    text = json.dumps(doc, indent=indent, default=str, allow_nan=False) + "\n"
    if target.is_symlink() or (target.exists() and not target.is_file()):
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        return target
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _keep_umask_mode(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def save_new(folder: str | os.PathLike, name: str, payload: bytes, *, first: int = 1) -> Path:
    """Write ``payload`` as ``folder/NNNN_name.json`` with the next free number, never replacing a file.

    The bytes go to a temporary file (fsync'd); then, holding the folder's lock (two saves at
    once take turns, whatever their names), the next number is chosen and the file hard-linked
    under it. The link fails rather than replace a file of the same name (a writer that does not
    take the lock), and the number after is tried. The temporary file is removed whatever
    happens: an interrupted save leaves no part of a run.
    """
    directory = Path(folder)
    # Not *.json: pytest-benchmark's listing and loading glob for it, and must never see a part.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        _keep_umask_mode(tmp)
        with _folder_lock(directory):
            number = max([first - 1, *(_number_of(p) for p in saved_files(directory))]) + 1
            for _ in range(10_000):
                target = directory / f"{number:04d}_{name}.json"
                try:
                    os.link(tmp, target)
                    return target
                except FileExistsError:
                    number += 1
        raise ResultsError(f"{directory}: no free number to save {name!r} under")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def _folder_lock(directory: Path):
    """An exclusive flock on the folder itself (no lock file to leave behind; a no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _number_of(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[0])
    except ValueError:
        return 0


def _keep_umask_mode(path: str) -> None:
    # mkstemp makes files 0600; a saved run must be as readable as any file the user writes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# --------------------------------------------------------------------------- verdict reports


@dataclass(frozen=True)
class VerdictReport:
    """The gate's decision on a set of benchmarks, as written by ``--perf-report-json`` and ``perf.ab --json``."""

    meta: Mapping[str, object]
    passed: bool
    counts: Mapping[str, int]
    line: str
    rows: tuple[Mapping[str, object], ...]   # one record per benchmark (name, verdict, ratio, interval, ...)
    extra: Mapping[str, object] = field(default_factory=dict)   # e.g. perf.ab's raw rounds

    def names(self, verdict: str) -> list[str]:
        """The benchmarks with this verdict, in report order."""
        return [str(r["name"]) for r in self.rows if r.get("verdict") == verdict]


def load_verdicts(path: str | os.PathLike) -> VerdictReport:
    """A verdict report written by this suite; ResultsError (one line) when it is not one."""
    shown = str(path)
    doc = read_json(path, "a verdict report")
    summary = doc.get("summary") if isinstance(doc, Mapping) else None
    rows = doc.get("comparisons") if isinstance(doc, Mapping) else None
    if not isinstance(summary, Mapping) or not isinstance(rows, list) or not isinstance(summary.get("passed"), bool):
        raise ResultsError(f"{shown}: not a verdict report (no summary.passed and comparisons list)")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str) or not isinstance(row.get("verdict"), str):
            raise ResultsError(f"{shown}: comparisons[{i}]: expected an object with a name and a verdict")
    counts = summary.get("counts") if isinstance(summary.get("counts"), Mapping) else {}
    meta = doc.get("meta") if isinstance(doc.get("meta"), Mapping) else {}
    extra = {k: v for k, v in doc.items() if k not in ("meta", "summary", "comparisons")}
    return VerdictReport(meta, summary["passed"], counts, _text(summary.get("line")), tuple(rows), extra)
