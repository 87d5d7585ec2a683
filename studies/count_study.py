"""The counted metric measured through the suite itself (issue 13), for docs/results/counts.md.

    python studies/count_study.py --workdir /tmp/cs [--reps 5] [--det-reps 3] [--out docs/results/counts.md]
    python studies/count_study.py --workdir /tmp/cs --render      # the report again, from the workdir

Run from a committed checkout: one of the working directories is a clone of HEAD. Every run is
``pytest perf --perf-metric instructions`` of the seed preset, numpy and torch-cpu, every stage,
out= form and step (the roofline probes measure rates of time and are not counted):

1. base: saved once, into a storage of the workdir; its wall time is the cost of counting the preset.
2. A/A: --reps fresh runs compared with that single baseline, from three places in turn: this
   checkout, another directory (pytest given this checkout's perf/ by path), a clone of HEAD at
   another path. Every benchmark's spread across the base and these runs, instructions and cycles.
3. Unrelated code changed: the same selection with tests/plugins/extra_work.py keeping some
   memory alive from import on (PERF_LAYOUT_PAD), as a change elsewhere in the code would.
4. Detection, --det-reps runs each, with that plugin: numpy's relu and torch-cpu's grad_y_pred at
   seed wrapped so that each does about 3% more work, and relu_backward swapped back to
   np.where / masked_fill. Every changed benchmark must be REGRESSED in every run.

Everything lands in --workdir (study.json and every run's JSON); the report goes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.results import load_run, load_verdicts  # noqa: E402

SELECT = ["--perf-metric", "instructions", "--perf-size", "seed", "--perf-backend", "numpy,torch-cpu",
          "-k", "not roofline", "-p", "no:cacheprovider", "-q"]
# The deterministic +3%: tests/plugins/extra_work.py's wrapper (~900 instructions with numpy's
# relu, ~570 with torch's grad_y_pred) and loop turns (~200 each), measured on the base counts:
# numpy relu at seed +3.6%, torch-cpu grad_y_pred +3.0%; the achieved share is reported.
EXTRA = {"numpy": ("relu:0", "relu"), "torch-cpu": ("grad_y_pred:1", "grad_y_pred")}
LAYOUT_PADS = (4096, 65536)  # bytes kept alive from import on: unrelated code, changed
CHANGED = {"extra": ("-relu-", "-grad_y_pred-"), "select": ("-relu_backward-",)}


def fail(message: str) -> None:
    """A usage or environment error: one message, exit status 2 (1 means a regression)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def sh(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[int, float, str]:
    print(f"count_study: (cd {cwd}; {shlex.join(cmd)})", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        fail(f"count_study: {shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.returncode, wall, proc.stdout


def pytest_run(work: Path, name: str, cwd: Path, perf_dir: str, extra: list[str], env: dict | None = None) -> dict:
    """One `pytest perf` counting run: exit status, wall time, the counts and the gate's rows."""
    counts, verdicts = work / f"{name}-run.json", work / f"{name}-verdicts.json"
    cmd = [sys.executable, "-m", "pytest", perf_dir, *SELECT, f"--benchmark-storage=file://{work / 'store'}",
           f"--benchmark-json={counts}", *extra]
    if "--benchmark-compare" in " ".join(extra):
        cmd.append(f"--perf-report-json={verdicts}")
    rc, wall, out = sh(cmd, cwd, env)
    run = load_run(counts)
    record = {"name": name, "cwd": str(cwd), "rc": rc, "wall_s": wall, "env": env or {},
              "counts": {n: {"instructions": r.info["instructions"], "cycles": r.info["cycles"]}
                         for n, r in run.results.items()},
              "rows": [dict(c) for c in load_verdicts(verdicts).rows] if verdicts.exists() else [],
              "log": [ln for ln in out.splitlines() if "counted" in ln or "counting" in ln]}
    (work / f"{name}.json").write_text(json.dumps(record, indent=1))
    return record


def measure(work: Path, reps: int, det_reps: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    elsewhere = work / "another-directory"
    clone = work / "a-clone-of-head-at-a-longer-path"
    elsewhere.mkdir(exist_ok=True)
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    places = [(ROOT, "perf"), (elsewhere, str(ROOT / "perf")), (clone, "perf")]
    compare = ["--benchmark-compare=0001"]
    runs = [pytest_run(work, "base", ROOT, "perf", ["--benchmark-save=base"])]
    for i in range(reps):
        cwd, perf_dir = places[i % len(places)]
        runs.append(pytest_run(work, f"aa-{i + 1}", cwd, perf_dir, compare))
    plugin = ["-p", "tests.plugins.extra_work"]
    for pad in LAYOUT_PADS:
        runs.append(pytest_run(work, f"layout-{pad}", ROOT, "perf", [*compare, *plugin], {"PERF_LAYOUT_PAD": str(pad)}))
    for i in range(det_reps):
        for backend, (spec, stage) in EXTRA.items():
            only = ["--perf-backend", backend, "-k", f"{stage} and not backward"]
            runs.append(pytest_run(work, f"extra-{backend}-{i + 1}", ROOT, "perf", [*compare, *plugin, *only],
                                   {"PERF_EXTRA_WORK": spec}))
        runs.append(pytest_run(work, f"select-{i + 1}", ROOT, "perf", [*compare, *plugin, "-k", "relu_backward"],
                               {"PERF_RELU_BACKWARD": "select"}))
    study = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
             "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                      text=True).stdout.strip(),
             "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
             "cpus": os.cpu_count(), "runs": runs}
    (work / "study.json").write_text(json.dumps(study, indent=1))
    return study


def spread(values: list[float]) -> float:
    """(max - min) / median across processes."""
    return (max(values) - min(values)) / statistics.median(values)


def changed(name: str, kind: str) -> bool:
    return any(tag in name for tag in CHANGED[kind])


def render(study: dict) -> list[str]:
    runs = study["runs"]
    base = runs[0]
    aa = [r for r in runs if r["name"].startswith("aa-")]
    clean = [base, *aa]
    names = list(base["counts"])
    out = [f"Measured {study['date']} on {study['host']} ({study['cpus']} vCPUs, shared), commit {study['commit']}, "
           f"{study['valgrind']}, threads 1, by `python studies/count_study.py --workdir DIR` "
           f"(every run: `pytest perf {shlex.join(SELECT)}`).", ""]
    out += ["### Cost", "",
            f"Counting the seed preset, numpy and torch-cpu ({len(names)} benchmarks: every stage, out= form and step), "
            "one process each (the default for counts), wall time of the whole `pytest perf` run:", "",
            "| run | wall | what the zygotes said |", "|---|---:|---|"]
    for r in clean:
        out.append(f"| {r['name']} ({Path(r['cwd']).name}) | {r['wall_s']:.0f} s | {'; '.join(r['log'])} |")
    out += ["", "### Repeatability", "",
            f"The base run and {len(aa)} fresh runs compared with it: from this checkout, from another directory "
            "(pytest given this checkout's `perf/`), and from a clone of HEAD at another path, in turn.", "",
            "| run | where | exit | flagged |", "|---|---|---:|---|"]
    for r in aa:
        flagged = [c["name"] for c in r["rows"] if c["verdict"] in ("regressed", "improved", "inconclusive")]
        out.append(f"| {r['name']} | {Path(r['cwd']).name} | {r['rc']} | {', '.join(flagged) or 'none'} |")
    out += ["", f"Per benchmark, across these {len(clean)} processes: the median count per call and the spread "
            "(max - min) / median.", "", "| benchmark | instructions | spread | cycles (estimate) | spread |",
            "|---|---:|---:|---:|---:|"]
    worst = {"instructions": 0.0, "cycles": 0.0}
    for n in names:
        cells = []
        for metric in ("instructions", "cycles"):
            values = [r["counts"][n][metric] for r in clean if n in r["counts"]]
            worst[metric] = max(worst[metric], spread(values))
            cells.append(f"{statistics.median(values):,.0f} | {spread(values):.3%}")
        out.append(f"| {n.split('::')[-1]} | {' | '.join(cells)} |")
    out += ["", f"Largest spread: instructions {worst['instructions']:.3%}, cycles {worst['cycles']:.3%}.", ""]
    layout = [r for r in runs if r["name"].startswith("layout-")]
    if layout:
        out += ["### Unrelated code changed", "",
                "The same selection with tests/plugins/extra_work.py keeping `PERF_LAYOUT_PAD` bytes alive from import "
                "on (no stage changed: what a change to other code does to where everything lies in memory), "
                "compared with the base run:", "",
                "| run | exit | not unchanged | largest change (instructions) | largest change (cycles) |",
                "|---|---:|---|---|---|"]
        for r in layout:
            flagged = [f"{c['name'].split('::')[-1]} {c['verdict']}" for c in r["rows"] if c["verdict"] != "unchanged"]
            cells = []
            for metric in ("instructions", "cycles"):
                change, n = max((abs(v[metric] / base["counts"][n][metric] - 1), n) for n, v in r["counts"].items())
                cells.append(f"{change:.2%} ({n.split('::')[-1]})")
            out.append(f"| {r['name']} | {r['rc']} | {', '.join(flagged) or 'none'} | {' | '.join(cells)} |")
        out.append("")
    out += ["### Detection", "", "Every run compared with the one saved baseline; the changed benchmarks' change of "
            "the count against the baseline and the gate's verdict.", "",
            "| run | change | benchmark | instructions | cycles | verdict |", "|---|---|---|---:|---:|---|"]
    missed = 0
    for r in runs:
        kind = "extra" if r["name"].startswith("extra-") else "select" if r["name"].startswith("select-") else ""
        if not kind:
            continue
        what = (f"wrapper, {r['env']['PERF_EXTRA_WORK']}" if kind == "extra"
                else "relu_backward: np.where / masked_fill")
        rows = {c["name"]: c for c in r["rows"]}
        for n, counts in r["counts"].items():
            if not changed(n, kind) or n not in base["counts"]:
                continue
            verdict = rows.get(n, {}).get("verdict", "-")
            missed += verdict != "regressed"
            ir, cyc = (counts[m] / base["counts"][n][m] - 1 for m in ("instructions", "cycles"))
            out.append(f"| {r['name']} (exit {r['rc']}) | {what} | {n.split('::')[-1]} | {ir:+.2%} | {cyc:+.2%} | "
                       f"{verdict} |")
    others = [c for r in runs if r["name"].startswith(("extra-", "select-")) for c in r["rows"]
              if c["verdict"] == "regressed"
              and not changed(c["name"], "extra" if r["name"].startswith("extra-") else "select")]
    out += ["", f"Changed benchmarks not flagged: {missed}. Other benchmarks flagged in these runs "
            f"(the steps and out= forms that call a changed stage count it too): "
            f"{', '.join(sorted({c['name'].split('::')[-1] for c in others})) or 'none'}.", ""]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--det-reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the report here (default: print it)")
    parser.add_argument("--render", action="store_true", help="only render the report from --workdir/study.json")
    args = parser.parse_args()
    if args.render:
        study = json.loads((args.workdir / "study.json").read_text())
    else:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            fail(f"count_study: --workdir {args.workdir} is not empty: give an empty or new folder "
                             "(nothing there is removed), or --render to render what it holds")
        study = measure(args.workdir, args.reps, args.det_reps)
    text = "\n".join(render(study)) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
