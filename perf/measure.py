"""The timing loop: calibrate a case's rounds, warm up, time them. Nothing else.

The kernels know nothing of this: the timer (device-synchronising where needed, ``perf.timers``)
and the round plan live here; what to do with the samples (judge, record, save) is the session's.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable

from .cases import Bound

MAX_ROUNDS = 2_000  # bounds the run time of setup-heavy stages and the saved JSON


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
    """Seconds per call, from rounds grown until one lasts ``min_round_s`` (doubles as warm-up). A call that
    alone lasts a round is timed twice, not three times: the plan needs its size, not its best time."""
    iterations = 1
    while True:
        first = time_round(bound, timer, iterations)
        tries = 1 if first >= min_round_s and iterations == 1 else 2
        elapsed = min([first, *(time_round(bound, timer, iterations) for _ in range(tries))])
        if elapsed >= min_round_s or bound.setup or iterations >= 1 << 20:
            return elapsed / iterations
        iterations *= 10 if elapsed < min_round_s / 10 else 2


def rounds(bound: Bound, timer: Callable[[], float], count: int, iterations: int) -> list[float]:
    """``count`` rounds: seconds per call, one value per round."""
    return [time_round(bound, timer, iterations) / iterations for _ in range(count)]


class Plan:
    """How one benchmark is timed in this process: calibrated once (or given the time of a call another
    process calibrated), then any number of rounds."""

    def __init__(self, bound: Bound, timer: Callable[[], float], min_time: float, max_time: float, min_rounds: int,
                 call_s: float | None = None) -> None:
        self.bound, self.timer = bound, timer
        min_round_s = max(min_time, 100 * timer_overhead(timer))
        self.call_s = calibrate(bound, timer, min_round_s) if call_s is None else call_s
        self.rounds, self.iterations = plan(self.call_s, min_round_s=min_round_s, max_time_s=max_time,
                                            min_rounds=min_rounds, can_loop=bound.setup is None)

    def measure(self, count: int | None = None, warm_up: bool = True) -> list[float]:
        """Warm-up rounds (a tenth, at least one, discarded; none where the caller warmed the code up), then
        ``count`` (default: the plan's) rounds."""
        count = self.rounds if count is None else count
        if warm_up:
            rounds(self.bound, self.timer, max(1, count // 10), self.iterations)
        return rounds(self.bound, self.timer, count, self.iterations)


def warm_up(bound: Bound) -> None:
    """One call, discarded: what a first call initialises (library state, caches, lazily made objects)."""
    bound.target(*(bound.setup()[0] if bound.setup else bound.args))
