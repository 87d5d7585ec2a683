"""The pull-request performance gate: ``python -m perf.ab`` between the merge base and the head.

    python -m ci.pr_gate [--repo DIR] [--base REV | --base-ref BRANCH] [--head REV] [--rounds R]
                         [--threshold T] [--threads N] [--confirm-rounds R] [--seed S] [--out DIR]
                         [--accept-regression] [--pytest-args "ARGS"] [-- PYTEST ARGS...]

The base is the merge base of the head and ``origin/BRANCH`` (BRANCH: --base-ref, else
$GITHUB_BASE_REF, the pull request's target), or --base as given; the head is the working tree
unless --head names a revision. Every BLAS/OpenMP pool of the benchmark processes is pinned to
--threads (default 1). When the A/B finds regressions, a second A/B of only those benchmarks
(--confirm-rounds, default --rounds; 0 skips it) must find them again: only a confirmed
regression fails. A regression accepted with --accept-regression (or $PERF_ACCEPT_REGRESSION,
set from the pull request's ``perf-regression-accepted`` label) is reported and passes.

Written to --out (default perf-results): ab.json / ab.md (verdicts), rounds/ (each process's
pytest-benchmark JSON), confirm.json / confirm.md when a confirmation ran, outcome.json. The
verdict table goes to $GITHUB_STEP_SUMMARY; the outputs status, regressed and json to $GITHUB_OUTPUT.

Exit status: 0 pass (or nothing confirmed, or accepted), 1 confirmed regression, 2 usage or
environment error (unknown revision, shallow clone, a side's pytest failed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import ERROR, PASS, REGRESSION, github
from .proc import PROJECT_ROOT, child_env, parse_with_pytest_args, run_tee

ACCEPT_LABEL = "perf-regression-accepted"


class GateError(Exception):
    """A usage or environment error: one line, exit status 2."""


# --------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise GateError(f"{message} (see python -m ci.pr_gate --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m ci.pr_gate", allow_abbrev=False,
                description="Pull-request performance gate: interleaved A/B of the merge base and the head.",
                epilog="Arguments after -- go to pytest on both sides. Exit status: 0 pass, 1 confirmed regression, 2 error.")
    p.add_argument("--repo", default=".", help="the git repository (default: the current directory)")
    p.add_argument("--base", metavar="REV", help="base revision, as given (default: merge base with --base-ref)")
    p.add_argument("--base-ref", metavar="BRANCH", default=os.environ.get("GITHUB_BASE_REF") or None,
                   help="target branch; the base is the merge base of the head and origin/BRANCH (default: $GITHUB_BASE_REF)")
    p.add_argument("--head", metavar="REV", help="head revision (default: the working tree)")
    p.add_argument("--rounds", type=int, default=16, help="A/B rounds (default 16)")
    p.add_argument("--confirm-rounds", type=int, default=None, help="rounds of the confirming A/B (default --rounds; 0: none)")
    p.add_argument("--threshold", help="smallest slowdown that counts, e.g. 10%% (default: perf.ab's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the round order; the confirmation uses seed + 1")
    p.add_argument("--threads", type=int, default=1, help="threads of each BLAS/OpenMP pool of the benchmarks (default 1)")
    p.add_argument("--out", default="perf-results", help="directory for the results (default perf-results)")
    p.add_argument("--accept-regression", action="store_true",
                   default=github.truthy(os.environ.get("PERF_ACCEPT_REGRESSION")),
                   help=f"report regressions but pass (default: $PERF_ACCEPT_REGRESSION, set from the {ACCEPT_LABEL} label)")
    p.add_argument("--pytest-args", default="", metavar="ARGS", help="pytest args for both sides, as one shell-quoted string")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    opts = parse_with_pytest_args(build_parser(), argv, GateError)
    if opts.confirm_rounds is None:
        opts.confirm_rounds = opts.rounds
    if opts.rounds < 1 or opts.confirm_rounds < 0 or opts.threads < 1:
        raise GateError("--rounds and --threads must be positive, --confirm-rounds >= 0")
    return opts


# --------------------------------------------------------------------------- git


def git(repo, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise GateError(f"git {' '.join(args)}: {last}")
    return proc.stdout.strip()


def _exists(repo, rev: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True).returncode == 0


def resolve_base(repo, base: str | None, base_ref: str | None, head: str | None) -> str | None:
    """The base commit: --base as given, else the merge base of the head and the target branch,
    else None (perf.ab's own default: merge base with origin/main, else HEAD~1)."""
    if base:
        if not _exists(repo, base):
            raise GateError(f"unknown base revision {base!r}")
        return git(repo, "rev-parse", f"{base}^{{commit}}")
    if not base_ref:
        return None
    shallow = git(repo, "rev-parse", "--is-shallow-repository") == "true"
    hint = " (the checkout is shallow: use actions/checkout with fetch-depth: 0)" if shallow else ""
    target = next((c for c in (f"refs/remotes/origin/{base_ref}", f"refs/heads/{base_ref}") if _exists(repo, c)), None)
    if target is None:
        raise GateError(f"target branch {base_ref!r} not found as origin/{base_ref} or {base_ref}{hint}")
    try:
        return git(repo, "merge-base", target, head or "HEAD")
    except GateError:
        raise GateError(f"no merge base of {head or 'HEAD'} and {target}{hint}") from None


# --------------------------------------------------------------------------- the A/B runs


def ab_command(repo, base: str | None, head: str | None, rounds: int, threshold: str | None, seed: int,
               json_path: Path, md_path: Path, workdir: Path, pytest_args: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "perf.ab", f"--repo={Path(repo).resolve()}", f"--rounds={rounds}", f"--seed={seed}",
           f"--json={json_path}", f"--markdown={md_path}", f"--workdir={workdir}"]
    if threshold:
        cmd.append(f"--threshold={threshold}")
    if base:
        cmd.append(f"--base={base}")
    if head:
        cmd.append(f"--head={head}")
    return [*cmd, "--", *pytest_args]


def read_doc(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def regressed(doc: dict | None) -> list[str]:
    """Names of the REGRESSED benchmarks of a perf.ab JSON report."""
    return [c["name"] for c in (doc or {}).get("comparisons", []) if c.get("verdict") == "regressed"]


def decide(first_rc: int, first: dict | None, confirm_rc: int | None, confirm: dict | None, accept: bool) -> tuple[str, int]:
    """(status, exit status) from the A/B and, when it ran, the confirmation.

    status: pass | unconfirmed | regression | accepted | error.
    """
    if first_rc == 0:
        return "pass", PASS
    if first_rc != 1 or not regressed(first):
        return "error", ERROR
    if confirm_rc is None:  # no confirmation asked for: the first verdict stands
        confirmed = regressed(first)
    elif confirm_rc in (0, 1):
        confirmed = [n for n in regressed(confirm) if n in regressed(first)]
    else:
        return "error", ERROR
    if not confirmed:
        return "unconfirmed", PASS
    return ("accepted", PASS) if accept else ("regression", REGRESSION)


def summary_markdown(status: str, confirmed: Sequence[str], first_md: str, confirm_md: str, error: str = "") -> str:
    heads = {
        "pass": "no regression",
        "unconfirmed": "regressions in the first A/B were not confirmed by the second: pass",
        "regression": f"{len(confirmed)} confirmed regression(s): fail",
        "accepted": f"{len(confirmed)} confirmed regression(s), accepted by the `{ACCEPT_LABEL}` label: pass",
        "error": "error, nothing decided: fail",
    }
    lines = [f"## Performance gate: {heads[status]}", ""]
    if confirmed and status in ("regression", "accepted"):
        lines += [f"- `{name}`" for name in confirmed] + [""]
    if error:
        lines += ["```", error.strip(), "```", ""]
    if first_md:
        lines += [first_md.strip(), ""]
    if confirm_md:
        lines += ["#### Confirmation A/B (regressed benchmarks only)", "", confirm_md.strip().replace("### ", "##### ", 1), ""]
    return "\n".join(lines)


def run(opts: argparse.Namespace) -> int:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("ab.json", "ab.md", "confirm.json", "confirm.md", "outcome.json"):
        (out / stale).unlink(missing_ok=True)
    env = child_env(opts.threads)
    confirm_rc = confirm_doc = None
    error = ""
    try:
        base = resolve_base(opts.repo, opts.base, opts.base_ref, opts.head)
        cmd = ab_command(opts.repo, base, opts.head, opts.rounds, opts.threshold, opts.seed,
                         out / "ab.json", out / "ab.md", out / "rounds", opts.pytest)
        first_rc, tail = run_tee(cmd, cwd=PROJECT_ROOT, env=env)
        first_doc = read_doc(out / "ab.json")
        names = regressed(first_doc)
        if first_rc == 1 and names and opts.confirm_rounds:
            print(f"ci.pr_gate: confirming {len(names)} regression(s) with a second A/B of {opts.confirm_rounds} rounds",
                  flush=True)
            cmd = ab_command(opts.repo, base, opts.head, opts.confirm_rounds, opts.threshold, opts.seed + 1,
                             out / "confirm.json", out / "confirm.md", out / "rounds-confirm", [*opts.pytest, *names])
            confirm_rc, tail = run_tee(cmd, cwd=PROJECT_ROOT, env=env)
            confirm_doc = read_doc(out / "confirm.json")
        status, code = decide(first_rc, first_doc, confirm_rc, confirm_doc, opts.accept_regression)
        if status == "error":
            error = "\n".join(tail)
    except GateError as exc:
        status, code, error = "error", ERROR, str(exc)
    confirmed = regressed(confirm_doc) if confirm_rc is not None else regressed(read_doc(out / "ab.json"))
    if status in ("pass", "unconfirmed", "error"):
        confirmed = []
    outcome = {"status": status, "exit": code, "regressed": confirmed, "threads": opts.threads, "error": error}
    (out / "outcome.json").write_text(json.dumps(outcome, indent=2) + "\n", encoding="utf-8")
    md = summary_markdown(status, confirmed, _read(out / "ab.md"), _read(out / "confirm.md"), error)
    github.append_summary(md)
    github.set_outputs(status=status, regressed=len(confirmed), json=out / "ab.json")
    for name in confirmed:
        github.annotate("warning" if status == "accepted" else "error", name, title="Performance regression")
    if status == "error":
        last = error.strip().splitlines()[-1] if error.strip() else "perf.ab failed"
        github.annotate("error", last, title="Performance gate")
    print(f"ci.pr_gate: {status} (exit status {code})", flush=True)
    return code


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except GateError as exc:
        print(f"ci.pr_gate: error: {exc}", file=sys.stderr)
        return ERROR
    return run(opts)


if __name__ == "__main__":
    sys.exit(main())
