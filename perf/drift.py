"""Run-to-run drift, measured from the saved runs of this machine.

Rounds within one run share that run's state (clock, neighbours, cache, memory layout), so a
test on rounds alone sees the shift between two runs of unchanged code as highly significant
(docs/results/process-variation.md). The saved history shows how far whole-run medians wander; a change smaller than
that wander is not evidence, whatever the within-run statistics say.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from scipy import stats

from .results import Run


def run_medians(runs: Sequence[Run]) -> dict[str, list[float]]:
    """benchmark name -> its median in each run, in order (runs as the results layer loads them)."""
    medians: dict[str, list[float]] = {}
    for run in runs:
        for name, result in run.results.items():
            if result.median:
                medians.setdefault(name, []).append(result.median)
    return medians


def drift_floors(medians: Mapping[str, Sequence[float]], *, alpha: float, tests: int) -> dict[str, float]:
    """Per benchmark, the relative change that run-to-run drift alone reaches with probability alpha/tests.

    A prediction bound for one new run's log median: t * s * sqrt(1 + 1/K), with s the larger of
    the benchmark's own spread over its K saved runs and the spread pooled over all benchmarks
    (whose degrees of freedom set t). Empty when fewer than 3 runs are saved.
    """
    spreads, df = {}, 0
    for name, values in medians.items():
        if len(values) >= 3:
            logs = [math.log(v) for v in values]
            spreads[name] = (statistics.stdev(logs), len(values))
            df += len(values) - 1
    if not spreads:
        return {}
    pooled = math.sqrt(sum(s * s * (k - 1) for s, k in spreads.values()) / df)
    t = float(stats.t.ppf(1 - alpha / (2 * max(tests, 1)), df))
    return {name: math.exp(t * max(s, pooled) * math.sqrt(1 + 1 / k)) - 1 for name, (s, k) in spreads.items()}
