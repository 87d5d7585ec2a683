"""Times one case with pytest-benchmark: validate, calibrate, warm up, measure, gate, annotate.

The kernels know nothing of this: the timer (device-synchronising where needed), the round
plan and the statistics live here.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
from collections.abc import Callable

import pytest

from .cases import Bound, Case, bind
from .timers import timer_for

MAX_ROUNDS = 2_000  # bounds the run time of setup-heavy stages and the saved JSON


def time_round(bound: Bound, timer: Callable[[], float], iterations: int) -> float:
    """Seconds for one round of ``iterations`` calls, as pytest-benchmark's own runner times it."""
    args = bound.setup()[0] if bound.setup else bound.args
    target = bound.target
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = timer()
        for _ in range(iterations):
            target(*args)
        return timer() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def timer_overhead(timer: Callable[[], float]) -> float:
    """The smallest interval the timer reports between two back-to-back readings."""
    return min(max(timer() - timer(), 0.0) for _ in range(20)) or 1e-7


def plan(call_s: float, *, min_round_s: float, max_time_s: float, min_rounds: int, can_loop: bool) -> tuple[int, int]:
    """(rounds, iterations): rounds of at least ``min_round_s`` filling ``max_time_s``."""
    iterations = max(1, math.ceil(min_round_s / call_s)) if can_loop and call_s > 0 else 1
    rounds = math.ceil(max_time_s / max(call_s * iterations, 1e-9))
    return min(max(rounds, min_rounds), MAX_ROUNDS), iterations


def calibrate(bound: Bound, timer: Callable[[], float], min_round_s: float) -> float:
    """Seconds per call, from rounds grown until one lasts ``min_round_s`` (doubles as warm-up)."""
    iterations = 1
    while True:
        elapsed = min(time_round(bound, timer, iterations) for _ in range(3))
        if elapsed >= min_round_s or bound.setup or iterations >= 1 << 20:
            return elapsed / iterations
        iterations *= 10 if elapsed < min_round_s / 10 else 2


def run(benchmark, case: Case, session) -> None:
    """The body of every perf test: check the result, then time it, then hand it to the gate."""
    bound = bind(case)
    why = bound.check()
    if why:
        pytest.fail(f"{case.id}: {case.backend} computes {case.stage} wrongly: {why}", pytrace=False)
    if benchmark.disabled:  # under xdist or --benchmark-disable: run once as a smoke test
        benchmark.pedantic(bound.target, args=bound.args, setup=bound.setup)
        return
    timer = timer_for(bound.backend, session.settings.timer)
    benchmark._timer = timer  # pytest-benchmark reads its clock from here (and records its name)
    min_round_s = max(benchmark._min_time, 100 * timer_overhead(timer))
    call_s = calibrate(bound, timer, min_round_s)
    rounds, iterations = plan(call_s, min_round_s=min_round_s, max_time_s=benchmark._max_time,
                              min_rounds=benchmark._min_rounds, can_loop=bound.setup is None)
    benchmark.group = case.group
    benchmark.pedantic(bound.target, args=bound.args, setup=bound.setup, rounds=rounds,
                       iterations=iterations, warmup_rounds=max(1, rounds // 10))
    samples = benchmark.stats.stats.data  # seconds per call, one per round
    comparison = session.judge(benchmark.fullname, samples)
    if comparison is not None and comparison.verdict in ("inconclusive", "regressed"):
        # Measure once more, in this run, twice as many rounds (added to the saved samples).
        # Inconclusive: decided on all the samples. Regressed: the fresh rounds alone must say
        # so too, so that a neighbour's burst during the first measurement fails nothing.
        fresh = [time_round(bound, timer, iterations) / iterations for _ in range(2 * rounds)]
        for seconds in fresh:
            benchmark.stats.update(seconds * iterations)
        if comparison.verdict == "inconclusive":
            comparison = session.judge(benchmark.fullname, benchmark.stats.stats.data, confirmed=2 * rounds)
        else:
            again = session.judge(benchmark.fullname, fresh, confirmed=2 * rounds)
            if again.verdict != "regressed":
                change = "" if again.ratio is None else f" ({again.ratio - 1:+.1%})"
                note = f"regression not confirmed: {len(fresh)} fresh rounds found it {again.verdict}{change}"
                comparison = dataclasses.replace(again, note=f"{note}; {again.note}" if again.note else note)
            else:
                comparison = again
    session.measured[benchmark.fullname] = benchmark.stats.stats.data
    annotate(benchmark, case, bound, session, statistics.median(benchmark.stats.stats.data))
    if comparison is not None:
        session.record(comparison)
        if comparison.verdict == "regressed":
            pytest.fail(session.describe(comparison), pytrace=False)


def annotate(benchmark, case: Case, bound: Bound, session, median_s: float) -> None:
    p = case.problem
    flops, nbytes = p.flops(case.stage), p.bytes(case.stage)
    benchmark.extra_info.update({
        "stage": case.stage,
        "backend": case.backend,
        "device": bound.backend.device_name,
        "dtype": p.dtype,
        "size": p.name,
        "shape": {"N": p.N, "D_in": p.D_in, "H": p.H, "D_out": p.D_out},
        "flops": flops,
        "bytes": nbytes,
        "median_s": median_s,
        "gflops": flops / median_s / 1e9,
        "gbps": nbytes / median_s / 1e9,
        "threads": session.threads,
        "timer": getattr(benchmark._timer, "__name__", str(benchmark._timer)),
    })
