"""perf.steps on constructed series: no step, one step, two steps, a slow ramp, outlier runs, runs
without per-process data, and each run weighed by its own spread."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perf import steps


def history(levels: list[float], *, noise: float = 0.01, processes: int = 6, seed: int = 0,
            spreads: bool = True) -> tuple[list[float], list[float | None]]:
    """(values, spreads) of runs at ``levels``: each run a fastest process's minimum out of ``processes``,
    run and process noise of ``noise`` (in logs); spreads None for runs measured in one process."""
    rng = np.random.default_rng(seed)
    values, own = [], []
    for level in levels:
        run = level * math.exp(rng.normal(0, noise))
        per_process = [run * math.exp(abs(rng.normal(0, noise))) for _ in range(processes)]
        values.append(min(per_process))
        own.append(steps.spread(per_process) if spreads else None)
    return values, own


def test_a_flat_history_has_no_step_and_no_drift():
    fit = steps.detect(*history([1.0] * 20))
    assert fit.steps == ()
    assert len(fit.levels) == 1
    assert fit.drift.low < 1 < fit.drift.high


@pytest.mark.parametrize("size", [1.5, 1.1])
def test_one_step_is_found_at_its_first_run_with_its_size(size):
    fit = steps.detect(*history([1.0] * 14 + [size] * 6))
    (step,) = fit.steps
    assert step.index == 14
    assert step.ratio == pytest.approx(size, rel=0.03)
    assert step.low < step.ratio < step.high
    assert step.slower_than(0.05)
    assert not step.slower_than(size - 1 + 0.05)


def test_the_interval_of_a_step_holds_its_true_size_about_as_often_as_it_claims():
    fits = [steps.detect(*history([1.0] * 14 + [1.1] * 6, seed=seed)) for seed in range(40)]
    found = [s for fit in fits for s in fit.steps if s.index == 14]
    assert len(found) == 40
    assert sum(s.low < 1.1 < s.high for s in found) >= 34  # of 38 expected at 95%
    assert not [s for fit in fits for s in fit.steps if s.index != 14 and s.slower_than(0.05)]


def test_two_steps_are_both_found():
    fit = steps.detect(*history([1.0] * 8 + [1.2] * 6 + [1.5] * 6))
    assert [s.index for s in fit.steps] == [8, 14]
    assert [s.ratio for s in fit.steps] == pytest.approx([1.2, 1.25], rel=0.03)
    assert [(lv.start, lv.stop) for lv in fit.levels] == [(0, 8), (8, 14), (14, 20)]


def test_a_clear_step_smaller_than_min_step_is_no_step_and_its_levels_are_one():
    values, spreads = history([1.0] * 10 + [1.03] * 10, noise=0.002)
    (step,) = steps.detect(values, spreads).steps
    assert step.index == 10 and step.low > 1.02  # clear: its whole interval past +2%
    for least in (0.05, 0.04):
        fit = steps.detect(values, spreads, min_step=least)
        assert fit.steps == () and [(lv.start, lv.stop) for lv in fit.levels] == [(0, 20)]
    assert [s.index for s in steps.detect(values, spreads, min_step=0.025).steps] == [10]


def test_min_step_counts_either_way_and_leaves_larger_steps_where_they_are():
    values, spreads = history([1.0] * 7 + [1.02] * 7 + [1.5] * 6, noise=0.002)
    assert [s.index for s in steps.detect(values, spreads).steps] == [7, 14]
    (step,) = steps.detect(values, spreads, min_step=0.05).steps
    assert step.index == 14 and step.ratio == pytest.approx(1.5 / 1.01, rel=0.02)  # the level before: both merged
    faster = history([1.0] * 10 + [0.97] * 10, noise=0.002)
    assert len(steps.detect(*faster).steps) == 1 and steps.detect(*faster, min_step=0.05).steps == ()


def test_a_step_in_the_newest_runs_counts_in_full_in_the_drift():
    fit = steps.detect(*history([1.0] * 7 + [1.5] * 3))
    assert [s.index for s in fit.steps] == [7]
    assert fit.drift.ratio == pytest.approx(1.5, rel=0.03)


def test_a_slow_ramp_shows_as_drift():
    creep = [1.02 ** i for i in range(20)]
    fit = steps.detect(*history(creep))
    assert fit.drift.ratio == pytest.approx(creep[-2] / creep[1], rel=0.05)  # the middles of the first and last 3 runs
    assert fit.drift.slower_than(0.25)


@pytest.mark.parametrize("outliers", [1, 2])
def test_outlier_runs_are_no_step(outliers):
    levels = [1.0] * 20
    levels[10:10 + outliers] = [1.5] * outliers
    assert steps.detect(*history(levels)).steps == ()


def test_a_step_needs_min_segment_runs_at_its_new_level():
    short = [1.0] * 10 + [1.5] * (steps.MIN_SEGMENT - 1)
    assert steps.detect(*history(short)).steps == ()
    assert [s.index for s in steps.detect(*history([*short, 1.5])).steps] == [10]


def test_runs_without_per_process_data_weigh_equally_and_say_so():
    values, _ = history([1.0] * 14 + [1.5] * 6)
    fit = steps.detect(values, [None] * len(values))
    assert [s.index for s in fit.steps] == [14]
    assert not fit.measured and "weighed equally" in fit.weighting


def test_runs_without_per_process_data_among_others_get_the_pooled_spread():
    values, spreads = history([1.0] * 14 + [1.5] * 6)
    spreads[:5] = [None] * 5
    fit = steps.detect(values, spreads)
    assert [s.index for s in fit.steps] == [14]
    assert fit.pooled == 5 and "5 run(s) without per-process values" in fit.weighting


def test_each_run_weighs_by_its_own_spread():
    # Three slow runs whose processes disagreed widely: noise to the weighted fit, a level to an unweighted one.
    values, spreads = history([1.0] * 10 + [1.3] * 3 + [1.0] * 7)
    spreads[10:13] = [0.5] * 3
    assert steps.detect(values, spreads).steps == ()
    assert [s.index for s in steps.detect(values, [None] * len(values)).steps] == [10, 13]


def test_a_step_is_found_where_a_slow_process_inflated_the_spread_of_runs_after_it():
    # The nightly history of docs/results/history.md: relu +55% from run 8 on, two of its three runs with one
    # slow process each (spreads 10% and 14% against about 1%); their values, the fastest processes', moved.
    values = [7.04, 7.17, 7.12, 7.14, 6.97, 7.00, 7.26, 11.2, 11.0, 10.9]
    spreads = [.016, .013, .009, .009, .010, .006, .009, .100, .011, .139]
    (step,) = steps.detect(values, spreads).steps
    assert step.index == 7 and step.slower_than(0.05)


def test_identical_counts_step_with_an_exact_size():
    fit = steps.detect([1000.0] * 5 + [1030.0] * 5, [0.0] * 10)
    (step,) = fit.steps
    assert (step.index, step.low, step.high) == (5, pytest.approx(1.03), pytest.approx(1.03))


def test_levels_from_another_segmenter_are_used_and_a_short_one_joins_the_nearer_neighbour():
    values = [1.0, 1.01, 0.99, 1.0, 2.0, 2.02, 1.98, 2.0, 2.01, 1.99]
    fit = steps.detect(values, [None] * 10, segment=lambda v, s: [4, 5, 10])  # a level of one run at 4
    assert [(lv.start, lv.stop) for lv in fit.levels] == [(0, 4), (4, 10)]
    assert [s.index for s in fit.steps] == [4]


def test_short_series():
    assert steps.detect([], []) == steps.Fit((), (), None, pooled=0, measured=False)
    one = steps.detect([2.0], [None])
    assert one.steps == () and one.drift is None and one.levels == (steps.Level(0, 1, 2.0),)


def test_spread_is_the_standard_deviation_of_the_logs_of_the_per_process_values():
    assert steps.spread([1.0]) is None
    assert steps.spread([]) is None
    assert steps.spread([2.0, 2.0, 2.0]) == 0.0
    assert steps.spread([1.0, math.e]) == pytest.approx(math.sqrt(0.5))


def test_slower_than_needs_the_whole_interval_past_the_threshold():
    change = steps.Change(before=1.0, after=1.2, low=1.04, high=1.4)
    assert change.ratio == pytest.approx(1.2)
    assert change.slower_than(0.03) and not change.slower_than(0.05)
