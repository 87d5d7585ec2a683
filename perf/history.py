"""python -m perf.history [STORAGE] [-k EXPR] [--since RUN] [--threshold 5%] [--window N]
                         [--markdown PATH] [--json PATH] [--figures DIR]
                         [--confirm [--repo DIR] [--rounds R] [-- PYTEST ARGS]]

Trends across saved runs: per benchmark, its value in each run (the gate's statistic, with the
spread of the run's processes and its commit), the steps where its level changed by --threshold or
more (``perf.steps``: asv's fit, each run weighed by its own spread), each with its size, interval
and the runs on either side, and the drift over the window, which shows a creep of smaller changes.
STORAGE is pytest-benchmark's storage, a folder or a ``file://`` URL as ``--benchmark-storage`` takes
it (default ``.benchmarks``); every machine-id subfolder is read. A damaged saved run is skipped with
a warning naming it and its field.

Exit status: 1 when a step that starts after the run --since names is a regression (slower, its
whole interval past --threshold) and, with --confirm, an interleaved A/B of the commits either side
of it finds it again (``perf.history_ab``); 0 otherwise (without --since nothing is gated); 2 with
one line on bad input (perf.cli).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import gate, history_ab, paths, revisions, steps, trend
from .cli import PASS, REGRESSION, Parser, positive_int, run_main, split_dashdash
from .errors import UsageError
from .metric import Metric
from .render import format_change, format_value, md_escape
from .results import Run, load_run, readable_runs, write_json

PROG = "python -m perf.history"
DEFAULT_STORAGE = ".benchmarks"
DEFAULT_THRESHOLD = "5%"
_SINCE_ACCEPTED = "a saved run's number (12 or 0012, as --benchmark-compare=NUM takes it) or a commit id prefix " \
                  "(at least 4 hex digits)"


# --------------------------------------------------------------------------- what the history holds


@dataclass(frozen=True)
class Finding:
    """One benchmark's series, what ``perf.steps`` found in it, and where its runs after --since start."""

    series: trend.Series
    fit: steps.Fit
    since: int | None        # index of the first point after the --since run; None without --since

    def new(self, step: steps.Step) -> bool:
        """Whether the step starts after the --since run."""
        return self.since is not None and step.index >= self.since

    def regressed(self, step: steps.Step, threshold: float) -> bool:
        """Whether the step starts after the --since run and is slower past ``threshold``, its whole interval."""
        return self.new(step) and step.slower_than(threshold)


def find(series: trend.Series, threshold: float, after: Callable[[Run], bool] | None = None) -> Finding:
    """The steps and drift of ``series``, a step being a clear change of level of at least ``threshold`` either
    way (asv, too, reports no jump under its regression threshold: smaller ones on this machine are the
    machine's, docs/results/history.md); ``after``: whether a run comes after the --since run."""
    points = series.points
    fit = steps.detect([p.value for p in points], [p.spread for p in points], min_step=threshold)
    since = None if after is None else next((i for i, p in enumerate(points) if after(p.run)), len(points))
    return Finding(series, fit, since)


def protected(runs: Iterable[Run], threshold: str = DEFAULT_THRESHOLD) -> set[str]:
    """The sources of the saved runs a step ``python -m perf.history`` reports points at (its first run and the
    run before it), over every benchmark, metric and machine: the runs pruning a runner's storage must keep."""
    least = gate.parse_threshold(threshold)
    keep: set[str] = set()
    for series in trend.series(runs):
        for step in find(series, least).fit.steps:
            keep.update(p.run.source for p in series.points[step.index - 1:step.index + 1])
    return keep


@dataclass(frozen=True)
class History:
    """Every selected benchmark's finding, and what was asked."""

    storage: str
    findings: tuple[Finding, ...]
    threshold: float
    since: str | None
    window: int | None
    skipped: tuple[str, ...]           # one line per damaged saved run
    order: Callable[[Run], trend.OrderKey]   # the history order of every run read (trend.history_order)
    confirmations: Mapping[history_ab.Key, history_ab.Confirmation] = dataclasses.field(default_factory=dict)

    def confirmation(self, f: Finding, step: steps.Step) -> history_ab.Confirmation | None:
        return self.confirmations.get(history_ab.key(f.series, step))

    def regressed(self, f: Finding, step: steps.Step) -> bool:
        """A regression after --since that stands: no A/B was asked, or it found it again, or none could tell."""
        confirmation = self.confirmation(f, step)
        return f.regressed(step, self.threshold) and (confirmation is None or confirmation.stands)

    def regressions(self) -> list[tuple[Finding, steps.Step]]:
        return [(f, s) for f in self.findings for s in f.fit.steps if self.regressed(f, s)]

    def suspects(self) -> list[tuple[Finding, steps.Step]]:
        """The regressions after --since before any A/B: what --confirm measures."""
        return [(f, s) for f in self.findings for s in f.fit.steps if f.regressed(s, self.threshold)]

    def runs(self) -> list[Run]:
        unique = {p.run.source: p.run for f in self.findings for p in f.series.points}
        return sorted(unique.values(), key=self.order)


# --------------------------------------------------------------------------- input


def _parser() -> Parser:
    p = Parser(prog=PROG, allow_abbrev=False,
               description="Trends across saved runs of pytest perf: per benchmark its values, the steps where its "
                           "level changed (with the runs on either side) and the drift.",
               epilog="Arguments after -- go to pytest on both sides of --confirm's A/B. Exit status: 1 when a step "
                      "after --since is a regression past --threshold (with --confirm: one its A/B finds again), 0 "
                      "otherwise (without --since nothing is gated), 2 on bad input.")
    p.add_argument("storage", nargs="?", default=DEFAULT_STORAGE, metavar="STORAGE",
                   help=f"pytest-benchmark storage: a folder or file://PATH (default {DEFAULT_STORAGE})")
    p.add_argument("-k", dest="keyword", metavar="EXPR",
                   help="benchmarks whose id matches a pytest-style keyword expression (words joined by and, or, not)")
    p.add_argument("--since", metavar="RUN", help=f"gate the steps starting after this run: {_SINCE_ACCEPTED}")
    p.add_argument("--threshold", default=DEFAULT_THRESHOLD,
                   help="the smallest change of level reported as a step, and the slowdown a step after --since must "
                        "exceed, its whole interval past it, to fail; e.g. 10%% or 0.1 (default "
                        f"{DEFAULT_THRESHOLD.replace('%', '%%')})")
    p.add_argument("--window", type=positive_int, metavar="N", help="each benchmark's last N runs only (default: all)")
    p.add_argument("--markdown", metavar="PATH", help="write the history as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--json", metavar="PATH", help="write the history as JSON")
    p.add_argument("--figures", metavar="DIR", help="write one PNG per size and stage: the trend, the per-process "
                                                    "band and the steps, backends as lines")
    p.add_argument("--confirm", action="store_true",
                   help="measure each regression after --since again: an interleaved A/B (perf.ab) of the commit of "
                        "the run before its step against the commit of its first run; only what it finds again fails")
    p.add_argument("--repo", default=".", metavar="DIR", help="with --confirm: the suite's git repository (default .)")
    p.add_argument("--rounds", type=positive_int, metavar="R", help="with --confirm: A/B rounds (default: perf.ab's)")
    return p


def storage_folder(text: str) -> Path:
    """The folder of a storage given as --benchmark-storage takes it; UsageError when it is no folder."""
    if "://" in text:
        if not text.startswith("file://"):
            raise UsageError(f"storage {text!r}: only file storage can be read (a folder or file://PATH)")
        text = text[len("file://"):]
    folder = Path(text)
    if not folder.is_dir():
        raise UsageError(f"storage {text!r}: {'not a folder' if folder.exists() else 'no such folder'} "
                         "(give pytest-benchmark's storage, e.g. .benchmarks)")
    return folder


def since(spec: str, storage: Path, files: Sequence[Path], runs: Sequence[Run],
          order: Callable[[Run], trend.OrderKey]) -> tuple[str, Callable[[Run], bool]]:
    """(how the run --since names is shown, whether a run comes after it in ``order``; the newest of several
    that match); UsageError when none matches. A numbered run that does not load is its one-line ResultsError."""
    if re.fullmatch(r"\d{1,4}", spec):
        label = f"{int(spec):04d}"
        named = [load_run(f) for f in files if f.name.startswith(f"{label}_")]
        missing = f"no saved run numbered {label}"
    elif re.fullmatch(r"[0-9a-fA-F]{4,40}", spec):
        label = spec.lower()
        named = [r for r in runs if r.commit_id.startswith(label)]
        missing = f"no saved run of a commit starting with {spec}"
    else:
        raise UsageError(f"--since {spec!r}: expected {_SINCE_ACCEPTED}")
    if not named:
        raise UsageError(f"--since {spec}: {missing} in {storage}; expected {_SINCE_ACCEPTED}")
    last = max(order(r) for r in named)
    return label, lambda run: order(run) > last


def _threshold(text: str) -> float:
    try:
        return gate.parse_threshold(text)
    except gate.GateError as exc:
        raise UsageError(f"--threshold: {exc}") from None


# --------------------------------------------------------------------------- text, Markdown, JSON


def _change(change: steps.Change) -> str:
    return f"{format_change(change.ratio)} [{format_change(change.low)}, {format_change(change.high)}]"


def _spread(point: trend.Point) -> str:
    spread = point.spread
    return "-" if spread is None else f"±{math.expm1(spread) * 100:.1f}%"


def _step_line(f: Finding, step: steps.Step, history: History) -> str:
    points = f.series.points
    verdict = ""
    if history.regressed(f, step):
        verdict = f", REGRESSION (after {history.since}, past {gate.percent(history.threshold)})"
    elif f.new(step):
        verdict = f", after {history.since}"
    confirmation = history.confirmation(f, step)
    if confirmation is not None:
        verdict += f"; {confirmation.text()}"
    return (f"{points[step.index].label} (after {points[step.index - 1].label}): "
            f"{_change(step)}{verdict}")


def _drift_line(f: Finding) -> str:
    drift = f.fit.drift
    return "-" if drift is None else f"{_change(drift)} over {len(f.series.points)} runs"


def _short(name: str) -> str:
    return name.rsplit("::", 1)[-1]


def _heading(history: History) -> str:
    runs = history.runs()
    span = f"{trend.run_label(runs[0])} .. {trend.run_label(runs[-1])}" if runs else "none"
    since = f"; steps after {history.since} gated" if history.since else "; nothing gated (no --since)"
    return (f"{len(history.findings)} benchmark(s), {len(runs)} saved run(s) ({span}) in {history.storage}; "
            f"threshold {gate.percent(history.threshold)}{since}")


def _outcome(history: History) -> str:
    found = history.regressions()
    refuted = len(history.suspects()) - len(found)
    unconfirmed = f" ({refuted} not confirmed by an A/B of their commits)" if refuted else ""
    if not found:
        return "PASS: no regression" + (f" after {history.since}" if history.since else " gated") + unconfirmed
    items = "; ".join(f"{_short(f.series.benchmark)} {format_change(s.ratio)} at {f.series.points[s.index].label}"
                      for f, s in found)
    return f"FAIL: {len(found)} regression(s) after {history.since}{unconfirmed}: {items}"


def bisect_commands(history: History) -> list[str]:
    """For the regressions that stand, the ``perf.bisect`` command that finds the commit that caused them:
    one per pair of commits either side of a step (none where both runs are of one commit)."""
    pairs: dict[tuple[str, str, str], list[str]] = {}
    for f, step in history.regressions():
        before, first = (f.series.points[i].run for i in (step.index - 1, step.index))
        if before.commit_id and first.commit_id and before.commit_id != first.commit_id:
            counted = [f"--perf-metric={f.series.metric.value}"] if f.series.metric.counted else []
            pairs.setdefault((before.commit_id[:12], first.commit_id[:12], shlex.join(counted)), []).append(f.series.benchmark)
    return [f"python -m perf.bisect --good {good} --bad {bad} -- {' '.join(filter(None, [counted, shlex.join(names)]))}"
            for (good, bad, counted), names in pairs.items()]


def to_text(history: History) -> str:
    """Per benchmark: each run (number, commit, value, spread), the steps, the drift; then the outcome."""
    lines = [_heading(history), ""]
    for f in history.findings:
        s = f.series
        lines.append(f"{s.benchmark}  ({s.metric.value} on {s.machine})")
        lines.append(f"  {'run':<6}{'commit':<20}{'value':>12}{'spread':>10}")
        for p in s.points:
            lines.append(f"  {p.label:<6}{p.run.commit or '-':<20}{format_value(p.value, s.metric):>12}"
                         f"{_spread(p):>10}")
        lines += [f"  step at {_step_line(f, step, history)}" for step in f.fit.steps] or ["  no step"]
        lines += [f"  drift: {_drift_line(f)}", f"  weighting: {f.fit.weighting}", ""]
    lines.append(_outcome(history))
    lines += [f"  which commit: {command}" for command in bisect_commands(history)]
    return "\n".join(lines) + "\n"


def to_markdown(history: History) -> str:
    """GitHub-flavoured Markdown for a CI job summary: the outcome, one row per benchmark (steps, drift),
    then each benchmark's runs in a collapsed section."""
    outcome = _outcome(history)
    lines = [f"### Performance history: {md_escape(outcome.split(':', 1)[0])}", "", f"{md_escape(_heading(history))}", "",
             f"**{md_escape(outcome)}**", ""]
    commands = bisect_commands(history)
    if commands:
        lines += [f"- which commit: `{command}`" for command in commands] + [""]
    if history.skipped:
        lines += [f"- skipped a damaged saved run: {md_escape(line)}" for line in history.skipped] + [""]
    if history.findings:
        lines += ["| Benchmark | Machine | Runs | Latest | Steps | Drift |", "|:---|:---|---:|---:|:---|---:|"]
    for f in history.findings:
        s = f.series
        marked = [f"**{_step_line(f, st, history)}**" if history.regressed(f, st) else _step_line(f, st, history)
                  for st in f.fit.steps]
        lines.append(f"| `{md_escape(_short(s.benchmark))}` | {md_escape(s.machine)} | {len(s.points)} | "
                     f"{format_value(s.points[-1].value, s.metric)} | {md_escape('; '.join(marked)) or '-'} | "
                     f"{md_escape(_drift_line(f))} |")
    if history.findings:
        lines += ["", "<details><summary>Each run of each benchmark</summary>", ""]
        for f in history.findings:
            s = f.series
            lines += [f"#### `{md_escape(s.benchmark)}` ({s.metric.value} on {md_escape(s.machine)})", "",
                      "| Run | Commit | Value | Spread |", "|:---|:---|---:|---:|"]
            lines += [f"| {p.label} | {md_escape(p.run.commit) or '-'} | {format_value(p.value, s.metric)} | "
                      f"{_spread(p)} |" for p in s.points]
            lines += ["", f"{md_escape(f.fit.weighting)}", ""]
        lines.append("</details>")
    return "\n".join(lines) + "\n"


def _change_json(change: steps.Change) -> dict:
    return {"before": change.before, "after": change.after, "ratio": change.ratio, "low": change.low, "high": change.high}


def _confirmation_json(confirmation: history_ab.Confirmation | None) -> dict | None:
    return None if confirmation is None else confirmation.as_dict()


def to_json(history: History) -> dict:
    """The history as a JSON document: meta, passed, and per benchmark its runs, levels, steps and drift."""
    benchmarks = []
    for f in history.findings:
        s, points = f.series, f.series.points
        benchmarks.append({
            "name": s.benchmark, "metric": s.metric.value, "machine": s.machine, "weighting": f.fit.weighting,
            "runs": [{"run": p.label, "source": p.run.source, "commit": p.run.commit,
                      "commit_id": p.run.commit_id, "saved": p.run.datetime, "value": p.value, "spread": p.spread,
                      "per_process": list(p.per_process)} for p in points],
            "levels": [{"first_run": points[lv.start].label, "last_run": points[lv.stop - 1].label,
                        "value": lv.value} for lv in f.fit.levels],
            "steps": [{"first_run": points[st.index].label, "run_before": points[st.index - 1].label,
                       "index": st.index, **_change_json(st), "new": f.new(st), "regression": history.regressed(f, st),
                       "confirmation": _confirmation_json(history.confirmation(f, st))} for st in f.fit.steps],
            "drift": None if f.fit.drift is None else {**_change_json(f.fit.drift), "runs": len(points)},
        })
    return {"meta": {"storage": history.storage, "since": history.since, "threshold": history.threshold,
                     "window": history.window, "runs": len(history.runs()), "skipped": list(history.skipped),
                     "confirmed by A/B": bool(history.confirmations)},
            "passed": not history.regressions(), "benchmarks": benchmarks}


# --------------------------------------------------------------------------- figures


def _figure_group(f: Finding) -> tuple[str, str, str]:
    """(metric, machine, what): the benchmarks drawn together, backends as lines (size, stage and dtype alike)."""
    info = f.series.latest
    what = " ".join(x for x in (info.text("size"), info.stage, info.text("dtype")) if x) or _short(f.series.benchmark)
    return f.series.metric.value, f.series.machine, what


def figure_name(group: tuple[str, str, str]) -> str:
    metric, where, what = group
    label = "-".join([where, what] + ([metric] if Metric(metric).counted else []))
    return f"history-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}.png"


def plot(findings: Sequence[Finding], history: History, path: Path) -> None:
    """One figure: each benchmark's value per run (a line per backend), the band of its per-process minima,
    its levels as dashed segments and each step marked before its first run with its size."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from .report.figures import backend_colors

    metric, where, what = _figure_group(findings[0])
    runs = sorted({p.run.source: p.run for f in findings for p in f.series.points}.values(), key=history.order)
    x_of = {r.source: i for i, r in enumerate(runs)}
    labels = {f.series.benchmark: f.series.latest.backend or _short(f.series.benchmark) for f in findings}
    colors = backend_colors(labels.values())
    fig = Figure(figsize=(max(7.0, 4 + 0.3 * len(runs)), 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    values = []
    for f in findings:
        points, color = f.series.points, colors[labels[f.series.benchmark]]
        xs = [x_of[p.run.source] for p in points]
        values += [v for p in points for v in (p.value, *p.per_process)]
        ax.fill_between(xs, [min(p.per_process or (p.value,)) for p in points],
                        [max(p.per_process or (p.value,)) for p in points], color=color, alpha=0.2, lw=0)
        ax.plot(xs, [p.value for p in points], color=color, marker="o", ms=3.5, lw=1.3, label=labels[f.series.benchmark])
        for level in f.fit.levels:
            ax.hlines(level.value, xs[level.start] - 0.3, xs[level.stop - 1] + 0.3, color=color, lw=0.9, ls="--")
        for step in f.fit.steps:
            at = (xs[step.index - 1] + xs[step.index]) / 2
            ax.axvline(at, color=color, ls=":", lw=1.2)
            ax.annotate(_change(step), xy=(at, step.after), xytext=(3, 4), textcoords="offset points", fontsize=7.5,
                        color=color, fontweight="bold" if history.regressed(f, step) else "normal")
    if max(values) > 10 * min(values):
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(0, max(values) * 1.15)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, metric) if v > 0 else "0"))
    ax.set_xticks(range(len(runs)), [trend.run_label(r) for r in runs], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.grid(axis="y", color="0.88")
    ax.set_xlabel("saved run, in history order")
    ax.set_ylabel(f"{'time' if metric == Metric.TIME.value else metric} per call: fastest process's minimum")
    ax.legend(title="backend", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"History of {what}", fontweight="bold")
    ax.set_title(f"{where}; band: the per-process minima; dashed: levels; dotted: steps", fontsize=8, color="0.3")
    fig.savefig(path)


def write_figures(history: History, folder: Path) -> list[Path]:
    """One PNG per figure group into ``folder`` (created when missing); their paths."""
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    for f in history.findings:
        groups.setdefault(_figure_group(f), []).append(f)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / figure_name(group) for group in groups]
        for path, findings in zip(written, groups.values()):
            plot(findings, history, path)
    except OSError as exc:
        raise UsageError(f"--figures {folder}: cannot write the figures ({exc.strerror or exc})") from None
    return written


# --------------------------------------------------------------------------- the command


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main(PROG, lambda: _history(argv))


def _history(argv: list[str]) -> int:
    own, pytest_args = split_dashdash(argv)
    args = _parser().parse_args(own)
    threshold = _threshold(args.threshold)
    if args.confirm and args.since is None:
        raise UsageError("--confirm measures the regressions after --since RUN: give --since")
    if (args.rounds or pytest_args) and not args.confirm:
        raise UsageError("--rounds and arguments after -- are for the A/B of --confirm: give --confirm")
    if args.rounds is not None and args.rounds < gate.MIN_SAMPLES:
        raise UsageError(f"--rounds {args.rounds}: expected an integer >= {gate.MIN_SAMPLES}")
    repo = revisions.toplevel(args.repo) if args.confirm else None
    select = trend.keyword(args.keyword) if args.keyword is not None else (lambda name: True)
    storage = storage_folder(args.storage)
    paths.require_writable({"--markdown": args.markdown, "--json": args.json})
    files = trend.storage_files(storage)
    skipped: list[str] = []
    runs = list(readable_runs(files, skipped))
    if files and not runs:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise UsageError(f"no saved run in {storage} can be read: {skipped[0]}{more}")
    order = trend.history_order(runs)
    label, after = since(args.since, storage, files, runs, order) if args.since is not None else (None, None)
    series = trend.series(runs, select, args.window)
    if args.keyword is not None and runs and not series:
        raise UsageError(f"-k {args.keyword!r} selects none of the benchmarks saved in {storage}")
    history = History(str(storage), tuple(find(s, threshold, after) for s in series), threshold, label, args.window,
                      tuple(skipped), order)
    for line in skipped:
        print(f"warning: skipped a damaged saved run: {line}", file=sys.stderr)
    if repo is not None and history.suspects():
        log = lambda msg: print(f"perf.history: {msg}", file=sys.stderr, flush=True)  # noqa: E731
        confirmations = history_ab.confirm([(f.series, s) for f, s in history.suspects()], repo, pytest_args,
                                           threshold, log, args.rounds)
        history = dataclasses.replace(history, confirmations=confirmations)
    sys.stdout.write(to_text(history))
    if args.markdown:
        with paths.writing("--markdown", args.markdown, "the history"):
            Path(args.markdown).write_text(to_markdown(history), encoding="utf-8")
    if args.json:
        with paths.writing("--json", args.json, "the history"):
            write_json(args.json, to_json(history))
    if args.figures:
        written = write_figures(history, Path(args.figures))
        print(f"wrote {len(written)} figure(s) into {args.figures}", file=sys.stderr)
    return REGRESSION if history.regressions() else PASS


if __name__ == "__main__":
    sys.exit(main())
