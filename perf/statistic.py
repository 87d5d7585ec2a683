"""The one number each measuring process contributes per benchmark, and the record of a process.

A shared machine's noise only ever adds time, in bursts that catch some processes and not
others, so the fastest sample of a process moves least from process to process (Chen and
Revels, "Robust benchmarking in noisy environments", 2016; docs/results/process-variation.md).
The minimum is the default everywhere: the saved-baseline gate, ``perf.ab`` and the history.
The median remains available for code whose typical call, not its best one, is what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


def median(values: Sequence[float]) -> float:
    """The median (the mean of the two middle values for an even count); ValueError when empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("the median of no values")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {"min": min, "median": median}
DEFAULT = "min"


def summarize(samples: Sequence[float], statistic: str = DEFAULT) -> float:
    """One process's samples as its one number: ``statistic`` ('min' or 'median') of them."""
    return STATISTICS[statistic](samples)


@dataclass(frozen=True)
class Process:
    """One process's share of a benchmark: its rounds and its per-process statistics."""

    rounds: int
    min: float
    median: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Process:
        return cls(len(samples), min(samples), median(samples))

    def value(self, statistic: str = DEFAULT) -> float:
        return getattr(self, statistic)
