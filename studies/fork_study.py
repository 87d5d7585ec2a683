"""Forked measuring processes against fresh ones (issue 22), for docs/results/fork-server.md.

    python studies/fork_study.py --workdir DIR [--pairs 3] [--processes 12] [--runs 2] [--out PATH] [-- PYTEST ARGS]

Two questions, on the default selection (or the pytest arguments after ``--``):

1. Wall time: the default ``pytest perf`` (6 processes, forked) against ``pytest perf --perf-processes 1``,
   one after the other, ``--pairs`` times, alternating which goes first.
2. Independence: are forked children as independent as fresh processes? ``--runs`` runs each of
   ``pytest perf --perf-processes P --perf-launch fork`` and ``--perf-launch fresh``, alternating; per
   benchmark, the spread (standard deviation of the logs) of the P per-process minima. Forked children
   share the zygote's memory layout; fresh processes each get their own: if the children's minima spread
   less, they are less independent evidence, and the gate's process rule would be overconfident.

DIR keeps every run's JSON and study.json; the Markdown goes to --out (default: printed).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf comes from this checkout

from perf import command  # noqa: E402
from perf.cli import run_main, split_dashdash  # noqa: E402
from perf.results import load_run  # noqa: E402
from studies import common  # noqa: E402

PROG = "python studies/fork_study.py"


def timed(args: list[str], work: Path, name: str) -> float:
    """Run ``pytest perf ARGS`` from the checkout; its wall seconds (UsageError unless it passes)."""
    cmd = command.pytest_perf([*args, f"--benchmark-json={work / name}.json"], storage=work / "storage")
    return common.run(PROG, cmd, ROOT)[1]


def spreads(path: Path) -> dict[str, float]:
    """benchmark -> the standard deviation of the logs of its per-process minima."""
    out = {}
    for name, r in load_run(path).results.items():
        values = r.per_process("min")
        if len(values) > 2:
            out[name.partition("[")[2].rstrip("]")] = statistics.stdev(math.log(v) for v in values)
    return out


def measure(work: Path, pairs: int, processes: int, runs: int, selection: list[str]) -> dict:
    walls: dict[str, list[float]] = {"default": [], "one": []}
    for i in range(pairs):
        order = ("default", "one") if i % 2 == 0 else ("one", "default")
        for kind in order:
            extra = [] if kind == "default" else ["--perf-processes", "1"]
            walls[kind].append(timed([*selection, *extra], work, f"wall-{kind}-{i}"))
    spread: dict[str, list[dict[str, float]]] = {"fork": [], "fresh": []}
    for i in range(runs):
        for launch in (("fork", "fresh") if i % 2 == 0 else ("fresh", "fork")):
            name = f"spread-{launch}-{i}"
            timed([*selection, "--perf-processes", str(processes), "--perf-launch", launch], work, name)
            spread[launch].append(spreads(work / f"{name}.json"))
    return {"walls": walls, "spread": spread}


def render(study: dict, meta: dict) -> list[str]:
    """The Markdown report; a part measured zero times (``--pairs 0`` or ``--runs 0``) is left out."""
    walls, spread = study["walls"], study["spread"]
    lines = [f"Machine: {meta['machine']}. {meta['date']} UTC, commit {meta['commit']}. Command: `{meta['command']}`.", ""]
    if walls["default"]:
        ratios = [d / o for d, o in zip(walls["default"], walls["one"])]
        lines += ["### Wall time: the default run (6 processes, forked) against one process (target: at most 1.5x)", "",
                  "| pair | default | --perf-processes 1 | ratio |", "|---:|---:|---:|---:|"]
        lines += [f"| {i + 1} | {d:.0f} s | {o:.0f} s | {d / o:.2f}x |"
                  for i, (d, o) in enumerate(zip(walls["default"], walls["one"]))]
        lines += ["", f"Median ratio {statistics.median(ratios):.2f}x.", ""]
    if spread["fork"]:
        lines += _independence(spread, meta["processes"])
    return lines


def _independence(spread: dict[str, list[dict[str, float]]], processes: int) -> list[str]:
    lines = [f"### Independence: the spread of {processes} per-process minima, forked against fresh", "",
             "Per benchmark, the standard deviation of the logs of its per-process minima (0.01 is about 1%); "
             "the median over the runs of each kind. A ratio below 1: forked children agree more with each "
             "other than fresh processes do.", "",
             "| benchmarks | forked: median spread | fresh: median spread | forked / fresh: median of the ratios | "
             "benchmarks where forked spread less |", "|---|---:|---:|---:|---:|"]
    names = sorted(set.intersection(*(set(s) for s in [*spread["fork"], *spread["fresh"]])))
    fork = {n: statistics.median(s[n] for s in spread["fork"]) for n in names}
    fresh = {n: statistics.median(s[n] for s in spread["fresh"]) for n in names}
    for label, pick in (("all", lambda n: True), ("seed", lambda n: n.startswith("seed-")),
                        ("compute", lambda n: n.startswith("compute-")), ("roofline", lambda n: n.startswith("peak"))):
        mine = [n for n in names if pick(n)]
        if not mine:
            continue
        ratio = statistics.median(fork[n] / fresh[n] for n in mine if fresh[n] > 0)
        lines.append(f"| {label} ({len(mine)}) | {statistics.median(fork[n] for n in mine):.4f} | "
                     f"{statistics.median(fresh[n] for n in mine):.4f} | {ratio:.2f} | "
                     f"{sum(fork[n] < fresh[n] for n in mine)}/{len(mine)} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    own, tail = split_dashdash(argv)
    p = common.parser(PROG, __doc__, render=True)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--processes", type=int, default=12)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args(own)
    work = Path(args.workdir)
    study, meta = common.study(work, args.render, lambda: (
        measure(work, args.pairs, args.processes, args.runs, tail),
        {**common.meta("fork_study.py", argv), "processes": args.processes}))
    return common.publish(render(study, meta), args.out)


if __name__ == "__main__":
    sys.exit(main())
