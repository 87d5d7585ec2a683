"""The saved-baseline gate: which saved run ``--benchmark-compare`` names, whether it may be
compared with this run, and the verdict on each benchmark against it.

No pytest here: errors are ``BaselineError`` (one line; the plugin makes them usage errors),
decisions are ``gate.Comparison``. The statistics are the gate's; what this module adds is the
baseline itself, the thresholds per benchmark and the run-to-run drift floor of the saved history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import drift, gate, machine
from .cases import PROBES
from .errors import BaselineError, ResultsError
from .metric import Metric
from .results import Result, Run, load_run, readable_runs
from .statistic import DEFAULT as STATISTIC
from .statistic import median

# A probe's change against the baseline from which the report says what it means for the other benchmarks.
PROBE_NOTE = 0.05


@dataclass(frozen=True)
class Choice:
    """What ``--benchmark-compare`` stands for: one run, or saved runs of the same code (newest first)."""

    runs: tuple[Run, ...]
    warnings: tuple[str, ...] = ()

    @property
    def newest(self) -> Run | None:
        return self.runs[0] if self.runs else None


def same_code(a: Run, b: Run) -> bool:
    """Saved from the same clean commit, or from the same sources (the digest a run records of kernels/ and perf/)."""
    if a.commit_id and a.commit_id == b.commit_id and not a.dirty and not b.dirty:
        return True
    digest = a.header.get("sources")
    return bool(digest) and digest == b.header.get("sources")


def choose(spec: str | bool, files: Sequence[Path], storage: str, *, fingerprint: Mapping, metric: Metric,
           allow_foreign: bool = False, history: int = 1, across_commits: bool = False,
           ignore: tuple[str, ...] = ()) -> Choice:
    """The baseline ``--benchmark-compare[=spec]`` stands for, among ``files`` (what the storage matched for
    it, oldest first), and warnings.

    Named (``spec`` a number, name or path): every file it matches must load, the newest is the baseline;
    nothing matching is an error. Bare (``spec`` True): the newest saved run of this metric and machine
    fingerprint (any fingerprint with ``allow_foreign``), with up to ``history`` - 1 older runs of the same
    code (``same_code``), or of any code with ``across_commits``: one run catches the machine in one
    state. Newer runs passed over (unreadable, another metric, another machine) are named in warnings;
    none left is no baseline (nothing to gate yet).
    """
    if spec is not True:
        if not files:
            raise BaselineError(f"--benchmark-compare={spec}: no saved run matches it in {storage}")
        try:
            runs = [load_run(path) for path in files]
        except ResultsError as exc:
            raise BaselineError(f"--benchmark-compare={spec}: {exc}") from None
        return Choice((runs[-1],))
    skipped: list[str] = []
    readable = list(readable_runs(reversed(files), skipped))  # newest first
    warnings = [f"skipped an unreadable saved run: {why}" for why in skipped]
    passed_over: list[str] = []
    mine: list[Run] = []
    for run in readable:
        if run.metric is not metric:
            why = f"{Path(run.source).name} ({run.metric.value})"
        elif not allow_foreign and (run.fingerprint is None or machine.differences(run.fingerprint, fingerprint, ignore)):
            why = f"{Path(run.source).name} (another machine fingerprint)"
        else:
            mine.append(run)
            continue
        if not mine:  # only the runs newer than the baseline are worth a word
            passed_over.append(why)
    if passed_over:
        warnings.append(f"passed over {len(passed_over)} newer saved run(s) not comparable with this one: "
                        f"{', '.join(passed_over[:3])}{' ...' if len(passed_over) > 3 else ''}")
    if not mine:
        return Choice((), tuple(warnings))
    runs = mine if across_commits else [r for r in mine if same_code(r, mine[0])]
    return Choice(tuple(runs[:max(1, history)]), tuple(warnings))


def since_last_step(runs: Sequence[Run], keep: int) -> Run:
    """The baseline of a history that spans commits (``--perf-baseline-window steps``): for each benchmark, the
    runs (newest first in ``runs``) since the last step its history shows (``perf.steps``), at most ``keep``
    of them, pooled. A benchmark whose history stepped pools only its runs at the new level."""
    chosen = runs_since_last_step(runs, keep)
    return dataclasses.replace(runs[0], results={name: pooled(mine).results[name] for name, mine in chosen.items()})


def runs_since_last_step(runs: Sequence[Run], keep: int) -> dict[str, list[Run]]:
    """Per benchmark, the runs ``since_last_step`` pools (newest first, at most ``keep``)."""
    from . import steps, trend  # here only: step detection brings asv, which no other run needs to import

    oldest_first = list(reversed(runs))
    chosen = {}
    for name in dict.fromkeys(n for r in runs for n in r.results):
        mine = [r for r in oldest_first if name in r.results and trend.value_of(r.results[name])]
        if not mine:
            continue
        fit = steps.detect([trend.value_of(r.results[name]) for r in mine],
                           [steps.spread(r.results[name].per_process(STATISTIC)) for r in mine]) if len(mine) > 2 else None
        start = fit.steps[-1].index if fit is not None and fit.steps else 0
        chosen[name] = list(reversed(mine[start:]))[:max(1, keep)]
    return chosen


def pooled(runs: Sequence[Run]) -> Run:
    """One run whose benchmarks hold the processes and samples of every run in ``runs`` (newest first):
    the baseline of a history. A single run is itself."""
    if len(runs) == 1:
        return runs[0]
    newest = runs[0]
    merged: dict[str, Result] = {}
    for run in reversed(runs):  # oldest first, so each benchmark's processes keep the runs' order
        for name, r in run.results.items():
            before = merged.get(name)
            if before is None:
                merged[name] = r
                continue
            samples = before.samples + r.samples
            merged[name] = dataclasses.replace(r, samples=samples, processes=before.processes + r.processes,
                                               median=median(samples) if samples else r.median)
    return dataclasses.replace(newest, results=merged)


def check_comparable(run: Run, fingerprint: Mapping, metric: Metric, allow_foreign: bool, ignore: tuple[str, ...] = (),
                     stack_change: bool = False) -> str:
    """'' when ``run`` may be compared with this run; a warning when it is foreign but allowed (by
    ``allow_foreign``, or by ``stack_change`` where only the software stack differs: an upgrade measured);
    BaselineError when it is foreign (or of another metric, which is never allowed)."""
    if run.metric is not metric:
        raise BaselineError(f"the baseline {run.source} holds {run.metric.value} and this run measures {metric.value}: "
                            f"a baseline is only compared with a run of the same metric (--perf-metric {run.metric.value})")
    if run.fingerprint is None:
        what = "has no machine fingerprint"
    else:
        changes = machine.differences(run.fingerprint, fingerprint, ignore)
        if not changes:
            return ""
        if stack_change and not machine.differences(run.fingerprint, fingerprint, (*ignore, *machine.STACK)):
            return f"Stack change (--perf-stack-change): the baseline {run.source} ran on this hardware with another " \
                   f"software stack ({'; '.join(changes)}): the changes below are the upgrade's."
        what = f"was recorded on a different machine ({'; '.join(changes)})"
    if not allow_foreign:
        raise BaselineError(f"the baseline {run.source} {what}; save a new one here with --benchmark-autosave, "
                            "or compare anyway with --perf-allow-foreign-baseline")
    return f"Comparing anyway (--perf-allow-foreign-baseline): the baseline {run.source} {what}."


@dataclass
class SavedGate:
    """Verdicts of this run's benchmarks against a saved baseline: one run, or saved runs of the same code pooled."""

    baseline: Run                          # the run, or the runs pooled (``pooled``): its source is the newest one's
    threshold: float                       # the default threshold (a fraction)
    alpha: float
    thresholds: dict[str, float] = field(default_factory=dict)   # per benchmark name (ini, markers)
    compared: int = 1                      # m of the Bonferroni split: benchmarks of this run in the baseline
    drift: dict[str, float] = field(default_factory=dict)        # name -> run-to-run drift floor
    history_runs: int = 0
    threshold_source: str = ""             # set when --benchmark-compare-fail gave the threshold
    processes: int = 1                     # this run's processes per benchmark (--perf-processes)
    runs: tuple[Run, ...] = ()             # the saved runs pooled into ``baseline``, newest first (() = one run)
    window: str = "code"                   # which runs were pooled: of the same code, the newest, since the last step
    confirmation: str = ""                 # how a suspected regression is confirmed (the session says)
    machine_state: tuple[str, ...] = ()    # this run's roofline probes against the baseline's

    @property
    def commit(self) -> str:
        """The commit the baseline was measured at, where it names one ('' for a dirty or unversioned one)."""
        return "" if self.baseline.dirty else self.baseline.commit_id

    def select(self, names: Sequence[str]) -> None:
        """The benchmarks this run measures (after -k/-m): the m of the correction."""
        self.compared = sum(name in self.baseline.results for name in names) or 1

    def load_history(self, runs: Sequence[Run], fingerprint: Mapping, metric: Metric, keep: int) -> None:
        """The last ``keep`` saved runs of this machine and metric set the run-to-run drift floor."""
        mine = [r for r in runs if r.metric is metric and r.fingerprint is not None
                and not machine.differences(r.fingerprint, fingerprint)][-keep:]
        self.history_runs = len(mine)
        self.drift = drift.drift_floors(drift.run_medians(mine), alpha=self.alpha, tests=self.compared)

    def threshold_for(self, name: str) -> tuple[float, str]:
        threshold = self.thresholds.get(name, self.threshold)
        if self.drift.get(name, 0) > threshold:
            return self.drift[name], f"threshold raised to the run-to-run drift {self.drift[name]:.1%} of " \
                                     f"{self.history_runs} saved runs"
        return threshold, ""

    def judge(self, name: str, samples: Sequence[float], note: str = "") -> gate.Comparison | None:
        """The verdict on ``samples`` (this run's, per round and call) against the baseline's; None when
        the baseline lacks the benchmark (it is NEW)."""
        base = self.baseline.results.get(name)
        if base is None:
            return None
        threshold, drift_note = self.threshold_for(name)
        if not base.samples:
            return gate.Comparison(name, gate.INCONCLUSIVE, threshold, n_current=len(samples),
                                   note="the baseline kept no raw samples: save it with --benchmark-save-data")
        result = gate.compare_unpaired(name, base.samples, samples, threshold, alpha=self.alpha, tests=self.compared)
        return result.with_note(gate.join_notes(note, drift_note))

    def judge_processes(self, name: str, per_process: Sequence[float], samples: Sequence[float],
                        note: str = "") -> gate.Comparison | None:
        """The verdict on this run's processes (one value each, ``processes.STATISTIC``) against the
        baseline's; a baseline measured in one process is judged on rounds, and says so."""
        base = self.baseline.results.get(name)
        if base is None:
            return None
        if self.baseline.metric.counted:  # one count per process, and they hardly move: judged against their noise
            threshold, drift_note = self.threshold_for(name)
            before = base.per_process(STATISTIC) or base.samples
            result = gate.compare_counts(name, before, per_process, threshold, self.baseline.metric.defaults.noise)
            return result.with_note(gate.join_notes(note, drift_note))
        if len(base.processes) < 2:
            why = "the baseline was measured in one process: judged on its rounds, which cannot tell code from placement"
            verdict = self.judge(name, samples, note)
            return verdict.with_note(why) if verdict is not None else None
        threshold, drift_note = self.threshold_for(name)
        result = gate.compare_processes(name, base.per_process(STATISTIC), per_process, threshold)
        return result.with_note(gate.join_notes(note, drift_note))

    def probe_changes(self, measured: Mapping[str, object]) -> list[str]:
        """This run's roofline probes against the baseline's, as the machine's state, where they moved by
        ``PROBE_NOTE`` or more: reported, never used to adjust a verdict. ``measured``: {name:
        perf.measured.Measured} of this run."""
        lines = []
        for name, m in measured.items():
            base = self.baseline.results.get(name)
            stage = base.stage if base is not None else ""
            if stage not in PROBES or not base.processes:
                continue
            before, now = min(base.per_process(STATISTIC)), min(m.values(STATISTIC))
            change = before / now - 1  # of the rate: a probe's time per call falls as its rate rises
            what = "copy bandwidth" if stage == "peak_copy" else "peak matmul rate"
            bound = "memory-bound" if stage == "peak_copy" else "compute-bound"
            if abs(change) >= PROBE_NOTE:
                lines.append(f"{what} of {base.backend} {change:+.0%} against the baseline: {bound} results may read "
                             f"{'slow' if change < 0 else 'fast'}")
        return lines

    def unmatched(self, measured: Mapping[str, Sequence[float]], collected: Sequence[str]) -> list[gate.Comparison]:
        """NEW rows (measured now, not in the baseline) and MISSING rows (in the baseline, not collected now)."""
        rows = [gate.new_benchmark(n, samples, self.thresholds.get(n, self.threshold))
                for n, samples in measured.items() if n not in self.baseline.results]
        rows += [gate.missing_benchmark(n, r.samples, self.threshold)
                 for n, r in self.baseline.results.items() if n not in collected]
        return rows

    def meta(self, threads: Mapping) -> dict:
        if self.history_runs >= 3:
            drift = f"thresholds raised to the run-to-run drift of {self.history_runs} saved runs where larger"
        else:
            drift = (f"UNKNOWN: {self.history_runs} saved run(s) of this machine; save at least 3 "
                     "(pytest perf --benchmark-autosave), or use python -m perf.ab on a shared machine")
        base_processes = max((len(r.processes) for r in self.baseline.results.values()), default=0) or 1
        if self.baseline.metric.counted:
            evidence = (f"counts per call: {base_processes} process(es) of the baseline against {self.processes} of this "
                        f"run; a change is judged against their spread, at least "
                        f"{gate.percent(self.baseline.metric.defaults.noise)} (what moves counts of unchanged code)")
        elif self.processes > 1 and base_processes > 1:
            what = {"min": "minimum", "median": "median"}[STATISTIC]
            evidence = (f"processes: {base_processes} of the baseline against {self.processes} of this run, each "
                        f"contributing its {what}; the fastest process of each side compared, the runner-up on the other "
                        "side sets the interval; a suspect is confirmed before it fails (see confirmation)")
        else:
            whose = "this run's" if self.processes == 1 else "the baseline's"
            evidence = (f"rounds of one process ({whose}): one process cannot tell code from placement "
                        "(measure in several: --perf-processes)")
        source = self.baseline.source
        if len(self.runs) > 1:
            which = {"code": "of the same code", "commits": "whatever their code",
                     "steps": "up to each benchmark's last step"}[self.window]
            source += f" and {len(self.runs) - 1} older saved run(s) {which}, their processes pooled"
        value = ("mean count" if self.baseline.metric.counted else "fastest process" if self.processes > 1
                 and base_processes > 1 else "median")
        return {
            "mode": "saved baseline",
            "columns": {"baseline": f"baseline ({value})", "current": f"current ({value})"},
            "evidence": evidence,
            **({"confirmation": self.confirmation} if self.confirmation else {}),
            **({"machine state": "; ".join(self.machine_state)} if self.machine_state else {}),
            "metric": self.baseline.metric.value,
            "baseline": source,
            "run-to-run drift": drift,
            "alpha": self.alpha,
            "control": ("the count rule: a change past the threshold and past the counts' spread (no significance test)"
                        if self.baseline.metric.counted else
                        f"Bonferroni over {self.compared} compared benchmarks (alpha/m per benchmark)"
                        if self.processes == 1 or base_processes == 1 else
                        "the runner-up rule, then a confirmation (no significance test on processes: see gate.md)"),
            "threshold": self.threshold_source or f"{gate.percent(self.threshold)} (ini perf_thresholds and "
                                                  "perf_threshold markers override; never below the run-to-run drift)",
            "threads": dict(threads),
        }


def compare_saved(old: Run, new: Run, threshold: float) -> list[gate.Comparison]:
    """Two saved runs compared benchmark by benchmark as the saved-baseline gate compares a run: ``old`` the
    baseline, ``new`` the run (its processes, or its rounds). Nothing is measured: they were measured at
    different moments, which the verdicts' notes do not hide."""
    processes = max((len(r.processes) for r in new.results.values()), default=1) or 1
    g = SavedGate(old, threshold, 0.05, processes=processes)
    g.select(list(new.results))
    rows = []
    for name, r in new.results.items():
        values = r.per_process(STATISTIC) or ([min(r.samples)] if r.samples else [])
        verdict = g.judge_processes(name, values, r.samples)
        if verdict is not None:
            rows.append(verdict.decided_by("saved runs"))
    return [*rows, *g.unmatched({n: r.samples for n, r in new.results.items()}, list(new.results))]
