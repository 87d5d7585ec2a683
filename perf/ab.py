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
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import command, envs, gate, machine, paths, render, results, revisions
from .cli import PASS, REGRESSION, Parser, UsageError, run_main, split_dashdash
from .metric import Metric
from .progress import Progress
from .rounds import BASE, HEAD, MODES, Rounds, Side, cpu_halves, measure_rounds, resolve_mode, round_orders
from .statistic import DEFAULT as DEFAULT_STATISTIC
from .statistic import STATISTICS

DEFAULT_ROUNDS = Metric.TIME.defaults.ab_rounds
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
                   help=f"rounds of base+head (default {DEFAULT_ROUNDS}; {Metric.INSTRUCTIONS.defaults.ab_rounds} for a "
                        "counted --perf-metric)")
    p.add_argument("--recheck-rounds", metavar="N", type=int, default=None,
                   help="rounds measuring again, once, only the benchmarks left undecided (default 2 x --rounds; 0: none)")
    p.add_argument("--statistic", choices=list(STATISTICS), default=DEFAULT_STATISTIC,
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
    p.add_argument("--base-env", metavar="SPEC",
                   help="measure this checkout in two Python environments: the base side's, as requirement specifiers "
                        "applied over the project's own (e.g. \"numpy==2.2.6\"), or a path to an environment's Python "
                        "(default with --head-env: this environment)")
    p.add_argument("--head-env", metavar="SPEC", help="the head side's environment, as --base-env (default with --base-env: "
                                                      "this environment)")
    for side in (HEAD, BASE):
        p.add_argument(f"--{side}-pytest-args", default="", metavar="ARGS",
                       help=f"extra pytest args for {side} only, one string (write --{side}-pytest-args=...)")
    return p


def metric_of(pytest_args: Sequence[str]) -> Metric:
    """The --perf-metric the pytest args ask for (time unless they say otherwise)."""
    args = list(pytest_args)
    for i, arg in enumerate(args):
        if arg == "--perf-metric" and i + 1 < len(args):
            return Metric.parse(args[i + 1], "--perf-metric")
        if arg.startswith("--perf-metric="):
            return Metric.parse(arg.split("=", 1)[1], "--perf-metric")
    return Metric.TIME


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Our options, plus `pytest_args` (what follows '--' and any option we do not know),
    `base_args`/`head_args` (split with shlex) and `threshold` parsed to a fraction."""
    argv, tail = split_dashdash(argv)
    opts, unknown = build_parser().parse_known_args(argv)
    opts.pytest_args = unknown + tail
    defaults = metric_of(opts.pytest_args).defaults
    if opts.rounds is None:
        opts.rounds = defaults.ab_rounds
    try:
        opts.threshold = defaults.threshold if opts.threshold is None else gate.parse_threshold(opts.threshold)
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
    paths.require_writable({"--json": opts.json, "--markdown": opts.markdown})
    return opts


# --------------------------------------------------------------------------- deciding


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
           metric: Metric = Metric.TIME, thresholds: Mapping[str, float] | None = None) -> list[gate.Comparison]:
    """Paired verdicts with Holm over all paired benchmarks; NEW and MISSING rows for the rest. ``thresholds``
    gives benchmarks a threshold of their own.

    Counts (a counted ``metric``) are judged by ``gate.compare_counts``, not by a test on the rounds: each
    side's rounds agree to the instruction, and what the two sides' code moves in memory is not in any
    round-to-round variance (docs/results/counts.md)."""
    paired, only_base, only_head = pair_rounds(base_rounds, head_rounds)
    own = dict(thresholds or {})
    if metric.counted:
        comps = [gate.compare_counts(n, b, h, own.get(n, threshold), metric.defaults.noise) for n, (b, h) in paired.items()]
    else:
        comps = [gate.compare_paired(n, b, h, own.get(n, threshold), alpha=alpha, confidence=confidence)
                 for n, (b, h) in paired.items()]
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
    return [a for a in args if not command.selects_paths([a])] + list(names)


def decide_with_recheck(first: Rounds, again: Rounds, names: Sequence[str], threshold: float, alpha: float = 0.05,
                        confidence: float = 0.95, thresholds: Mapping[str, float] | None = None) -> list[gate.Comparison]:
    """Verdicts on the first rounds plus the recheck's.

    Each of the rechecked `names` is decided on all its pairs; every other benchmark keeps its
    first rounds only (whatever else the recheck measured). Holm runs once, over every
    benchmark, on the final p-values."""
    names = set(names)
    more = {side: [{n: v for n, v in r.items() if n in names} for r in again[side]] for side in (BASE, HEAD)}
    comps = decide(first[BASE] + more[BASE], first[HEAD] + more[HEAD], threshold, alpha, confidence, thresholds=thresholds)
    rounds = len(again[BASE])
    return [c.with_note(f"measured again: {rounds} more rounds") if c.name in names else c for c in comps]


def exit_status(comparisons: Sequence[gate.Comparison]) -> int:
    """PASS when nothing REGRESSED, else REGRESSION."""
    return PASS if gate.passed(comparisons) else REGRESSION


# --------------------------------------------------------------------------- measuring and deciding


@dataclass(frozen=True)
class Design:
    """How an A/B measures and decides (the command's options, or a caller's choice)."""

    rounds: int = DEFAULT_ROUNDS
    recheck_rounds: int = 2 * DEFAULT_ROUNDS
    statistic: str = DEFAULT_STATISTIC
    mode: str = "auto"
    threshold: float = Metric.TIME.defaults.threshold
    alpha: float = 0.05
    confidence: float = 0.95
    seed: int = 0
    metric: Metric = Metric.TIME
    thresholds: Mapping[str, float] = field(default_factory=dict)   # benchmarks with a threshold of their own


@dataclass
class Outcome:
    """What an A/B measured and decided."""

    comparisons: list[gate.Comparison]
    rounds: Rounds
    orders: list[tuple[str, str]]
    mode: str
    rechecked: list[str] = field(default_factory=list)
    again: Rounds | None = None


def compare(sides: Mapping[str, Side], design: Design, json_dir: Path, log: Callable[[str], None],
            progress: Callable[[int, str], Progress] | None = None) -> Outcome:
    """Measure ``sides`` (base and head) in interleaved rounds and decide per benchmark; the undecided
    ones measured again, once, alone (``gate.undecided``: the one "measure again" rule of every mode).
    ``progress(steps, label)`` makes what shows the rounds go by (default: a line per round)."""
    progress = progress or (lambda steps, label: Progress(steps, label, log, live=False))
    mode = resolve_mode(design.mode)
    halves = cpu_halves() if mode == "duet" else None
    orders = round_orders(design.rounds, design.seed)
    with progress(len(orders), "A/B rounds") as shown:
        measured = measure_rounds(orders, sides, "round", json_dir=json_dir, halves=halves, statistic=design.statistic,
                                  progress=shown)
    comps = decide(measured[BASE], measured[HEAD], design.threshold, design.alpha, design.confidence,
                   metric=design.metric, thresholds=design.thresholds)
    # Counts repeat: measuring them again decides nothing new.
    names = to_recheck(comps) if design.recheck_rounds and not design.metric.counted else []
    outcome = Outcome(comps, measured, orders, mode)
    if names:
        log(f"{len(names)} undecided: measuring them again, {design.recheck_rounds} rounds")
        again_sides = {k: Side(s.tree, tuple(recheck_args(s.args, names)), s.label, s.python, s.env) for k, s in sides.items()}
        with progress(design.recheck_rounds, "A/B recheck") as shown:
            again = measure_rounds(round_orders(design.recheck_rounds, design.seed + 1), again_sides, "recheck",
                                   json_dir=json_dir, halves=halves, statistic=design.statistic, progress=shown)
        outcome.comparisons = decide_with_recheck(measured, again, names, design.threshold, design.alpha,
                                                  design.confidence, design.thresholds)
        outcome.rechecked, outcome.again = names, again
    return outcome


def meta(outcome: Outcome, design: Design, sides: Mapping[str, Side], pytest_args: Sequence[str]) -> dict:
    """The report's header: what was compared, how, and what decided."""
    per_process = "minima" if design.statistic == "min" else "medians"
    how = ("A/B, duet: base and head at once on disjoint CPUs in each round" if outcome.mode == "duet"
           else "A/B, interleaved rounds")
    if design.metric.counted:
        rule = (f"counts per call, judged by the count rule: the change against the larger of the spread within a side "
                f"and {gate.percent(design.metric.defaults.noise)} (no significance test)")
        correction = "none (no significance test)"
    else:
        rule = f"Yuen's trimmed paired t-test on log ratios of per-process {per_process}"
        correction = f"Holm over {gate.tested_count(outcome.comparisons)} comparisons"
    names = outcome.rechecked
    value = "minima" if design.statistic == "min" else "medians"
    columns = ({"baseline": "base (mean count)", "current": "head (mean count)", "change": "change of the means"}
               if design.metric.counted else
               {"baseline": f"base (median of process {value})", "current": f"head (median of process {value})",
                "change": "change (paired, trimmed)"})
    return {
        "title": "Performance A/B",
        render.COLUMNS: columns,
        "metric": design.metric.value,
        "mode": f"{how} in fresh processes, {rule}",
        "base": sides[BASE].label,
        "head": sides[HEAD].label,
        "rounds": design.rounds,
        "order": [f"{a[0].upper()}{b[0].upper()}" for a, b in outcome.orders],
        "order seed": design.seed,
        "statistic": f"{design.statistic} of each process's samples",
        "recheck": (f"{design.recheck_rounds} more rounds of the {len(names)} undecided benchmark(s), "
                    f"order seed {design.seed + 1}" if names else
                    "none needed" if design.recheck_rounds and not design.metric.counted else "off"),
        "threshold": f"{design.threshold * 100:.3g}% (raised where a benchmark's baseline noise floor is higher)",
        "alpha": design.alpha,
        "correction": correction,
        "confidence": design.confidence,
        "pytest args": shlex.join(pytest_args) or "(none)",
        "machine": machine.host_description(),
    }


# --------------------------------------------------------------------------- the command


def run(opts: argparse.Namespace) -> int:
    if opts.base_env or opts.head_env:
        return run_environments(opts)
    repo = revisions.toplevel(opts.repo)
    base_rev = opts.base if opts.base is not None else revisions.default_base(repo)
    base_sha = revisions.resolve(repo, base_rev)
    head_sha = revisions.resolve(repo, opts.head) if opts.head is not None else None
    head_label = revisions.describe_working_tree(repo) if head_sha is None else f"{head_sha[:12]} ({opts.head})"
    base_label = f"{base_sha[:12]} ({opts.base if opts.base is not None else 'default: ' + base_rev[:12]})"
    design = Design(opts.rounds, opts.recheck_rounds, opts.statistic, opts.mode, opts.threshold, opts.alpha,
                    opts.confidence, opts.seed, metric_of(opts.pytest_args))
    log = lambda msg: print(f"perf.ab: {msg}", file=sys.stderr, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="perf-ab-") as tmp:
        tmp = Path(tmp)
        json_dir = Path(opts.workdir) if opts.workdir else tmp
        json_dir.mkdir(parents=True, exist_ok=True)
        shas = {BASE: base_sha, **({HEAD: head_sha} if head_sha is not None else {})}
        with revisions.checked_out(repo, shas, tmp) as trees:
            sides = {BASE: Side(trees[BASE], (*opts.pytest_args, *opts.base_args), base_label),
                     HEAD: Side(trees.get(HEAD, repo), (*opts.pytest_args, *opts.head_args), head_label)}
            log(f"base {base_label}; head {head_label}; {opts.rounds} rounds, {resolve_mode(opts.mode)}")
            outcome = compare(sides, design, json_dir, log, lambda steps, label: Progress(steps, label, log,
                                                                                        live=sys.stderr.isatty()))
    header = meta(outcome, design, sides, opts.pytest_args)
    if opts.base_args or opts.head_args:
        header["pytest args, one side"] = (f"base: {shlex.join(opts.base_args) or '-'}; "
                                           f"head: {shlex.join(opts.head_args) or '-'}")
    return report(outcome, header, opts.json, opts.markdown)


def run_environments(opts: argparse.Namespace) -> int:
    """The same checkout (the working tree, or --head REV) measured in two environments, built first."""
    if opts.base is not None:
        raise UsageError("--base-env/--head-env measure one checkout in two environments: --base takes no part "
                         "(--head REV measures a revision instead of the working tree)")
    repo = revisions.toplevel(opts.repo)
    log = lambda msg: print(f"perf.ab: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    built = {side: envs.prepare(spec or "current", project_root=repo, log=log)
             for side, spec in ((BASE, opts.base_env), (HEAD, opts.head_env))}  # before anything is measured
    for side, env in built.items():
        log(f"{side}: {env.spec.text}: {env.description}")
    design = Design(opts.rounds, opts.recheck_rounds, opts.statistic, opts.mode, opts.threshold, opts.alpha,
                    opts.confidence, opts.seed, metric_of(opts.pytest_args))
    head_sha = revisions.resolve(repo, opts.head) if opts.head is not None else None
    checkout = revisions.describe_working_tree(repo) if head_sha is None else f"{head_sha[:12]} ({opts.head})"
    with tempfile.TemporaryDirectory(prefix="perf-ab-") as tmp:
        json_dir = Path(opts.workdir) if opts.workdir else Path(tmp)
        json_dir.mkdir(parents=True, exist_ok=True)
        with revisions.checked_out(repo, {HEAD: head_sha} if head_sha else {}, Path(tmp)) as trees:
            tree = trees.get(HEAD, repo)
            sides = {side: Side(tree, (*opts.pytest_args, *extra), f"{env.spec.text} ({env.description})", str(env.python))
                     for (side, env), extra in zip(built.items(), (opts.base_args, opts.head_args))}
            log(f"{checkout}; base {built[BASE].spec.text}; head {built[HEAD].spec.text}; {opts.rounds} rounds, "
                f"{resolve_mode(opts.mode)}")
            outcome = compare(sides, design, json_dir, log, lambda steps, label: Progress(steps, label, log,
                                                                                        live=sys.stderr.isatty()))
            fingerprints = {side: _fingerprint(json_dir / f"round-01-{side}.json") for side in (BASE, HEAD)}
    header = meta(outcome, design, sides, opts.pytest_args)
    header["title"] = "Performance A/B of two environments"
    stack = machine.differences(fingerprints[BASE], fingerprints[HEAD])
    change = "; ".join(stack) or "no difference in the fingerprint"
    header = {"summary": render.what_changed(outcome.comparisons, f"{built[BASE].spec.text} -> {built[HEAD].spec.text}"),
              **header, "checkout": checkout, "stack differences": change,
              "base fingerprint": fingerprints[BASE], "head fingerprint": fingerprints[HEAD]}
    return report(outcome, header, opts.json, opts.markdown)


def _fingerprint(path: Path) -> dict:
    """A side's machine fingerprint, from one of its processes' results."""
    try:
        return dict(results.load_run(path).fingerprint or {})
    except results.ResultsError:
        return {}


def report(outcome: Outcome, header: dict, json_path: str | None, markdown_path: str | None) -> int:
    """Print the verdicts, write the reports asked for; the exit status."""
    comps = outcome.comparisons
    print(render.to_text(comps, header), end="")
    try:
        if json_path:
            extra = {"rounds": outcome.rounds, **({"recheck rounds": outcome.again} if outcome.again else {})}
            results.write_json(json_path, render.verdict_report(comps, header, extra))
        if markdown_path:
            Path(markdown_path).write_text(render.to_markdown(comps, header), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write the report: {e.strerror or e} ({e.filename})") from None
    return exit_status(comps)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 pass, 1 regression, 2 usage or environment error (one line), 130 interrupted."""
    return run_main("perf.ab", lambda: run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
