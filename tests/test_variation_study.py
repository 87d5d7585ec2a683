"""studies/variation_study.py: its analysis on constructed data (measuring is what the script does on a
real machine, not a test)."""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "studies" / "variation_study.py"
_spec = importlib.util.spec_from_file_location("variation_study", _PATH)
vs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs)


def test_nested_sds_splits_between_and_within_groups():
    # Group means -1 and +1 (sd of means sqrt(2)); values +-0.5 about them (within sd sqrt(1/3) for 4 per group).
    groups = [[-1.5, -0.5, -1.5, -0.5], [0.5, 1.5, 0.5, 1.5]]
    between, within = vs.nested_sds(groups)
    assert within == pytest.approx(math.sqrt(4 * 0.25 * 2 / 6))
    assert between == pytest.approx(math.sqrt(2 - within**2 / 4))
    # The same values with the groups mixed: no group effect at all.
    between, within = vs.nested_sds([[-1.5, 1.5, -0.5, 0.5], [-0.5, 0.5, -1.5, 1.5]])
    assert between == 0.0 and within > 0
    with pytest.raises(ValueError):
        vs.nested_sds([[1.0, 2.0]])


def test_two_means_finds_two_levels_and_counts_groups_that_straddle_them():
    low, high = [0.0, 0.01, -0.01, 0.02], [0.5, 0.49, 0.51, 0.5]
    cut, ml, mh, share = vs.two_means(low + high)
    assert 0.02 < cut < 0.49 and ml == pytest.approx(0.005) and mh == pytest.approx(0.5)
    assert share > 0.99
    _, _, _, share_normal = vs.two_means([statistics.NormalDist().inv_cdf((i + 0.5) / 200) for i in range(200)])
    assert 0.55 < share_normal < 0.7   # one Gaussian level: about 1 - 2/pi
    assert vs.two_means([1.0, 1.0, 1.0])[3] == 0.0
    assert vs.mixed_groups([low, high, [0.0, 0.5], [0.5, 0.01]], cut) == 2


def test_processes_needed_follows_the_normal_interval():
    sd = math.log(1.05) / vs.Z95  # one process already within +-5%
    assert vs.processes_needed(sd) == 1
    assert vs.processes_needed(2 * sd) == 4
    assert vs.processes_needed(2 * sd, sides=2) == 8
    assert vs.processes_needed(0.0) == 1


def test_split_floor_measures_the_aa_gap_between_disjoint_sets():
    assert vs.split_floor([0.3] * 10, 2, statistics.fmean) == 0.0
    two_levels = [0.0] * 5 + [0.4] * 5
    # One process a side: often one of each level, so the 95% floor is the whole gap.
    assert vs.split_floor(two_levels, 1, statistics.fmean, draws=500) == pytest.approx(0.4)
    # The minimum of 5 of each: nearly always both sides reach the low level... except when one
    # side drew all five high ones: rare, under 5%.
    assert vs.split_floor(two_levels, 5, min, draws=500) == 0.0
    with pytest.raises(ValueError):
        vs.split_floor(two_levels, 6, min)


def test_block_floor_tells_more_processes_from_more_blocks_of_one():
    # Every process has one slow block in three: the minimum over 3 blocks of one process always finds
    # the fast level, 3 blocks from 3 processes do not always.
    groups = [[0.0, 0.0, 0.5]] * 8
    assert vs.block_floor(groups, 3, across=False, draws=500) == 0.0
    assert vs.block_floor(groups, 1, across=False, draws=500) == pytest.approx(0.5)
    # Processes wholly at one level or the other: more blocks of one process never help, more processes do.
    levels = [[0.0] * 3] * 4 + [[0.5] * 3] * 4
    assert vs.block_floor(levels, 3, across=False, draws=500) == pytest.approx(0.5)
    # 3 processes a side: one side all slow in about 14% of the draws; 4 a side: about 3%.
    assert vs.block_floor(levels, 3, across=True, draws=2000) == pytest.approx(0.5)
    assert vs.block_floor(levels, 4, across=True, draws=2000) == 0.0
    with pytest.raises(ValueError):
        vs.block_floor(levels, 5, across=True)
    with pytest.raises(ValueError):
        vs.block_floor(levels, 4, across=False)


def test_timeline_finds_slowness_that_persists_in_time():
    def process(slow_at):
        blocks = [{"t": t, "rounds": [1.5 if slow_at(t) else 1.0]} for t in range(0, 40, 2)]
        other = [{"t": t, "rounds": [3.0 if slow_at(t) else 2.0]} for t in range(1, 40, 2)]
        return {"benchmarks": {"a": {"blocks": blocks}, "b": {"blocks": other}}}

    share, corr = vs.timeline(process(lambda t: t >= 20))   # the second half of the run slow, both benchmarks
    assert share == 0.5 and corr > 0.8
    share, corr = vs.timeline(process(lambda t: t % 2 == 0))  # one benchmark slow throughout: not a state in time
    assert share == 0.0
    assert vs.lag1([0.0, 1.0] * 10) < -0.8 and vs.lag1([1.0] * 5) == 0.0


def test_smallest_p_is_none_when_even_half_the_processes_do_not_settle():
    assert vs.smallest_p([0.0] * 8, statistics.fmean) == 1
    assert vs.smallest_p([0.0, 1.0] * 4, statistics.fmean) is None
    assert vs.smallest_p([0.0] * 9 + [1.0], min, draws=500) == 2


def test_flag_effect_is_measured_within_groups():
    # Group b is 1.0 higher throughout; the flag adds 0.2 in both groups.
    rows = [("a", False, 0.0), ("a", True, 0.2), ("b", False, 1.0), ("b", True, 1.2), ("b", False, 1.0), ("b", True, 1.2)]
    assert vs.flag_effect(rows) == pytest.approx(0.2)
    assert vs.flag_effect([("a", False, 0.0), ("b", False, 1.0)]) is None


def test_log_stat_and_robust_sd():
    assert vs.log_stat([2.0, 1.0, 4.0], "min") == 0.0
    assert vs.log_stat([2.0, 1.0, 4.0], "median") == math.log(2.0)
    assert vs.robust_sd([0.0, 1.0, 2.0, 1000.0]) == pytest.approx(1.4826)


def test_process_order_spreads_the_aslr_off_processes():
    order = vs.process_order(4, 2)
    assert len(order) == 6 and sum(order) == 2 and order != [False] * 4 + [True] * 2
    assert vs.process_order(3, 0) == [False] * 3


def _study(level) -> dict:
    """4 processes x 2 benchmarks; level(process, condition, block) scales every round of a block."""
    procs = []
    for k in range(4):
        benchmarks = {}
        for name in ("seed-relu-numpy", "seed-loss-numpy"):
            blocks = [{"condition": c, "block": j, "t": 3 * j + i_c, "cpu": [j % 2, j % 2], "runnable": [1, 1 + k % 2],
                       "address": 4096 if c == "same" else 4096 * j + 64 * j,
                       "rounds": [level(k, c, j) * (1 + 0.001 * i) for i in range(40)]}
                      for j in range(4) for i_c, c in enumerate(vs.CONDITIONS)]
            benchmarks[name] = {"iterations": 1, "blocks": blocks}
        procs.append({"index": k, "aslr_off": False, "benchmarks": benchmarks, "wall_s": 1.0,
                      "load_before": [0.5, 0, 0], "load_after": [0.6, 0, 0], "busy": 0.5, "steal": 0.0})
    meta = {"machine": "test box", "started_utc": "2026-12-01 00:00:00", "minutes": 1.0, "command": "x", "blocks": 4}
    return {"meta": meta, "processes": procs}


def test_summarise_tells_a_process_effect_from_a_block_effect():
    per_process = vs.summarise(_study(lambda k, c, j: 1.5 if k % 2 else 1.0))[0]
    assert per_process["proc_same"] > 0.2 and per_process["block_rebind"] == pytest.approx(0.0, abs=1e-12)
    assert per_process["levels"] == pytest.approx(1.5) and per_process["share"] > 0.99
    assert per_process["mixed_same"] == 0 and per_process["mixed_rebound"] == 0
    assert per_process["pp_min_p_mean"] is None   # two processes of each level: no split settles
    assert per_process["design2_floor"] == pytest.approx(math.log(1.5))
    # Re-bound blocks alternate between the two levels in every process; same blocks never move.
    per_block = vs.summarise(_study(lambda k, c, j: 1.5 if c != "same" and j % 2 else 1.0))[0]
    assert per_block["proc_rebind"] == pytest.approx(0.0, abs=1e-12) and per_block["block_rebind"] > 0.2
    assert per_block["block_same"] == pytest.approx(0.0, abs=1e-12)
    assert per_block["mixed_same"] == 0 and per_block["mixed_rebound"] == 4
    assert per_block["cpu_effect"] is not None and per_block["busy_effect"] is not None


def test_address_spread_tells_moved_arrays_from_kept_ones():
    study = _study(lambda k, c, j: 1.0)
    assert vs.address_spread(study, "same") == (0.25, 1.0)
    assert vs.address_spread(study, "rebind") == (1.0, 4.0)


def test_render_has_a_row_per_benchmark_and_process():
    text = vs.render(_study(lambda k, c, j: 1.0 + 0.1 * k))
    assert text.count("| seed-relu-numpy |") == 4 and text.count("| seed-loss-numpy |") == 4
    assert "| 4 | on |" in text and "test box" in text


def test_bad_arguments_are_one_line_errors(capsys):
    assert vs.main(["--blocks", "0"]) == 2
    assert vs.main(["--processes", "2"]) == 2
    assert vs.main(["--analyse", "/nonexistent/study.json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("variation_study: error: ") for line in err)
