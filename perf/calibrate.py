"""Measure the saved-baseline gate on this machine, as users run it: false alarms on unchanged code,
detection of injected slowdowns and of a real change committed after the baseline, and what it costs.

    python -m perf.calibrate [--reps 10] [--workdir DIR] [--out docs/results/gate.md] [--real-copies 2]
                             [--render | --resume] [-- PYTEST ARGS...]

The default selection (``pytest perf`` with no selection: every available backend, sizes seed and
compute, the roofline probes, every stage, out= form and step), in a clone of this repository's
HEAD (so that the baseline's commit is real and the working tree is never touched):

1. one saved run, ``pytest perf --benchmark-save=base``;
2. a commit after it that changes numpy's relu_backward for real (``--real-copies`` extra copies of
   its mask a call);
3. then ``--reps`` rounds, each of three compare runs against that saved run
   (``pytest perf --benchmark-compare=0001``), in this order: unchanged code (A/A); slowdowns
   injected by the test-only plugin tests/plugins/slowdown.py (``INJECTED``); the real change.

Every run's verdicts (``--perf-report-json``), its wall time and how its suspects were confirmed
land in --workdir (summary.json), after each round; --render writes the report again from there, and
--resume goes on with the rounds a stopped calibration had left (same clone, same saved baseline).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import command, machine, paths
from .cli import Parser, git, run_main
from .errors import ResultsError, UsageError
from .results import load_verdicts, read_json, write_json

PLUGIN = ["-p", "tests.plugins.slowdown"]
INJECTED = "relu:50%,relu_backward:25%,grad_w1:10%"
# What each experiment should flag: (label, target benchmarks by id fragment).
TARGETS = {
    "inject": (("relu +50% at seed", ("[seed-relu-numpy]", "[seed-relu-torch-cpu]")),
               ("relu_backward +25% at compute", ("[compute-relu_backward-numpy]", "[compute-relu_backward-torch-cpu]")),
               ("grad_w1 +10% at compute", ("[compute-grad_w1-numpy]", "[compute-grad_w1-torch-cpu]"))),
    "real": (("relu_backward's mask copied again (a commit), numpy at compute", ("[compute-relu_backward-numpy]",)),),
}
REAL_CHANGE = ("    np.logical_not(keep, out=keep)\n",
               "    np.logical_not(keep, out=keep)\n{copies}")
COPY = "    keep = keep.copy()  # perf.calibrate's real change: the mask copied once more\n"


def sh(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[int, float]:
    """Run ``cmd``; (exit status, wall seconds). UsageError unless it exits 0 (pass) or 1 (a regression)."""
    print(f"calibrate: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**machine.child_env(), **(env or {})}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode not in (0, 1):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"{shlex.join(cmd)} exited {proc.returncode}: {last}")
    return proc.returncode, time.perf_counter() - start


def prepare(repo: Path, work: Path, copies: int, pytest_args: list[str]) -> dict:
    """The clone, its saved baseline and the commit with the real change; their commit ids."""
    clone = work / "repo"
    git(work, "clone", "--quiet", "--no-hardlinks", str(repo), str(clone))
    base = git(clone, "rev-parse", "HEAD")
    source = clone / "kernels" / "numpy_.py"
    text = source.read_text()
    old, new = REAL_CHANGE
    if old not in text:
        raise UsageError(f"{source}: relu_backward no longer has the line the real change follows ({old.strip()!r})")
    source.write_text(text.replace(old, new.format(copies=COPY * copies), 1))
    git(clone, "-c", "user.name=perf.calibrate", "-c", "user.email=calibrate@localhost", "commit", "--quiet", "-am",
        f"relu_backward: its mask copied {copies} more time(s) (perf.calibrate's real change)")
    real = git(clone, "rev-parse", "HEAD")
    git(clone, "checkout", "--quiet", base)
    sh(command.pytest_perf(["--benchmark-save=base", *pytest_args], storage=work / "storage"), clone)
    return {"base": base, "real": real}


def compare(work: Path, name: str, commit: str, pytest_args: list[str], inject: bool) -> dict:
    """One compare run against the saved baseline; its verdict rows, exit status, wall time and confirmation."""
    clone = work / "repo"
    git(clone, "checkout", "--quiet", commit)
    report = work / f"{name}.json"
    args = ["--benchmark-compare=0001", f"--perf-report-json={report}", *(PLUGIN if inject else []), *pytest_args]
    rc, wall = sh(command.pytest_perf(args, storage=work / "storage"), clone,
                  {"PERF_SLOWDOWN": INJECTED} if inject else None)
    verdicts = load_verdicts(report)
    rows = [{k: r.get(k) for k in ("name", "verdict", "ratio", "ci_low", "ci_high", "evidence")} for r in verdicts.rows]
    return {"name": name, "rc": rc, "wall": wall, "confirmation": verdicts.meta.get("confirmation", ""),
            "confirmed": sum(1 for r in rows if str(r.get("evidence", "")).startswith("A/B")), "rows": rows,
            "at": f"{datetime.now(timezone.utc):%H:%M}"}


def measure(repo: Path, work: Path, reps: int, copies: int, pytest_args: list[str], meta: dict,
            done: dict | None = None) -> dict:
    """``reps`` rounds, in summary.json after each with ``meta``; ``done`` (a stopped calibration's summary)
    keeps its clone, baseline and finished rounds."""
    commits = done["commits"] if done else prepare(repo, work, copies, pytest_args)
    runs: list[dict] = list(done["runs"]) if done else []
    del runs[len(runs) // 3 * 3:]  # a round is redone whole
    for rep in range(len(runs) // 3, reps):
        runs.append({"kind": "aa", **compare(work, f"aa-{rep}", commits["base"], pytest_args, inject=False)})
        runs.append({"kind": "inject", **compare(work, f"inject-{rep}", commits["base"], pytest_args, inject=True)})
        runs.append({"kind": "real", **compare(work, f"real-{rep}", commits["real"], pytest_args, inject=False)})
        meta = {**meta, "commit": commits["base"][:10]}
        write_json(work / "summary.json", {"commits": commits, "runs": runs, "meta": meta}, indent=1)  # done so far
    return {"commits": commits, "runs": runs, "meta": meta}


# --------------------------------------------------------------------------- the report


def _flagged(run: dict, fragment: str) -> tuple[bool, float | None]:
    row = next((r for r in run["rows"] if r["name"].endswith(fragment) and "test_stage[" in r["name"]), None)
    return (row is not None and row["verdict"] == "regressed"), (row or {}).get("ratio")


def _minutes(runs: list[dict]) -> str:
    walls = [r["wall"] / 60 for r in runs] or [float("nan")]
    return f"{min(walls):.1f} to {max(walls):.1f} min (median {sorted(walls)[len(walls) // 2]:.1f})"


def render(res: dict, meta: dict) -> list[str]:
    """The Markdown report, from measure()'s results and the run's ``meta``."""
    runs = res["runs"]
    aa = [r for r in runs if r["kind"] == "aa"]
    lines = [
        "## Saved-baseline gate on the default selection", "",
        f"Machine: {meta['machine']}. Started {meta['started']} UTC; "
        f"{sum(r['wall'] for r in runs) / 60:.0f} min of compare runs. "
        f"Commit {meta['commit']}.",
        f"Command: `{meta['command']}`: one saved run of the default `pytest perf` (every backend, seed and compute, "
        f"probes included), then {len(aa)} rounds of three `pytest perf --benchmark-compare=0001` runs: "
        "unchanged code, slowdowns injected by `tests/plugins/slowdown.py` "
        f"(`PERF_SLOWDOWN={INJECTED}`), and a real change committed after the baseline "
        f"({meta['copies']} more copy(ies) of numpy relu_backward's mask). Default threshold (5%) and confirmation "
        "(`--perf-confirm ab`).", "",
        "### False alarms: unchanged code (target: no run fails, no benchmark REGRESSED)", "",
        "| runs | failed (exit 1) | benchmarks REGRESSED | compared | confirmed by an A/B | times (UTC) |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {len(aa)} | {sum(r['rc'] == 1 for r in aa)} | "
        f"{sum(row['verdict'] == 'regressed' for r in aa for row in r['rows'])} | "
        f"{sum(row['verdict'] not in ('new', 'missing') for r in aa for row in r['rows'])} | "
        f"{sum(r['confirmed'] for r in aa)} | {', '.join(r['at'] for r in aa)} |", "",
        "### Detection (target: at least 9 runs of 10 each)", "",
        "| change | benchmark | runs flagged | its change in each run |", "|---|---|---:|---|",
    ]
    for kind, targets in TARGETS.items():
        mine = [r for r in runs if r["kind"] == kind]
        for label, fragments in targets:
            for fragment in fragments:
                found = [_flagged(r, fragment) for r in mine]
                ratios = ", ".join(f"{(ratio - 1) * 100:+.0f}%" if ratio else "-" for _, ratio in found)
                lines.append(f"| {label} | `{fragment.strip('[]')}` | {sum(f for f, _ in found)}/{len(found)} | {ratios} |")
    lines += ["", "### Cost", ""]
    for kind, what in (("aa", "unchanged code"), ("inject", "injected slowdowns"), ("real", "the real change")):
        mine = [r for r in runs if r["kind"] == kind]
        if mine:
            confirmed = ", ".join(str(r["confirmed"]) for r in mine)
            lines.append(f"- {what}: {_minutes(mine)} a run; benchmarks confirmed by an A/B per run: {confirmed}")
    quiet = [r for r in runs if r["confirmed"] == 0]
    if quiet:
        lines.append(f"- runs that confirmed nothing: {_minutes(quiet)}")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    return run_main("perf.calibrate", lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    parser = Parser(prog="python -m perf.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="rounds of the three compare runs (default 10)")
    parser.add_argument("--real-copies", type=int, default=2, help="extra copies of the mask in the real change (default 2)")
    parser.add_argument("--out", default="", help="also write the report (Markdown) to this file")
    parser.add_argument("--workdir", help="keep the clone, the storage and every report here (default: a temporary folder)")
    parser.add_argument("--render", action="store_true", help="measure nothing: the report again from --workdir")
    parser.add_argument("--resume", action="store_true",
                        help="go on with a stopped calibration in --workdir (its clone, baseline and finished rounds)")
    own, tail = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    if (args.render or args.resume) and not args.workdir:
        parser.error("--render and --resume need --workdir (a calibration's working directory)")
    if args.render:
        try:
            doc = read_json(Path(args.workdir) / "summary.json", "a calibration summary")
            res, meta = {"runs": doc["runs"]}, doc["meta"]
        except (ResultsError, KeyError, TypeError) as e:
            raise UsageError(f"--render: no calibration in {args.workdir}/summary.json ({e})") from None
    else:
        repo = Path(git(".", "rev-parse", "--show-toplevel"))
        work = Path(args.workdir or tempfile.mkdtemp(prefix="perf-calibrate-"))
        done = _stopped(work) if args.resume else None
        work.mkdir(parents=True, exist_ok=True)
        if done is None and any(work.iterdir()):
            raise UsageError(f"--workdir {work}: not empty; give a new or empty folder, or --resume a stopped calibration")
        machine.pin_threads(1)  # as the measured runs do, so the fingerprint below is theirs
        fp = machine.fingerprint()
        meta = {"machine": f"{fp['cpu']}, {fp['cpus']} vCPUs (shared), threads {fp['threads']}, torch {fp['torch']}, "
                           f"numpy {fp['numpy']}",
                "started": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}",
                "command": shlex.join(["python", "-m", "perf.calibrate", *argv]), "copies": args.real_copies,
                **(done or {}).get("meta", {})}  # a resumed calibration keeps its start and command
        res = measure(repo, work, args.reps, args.real_copies, tail, meta, done)
        meta = res["meta"]
        print(f"calibrate: raw results in {work}", file=sys.stderr)
    lines = render(res, meta)
    print("\n".join(lines))
    if args.out:
        with paths.writing("--out", args.out, "the report"):  # printed above; the raw results stay in the workdir
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    return 0


def _stopped(work: Path) -> dict:
    """A stopped calibration's summary.json: its commits and finished runs."""
    try:
        doc = read_json(work / "summary.json", "a calibration summary")
        if not isinstance(doc.get("commits"), dict) or not isinstance(doc.get("runs"), list):
            raise KeyError("commits or runs")
    except (ResultsError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"--resume: no calibration to go on with in {work}/summary.json ({e})") from None
    if not (work / "repo").is_dir():
        raise UsageError(f"--resume: {work}/repo (the calibration's clone) is missing")
    return doc


if __name__ == "__main__":
    sys.exit(main())
