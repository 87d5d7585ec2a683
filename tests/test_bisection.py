"""The bisection engine on constructed outcomes: where changes are found, what probes it spends, how it
passes over skipped candidates and inconclusive verdicts, the confirmation, and the renderings."""

from __future__ import annotations

import math

import pytest

from perf import bisect
from perf.bisection import ANY_CHANGE, INCONCLUSIVE_TWICE, REGRESSION, Bisection, Skip, Status, find_first_changes
from perf.bisection_render import render_bisection
from perf.errors import UsageError
from perf.gate import IMPROVED, INCONCLUSIVE, MISSING, REGRESSED, UNCHANGED


def names(n: int) -> list[str]:
    return [f"c{i:02d}" for i in range(n)]


class Suite:
    """A constructed history: each benchmark's cost at each candidate, and a probe that compares two.

    ``steps[name]`` maps a candidate index to the cost added there (negative: faster); a probe says
    REGRESSED when head costs at least ``threshold`` more than base, IMPROVED when that much less.
    ``broken`` candidates are skipped; ``inconclusive[(base, head)] = (names, times)`` answers
    INCONCLUSIVE for those benchmarks the first ``times`` probes of that pair.
    """

    def __init__(self, n: int, steps: dict[str, dict[int, int]], *, broken=(), inconclusive=None, threshold: int = 1):
        self.candidates, self.steps, self.broken = names(n), steps, set(broken)
        self.inconclusive, self.threshold, self.calls = dict(inconclusive or {}), threshold, []

    def cost(self, name: str, candidate: str) -> int:
        index = self.candidates.index(candidate)
        return sum(added for at, added in self.steps[name].items() if at <= index)

    def probe(self, base: str, head: str):
        self.calls.append((base, head))
        if self.candidates.index(head) in self.broken:
            return Skip(f"{head} does not build")
        verdicts = {}
        for name in self.steps:
            delta = self.cost(name, head) - self.cost(name, base)
            verdicts[name] = REGRESSED if delta >= self.threshold else IMPROVED if delta <= -self.threshold else UNCHANGED
        unclear, times = self.inconclusive.get((base, head), ((), 0))
        if self.calls.count((base, head)) <= times:
            verdicts.update({name: INCONCLUSIVE for name in unclear})
        return verdicts

    def bisect(self, **kwargs) -> Bisection:
        return find_first_changes(self.candidates, list(self.steps), self.probe, **kwargs)


def only(result: Bisection, name: str = "a"):
    return next(b for b in result.benchmarks if b.name == name)


# --------------------------------------------------------------------------- where the change is


@pytest.mark.parametrize("at", range(1, 16))
def test_a_change_anywhere_in_16_candidates_is_found_in_at_most_6_probes(at):
    suite = Suite(16, {"a": {at: 1}})
    result = suite.bisect()
    answer = only(result)
    assert answer.status is Status.FOUND and answer.first_changed == f"c{at:02d}" and answer.predecessor == f"c{at - 1:02d}"
    assert answer.confirmation.verdict is REGRESSED and answer.confirmation.agrees and answer.change is REGRESSED
    assert (answer.confirmation.base, answer.confirmation.head) == (answer.predecessor, answer.first_changed)
    assert len(result.probes) == len(suite.calls) <= 1 + 4 + 1 and answer.probes == len(result.probes)
    assert result.probes[0].purpose == "endpoints" and result.probes[-1].purpose == "confirm"


def test_every_search_probe_compares_the_first_candidate_with_a_midpoint():
    suite = Suite(16, {"a": {9: 1}})
    result = suite.bisect()
    assert [(r.base, r.head, r.purpose) for r in result.probes] == [
        ("c00", "c15", "endpoints"), ("c00", "c07", "search"), ("c00", "c11", "search"), ("c00", "c09", "search"),
        ("c00", "c08", "search"), ("c08", "c09", "confirm")]
    assert [(s.head, s.verdict, s.changed) for s in only(result).steps] == [
        ("c15", REGRESSED, True), ("c07", UNCHANGED, False), ("c11", REGRESSED, True), ("c09", REGRESSED, True),
        ("c08", UNCHANGED, False)]


def test_the_confirmation_is_measured_afresh_when_the_predecessor_is_the_first():
    suite = Suite(16, {"a": {1: 1}})
    result = suite.bisect()
    assert only(result).first_changed == "c01"
    assert suite.calls.count(("c00", "c01")) == 2 and [r.purpose for r in result.probes][-1] == "confirm"


def test_two_candidates_need_the_endpoints_and_the_confirmation_only():
    suite = Suite(2, {"a": {1: 1}})
    result = suite.bisect()
    assert only(result).first_changed == "c01" and suite.calls == [("c00", "c01")] * 2


@pytest.mark.parametrize("n", [17, 100, 1000])
def test_the_probe_count_grows_as_the_log_of_the_candidates(n):
    budget = 1 + math.ceil(math.log2(n - 1)) + 1
    for at in sorted({1, n // 3, n // 2, n - 1}):
        suite = Suite(n, {"a": {at: 1}})
        assert only(suite.bisect()).first_changed == f"c{at:02d}" and len(suite.calls) <= budget


def test_endpoints_that_do_not_differ_end_the_bisection_after_one_probe():
    suite = Suite(16, {"a": {4: 1, 9: -1}, "b": {}})
    result = suite.bisect()
    assert suite.calls == [("c00", "c15")] and not result.changed
    assert all(b.status is Status.UNCHANGED and b.endpoint_verdict is UNCHANGED and b.probes == 1 for b in result.benchmarks)
    assert "No benchmark changed (regressed) between c00 and c15: nothing to search." in render_bisection(result)


def test_an_improvement_is_a_change_for_versions_but_not_for_commits():
    suite = Suite(16, {"a": {6: -1}})
    assert only(suite.bisect()).status is Status.UNCHANGED
    answer = only(suite.bisect(counts_as_change=ANY_CHANGE))
    assert answer.first_changed == "c06" and answer.change is IMPROVED and answer.confirmation.agrees


def test_the_search_looks_for_the_endpoints_change_in_a_history_that_is_not_monotone():
    # numpy's relu at seed, counted: 2.0.2 faster than 1.26.4, 2.4.6 slower than both (docs/results/stack.md)
    suite = Suite(5, {"relu": {1: -1, 4: 2}})
    answer = only(suite.bisect(counts_as_change=ANY_CHANGE), "relu")
    assert answer.change is REGRESSED and answer.first_changed == "c04" and answer.confirmation.agrees
    assert suite.calls[:2] == [("c00", "c04"), ("c00", "c02")]  # c02 read improved: not yet the regression


def test_two_benchmarks_changing_at_different_candidates_share_the_probes_they_can():
    suite = Suite(16, {"a": {5: 1}, "b": {11: 1}, "c": {}})
    result = suite.bisect()
    assert (only(result, "a").first_changed, only(result, "b").first_changed) == ("c05", "c11")
    assert only(result, "c").status is Status.UNCHANGED
    alone = len(Suite(16, {"a": {5: 1}}).bisect().probes) + len(Suite(16, {"b": {11: 1}}).bisect().probes)
    assert len(result.probes) == alone - 2  # the endpoints and the first midpoint, measured once for both
    assert len(set(suite.calls)) == len(suite.calls)  # no pair measured twice


def test_benchmarks_changing_at_the_same_candidate_cost_one_search():
    suite = Suite(16, {"a": {9: 1}, "b": {9: 1}})
    result = suite.bisect()
    assert len(result.probes) == 6 and only(result, "a").probes == only(result, "b").probes == 6
    assert only(result, "b").first_changed == "c09" and only(result, "b").confirmation.agrees


def test_a_benchmark_the_probe_does_not_mention_is_missing_not_changed():
    result = find_first_changes(names(4), ["gone"], lambda base, head: {})
    assert only(result, "gone").status is Status.UNCHANGED and only(result, "gone").endpoint_verdict is MISSING


# --------------------------------------------------------------------------- skipped candidates


def test_a_skipped_midpoint_is_passed_over_for_its_neighbour():
    suite = Suite(16, {"a": {9: 1}}, broken={7})
    answer = only(suite.bisect())
    assert answer.first_changed == "c09" and answer.skipped == ("c07",) and answer.confirmation.agrees
    assert [s.head for s in answer.steps[1:3]] == ["c07", "c06"] and answer.steps[1].verdict is None
    assert answer.steps[1].note == "skipped: c07 does not build"


def test_several_skipped_in_a_row_are_passed_over():
    suite = Suite(16, {"a": {10: 1}}, broken={6, 7, 8})
    result = suite.bisect()
    answer = only(result)
    assert answer.first_changed == "c10" and answer.predecessor == "c09" and answer.confirmation.agrees
    assert set(answer.skipped) <= {"c06", "c07", "c08"} and len(result.probes) <= 6 + 3


def test_a_change_among_skipped_candidates_is_reported_as_a_range():
    suite = Suite(16, {"a": {10: 1}}, broken={8, 9})
    result = suite.bisect()
    answer = only(result)
    assert answer.status is Status.UNRESOLVED and answer.first_changed is None and answer.confirmation is None
    assert answer.predecessor == "c07" and answer.suspects == ("c08", "c09", "c10") and answer.skipped == ("c08", "c09")
    assert answer.change is REGRESSED
    assert "regressed at one of c08, c09, c10 (after c07): c08, c09 could not be measured" in render_bisection(result)


def test_skipped_candidates_found_by_one_benchmark_are_not_probed_again_by_another():
    suite = Suite(16, {"a": {9: 1}, "b": {9: 1}}, broken={7})
    suite.bisect()
    assert suite.calls.count(("c00", "c07")) == 1


def test_endpoints_that_cannot_be_measured_are_a_usage_error():
    suite = Suite(8, {"a": {3: 1}}, broken={7})
    with pytest.raises(UsageError, match="^the endpoints c00 and c07 could not be measured: skipped: c07 does not build$"):
        suite.bisect()


# --------------------------------------------------------------------------- inconclusive verdicts


def test_an_inconclusive_verdict_is_measured_again_once():
    suite = Suite(16, {"a": {9: 1}, "b": {}}, inconclusive={("c00", "c11"): (("a", "b"), 1)})
    result = suite.bisect()
    answer = only(result)
    assert answer.first_changed == "c09" and answer.confirmation.agrees
    assert suite.calls.count(("c00", "c11")) == 2 and [r.purpose for r in result.probes].count("search again") == 1
    step = next(s for s in answer.steps if s.head == "c11")
    assert step.verdict is REGRESSED and step.note == "inconclusive, measured again"


def test_inconclusive_twice_counts_as_unchanged_and_the_confirmation_then_disagrees():
    suite = Suite(16, {"a": {5: 1}}, inconclusive={("c00", "c07"): (("a",), 2)})
    result = suite.bisect()
    answer = only(result)
    step = next(s for s in answer.steps if s.head == "c07")
    assert step.verdict is INCONCLUSIVE and not step.changed and step.note == INCONCLUSIVE_TWICE
    assert answer.first_changed == "c08" and answer.confirmation.verdict is UNCHANGED and not answer.confirmation.agrees
    assert suite.calls.count(("c00", "c07")) == 2
    text = render_bisection(result)
    assert "NOT confirmed (c07 -> c08: unchanged)" in text and f"c00 -> c07: {INCONCLUSIVE_TWICE}" in text


def test_endpoints_inconclusive_twice_are_not_searched_and_say_so():
    suite = Suite(16, {"a": {5: 1}}, inconclusive={("c00", "c15"): (("a",), 2)})
    answer = only(suite.bisect())
    assert answer.status is Status.UNCHANGED and answer.steps[0].note == INCONCLUSIVE_TWICE and len(suite.calls) == 2


# --------------------------------------------------------------------------- the confirmation


def test_a_gradual_drift_is_found_where_it_crosses_the_threshold_and_not_confirmed():
    suite = Suite(16, {"a": {i: 1 for i in range(1, 16)}}, threshold=5)
    answer = only(suite.bisect())
    assert answer.first_changed == "c05" and answer.confirmation.verdict is UNCHANGED and not answer.confirmation.agrees


def test_a_skipped_confirmation_does_not_agree_and_says_why():
    def probe(base, head):
        return Skip("flaky runner") if (base, head) == ("c04", "c05") else Suite(8, {"a": {5: 1}}).probe(base, head)
    answer = only(find_first_changes(names(8), ["a"], probe))
    assert answer.first_changed == "c05" and answer.confirmation.verdict is None and not answer.confirmation.agrees
    assert answer.confirmation.note == "skipped: flaky runner"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("candidates, benchmarks, message", [
    (["c00"], ["a"], "two candidates or more"),
    (["c00", "c01", "c00"], ["a"], "c00 given more than once"),
    (["c00", "c01"], [], "at least one benchmark"),
])
def test_bad_input_is_one_usage_line(candidates, benchmarks, message):
    with pytest.raises(UsageError, match=message):
        find_first_changes(candidates, benchmarks, lambda base, head: {})


@pytest.mark.parametrize("counts", [set(), {INCONCLUSIVE}, {REGRESSED, UNCHANGED}])
def test_what_counts_as_a_change_must_be_changes(counts):
    with pytest.raises(ValueError, match="counts_as_change"):
        find_first_changes(names(2), ["a"], lambda base, head: {}, counts_as_change=counts)


# --------------------------------------------------------------------------- rendering


def test_text_rendering_lists_answers_notes_and_probes_in_order():
    suite = Suite(16, {"a": {9: 1}, "b": {}}, broken={7})
    text = render_bisection(suite.bisect())
    assert text.startswith("Bisection of 16 candidates, c00 (good) .. c15 (bad), looking for: regressed; 7 probes\n")
    assert "  a  regressed first at c09 (after c08); confirmed (c08 -> c09: regressed); 7 probes" in text
    assert "  b  not changed between c00 and c15 (unchanged): not searched; 1 probe" in text
    assert "  a: c00 -> c07: skipped: c07 does not build" in text
    assert "   1. c00 -> c15 (endpoints): regressed: a; unchanged: b" in text
    assert "   2. c00 -> c07 (search): skipped: c07 does not build" in text


def test_markdown_rendering_has_a_row_per_benchmark_and_the_probes_folded():
    result = Suite(16, {"a": {9: 1}, "b|c": {}}, broken={8, 9}).bisect(counts_as_change=REGRESSION)
    md = render_bisection(result, markdown=True)
    assert md.startswith("### Bisection of 16 candidates")
    assert "| `a` | unresolved | one of c08, c09, c10 | c07 | **regressed** | - | 6 |" in md
    assert "| `b\\|c` | unchanged | - | - | unchanged | - | 1 |" in md
    assert "- `a`: c00 -> c09: skipped: c09 does not build" in md
    assert f"<details><summary>Probes ({len(result.probes)})</summary>" in md and md.rstrip().endswith("</details>")


# --------------------------------------------------------------------------- the command's options


@pytest.mark.parametrize("argv, message", [
    ([], "give --good REV and --bad REV"),
    (["--good", "v1"], "commits need both --good REV and --bad REV"),
    (["--good", "v1", "--bad", "v2", "--versions", "numpy==2.2.6", "numpy==2.3.5"], "not both and not neither"),
    (["--versions", "numpy==2.2.6"], "--versions needs at least two specs"),
    (["--good", "v1", "--bad", "v2", "--rounds", "2"], "--rounds 2: expected an integer >= 3"),
    (["--good", "v1", "--bad", "v2", "--threshold", "lots"], "invalid threshold 'lots'"),
    (["--good", "v1", "--bad", "v2", "--json", "/"], "--json '/': is a directory"),  # before any measuring
    (["--good", "v1", "--bad", "v2", "--markdown", "/no/such/folder/b.md"], "--markdown '/no/such/folder/b.md': directory"),
])
def test_bad_options_are_one_line_before_anything_is_measured(argv, message):
    with pytest.raises(UsageError, match=message) as info:
        bisect.parse_args(argv)
    assert "\n" not in str(info.value)
