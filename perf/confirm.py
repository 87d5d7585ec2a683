"""A suspected regression against a saved baseline, confirmed side by side: the baseline's own commit,
checked out beside the working tree, measured at the same moments as this run's code (``perf.ab``).

A state of a shared machine (its memory bandwidth, a neighbour's burst) can last minutes, so a
confirmation measured minutes after the first measurement sees the same state, and no statistic
of one side's numbers can tell code from machine then; an interleaved A/B can, because a state
hits both sides alike (docs/results/gate.md). Each side runs with its own run's configuration:
the baseline's commit with the ``-p`` plugins its saved run recorded, the working tree with this
run's, so a plugin given on the command line now reaches this run's side only.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import ab, command, gate, revisions
from .cli import git
from .errors import UsageError
from .metric import Metric
from .progress import Progress
from .rounds import BASE, HEAD, Side

# Each side's process measures only the suspected benchmarks, and only its minimum counts: a tenth of
# pytest perf's default time budget and three rounds per benchmark are plenty, and keep the cost down;
# the recheck of what the rounds left undecided gets as many rounds again.
MAX_TIME = 0.05
MIN_ROUNDS = 3


@dataclass(frozen=True)
class Confirmation:
    """What an A/B against the baseline's commit decided, per benchmark, and how."""

    verdicts: dict[str, gate.Comparison]
    how: str


def unavailable(repo: Path, commit: str, dirty: bool, what: str = "the baseline") -> str:
    """Why the commit of ``what`` (a saved run) cannot be measured here ('' when it can)."""
    if dirty:
        return f"{what} was saved from a working tree with uncommitted changes: its code is in no commit"
    if not commit:
        return f"{what} records no commit (saved outside a git repository)"
    try:
        revisions.toplevel(repo)
    except UsageError:
        return f"{repo} is not a git repository"
    if not revisions.exists(repo, commit):
        shallow = git(repo, "rev-parse", "--is-shallow-repository") == "true"
        hint = " (the clone is shallow: git fetch --unshallow)" if shallow else ""
        return f"{what}'s commit {commit[:12]} is not in this repository{hint}"
    return ""


def baseline_plugins(saved_command: object) -> list[str]:
    """The options the baseline's own run passed to its measuring processes (its ``-p`` plugins, ini overrides)."""
    if not isinstance(saved_command, str):
        return []
    try:
        return command.passed_through(shlex.split(saved_command))
    except ValueError:
        return []


def by_ab(names: Sequence[str], *, repo: Path, rootdir: Path, commit: str, base_args: Sequence[str],
          head_args: Sequence[str], settings_args: Sequence[str], metric: Metric, threshold: float,
          thresholds: Mapping[str, float], log: Callable[[str], None],
          progress: Callable[[int, str], Progress] | None = None) -> Confirmation:
    """An A/B of ``names`` (node ids), the baseline's ``commit`` against the working tree, each side with its
    own passed-through options; the verdicts marked with what decided them."""
    top = revisions.toplevel(repo)
    within = rootdir.resolve().relative_to(top.resolve())  # where the suite sits in the repository
    design = ab.Design(rounds=metric.defaults.ab_rounds, recheck_rounds=metric.defaults.ab_rounds,
                       threshold=threshold, metric=metric, thresholds=dict(thresholds))
    common = [*settings_args, "--perf-processes=1", f"--benchmark-max-time={MAX_TIME}",
              f"--benchmark-min-rounds={MIN_ROUNDS}", *names]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="perf-confirm-") as tmp:
        with revisions.checked_out(top, {BASE: commit}, Path(tmp)) as trees:
            sides = {BASE: Side(trees[BASE] / within, (*base_args, *common), f"the baseline's commit {commit[:12]}"),
                     HEAD: Side(rootdir, (*head_args, *common), "this run's code")}
            outcome = ab.compare(sides, design, Path(tmp), log, progress)
    how = (f"A/B against the baseline's commit {commit[:12]}: {design.rounds} rounds "
           f"({outcome.mode}){', and a recheck' if outcome.rechecked else ''}, {len(names)} benchmarks "
           f"in {time.monotonic() - started:.0f} s")
    evidence = f"A/B vs {commit[:10]}"
    verdicts = {c.name: c.decided_by(evidence) for c in outcome.comparisons if c.name in set(names)}
    return Confirmation(verdicts, how)
