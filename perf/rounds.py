"""Interleaved rounds of two sides: the A/B's measuring engine.

Each round runs each side once, as one fresh ``pytest perf`` process in its own tree (so each side
uses its own kernels and plugin) and with its own Python (so each side may use its own
environment). ``duet`` runs both sides of a round at the same time, each pinned to its own half of
the CPUs (which half alternates with the round order), so both see the same moment of a shared
machine; ``sequential`` runs them one after the other. The order of the sides is balanced over the
rounds and shuffled with a seed, so that drift cancels on average.
"""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import command, machine, results
from .errors import UsageError
from .progress import Progress
from .statistic import summarize

BASE, HEAD = "base", "head"
MODES = ("auto", "duet", "sequential")
TAIL_LINES = 15  # lines of a failing pytest's output shown

Rounds = dict[str, list[dict[str, float]]]   # side -> one {benchmark: value} per round


@dataclass(frozen=True)
class Side:
    """One side of an A/B: where it runs, with which Python and pytest arguments, and its name in messages."""

    tree: Path
    args: tuple[str, ...]
    label: str
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)   # more variables for this side's processes


def round_orders(rounds: int, seed: int) -> list[tuple[str, str]]:
    """Which side runs first in each round: base-first and head-first balanced (R/2 each, the
    odd one out decided by the seed), shuffled with `seed`, so that drift cancels on average."""
    rng = random.Random(seed)
    first_base = rounds // 2 + (rounds % 2 if rng.random() < 0.5 else 0)
    orders = [(BASE, HEAD)] * first_base + [(HEAD, BASE)] * (rounds - first_base)
    rng.shuffle(orders)
    return orders


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


def read_round(path: str | os.PathLike, statistic: str = "min") -> dict[str, float]:
    """{name: `statistic` of its samples} from one process's results file, in file order; benchmarks
    without raw samples (disabled, errored) are left out."""
    try:
        run = results.load_run(path)
    except results.ResultsError as exc:
        raise UsageError(f"cannot read the results of a side: {exc}") from None
    return {name: summarize(r.samples, statistic) for name, r in run.results.items() if r.samples}


def _start(name: str, rnd: int, side: Side, json_path: Path, cpus=None):
    """Start one side's pytest (pinned to `cpus` when given); (process, command, start time)."""
    # Each side of a round is already one fresh process, the A/B's unit of evidence: it measures
    # in itself and spawns none (an environment variable, which a revision without
    # --perf-processes ignores, where an unknown option would fail it).
    env = machine.child_env(base={**os.environ, **side.env}, PYTHONHASHSEED="0", PERF_AB_SIDE=name,
                            PERF_AB_ROUND=str(rnd), **{machine.CHILD_ENV: "1"})
    cmd = command.pytest_perf(side.args, python=side.python, json=json_path, rootdir=side.tree)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, cwd=side.tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=pin)
    return proc, cmd, time.perf_counter()


def _finish(name: str, rnd: int, started, json_path: Path, side: Side) -> float:
    """Wait for one side's pytest; its wall time. UsageError naming the side with pytest's last lines."""
    proc, cmd, start = started
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not json_path.exists():
        tail = "\n".join(out.rstrip().splitlines()[-TAIL_LINES:])
        raise UsageError(f"pytest failed on {name} ({side.label}, round {rnd}, exit status {proc.returncode}); "
                         f"command: {shlex.join(cmd)}\n{tail}")
    return wall


def measure_rounds(orders: Sequence[tuple[str, str]], sides: Mapping[str, Side], prefix: str, *, json_dir: Path,
                   halves: tuple[set[int], set[int]] | None, statistic: str, progress: Progress) -> Rounds:
    """Run one round per entry of `orders` (duet when `halves` is given); {side: one dict per round}.
    Each process's JSON is written as json_dir/PREFIX-NN-SIDE.json."""
    rounds: Rounds = {BASE: [], HEAD: []}
    for rnd, order in enumerate(orders, 1):
        progress.step(f"{prefix} {rnd}/{len(orders)}")
        walls = []
        paths = {name: json_dir / f"{prefix}-{rnd:02d}-{name}.json" for name in order}
        for path in paths.values():
            path.unlink(missing_ok=True)
        if halves:  # both at once; the first of the order takes the first half of the CPUs
            started = {name: _start(name, rnd, sides[name], paths[name], cpus) for name, cpus in zip(order, halves)}
            try:
                for name in order:
                    wall = _finish(name, rnd, started[name], paths[name], sides[name])
                    walls.append(f"{name} {wall:.1f} s on CPUs {sorted(halves[order.index(name)])}")
            finally:
                for proc, *_ in started.values():
                    if proc.poll() is None:  # the other side failed: do not leave this one running
                        proc.kill()
                        proc.wait()
        else:
            for name in order:
                wall = _finish(name, rnd, _start(name, rnd, sides[name], paths[name]), paths[name], sides[name])
                walls.append(f"{name} {wall:.1f} s")
        for name in order:
            rounds[name].append(read_round(paths[name], statistic))
        progress.finished(f"{prefix} {rnd}/{len(orders)}: {', '.join(walls)}")
    if not any(rounds[BASE]) and not any(rounds[HEAD]):
        raise UsageError("no benchmark results on either side "
                         "(nothing selected, or benchmarks disabled by -n or --benchmark-disable?)")
    return rounds
