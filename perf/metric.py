"""What a benchmark's values are (``Metric``), and everything that defaults by metric.

Times move with the machine; counts hardly at all. So a time is measured in several fresh
processes and judged by statistics, a count once and judged against the little it moves
(docs/results/process-variation.md, docs/results/counts.md). Every default that follows from
that lives here, once: the plugin's ``auto`` options, ``perf.ab``'s rounds and threshold, and the
noise a counted change is judged against.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import ResultsError


@dataclass(frozen=True)
class Defaults:
    """What a metric's runs use unless told otherwise."""

    processes: int      # --perf-processes auto: fresh processes each benchmark is measured in
    threshold: float    # --perf-threshold auto and perf.ab --threshold: the smallest change that counts
    ab_rounds: int      # perf.ab --rounds
    noise: float        # the least a counted change is judged against (0: times are judged by statistics)


class Metric(str, Enum):
    """What a benchmark's values are. Values of two metrics are never compared."""

    TIME = "time"                   # seconds per call, wall clock (device-synchronised)
    INSTRUCTIONS = "instructions"   # instructions executed per call, counted under callgrind
    CYCLES = "cycles"               # estimated cycles per call, from callgrind's counts

    def __str__(self) -> str:
        return self.value

    @property
    def counted(self) -> bool:
        """A deterministic count (no wall clock): equal values on both sides are the norm."""
        return self is not Metric.TIME

    @property
    def unit(self) -> str:
        """What one value is, for table headers: 'time per call', 'instructions per call'."""
        return f"{self.value} per call"

    @property
    def defaults(self) -> Defaults:
        return _DEFAULTS[self]

    @classmethod
    def parse(cls, text: object, where: str = "metric") -> Metric:
        """The metric ``text`` names; ResultsError naming ``where`` for anything else."""
        try:
            return cls(text)
        except ValueError:
            raise ResultsError(f"{where}: unknown metric {text!r}; known: {', '.join(m.value for m in cls)}") from None


# The cycle estimate weighs simulated cache misses by 10 and 100, so it moves far more than the
# instruction count between fresh processes of unchanged code (docs/results/counts.md).
_DEFAULTS = {
    Metric.TIME: Defaults(processes=6, threshold=0.05, ab_rounds=16, noise=0.0),
    Metric.INSTRUCTIONS: Defaults(processes=1, threshold=0.01, ab_rounds=3, noise=0.01),
    Metric.CYCLES: Defaults(processes=1, threshold=0.01, ab_rounds=3, noise=0.25),
}
