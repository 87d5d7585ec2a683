"""Run to run: does a run's value of a benchmark move between runs of the same code more than its processes
spread inside one run? For docs/results/fork-server.md ("One zygote for all processes").

    python studies/layout_study.py --workdir DIR --base REV [--runs 6] [--out PATH] [-- PYTEST ARGS]

Alternates ``pytest perf`` of the selection (default: the compute stages whose torch-cpu figures missed in
docs/results/gate.md, numpy and torch-cpu) from a worktree of REV and from this checkout, ``--runs`` times each,
which goes first alternating. Per benchmark and side: the run's value (the minimum over its processes, what the
gate compares), its spread between runs (largest over smallest, and the standard deviation of the logs), and the
spread of the per-process minima inside a run (the median over the runs). A run whose processes all share one
state that another run does not is seen as a between-run spread well above the within-run one: the gate's
interval, made of one run's processes, cannot see it. Also each run's wall time.

DIR keeps every run's JSON and study.json; --render writes the report again from it.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf comes from this checkout

from perf import command, revisions  # noqa: E402
from perf.cli import run_main, split_dashdash  # noqa: E402
from perf.results import load_run  # noqa: E402
from studies import common  # noqa: E402

PROG = "python studies/layout_study.py"
SELECTION = ["--perf-size", "compute", "--perf-backend", "numpy,torch-cpu", "-k",
             "grad_w1 or relu_backward or grad_h_relu"]
SIDES = ("base", "head")


def _sd(values: list[float]) -> float:
    return statistics.stdev(math.log(v) for v in values) if len(values) > 1 else 0.0


def measure(work: Path, trees: dict[str, Path], runs: int, selection: list[str]) -> dict:
    """Every run's per-process minima ({side: [{benchmark: [minimum per process]}]}) and wall seconds."""
    found: dict[str, list[dict[str, list[float]]]] = {side: [] for side in SIDES}
    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    for i in range(runs):
        for side in (SIDES if i % 2 == 0 else SIDES[::-1]):
            out = work / f"{side}-{i}.json"
            cmd = command.pytest_perf(selection, json=out, storage=work / f"storage-{side}")
            walls[side].append(common.run(PROG, cmd, trees[side])[1])
            found[side].append({name.partition("[")[2].rstrip("]") + ("" if "stage_out" not in name else " (out=)"):
                                r.per_process("min") for name, r in load_run(out).results.items()})
    return {"minima": found, "walls": walls}


def render(study: dict, meta: dict) -> list[str]:
    minima, walls = study["minima"], study["walls"]
    names = sorted(set.intersection(*(set(run) for side in SIDES for run in minima[side])))
    lines = [f"Machine: {meta['machine']}. {meta['date']} UTC, commit {meta['commit']}, base {meta['base']}. "
             f"Command: `{meta['command']}`.", "",
             f"Each side {len(minima['base'])} runs, alternating. Per benchmark: the run's value (the minimum over "
             "its processes), largest over smallest across the runs, the standard deviation of the logs of those "
             "values (between runs), and the median over the runs of the same for the per-process minima of one "
             "run (within a run). 0.01 is about 1%.", "",
             "| benchmark | base: runs, largest/smallest | base: between / within | "
             "head: runs, largest/smallest | head: between / within |", "|---|---:|---:|---:|---:|"]
    for name in names:
        cells = []
        for side in SIDES:
            values = [min(run[name]) for run in minima[side]]
            within = statistics.median(_sd(run[name]) for run in minima[side])
            cells += [f"{max(values) / min(values):.3f}", f"{_sd(values):.4f} / {within:.4f}"]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Wall seconds a run: " + "; ".join(
        f"{side} {', '.join(f'{w:.0f}' for w in walls[side])}" for side in SIDES) + ".", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    own, tail = split_dashdash(argv)
    p = common.parser(PROG, __doc__, render=True)
    p.add_argument("--base", default="HEAD~1", help="the revision to measure against this checkout")
    p.add_argument("--runs", type=int, default=6)
    args = p.parse_args(own)
    work = Path(args.workdir)

    def measured() -> tuple[dict, dict]:
        sha = revisions.resolve(ROOT, args.base)
        with revisions.checked_out(ROOT, {"base": sha}, work / "trees") as trees:
            found = measure(work, {**trees, "head": ROOT}, args.runs, tail or SELECTION)
        return found, {**common.meta("layout_study.py", argv), "base": sha[:10]}

    study, meta = common.study(work, args.render, measured)
    return common.publish(render(study, meta), args.out)


if __name__ == "__main__":
    sys.exit(main())
