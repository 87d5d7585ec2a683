"""Interleaved A/B: measure two git revisions on this machine, in this job, and decide per benchmark.

    python -m perf.ab [--base REV] [--head REV] [--rounds R] [--recheck-rounds N] [--statistic min|median]
                      [--mode auto|duet|sequential] [--threshold 5%] [--alpha 0.05] [--confidence 0.95]
                      [--json PATH] [--markdown PATH] [--workdir DIR] [--seed S] [--repo DIR]
                      [--head-pytest-args "..."] [--base-pytest-args "..."] [-- PYTEST ARGS...]

The base revision (default: merge-base of HEAD and origin/main, else HEAD~1) is checked out
beside the working tree with ``git worktree add --detach`` in a temporary directory; the head
is the working tree as it is (uncommitted changes included) unless --head names a revision.
Each of R rounds runs base and head in fresh ``python -m pytest perf`` processes, each in its
own tree (so each side uses its own kernels and perf plugin), in an order balanced over the
rounds and shuffled with --seed. Per benchmark and process one number is kept (--statistic:
the minimum of the raw samples by default, or their median); round i of base is paired with
round i of head; ``gate.compare_paired`` + ``gate.holm`` decide. Benchmarks left undecided
(INCONCLUSIVE, or UNCHANGED with an interval still reaching past the threshold) are measured
again, once, alone, in --recheck-rounds more rounds (default 2R), and decided on all their
rounds. Exit status: 0 pass, 1 at least one REGRESSED, 2 usage or environment error.

Why the minimum: the noise of a shared machine only ever adds time, in bursts that catch
some processes and not others, so the fastest sample of a process moves least from process
to process (Chen and Revels, "Robust benchmarking in noisy environments", 2016); how much
less, measured, is in docs/results/gate.md. The median remains available for code whose
typical call, not its best one, is what changed.

Modes (--mode): ``duet`` runs base and head of a round at the same time, each pinned to its
own half of the CPUs (which half alternates with the round order), so both see the same
moment of a shared machine; ``sequential`` runs them one after the other. ``auto`` (the
default) is duet with at least 2 CPUs and no GPU visible (sides would share an accelerator),
else sequential.

The test is Yuen's trimmed paired t-test on the log ratios (gate.compare_paired): on a shared
machine a whole process now and then runs slow on every benchmark, and the trimmed mean sets
such rounds aside. The recheck (``gate.undecided``, the rule the saved-baseline gate uses
too) pools its rounds with the first R: a second look that only happens when the first could
not decide, and whose REGRESSED still needs the whole interval past the threshold; under A/A
it keeps the suite-wide false-alarm rate within alpha in simulation (tests/test_ab.py). What
this design detects, how often it cries wolf and what it costs: docs/results/gate.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from perf import gate, machine, render, results
from perf.cli import PASS, REGRESSION, Parser, UsageError, git, run_main, split_dashdash

DEFAULT_ROUNDS = 16
# Counted metrics (pytest args --perf-metric instructions|cycles): a side's counts repeat, so 3 rounds
# are plenty, judged by gate.compare_counts (1% past its count noise: docs/results/counts.md); each
# round starts valgrind twice.
COUNTED_ROUNDS, COUNTED_THRESHOLD = 3, "1%"  # the --help text says these defaults too
# One number per benchmark and process; the first is the default.
STATISTICS = {"min": min, "median": statistics.median}
MODES = ("auto", "duet", "sequential")
DEFAULT_THRESHOLD = "5%"
BASE, HEAD = "base", "head"
TAIL_LINES = 15  # lines of a failing pytest's output shown
# Set by an outer pytest (this suite's own tests under xdist, say): inherited, they would turn
# the children's benchmarks off.
PROG = "python -m perf.ab"


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, allow_abbrev=False,
               description="Interleaved A/B benchmark of two git revisions with a statistical gate.",
               epilog="Options this command does not know (and everything after --) go to pytest on both sides, "
                       "e.g. -- --perf-backend numpy,torch-cpu --perf-size seed. Exit status: 0 pass, 1 regression, 2 error.")
    p.add_argument("--base", metavar="REV", help="base revision (default: merge-base of HEAD and origin/main, else HEAD~1)")
    p.add_argument("--head", metavar="REV", help="head revision (default: the working tree, uncommitted changes included)")
    p.add_argument("--rounds", metavar="R", type=int, default=None,
                   help=f"rounds of base+head (default {DEFAULT_ROUNDS}; {COUNTED_ROUNDS} for a counted --perf-metric)")
    p.add_argument("--recheck-rounds", metavar="N", type=int, default=None,
                   help="rounds measuring again, once, only the benchmarks left undecided (default 2 x --rounds; 0: none)")
    p.add_argument("--statistic", choices=list(STATISTICS), default=next(iter(STATISTICS)),
                   help="what each process contributes per benchmark: the minimum of its samples (default) or the median")
    p.add_argument("--threshold", default=None,
                   help="smallest change that counts, e.g. 10%% or 0.1 (default 5%%; 1%% for a counted --perf-metric)")
    p.add_argument("--alpha", type=float, default=0.05, help="suite-wide false-alarm rate, Holm-controlled (default 0.05)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the round order (default 0)")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="duet: base and head of a round at once, each on its own half of the CPUs (needs >= 2); "
                        "sequential: one after the other; auto (default): duet with >= 2 CPUs and no GPU visible")
    p.add_argument("--json", metavar="PATH", help="write the verdicts as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the verdicts as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep each round's pytest-benchmark JSON here (default: a temporary directory, removed)")
    p.add_argument("--repo", metavar="DIR", default=".", help="the git repository (default: the current directory)")
    for side in (HEAD, BASE):
        p.add_argument(f"--{side}-pytest-args", default="", metavar="ARGS",
                       help=f"extra pytest args for {side} only, one string (write --{side}-pytest-args=...)")
    return p


def metric_of(pytest_args: Sequence[str]) -> results.Metric:
    """The --perf-metric the pytest args ask for (time unless they say otherwise)."""
    args = list(pytest_args)
    for i, arg in enumerate(args):
        if arg == "--perf-metric" and i + 1 < len(args):
            return results.Metric.parse(args[i + 1], "--perf-metric")
        if arg.startswith("--perf-metric="):
            return results.Metric.parse(arg.split("=", 1)[1], "--perf-metric")
    return results.Metric.TIME


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Our options, plus `pytest_args` (what follows '--' and any option we do not know),
    `base_args`/`head_args` (split with shlex) and `threshold` parsed to a fraction."""
    argv, tail = split_dashdash(argv)
    opts, unknown = build_parser().parse_known_args(argv)
    opts.pytest_args = unknown + tail
    counted = metric_of(opts.pytest_args).counted
    if opts.rounds is None:
        opts.rounds = COUNTED_ROUNDS if counted else DEFAULT_ROUNDS
    if opts.threshold is None:
        opts.threshold = COUNTED_THRESHOLD if counted else DEFAULT_THRESHOLD
    try:
        opts.threshold = gate.parse_threshold(opts.threshold)
    except gate.GateError as e:
        raise UsageError(str(e)) from None
    if opts.rounds < gate.MIN_SAMPLES:
        raise UsageError(f"--rounds {opts.rounds}: expected an integer >= {gate.MIN_SAMPLES} "
                      "(fewer rounds cannot decide anything)")
    if opts.recheck_rounds is None:
        opts.recheck_rounds = 2 * opts.rounds
    if opts.recheck_rounds < 0:
        raise UsageError(f"--recheck-rounds {opts.recheck_rounds}: expected an integer >= 0 (0: no recheck)")
    for name in ("alpha", "confidence"):
        if not 0 < getattr(opts, name) < 1:
            raise UsageError(f"--{name} {getattr(opts, name)}: expected a number strictly between 0 and 1")
    try:
        opts.base_args = shlex.split(opts.base_pytest_args)
        opts.head_args = shlex.split(opts.head_pytest_args)
    except ValueError as e:
        raise UsageError(f"--base-pytest-args/--head-pytest-args: {e}") from None
    for name in ("base", "head"):
        rev = getattr(opts, name)
        if rev is not None and (not rev or rev.startswith("-")):
            raise UsageError(f"--{name} {rev!r}: expected a git revision")
    return opts


# --------------------------------------------------------------------------- rounds and results


def round_orders(rounds: int, seed: int) -> list[tuple[str, str]]:
    """Which side runs first in each round: base-first and head-first balanced (R/2 each, the
    odd one out decided by the seed), shuffled with `seed`, so that drift cancels on average."""
    rng = random.Random(seed)
    first_base = rounds // 2 + (rounds % 2 if rng.random() < 0.5 else 0)
    orders = [(BASE, HEAD)] * first_base + [(HEAD, BASE)] * (rounds - first_base)
    rng.shuffle(orders)
    return orders


def read_round(path: str | os.PathLike, statistic: str = "min") -> dict[str, float]:
    """{name: `statistic` (a key of STATISTICS) of its samples} from one process's results file, in
    file order; benchmarks without raw samples (disabled, errored) are left out."""
    summarize = STATISTICS[statistic]
    try:
        run = results.load_run(path)
    except results.ResultsError as exc:
        raise UsageError(f"cannot read the results of a side: {exc}") from None
    return {name: summarize(r.samples) for name, r in run.results.items() if r.samples}


def pair_rounds(base_rounds: Sequence[dict[str, float]], head_rounds: Sequence[dict[str, float]]):
    """Pair round i of base with round i of head, per benchmark.

    Returns (paired, only_base, only_head): paired maps a name to (base values, head values) over
    the rounds where both sides have it; only_base / only_head map names one side never
    measured to that side's values. Names keep their first-seen order (base first).
    """
    names: dict[str, None] = {}
    for r in (*base_rounds, *head_rounds):
        names.update(dict.fromkeys(r))
    in_base = {n for r in base_rounds for n in r}
    in_head = {n for r in head_rounds for n in r}
    paired, only_base, only_head = {}, {}, {}
    for name in names:
        if name in in_base and name in in_head:
            pairs = [(b[name], h[name]) for b, h in zip(base_rounds, head_rounds) if name in b and name in h]
            paired[name] = ([p[0] for p in pairs], [p[1] for p in pairs])
        elif name in in_base:
            only_base[name] = [r[name] for r in base_rounds if name in r]
        else:
            only_head[name] = [r[name] for r in head_rounds if name in r]
    return paired, only_base, only_head


def decide(base_rounds, head_rounds, threshold: float, alpha: float = 0.05, confidence: float = 0.95, *,
           metric: results.Metric = results.Metric.TIME) -> list[gate.Comparison]:
    """Paired verdicts with Holm over all paired benchmarks; NEW and MISSING rows for the rest.

    Counts (a counted ``metric``) are judged by ``gate.compare_counts``, not by a test on the rounds: each
    side's rounds agree to the instruction, and what the two sides' code moves in memory (up to
    1.3% for small allocating stages) is not in any round-to-round variance."""
    paired, only_base, only_head = pair_rounds(base_rounds, head_rounds)
    if metric.counted:
        noise = gate.count_noise(metric)
        comps = [gate.compare_counts(n, b, h, threshold, noise) for n, (b, h) in paired.items()]
    else:
        comps = [gate.compare_paired(n, b, h, threshold, alpha=alpha, confidence=confidence) for n, (b, h) in paired.items()]
        comps = gate.holm(comps, alpha)
    comps += [gate.missing_benchmark(n, v, threshold) for n, v in only_base.items()]
    comps += [gate.new_benchmark(n, v, threshold) for n, v in only_head.items()]
    return comps


def to_recheck(comparisons: Sequence[gate.Comparison]) -> list[str]:
    """Names of the paired benchmarks the gate left undecided (``gate.undecided``): measured again."""
    return [c.name for c in comparisons if gate.undecided(c)]


def recheck_args(args: Sequence[str], names: Sequence[str]) -> list[str]:
    """pytest args selecting only `names` (node ids): paths the args name under perf are dropped
    (they would select everything again); options, -k included, still apply."""
    return [a for a in args if not _selects_path(a)] + list(names)


def decide_with_recheck(first, again, names: Sequence[str], threshold: float, alpha: float = 0.05,
                        confidence: float = 0.95) -> list[gate.Comparison]:
    """Verdicts on the first rounds plus the recheck's (``first``/``again``: {side: rounds}).

    Each of the rechecked `names` is decided on all its pairs; every other benchmark keeps its
    first rounds only (whatever else the recheck measured). Holm runs once, over every
    benchmark, on the final p-values."""
    names = set(names)
    more = {side: [{n: v for n, v in r.items() if n in names} for r in again[side]] for side in (BASE, HEAD)}
    comps = decide(first[BASE] + more[BASE], first[HEAD] + more[HEAD], threshold, alpha, confidence)
    rounds = len(again[BASE])
    return [c.with_note(f"measured again: {rounds} more rounds") if c.name in names else c for c in comps]


def exit_status(comparisons: Sequence[gate.Comparison]) -> int:
    """PASS when nothing REGRESSED, else REGRESSION."""
    return PASS if gate.passed(comparisons) else REGRESSION


def _selects_path(arg: str) -> bool:
    return arg == "perf" or arg.startswith(("perf/", "perf::"))


def pytest_command(tree: str | os.PathLike, json_path: str | os.PathLike, args: Sequence[str]) -> list[str]:
    """The child command for one side and round (run with cwd=tree). `perf` is selected unless
    the args already name paths under perf; --rootdir keeps node ids equal on both sides."""
    selects_paths = any(_selects_path(a) for a in args)
    return [sys.executable, "-m", "pytest", *([] if selects_paths else ["perf"]), "-q", "-p", "no:cacheprovider",
            f"--benchmark-json={json_path}", f"--rootdir={tree}", *args]


# --------------------------------------------------------------------------- git and processes (thin)


def toplevel(path: str | os.PathLike) -> Path:
    if not Path(path).is_dir():
        raise UsageError(f"not a directory: {path}")
    try:
        return Path(git(path, "rev-parse", "--show-toplevel"))
    except UsageError:
        raise UsageError(f"not a git repository: {Path(path).resolve()}") from None


def resolve(repo, rev: str) -> str:
    """The commit a revision names, or UsageError('unknown revision ...')."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except UsageError:
        raise UsageError(f"unknown revision {rev!r} in {repo}") from None


def default_base(repo) -> str:
    """merge-base of HEAD and origin/main when origin/main exists, else HEAD~1."""
    try:
        git(repo, "rev-parse", "--verify", "--quiet", "refs/remotes/origin/main")
    except UsageError:
        pass
    else:
        try:
            return git(repo, "merge-base", "HEAD", "origin/main")
        except UsageError:
            pass
    try:
        return resolve(repo, "HEAD~1")
    except UsageError:
        raise UsageError("no default base: no origin/main and no HEAD~1; pass --base REV") from None


def add_worktree(repo, sha: str, dest: Path) -> Path:
    git(repo, "worktree", "add", "--detach", "--quiet", str(dest), sha)
    return dest


def remove_worktree(repo, dest: Path) -> None:
    """Best effort: a failure here must not hide the run's own outcome."""
    try:
        git(repo, "worktree", "remove", "--force", str(dest))
    except UsageError:
        shutil.rmtree(dest, ignore_errors=True)
        try:
            git(repo, "worktree", "prune")
        except UsageError:
            pass


def start_side(side: str, rnd: int, tree: Path, json_path: Path, args: Sequence[str], cpus=None):
    """Start one side's pytest (pinned to `cpus` when given); (process, command, start time)."""
    # Each side of a round is already one fresh process, the A/B's unit of evidence: it measures
    # in itself and spawns none (an environment variable, which a base revision without
    # --perf-processes ignores, where an unknown option would fail it).
    env = machine.child_env(PYTHONHASHSEED="0", PERF_AB_SIDE=side, PERF_AB_ROUND=str(rnd), **{machine.CHILD_ENV: "1"})
    cmd = pytest_command(tree, json_path, args)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=pin)
    return proc, cmd, time.perf_counter()


def finish_side(side: str, rnd: int, started, json_path: Path, rev_label: str) -> float:
    """Wait for one side's pytest; its wall time. UsageError naming the side with pytest's last lines."""
    proc, cmd, start = started
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not json_path.exists():
        tail = "\n".join(out.rstrip().splitlines()[-TAIL_LINES:])
        raise UsageError(f"pytest failed on {side} ({rev_label}, round {rnd}, exit status {proc.returncode}); "
                      f"command: {shlex.join(cmd)}\n{tail}")
    return wall


def run_side(side: str, rnd: int, tree: Path, json_path: Path, args: Sequence[str], rev_label: str) -> float:
    """Run one side's pytest alone; its wall time."""
    return finish_side(side, rnd, start_side(side, rnd, tree, json_path, args), json_path, rev_label)


def resolve_mode(mode: str) -> str:
    """``auto``: duet where there are two CPUs to split and no GPU that both sides would share."""
    if mode != "auto":
        return mode
    return "duet" if len(machine.cpus()) >= 2 and not machine.gpu_visible() else "sequential"


def cpu_halves() -> tuple[set[int], set[int]]:
    """This process's CPUs split in two disjoint halves, for a duet."""
    cpus = machine.cpus()
    if len(cpus) < 2:
        raise UsageError(f"--mode duet needs at least 2 CPUs, this process may use {len(cpus)}")
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:2 * half])


def describe_machine() -> str:
    return f"{platform.node()}, {platform.platform()}, {platform.python_implementation()} {platform.python_version()}, " \
           f"{os.cpu_count()} CPUs"


# --------------------------------------------------------------------------- the command


def measure_rounds(orders, side_args, prefix: str, *, trees, labels, json_dir: Path, halves, statistic: str,
                   log) -> dict[str, list[dict[str, float]]]:
    """Run one round per entry of `orders` (duet when `halves` is given); {side: one dict per round}.
    Each process's JSON is written as json_dir/PREFIX-NN-SIDE.json."""
    rounds = {BASE: [], HEAD: []}
    for rnd, order in enumerate(orders, 1):
        walls = []
        paths = {side: json_dir / f"{prefix}-{rnd:02d}-{side}.json" for side in order}
        for path in paths.values():
            path.unlink(missing_ok=True)
        if halves:  # both at once; the first of the order takes the first half of the CPUs
            started = {side: start_side(side, rnd, trees[side], paths[side], side_args[side], cpus)
                       for side, cpus in zip(order, halves)}
            try:
                for side in order:
                    wall = finish_side(side, rnd, started[side], paths[side], labels[side])
                    walls.append(f"{side} {wall:.1f} s on CPUs {sorted(halves[order.index(side)])}")
            finally:
                for proc, *_ in started.values():
                    if proc.poll() is None:  # the other side failed: do not leave this one running
                        proc.kill()
                        proc.wait()
        else:
            for side in order:
                wall = run_side(side, rnd, trees[side], paths[side], side_args[side], labels[side])
                walls.append(f"{side} {wall:.1f} s")
        for side in order:
            rounds[side].append(read_round(paths[side], statistic))
        log(f"{prefix} {rnd}/{len(orders)}: {', '.join(walls)}")
    if not any(rounds[BASE]) and not any(rounds[HEAD]):
        raise UsageError("no benchmark results on either side "
                      "(nothing selected, or benchmarks disabled by -n or --benchmark-disable?)")
    return rounds


def run(opts: argparse.Namespace) -> int:
    opts.mode = resolve_mode(opts.mode)
    repo = toplevel(opts.repo)
    base_rev = opts.base if opts.base is not None else default_base(repo)
    base_sha = resolve(repo, base_rev)
    head_sha = resolve(repo, opts.head) if opts.head is not None else None
    if head_sha is None:
        dirty = ", uncommitted changes" if git(repo, "status", "--porcelain") else ""
        head_label = f"working tree (HEAD {git(repo, 'rev-parse', '--short', 'HEAD')}{dirty})"
    else:
        head_label = f"{head_sha[:12]} ({opts.head})"
    base_label = f"{base_sha[:12]} ({opts.base if opts.base is not None else 'default: ' + base_rev[:12]})"
    orders = round_orders(opts.rounds, opts.seed)
    log = lambda msg: print(f"perf.ab: {msg}", file=sys.stderr, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="perf-ab-") as tmp:
        tmp = Path(tmp)
        json_dir = Path(opts.workdir) if opts.workdir else tmp
        json_dir.mkdir(parents=True, exist_ok=True)
        worktrees = []
        try:
            trees = {}
            trees[BASE] = add_worktree(repo, base_sha, tmp / "base")
            worktrees.append(trees[BASE])
            if head_sha is not None:
                trees[HEAD] = add_worktree(repo, head_sha, tmp / "head")
                worktrees.append(trees[HEAD])
            else:
                trees[HEAD] = repo
            labels = {BASE: base_label, HEAD: head_label}
            side_args = {BASE: [*opts.pytest_args, *opts.base_args], HEAD: [*opts.pytest_args, *opts.head_args]}
            log(f"base {base_label}; head {head_label}; {opts.rounds} rounds, {opts.mode}")
            halves = cpu_halves() if opts.mode == "duet" else None
            measure = functools.partial(measure_rounds, trees=trees, labels=labels, json_dir=json_dir,
                                        halves=halves, statistic=opts.statistic, log=log)
            measured = measure(orders, side_args, "round")
            metric = metric_of(opts.pytest_args)
            comps = decide(measured[BASE], measured[HEAD], opts.threshold, opts.alpha, opts.confidence, metric=metric)
            # Counts repeat: measuring them again decides nothing new.
            names = to_recheck(comps) if opts.recheck_rounds and not metric.counted else []
            if names:
                log(f"{len(names)} undecided: measuring them again, {opts.recheck_rounds} rounds")
                again_orders = round_orders(opts.recheck_rounds, opts.seed + 1)
                again = measure(again_orders, {side: recheck_args(args, names) for side, args in side_args.items()},
                                "recheck")
                comps = decide_with_recheck(measured, again, names, opts.threshold, opts.alpha, opts.confidence)
        finally:
            for tree in worktrees:
                remove_worktree(repo, tree)

    per_process = "minima" if opts.statistic == "min" else "medians"
    how = ("A/B, duet: base and head at once on disjoint CPUs in each round" if opts.mode == "duet"
           else "A/B, interleaved rounds")
    meta = {
        "title": "Performance A/B",
        "metric": metric_of(opts.pytest_args).value,
        "mode": how + f" in fresh processes, Yuen's trimmed paired t-test on log ratios of per-process {per_process}",
        "base": base_label,
        "head": head_label,
        "rounds": opts.rounds,
        "order": [f"{a[0].upper()}{b[0].upper()}" for a, b in orders],
        "order seed": opts.seed,
        "statistic": f"{opts.statistic} of each process's samples",
        "recheck": (f"{opts.recheck_rounds} more rounds of the {len(names)} undecided benchmark(s), "
                    f"order seed {opts.seed + 1}" if names else
                    "none needed" if opts.recheck_rounds else "off"),
        "threshold": f"{opts.threshold * 100:.3g}% (raised where a benchmark's baseline noise floor is higher)",
        "alpha": opts.alpha,
        "correction": f"Holm over {gate.tested_count(comps)} comparisons",
        "confidence": opts.confidence,
        "pytest args": shlex.join(opts.pytest_args) or "(none)",
        "machine": describe_machine(),
    }
    if opts.base_args or opts.head_args:
        meta["pytest args, one side"] = f"base: {shlex.join(opts.base_args) or '-'}; head: {shlex.join(opts.head_args) or '-'}"
    print(render.to_text(comps, meta), end="")
    try:
        if opts.json:
            extra = {"rounds": measured}
            if names:
                extra["recheck rounds"] = again
            results.write_json(opts.json, results.verdict_report(comps, meta, extra))
        if opts.markdown:
            Path(opts.markdown).write_text(render.to_markdown(comps, meta), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write the report: {e.strerror or e} ({e.filename})") from None
    return exit_status(comps)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 pass, 1 regression, 2 usage or environment error (one line), 130 interrupted."""
    return run_main("perf.ab", lambda: run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
