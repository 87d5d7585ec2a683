"""Measure the gate itself on this machine: false alarms on unchanged code, detection of known slowdowns.

    python -m perf.calibrate [--reps 5] [--rounds 16] [--recheck-rounds N] [--statistic min|median] [--sequential]
                             [--skip-saved] [--skip-ab] [--out docs/results/gate.md] [--workdir DIR] [--render]

Run from a clean checkout (A/B mode measures the committed HEAD against itself). Four
experiments, each repeated --reps times:
- A/A, A/B mode: python -m perf.ab, HEAD against HEAD, the seed preset for numpy and torch-cpu.
- A/A, saved-baseline mode: 3 saved runs, then pytest perf --benchmark-compare against them.
- Detection, both modes: the same with a slowdown injected into the head / current side by the
  test-only plugin tests/plugins/slowdown.py (relu +25% at seed, grad_w1 +10% at compute).
Beside each, what a plain --benchmark-compare-fail=median:10% makes of the same data, and how
much each per-process statistic moves from round to round. Everything lands in --workdir
(summary.json and every process's JSON); --render writes the report again from there.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import command, machine
from .cli import Parser, UsageError, run_main
from .gate import TRIM, winsorize
from .results import ResultsError, load_run, load_verdicts, read_json, write_json
from .rounds import read_round
from .statistic import DEFAULT as DEFAULT_STATISTIC
from .statistic import STATISTICS

BACKENDS = ["--perf-backend", "numpy,torch-cpu"]
# The selections of the first calibration (stages and steps): the out= forms and the workspace step, benchmarked
# since, are left out so that the figures stay comparable.
NEWER = "not stage_out and not workspace_step and not graph_step"
AA = ["--perf-size", "seed", *BACKENDS, "-k", f"not roofline and {NEWER}"]
DETECT = ["--perf-size", "seed,compute", *BACKENDS, "-k", f"(seed-relu- or seed-loss- or compute-grad_w1-) and {NEWER}"]
SAVED = ["--perf-size", "seed,compute", *BACKENDS, "-k", f"not roofline and (seed- or compute-grad_w1-) and {NEWER}"]
INJECT = {"PERF_SLOWDOWN": "relu:25%,grad_w1:10%"}
INJECTED = ("seed-relu-", "compute-grad_w1-")
# Saved-baseline mode: baselines of 1 and of 3 saved runs; slowdowns injected into the compared run.
SAVED_RUNS = (1, 3)
SAVED_INJECT = {"det50": "relu:50%,grad_w1:10%", "det25": "relu:25%"}
SAVED_DETECTIONS = (("det50", "seed-relu-", "relu +50% at seed"), ("det50", "compute-grad_w1-", "grad_w1 +10% at compute"),
                    ("det25", "seed-relu-", "relu +25% at seed"))  # (experiment, benchmarks, what was injected)
PLUGIN = "-p tests.plugins.slowdown"
NAIVE = 0.10  # --benchmark-compare-fail=median:10%


def sh(cmd: list[str], env: dict | None = None) -> tuple[int, float]:
    print(f"calibrate: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode not in (0, 1):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"{shlex.join(cmd)} exited {proc.returncode}: {last}")
    return proc.returncode, time.perf_counter() - start


def comparisons(path: Path) -> list[dict]:
    """The gate's rows of a verdict report, NEW and MISSING left out."""
    return [dict(c) for c in load_verdicts(path).rows if c["verdict"] not in ("new", "missing")]


def ab(work: Path, name: str, opts: argparse.Namespace, select: list[str], inject: bool) -> tuple[list, list, dict]:
    """(gate rows, naive rows, run facts) of one A/B run; naive = the medians of round 1 alone
    against median:10%; facts: wall seconds and the recheck perf.ab reported."""
    out = work / f"{name}.json"
    cmd = [sys.executable, "-m", "perf.ab", "--base", "HEAD", "--head", "HEAD", "--rounds", str(opts.rounds),
           "--json", str(out), "--workdir", str(work / name), "--mode", "sequential" if opts.sequential else "duet",
           "--statistic", opts.statistic]
    if opts.recheck_rounds is not None:
        cmd += ["--recheck-rounds", str(opts.recheck_rounds)]
    if inject:
        cmd.append(f"--head-pytest-args={PLUGIN}")
    _, wall = sh([*cmd, "--", *select], INJECT if inject else None)
    report = load_verdicts(out)
    base, head = (read_round(work / name / f"round-01-{side}.json", "median") for side in ("base", "head"))
    naive = [{"name": n, "ratio": head[n] / base[n]} for n in base if n in head]
    return comparisons(out), naive, {"wall": wall, "recheck": "recheck rounds" in report.extra}


def saved(work: Path, name: str, storage: Path, select: list[str], slowdown: str = "") -> tuple[list, list, dict]:
    """(gate rows, naive rows, run facts) of one `pytest perf --benchmark-compare` against `storage`; naive =
    the two runs' stats medians, as --benchmark-compare-fail=median:10% would compare them."""
    out, current = work / f"{name}.json", work / f"{name}-run.json"
    cmd = command.pytest_perf(["--benchmark-compare", f"--perf-report-json={out}", *select], json=current, storage=storage)
    _, wall = sh([*cmd, *(PLUGIN.split() if slowdown else [])], {"PERF_SLOWDOWN": slowdown} if slowdown else None)
    rows = comparisons(out)
    baseline = load_run(load_verdicts(out).meta["baseline"])
    now = load_run(current)
    naive = [{"name": r["name"], "ratio": now.results[r["name"]].median / baseline.results[r["name"]].median} for r in rows]
    return rows, naive, {"wall": wall}


def share(rows: list[dict], pick=lambda name: True) -> tuple[int, int]:
    mine = [r for r in rows if pick(r["name"])]
    return sum(r["verdict"] == "regressed" for r in mine), len(mine)


def naive_share(rows: list[dict], pick=lambda name: True) -> tuple[int, int]:
    mine = [r for r in rows if pick(r["name"])]
    return sum(r["ratio"] > 1 + NAIVE for r in mine), len(mine)


def injected(name: str) -> bool:
    return any(tag in name for tag in INJECTED)


def pct(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.1%})" if n else "-"


def by_backend(rows: list[dict], tag: str) -> str:
    """'numpy k/n, torch-cpu k/n': flagged per backend among the rows whose name holds `tag`."""
    cells = []
    for backend in ("numpy", "torch-cpu"):
        k, n = share(rows, lambda name, b=backend: tag in name and name.endswith(f"-{b}]"))
        cells.append(f"{backend} {k}/{n}")
    return ", ".join(cells)


def minutes(facts: list[dict]) -> str:
    walls = [f["wall"] / 60 for f in facts] or [float("nan")]
    return f"{min(walls):.1f} to {max(walls):.1f} min"


def rechecks(facts: list[dict]) -> str:
    # Summaries written before the structured flag hold perf.ab's meta text ("N more rounds ...").
    done = [f for f in facts if f["recheck"] is True or (isinstance(f["recheck"], str) and f["recheck"][:1].isdigit())]
    return f"{len(done)} of {len(facts)} runs"


def winsorized_sd(values: list[float], trim: float = TRIM) -> float:
    """The sd after pulling the trim share at each end in to the nearest kept value: the scale
    the A/B's trimmed test works with (the same gate.winsorize)."""
    return statistics.stdev(winsorize(values, trim)[1].tolist())


def spreads(work: Path, prefix: str) -> dict[str, dict[str, float]]:
    """{benchmark id: {"STATISTIC" or "STATISTIC/w": median over runs of the sd, or the
    winsorized sd, of its round log ratios}}, from the first rounds of the A/B runs
    work/PREFIX-*/ (the recheck's are left out): how much each per-process statistic moves
    from round to round."""
    per_run: dict[str, dict[str, list[float]]] = {}
    for run in sorted(work.glob(f"{prefix}-*/")):
        count = len(list(run.glob("round-*-base.json")))
        for statistic in STATISTICS:
            rounds = {side: [read_round(run / f"round-{r:02d}-{side}.json", statistic) for r in range(1, count + 1)]
                      for side in ("base", "head")}
            for name in rounds["base"][0]:
                logs = [math.log(h[name] / b[name]) for b, h in zip(rounds["base"], rounds["head"]) if name in b and name in h]
                if len(logs) > 2:
                    row = per_run.setdefault(name.partition("[")[2].rstrip("]"), {})
                    row.setdefault(statistic, []).append(statistics.stdev(logs))
                    row.setdefault(f"{statistic}/w", []).append(winsorized_sd(logs))
    return {name: {k: statistics.median(v) for k, v in by.items()} for name, by in per_run.items()}


def spread_table(work: Path) -> list[str]:
    rows = {**spreads(work, "ab-aa"), **{k: v for k, v in spreads(work, "ab-det").items() if k.startswith("compute-")}}
    if not rows:
        return []
    lines = ["## Round-to-round spread by per-process statistic", "",
             "Spread of the log ratios head/base over the first rounds of each A/B run (median over the runs; "
             "detection runs for the compute-size rows, A/A runs for the rest): the standard deviation, and the "
             f"{TRIM:.0%}-winsorized one that the A/B's trimmed test works with (a round whose whole process ran slow "
             "counts in the first, hardly in the second). Smaller is a narrower interval for the same rounds.", "",
             "| benchmark | minimum: sd | minimum: winsorized | median: sd | median: winsorized | median / minimum |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, by in rows.items():
        cells = [f"{by[k]:.3f}" if k in by else "-" for k in ("min", "min/w", "median", "median/w")]
        lo, mid = by.get("min/w"), by.get("median/w")
        ratio = f"{mid / lo:.2f}" if lo and mid else "-"
        lines.append(f"| {name} | {' | '.join(cells)} | {ratio} |")
    return [*lines, ""]


def measure(args: argparse.Namespace, work: Path) -> dict[str, list]:
    """Run every experiment; the rows and run facts that the report is made of."""
    res: dict[str, list] = {k: [] for k in ("ab_aa", "ab_aa_naive", "ab_det", "ab_det_naive", "aa_runs", "det_runs")}
    for rep in range(0 if args.skip_ab else args.reps):
        rows, naive, facts = ab(work, f"ab-aa-{rep}", args, AA, inject=False)
        res["ab_aa"] += rows
        res["ab_aa_naive"] += naive
        res["aa_runs"].append(facts)
        rows, naive, facts = ab(work, f"ab-det-{rep}", args, DETECT, inject=True)
        res["ab_det"] += rows
        res["ab_det_naive"] += naive
        res["det_runs"].append(facts)
    for runs in () if args.skip_saved else SAVED_RUNS:
        storage = work / f"saved-{runs}"
        for _ in range(runs):
            sh(command.pytest_perf(["--benchmark-autosave", *SAVED], storage=storage))
        for rep in range(args.reps):
            rows, naive, facts = saved(work, f"sb{runs}-aa-{rep}", storage, SAVED)
            res.setdefault(f"sb{runs}_aa", []).extend(rows)
            res.setdefault(f"sb{runs}_aa_naive", []).extend(naive)
            res.setdefault("sb_runs", []).append(facts)
        if runs != SAVED_RUNS[0]:
            continue
        for key, slowdown in SAVED_INJECT.items():  # detection against the single saved run: the headline workflow
            for rep in range(args.reps):
                rows, naive, _ = saved(work, f"sb-{key}-{rep}", storage, DETECT, slowdown)
                res.setdefault(f"sb_{key}", []).extend(rows)
                res.setdefault(f"sb_{key}_naive", []).extend(naive)
    return res


def render(res: dict[str, list], meta: dict, work: Path) -> list[str]:
    """The Markdown report (lines) from measure()'s results and the run's `meta`."""
    design = (f"A/B with {meta['rounds']} rounds, {'sequential' if meta['sequential'] else 'duet'}, per-process "
              f"{meta['statistic']}, recheck {meta['recheck_rounds']} rounds")
    lines = [
        "# The gate, measured",
        "",
        f"Machine: {meta['machine']}. Started {meta['started']} UTC, took {meta['minutes']:.0f} min.",
        f"Command: `{meta['command']}` ({meta['reps']} repetitions; {design}; default threshold and alpha).",
        "",
        "Flagged = verdict REGRESSED (what fails the gate). Plain = `--benchmark-compare-fail=median:10%` on the same "
        "data: in saved-baseline mode the same two runs' medians; in A/B mode the first base and head processes alone.",
        "",
        "## False alarms: unchanged code against itself (target: at most 1%)",
        "",
        "| mode | selection | gate: flagged | plain median:10%: flagged |",
        "|---|---|---:|---:|",
        f"| A/B | `{shlex.join(AA)}` | {pct(*share(res['ab_aa']))} | {pct(*naive_share(res['ab_aa_naive']))} |",
        *(f"| saved baseline, {k} saved run{'s' if k > 1 else ''} | `{shlex.join(SAVED)}` | "
          f"{pct(*share(res.get(f'sb{k}_aa', [])))} | {pct(*naive_share(res.get(f'sb{k}_aa_naive', [])))} |"
          for k in SAVED_RUNS if res.get(f"sb{k}_aa")),
        f"| A/B, the detection runs' unaffected benchmarks | `{shlex.join(DETECT)}` "
        f"| {pct(*share(res['ab_det'], lambda n: not injected(n)))} "
        f"| {pct(*naive_share(res['ab_det_naive'], lambda n: not injected(n)))} |",
        "",
        f"## Detection: slowdowns injected by tests/plugins/slowdown.py (`PERF_SLOWDOWN={INJECT['PERF_SLOWDOWN']}`; "
        "target: at least 90% in A/B mode)",
        "",
        "| injected | mode | gate: flagged | per backend | plain median:10%: flagged |",
        "|---|---|---:|---|---:|",
    ]
    for tag, what in (("seed-relu-", "relu +25% at seed (microseconds)"), ("compute-grad_w1-", "grad_w1 +10% at compute")):
        for mode, key in (("A/B", "ab_det"), ("saved baseline", "sb_det")):
            if not res.get(key):
                continue
            pick = lambda n, t=tag: t in n  # noqa: E731
            gate_cell, plain_cell = pct(*share(res[key], pick)), pct(*naive_share(res[key + "_naive"], pick))
            lines.append(f"| {what} | {mode} | {gate_cell} | {by_backend(res[key], tag)} | {plain_cell} |")
    saved_rows = [row for row in SAVED_DETECTIONS if res.get(f"sb_{row[0]}")]
    if saved_rows:
        lines += ["", f"Saved-baseline mode, against {SAVED_RUNS[0]} saved run (`--benchmark-autosave` once, then "
                      f"`--benchmark-compare` with `PERF_SLOWDOWN` set; selection `{shlex.join(DETECT)}`; "
                      "targets: relu +50% at least 90%, relu +25% and grad_w1 +10% at least half):", "",
                  "| injected | gate: flagged | per backend | plain median:10%: flagged |", "|---|---:|---|---:|"]
        for key, tag, what in saved_rows:
            pick = lambda n, t=tag: t in n  # noqa: E731
            rows, naive = res[f"sb_{key}"], res[f"sb_{key}_naive"]
            flagged, plain = pct(*share(rows, pick)), pct(*naive_share(naive, pick))
            lines.append(f"| {what} | {flagged} | {by_backend(rows, tag)} | {plain} |")
    lines += ["", "## Cost", ""]
    if res["aa_runs"]:
        lines += [f"A/B over `{shlex.join(AA)}` ({design}): {minutes(res['aa_runs'])} per run, recheck included "
                  f"(needed in {rechecks(res['aa_runs'])}); target: within 10 minutes on 2 cores.",
                  f"Detection runs (`{shlex.join(DETECT)}`): {minutes(res['det_runs'])} per run "
                  f"(recheck needed in {rechecks(res['det_runs'])})."]
    if res.get("sb_runs"):
        lines.append(f"Saved-baseline comparisons (`{shlex.join(SAVED)}`): {minutes(res['sb_runs'])} per run.")
    lines.append("")
    return lines + spread_table(work)


def main(argv: list[str] | None = None) -> int:
    return run_main("perf.calibrate", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = Parser(prog="python -m perf.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each experiment (default 5)")
    parser.add_argument("--rounds", type=int, default=16, help="A/B rounds (default 16, as python -m perf.ab)")
    parser.add_argument("--recheck-rounds", type=int, help="A/B recheck rounds (default: perf.ab's, 2 x --rounds)")
    parser.add_argument("--statistic", choices=list(STATISTICS), default=DEFAULT_STATISTIC,
                        help="A/B per-process statistic (default: perf.ab's)")
    parser.add_argument("--sequential", action="store_true", help="A/B in sequential mode (default: duet)")
    parser.add_argument("--skip-saved", action="store_true", help="measure the A/B mode only")
    parser.add_argument("--skip-ab", action="store_true", help="measure the saved-baseline mode only")
    parser.add_argument("--out", default="docs/results/gate.md", help="where to write the results (Markdown)")
    parser.add_argument("--workdir", help="keep every JSON here (default: a temporary directory)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: write the report again from --workdir's summary.json and run files")
    args = parser.parse_args(argv)
    if args.render:
        if not args.workdir:
            parser.error("--render needs --workdir (a calibration's working directory)")
        work = Path(args.workdir)
        try:
            doc = read_json(work / "summary.json", "a calibration summary")
            res, meta = doc["results"], doc["meta"]
        except (ResultsError, KeyError, TypeError) as e:
            raise UsageError(f"--render: no calibration summary in {work}/summary.json ({e})") from None
    else:
        machine.pin_threads(1)  # as the measured runs do, so the fingerprint below is theirs
        work = Path(args.workdir or tempfile.mkdtemp(prefix="perf-calibrate-"))
        work.mkdir(parents=True, exist_ok=True)
        started = datetime.now(timezone.utc)
        res = measure(args, work)
        fp = machine.fingerprint()
        meta = {
            "machine": f"{fp['cpu']}, {fp['cpus']} vCPUs (shared), threads {fp['threads']}, torch {fp['torch']}, "
                       f"numpy {fp['numpy']}",
            "started": f"{started:%Y-%m-%d %H:%M}",
            "minutes": (datetime.now(timezone.utc) - started).total_seconds() / 60,
            "command": f"python -m perf.calibrate {shlex.join(argv if argv is not None else sys.argv[1:])}",
            "reps": args.reps, "rounds": args.rounds, "sequential": args.sequential, "statistic": args.statistic,
            "recheck_rounds": args.recheck_rounds if args.recheck_rounds is not None else 2 * args.rounds,
        }
        write_json(work / "summary.json", {"meta": meta, "results": res}, indent=1)
    lines = render(res, meta, work)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"calibrate: raw results in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
