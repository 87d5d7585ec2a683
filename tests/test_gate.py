"""The gate's decisions on constructed samples (seeded), its multiple-comparison control, its
renderings, and the false-alarm rate and power of the A/B mode at the default round count."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from perf import gate, render
from perf.ab import DEFAULT_ROUNDS
from perf.gate import IMPROVED, INCONCLUSIVE, MISSING, NEW, REGRESSED, UNCHANGED, Comparison, GateError

MS = 1e-3


def lognormal(seed: int, n: int, median: float = MS, sigma: float = 0.05) -> np.ndarray:
    return median * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))


def paired_rounds(rng: np.random.Generator, rounds: int, shift: float = 1.0, sigma: float = 0.02, drift: float = 0.02):
    """Per-process medians of base and head over `rounds` rounds: a drift shared within a round
    (the machine getting busier or quieter) times independent lognormal noise per process."""
    common = rng.normal(0.0, drift, rounds)
    base = MS * np.exp(common + rng.normal(0.0, sigma, rounds))
    head = MS * shift * np.exp(common + rng.normal(0.0, sigma, rounds))
    return base, head


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("text, expected", [("10%", 0.10), ("0.1", 0.10), (0.1, 0.10), (" 12.5 % ", 0.125), ("0%", 0.0),
                                            (0, 0.0), ("150%", 1.5), (".05", 0.05), (1.5, 1.5)])
def test_parse_threshold_accepts_percentages_and_fractions(text, expected):
    assert gate.parse_threshold(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["abc", "", "-5%", "-0.1", "nan", "inf%", "10%%", "%", "1e400", None, True, [0.1]])
def test_parse_threshold_rejects_junk_with_one_line_saying_what_is_accepted(text):
    with pytest.raises(GateError) as info:
        gate.parse_threshold(text)
    message = str(info.value)
    assert "\n" not in message and "10%" in message and "0.1" in message


def test_parse_threshold_refuses_an_ambiguous_bare_number():
    with pytest.raises(GateError, match=r"ambiguous threshold '10'.*'10%'"):
        gate.parse_threshold("10")
    with pytest.raises(GateError, match="ambiguous"):
        gate.parse_threshold("1.5")


def test_noise_floor_is_half_the_relative_iqr():
    assert gate.noise_floor([1, 2, 3, 4, 5]) == pytest.approx((4 - 2) / (2 * 3))
    assert gate.noise_floor([5.0] * 10) == 0.0
    assert gate.noise_floor([1.0, 2.0]) == 0.0  # too few to estimate
    assert gate.noise_floor([1, 2, 3, 4, 5, float("nan"), -1.0]) == pytest.approx(1 / 3)  # bad samples ignored


def test_threshold_below_the_baseline_noise_floor_is_raised():
    noisy = lognormal(1, 400, sigma=0.3)  # half relative IQR about 0.2
    floor = gate.noise_floor(noisy)
    assert 0.15 < floor < 0.25
    # A 12% slowdown, significant with 400 samples a side, is within this baseline's own noise.
    c = gate.compare_unpaired("noisy", noisy, lognormal(2, 400, median=1.12 * MS, sigma=0.3), "5%")
    assert c.threshold == pytest.approx(floor)
    assert c.verdict != REGRESSED
    assert "threshold raised from 5% to the baseline noise floor" in c.note
    # A/B: the floor is the baseline's spread around each round's level, not its raw spread.
    rng = np.random.default_rng(9)
    noisy_processes = gate.compare_paired("p", *paired_rounds(rng, 8, sigma=0.3, drift=0.0), 0.05)
    assert noisy_processes.threshold > 0.08 and "raised" in noisy_processes.note
    drifting_rounds = gate.compare_paired("d", *paired_rounds(rng, 8, sigma=0.01, drift=0.3), 0.05)
    assert drifting_rounds.threshold == 0.05


# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize("ratio, low, high, p, expected", [
    (1.30, 1.20, 1.40, 0.001, REGRESSED),
    (1.30, 1.20, 1.40, 0.2, INCONCLUSIVE),     # past the threshold, not significant
    (1.15, 1.05, 1.25, 0.001, INCONCLUSIVE),   # significant, interval includes the threshold
    (1.05, 1.02, 1.08, 0.001, UNCHANGED),      # significant but smaller than the threshold
    (0.70, 0.65, 0.75, 0.001, IMPROVED),
    (0.85, 0.80, 0.95, 0.001, INCONCLUSIVE),   # 1/1.1 = 0.909 is inside the interval
    (1.00, 0.95, 1.05, 0.9, UNCHANGED),
    (None, None, None, None, INCONCLUSIVE),
    (1.30, None, None, None, INCONCLUSIVE),
    (1.02, None, None, None, UNCHANGED),
])
def test_classify(ratio, low, high, p, expected):
    assert gate.classify(ratio, low, high, p, 0.10, 0.05) == expected


# --------------------------------------------------------------------------- saved-baseline mode


def test_unpaired_clear_regression():
    c = gate.compare_unpaired("slow", lognormal(1, 200), lognormal(2, 200, median=1.3 * MS), 0.10)
    assert c.verdict == REGRESSED
    assert c.ratio == pytest.approx(1.3, rel=0.03)
    assert 1.1 < c.ci_low < c.ratio < c.ci_high
    assert c.p_value < 1e-10 and c.p_adjusted == c.p_value
    assert (c.n_baseline, c.n_current) == (200, 200)


def test_unpaired_clear_improvement():
    c = gate.compare_unpaired("fast", lognormal(1, 200), lognormal(2, 200, median=0.7 * MS), 0.10)
    assert c.verdict == IMPROVED and c.ci_high < 1 / 1.1


def test_unpaired_same_distribution_is_not_flagged():
    for seed in range(20):
        c = gate.compare_unpaired("aa", lognormal(seed, 100), lognormal(seed + 100, 100), 0.05)
        assert c.verdict == UNCHANGED, c


def test_unpaired_borderline_is_inconclusive():
    # Estimate +15% against a 10% threshold, but 8 noisy samples a side leave the interval wide.
    c = gate.compare_unpaired("edge", lognormal(3, 8, sigma=0.1), lognormal(4, 8, median=1.15 * MS, sigma=0.1), 0.10)
    assert c.ratio > 1.1 and c.ci_low < 1.1
    assert c.verdict == INCONCLUSIVE


def test_unpaired_bonferroni_tests_divides_alpha():
    base, cur = lognormal(5, 5, sigma=0.02), lognormal(6, 5, median=1.5 * MS, sigma=0.02)
    alone = gate.compare_unpaired("b", base, cur, 0.10)
    assert alone.verdict == REGRESSED and alone.p_value == pytest.approx(2 / 252)  # exact MWU floor, 5 vs 5
    many = gate.compare_unpaired("b", base, cur, 0.10, tests=22)
    assert many.p_adjusted == pytest.approx(min(1, 22 * alone.p_value))
    assert many.verdict == INCONCLUSIVE


def test_unpaired_bootstrap_is_seeded_and_large_samples_are_fast():
    base, cur = lognormal(7, 50_000, sigma=0.2), lognormal(8, 50_000, median=1.02 * MS, sigma=0.2)
    a = gate.compare_unpaired("big", base, cur, 0.10, seed=3)
    b = gate.compare_unpaired("big", base, cur, 0.10, seed=3)
    assert a == b
    assert a.ci_low < 1.02 < a.ci_high and a.ci_high - a.ci_low < 0.02
    assert a.verdict == UNCHANGED  # significant, but 2% is under the threshold


# --------------------------------------------------------------------------- A/B mode


def test_paired_clear_regression_and_improvement():
    rng = np.random.default_rng(10)
    base, head = paired_rounds(rng, 8, shift=1.3)
    c = gate.compare_paired("slow", base, head, 0.10)
    assert c.verdict == REGRESSED and c.p_adjusted is None
    assert c.ratio == pytest.approx(1.3, rel=0.05) and c.ci_low > 1.1
    base, head = paired_rounds(rng, 8, shift=0.7)
    assert gate.compare_paired("fast", base, head, 0.10).verdict == IMPROVED


def test_paired_cancels_drift_that_unpaired_cannot():
    # Rounds drift by +-30% (a busy shared runner), head is 15% slower in every round.
    rng = np.random.default_rng(11)
    base, head = paired_rounds(rng, 8, shift=1.15, sigma=0.005, drift=0.3)
    assert gate.compare_paired("d", base, head, 0.05).verdict == REGRESSED
    assert gate.compare_unpaired("d", base, head, 0.05).verdict != REGRESSED


def test_paired_borderline_is_inconclusive():
    base = np.full(8, MS)
    spread = np.array([-0.05, 0.05, -0.03, 0.03, -0.01, 0.01, -0.04, 0.04])
    head = base * np.exp(math.log(1.12) + spread)
    c = gate.compare_paired("edge", base, head, 0.10)
    assert c.ratio == pytest.approx(1.12)
    assert c.p_value < 0.01 and c.ci_low < 1.1 < c.ratio
    assert c.verdict == INCONCLUSIVE


def test_paired_outlier_round_costs_power_not_a_false_alarm():
    rng = np.random.default_rng(12)
    base, head = paired_rounds(rng, 8)
    head[3] *= 100  # one process hit a 16 ms scheduler slice
    c = gate.compare_paired("spike", base, head, 0.10)
    assert c.verdict in (INCONCLUSIVE, UNCHANGED) and c.p_value > 0.05


def test_trimmed_t_is_yuens_statistic():
    d = np.array([0.3, -0.2, 0.1, 0.0, 5.0, 0.2, -0.1, 0.05, 0.15, -4.0])  # n = 10: two set aside at each end
    mean, se, df = gate.trimmed_t(d)
    kept = np.sort(d)[2:8]
    winsorized = np.clip(d, kept[0], kept[-1])
    assert mean == pytest.approx(kept.mean()) and df == 5
    assert se == pytest.approx(np.std(winsorized, ddof=1) / (0.6 * math.sqrt(10)))
    few = np.array([0.1, 0.2, 0.4, 0.3])  # n < 5: nothing trimmed, the plain t
    assert gate.trimmed_t(few) == pytest.approx((few.mean(), np.std(few, ddof=1) / 2, 3))


def test_paired_wild_rounds_are_set_aside_and_a_regression_still_shows():
    # 16 rounds of a 15% slowdown with 1% noise, three of them with one side's whole process
    # 40-60% slow (as the 2-core VM does): the plain mean and variance would follow those.
    rng = np.random.default_rng(13)
    base, head = paired_rounds(rng, 16, shift=1.15, sigma=0.01, drift=0.0)
    base[2] *= 1.6
    head[7] *= 1.4
    base[11] *= 1.5
    c = gate.compare_paired("wild", base, head, 0.05)
    assert c.verdict == REGRESSED and c.ratio == pytest.approx(1.15, rel=0.02)
    d = np.log(head / base)
    t_low = math.exp(d.mean() - 2.131 * d.std(ddof=1) / 4)
    assert t_low < 1.05 < c.ci_low  # the plain t interval would have reached below the threshold


def test_paired_every_round_slower_is_a_regression_not_trimmed_away():
    # Trimming sets rounds aside, never the level: a slowdown in every round stays whole.
    rng = np.random.default_rng(14)
    base, head = paired_rounds(rng, 16, shift=1.5, sigma=0.2, drift=0.0)
    assert gate.compare_paired("all", base, head, 0.10).ratio == pytest.approx(1.5, rel=0.15)


def test_paired_unequal_lengths_pair_the_first_rounds():
    c = gate.compare_paired("u", [1.0, 1.1, 0.9, 1.0], [1.0, 1.1, 0.9], 0.10)
    assert c.n_baseline == c.n_current == 3 and "paired the first 3" in c.note


# --------------------------------------------------------------------------- edge cases, both modes


@pytest.mark.parametrize("compare", [gate.compare_unpaired, gate.compare_paired])
def test_ties_are_unchanged(compare):
    same = [MS] * 10
    c = compare("ties", same, same, 0.10)
    assert c.verdict == UNCHANGED and c.ratio == 1.0 and c.p_value == 1.0
    varied = list(lognormal(13, 10))
    assert compare("same", varied, varied, 0.10).verdict == UNCHANGED


@pytest.mark.parametrize("compare", [gate.compare_unpaired, gate.compare_paired])
def test_zero_variance_but_different_is_decided_on_the_ratio(compare):
    c = compare("step", [MS] * 5, [2 * MS] * 5, 0.10)
    assert c.verdict == REGRESSED and c.ratio == pytest.approx(2.0) and c.ci_low == c.ci_high == pytest.approx(2.0)
    assert "zero variance" in c.note
    assert compare("step", [MS] * 5, [1.05 * MS] * 5, 0.10).verdict == UNCHANGED
    assert compare("step", [MS] * 5, [0.5 * MS] * 5, 0.10).verdict == IMPROVED


@pytest.mark.parametrize("compare", [gate.compare_unpaired, gate.compare_paired])
def test_too_few_samples_is_inconclusive_never_regressed(compare):
    c = compare("few", [MS, MS], [10 * MS, 10 * MS], 0.10)
    assert c.verdict == INCONCLUSIVE and "too few" in c.note
    assert c.p_value is None and c.ratio == pytest.approx(10.0)
    assert compare("none", [], [], 0.10).verdict == INCONCLUSIVE


@pytest.mark.parametrize("compare", [gate.compare_unpaired, gate.compare_paired])
def test_nan_inf_and_non_positive_samples_are_dropped_with_a_note(compare):
    base = list(lognormal(14, 10, sigma=0.01))
    head = list(lognormal(15, 10, median=1.5 * MS, sigma=0.01))
    base[2], base[5], head[7] = float("nan"), -1.0, float("inf")
    c = compare("nan", base, head, 0.10)
    assert c.verdict == REGRESSED and "dropped" in c.note
    everything_bad = [float("nan"), 0.0, float("inf"), -2.0]
    c = compare("bad", everything_bad, everything_bad, 0.10)
    assert c.verdict == INCONCLUSIVE and "too few" in c.note and c.ratio is None


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"alpha": 1.5}, {"confidence": 1.0}])
def test_bad_parameters_raise_gate_error(bad):
    with pytest.raises(GateError):
        gate.compare_paired("x", [1, 2, 3], [1, 2, 3], 0.1, **bad)


# --------------------------------------------------------------------------- many comparisons


def test_holm_adjusted_p_values_and_verdicts():
    def row(name, p):
        return Comparison(name, UNCHANGED, 0.10, ratio=1.5, ci_low=1.3, ci_high=1.7, p_value=p)

    rows = [row("c", 0.02), row("a", 0.001), row("d", 0.5), row("b", 0.011),
            Comparison("n", NEW, 0.10), Comparison("few", INCONCLUSIVE, 0.10, ratio=3.0, note="too few")]
    out = gate.holm(rows, 0.05)
    assert [c.name for c in out] == ["c", "a", "d", "b", "n", "few"]  # order kept
    adjusted = {c.name: c.p_adjusted for c in out}
    assert adjusted == pytest.approx({"a": 0.004, "b": 0.033, "c": 0.04, "d": 0.5, "n": None, "few": None})
    verdicts = {c.name: c.verdict for c in out}
    # Holm flags 0.02 (< 0.05/2); Bonferroni over 4 (0.0125) would not.
    assert verdicts == {"a": REGRESSED, "b": REGRESSED, "c": REGRESSED, "d": INCONCLUSIVE, "n": NEW, "few": INCONCLUSIVE}
    assert gate.tested_count(rows) == 4


def test_holm_removes_the_chance_significance_of_many_uncorrected_comparisons():
    # 50 A/A benchmarks: uncorrected, a few are "significant" by chance; after Holm, none.
    rng = np.random.default_rng(20)
    rows = [gate.compare_paired(f"b{i}", *paired_rounds(rng, DEFAULT_ROUNDS), 0.0) for i in range(50)]
    assert sum(c.p_value < 0.05 for c in rows) >= 1
    corrected = gate.holm(rows, 0.05)
    assert all(c.p_adjusted >= c.p_value for c in corrected)
    assert not any(c.p_adjusted < 0.05 for c in corrected)
    assert all(c.verdict not in (REGRESSED, IMPROVED) for c in corrected)


def test_holm_asks_more_evidence_of_each_of_many_comparisons():
    # A 50% slowdown measured in 4 rounds (p about 0.005) is clear alone, not among 20 benchmarks.
    base = np.full(4, MS)
    slow = gate.compare_paired("slow", base, base * np.exp(math.log(1.5) + np.array([-0.12, 0.12, -0.06, 0.06])), 0.10)
    assert slow.verdict == REGRESSED and 0.001 < slow.p_value < 0.01
    rng = np.random.default_rng(21)
    rows = [slow] + [gate.compare_paired(f"b{i}", *paired_rounds(rng, 4), 0.10) for i in range(19)]
    corrected = gate.holm(rows, 0.05)
    assert corrected[0].verdict == INCONCLUSIVE and corrected[0].p_adjusted > 0.05


# --------------------------------------------------------------------------- A/B false alarms and power


def simulated_suites(suites: int, shift: float, threshold: float, benchmarks: int = 22, seed: int = 0):
    """`suites` simulated A/B runs at the default round count, each of `benchmarks` comparisons
    decided with Holm; benchmark 0 of each suite gets `shift`, the rest are A/A."""
    rng = np.random.default_rng(seed)
    for _ in range(suites):
        rows = [gate.compare_paired(f"b{i}", *paired_rounds(rng, DEFAULT_ROUNDS, shift=shift if i == 0 else 1.0), threshold)
                for i in range(benchmarks)]
        yield gate.holm(rows, 0.05)


def test_ab_false_alarm_share_with_holm_is_at_most_one_percent():
    flagged = total = 0
    for rows in simulated_suites(100, shift=1.0, threshold=0.10, seed=1):
        flagged += sum(c.verdict in (REGRESSED, IMPROVED) for c in rows)
        total += len(rows)
    assert total == 2200 and flagged / total <= 0.01
    # Even with no threshold at all, Holm alone keeps A/A flags rare (about alpha/m each).
    flagged = total = 0
    for rows in simulated_suites(100, shift=1.0, threshold=0.0, seed=2):
        flagged += sum(c.verdict in (REGRESSED, IMPROVED) for c in rows)
        total += len(rows)
    assert flagged / total <= 0.01


def test_ab_unadjusted_p_values_are_calibrated():
    rng = np.random.default_rng(3)
    p = np.array([gate.compare_paired("aa", *paired_rounds(rng, DEFAULT_ROUNDS), 0.1).p_value for _ in range(2000)])
    assert 0.035 < np.mean(p < 0.05) < 0.065


def test_ab_detects_a_ten_percent_slowdown_in_at_least_90_percent():
    # 2% noise per process median plus 2% shared drift per round; threshold 5%; Holm over 22.
    detected = sum(rows[0].verdict == REGRESSED for rows in simulated_suites(200, shift=1.10, threshold=0.05, seed=4))
    assert detected / 200 >= 0.90


# --------------------------------------------------------------------------- renderings


@pytest.fixture
def report_rows():
    rng = np.random.default_rng(30)
    rows = [gate.compare_paired("perf/test_a.py::test_mm[numpy|seed]", *paired_rounds(rng, 8, shift=1.3), 0.10),
            gate.compare_paired("perf/test_a.py::test_relu[torch]", *paired_rounds(rng, 8), 0.10),
            gate.compare_paired("perf/test_a.py::test_fast", *paired_rounds(rng, 8, shift=0.6), 0.10),
            gate.compare_paired("perf/test_a.py::test_few", [MS, MS], [MS, MS], 0.10)]
    rows = gate.holm(rows, 0.05)
    rows.append(gate.new_benchmark("perf/test_a.py::test_new", [MS] * 5, 0.10))
    rows.append(gate.missing_benchmark("perf/test_a.py::test_gone", [2 * MS] * 5, 0.10))
    return rows


META = {"title": "Performance A/B", "mode": "A/B", "alpha": 0.05, "correction": "Holm over 4 comparisons",
        "confidence": 0.95, "machine": "test-box", "order": ["BH", "HB"], "details": {"ignored": True}}


def test_text_report_lists_every_row_meta_and_summary(report_rows):
    text = render.to_text(report_rows, META)
    for c in report_rows:
        assert c.name in text
    assert "correction: Holm over 4 comparisons" in text and "machine: test-box" in text and "order: BH, HB" in text
    assert "change [95% CI]" in text and "ignored" not in text
    lines = text.splitlines()
    assert lines[-1] == "FAIL: 1 regressed, 1 improved, 1 unchanged, 1 inconclusive, 1 new, 1 missing (6 benchmarks)"
    regressed = next(line for line in lines if "test_mm" in line and "regressed" in line)
    assert "+3" in regressed and "[" in regressed and "10%" in regressed and "ms" in regressed
    assert lines.index(regressed) < next(i for i, line in enumerate(lines) if "test_relu" in line)  # worst first


def test_markdown_report_is_a_github_table(report_rows):
    md = render.to_markdown(report_rows, META)
    assert md.startswith("### Performance A/B: FAIL (1 regressed)")
    assert "| Benchmark | Baseline | Current | Change [95% CI] | p | p adj. | Threshold | Verdict |" in md
    assert "`perf/test_a.py::test_mm[numpy\\|seed]`" in md and "**regressed**" in md and "**improved**" in md
    table = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(table) == 6 and all(line.replace("\\|", "").count("|") == 9 for line in table)
    assert "- **correction:** Holm over 4 comparisons" in md and "<details>" in md


def test_json_report_round_trips(report_rows):
    doc = json.loads(json.dumps(render.verdict_report(report_rows, META), allow_nan=False))
    assert doc["meta"]["correction"] == "Holm over 4 comparisons"
    assert doc["summary"]["passed"] is False and doc["summary"]["counts"][REGRESSED] == 1
    assert doc["summary"]["counts"][NEW] == doc["summary"]["counts"][MISSING] == 1
    names = {c["name"]: c for c in doc["comparisons"]}
    assert names["perf/test_a.py::test_mm[numpy|seed]"]["verdict"] == REGRESSED
    assert names["perf/test_a.py::test_gone"]["baseline_value"] == pytest.approx(2 * MS)
    assert set(names["perf/test_a.py::test_fast"]) >= {"ratio", "ci_low", "ci_high", "p_value", "p_adjusted", "threshold"}


def test_all_unchanged_passes():
    rows = [gate.compare_paired("a", [MS] * 4, [MS] * 4, 0.1)]
    assert gate.passed(rows) and render.summary_line(rows).startswith("PASS: 0 regressed")
    assert "PASS" in render.to_markdown(rows, {})
