"""Steps in one benchmark's history: where its level changed, by how much, and how far it drifted.

Pure statistics: a series of runs in (each run's value and the spread of its processes), steps
and drift out; nothing is read or rendered here.

The fit is asv's step detection, used as a library (airspeed velocity, ``asv.step_detect``,
BSD-3-Clause): the piecewise-constant function closest to the runs in weighted absolute
deviation, each level change costing a penalty (the Potts problem, solved by dynamic
programming as in Friedrich et al., "Complexity penalized M-estimation: fast computation",
JCGS 17(1), 2008), the penalty chosen by asv's Schwarz-type information criterion
(``solve_potts_autogamma``; Yao, "Estimating the number of change-points via Schwarz'
criterion", 1988), which also measures the noise amplitude from the data. As asv weighs each
commit by the inverse of its confidence interval, each run weighs by the inverse of its own
measured spread: a run whose processes disagreed counts for less.

A level spans at least MIN_SEGMENT runs and is the weighted median of its runs. A step's size is
the ratio of the levels on either side. Its interval sizes the levels' uncertainty by the runs'
noise, measured from the differences between successive runs (which a step or a slow trend hardly
moves), over each level's effective number of runs under its weights, with Student's t; a step
whose interval holds no change is no step (its two levels are one), as asv's
``detect_regressions`` drops jumps within the levels' error; nor is one smaller than the caller's
``min_step``, as asv reports no jump under its regression threshold. The drift is the same comparison
between the first and the last few runs of the window, so that a creep of steps each too small to
tell apart from noise still shows as one number.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass

from asv.step_detect import solve_potts_autogamma, weighted_median
from scipy import stats

# A level needs three runs: one or two runs off the others (a noisy hour of a shared machine spans
# consecutive runs) are outliers until a third confirms them, so a step among the newest runs shows
# once two more runs are saved after its first.
MIN_SEGMENT = 3
# The information criterion's penalty per level is PENALTY * ln(n) / n (n runs): half asv's default
# (4, a Schwarz criterion counting 4 degrees of freedom per breakpoint, tuned on dashboards of many
# commits). On the tens of runs a history holds, asv's default took clear steps for correlated noise;
# half of it finds them, and takes a few slow runs in a row for a step now and then
# (studies/history_study.py --constructed).
PENALTY = 2.0
# A run's spread counts as at least MIN_SPREAD_SHARE of the median spread of the series, and at most
# MAX_SPREAD_SHARE of it. Spreads of 2 to 6 processes are rough: a run whose few processes agreed by chance
# must not outweigh its neighbours more than fourfold. And one slow process inflates a run's spread without
# moving its value (its fastest process's): past a few times the median, a spread says a process was slow,
# not that the run is unsure, and must not make the run all but vanish from the fit (two such runs among
# the three after a +55% step hid the step: docs/results/history.md). Runs whose processes disagree by far
# more (tests/test_steps.py) still count as noise.
MIN_SPREAD_SHARE = 0.25
MAX_SPREAD_SHARE = 6.0
# The drift compares the first and the last END_RUNS runs: enough that one outlier at either end
# cannot move an end's level (a weighted median), few enough that a step among the newest runs
# counts in full.
END_RUNS = 3
CONFIDENCE = 0.95  # of the intervals of steps and drift
# A weighted median's variance over a weighted mean's under normal noise, for large samples: the
# price of levels that one outlier cannot move.
MEDIAN_VARIANCE = math.pi / 2


def spread(per_process: Sequence[float]) -> float | None:
    """A run's own spread: the standard deviation of the logs of its per-process values; None
    with fewer than two processes (or a value that is not positive)."""
    if len(per_process) < 2 or min(per_process) <= 0:
        return None
    return statistics.stdev(math.log(v) for v in per_process)


@dataclass(frozen=True)
class Change:
    """A change of level: ``after / before`` with its interval (``low``, ``high``: ratios)."""

    before: float
    after: float
    low: float
    high: float

    @property
    def ratio(self) -> float:
        return self.after / self.before

    def slower_than(self, threshold: float) -> bool:
        """Slower by more than ``threshold`` (a fraction), the whole interval past it."""
        return self.low > 1 + threshold


@dataclass(frozen=True)
class Step(Change):
    """A level change in the series: ``index`` is its first run at the new level (the run before it
    is ``index - 1``)."""

    index: int = 0


@dataclass(frozen=True)
class Level:
    """Runs ``start`` to ``stop - 1`` at one level (``value``, their weighted median)."""

    start: int
    stop: int
    value: float


@dataclass(frozen=True)
class Fit:
    """What the series holds: its levels, the steps between them, the drift over the window."""

    levels: tuple[Level, ...]
    steps: tuple[Step, ...]
    drift: Change | None     # None with fewer than two runs
    pooled: int              # runs with no spread of their own, given the series' median spread
    measured: bool           # whether any run had a spread; if none did, every run weighs the same

    @property
    def weighting(self) -> str:
        """How the runs were weighed, in words."""
        if not self.measured:
            return "no run had per-process values: runs weighed equally"
        if self.pooled:
            return f"{self.pooled} run(s) without per-process values given the median spread of the others"
        return "each run weighed by its own per-process spread"


# Splits a series into levels: (values, each run's spread in logs) -> the (exclusive) end of each level.
Segmenter = Callable[[Sequence[float], Sequence[float]], Sequence[int]]


def asv_segments(values: Sequence[float], spreads: Sequence[float]) -> list[int]:
    """asv's fit (``solve_potts_autogamma``): each run weighs by the inverse of its absolute uncertainty
    (value times spread), relative to the median weight, as asv's ``detect_steps`` weighs commits."""
    weights = _weights(values, spreads)
    rights, _, _, _ = solve_potts_autogamma(list(values), weights, beta=PENALTY * math.log(len(values)) / len(values),
                                            min_size=MIN_SEGMENT)
    return rights


def _weights(values: Sequence[float], spreads: Sequence[float]) -> list[float]:
    weights = [1 / (v * s) for v, s in zip(values, spreads)]
    middle = statistics.median(weights)
    return [w / middle for w in weights]


def detect(values: Sequence[float], spreads: Sequence[float | None], segment: Segmenter = asv_segments,
           min_step: float = 0.0) -> Fit:
    """Levels, steps and drift of a series of runs, oldest first: ``values`` (positive) and each run's
    own ``spreads`` (``spread``; None where unknown: the median of the others stands in). ``segment``
    finds the levels (asv's fit); those shorter than MIN_SEGMENT, with no clear change from their
    neighbour, or a change smaller than ``min_step`` (a fraction, either way, in logs), are merged."""
    measured = [s for s in spreads if s is not None]
    pooled = statistics.median(measured) if measured else 0.0
    if pooled > 0:
        own = [min(max(pooled if s is None else s, MIN_SPREAD_SHARE * pooled), MAX_SPREAD_SHARE * pooled) for s in spreads]
    else:  # nothing measured (or every spread zero, as counts can be): equal weights, in units of the scatter
        own = [1.0] * len(values)
    runs = _Runs(values, own)
    pieces, interval = _clear_steps(runs, runs.pieces(segment), math.log1p(min_step))
    steps = tuple(Step(*astuple(interval.change(a, b)), index=b.start) for a, b in zip(pieces, pieces[1:]))
    ends = min(END_RUNS, len(values) // 2)
    drift = interval.change(range(ends), range(len(values) - ends, len(values))) if ends else None
    return Fit(tuple(Level(p.start, p.stop, runs.level(p)) for p in pieces), steps, drift,
               pooled=sum(s is None for s in spreads) if measured else 0, measured=bool(measured))


def _clear_steps(runs: _Runs, pieces: list[range], least: float) -> tuple[list[range], _Interval]:
    """The levels, two neighbours made one while the change between them is unclear (its interval holds no
    change) or smaller than ``least`` (in logs), the smallest first, as asv's ``detect_regressions`` drops
    jumps within the levels' error or under its threshold; and the intervals of what is left."""
    noise = runs.noise()
    while True:
        interval = _Interval(runs, noise, df=max(len(runs.values) - len(pieces), 1))
        changes = [interval.change(a, b) for a, b in zip(pieces, pieces[1:])]
        unclear = [i for i, c in enumerate(changes) if c.low <= 1 <= c.high or abs(math.log(c.ratio)) < least]
        if not unclear:
            return pieces, interval
        i = min(unclear, key=lambda i: abs(math.log(changes[i].ratio)))
        pieces[i:i + 2] = [range(pieces[i].start, pieces[i + 1].stop)]


class _Runs:
    """The series' values, each run's spread (in logs) and the weights of its levels."""

    def __init__(self, values: Sequence[float], own: Sequence[float]) -> None:
        self.values = [float(v) for v in values]
        self.own = list(own)
        self.weights = _weights(self.values, self.own) if values else []

    def level(self, runs: range) -> float:
        """The weighted median of the runs' values, as asv's levels are."""
        return weighted_median(self.values[runs.start:runs.stop], self.weights[runs.start:runs.stop])

    def pieces(self, segment: Segmenter) -> list[range]:
        """The levels ``segment`` finds, as ranges of runs, none shorter than MIN_SEGMENT."""
        if not self.values:
            return []
        rights = list(segment(self.values, self.own))
        pieces = [range(a, b) for a, b in zip([0, *rights], rights)]
        # asv's last pass moves boundaries wherever that lowers the cost, which can leave a level shorter than
        # MIN_SEGMENT: it joins the neighbouring level nearer its own.
        while len(pieces) > 1:
            short = [i for i, p in enumerate(pieces) if len(p) < MIN_SEGMENT]
            if not short:
                break
            i = short[0]
            here = math.log(self.level(pieces[i]))
            j = min((j for j in (i - 1, i + 1) if 0 <= j < len(pieces)),
                    key=lambda j: abs(math.log(self.level(pieces[j])) - here))
            a, b = sorted((i, j))
            pieces[a:b + 1] = [range(pieces[a].start, pieces[b].stop)]
        return pieces

    def noise(self) -> float:
        """The run-to-run noise, a standard deviation in logs, from the differences between successive runs:
        their median absolute size as a normal's standard deviation (times 1.4826), over the square root of 2,
        as Fryzlewicz's wild binary segmentation measures it (Ann. Statist. 42(6), 2014): a median, so that
        the few differences across steps do not count."""
        diffs = [abs(math.log(b / a)) for a, b in zip(self.values, self.values[1:])]
        return 1.4826 * statistics.median(diffs) / math.sqrt(2) if diffs else 0.0

    def effective_runs(self, runs: range) -> float:
        """How many equally weighted runs the weighted ones count for (Kish): (sum w)^2 / sum w^2."""
        weights = self.weights[runs.start:runs.stop]
        return sum(weights) ** 2 / sum(w * w for w in weights)


@dataclass(frozen=True)
class _Interval:
    """Changes between ranges of runs, with intervals from the runs' noise and the levels' weights."""

    runs: _Runs
    noise: float
    df: int

    def change(self, before: range, after: range) -> Change:
        low_level, high_level = self.runs.level(before), self.runs.level(after)
        shift = math.log(high_level / low_level)
        variance = sum(MEDIAN_VARIANCE * self.noise ** 2 / self.runs.effective_runs(r) for r in (before, after))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, self.df)) * math.sqrt(variance)
        return Change(low_level, high_level, math.exp(shift - half), math.exp(shift + half))
