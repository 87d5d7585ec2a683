"""The regressions ``perf.history`` gates, confirmed by an interleaved A/B of the commits either side of each.

A step in saved runs compares numbers taken at different moments, hours or days apart, and a state of the
machine can last as long as the runs a step needs. ``--confirm`` measures the commit of the run before the
step against the commit of its first run, side by side in fresh processes (``perf.ab``, as ``perf.bisect``
probes: one engine), so that a state of the machine hits both alike, and only a regression the A/B finds
again fails. What no A/B of commits can confirm stands, said so (fail closed): a step whose two runs share
a commit (not the code: a plugin, the environment, the machine), a run saved from uncommitted changes, a
commit not in the repository, or a side whose suite does not run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import ab, bisect, bisection, gate
from .confirm import unavailable
from .metric import Metric
from .render import format_change
from .steps import Step
from .trend import Series

Key = tuple[str, str, str, int]  # (benchmark, machine, metric, the step's first point): one step of one series


def key(series: Series, step: Step) -> Key:
    return series.benchmark, series.machine, series.metric.value, step.index


@dataclass(frozen=True)
class Confirmation:
    """What an A/B of a step's two commits made of it: ``comparison`` when it was measured, else ``why`` not."""

    base: str                           # 'SHA subject' of the run before the step ('' when unknown)
    head: str                           # of its first run
    comparison: gate.Comparison | None = None
    why: str = ""

    @property
    def stands(self) -> bool:
        """Whether the regression still fails: the A/B found it again, or no A/B could tell."""
        return self.comparison is None or self.comparison.verdict == gate.REGRESSED

    def text(self) -> str:
        if self.comparison is None:
            return f"not confirmable by an A/B: {self.why}"
        c = self.comparison
        interval = f" [{format_change(c.ci_low)}, {format_change(c.ci_high)}]" if c.ci_low is not None else ""
        found = "confirmed" if self.stands else "not confirmed"
        return (f"{found} by an A/B of {self.base.split()[0]} -> {self.head.split()[0]}: "
                f"{c.verdict.value.lower()} {format_change(c.ratio)}{interval}")

    def as_dict(self) -> dict:
        return {"base": self.base, "head": self.head, "stands": self.stands, "why": self.why or None,
                "comparison": None if self.comparison is None else self.comparison.as_dict()}


def _unconfirmable(repo: Path, series: Series, step: Step) -> str:
    """Why no A/B of commits can confirm ``step`` ('' when one can)."""
    before, first = (series.points[i] for i in (step.index - 1, step.index))
    if before.run.commit_id and before.run.commit_id == first.run.commit_id and not before.run.dirty:
        return (f"both runs are of commit {first.run.commit_id[:10]}: the step is not in the code "
                "(a plugin, the environment, the machine)")
    for point in (before, first):
        why = unavailable(repo, point.run.commit_id, point.run.dirty, what=f"run {point.label}")
        if why:
            return why
    return ""


def confirm(regressions: Sequence[tuple[Series, Step]], repo: Path, pytest_args: Sequence[str], threshold: float,
            log: Callable[[str], None], rounds: int | None = None) -> dict[Key, Confirmation]:
    """Each regression's confirmation: one A/B per metric and pair of commits, of the benchmarks that stepped
    between them, with ``pytest_args`` on both sides (``rounds`` each, default perf.ab's for the metric)."""
    found: dict[Key, Confirmation] = {}
    pairs: dict[tuple[Metric, str, str], list[tuple[Series, Step]]] = {}
    for series, step in regressions:
        why = _unconfirmable(repo, series, step)
        if why:
            found[key(series, step)] = Confirmation("", "", why=why)
            continue
        commits = (series.points[step.index - 1].run.commit_id, series.points[step.index].run.commit_id)
        pairs.setdefault((series.metric, *commits), []).append((series, step))
    with tempfile.TemporaryDirectory(prefix="perf-history-ab-") as tmp:
        for (metric, base_id, head_id), stepped in pairs.items():
            names = sorted({series.benchmark for series, _ in stepped})
            args = [*pytest_args, *([f"--perf-metric={metric.value}"] if metric.counted else []), *names]
            n = rounds or metric.defaults.ab_rounds
            design = ab.Design(rounds=n, recheck_rounds=2 * n, threshold=threshold, metric=metric)
            base, head = bisect.candidate(repo, base_id), bisect.candidate(repo, head_id)
            prober = bisect.Prober(bisect.commit_sides(repo, args), design, Path(tmp), log)
            outcome = prober(base, head)
            measured = {c.name: c for c in prober.comparisons.get((base, head), [])}
            for series, step in stepped:
                if isinstance(outcome, bisection.Skip):
                    confirmation = Confirmation(base, head, why=f"the A/B could not run: {outcome.reason}")
                elif series.benchmark not in measured:
                    confirmation = Confirmation(base, head, why="the A/B did not measure it (not in one of the commits?)")
                else:
                    confirmation = Confirmation(base, head, measured[series.benchmark])
                found[key(series, step)] = confirmation
    return found
