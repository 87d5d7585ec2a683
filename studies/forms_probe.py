"""Interleaved in one process: each form of the step, each stage alone (plain and out=), and the peak matmul.

    PYTHONPATH=. python studies/forms_probe.py [--size seed] [--backend numpy,torch-cpu] [--rounds 30] [--clock thread]

Every call is the one the step makes (same arrays, same buffers; lr 0, so every call does the same
work), timed in blocks, the blocks of every label in a shuffled order each round, so that the
machine's drift hits them all alike; medians per call. Prints the ratios the kernel targets are
about: workspace_step over the sum of its stages' out= forms, train_step over the sum of its stages,
and every step over its matmul floor (the five matmuls' FLOPs at the peak matmul rate measured here,
an N x N by N x N matmul, ``--peak`` N, default 2048 as the roofline probe). ``--clock thread``
reads this thread's CPU time instead of the wall clock: on a machine shared with more runnable
processes than cores, it leaves out the time the process waited for a core (not the cache damage).
``--breakdown`` also times each out= call inside workspace steps, call by call, against the same
call repeated alone: where a step's time goes beyond the sum of its stages. ``--bandwidth`` times
instead each elementwise stage (plain and out=) against the roofline's copy (8192 x 8192), interleaved,
and prints its share of the copy bandwidth (use the memory-bound size: ``--size gpu``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

import kernels
from kernels import check, tutorial
from kernels.backend import OUTPUTS, SCRATCHES, train_step, workspace_step
from kernels.problem import MATMUL_STAGES, STAGES
from perf.machine import pin_threads


def stage_calls(b: kernels.Backend, ws, v: dict, out: bool) -> dict[str, Callable[[], object]]:
    """Each stage's call(s) within one step, with the step's own arrays (out=: the workspace's buffers)."""
    r = b.raw
    w = {**v, **ws.arrays()}
    args = {
        "hidden": ("x", "w1"), "relu": ("h",), "output": ("h_relu", "w2"), "loss": ("y_pred", "y"),
        "grad_y_pred": ("y_pred", "y"), "grad_w2": ("h_relu", "grad_y_pred"), "grad_h_relu": ("grad_y_pred", "w2"),
        "relu_backward": ("grad_h_relu", "h"), "grad_w1": ("x", "grad_h"),
    }
    calls: dict[str, Callable[[], object]] = {}
    for stage, names in args.items():
        fn, a = getattr(r, stage), tuple(w[n] for n in names)
        kw = {"out": w[OUTPUTS[stage]]} | ({"scratch": w[SCRATCHES[stage][0]]} if stage in SCRATCHES else {}) if out else {}
        calls[stage] = lambda fn=fn, a=a, kw=kw: fn(*a, **kw)
    s1, s2 = (w["w1_scratch"], w["w2_scratch"]) if out else (None, None)

    def sgd() -> None:
        r.sgd_update(w["w1"], w["grad_w1"], 0.0, scratch=s1)
        r.sgd_update(w["w2"], w["grad_w2"], 0.0, scratch=s2)

    calls["sgd_update"] = sgd
    return calls


def interleave(calls: dict[str, Callable[[], object]], rounds: int, budget_s: float,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call; each label's block holds enough calls to last about ``budget_s``."""
    blocks = {}
    for label, call in calls.items():
        start = time.perf_counter()
        call()
        blocks[label] = max(1, int(budget_s / max(time.perf_counter() - start, 1e-7)))
    times: dict[str, list[float]] = {label: [] for label in calls}
    labels = list(calls)
    for _ in range(rounds):
        random.shuffle(labels)
        for label in labels:
            call, n = calls[label], blocks[label]
            start = clock()
            for _ in range(n):
                call()
            times[label].append((clock() - start) / n)
    return {label: statistics.median(t) for label, t in times.items()}


def probe(name: str, size: str, rounds: int, peak_n: int, clock: Callable[[], float]) -> None:
    problem = kernels.parse_problem(size)
    b = kernels.backend(name)
    inputs = {k: b.asarray(a) for k, a in problem.inputs().items()}
    ws = b.workspace(problem.shape)
    params, x, y = (inputs["w1"], inputs["w2"]), inputs["x"], inputs["y"]
    workspace_step(b.raw, ws, params, x, y, 0.0)  # fills the workspace with one step's values
    values = {**inputs, **{k: b.asarray(b.to_numpy(a)) for k, a in ws.arrays().items()}}
    rng = np.random.default_rng(0)
    a = b.asarray(rng.standard_normal((peak_n, peak_n)))
    c = b.empty((peak_n, peak_n))
    calls = {f"{s} out=": f for s, f in stage_calls(b, ws, values, out=True).items()}
    calls |= {s: f for s, f in stage_calls(b, ws, values, out=False).items()}
    literal = tutorial.STEPS[b.raw.FAMILY]
    calls |= {
        "workspace_step": lambda: workspace_step(b.raw, ws, params, x, y, 0.0),
        "train_step": lambda: train_step(b.raw, params, x, y, 0.0),
        "tutorial_step": lambda: literal(x, y, params[0], params[1], 0.0),
        "peak_matmul": lambda: b.raw.hidden(a, a, out=c),
    }
    budget = 2e-3 if size == "seed" else 0.05
    m = interleave(calls, rounds, budget, clock)
    peak = 2 * peak_n ** 3 / m["peak_matmul"]
    floor = sum(problem.flops(s) for s in MATMUL_STAGES) / peak
    out_sum = sum(m[f"{s} out="] for s in STAGES)
    plain_sum = sum(m[s] for s in STAGES)
    print(f"{name} {problem.name}: peak matmul {peak / 1e9:.1f} GFLOP/s, matmul floor {floor * 1e3:.4g} ms")
    print("  stages (plain / out=, us): " + "; ".join(f"{s} {m[s] * 1e6:.2f} / {m[f'{s} out=']* 1e6:.2f}" for s in STAGES))
    for step, total in (("workspace_step", out_sum), ("train_step", plain_sum), ("tutorial_step", plain_sum)):
        print(f"  {step:15s} {m[step] * 1e3:9.4f} ms: over its stages' sum {m[step] / total:.3f}x, "
              f"over the matmul floor {m[step] / floor:.3f}x")


def breakdown(name: str, size: str, clock: Callable[[], float], steps: int = 300) -> None:
    """Median time of each out= call inside a sequence of workspace steps and repeated alone."""
    problem = kernels.parse_problem(size)
    b = kernels.backend(name)
    inputs = {k: b.asarray(a) for k, a in problem.inputs().items()}
    ws = b.workspace(problem.shape)
    calls = stage_calls(b, ws, inputs, out=True)
    inside: dict[str, list[float]] = {s: [] for s in calls}
    alone: dict[str, list[float]] = {s: [] for s in calls}
    for _ in range(steps):
        for stage, call in calls.items():  # in the step's order
            start = clock()
            call()
            inside[stage].append(clock() - start)
    for stage, call in calls.items():
        for _ in range(steps):
            start = clock()
            call()
            alone[stage].append(clock() - start)
    cells = [(s, statistics.median(inside[s]), statistics.median(alone[s])) for s in calls]
    total_in, total_alone = sum(c[1] for c in cells), sum(c[2] for c in cells)
    print(f"  {name} {problem.name}, us per call inside a step / alone: "
          + "; ".join(f"{s} {i * 1e6:.2f} / {a * 1e6:.2f}" for s, i, a in cells)
          + f"; sum {total_in * 1e6:.1f} / {total_alone * 1e6:.1f} ({total_in / total_alone:.3f}x)")


def bandwidth(name: str, size: str, rounds: int, clock: Callable[[], float]) -> None:
    """Each elementwise stage's achieved bandwidth (the model's bytes) as a share of a large copy's, interleaved."""
    problem = kernels.parse_problem(size)
    b = kernels.backend(name)
    values = {k: b.asarray(a) for k, a in check.intermediates(problem).items()}
    ws = b.workspace(problem.shape)
    src = b.asarray(np.random.default_rng(0).standard_normal((8192, 8192)))
    dst = b.empty((8192, 8192))
    elementwise = ("relu", "loss", "grad_y_pred", "relu_backward", "sgd_update")
    out, plain = stage_calls(b, ws, values, out=True), stage_calls(b, ws, values, out=False)
    calls = {**{f"{s} out=": out[s] for s in elementwise}, **{s: plain[s] for s in elementwise},
             "copy": lambda: b.raw.copy(dst, src)}
    m = interleave(calls, rounds, 0.05, clock)
    copy_gbps = 2 * src.numel() * problem.itemsize / m["copy"] / 1e9 if hasattr(src, "numel") else \
        2 * src.nbytes / m["copy"] / 1e9
    print(f"  {name} {problem.name}: copy {copy_gbps:.1f} GB/s; share of it (model bytes / time): " + "; ".join(
        f"{label} {problem.bytes(label.split()[0]) / m[label] / 1e9 / copy_gbps:.0%}" for label in calls if label != "copy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="seed")
    parser.add_argument("--backend", default="numpy,torch-cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--peak", type=int, default=2048)
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--bandwidth", action="store_true")
    args = parser.parse_args()
    print(f"threads {pin_threads(1)}; clock {args.clock}")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    for name in args.backend.split(","):
        if args.bandwidth:
            bandwidth(name, args.size, args.rounds, clock)
            continue
        probe(name, args.size, args.rounds, args.peak, clock)
        if args.breakdown:
            breakdown(name, args.size, clock)


if __name__ == "__main__":
    main()
