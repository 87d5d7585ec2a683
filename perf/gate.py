"""Statistical verdicts on timing samples: is a benchmark slower, faster, unchanged, or unclear?

Pure functions of samples (seconds per call): no torch, no pytest. Two modes share one rule.

* Saved baseline (``compare_unpaired``): the raw per-round samples of a saved run against the
  current run. Change = ratio of medians, with a percentile-bootstrap confidence interval;
  test = Mann-Whitney U (two-sided). ``tests=m`` applies Bonferroni (alpha/m), so each benchmark
  can be decided alone; ``holm`` over the whole set is uniformly more powerful.
* A/B (``compare_paired``): one number per fresh process, R rounds of base and head
  interleaved, paired by round. Change = exp of the 20%-trimmed mean of the per-round log
  ratios; test = Yuen's trimmed paired t-test on them, with its interval; ``holm`` then
  controls the suite-wide false-alarm rate.

The rule (``classify``): REGRESSED only when the change is significant AND its whole interval
lies past the threshold (ci_low > 1 + t); IMPROVED symmetrically (ci_high < 1 / (1 + t));
INCONCLUSIVE when the estimate is past a threshold but not both hold; UNCHANGED otherwise.
The threshold used is never below the baseline's own noise floor (``noise_floor``).

Bad input never raises here except for bad parameters (``GateError``): non-finite or
non-positive samples are dropped with a note, fewer than ``MIN_SAMPLES`` valid samples on a side
give INCONCLUSIVE with a note, never REGRESSED.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import stats

from .errors import GateError


class Verdict(str, Enum):
    """The gate's decision on one benchmark. A str, so JSON holds its value ("regressed")."""

    REGRESSED = "regressed"
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    INCONCLUSIVE = "inconclusive"
    NEW = "new"
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value


REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE, NEW, MISSING = Verdict

MIN_SAMPLES = 3  # valid samples (A/B: valid pairs) needed on each side to decide anything
BOOTSTRAP_RESAMPLES = 2000
_DIRECT_BOOTSTRAP_MAX_N = 1000  # above this, bootstrap medians are drawn as order statistics

_ACCEPTED = "a percentage such as '10%' or a fraction such as 0.1 (finite, >= 0)"




@dataclass(frozen=True)
class Comparison:
    """The verdict on one benchmark; ratios are current / baseline (> 1 means slower)."""

    name: str
    verdict: Verdict
    threshold: float  # the effective threshold, a fraction (0.1 = 10%)
    baseline_value: float | None = None  # each side's summary: which one, the mode's meta says (a median,
    current_value: float | None = None   # the fastest process's minimum, a mean count)
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n_baseline: int = 0
    n_current: int = 0
    note: str = ""
    evidence: str = ""  # what decided: saved processes, re-measured processes, an A/B against the baseline's commit

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))

    def as_dict(self) -> dict:
        """A JSON-ready record (the verdict as its string value)."""
        return {**dataclasses.asdict(self), "verdict": self.verdict.value}

    def with_note(self, note: str) -> Comparison:
        """This comparison with ``note`` put before its own note."""
        return dataclasses.replace(self, note=join_notes(note, self.note))

    def decided_by(self, evidence: str) -> Comparison:
        return dataclasses.replace(self, evidence=evidence)


# --------------------------------------------------------------------------- parameters


def parse_threshold(text: str | float) -> float:
    """'10%' -> 0.10, '0.1' or 0.1 -> 0.10; GateError (one line) on anything else.

    A number passed as a number is a fraction (1.5 = 150%). A bare number in a string must be a
    fraction below 1: '10' is refused as ambiguous (10% or 1000%?).
    """
    if isinstance(text, bool):
        raise GateError(f"invalid threshold {text!r}: expected {_ACCEPTED}")
    if isinstance(text, numbers.Real):
        value, percent, shown = float(text), False, repr(text)
    elif isinstance(text, str):
        shown = repr(text)
        match = re.fullmatch(r"\s*([^%\s]+)\s*(%?)\s*", text)
        if not match:
            raise GateError(f"invalid threshold {shown}: expected {_ACCEPTED}")
        try:
            value = float(match.group(1))
        except ValueError:
            raise GateError(f"invalid threshold {shown}: expected {_ACCEPTED}") from None
        percent = bool(match.group(2))
    else:
        raise GateError(f"invalid threshold {text!r}: expected {_ACCEPTED}")
    if not math.isfinite(value) or value < 0:
        raise GateError(f"invalid threshold {shown}: expected {_ACCEPTED}")
    if percent:
        return value / 100.0
    if value >= 1 and isinstance(text, str):
        raise GateError(f"ambiguous threshold {shown}: write '{value:g}%' for a percentage, or a fraction below 1 such as 0.1")
    return value


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise GateError(f"invalid {name} {value!r}: expected a number strictly between 0 and 1")
    return float(value)


def _as_threshold(threshold: str | float) -> float:
    # Accept what parse_threshold accepts, so a caller may pass the ini/marker value as is.
    return parse_threshold(threshold)


# --------------------------------------------------------------------------- samples


def _as_floats(values) -> np.ndarray:
    """float64 values; anything that is not a real number (a string, None) becomes NaN, to be dropped."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values.astype(float).ravel()
    return np.array([_real(v) for v in np.asarray(values, dtype=object).ravel()], dtype=float)


def _real(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range
        return math.inf


def _clean(samples: Sequence[float]) -> tuple[np.ndarray, int]:
    """The finite, positive samples as float64, and how many were dropped."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = _as_floats(samples)
    ok = np.isfinite(x) & (x > 0)
    return x[ok], int(x.size - ok.sum())


def noise_floor(samples: Sequence[float]) -> float:
    """Half the relative interquartile range of the samples: (Q3 - Q1) / (2 * median).

    The 'probable error' of one sample: half of the baseline's own samples lie further than
    this from its median, so a change smaller than it cannot be told from the baseline's own
    spread. For normal noise it is 0.674 sigma / median. Only finite positive samples count;
    fewer than MIN_SAMPLES of them give 0.0 (not estimable; such comparisons are INCONCLUSIVE).
    """
    x, _ = _clean(samples)
    if x.size < MIN_SAMPLES:
        return 0.0
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return float((q3 - q1) / (2 * med))


# --------------------------------------------------------------------------- the rule


def classify(ratio, ci_low, ci_high, p, threshold, alpha) -> Verdict:
    """REGRESSED / IMPROVED / INCONCLUSIVE / UNCHANGED from an estimate, its interval and p.

    REGRESSED: p < alpha and ci_low > 1 + threshold. IMPROVED: p < alpha and
    ci_high < 1 / (1 + threshold). INCONCLUSIVE: the estimate is past either threshold but not
    both conditions hold (or nothing could be estimated). UNCHANGED otherwise.
    """
    if ratio is None or not math.isfinite(ratio):
        return INCONCLUSIVE
    up, down = 1.0 + threshold, 1.0 / (1.0 + threshold)
    significant = p is not None and math.isfinite(p) and p < alpha
    if significant and ci_low is not None and ci_low > up:
        return REGRESSED
    if significant and ci_high is not None and ci_high < down:
        return IMPROVED
    if ratio > up or ratio < down:
        return INCONCLUSIVE
    return UNCHANGED


def _sides(baseline: Sequence[float], current: Sequence[float]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Both sides' finite positive values as float64, and a note for each side that lost some."""
    b, b_dropped = _clean(baseline)
    c, c_dropped = _clean(current)
    notes = [_dropped_note("baseline", b_dropped, b.size + b_dropped), _dropped_note("current", c_dropped, c.size + c_dropped)]
    return b, c, notes


def _fields(name: str, threshold: float, b_value: float | None, c_value: float | None, b: np.ndarray, c: np.ndarray,
            ratio: bool = True) -> dict:
    """The fields every comparison sets: each side's summary, their ratio (current / baseline) and sizes."""
    fields = dict(name=name, threshold=threshold, baseline_value=b_value, current_value=c_value,
                  n_baseline=int(b.size), n_current=int(c.size))
    if ratio:
        fields["ratio"] = c_value / b_value if b_value and c_value else None
    return fields


def _threshold_note(threshold: float, effective: float) -> str:
    if effective > threshold:
        return f"threshold raised from {percent(threshold)} to the baseline noise floor {percent(effective)}"
    return ""


def _dropped_note(side: str, dropped: int, total: int) -> str:
    return f"dropped {dropped} of {total} {side} samples (NaN, inf or <= 0)" if dropped else ""


def percent(fraction: float) -> str:
    """0.05 -> '5%', 0.123 -> '12.3%', 10 -> '1000%': thresholds in notes and tables."""
    value = fraction * 100
    return f"{value:.3g}%" if value < 1000 else f"{value:.0f}%"


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# --------------------------------------------------------------------------- saved baseline


def _bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of `resamples` bootstrap resamples of x.

    Small samples are resampled directly. Above _DIRECT_BOOTSTRAP_MAX_N (pytest-benchmark can
    keep 10^5 rounds) the bootstrap median is drawn exactly as an order statistic: the
    ceil(n/2)-th smallest of a resample is <= x_(k) iff Binomial(n, k/n) >= ceil(n/2). That is
    the lower median; for n > 1000 it differs from the mean of the two middle values by less
    than one step between neighbouring order statistics.
    """
    n = x.size
    if n <= _DIRECT_BOOTSTRAP_MAX_N:
        return np.median(x[rng.integers(0, n, size=(resamples, n))], axis=1)
    xs = np.sort(x)
    h = (n + 1) // 2
    cdf = stats.binom.sf(h - 1, n, np.arange(1, n + 1) / n)
    cdf[-1] = 1.0
    return xs[np.minimum(np.searchsorted(cdf, rng.random(resamples), side="left"), n - 1)]


def compare_unpaired(name, baseline, current, threshold, *, alpha=0.05, tests=1, confidence=0.95, seed=0) -> Comparison:
    """Current samples against a saved baseline's samples (independent runs).

    ratio = median(current) / median(baseline); interval = percentile bootstrap of that ratio
    (each side resampled, seeded); p = two-sided Mann-Whitney U. The verdict uses alpha/tests
    (Bonferroni over `tests` simultaneous comparisons); p_adjusted = min(1, p * tests).
    """
    alpha = _check_probability("alpha", alpha)
    confidence = _check_probability("confidence", confidence)
    if isinstance(tests, bool) or not isinstance(tests, numbers.Integral) or tests < 1:
        raise GateError(f"invalid tests {tests!r}: expected the number of comparisons, an integer >= 1")
    threshold = _as_threshold(threshold)
    b, c, notes = _sides(baseline, current)
    effective = max(threshold, noise_floor(b))
    notes.append(_threshold_note(threshold, effective))
    base = _fields(name, effective, float(np.median(b)) if b.size else None, float(np.median(c)) if c.size else None, b, c)
    ratio = base["ratio"]
    if b.size < MIN_SAMPLES or c.size < MIN_SAMPLES:
        note = f"too few valid samples ({b.size} baseline, {c.size} current; need >= {MIN_SAMPLES} each)"
        return Comparison(verdict=INCONCLUSIVE, note=join_notes(note, *notes), **base)

    if np.ptp(b) == 0 and np.ptp(c) == 0:
        if base["baseline_value"] == base["current_value"]:  # ties everywhere: nothing changed
            p, low, high = 1.0, 1.0, 1.0
        else:
            p, low, high = 0.0, ratio, ratio
            notes.append("zero variance on both sides: decided on the ratio")
    else:
        p = _finite(stats.mannwhitneyu(c, b, alternative="two-sided").pvalue)
        p = 1.0 if p is None else p
        rng = np.random.default_rng(seed)
        log_ratios = np.log(_bootstrap_medians(c, BOOTSTRAP_RESAMPLES, rng) / _bootstrap_medians(b, BOOTSTRAP_RESAMPLES, rng))
        tail = (1 - confidence) / 2 * 100
        low, high = (float(v) for v in np.exp(np.percentile(log_ratios, [tail, 100 - tail])))
    p_adjusted = min(1.0, p * int(tests))
    verdict = classify(ratio, low, high, p_adjusted, effective, alpha)
    return Comparison(verdict=verdict, ci_low=low, ci_high=high, p_value=p, p_adjusted=p_adjusted, note=join_notes(*notes),
                      **base)


# --------------------------------------------------------------------------- saved baseline, per process


def compare_processes(name, baseline, current, threshold) -> Comparison:
    """One value per fresh process on each side (its minimum), the baseline's processes against this run's.

    On a shared machine a benchmark's speed is a state of the machine in time: a measurement
    window lands fast or slow, and noise only ever adds time. The fastest of several windows
    spread over the run is what moves least (docs/results/process-variation.md), so each side is
    summed up by its fastest process. Change = this run's fastest / the baseline's fastest. The
    interval is set by the runner-up on the other side: from this run's fastest against the
    baseline's second fastest (``ci_low``) to this run's second fastest against the baseline's
    fastest (``ci_high``), so one lucky process on either side cannot decide alone.
    REGRESSED when ``ci_low`` > 1 + threshold: this run's fastest process is slower, by more than
    the threshold, than all but one of the baseline's. IMPROVED symmetrically, INCONCLUSIVE when
    the change is past a threshold and the interval is not, UNCHANGED otherwise. Counts that are
    equal on both sides (a deterministic metric) are UNCHANGED.

    There is no significance test (p_value None): a handful of processes gives rank tests no
    power, and a t-test on per-process values would follow the slow windows. False alarms are
    kept down by the runner-up rule and by measuring again (the saved-baseline gate confirms a
    regression in more processes), and measured: docs/results/gate.md.
    """
    threshold = _as_threshold(threshold)
    b, c, notes = _sides(baseline, current)
    b, c = np.sort(b), np.sort(c)
    base = _fields(name, threshold, float(b[0]) if b.size else None, float(c[0]) if c.size else None, b, c)
    if b.size < 2 or c.size < 2:
        note = f"too few processes ({b.size} baseline, {c.size} current; need >= 2 each)"
        return Comparison(verdict=INCONCLUSIVE, note=join_notes(note, *notes), **base)
    low, high = float(c[0] / b[1]), float(c[1] / b[0])
    verdict = classify(base["ratio"], low, high, 0.0, threshold, 1.0)  # the interval alone decides
    return Comparison(verdict=verdict, ci_low=low, ci_high=high, note=join_notes(*notes), **base)


def compare_counts(name, baseline, current, threshold, noise: float) -> Comparison:
    """Counted values (instructions or estimated cycles per call, one per process) against the baseline's.

    Counts do not move with the machine's load, but they are not exact either: a change to other
    code moves where a stage's allocations land, and its count by a little (``noise``, measured:
    docs/results/counts.md). Change = ratio of the means; interval = the change widened by the
    larger of ``noise`` and the spread seen within either side (max / min - 1). REGRESSED when
    the interval's low end is past 1 + threshold (IMPROVED symmetrically), INCONCLUSIVE when the
    change is past a threshold and the interval is not, UNCHANGED otherwise: equal counts on both
    sides are UNCHANGED. One process a side is enough; there is no significance test (p_value None).
    """
    threshold = _as_threshold(threshold)
    b, c, notes = _sides(baseline, current)
    base = _fields(name, threshold, float(b.mean()) if b.size else None, float(c.mean()) if c.size else None, b, c)
    if not b.size or not c.size:
        return Comparison(verdict=INCONCLUSIVE, note=join_notes("no valid counts on a side", *notes), **base)
    spread = max(noise, float(b.max() / b.min() - 1), float(c.max() / c.min() - 1))
    ratio = base["ratio"]
    low, high = (1.0, 1.0) if ratio == 1.0 else (ratio / (1 + spread), ratio * (1 + spread))
    verdict = classify(ratio, low, high, 0.0, threshold, 1.0)  # the interval alone decides
    if spread > noise:
        notes.append(f"counts spread by {percent(spread)} within a side (more than the {percent(noise)} expected)")
    return Comparison(verdict=verdict, ci_low=low, ci_high=high, note=join_notes(*notes), **base)


# --------------------------------------------------------------------------- A/B, paired

TRIM = 0.2  # share of the rounds set aside at each end by the paired test


def winsorize(d: Sequence[float], trim: float = TRIM) -> tuple[np.ndarray, np.ndarray]:
    """(kept, winsorized) of `d`, both sorted: g = floor(trim * n) values set aside at each end,
    and all of `d` with those pulled in to the nearest kept value."""
    x = np.sort(np.asarray(d, dtype=float))
    g = int(trim * x.size)
    kept = x[g:x.size - g]
    return kept, np.clip(x, kept[0], kept[-1])


def trimmed_t(d: np.ndarray, trim: float = TRIM) -> tuple[float, float, int]:
    """(trimmed mean, its standard error, degrees of freedom) of `d`: Yuen's one-sample form.

    g = floor(trim * n) values are set aside at each end; se = winsorized sd / ((1 - 2g/n) sqrt n);
    df = n - 2g - 1. With g = 0 (n < 5 at 20%) these are the mean, its usual se and n - 1.
    """
    kept, winsorized = winsorize(d, trim)
    n = winsorized.size
    se = float(np.std(winsorized, ddof=1)) / ((kept.size / n) * math.sqrt(n))
    return float(np.mean(kept)), se, kept.size - 1


def compare_paired(name, baseline, current, threshold, *, alpha=0.05, confidence=0.95, seed=0) -> Comparison:
    """Round i of base against round i of head (one number per fresh process and side).

    Test: Yuen's paired test on d_i = log(current_i / baseline_i), the t-test of their 20%-trimmed
    mean (``trimmed_t``); ratio = exp(trimmed mean of d); interval = exp(trimmed mean +-
    t_{df, (1+confidence)/2} * se). Below 5 rounds nothing is trimmed: the plain paired t-test.
    Threshold: raised to the noise floor of baseline_i / sqrt(baseline_i * current_i), the
    baseline relative to its round's level (drift cancelled, as in the test itself).
    Why trimmed: on a shared machine a whole process now and then runs slow on every benchmark
    (its CPU was taken for most of its life: docs/results/process-variation.md), so the log ratios are normal but for a
    few wild rounds. The plain mean and variance follow those rounds, which costs power; the
    trimmed mean sets them aside and the winsorized variance keeps the test honest (Yuen 1974;
    Wilcox, "Introduction to Robust Estimation and Hypothesis Testing"). Under A/A the log
    ratios are symmetric about 0, where the trimmed mean is 0, so false alarms stay at alpha.
    Why not Wilcoxon signed-rank: its p-values are discrete with a floor of 2 / 2**R (R=8:
    0.0078), above Holm's first cut-off alpha/m (0.05/22 = 0.0023) at the few rounds a quick
    run affords, so nothing could ever be flagged; the trimmed t's p is continuous.
    p_adjusted is left None (``holm`` fills it); `seed` is unused (no resampling), kept so both
    compare functions take the same arguments.
    """
    del seed
    alpha = _check_probability("alpha", alpha)
    confidence = _check_probability("confidence", confidence)
    threshold = _as_threshold(threshold)
    b, c = _as_floats(baseline), _as_floats(current)
    notes = []
    if b.size != c.size:
        notes.append(f"unequal round counts ({b.size} baseline, {c.size} current): paired the first {min(b.size, c.size)}")
    n = min(b.size, c.size)
    b, c = b[:n], c[:n]
    ok = np.isfinite(b) & np.isfinite(c) & (b > 0) & (c > 0)
    if not ok.all():
        notes.append(f"dropped {int(n - ok.sum())} of {n} pairs (NaN, inf or <= 0)")
    b, c = b[ok], c[ok]
    # The baseline's noise floor, measured relative to each round's level (the geometric mean of
    # the round's two medians): drift shared by both sides of a round, which pairing cancels,
    # must not raise the threshold and give back what interleaving bought.
    effective = max(threshold, noise_floor(b / np.sqrt(b * c)))
    notes.append(_threshold_note(threshold, effective))
    mb = float(np.median(b)) if b.size else None
    mc = float(np.median(c)) if c.size else None
    base = _fields(name, effective, mb, mc, b, c, ratio=False)
    if b.size < MIN_SAMPLES:
        note = f"too few valid pairs ({b.size}; need >= {MIN_SAMPLES})"
        ratio = mc / mb if mb and mc else None
        return Comparison(verdict=INCONCLUSIVE, ratio=ratio, note=join_notes(note, *notes), **base)

    d = np.log(c) - np.log(b)
    mean, se, df = trimmed_t(d)
    ratio = math.exp(mean)
    if se == 0:
        if mean == 0:  # identical rounds: nothing changed
            p, low, high = 1.0, 1.0, 1.0
        else:
            p, low, high = 0.0, ratio, ratio
            notes.append("zero variance of the round ratios: decided on the ratio")
    else:
        p = float(2 * stats.t.sf(abs(mean) / se, df))
        half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
        low, high = math.exp(mean - half), math.exp(mean + half)
    verdict = classify(ratio, low, high, p, effective, alpha)
    return Comparison(verdict=verdict, ratio=ratio, ci_low=low, ci_high=high, p_value=p, note=join_notes(*notes), **base)


# --------------------------------------------------------------------------- rows without a partner


def new_benchmark(name, current, threshold) -> Comparison:
    """A benchmark measured now that the baseline lacks (NEW)."""
    c, _ = _clean(current)
    return Comparison(name=name, verdict=NEW, threshold=_as_threshold(threshold),
                      current_value=float(np.median(c)) if c.size else None, n_current=int(c.size),
                      note="not in the baseline")


def missing_benchmark(name, baseline, threshold) -> Comparison:
    """A benchmark of the baseline that was not measured now (MISSING)."""
    b, _ = _clean(baseline)
    return Comparison(name=name, verdict=MISSING, threshold=_as_threshold(threshold),
                      baseline_value=float(np.median(b)) if b.size else None, n_baseline=int(b.size),
                      note="in the baseline, not measured now (removed, renamed or deselected?)")


# --------------------------------------------------------------------------- many comparisons


def _testable(c: Comparison) -> bool:
    return c.verdict not in (NEW, MISSING) and c.p_value is not None and c.ratio is not None


def holm(comparisons: Sequence[Comparison], alpha=0.05) -> list[Comparison]:
    """Holm step-down adjusted p-values over every comparison that has a p-value, and the final
    verdicts at `alpha` (controls the chance of any false alarm in the set at alpha).

    NEW, MISSING and comparisons without a p-value (too few samples) are returned unchanged and
    do not count in m. Order is preserved.
    """
    alpha = _check_probability("alpha", alpha)
    out = list(comparisons)
    idx = sorted((i for i, c in enumerate(out) if _testable(c)), key=lambda i: out[i].p_value)
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        c = out[i]
        running = max(running, min(1.0, (m - rank) * c.p_value))
        verdict = classify(c.ratio, c.ci_low, c.ci_high, running, c.threshold, alpha)
        out[i] = dataclasses.replace(c, p_adjusted=running, verdict=verdict)
    return out


def tested_count(comparisons: Sequence[Comparison]) -> int:
    """m: how many comparisons have a p-value (what Holm or Bonferroni divides alpha by)."""
    return sum(1 for c in comparisons if _testable(c))


def tally(comparisons: Sequence[Comparison]) -> dict[Verdict, int]:
    """Number of comparisons per verdict, every verdict present (zeros included)."""
    result = dict.fromkeys(Verdict, 0)
    for c in comparisons:
        result[c.verdict] += 1
    return result


def passed(comparisons: Sequence[Comparison]) -> bool:
    """True when nothing REGRESSED."""
    return not any(c.verdict == REGRESSED for c in comparisons)


def undecided(c: Comparison) -> bool:
    """The one rule for "measure again": the comparison could not decide, and more rounds or
    processes could. INCONCLUSIVE with data on both sides, or UNCHANGED with an interval that
    still reaches past the regression threshold (the estimate is within it, but a regression of
    that size is not ruled out). Used by the saved-baseline gate and by the A/B."""
    if c.verdict == UNCHANGED:
        return c.ci_high is not None and c.ci_high > 1 + c.threshold
    return c.verdict == INCONCLUSIVE and bool(c.n_baseline and c.n_current)
