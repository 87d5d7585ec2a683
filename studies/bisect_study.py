"""Bisection of a real regression (issue 24), for docs/results/history.md: a temporary repository of 16
commits, one in the middle adding a copy to numpy's relu; does ``python -m perf.bisect`` name it, how fast?

    python studies/bisect_study.py --workdir DIR [--runs 3] [--at 8] [--out PATH]

The repository holds this checkout's kernels/, perf/, tests/plugins/, conftest.py and pyproject.toml:
commit 0, then 15 more, each touching a file outside the measured code, but for commit ``--at`` which
makes numpy's relu return a copy of its result (a real code change, not an injected spin). Then
``--runs`` bisections timed (seed-relu-numpy) and ``--runs`` counted (``--perf-metric instructions``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf comes from this checkout

from perf.cli import UsageError, run_main  # noqa: E402
from studies import common  # noqa: E402

PROG = "python studies/bisect_study.py"
RELU = ("def relu(h, out=None):\n    return np.maximum(h, 0, out=out)\n",
        "def relu(h, out=None):\n    result = np.maximum(h, 0, out=out)\n"
        "    return result.copy() if out is None else result\n")
SELECT = ["-k", "test_stage[seed-relu-numpy]", "--", "--perf-size", "seed", "--perf-backend", "numpy"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=study", "-c", "user.email=study@localhost", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def make_repo(repo: Path, at: int) -> list[str]:
    """The 16 commits, oldest first."""
    for part in ("kernels", "perf", "tests/plugins"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / part, repo / part)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "commit 0: the baseline")
    for i in range(1, 16):
        if i == at:
            source = repo / "kernels" / "numpy_.py"
            if RELU[0] not in source.read_text():
                raise UsageError(f"{source}: numpy's relu is not the one this study changes")
            source.write_text(source.read_text().replace(*RELU))
            git(repo, "commit", "-qam", f"commit {i}: numpy's relu returns a copy of its result")
        else:
            (repo / "NOTES.txt").write_text(f"note {i}\n")
            git(repo, "add", "NOTES.txt")
            git(repo, "commit", "-qm", f"commit {i}: notes")
    return git(repo, "rev-list", "--reverse", "HEAD").split()


def bisect(repo: Path, commits: list[str], extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "perf.bisect", "--good", commits[0], "--bad", commits[-1], "--json", str(out),
           *SELECT, *extra]
    proc, wall = common.run(PROG, cmd, repo)
    doc = json.loads(out.read_text())
    (answer,) = [a for a in doc["answers"] if a["benchmark"].endswith("test_stage[seed-relu-numpy]")]
    return {"wall": wall, "first": answer["first"], "status": answer["status"], "probes": len(doc["probes"]),
            "text": proc.stdout}


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    p = common.parser(PROG, __doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--at", type=int, default=8)
    args = p.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    commits = make_repo(work / "repo", args.at)
    culprit = commits[args.at][:10]
    found = {"time": [], "count": []}
    for i in range(args.runs):
        found["time"].append(bisect(work / "repo", commits, [], work / f"time-{i}.json"))
        found["count"].append(bisect(work / "repo", commits, ["--perf-metric", "instructions"], work / f"count-{i}.json"))
    meta = common.meta("bisect_study.py", argv)
    lines = [f"Machine: {meta['machine']}. {meta['date']} UTC, commit {meta['commit']}. "
             f"Command: `{meta['command']}`; the culprit: commit {args.at} ({culprit}) of 16.", "",
             "| metric | run | named | right | probes | wall |", "|---|---:|---|---|---:|---:|"]
    for metric, runs in found.items():
        for i, r in enumerate(runs, 1):
            named = (r["first"] or r["status"]).split()[0]
            lines.append(f"| {metric} | {i} | {r['first'] or r['status']} | {'yes' if named == culprit else 'NO'} | "
                         f"{r['probes']} | {r['wall'] / 60:.1f} min |")
    (work / "study.json").write_text(json.dumps({"culprit": culprit, "found": found}, indent=1))
    return common.publish(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
