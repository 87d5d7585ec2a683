"""The nightly gate with --confirm (issue 24), for docs/results/history.md: does an A/B of the commits either
side of a step keep a real regression red and turn a machine's step green?

    python studies/nightly_study.py --workdir DIR [--out PATH]

DIR/repo is bisect_study's repository of 16 commits (commit 8 makes numpy's relu return a copy of its
result: a real code change). Two histories of saved runs, each save a ``pytest perf`` of SELECT:

- ``code``: one save at each of the 16 commits; the code's step is at run 0009 (commit 8);
- ``state``: the saves of commits 0-4 (the same files), then one save at each of commits 5, 6 and 7 with
  relu +50% injected by tests/plugins/slowdown.py, as a state of the machine over three nights would be:
  a step across commits whose code did not change.

Then ``python -m perf.history`` on each, ``--since`` the run before its step, without and with ``--confirm``:
exit status, outcome, each A/B's verdict, wall time.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf comes from this checkout

from perf.cli import run_main  # noqa: E402
from studies import common  # noqa: E402
from studies.bisect_study import git, make_repo  # noqa: E402

PROG = "python studies/nightly_study.py"
AT = 8                                          # the commit that copies relu's result
STATE_FROM = 5                                  # the first commit saved in a slow state of the machine
SELECT = ["--perf-size", "seed", "--perf-backend", "numpy", "-k", "relu"]
K = "relu and not grad_h_relu and not relu_backward"   # what the gate reads: the relu stage, both forms


def save(repo: Path, storage: Path, commit: str, number: int, logs: Path, slowdown: str = "") -> float:
    """One save of SELECT at ``commit`` into ``storage``; its wall seconds."""
    git(repo, "checkout", "-q", commit)
    plugin = ["-p", "tests.plugins.slowdown"] if slowdown else []
    cmd = [sys.executable, "-m", "pytest", "perf", "-q", "-p", "no:cacheprovider", *plugin, *SELECT,
           f"--benchmark-storage=file://{storage}", f"--benchmark-save=c{number:02d}"]
    proc, wall = common.run(PROG, cmd, repo, env={"PERF_SLOWDOWN": slowdown} if slowdown else None)
    (logs / f"{storage.name}-{number:02d}.log").write_text(proc.stdout + proc.stderr)
    return wall


def gate(repo: Path, storage: Path, since: int, confirm: bool, out: Path) -> dict:
    """``perf.history`` on ``storage``, --since run ``since``: exit status, outcome, wall, the steps' JSON."""
    extra = ["--confirm", "--repo", str(repo)] if confirm else []
    cmd = [sys.executable, "-m", "perf.history", str(storage), "--since", f"{since:04d}", "-k", K, "--json", str(out),
           *extra]
    proc, wall = common.run(PROG, cmd, repo, ok=(0, 1))
    doc = json.loads(out.read_text())
    steps = [{"benchmark": b["name"], **{k: s[k] for k in ("first_run", "ratio", "low", "high", "regression")},
              "confirmation": s["confirmation"]} for b in doc["benchmarks"] for s in b["steps"] if s["new"]]
    outcome = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL", "  which commit"))]
    return {"rc": proc.returncode, "wall": wall, "outcome": outcome, "steps": steps, "log": proc.stderr[-2000:]}


def measure(work: Path) -> dict:
    repo, logs = work / "repo", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commits = make_repo(repo, AT)
    code, state = work / "code", work / "state"
    walls = [save(repo, code, sha, i + 1, logs) for i, sha in enumerate(commits)]
    for path in sorted(code.rglob("*.json"))[:STATE_FROM]:
        target = state / path.relative_to(code)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    walls += [save(repo, state, commits[i], i + 1, logs, "relu:50%") for i in range(STATE_FROM, AT)]
    git(repo, "checkout", "-q", commits[-1])
    found = {"commits": commits, "save_wall": walls}
    for name, storage, since in (("code", code, AT), ("state", state, STATE_FROM)):
        for confirm in (False, True):
            found[f"{name}{' --confirm' if confirm else ''}"] = gate(repo, storage, since, confirm,
                                                                       work / f"{name}-{int(confirm)}.json")
    return found


def render(found: dict, meta: dict) -> list[str]:
    commits = found["commits"]
    lines = [f"Machine: {meta['machine']}. {meta['date']} UTC, commit {meta['commit']}. Command: `{meta['command']}`. "
             f"Saves: `pytest perf {' '.join(SELECT)}`, {len(found['save_wall'])} of them, "
             f"{min(found['save_wall']):.0f}-{max(found['save_wall']):.0f} s each; the gate: "
             f"`python -m perf.history STORAGE --since RUN -k \"{K}\" [--confirm --repo REPO]`. "
             f"The code's step: commit {AT} ({commits[AT][:10]}).", "",
             "| history | --since | --confirm | exit | gated steps (first run: size; the A/B) | wall |",
             "|---|---|---|---:|---|---:|"]
    for name, since in (("code", AT), ("state", STATE_FROM)):
        for confirm in (False, True):
            r = found[f"{name}{' --confirm' if confirm else ''}"]
            cells = []
            for s in r["steps"]:
                c = s["confirmation"]
                ab = ""
                if c and c["comparison"]:
                    v = c["comparison"]
                    ab = f"; A/B {v['verdict']} {(v['ratio'] - 1) * 100:+.1f}%"
                elif c:
                    ab = f"; {c['why']}"
                cells.append(f"`{s['benchmark'].rsplit('::', 1)[-1]}` {s['first_run']}: {(s['ratio'] - 1) * 100:+.1f}%"
                             f"{' (regression)' if s['regression'] else ''}{ab}")
            lines.append(f"| {name} | {since:04d} | {'yes' if confirm else 'no'} | {r['rc']} | "
                         f"{'<br>'.join(cells) or '-'} | {r['wall']:.0f} s |")
    return lines


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    args = common.parser(PROG, __doc__, render=True).parse_args(argv)
    found, meta = common.study(Path(args.workdir), args.render,
                               lambda: (measure(Path(args.workdir)), common.meta("nightly_study.py", argv)))
    return common.publish(render(found, meta), args.out)


if __name__ == "__main__":
    sys.exit(main())
