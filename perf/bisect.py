"""The first commit, or the first version of the stack, at which benchmarks changed: each probe an A/B.

    python -m perf.bisect --good REV --bad REV [-k EXPR] [--rounds R] [--json PATH] [--markdown PATH] [-- PYTEST ARGS]
    python -m perf.bisect --versions SPEC SPEC [SPEC ...] [-k EXPR] [...] [-- PYTEST ARGS]

Commits: the candidates are the commits from --good to --bad (``git rev-list --ancestry-path``), and
the question is "where did it get slower" (REGRESSED). Versions: the candidates are environment specs in
order (``perf.envs``: "numpy==1.26.4" "numpy==2.0.2" ..., built once and cached), the question is
"where did it change" (REGRESSED or IMPROVED), on this checkout.

One engine decides (``perf.bisection``): the endpoints first (nothing changed between them: it says so
and stops), then a binary search comparing the good end with midpoints, O(log n) probes shared by the
benchmarks, a commit or version that fails to run passed over (``git bisect skip``), and each answer
confirmed against its predecessor. Every probe is ``perf.ab``'s interleaved A/B of two candidates
(fresh processes, duet or sequential rounds, the paired trimmed test with Holm, the recheck), counts as
well as times (``-- --perf-metric instructions``). Exit status: 0 when it answered (found, or nothing to
find), 2 for a usage or environment error (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from . import ab, bisection, envs, gate, paths, render, results, revisions
from .bisection_render import render_bisection
from .cli import Parser, git, run_main, split_dashdash
from .errors import UsageError
from .progress import Progress
from .rounds import BASE, HEAD, Side

PROG = "python -m perf.bisect"
MakeSides = Callable[[str, str, Path], AbstractContextManager[dict[str, Side]]]  # (base, head, folder) -> the sides


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = Parser(prog=PROG, allow_abbrev=False, description=__doc__.splitlines()[0],
               epilog="Arguments after -- go to pytest on every side. Exit status: 0 answered, 2 error.")
    p.add_argument("--good", metavar="REV", help="a commit where the benchmarks were fine")
    p.add_argument("--bad", metavar="REV", help="a later commit where they are slower")
    p.add_argument("--versions", nargs="+", metavar="SPEC",
                   help="environment specs in order, oldest first (e.g. numpy==1.26.4 numpy==2.0.2 ...)")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest's -k: the benchmarks to bisect")
    p.add_argument("--rounds", type=int, default=None, help="A/B rounds of each probe (default: perf.ab's)")
    p.add_argument("--threshold", default=None, help="smallest change that counts (default: perf.ab's)")
    p.add_argument("--repo", default=".", help="the git repository (default: the current directory)")
    p.add_argument("--json", metavar="PATH", help="write the answer and every probe's verdicts as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the answer as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    own, tail = split_dashdash(argv)
    opts = p.parse_args(own)
    if bool(opts.versions) == bool(opts.good or opts.bad):
        raise UsageError("give --good REV and --bad REV (commits) or --versions SPEC SPEC ... (environments), "
                         f"not both and not neither (see {PROG} --help)")
    if opts.versions is None and not (opts.good and opts.bad):
        raise UsageError("commits need both --good REV and --bad REV")
    if opts.versions is not None and len(opts.versions) < 2:
        raise UsageError("--versions needs at least two specs, oldest first")
    opts.pytest_args = [*tail, *(["-k", opts.keyword] if opts.keyword else [])]
    metric = ab.metric_of(opts.pytest_args)
    try:
        threshold = metric.defaults.threshold if opts.threshold is None else gate.parse_threshold(opts.threshold)
    except gate.GateError as exc:
        raise UsageError(str(exc)) from None
    rounds = opts.rounds or metric.defaults.ab_rounds
    if rounds < gate.MIN_SAMPLES:
        raise UsageError(f"--rounds {rounds}: expected an integer >= {gate.MIN_SAMPLES}")
    opts.design = ab.Design(rounds=rounds, recheck_rounds=2 * rounds, threshold=threshold, metric=metric)
    paths.require_writable({"--json": opts.json, "--markdown": opts.markdown})
    return opts


def commits(repo: Path, good: str, bad: str) -> list[str]:
    """The candidates from ``good`` to ``bad``, oldest first: 'SHA subject' each."""
    first, last = revisions.resolve(repo, good), revisions.resolve(repo, bad)
    path = git(repo, "rev-list", "--reverse", "--ancestry-path", f"{first}..{last}").split()
    if not path:
        raise UsageError(f"{bad} is not a descendant of {good}: nothing to bisect between them")
    return [candidate(repo, sha) for sha in [first, *path]]


def candidate(repo: Path, sha: str) -> str:
    """How a commit is a candidate: 'SHA subject'."""
    return f"{sha[:10]} {git(repo, 'log', '-1', '--format=%s', sha)}"


def commit_sides(repo: Path, pytest_args: Sequence[str]) -> MakeSides:
    """A probe's sides for two candidates named 'SHA subject' (``commits``): each commit checked out in the
    probe's folder, its suite run with ``pytest_args``."""

    @contextlib.contextmanager
    def make_sides(base: str, head: str, folder: Path) -> Iterator[dict[str, Side]]:
        with revisions.checked_out(repo, {BASE: base.split()[0], HEAD: head.split()[0]}, folder) as trees:
            yield {BASE: Side(trees[BASE], tuple(pytest_args), base), HEAD: Side(trees[HEAD], tuple(pytest_args), head)}

    return make_sides


class Prober:
    """Probes: an A/B of two candidates, every probe's comparisons kept for the report."""

    def __init__(self, make_sides: MakeSides, design: ab.Design,
                 work: Path, log: Callable[[str], None]) -> None:
        self.make_sides, self.design, self.work, self.log = make_sides, design, work, log
        self.comparisons: dict[tuple[str, str], list[gate.Comparison]] = {}

    def __call__(self, base: str, head: str) -> bisection.Outcome:
        self.log(f"probe: {base} -> {head}")
        folder = Path(tempfile.mkdtemp(prefix="probe-", dir=self.work))
        try:
            with self.make_sides(base, head, folder) as sides:
                outcome = ab.compare(sides, self.design, folder, self.log,
                                     lambda steps, label: Progress(steps, label, self.log, live=sys.stderr.isatty()))
        except UsageError as exc:  # the suite does not run there: skipped, as git bisect skip
            return bisection.Skip(str(exc).splitlines()[0][:300])
        self.comparisons[(base, head)] = outcome.comparisons
        return {c.name: c.verdict for c in outcome.comparisons}


def run(opts: argparse.Namespace) -> int:
    log = lambda msg: print(f"perf.bisect: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    repo = revisions.toplevel(opts.repo)
    with tempfile.TemporaryDirectory(prefix="perf-bisect-") as tmp:
        work = Path(tmp)
        if opts.versions:
            candidates = list(opts.versions)
            built = {spec: envs.prepare(spec, project_root=repo, log=log) for spec in candidates}  # before any measuring
            for spec, env in built.items():
                log(f"{spec}: {env.description}")

            @contextlib.contextmanager
            def make_sides(base: str, head: str, folder: Path) -> Iterator[dict[str, Side]]:
                yield {BASE: Side(repo, tuple(opts.pytest_args), base, str(built[base].python)),
                       HEAD: Side(repo, tuple(opts.pytest_args), head, str(built[head].python))}
            changes = bisection.ANY_CHANGE
        else:
            candidates = commits(repo, opts.good, opts.bad)
            make_sides = commit_sides(repo, opts.pytest_args)
            changes = bisection.REGRESSION
        prober = Prober(make_sides, opts.design, work, log)
        endpoints = prober(candidates[0], candidates[-1])
        if isinstance(endpoints, bisection.Skip):
            raise UsageError(f"the endpoints could not be measured: {endpoints.reason}")
        cached = {(candidates[0], candidates[-1]): endpoints}  # the engine asks for them first: measured once
        result = bisection.find_first_changes(candidates, endpoints.keys(),
                                              lambda b, h: cached.pop((b, h), None) or prober(b, h),
                                              counts_as_change=changes)
    text = render_bisection(result) + decided(result, prober)
    print(text, end="")
    try:
        if opts.markdown:
            Path(opts.markdown).write_text(render_bisection(result, markdown=True) + decided(result, prober),
                                           encoding="utf-8")
        if opts.json:
            results.write_json(opts.json, {"candidates": list(result.candidates),
                                   "answers": [{"benchmark": b.name, "status": str(b.status), "first": b.first_changed,
                                                "after": b.predecessor} for b in result.benchmarks],
                                   "probes": [{"base": base, "head": head, "comparisons": [c.as_dict() for c in comps]}
                                              for (base, head), comps in prober.comparisons.items()],
                                   "pytest args": shlex.join(opts.pytest_args)})
    except OSError as exc:
        raise UsageError(f"cannot write the report: {exc.strerror or exc} ({exc.filename})") from None
    return 0


def decided(result: bisection.Bisection, prober: Prober) -> str:
    """For each benchmark found: the A/B that confirmed it, its change and interval."""
    lines = []
    for b in result.benchmarks:
        if b.confirmation is None:
            continue
        comps = prober.comparisons.get((b.confirmation.base, b.confirmation.head), [])
        c = next((c for c in comps if c.name == b.name), None)
        if c is not None:
            lines.append(f"  {b.name}: {b.confirmation.base} -> {b.confirmation.head}: {c.verdict} "
                         f"{render.change_with_interval(c)}")
    return ("\nDecided by:\n" + "\n".join(lines) + "\n") if lines else ""


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("perf.bisect", lambda: run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
