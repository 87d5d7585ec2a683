"""Which saved runs should a bare ``--benchmark-compare`` pool (issue 24)? Judged offline on the histories that
``studies/history_study.py`` saved: no benchmark is measured again.

    python studies/window_study.py --histories DIR [--keep 5] [--units processes|runs] [--out PATH]

DIR is a history_study workdir (history-1/storage, history-2/storage, ...: N saves of unchanged code, then M
with relu +50% and grad_w1 +10% injected). Every save k after the first plays the compare run, and the
saves before it the history; on main every save is a new commit, so the windows of ``--perf-baseline-window``
come to:

- ``code``: the newest run alone (the only run of its commit);
- ``commits``: the newest ``--keep`` runs, whatever their code;
- ``steps``: per benchmark, the runs since the last step its history shows, at most ``--keep``
  (``perf.baseline.since_last_step``).

Each benchmark is judged as the gate judges a run's processes (``perf.gate.compare_processes``): REGRESSED, or a
suspect (REGRESSED or undecided: what the gate sends to its A/B against the baseline's commit, which then
decides). With ``--units runs`` a pooled baseline counts each of its runs once (the run's fastest process)
instead of every process of every run. Detection: the injected benchmarks at save N+1. False alarms: every
other benchmark at every save, and the injected ones before N+1. What the A/B then makes of the suspects is
not simulated: a suspect costs an A/B, a miss is final.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf comes from this checkout

from perf import baseline, gate, trend  # noqa: E402
from perf.cases import base_stage  # noqa: E402
from perf.cli import Parser, UsageError, positive_int, run_main  # noqa: E402
from perf.gate import parse_threshold  # noqa: E402
from perf.results import Run, readable_runs  # noqa: E402
from perf.statistic import DEFAULT as STATISTIC  # noqa: E402
from studies import common  # noqa: E402

PROG = "python studies/window_study.py"
WINDOWS = ("code", "commits", "steps")
THRESHOLD = parse_threshold("5%")  # the gate's default


def history(storage: Path) -> list[Run]:
    skipped: list[str] = []
    runs = list(readable_runs(trend.storage_files(storage), skipped))
    runs.sort(key=trend.history_order(runs))
    if skipped:
        raise UsageError(f"a saved run does not load: {skipped[0]}")
    return runs


def baseline_of(window: str, before: Sequence[Run], keep: int) -> dict[str, list[Run]]:
    """The runs the window pools, per benchmark (newest first)."""
    newest_first = list(reversed(before))
    if window == "code":
        return {name: newest_first[:1] for name in newest_first[0].results}
    if window == "commits":
        return {name: newest_first[:keep] for name in newest_first[0].results}
    return baseline.runs_since_last_step(newest_first, keep)


def values_of(runs: Sequence[Run], name: str, units: str) -> list[float]:
    """The baseline's values: every process of every run, or each run's fastest process (one run: its processes)."""
    per_run = [r.results[name].per_process(STATISTIC) for r in runs if name in r.results]
    if units == "runs" and len(per_run) > 1:
        return [min(values) for values in per_run if values]
    return [v for values in per_run for v in values]


def judge(histories: Sequence[list[Run]], injected: set[str], first: int, keep: int, units: str) -> dict:
    """Per window: counts of detection at save ``first`` (0-based) and of false alarms elsewhere."""
    out = {w: {"targets": 0, "regressed": 0, "suspect": 0, "others": 0, "false_regressed": 0, "false_suspect": 0,
               "misses": []} for w in WINDOWS}
    for h, runs in enumerate(histories, 1):
        for k in range(1, len(runs)):
            current = runs[k]
            for window in WINDOWS:
                base = baseline_of(window, runs[:k], keep)
                tally = out[window]
                for name, r in current.results.items():
                    if name not in base:
                        continue
                    c = gate.compare_processes(name, values_of(base[name], name, units), r.per_process(STATISTIC),
                                               THRESHOLD)
                    regressed = c.verdict == gate.REGRESSED
                    suspect = regressed or gate.undecided(c)
                    target = base_stage(r.stage) in injected
                    if target and k == first:
                        tally["targets"] += 1
                        tally["regressed"] += regressed
                        tally["suspect"] += suspect
                        if not suspect:
                            tally["misses"].append(f"history {h}: {name.rsplit('::', 1)[-1]} {(c.ratio - 1) * 100:+.1f}%")
                    elif not target or k < first:
                        tally["others"] += 1
                        tally["false_regressed"] += regressed
                        tally["false_suspect"] += suspect
    return out


def render(result: dict, meta: dict) -> list[str]:
    lines = [f"Histories: {meta['histories']} ({meta['saves']} saves each, injected from save {meta['first']}), "
             f"`{meta['command']}`; each save after the first as the compare run, the saves before it as the history, "
             f"at most {meta['keep']} runs pooled, counted as {meta['units']}.", "",
             "| window | injected at their first save: REGRESSED | suspects (to the A/B) | the others: REGRESSED | "
             "suspects (to the A/B) | missed (not even a suspect) |", "|---|---:|---:|---:|---:|---|"]
    for window in WINDOWS:
        t = result[window]
        lines.append(f"| `{window}` | {t['regressed']}/{t['targets']} | {t['suspect']}/{t['targets']} | "
                     f"{t['false_regressed']}/{t['others']} | {t['false_suspect']}/{t['others']} | "
                     f"{'; '.join(t['misses']) or '-'} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    p = Parser(prog=PROG, description=__doc__.strip().splitlines()[0])
    p.add_argument("--histories", required=True, help="a history_study workdir")
    p.add_argument("--keep", type=positive_int, default=5)
    p.add_argument("--units", choices=("processes", "runs"), default="processes",
                   help="what a pooled baseline counts: every process (the gate's way) or each run's fastest")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    work = Path(args.histories)
    try:
        study = json.loads((work / "study.json").read_text())
        saves, slowdown = int(study["saves"]), str(study["slowdown"])
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"--histories: no finished history study in {work} ({exc})") from None
    folders = sorted(work.glob("history-*/storage"))
    if not folders:
        raise UsageError(f"--histories: no history-N/storage in {work}")
    histories = [history(f) for f in folders]
    injected = {item.split(":")[0] for item in slowdown.split(",")}
    result = judge(histories, injected, saves, args.keep, args.units)
    meta = {"histories": len(histories), "saves": len(histories[0]), "first": saves + 1, "keep": args.keep,
            "units": args.units,
            "command": f"python studies/window_study.py --histories {work} --keep {args.keep} --units {args.units}"}
    return common.publish(render(result, meta), args.out)


if __name__ == "__main__":
    sys.exit(main())
