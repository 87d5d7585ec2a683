"""Step detection on histories (issue 24), for docs/results: how often each method finds a slowdown at
the save it starts, and what it reports on benchmarks that did not change.

    python studies/history_study.py --workdir DIR [--saves N] [--injected M] [--histories H] [--out PATH]
                                    [--rejudge] [-- PYTEST SELECTION ...]
    python studies/history_study.py --constructed [--trials T] [--out PATH]

Real histories: each of H histories is a fresh storage in DIR, filled by N saves of unchanged code
(``pytest perf --benchmark-autosave`` with the selection after ``--``), then M more with
tests/plugins/slowdown.py injecting PERF_SLOWDOWN (relu +50%, grad_w1 +10%) from save N+1 on. Every
benchmark's series then goes through ``perf.steps`` twice, with asv's fit (the suite's method) and with
ruptures' PELT (the alternative, kept here only): the same levels, intervals and threshold around each,
and, as ``python -m perf.history`` reports them, no step smaller than that threshold.
A step of an injected stage counts as found when it starts at save N+1 and is slower past the
threshold (which takes M >= perf.steps.MIN_SEGMENT); any step on another benchmark is reported as
such. Needs ``pip install ruptures``.

--constructed compares the two methods on constructed series instead, without pytest: no step, one
step of +50% or +10%, two steps, a slow ramp of 2% per run, one outlier run, two in a row, runs
without per-process data; run-to-run noise of 1% and 3%, steady or in bursts (a run's processes share
its noise scale, and noise only adds time).

The Markdown table goes to --out (default: printed); DIR keeps every save, its log and study.json.
"""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf comes from this checkout

import numpy as np  # noqa: E402

from perf import steps, trend  # noqa: E402
from perf.cases import base_stage  # noqa: E402
from perf.cli import Parser, UsageError, positive_int, run_main, split_dashdash  # noqa: E402
from perf.gate import parse_threshold  # noqa: E402
from perf.results import readable_runs, write_json  # noqa: E402

PROG = "python studies/history_study.py"
SLOWDOWN = "relu:50%,grad_w1:10%"
SELECTION = ["--perf-size", "seed,compute", "--perf-backend", "numpy,torch-cpu", "-k", "relu or grad_w1"]
THRESHOLD = parse_threshold("5%")  # python -m perf.history's default
# PELT's penalty per breakpoint, in units of the runs' noise variance: 3 ln(n), a little above the
# Schwarz criterion's 2 ln(n) (two parameters a breakpoint), which on constructed flat series of
# this suite's noise reported steps too often to be a fair rival.
PELT_PENALTY = 3.0


# --------------------------------------------------------------------------- the alternative: PELT


def pelt_segments(values: Sequence[float], spreads: Sequence[float]) -> list[int]:
    """ruptures' PELT (Killick, Fearnhead and Eckley, JASA 107(500), 2012) on the runs' logs, each weighed by
    the inverse of its spread squared (a weighted least-squares cost), the penalty PELT_PENALTY ln(n) times the
    noise variance measured from successive differences in units of the spreads."""
    import ruptures
    from ruptures.base import BaseCost

    class WeightedL2(BaseCost):
        """Sum over a segment of w (x - the weighted mean)^2, from cumulative sums."""

        model = "weighted_l2"
        min_size = steps.MIN_SEGMENT

        def __init__(self, weights: np.ndarray) -> None:
            self.weights = weights

        def fit(self, signal: np.ndarray):
            x = np.asarray(signal, float).ravel()
            self.signal = x.reshape(-1, 1)
            self.sums = [np.concatenate([[0.0], np.cumsum(a)]) for a in (self.weights, self.weights * x, self.weights * x * x)]
            return self

        def error(self, start: int, end: int) -> float:
            w, wx, wxx = (s[end] - s[start] for s in self.sums)
            return wxx - wx * wx / w

    x, own = np.log(np.asarray(values, float)), np.asarray(spreads, float)
    normalised = np.diff(x) / np.hypot(own[1:], own[:-1])
    noise = 1.4826 * np.median(np.abs(normalised - np.median(normalised))) / math.sqrt(2) if len(x) > 1 else 0.0
    penalty = PELT_PENALTY * math.log(max(len(x), 2)) * max(noise, 1e-12) ** 2
    algorithm = ruptures.Pelt(custom_cost=WeightedL2(own ** -2.0), min_size=steps.MIN_SEGMENT, jump=1)
    return list(algorithm.fit(x).predict(pen=penalty))


METHODS: dict[str, steps.Segmenter] = {"asv (perf.steps)": steps.asv_segments, "PELT (ruptures)": pelt_segments}


# --------------------------------------------------------------------------- real histories


def save_runs(storage: Path, logs: Path, count: int, first: int, selection: Sequence[str], slowdown: str) -> None:
    """``count`` saves of ``pytest perf`` into ``storage``, with the slowdown plugin when ``slowdown`` is set."""
    env = {**os.environ, "PERF_SLOWDOWN": slowdown} if slowdown else dict(os.environ)
    plugin = ["-p", "tests.plugins.slowdown"] if slowdown else []
    for i in range(first, first + count):
        cmd = [sys.executable, "-m", "pytest", "perf", "-q", "-p", "no:cacheprovider", *plugin, *selection,
               f"--benchmark-storage=file://{storage}", "--benchmark-autosave"]
        print(f"history_study: save {i}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        (logs / f"save-{i:03d}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            raise UsageError(f"save {i} exited {proc.returncode} (log: {logs / f'save-{i:03d}.log'}): {last[0]}")


def injected_share(series: trend.Series, shares: dict[str, float]) -> float | None:
    """The slowdown injected into the benchmark's stage (an out= form's too: it calls the same function) from
    save N+1 on; None for a stage left alone."""
    return shares.get(base_stage(series.latest.stage))


def judge_history(storage: Path, saves: int, shares: dict[str, float]) -> list[dict]:
    """Per benchmark and method: the steps found in this history's series."""
    skipped: list[str] = []
    runs = list(readable_runs(trend.storage_files(storage), skipped))
    if skipped:
        raise UsageError(f"a saved run of the study does not load: {skipped[0]}")
    rows = []
    for series in trend.series(runs):
        values, spreads = [p.value for p in series.points], [p.spread for p in series.points]
        for method, segment in METHODS.items():
            fit = steps.detect(values, spreads, segment, min_step=THRESHOLD)  # the steps perf.history reports
            rows.append({"benchmark": series.benchmark, "method": method, "share": injected_share(series, shares),
                         "runs": len(values), "first_injected": saves,
                         "steps": [{"index": s.index, "ratio": s.ratio, "low": s.low, "high": s.high} for s in fit.steps]})
    return rows


def measure(workdir: Path, saves: int, injected: int, histories: int, selection: Sequence[str]) -> dict:
    for h in range(1, histories + 1):
        storage, logs = workdir / f"history-{h}" / "storage", workdir / f"history-{h}" / "logs"
        logs.mkdir(parents=True)
        save_runs(storage, logs, saves, 1, selection, "")
        save_runs(storage, logs, injected, saves + 1, selection, SLOWDOWN)
    return judge(workdir, saves, injected, histories, selection)


def judge(workdir: Path, saves: int, injected: int, histories: int, selection: Sequence[str]) -> dict:
    """The histories saved in ``workdir`` judged (again), into its study.json."""
    shares = {stage: parse_threshold(share) for stage, share in (item.split(":") for item in SLOWDOWN.split(","))}
    rows = []
    for h in range(1, histories + 1):
        rows += [{**row, "history": h} for row in judge_history(workdir / f"history-{h}" / "storage", saves, shares)]
    study = {"saves": saves, "injected": injected, "histories": histories, "slowdown": SLOWDOWN,
             "selection": list(selection), "rows": rows}
    write_json(workdir / "study.json", study)
    return study


def _change(step: dict) -> str:
    return f"{(step['ratio'] - 1) * 100:+.1f}% [{(step['low'] - 1) * 100:+.1f}%, {(step['high'] - 1) * 100:+.1f}%]"


def _slower(step: dict) -> bool:
    return step["low"] > 1 + THRESHOLD


def render_histories(study: dict) -> list[str]:
    """Per method and benchmark: for an injected stage, the histories with its step found at save N+1 and
    their sizes; for every benchmark, the other steps reported and how many of them were slower past 5%."""
    n, m, h = study["saves"], study["injected"], study["histories"]
    lines = [f"### Step detection on {h} histories of {n} unchanged saves, then {m} with {study['slowdown']}", "",
             f"`pytest perf {shlex.join(study['selection'])}`, each save a fresh `--benchmark-autosave`; "
             f"found: a step starting at save {n + 1}, slower past {THRESHOLD:.0%}."
             + (f" With fewer than {steps.MIN_SEGMENT} injected saves no step can be found (perf.steps.MIN_SEGMENT)."
                if m < steps.MIN_SEGMENT else ""), "",
             "| Method | Benchmark | Injected | Found at save N+1 | Its size [interval], per history | Other steps "
             "(slower past 5%) |", "|:---|:---|---:|---:|:---|---:|"]
    keys = sorted({(r["method"], r["benchmark"]) for r in study["rows"]}, key=lambda k: (k[0], k[1]))
    for method, name in keys:
        rows = [r for r in study["rows"] if (r["method"], r["benchmark"]) == (method, name)]
        share = rows[0]["share"]
        at = [s for r in rows for s in r["steps"] if share is not None and s["index"] == r["first_injected"]]
        found = [s for s in at if _slower(s)]
        others = [s for r in rows for s in r["steps"] if share is None or s["index"] != r["first_injected"]]
        lines.append(f"| {method} | `{name.rsplit('::', 1)[-1]}` | {'-' if share is None else f'+{share:.0%}'} | "
                     f"{'-' if share is None else f'{len(found)}/{len(rows)}'} | "
                     f"{'; '.join(_change(s) for s in at) or '-'} | {len(others)} ({sum(map(_slower, others))}) |")
    return lines


# --------------------------------------------------------------------------- constructed series

# (levels over 20 runs, the first runs of the true steps (None: a ramp, judged by its drift), with per-process data)
CASES: dict[str, tuple[list[float], list[int] | None, bool]] = {
    "no step": ([1.0] * 20, [], True),
    "+50% at run 15": ([1.0] * 14 + [1.5] * 6, [14], True),
    "+10% at run 15": ([1.0] * 14 + [1.1] * 6, [14], True),
    "+20% at 9, +25% at 15": ([1.0] * 8 + [1.2] * 6 + [1.5] * 6, [8, 14], True),
    "ramp, +2% a run": ([1.02 ** i for i in range(20)], None, True),
    "one outlier run (+50%)": ([1.0] * 10 + [1.5] + [1.0] * 9, [], True),
    "two outlier runs in a row (+30%)": ([1.0] * 10 + [1.3] * 2 + [1.0] * 8, [], True),
    "+50% at 15, no per-process data": ([1.0] * 14 + [1.5] * 6, [14], False),
}
NOISES = (0.01, 0.03)
PROCESSES = 6


def constructed(levels: Sequence[float], noise: float, bursty: bool, per_process: bool,
                rng: np.random.Generator) -> tuple[list[float], list[float | None]]:
    """(values, spreads): each run the fastest of PROCESSES processes. Steady: run and process noise of
    ``noise``. Bursty: each run's noise scale drawn log-normally, the run's offset and its processes' noise
    only adding time."""
    values, spreads = [], []
    for level in levels:
        scale = math.exp(rng.normal(0, 0.5)) if bursty else 1.0
        offset = abs(rng.normal(0, noise * scale)) if bursty else rng.normal(0, noise)
        mins = [level * math.exp(offset + abs(rng.normal(0, noise * scale))) for _ in range(PROCESSES)]
        values.append(min(mins))
        spreads.append(steps.spread(mins) if per_process else None)
    return values, spreads


def simulate(trials: int) -> dict:
    """Per case, noise, noise model and method: true steps found slower past the threshold (within one run of
    where they start), and steps reported slower past it anywhere else; for the ramp, drifts past it."""
    table = []
    for name, (levels, true, per_process) in CASES.items():
        for noise in NOISES:
            for bursty in (False, True):
                tally = {method: {"found": 0, "false": 0, "drift": 0, "steps": 0} for method in METHODS}
                for trial in range(trials):
                    values, spreads = constructed(levels, noise, bursty, per_process, np.random.default_rng(trial))
                    for method, segment in METHODS.items():
                        fit = steps.detect(values, spreads, segment, min_step=THRESHOLD)
                        slower = [s for s in fit.steps if s.slower_than(THRESHOLD)]
                        starts = true or []
                        tally[method]["found"] += sum(any(abs(s.index - t) <= 1 for s in slower) for t in starts)
                        if true is not None:  # a ramp's steps are neither found nor false: its drift is judged
                            tally[method]["false"] += sum(all(abs(s.index - t) > 1 for t in starts) for s in slower)
                        tally[method]["drift"] += bool(fit.drift and fit.drift.slower_than(THRESHOLD))
                        tally[method]["steps"] += len(slower)
                table.append({"case": name, "noise": noise, "bursty": bursty, "true": true, "tally": tally})
    return {"trials": trials, "rows": table}


def render_constructed(study: dict) -> list[str]:
    methods = list(METHODS)
    lines = [f"### Step detection on constructed series ({study['trials']} per row, 20 runs, {PROCESSES} processes a run)",
             "", f"Found: true steps reported slower past {THRESHOLD:.0%} within one run of where they start; false: other "
             "steps reported slower past it; the ramp is judged by its drift (its steps slower past the threshold in "
             "parentheses).", "",
             "| Series | Run noise | Noise | " + " | ".join(f"{m}: found | {m}: false" for m in methods) + " |",
             "|:---|---:|:---|" + "---:|---:|" * len(methods)]
    for row in study["rows"]:
        cells = []
        for m in methods:
            t = row["tally"][m]
            if row["true"] is None:
                cells += [f"drift {t['drift']}/{study['trials']}", f"({t['steps']} steps)"]
            else:
                cells += [f"{t['found']}/{study['trials'] * len(row['true'])}" if row["true"] else "-", str(t["false"])]
        lines.append(f"| {row['case']} | {row['noise']:.0%} | {'bursts' if row['bursty'] else 'steady'} | "
                     + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------- the command


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, help="an empty or new folder for the histories (real histories)")
    p.add_argument("--saves", type=positive_int, default=10, metavar="N", help="saves of unchanged code (default 10)")
    p.add_argument("--injected", type=_count, default=5, metavar="M",
                   help="saves with the slowdown (default 5; 0: a history of unchanged code only)")
    p.add_argument("--histories", type=positive_int, default=3, metavar="H", help="histories (default 3)")
    p.add_argument("--rejudge", action="store_true",
                   help="measure nothing: judge the histories already saved in --workdir again (same --saves, --injected, "
                        "--histories and selection)")
    p.add_argument("--constructed", action="store_true", help="constructed series instead of real histories")
    p.add_argument("--trials", type=positive_int, default=50, metavar="T", help="series per row with --constructed")
    p.add_argument("--out", type=Path, metavar="PATH", help="write the Markdown table here (default: print it)")
    return p


def _study(argv: list[str]) -> int:
    own, tail = split_dashdash(argv)
    args = _parser().parse_args(own)
    if args.constructed:
        study = simulate(args.trials)
        lines: list[str] = render_constructed(study)
    else:
        if args.workdir is None:
            raise UsageError("give --workdir DIR (an empty or new folder), or --constructed")
        if args.rejudge:
            study = judge(args.workdir, args.saves, args.injected, args.histories, tail or SELECTION)
        elif args.workdir.exists() and any(args.workdir.iterdir()):
            raise UsageError(f"--workdir {args.workdir} is not empty: give an empty or new folder (nothing there is removed)")
        else:
            study = measure(args.workdir, args.saves, args.injected, args.histories, tail or SELECTION)
        lines = render_histories(study)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    if not text.isdecimal():
        raise ValueError(text)
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main(PROG, lambda: _study(argv))


if __name__ == "__main__":
    sys.exit(main())
