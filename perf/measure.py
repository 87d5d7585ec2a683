"""Times one case: validate, calibrate, warm up, measure, judge, record, annotate.

The kernels know nothing of this: the timer (device-synchronising where needed), the round
plan and the statistics live here and in the gate. pytest-benchmark only stores and displays
what is measured here (``pb.record``).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
from collections.abc import Callable

import pytest

from kernels.problem import Problem

from . import callgrind, gate, pb, processes
from .cases import PROBES, Bound, Case, bind
from .results import Metric
from .timers import timer_for

MAX_ROUNDS = 2_000  # bounds the run time of setup-heavy stages and the saved JSON
# Counting: calls counted per benchmark and process (and uninstrumented warm-up calls before them),
# fewer from HEAVY_FLOPS a call, and the most work a counted call may do. Under callgrind a call
# runs several hundred times slower than on the CPU; in a heavy call the interpreter's share,
# which the warm-up settles, is below 0.1% (docs/results/counts.md).
COUNT_CALLS = 10
COUNT_CALLS_HEAVY = 3
HEAVY_FLOPS = 1e6
COUNT_FLOPS_LIMIT = 2e8


def time_round(bound: Bound, timer: Callable[[], float], iterations: int) -> float:
    """Seconds for one round of ``iterations`` calls (setup, when the case has one, outside the clock)."""
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


def rounds(bound: Bound, timer: Callable[[], float], count: int, iterations: int) -> list[float]:
    """``count`` rounds: seconds per call, one value per round."""
    return [time_round(bound, timer, iterations) / iterations for _ in range(count)]


class Plan:
    """How one benchmark is timed in this process: calibrated once, then any number of rounds."""

    def __init__(self, bound: Bound, timer: Callable[[], float], min_time: float, max_time: float, min_rounds: int) -> None:
        self.bound, self.timer = bound, timer
        min_round_s = max(min_time, 100 * timer_overhead(timer))
        call_s = calibrate(bound, timer, min_round_s)
        self.rounds, self.iterations = plan(call_s, min_round_s=min_round_s, max_time_s=max_time, min_rounds=min_rounds,
                                            can_loop=bound.setup is None)

    def measure(self, count: int | None = None) -> list[float]:
        """Warm-up rounds (a tenth, at least one, discarded), then ``count`` (default: the plan's) rounds."""
        count = self.rounds if count is None else count
        rounds(self.bound, self.timer, max(1, count // 10), self.iterations)
        return rounds(self.bound, self.timer, count, self.iterations)


def checked(case: Case) -> Bound:
    """The case made runnable, its result verified against the float64 reference first: a fast wrong
    kernel fails its benchmark and is never timed (never recorded, in a child of --perf-processes,
    whose parent checks before it records)."""
    bound = bind(case)
    why = None if processes.checked_by_parent() else bound.check()
    if why:
        pytest.fail(f"{case.id}: {case.backend} computes {case.stage} wrongly: {why}", pytrace=False)
    return bound


def cannot_count(case: Case, b) -> str:
    """Why ``case`` is not counted under callgrind ('' where it is)."""
    if b.device_name != "cpu":
        return f"counting under callgrind is for CPU backends; {case.backend} runs on {b.device_name}"
    if case.stage in PROBES:
        return "a roofline probe measures a rate of time: it is not counted"
    flops = case.problem.flops(case.stage)
    if flops > COUNT_FLOPS_LIMIT:
        return (f"{case.id}: {flops:.3g} FLOPs a call would take too long to count under callgrind "
                f"(the limit is {COUNT_FLOPS_LIMIT:.0e} a call: use --perf-metric time at this size)")
    return ""


def count_request(request: dict) -> dict:
    """The counting server's handler (perf.callgrind.serve): in a child forked for this one benchmark
    from a process under callgrind, bind the case afresh and count its calls; what callgrind saw per call.

    A fork per benchmark: what ran before (other benchmarks, their order, the selection) leaves
    nothing behind that the count could see (docs/results/counts.md)."""
    from .machine import pin_threads

    pin_threads(request["threads"], import_torch=False)  # a numpy zygote never imports torch
    case = Case(request["stage"], request["backend"], Problem(**request["problem"]))
    bound = bind(case)
    calls, warmup = count_plan(case)
    counted = callgrind.count(bound.target, bound.args, setup=bound.setup, name=request["name"], calls=calls,
                              warmup=warmup)
    return counted.per_call.summary()


def count_plan(case: Case) -> tuple[int, int]:
    """(counted calls, warm-up calls) for counting ``case``."""
    if case.problem.flops(case.stage) >= HEAVY_FLOPS:
        return COUNT_CALLS_HEAVY, COUNT_CALLS_HEAVY
    return COUNT_CALLS, callgrind.DEFAULT_WARMUP


def count_request_for(case: Case, name: str, threads: int) -> dict:
    """The request ``count_request`` answers for ``case``."""
    return {"stage": case.stage, "backend": case.backend, "problem": dataclasses.asdict(case.problem), "name": name,
            "threads": threads}


def run(benchmark, case: Case, perf, item: pytest.Item) -> None:
    """The body of every perf test: check the result, time it, judge it, record it."""
    pb.mark_used(benchmark)  # a failed check measures nothing, on purpose
    bound = checked(case)
    if benchmark.disabled:  # under xdist or --benchmark-disable: one call as a smoke test
        bound.target(*(bound.setup()[0] if bound.setup else bound.args))
        return
    timer = timer_for(bound.backend, perf.settings.timer)
    name = benchmark.fullname
    counts: dict = {}
    if perf.in_processes is not None:  # measured (or counted) and judged in fresh processes
        measured = perf.in_processes.get(name)
        if measured is None:
            pytest.fail(f"{case.id}: none of the processes measured it (see their lines above)", pytrace=False)
        samples, iterations, verdict, per_process = measured.samples, 1, perf.verdicts.get(name), measured.processes
        counts = measured.counts()
    else:
        plan_ = Plan(bound, timer, *pb.limits(benchmark))
        samples, iterations, per_process = plan_.measure(), plan_.iterations, []
        verdict = perf.judge(name, samples)
        if verdict is not None and gate.undecided(verdict):
            # Undecided: measured again, twice as many rounds, and decided on all of them.
            samples += plan_.measure(2 * plan_.rounds)
            verdict = perf.judge(name, samples, note=f"measured again, {2 * plan_.rounds} more rounds")
    pb.record(benchmark, samples, timer, iterations=iterations, group=case.group)
    annotate(benchmark, case, bound, perf, statistics.median(samples))
    if per_process:
        benchmark.extra_info["processes"] = [dataclasses.asdict(p) for p in per_process]
    benchmark.extra_info.update(counts)  # per call: instructions, branches, mispredicts, cache misses, cycles
    perf.finished(name, samples, verdict, item)


def annotate(benchmark, case: Case, bound: Bound, perf, median: float) -> None:
    p = case.problem
    flops, nbytes = p.flops(case.stage), p.bytes(case.stage)
    benchmark.extra_info.update({
        "stage": case.stage,
        "backend": case.backend,
        "device": bound.backend.device_name,
        "dtype": p.dtype,
        "size": p.name,
        "shape": {"N": p.N, "D_in": p.D_in, "H": p.H, "D_out": p.D_out},
        "metric": perf.settings.metric,
        "flops": flops,
        "bytes": nbytes,
        "threads": perf.threads,
    })
    if not Metric(perf.settings.metric).counted:  # rates are of time; a count has none
        benchmark.extra_info.update({"median_s": median, "gflops": flops / median / 1e9, "gbps": nbytes / median / 1e9,
                                     "timer": pb.timer_name(benchmark)})
