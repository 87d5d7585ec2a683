"""One bisection engine for commits and for versions: where did each benchmark first change? Pure.

Candidates are ordered oldest first (commit ids, or environment specs): the first is known good, the
last known bad. A probe ``probe(base, head)`` measures an A/B of two candidates and returns a verdict
per benchmark (``perf.gate.Verdict``; a benchmark it does not mention is MISSING), or ``Skip`` when the
suite could not run there (as ``git bisect skip``). What counts as a change is a set of verdicts:
``REGRESSION`` for commits, ``ANY_CHANGE`` (regressed or improved) for versions.

``find_first_changes`` decides, for every benchmark:

1. Endpoints: ``probe(first, last)``. A benchmark whose verdict there is not a change is UNCHANGED and
   not searched; if none changed, that is the whole answer. A Skip there is a UsageError: the ends
   must run.
2. Search: binary search comparing the first candidate with a midpoint, ``probe(first, mid)``, for the
   change the endpoints showed (regressed, or improved): that change at mid means it happened at or
   before mid; anything else (no change, or the other direction: a history need not be monotone), that it
   happened after. Probes are cached by
   (base, head) and measure every benchmark, so benchmarks whose intervals coincide share them.
   A skipped midpoint is passed over for its nearest neighbour inside the interval (below first on a
   tie) and stays skipped for every benchmark; a Skip is taken to be the head's failure. When only
   skipped candidates are left between the last unchanged and the first changed one, the benchmark is
   UNRESOLVED and its suspects are those candidates and the changed one after them.
3. Confirmation: each FOUND candidate is measured against its predecessor, ``probe(predecessor, found)``,
   always afresh (shared by the benchmarks found at the same candidate); it agrees when its verdict
   is the verdict that found it.

The inconclusive rule: a probe that leaves a benchmark INCONCLUSIVE is run again once, at once, and
that benchmark (and every other it left inconclusive) takes the second verdict. Inconclusive twice
counts as not changed, and the step says so; if that was wrong, the confirmation disagrees.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from .errors import UsageError
from .gate import IMPROVED, INCONCLUSIVE, MISSING, REGRESSED, UNCHANGED, Verdict

REGRESSION = frozenset({REGRESSED})
ANY_CHANGE = frozenset({REGRESSED, IMPROVED})

INCONCLUSIVE_TWICE = "inconclusive twice: taken as unchanged"


@dataclass(frozen=True)
class Skip:
    """The suite could not run at the probe's head (it failed to build, install or run)."""

    reason: str


Outcome = Mapping[str, Verdict] | Skip
Probe = Callable[[str, str], Outcome]


class Status(str, Enum):
    FOUND = "found"  # the first changed candidate is known
    UNCHANGED = "unchanged"  # not changed between the endpoints: not searched
    UNRESOLVED = "unresolved"  # the change lies among skipped candidates (see suspects)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ProbeRecord:
    """One probe run: why (endpoints, search, again, confirm, confirm again) and what it returned."""

    base: str
    head: str
    purpose: str
    outcome: Outcome


@dataclass(frozen=True)
class Probed:
    """What one probe of ``base`` against ``head`` said of one benchmark; ``verdict`` None when it was skipped."""

    base: str
    head: str
    verdict: Verdict | None


@dataclass(frozen=True)
class Step(Probed):
    """A verdict one benchmark's answer rests on: did it count as a change?"""

    changed: bool
    note: str = ""


@dataclass(frozen=True)
class Confirmation(Probed):
    """``probe(predecessor, found)`` for one benchmark: is its verdict the one that found it?"""

    agrees: bool
    note: str = ""


@dataclass(frozen=True)
class BenchmarkBisection:
    """The answer for one benchmark."""

    name: str
    status: Status
    first_changed: str | None  # FOUND: the first candidate at which it changed
    predecessor: str | None  # FOUND, UNRESOLVED: the last candidate known not changed
    suspects: tuple[str, ...]  # UNRESOLVED: the skipped candidates and the changed one after them
    steps: tuple[Step, ...]  # the endpoints' verdict, then the search's, in order
    confirmation: Confirmation | None  # FOUND only
    skipped: tuple[str, ...]  # candidates its search wanted to measure and could not
    probes: int  # runs of the probe pairs its answer rests on (shared ones included, re-runs too)

    @property
    def endpoint_verdict(self) -> Verdict | None:
        return self.steps[0].verdict

    @property
    def change(self) -> Verdict | None:
        """The verdict that places the change (FOUND: at first_changed; UNRESOLVED: at the last suspect); None if UNCHANGED."""
        if self.status is Status.UNCHANGED:
            return None
        return _found_by(self.steps, self.first_changed or self.suspects[-1])


@dataclass(frozen=True)
class Bisection:
    """Every benchmark's answer and every probe run, in order."""

    candidates: tuple[str, ...]
    counts_as_change: frozenset[Verdict]
    benchmarks: tuple[BenchmarkBisection, ...]
    probes: tuple[ProbeRecord, ...]

    @property
    def changed(self) -> tuple[BenchmarkBisection, ...]:
        """The benchmarks that changed between the endpoints."""
        return tuple(b for b in self.benchmarks if b.status is not Status.UNCHANGED)


class _Prober:
    """Runs and caches probes; applies the inconclusive rule. Caches are per kind (search, confirm)."""

    def __init__(self, probe: Probe):
        self._probe = probe
        self.records: list[ProbeRecord] = []
        self._outcomes: dict[tuple[str, str, str], Outcome] = {}
        self._runs: dict[tuple[str, str, str], list[int]] = {}
        self._again: set[tuple[str, str, str]] = set()

    def _run(self, key: tuple[str, str, str], purpose: str) -> Outcome:
        base, head, _ = key
        outcome = self._probe(base, head)
        self._runs.setdefault(key, []).append(len(self.records))
        self.records.append(ProbeRecord(base, head, purpose, outcome))
        return outcome

    def verdict(self, name: str, base: str, head: str, kind: str, used: set[int]) -> tuple[Verdict | None, str]:
        """(``name``'s verdict at (base, head), a note); None and the reason when the probe was skipped."""
        key = (base, head, kind)
        if key not in self._outcomes:
            self._outcomes[key] = self._run(key, kind)
        first = self._outcomes[key]
        note = ""
        if not isinstance(first, Skip) and first.get(name, MISSING) is INCONCLUSIVE and key not in self._again:
            self._again.add(key)
            again = self._run(key, f"{kind} again")
            if isinstance(again, Skip):
                note = f"measured again: skipped ({again.reason})"
            else:
                self._outcomes[key] = {**first, **{n: again.get(n, MISSING) for n, v in first.items() if v is INCONCLUSIVE}}
        used.update(self._runs[key])
        outcome = self._outcomes[key]
        if isinstance(outcome, Skip):
            return None, f"skipped: {outcome.reason}"
        verdict = outcome.get(name, MISSING)
        if key in self._again and first.get(name, MISSING) is INCONCLUSIVE:
            note = INCONCLUSIVE_TWICE if verdict is INCONCLUSIVE else (note or "inconclusive, measured again")
        return verdict, note


def _check(candidates: Sequence[str], names: Sequence[str], counts_as_change: Collection[Verdict]) -> None:
    if len(candidates) < 2:
        raise UsageError(f"a bisection needs two candidates or more (known good first, known bad last), got {len(candidates)}")
    repeated = sorted({c for c in candidates if candidates.count(c) > 1})
    if repeated:
        raise UsageError(f"a bisection's candidates must differ: {', '.join(repeated)} given more than once")
    if not names:
        raise UsageError("a bisection needs at least one benchmark")
    if not counts_as_change or {UNCHANGED, INCONCLUSIVE} & set(counts_as_change):
        raise ValueError(f"counts_as_change must be a non-empty set of changes, got {sorted(counts_as_change)}")


def _nearest_unskipped(lo: int, hi: int, skipped: set[int], passed_over: set[int]) -> int | None:
    """The candidate strictly between lo and hi nearest their midpoint that is not skipped (lower first on a tie)."""
    mid = (lo + hi) // 2
    for index in sorted(range(lo + 1, hi), key=lambda i: (abs(i - mid), i)):
        if index not in skipped:
            return index
        passed_over.add(index)
    return None


def find_first_changes(candidates: Sequence[str], benchmarks: Iterable[str], probe: Probe, *,
                       counts_as_change: Collection[Verdict] = REGRESSION) -> Bisection:
    """For every benchmark, the first candidate at which it changed (see the module's docstring).

    UsageError when there are fewer than two candidates, repeated ones, no benchmarks, or when the
    endpoints' probe is skipped.
    """
    candidates, names = tuple(candidates), sorted(set(benchmarks))
    counts_as_change = frozenset(counts_as_change)
    _check(candidates, names, counts_as_change)
    first, last = candidates[0], candidates[-1]
    prober, skipped = _Prober(probe), set()
    answers = []
    for name in names:
        used: set[int] = set()
        verdict, note = prober.verdict(name, first, last, "endpoints", used)
        if verdict is None:
            raise UsageError(f"the endpoints {first} and {last} could not be measured: {note}")
        steps = [Step(first, last, verdict, verdict in counts_as_change, note)]
        if not steps[0].changed:
            answers.append(BenchmarkBisection(name, Status.UNCHANGED, None, None, (), tuple(steps), None, (), len(used)))
            continue
        wanted = verdict  # the endpoints' change: numpy 2.0 can be faster and 2.4 slower than 1.26 (docs/results/stack.md)
        lo, hi, met = 0, len(candidates) - 1, set()
        while hi - lo > 1:
            mid = _nearest_unskipped(lo, hi, skipped, met)
            if mid is None:
                break
            verdict, note = prober.verdict(name, first, candidates[mid], "search", used)
            steps.append(Step(first, candidates[mid], verdict, verdict is wanted, note))
            if verdict is None:
                skipped.add(mid)
                met.add(mid)
            elif verdict is wanted:
                hi = mid
            else:
                lo = mid
        answers.append(_answer(name, candidates, lo, hi, steps, sorted(met), used, prober))
    return Bisection(candidates, counts_as_change, tuple(answers), tuple(prober.records))


def _found_by(steps: Sequence[Step], head: str) -> Verdict | None:
    return next(step.verdict for step in reversed(steps) if step.head == head and step.changed)


def _answer(name: str, candidates: Sequence[str], lo: int, hi: int, steps: list[Step], met: list[int], used: set[int],
            prober: _Prober) -> BenchmarkBisection:
    skipped = tuple(candidates[i] for i in met)
    if hi - lo > 1:
        return BenchmarkBisection(name, Status.UNRESOLVED, None, candidates[lo], tuple(candidates[lo + 1:hi + 1]),
                                  tuple(steps), None, skipped, len(used))
    verdict, note = prober.verdict(name, candidates[lo], candidates[hi], "confirm", used)
    confirmation = Confirmation(candidates[lo], candidates[hi], verdict, verdict == _found_by(steps, candidates[hi]), note)
    return BenchmarkBisection(name, Status.FOUND, candidates[hi], candidates[lo], (), tuple(steps), confirmation,
                              skipped, len(used))
