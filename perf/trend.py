"""From saved runs to series: each benchmark's value in each run, per metric and machine, in history order.

A history is pytest-benchmark's file storage, ``STORAGE/<machine id>/NNNN_*.json``, read through the
results layer. Runs are grouped by metric and by machine (``perf.machine.key`` of their fingerprint;
runs without one form a group of their own), in history order (``history_order``): by commit time,
commits of one commit time by when each was first saved, a commit's runs by save time (save time alone
for unversioned runs). In each run a benchmark contributes the gate's statistic
(``value_of``) and its per-process values, whose spread weighs the run in ``perf.steps``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import machine, steps
from .errors import UsageError
from .metric import Metric
from .results import Result, Run, saved_files
from .statistic import DEFAULT as STATISTIC

NO_FINGERPRINT = "no-fingerprint"  # the machine of runs saved without the suite's fingerprint
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def storage_files(storage: str | Path) -> list[Path]:
    """The saved runs (NNNN_*.json) of a storage folder and of each of its subfolders (one per
    machine id), folder by folder, oldest first."""
    folder = Path(storage)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [path for f in (folder, *subfolders) for path in saved_files(f)]


OrderKey = tuple[datetime, datetime, str, datetime, str]


def history_order(runs: Iterable[Run]) -> Callable[[Run], OrderKey]:
    """The sort key that puts runs in the history order of ``runs``: by commit time (save time where
    unversioned); commits of one commit time by when each was first saved in ``runs`` (git's clock counts
    seconds, and a rebase, a merge queue or a script makes many commits in one: their ids would order
    them at random); then the runs of one commit by save time."""
    first_saved: dict[str, datetime] = {}
    for run in runs:
        if run.commit_id:
            first_saved[run.commit_id] = min(first_saved.get(run.commit_id, _saved(run)), _saved(run))

    def key(run: Run) -> OrderKey:
        saved = _saved(run)
        return (_instant(run.commit_time) or saved, first_saved.get(run.commit_id, saved), run.commit_id, saved,
                run.source)

    return key


def _saved(run: Run) -> datetime:
    return _instant(run.datetime) or _EARLIEST


def _instant(text: str) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone); None when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def value_of(result: Result) -> float | None:
    """One run's value of a benchmark, the gate's statistic: its fastest process's minimum; without
    per-process records, its fastest round, or its median where it kept no rounds. Zero (a clock too
    coarse for the call) counts as no value."""
    values = result.per_process(STATISTIC) or result.samples or ([result.median] if result.median is not None else [])
    return min((v for v in values if v > 0), default=None)


def machine_of(run: Run) -> str:
    """The name of the machine a run was saved on: ``perf.machine.key`` of its fingerprint."""
    return machine.key(run.fingerprint) if run.fingerprint is not None else NO_FINGERPRINT


def run_label(run: Run) -> str:
    """How a saved run is named: its number (``0012``), as ``--benchmark-compare=NUM`` takes it."""
    name = Path(run.source).name
    return name.split("_", 1)[0] if re.match(r"\d{4}_", name) else Path(run.source).stem


@dataclass(frozen=True)
class Point:
    """One run of one benchmark."""

    run: Run
    value: float                       # the gate's statistic (value_of)
    per_process: tuple[float, ...]     # each process's minimum; () when measured in one process

    @property
    def spread(self) -> float | None:
        return steps.spread(self.per_process)

    @property
    def label(self) -> str:
        return run_label(self.run)


@dataclass(frozen=True)
class Series:
    """One benchmark's runs on one machine in one metric, in history order."""

    benchmark: str                     # the pytest node id (fullname)
    metric: Metric
    machine: str                       # machine_of its runs
    points: tuple[Point, ...]

    @property
    def latest(self) -> Result:
        """The benchmark as its newest run saved it (stage, backend, size and dtype in ``info``)."""
        return self.points[-1].run.results[self.benchmark]


def series(runs: Iterable[Run], select: Callable[[str], bool] = lambda name: True,
           window: int | None = None) -> list[Series]:
    """The series of every benchmark ``select`` keeps, each of its last ``window`` runs (all without one)."""
    runs = list(runs)
    grouped: dict[tuple[Metric, str, str], list[Point]] = {}
    for run in sorted(runs, key=history_order(runs)):
        for name, result in run.results.items():
            value = value_of(result)
            if value is not None and select(name):
                point = Point(run, value, tuple(result.per_process(STATISTIC)))
                grouped.setdefault((result.metric, machine_of(run), name), []).append(point)
    return [Series(name, metric, where, tuple(points[-window:] if window else points))
            for (metric, where, name), points in grouped.items()]


# --------------------------------------------------------------------------- -k expressions

_KEYWORD_HELP = "expected substrings of benchmark ids joined by and, or, not and parentheses, as pytest -k takes them"


def keyword(expression: str) -> Callable[[str], bool]:
    """A pytest-style ``-k`` expression as a test on a benchmark id: each word a case-insensitive
    substring, combined with ``and``, ``or``, ``not`` and parentheses (``not`` binds tightest, then
    ``and``); UsageError (one line) on a malformed one."""
    tokens = re.findall(r"[()]|[^\s()]+", expression)
    parser = _KeywordParser(tokens, expression)
    test = parser.either()
    if parser.tokens:
        parser.fail(f"unexpected {parser.tokens[0]!r}")
    return test


class _KeywordParser:
    """Recursive descent over the tokens of one -k expression: either := both ('or' both)*;
    both := negated ('and' negated)*; negated := 'not' negated | '(' either ')' | word."""

    def __init__(self, tokens: Sequence[str], expression: str) -> None:
        self.tokens = list(tokens)
        self.expression = expression

    def fail(self, problem: str):
        raise UsageError(f"-k {self.expression!r}: {problem}; {_KEYWORD_HELP}")

    def _take(self, word: str) -> bool:
        if self.tokens and self.tokens[0] == word:
            self.tokens.pop(0)
            return True
        return False

    def either(self) -> Callable[[str], bool]:
        tests = [self.both()]
        while self._take("or"):
            tests.append(self.both())
        return lambda name: any(t(name) for t in tests)

    def both(self) -> Callable[[str], bool]:
        tests = [self.negated()]
        while self._take("and"):
            tests.append(self.negated())
        return lambda name: all(t(name) for t in tests)

    def negated(self) -> Callable[[str], bool]:
        if self._take("not"):
            inner = self.negated()
            return lambda name: not inner(name)
        if self._take("("):
            inner = self.either()
            if not self._take(")"):
                self.fail("a '(' is never closed")
            return inner
        if not self.tokens or self.tokens[0] in ("and", "or", ")"):
            self.fail(f"expected a word, got {self.tokens[0]!r}" if self.tokens else "expected a word at the end")
        word = self.tokens.pop(0).lower()
        return lambda name: word in name.lower()
