"""The pull-request performance gate: ``python -m perf.ab`` between the merge base and the head.

    python -m ci.pr_gate [--repo DIR] [--base REV | --base-ref BRANCH] [--head REV] [--rounds R]
                         [--threshold T] [--threads N] [--seed S] [--out DIR]
                         [--accept-regression] [--pytest-args "ARGS"] [-- PYTEST ARGS...]

The base is the merge base of the head and ``origin/BRANCH`` (BRANCH: --base-ref, else
$GITHUB_BASE_REF, the pull request's target), or --base as given; the head is the working tree
unless --head names a revision. Every BLAS/OpenMP pool of the benchmark processes is pinned to
--threads (default 1). perf.ab's verdicts are final: it measures again, itself, what its first
rounds could not decide (``perf.gate.undecided``, the one "measure again" rule of every mode), so
a REGRESSED benchmark fails the gate (what that costs in false alarms and buys in detection:
docs/results/gate.md). A regression accepted
with --accept-regression (or $PERF_ACCEPT_REGRESSION, set from the pull request's
``perf-regression-accepted`` label) is reported and passes.

Written to --out (default perf-results), which is checked before anything runs: ab.json / ab.md
(verdicts), rounds/ (each process's pytest-benchmark JSON), outcome.json. The verdict table goes
to $GITHUB_STEP_SUMMARY; the outputs status, regressed and json to $GITHUB_OUTPUT.

Exit status: 0 pass (or accepted), 1 regression, 2 usage or environment error (unknown revision,
shallow clone, a side's pytest failed, an unusable --out, no readable verdict report).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from perf import machine, results
from perf.cli import ERROR, PASS, REGRESSION, Parser, git, positive_int, run_main
from perf.errors import ResultsError, UsageError
from perf.results import VerdictReport

from . import github
from .proc import PROJECT_ROOT, make_dir, parse_with_pytest_args, run_tee

PROG = "python -m ci.pr_gate"
ACCEPT_LABEL = "perf-regression-accepted"
OUTPUTS = ("ab.json", "ab.md", "outcome.json")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, allow_abbrev=False,
               description="Pull-request performance gate: interleaved A/B of the merge base and the head.",
               epilog="Arguments after -- go to pytest on both sides. Exit status: 0 pass, 1 regression, 2 error.")
    p.add_argument("--repo", default=".", help="the git repository (default: the current directory)")
    p.add_argument("--base", metavar="REV", help="base revision, as given (default: merge base with --base-ref)")
    p.add_argument("--base-ref", metavar="BRANCH", default=os.environ.get("GITHUB_BASE_REF") or None,
                   help="target branch; the base is the merge base of the head and origin/BRANCH (default: $GITHUB_BASE_REF)")
    p.add_argument("--head", metavar="REV", help="head revision (default: the working tree)")
    p.add_argument("--rounds", type=positive_int, default=None,
                   help="A/B rounds (default: perf.ab's, 16 for time, 3 for a counted --perf-metric)")
    p.add_argument("--threshold", help="smallest slowdown that counts, e.g. 10%% (default: perf.ab's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the round order")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="threads of each BLAS/OpenMP pool of the benchmarks (default 1)")
    p.add_argument("--out", default="perf-results", help="directory for the results (default perf-results)")
    p.add_argument("--accept-regression", action="store_true",
                   default=github.truthy(os.environ.get("PERF_ACCEPT_REGRESSION")),
                   help=f"report regressions but pass (default: $PERF_ACCEPT_REGRESSION, set from the {ACCEPT_LABEL} label)")
    p.add_argument("--pytest-args", default="", metavar="ARGS", help="pytest args for both sides, as one shell-quoted string")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return parse_with_pytest_args(build_parser(), argv)


# --------------------------------------------------------------------------- git


def _exists(repo, rev: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True).returncode == 0


def resolve_base(repo, base: str | None, base_ref: str | None, head: str | None) -> str | None:
    """The base commit: --base as given, else the merge base of the head and the target branch,
    else None (perf.ab's own default: merge base with origin/main, else HEAD~1)."""
    if base:
        if not _exists(repo, base):
            raise UsageError(f"unknown base revision {base!r}")
        return git(repo, "rev-parse", f"{base}^{{commit}}")
    if not base_ref:
        return None
    shallow = git(repo, "rev-parse", "--is-shallow-repository") == "true"
    hint = " (the checkout is shallow: use actions/checkout with fetch-depth: 0)" if shallow else ""
    target = next((c for c in (f"refs/remotes/origin/{base_ref}", f"refs/heads/{base_ref}") if _exists(repo, c)), None)
    if target is None:
        raise UsageError(f"target branch {base_ref!r} not found as origin/{base_ref} or {base_ref}{hint}")
    try:
        return git(repo, "merge-base", target, head or "HEAD")
    except UsageError:
        raise UsageError(f"no merge base of {head or 'HEAD'} and {target}{hint}") from None


# --------------------------------------------------------------------------- the A/B


def ab_command(repo, base: str | None, head: str | None, rounds: int | None, threshold: str | None, seed: int,
               out: Path, pytest_args: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "perf.ab", f"--repo={Path(repo).resolve()}", f"--seed={seed}",
           f"--json={out / 'ab.json'}", f"--markdown={out / 'ab.md'}", f"--workdir={out / 'rounds'}"]
    if rounds:
        cmd.append(f"--rounds={rounds}")
    if threshold:
        cmd.append(f"--threshold={threshold}")
    if base:
        cmd.append(f"--base={base}")
    if head:
        cmd.append(f"--head={head}")
    return [*cmd, "--", *pytest_args]


def decide(rc: int, report: VerdictReport | None, accept: bool) -> tuple[str, int, str]:
    """(status, exit status, why it is an error) from perf.ab's exit status and verdict report.

    status: pass | regression | accepted | error. Exit status and report must agree: 0 with no
    regression, 1 with at least one; anything else decided nothing.
    """
    if rc not in (0, 1):
        return "error", ERROR, f"perf.ab exited with status {rc}"
    if report is None:
        return "error", ERROR, "perf.ab wrote no verdict report"
    regressed = report.names("regressed")
    if rc == 0 and report.passed and not regressed:
        return "pass", PASS, ""
    if rc == 1 and regressed and not report.passed:
        return ("accepted", PASS, "") if accept else ("regression", REGRESSION, "")
    return "error", ERROR, f"perf.ab's exit status {rc} and its report ({report.line or 'no summary'}) disagree"


def summary_markdown(status: str, regressed: Sequence[str], ab_md: str, error: str = "") -> str:
    heads = {
        "pass": "no regression",
        "regression": f"{len(regressed)} regression(s): fail",
        "accepted": f"{len(regressed)} regression(s), accepted by the `{ACCEPT_LABEL}` label: pass",
        "error": "error, nothing decided: fail",
    }
    lines = [f"## Performance gate: {heads[status]}", ""]
    lines += [f"- `{name}`" for name in regressed] + ([""] if regressed else [])
    if error:
        lines += ["```", error.strip(), "```", ""]
    if ab_md:
        lines += [ab_md.strip(), ""]
    return "\n".join(lines)


def run(opts: argparse.Namespace) -> int:
    out = Path(opts.out)
    status, code, error, regressed, written = "error", ERROR, "", [], False
    try:
        make_dir(out, "--out")
        written = True
        for stale in OUTPUTS:
            (out / stale).unlink(missing_ok=True)
        base = resolve_base(opts.repo, opts.base, opts.base_ref, opts.head)
        rc, tail = run_tee(ab_command(opts.repo, base, opts.head, opts.rounds, opts.threshold, opts.seed, out, opts.pytest),
                           cwd=PROJECT_ROOT, env=machine.child_env(opts.threads))
        report = results.load_verdicts(out / "ab.json") if rc in (0, 1) else None
        status, code, why = decide(rc, report, opts.accept_regression)
        if status == "error":
            error = "\n".join([why, *tail[-8:]]) if rc in (0, 1) else "\n".join(tail) or why
        if status in ("regression", "accepted"):
            regressed = report.names("regressed")
    except (UsageError, ResultsError) as exc:
        status, code, error = "error", ERROR, str(exc)
    except OSError as exc:
        status, code, error = "error", ERROR, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    ab_md = ""
    if written:
        results.write_json(out / "outcome.json", {"status": status, "exit": code, "regressed": regressed,
                                                  "threads": opts.threads, "error": error})
        if (out / "ab.md").is_file():
            ab_md = (out / "ab.md").read_text(encoding="utf-8", errors="replace")
    github.append_summary(summary_markdown(status, regressed, ab_md, error))
    github.set_outputs(status=status, regressed=len(regressed), json=out / "ab.json")
    for name in regressed:
        github.annotate("warning" if status == "accepted" else "error", name, title="Performance regression")
    if status == "error":
        last = error.strip().splitlines()[-1] if error.strip() else "perf.ab failed"
        github.annotate("error", last, title="Performance gate")
    print(f"ci.pr_gate: {status} (exit status {code})", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, lambda: run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
